//! What every Aether program needs to be operable, one module per idea:
//!
//! | module | what it gives a program |
//! | --- | --- |
//! | [`data`] | the program's own directory under `[service] data_dir`, locked while it runs: its durable outbox and its maps' ledgers, and a stable instance name |
//! | [`settings`] | layered settings: `config/default.toml`, the `config/<AETHER_ENV>.toml` overlay, then `AETHER__SECTION__KEY` variables; refused at start with the key and the value named |
//! | [`reload`] | hot reload: the files are polled, a change is loaded and validated, then published (or refused, keeping the old value) |
//! | [`logging`] | `tracing` to stderr, human or JSON, with a level that can change while the program runs |
//! | [`shutdown`] | a cloneable shutdown token fed by SIGINT and SIGTERM, and a bounded drain |
//! | [`keeper`] | a keeper's counts (maps kept, refused, forgotten, bytes held) as metrics |
//! | [`panic`](mod@panic) | a panic hook that logs the panic and counts it |
//! | [`resources`] | RSS, VMS, threads and open files of the process, limits, and a leak hint |
//! | [`telemetry`] | OpenTelemetry: the spans of the waves (and the program's own) exported over OTLP/HTTP when `[telemetry] otlp_endpoint` is set, beside the logs |
//! | [`metrics`] | the process's own Prometheus metrics (its aether's counts, connection and outbox, the process), served on `[service] metrics_listen` |
//! | [`service`] | what every service program does around its work: logs, panic hook, signals, its aether, the watch of its settings |
//! | [`drops`] | a service's drops by reason for its summary, what it leaves unsent or kept at exit, and a warning when it sheds |
//! | [`refusals`] | bad waves a service refuses (not JSON, wrong fields), counted by reason and warned about at most once per interval |
//! | [`faults`] | the faults the sample flow makes on purpose (a retry storm, duplicates), for the physics engine to find |
//!
//! A program puts them together like this (the `examples/operable.rs`
//! program of this crate does it in full):
//!
//! ```no_run
//! use std::{sync::Arc, sync::atomic::AtomicU64, time::Duration};
//!
//! use aether_core::AetherConfig;
//! use aether_ops::{
//!     logging, panic::install_panic_hook, reload,
//!     settings::{LogSettings, ServiceSettings, SettingsError, SettingsSource, Validate, validate_section},
//!     shutdown::{Shutdown, run_until_shutdown},
//! };
//!
//! #[derive(Debug, Default, serde::Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct Settings {
//!     aether: AetherConfig,
//!     log: LogSettings,
//!     service: ServiceSettings,
//! }
//!
//! impl Validate for Settings {
//!     fn validate(&self) -> Result<(), SettingsError> {
//!         validate_section("aether", &self.aether)?;
//!         validate_section("log", &self.log)?;
//!         validate_section("service", &self.service)
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let source = SettingsSource::from_process("config");
//!     let settings: Settings = source.load()?; // refuses bad settings, naming the key
//!     let log = logging::init(&settings.log)?;
//!     install_panic_hook(Arc::new(AtomicU64::new(0)));
//!     let grace = settings.service.shutdown_grace();
//!     // What this program applies while it runs; a reload names any other setting it changed.
//!     let scope = reload::ReloadScope { applied: &["log.level"], others: &[] };
//!     let watcher = reload::watch(source, Duration::from_millis(200), settings, scope, move |old: &Settings, new| {
//!         if old.log.level != new.log.level {
//!             let _ = log.set_level(&new.log.level);
//!         }
//!     })?;
//!     let shutdown = Shutdown::on_signals()?;
//!     let work = {
//!         let shutdown = shutdown.clone();
//!         async move { shutdown.wait().await } // stop taking work, drain, return
//!     };
//!     run_until_shutdown(work, &shutdown, grace).await;
//!     drop(watcher);
//!     Ok(())
//! }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod data;
pub mod drops;
pub mod faults;
pub mod keeper;
pub mod logging;
pub mod metrics;
pub mod panic;
pub mod refusals;
pub mod reload;
pub mod resources;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

#[cfg(test)]
mod test_support;
