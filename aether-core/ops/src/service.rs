//! What every service program does at start and at the end, around its own
//! work: logs and spans, the panic hook, shutdown on signals, its aether, and
//! the watch of its settings files.
//!
//! ```no_run
//! # use aether_ops::{service::{ProgramSettings, Service}, settings::*};
//! # use aether_core::AetherConfig;
//! # #[derive(serde::Deserialize)]
//! # struct MySettings { aether: AetherConfig, log: LogSettings, telemetry: TelemetrySettings }
//! # impl Validate for MySettings { fn validate(&self) -> Result<(), SettingsError> { Ok(()) } }
//! # impl ProgramSettings for MySettings {
//! #     fn aether(&self) -> &AetherConfig { &self.aether }
//! #     fn log(&self) -> &LogSettings { &self.log }
//! #     fn telemetry(&self) -> &TelemetrySettings { &self.telemetry }
//! # }
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let source = SettingsSource::from_process("config");
//! let settings: MySettings = source.load()?;
//! let service = Service::start("my-service", source, settings, ServiceMedium::Embedded, |_| {}).await?;
//! // ... the service's work, on service.aether, until service.shutdown ...
//! service.stop().await;
//! # Ok(()) }
//! ```

use std::{
    error::Error,
    sync::{Arc, atomic::AtomicU64},
};

use aether_core::{Aether, AetherConfig};

use crate::{
    data::DataDir,
    panic::install_panic_hook,
    reload::{self, Watcher},
    resources::ResourceLimits,
    settings::{
        LogSettings, ServiceMedium, ServiceSettings, SettingsError, SettingsSource,
        TelemetrySettings, Validate, validate_section,
    },
    shutdown::Shutdown,
    telemetry::{self, TelemetryGuard},
};

pub use crate::reload::ProgramSettings;

/// A started service program.
pub struct Service<T> {
    /// Its aether.
    pub aether: Aether,
    /// Triggered by SIGINT or SIGTERM.
    pub shutdown: Shutdown,
    /// Its settings, reloaded when the files change.
    pub settings: Watcher<T>,
    /// Its own directory under `[service] data_dir`, held while it runs
    /// (over NATS with a data folder set).
    pub data: Option<DataDir>,
    /// The medium it runs on.
    pub medium: ServiceMedium,
    spans: TelemetryGuard,
}

impl<T> std::fmt::Debug for Service<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("aether", &self.aether)
            .field("settings", &self.settings.stats())
            .finish_non_exhaustive()
    }
}

impl<T: ProgramSettings> Service<T> {
    /// Starts the program `program` with `settings` (loaded from `source`,
    /// with the command-line options, `apply`, put over them): logs and
    /// spans (over OTLP when `[telemetry]` says so), the panic hook,
    /// shutdown on signals, its aether on `medium` (over NATS or a bus on
    /// the LAN with a `data_dir`, in a directory of its own
    /// there, [`DataDir`], with its durable outbox and its instance name
    /// from it unless the settings name them), and the watch of `source` ([`reload::watch_program`]),
    /// which reloads the settings with `apply` again and follows the log
    /// level.
    pub async fn start(
        program: &str,
        source: SettingsSource,
        settings: T,
        medium: ServiceMedium,
        apply: impl Fn(&mut T) + Send + 'static,
    ) -> Result<Self, Box<dyn Error + Send + Sync>> {
        let (log, spans) = telemetry::init(settings.log(), settings.telemetry(), program)?;
        install_panic_hook(Arc::new(AtomicU64::new(0)));
        let shutdown = Shutdown::on_signals()?;
        let mut config = settings.aether().clone();
        let nats = medium.crosses_processes();
        let data = match settings.data_dir() {
            Some(root) if nats => {
                let data = DataDir::claim(root, program, config.report.instance.as_deref())
                    .map_err(|e| format!("[service] data_dir: {e}"))?;
                config
                    .report
                    .instance
                    .get_or_insert_with(|| data.instance().to_string());
                if config.durability.is_enabled() && config.durability.outbox_dir.is_none() {
                    config.durability.outbox_dir = Some(data.outbox());
                }
                tracing::info!(
                    dir = %data.path().display(),
                    "{program}: its data in {}",
                    data.path().display()
                );
                Some(data)
            }
            _ => None,
        };
        let config = named(&config, program);
        if medium == ServiceMedium::Lan {
            let lan = aether_core::lan::LanOptions::from_config(&config.lan);
            tracing::info!(
                bus = %lan.bus,
                instance = config.report.instance.as_deref().unwrap_or_default(),
                "{program}: medium lan, bus {}",
                lan.bus
            );
        } else if nats {
            // Credentials in a URL never reach the log.
            let servers = config.nats.redacted_urls().join(",");
            tracing::info!(
                servers = %servers,
                instance = config.report.instance.as_deref().unwrap_or_default(),
                "{program}: medium nats, servers {servers}"
            );
        } else {
            tracing::info!(
                instance = config.report.instance.as_deref().unwrap_or_default(),
                "{program}: medium embedded (in this process: no other program hears it; \
                 --nats or [service] medium = \"nats\" for the bus)"
            );
        }
        let aether = match medium {
            ServiceMedium::Lan => Aether::join_lan(config).await?,
            ServiceMedium::Nats => Aether::connect(config).await?,
            ServiceMedium::Embedded => Aether::new(config)?,
        };
        if let Some(listen) = settings.metrics_listen() {
            let addr =
                crate::metrics::serve(aether.clone(), program, listen, shutdown.clone()).await?;
            tracing::info!(%addr, "{program}: its own metrics on http://{addr}/metrics");
        }
        let settings = reload::watch_program(source, settings, log, apply)?;
        Ok(Self {
            aether,
            shutdown,
            settings,
            data,
            medium,
            spans,
        })
    }

    /// Loads the program's settings from `source`, puts the command line
    /// over them (`apply`), checks them, and starts it ([`Service::start`])
    /// on its `[service] medium`, or over NATS when `nats_named` (servers
    /// named on the command line).
    pub async fn launch(
        program: &str,
        source: SettingsSource,
        nats_named: bool,
        apply: impl Fn(&mut T) + Send + 'static,
    ) -> Result<Self, Box<dyn Error + Send + Sync>> {
        let mut settings: T = source.load()?;
        apply(&mut settings);
        settings.validate()?;
        let medium = if nats_named {
            ServiceMedium::Nats
        } else {
            settings.service().map(|s| s.medium).unwrap_or_default()
        };
        Self::start(program, source, settings, medium, apply).await
    }

    /// Stops watching the settings, drains the aether (up to 1 s more for
    /// what is still unsent, and a last instance report marked leaving, so
    /// that a gateway counts the program as gone on purpose), and sends the
    /// last spans.
    pub async fn stop(mut self) {
        self.settings.stop();
        if let Err(error) = self.aether.drain(std::time::Duration::from_secs(1)).await {
            tracing::warn!(%error, "closed with waves unsent");
        }
        self.spans.shutdown();
    }
}

/// Implements [`ProgramSettings`] for a program's settings type with the
/// sections `aether`, `log`, `service` and `telemetry`, and the settings a
/// reload applies (`applied`) and the sections it leaves to a restart or
/// to other programs (`others`):
///
/// ```ignore
/// aether_ops::service_program_settings!(BetaProgramSettings,
///     applied: ["log.level", "service.noise_floor"], others: ["gateway", "alpha"]);
/// ```
///
/// With `own: section` (the program's own section, a field of the type
/// beside `resources`), it also implements [`Validate`] with
/// [`validate_service_sections`].
#[macro_export]
macro_rules! service_program_settings {
    ($settings:ty, applied: [$($applied:expr),* $(,)?], others: [$($others:expr),* $(,)?], own: $own:ident $(,)?) => {
        $crate::service_program_settings!($settings, applied: [$($applied),*], others: [$($others),*]);

        impl $crate::settings::Validate for $settings {
            fn validate(&self) -> ::std::result::Result<(), $crate::settings::SettingsError> {
                $crate::service::validate_service_sections(
                    &self.aether,
                    &self.log,
                    &self.service,
                    &self.resources,
                    &self.telemetry,
                    (::std::stringify!($own), &self.$own),
                )
            }
        }
    };
    ($settings:ty, applied: [$($applied:expr),* $(,)?], others: [$($others:expr),* $(,)?] $(,)?) => {
        impl $crate::service::ProgramSettings for $settings {
            const RELOAD_SCOPE: $crate::reload::ReloadScope = $crate::reload::ReloadScope {
                applied: &[$($applied),*],
                others: &[$($others),*],
            };

            fn aether(&self) -> &::aether_core::AetherConfig {
                &self.aether
            }

            fn log(&self) -> &$crate::settings::LogSettings {
                &self.log
            }

            fn telemetry(&self) -> &$crate::settings::TelemetrySettings {
                &self.telemetry
            }

            fn service(&self) -> ::std::option::Option<&$crate::settings::ServiceSettings> {
                ::std::option::Option::Some(&self.service)
            }
        }
    };
}

/// Checks a service program's settings: the sections every one has
/// (`aether`, `log`, `service`, `resources`, `telemetry`, in that order),
/// then its own, `own` (its name and the section); the first refusal names
/// its key within its section.
pub fn validate_service_sections(
    aether: &AetherConfig,
    log: &LogSettings,
    service: &ServiceSettings,
    resources: &ResourceLimits,
    telemetry: &TelemetrySettings,
    own: (&str, &dyn Validate),
) -> Result<(), SettingsError> {
    validate_section("aether", aether)?;
    validate_section("log", log)?;
    validate_section("service", service)?;
    validate_section("resources", resources)?;
    validate_section("telemetry", telemetry)?;
    validate_section(own.0, own.1)
}

/// Puts the command-line options every service program has over its
/// settings: `--instance` (`[aether.report] instance`), `--metrics-listen`
/// (`[service] metrics_listen`), `--nats` (the servers, when any is named)
/// and `--lan` (`[service] medium = "lan"`).
pub fn apply_service_options(
    aether: &mut AetherConfig,
    service: &mut ServiceSettings,
    instance: Option<&String>,
    metrics_listen: Option<std::net::SocketAddr>,
    nats: &[String],
    lan: bool,
) {
    if let Some(instance) = instance {
        aether.report.instance = Some(instance.clone());
    }
    if let Some(listen) = metrics_listen {
        service.metrics_listen = Some(listen);
    }
    if !nats.is_empty() {
        aether.nats.urls = nats.to_vec();
    }
    if lan {
        service.medium = ServiceMedium::Lan;
    }
}

/// A program's exit status from its run: success, or the error said on
/// standard error (`error: ...`) and status 1. (Bad arguments exit with
/// status 2 before the run, from the argument parser.)
pub fn exit_status<E: std::fmt::Display>(run: Result<(), E>) -> std::process::ExitCode {
    match run {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `config` with the program's names where the settings give none: the
/// instance `<program>-<process id>` in its reports, and the NATS
/// connection name `<program> <instance>`, so that the server's connection
/// list and logs name each program.
pub fn named(config: &AetherConfig, program: &str) -> AetherConfig {
    let mut config = config.clone();
    let instance = config
        .report
        .instance
        .get_or_insert_with(|| format!("{program}-{}", std::process::id()))
        .clone();
    config
        .nats
        .connection_name
        .get_or_insert_with(|| format!("{program} {instance}"));
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_name_their_instance_and_connection() {
        let config = named(&AetherConfig::default(), "aether-service-beta");
        let instance = config.report.instance.clone().unwrap();
        assert_eq!(
            instance,
            format!("aether-service-beta-{}", std::process::id())
        );
        assert_eq!(
            config.nats.connection_name.as_deref(),
            Some(format!("aether-service-beta {instance}").as_str())
        );
        // Names the settings give are kept.
        let mut given = AetherConfig::default();
        given.report.instance = Some("beta-1".into());
        given.nats.connection_name = Some("shop".into());
        let config = named(&given, "aether-service-beta");
        assert_eq!(config.report.instance.as_deref(), Some("beta-1"));
        assert_eq!(config.nats.connection_name.as_deref(), Some("shop"));
        let mut instance_only = AetherConfig::default();
        instance_only.report.instance = Some("beta-2".into());
        let config = named(&instance_only, "aether-service-beta");
        assert_eq!(
            config.nats.connection_name.as_deref(),
            Some("aether-service-beta beta-2")
        );
    }
}
