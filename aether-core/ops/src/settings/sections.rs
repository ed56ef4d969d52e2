//! The sections every program shares: `[log]`, `[telemetry]`, `[service]`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, de};

use aether_core::{
    Aether, RateLimit, Vibrator,
    reliable::{ReliabilityConfig, Reliable},
};

use super::{SettingsError, Validate};

/// The `[log]` section: what is logged, and how.
///
/// ```toml
/// [log]
/// level = "info,aether_core=debug"  # EnvFilter directives
/// format = "json"                   # or "human" (the default)
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `tracing` filter directives: a level (`trace`, `debug`, `info`,
    /// `warn`, `error`, `off`), or `target=level` pairs, comma-separated.
    /// Changes at run time through hot reload. Default `info`.
    pub level: String,
    /// Human-readable lines or JSON objects. Default human.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Human,
        }
    }
}

impl Validate for LogSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        crate::logging::parse_directives(&self.level)
            .map(drop)
            .map_err(|err| SettingsError::invalid("level", &self.level, err.reason()))
    }
}

/// How log lines are written: `human` or `json` (any case).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event (the default).
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

impl<'de> Deserialize<'de> for LogFormat {
    /// By hand, for a refusal that names the choices (the `config` crate's
    /// own enum support does not).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.to_ascii_lowercase().as_str() {
            "human" => Ok(Self::Human),
            "json" => Ok(Self::Json),
            _ => Err(de::Error::unknown_variant(&text, &["human", "json"])),
        }
    }
}

/// The `[telemetry]` section: spans exported over OTLP/HTTP
/// ([`crate::telemetry`]). Off by default.
///
/// ```toml
/// [telemetry]
/// otlp_endpoint = "http://127.0.0.1:4318"  # a collector's OTLP/HTTP port; /v1/traces is added
/// service_name = "shop"                    # default: the program's name
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// The OTLP/HTTP endpoint to send spans to, `http://host:port` (the
    /// traces path `/v1/traces` is added unless given); none (the
    /// default): nothing is exported.
    pub otlp_endpoint: Option<String>,
    /// The name the program reports; none: the program's own name.
    pub service_name: Option<String>,
}

impl Validate for TelemetrySettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if let Some(endpoint) = &self.otlp_endpoint {
            crate::telemetry::check_endpoint(endpoint)
                .map_err(|why| SettingsError::invalid("otlp_endpoint", endpoint, why))?;
        }
        if let Some(name) = &self.service_name
            && name.trim().is_empty()
        {
            return Err(SettingsError::invalid(
                "service_name",
                format!("{name:?}"),
                "must not be empty",
            ));
        }
        Ok(())
    }
}

/// The medium a service program runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceMedium {
    /// In this process: no other program hears it.
    #[default]
    Embedded,
    /// Over NATS, at `[aether.nats] urls`.
    Nats,
    /// Over the bus `[aether.lan]` names on the LAN: this machine's
    /// `aether node`, else one announced on the LAN.
    Lan,
}

impl ServiceMedium {
    /// Whether other programs hear it (every medium but the embedded one).
    pub fn crosses_processes(self) -> bool {
        self != ServiceMedium::Embedded
    }
}

/// The `[service]` section: how a service takes its waves, and how long it
/// may take to stop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceSettings {
    /// `embedded` (the default), `nats` or `lan`: over NATS the program
    /// connects to `[aether.nats] urls`, as `--nats` makes it; on `lan`, to
    /// the bus `[aether.lan]` names, as `--lan` makes it. The gateway has its
    /// own, `[gateway] medium`. Read at start.
    pub medium: ServiceMedium,
    /// The service's noise floor, in `[0, 1]`: waves weaker than this are
    /// not delivered to it. Default 0.
    pub noise_floor: f64,
    /// Most waves the service's vibrators emit per second, on average
    /// (bursts of one second's worth allowed); an emit over it waits for its
    /// turn up to `rate_limit_wait_ms`, and beyond is refused with
    /// `EmitErrorKind::RateLimited` and counted (`rate_limited`).
    /// None (the default): no limit. When set, above 0 and at most 1e9.
    /// Changes on reload.
    pub rate_limit_per_s: Option<f64>,
    /// How long an emit over `rate_limit_per_s` waits for its turn, in
    /// milliseconds: the limit shapes a burst instead of refusing it. 0:
    /// refused at once. Default 10,000. Changes on reload.
    pub rate_limit_wait_ms: u64,
    /// Time allowed to drain at shutdown, in milliseconds, at least 1.
    /// Default 10,000.
    pub shutdown_grace_ms: u64,
    /// Where the program serves its own Prometheus metrics (`/metrics`:
    /// its aether's counts, connection and outbox, and the process), so
    /// that they are seen when the bus is not. None (the default): no
    /// listener. One address per process: set it with `--metrics-listen`
    /// or `AETHER__SERVICE__METRICS_LISTEN`. Read at start.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Where the program keeps what must outlive it, over NATS: its
    /// durable outbox (unless `[aether.durability] outbox_dir` names one)
    /// and its maps' ledgers, in a directory of its own below this one
    /// (`aether_ops::data`). A relative path is taken from the working
    /// directory. None (the library's default): all in memory. The shipped
    /// settings say `data`. Read at start.
    pub data_dir: Option<std::path::PathBuf>,
    /// `[service.reliability]`: when present, the service's emits retry
    /// with backoff, under a timeout and a circuit breaker
    /// (`aether_core::reliable`). None (the default): one try each.
    pub reliability: Option<ReliabilityConfig>,
    /// `[service.programs.<name>]`: what one program of the folder (its
    /// own section's name: `alpha`, `beta`) takes over the settings above,
    /// which every program reading the folder shares: a rate limit meant
    /// for one program limits that one alone.
    pub programs: std::collections::BTreeMap<String, ProgramServiceSettings>,
}

/// `[service.programs.<name>]`: one program's own service settings, over
/// the shared `[service]` ones.
///
/// ```toml
/// [service]
/// rate_limit_per_s = 500       # every program of the folder
///
/// [service.programs.beta]
/// rate_limit_per_s = 50        # beta alone
/// ```
///
/// ```
/// use aether_ops::settings::{ProgramServiceSettings, ServiceSettings};
///
/// let mut service = ServiceSettings { rate_limit_per_s: Some(500.0), ..Default::default() };
/// let beta = ProgramServiceSettings { rate_limit_per_s: Some(50.0), ..Default::default() };
/// service.programs.insert("beta".into(), beta);
/// assert_eq!(service.for_program("beta").rate_limit_per_s, Some(50.0));
/// assert_eq!(service.for_program("alpha").rate_limit_per_s, Some(500.0));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProgramServiceSettings {
    /// The program's noise floor, over `[service] noise_floor`.
    pub noise_floor: Option<f64>,
    /// The program's rate limit, over `[service] rate_limit_per_s`.
    pub rate_limit_per_s: Option<f64>,
    /// How long its emits wait for their turn, over `[service]
    /// rate_limit_wait_ms`.
    pub rate_limit_wait_ms: Option<u64>,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            medium: ServiceMedium::Embedded,
            noise_floor: 0.0,
            rate_limit_per_s: None,
            rate_limit_wait_ms: 10_000,
            shutdown_grace_ms: 10_000,
            metrics_listen: None,
            data_dir: None,
            reliability: None,
            programs: std::collections::BTreeMap::new(),
        }
    }
}

impl ServiceSettings {
    /// The settings `program` runs with: the shared ones with its own
    /// `[service.programs.<program>]` over them.
    pub fn for_program(&self, program: &str) -> ServiceSettings {
        let mut own = self.clone();
        if let Some(over) = self.programs.get(program) {
            if let Some(floor) = over.noise_floor {
                own.noise_floor = floor;
            }
            if let Some(rate) = over.rate_limit_per_s {
                own.rate_limit_per_s = Some(rate);
            }
            if let Some(wait) = over.rate_limit_wait_ms {
                own.rate_limit_wait_ms = wait;
            }
        }
        own
    }

    /// [`ServiceSettings::shutdown_grace_ms`] as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// [`ServiceSettings::rate_limit_per_s`] as a vibrator's limit.
    pub fn rate_limit(&self) -> Result<Option<RateLimit>, SettingsError> {
        let wait = Duration::from_millis(self.rate_limit_wait_ms);
        self.rate_limit_per_s
            .map(|rate| RateLimit::per_second(rate).map(|limit| limit.waiting_up_to(wait)))
            .transpose()
            .map_err(|_| {
                SettingsError::invalid(
                    "rate_limit_per_s",
                    self.rate_limit_per_s.unwrap_or_default().to_string(),
                    "must be a number above 0 and at most 1e9",
                )
            })
    }

    /// The reliability policy of `[service.reliability]`, if present, on
    /// `aether`.
    pub fn reliable(&self, aether: &Aether) -> Result<Option<Reliable>, SettingsError> {
        self.reliability
            .map(|config| Reliable::new(config, aether))
            .transpose()
            .map_err(|err| SettingsError::from(err).within("reliability"))
    }

    /// Gives `vibrator` this section's noise floor and rate limit (at start,
    /// and again on each reload).
    pub fn apply_to(&self, vibrator: &Vibrator) -> Result<(), SettingsError> {
        let limit = self.rate_limit()?;
        vibrator.set_noise_floor(self.noise_floor).map_err(|_| {
            SettingsError::invalid(
                "noise_floor",
                self.noise_floor.to_string(),
                "must be in [0, 1]",
            )
        })?;
        vibrator.set_rate_limit(limit);
        Ok(())
    }
}

impl ServiceSettings {
    /// The checks of the settings a program takes over the shared ones.
    fn validate_own(&self) -> Result<(), SettingsError> {
        if !(0.0..=1.0).contains(&self.noise_floor) {
            return Err(SettingsError::invalid(
                "noise_floor",
                self.noise_floor.to_string(),
                "must be in [0, 1]",
            ));
        }
        self.rate_limit().map(|_| ())
    }
}

impl Validate for ServiceSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if !(0.0..=1.0).contains(&self.noise_floor) {
            return Err(SettingsError::invalid(
                "noise_floor",
                self.noise_floor.to_string(),
                "must be in [0, 1]",
            ));
        }
        self.rate_limit()?;
        for name in self.programs.keys() {
            self.for_program(name)
                .validate_own()
                .map_err(|e| e.within(&format!("programs.{name}")))?;
        }
        if let Some(reliability) = &self.reliability {
            reliability
                .validate()
                .map_err(|err| SettingsError::from(err).within("reliability"))?;
        }
        if self.shutdown_grace_ms == 0 {
            return Err(SettingsError::invalid(
                "shutdown_grace_ms",
                "0",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
