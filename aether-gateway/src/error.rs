//! What can stop the gateway.

use std::{io, net::SocketAddr};

use aether_core::{ResonateError, VibratorError, hopping::HopSettingsError};
use aether_ops::settings::SettingsError;

/// Why the gateway could not start, or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// A setting is out of range (the error names the key).
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A hopping base to attribute is not a valid base.
    #[error("invalid hopping base to attribute: {0}")]
    Hopping(#[from] HopSettingsError),
    /// The HTTP address could not be bound (in use, not local, no right).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The observer vibrator could not be made (the aether is closed).
    #[error("cannot observe the aether: {0}")]
    Observer(#[from] VibratorError),
    /// The observer could not resonate on every channel.
    #[error("cannot resonate on every channel: {0}")]
    Resonate(#[from] ResonateError),
    /// A metric was refused by the registry (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP server failed while running.
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] io::Error),
    /// The journal (`[gateway.journal]`) could not be opened or read.
    #[error("journal: {0}")]
    Journal(#[from] aether_journal::JournalError),
    /// A replay could not emit (the aether refused a wave).
    #[error("replay: {0}")]
    Replay(String),
    /// The keeper (`[aether.state.keeper]`) could not start.
    #[error("keeper: {0}")]
    Keeper(String),
    /// A bridged map could not be opened (`[gateway.bridge] maps`).
    #[error("bridge: {0}")]
    Bridge(String),
    /// The certificate or key of `[gateway.tls]` could not be read.
    #[error("tls: {0}")]
    Tls(String),
    /// A task of the gateway panicked.
    #[error("a gateway task failed: {0}")]
    Task(String),
}
