//! The gateway's aether, on the medium of its settings.
//!
//! A LAN bus has JetStream only where its nodes run it (`aether node
//! --jetstream`, which needs three nodes to outlive the loss of one):
//! nodes started plainly have none, so the stream of `[aether.durability]
//! channels` cannot be made. There the gateway starts without durable
//! channels and says so once, unless `[gateway] require_durable_channels`
//! asks it to exit instead. Over `nats` the stream is always required: a
//! server named by hand is expected to have what the settings ask of it.

use aether_core::{Aether, AetherConfig, ConnectError, ConnectErrorKind, lan::LanOptions};

use crate::settings::{GatewayConfig, Medium};

/// The aether `config` makes on `gateway.medium`: in this process, through
/// the servers of `[aether.nats]`, or on the LAN bus `[aether.lan]` names.
pub async fn connect(
    config: AetherConfig,
    gateway: &GatewayConfig,
) -> Result<Aether, Box<dyn std::error::Error>> {
    match gateway.medium {
        Medium::Embedded => Ok(Aether::new(config)?),
        Medium::Nats => Ok(Aether::connect(config).await?),
        Medium::Lan => Ok(join_lan(config, gateway.require_durable_channels).await?),
    }
}

/// `Aether::join_lan`, with the durable channels left off (and a warning)
/// when the bus has no JetStream and `required` does not insist on them.
async fn join_lan(config: AetherConfig, required: bool) -> Result<Aether, ConnectError> {
    let config = LanOptions::from_config(&config.lan).find(config).await?;
    if !config.durability.is_enabled() {
        return Aether::connect(config).await;
    }
    let error = match Aether::connect(config.clone()).await {
        Err(error) if without_jetstream(&error) => error,
        other => return other,
    };
    if required {
        return Err(ConnectError::new(
            ConnectErrorKind::Config,
            format!(
                "{error}; [gateway] require_durable_channels = true: on a LAN bus JetStream runs \
                 on nodes started with `aether node --jetstream` (three of them, for a majority), \
                 or set it to false to start without durable channels"
            ),
        ));
    }
    let mut config = config;
    let channels = std::mem::take(&mut config.durability.channels);
    tracing::debug!(%error, "the durable channels' stream");
    tracing::warn!(
        ?channels,
        "the LAN bus has no JetStream, so the durable channels of [aether.durability] channels \
         are off: their waves travel as plain ones, stored nowhere; to have them, start the \
         nodes with `aether node --jetstream` (three of them, for a majority); with [gateway] \
         require_durable_channels = true the gateway exits instead"
    );
    Aether::connect(config).await
}

/// Whether `error` is the durable channels' stream that could not be made
/// or found (no JetStream answers), rather than the bus itself.
fn without_jetstream(error: &ConnectError) -> bool {
    error.kind() == ConnectErrorKind::Config && error.to_string().contains("durability.channels")
}
