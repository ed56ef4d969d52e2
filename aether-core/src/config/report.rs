//! Settings of the instance reports ([`crate::report`]).

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::{ConfigError, check};

/// `[aether.report]`: whether and how often the aether reports its
/// statistics on the bus, and under which name.
///
/// ```
/// use aether_core::config::ReportConfig;
///
/// let report = ReportConfig { interval: std::time::Duration::from_millis(1000), instance: Some("beta-1".into()) };
/// report.validate()?;
/// assert_eq!(report.instance_name(), "beta-1");
/// # Ok::<(), aether_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportConfig {
    /// Milliseconds between reports, 100 to 3,600,000; 0 (the default):
    /// none. The programs' shipped settings report every 1,000.
    #[serde(rename = "interval_ms", with = "super::millis")]
    pub interval: Duration,
    /// The name of this aether in its reports and, where
    /// `nats.connection_name` is not set, in the server's list of
    /// connections: a vibrator name (1 to 64 of `A-Z a-z 0-9 _ - .`).
    /// Default `aether-<process id>`; the programs default to
    /// `<program>-<process id>`.
    pub instance: Option<String>,
}

impl ReportConfig {
    /// The instance's name: `instance`, or `aether-<process id>`.
    pub fn instance_name(&self) -> String {
        self.instance
            .clone()
            .unwrap_or_else(|| format!("aether-{}", std::process::id()))
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            super::as_ms(self.interval) == 0
                || (100..=3_600_000).contains(&super::as_ms(self.interval)),
            "report.interval_ms",
            super::as_ms(self.interval).to_string(),
            "must be 0 (no reports) or 100 to 3600000",
        )?;
        if let Some(instance) = &self.instance {
            check(
                crate::system::report_channel(instance).is_some(),
                "report.instance",
                instance.clone(),
                "must be 1 to 64 of A-Z a-z 0-9 _ - ., dot-separated tokens",
            )?;
        }
        Ok(())
    }
}
