//! The gateway: observes every wave of the aether and reports what it saw.
//!
//! A vibrator named `gateway` resonates on every channel (`*`), on the
//! embedded medium or over NATS, with a bounded queue: when the gateway
//! falls behind, the queue sheds the weakest waves and counts them, and
//! nobody on the bus waits for it. What it observes, with what the aether,
//! its physics engine and the process report, is served over HTTP:
//!
//! - `/metrics`: Prometheus metrics ([`metrics`] lists them), named by
//!   Prometheus' conventions, with bounded labels (channel families up to
//!   `max_channel_families`, then `other`);
//! - `/health` (alive) and `/ready` (embedded, or connected to NATS);
//! - `/`: a live dashboard (channels and rates, amplitude, interference
//!   events, the resonance graph), fed by server-sent events (`/events`).
//!
//! With the hopping secret (`[aether.hopping] secret`) and the bases to
//! attribute (`[[gateway.hopping]]`), waves on hopping wire channels count
//! under their base's family.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use aether_core::Aether;
//! use aether_gateway::{Gateway, GatewayConfig};
//! use aether_ops::shutdown::Shutdown;
//!
//! let aether = Aether::default();
//! let shutdown = Shutdown::new(); // Shutdown::on_signals()? in a program
//! let config = GatewayConfig { listen: "127.0.0.1:0".parse()?, ..Default::default() };
//! let gateway = Gateway::start(&aether, config, shutdown.clone()).await?;
//! assert_ne!(gateway.addr().port(), 0);
//! shutdown.trigger();
//! gateway.wait().await?;
//! # Ok(()) }
//! ```
//!
//! | module | idea |
//! | --- | --- |
//! | [`settings`] | the `[gateway]` section and the program's settings file; the bridge's section and tokens in `settings/bridge.rs`, the journal's in `settings/journal.rs` |
//! | [`family`] | channel families, their bound, and hop attribution |
//! | [`observer`] | the vibrator on `*` and the task that counts its waves |
//! | [`metrics`] | the Prometheus registry: observed, and read at scrape time |
//! | [`snapshot`] | what the dashboard shows |
//! | [`journal`] | the journal of observed waves, snapshots of the counters, restart |
//! | `stream` | the durable channels' JetStream stream against its limits |
//! | [`replay`] | re-emitting journaled waves, and listing them |
//! | [`bridge`] | replicated maps to browsers over WebSocket: limits, the protocol |
//! | `http` | `/metrics`, `/health`, `/ready`, `/`, `/events`, `/snapshot`, `/bridge/{map}`, `/board`, `/aether.js` and its modules; TLS |
//! | [`gateway`](mod@gateway) | starting and stopping it all on an aether |
//! | [`allocator`] | allocator statistics from a counting global allocator |
//! | [`cli`] | the program's command line |
//! | [`connect`] | the program's aether on its medium; a LAN bus without JetStream |
//! | [`demo`] | a small shop's waves, for the dashboard |

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod allocator;
pub mod bridge;
pub mod cli;
pub mod connect;
pub mod demo;
mod error;
pub mod family;
pub mod gateway;
mod http;
pub mod instances;
pub mod journal;
mod keeping;
pub mod metrics;
pub mod observer;
pub mod replay;
pub mod settings;
pub mod snapshot;
mod stream;

pub use cli::{Command, Options};
pub use error::GatewayError;
pub use gateway::{Gateway, GatewayBuilder, serve};
pub use metrics::Metrics;
pub use settings::{
    BridgeConfig, BridgeToken, GatewayConfig, GatewaySettings, JournalConfig, Medium, TlsConfig,
};
pub use snapshot::Snapshot;

#[cfg(test)]
mod send_sync {
    #[test]
    fn public_types_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<crate::Gateway>();
        assert_send_sync::<crate::Metrics>();
        assert_send_sync::<crate::GatewayError>();
        assert_send_sync::<crate::Snapshot>();
    }
}
