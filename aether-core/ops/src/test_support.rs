//! A program's settings as the tests compose them, and small helpers.

use std::time::{Duration, Instant};

use aether_core::AetherConfig;
use serde::Deserialize;

use crate::{
    resources::ResourceLimits,
    settings::{
        LogSettings, ServiceSettings, SettingsError, TelemetrySettings, Validate, validate_section,
    },
};

/// What a program composes: the aether's settings plus the shared sections.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Program {
    pub(crate) aether: AetherConfig,
    pub(crate) log: LogSettings,
    pub(crate) telemetry: TelemetrySettings,
    pub(crate) service: ServiceSettings,
    pub(crate) resources: ResourceLimits,
    /// The gateway's own section of the shared file, passed over as the
    /// services pass it over.
    pub(crate) gateway: serde::de::IgnoredAny,
}

impl crate::service::ProgramSettings for Program {
    fn aether(&self) -> &AetherConfig {
        &self.aether
    }
    fn log(&self) -> &LogSettings {
        &self.log
    }
    fn telemetry(&self) -> &TelemetrySettings {
        &self.telemetry
    }
    const RELOAD_SCOPE: crate::reload::ReloadScope = crate::reload::ReloadScope {
        applied: &[
            "log.level",
            "service.noise_floor",
            "service.rate_limit_per_s",
        ],
        others: &["gateway"],
    };
}

impl Validate for Program {
    fn validate(&self) -> Result<(), SettingsError> {
        validate_section("aether", &self.aether)?;
        validate_section("log", &self.log)?;
        validate_section("telemetry", &self.telemetry)?;
        validate_section("service", &self.service)?;
        validate_section("resources", &self.resources)
    }
}

/// The repository's own `config/default.toml`.
pub(crate) const REPOSITORY_DEFAULTS: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/default.toml");

/// Waits until `done()` holds, checking every 5 ms; panics naming `what`
/// after `bound`.
pub(crate) async fn eventually(what: &str, bound: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < bound, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A log writer into a shared buffer.
pub(crate) use aether_testkit::LogBuffer as Captured;
