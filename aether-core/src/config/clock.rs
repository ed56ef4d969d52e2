//! Settings of the bus's time ([`crate::bustime`]).

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::{ConfigError, check};

/// `[aether.clock]`: whether this program is one of the bus's time
/// sources, which source it follows, and how often it measures its clock
/// against them.
///
/// ```
/// use aether_core::config::ClockConfig;
///
/// let clock = ClockConfig { source: true, ..Default::default() };
/// clock.validate()?;
/// let bad = ClockConfig { interval: std::time::Duration::from_millis(10), ..Default::default() };
/// assert_eq!(bad.validate().unwrap_err().key(), "clock.interval_ms");
/// # Ok::<(), aether_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClockConfig {
    /// This program answers others' measurements with its clock: the bus
    /// follows the median of its sources. `aether node`, `aether keep` and
    /// the gateway are sources; other programs are not unless set here.
    pub source: bool,
    /// Follow this source alone (its name, a vibrator name: a node's name,
    /// `keeper`, the gateway's instance), not the median: a machine whose
    /// clock is known good. None (the default): the median.
    pub follow: Option<String>,
    /// How often the clock is measured again once settled, milliseconds
    /// (after a start, or a change in the sources heard, it is measured
    /// after 1, 2, 4 ... s up to this; a jump of the machine's clock at
    /// once). 1,000 to 3,600,000; default 30,000.
    #[serde(rename = "interval_ms", with = "super::millis")]
    pub interval: Duration,
}

impl Default for ClockConfig {
    fn default() -> Self {
        Self {
            source: false,
            follow: None,
            interval: Duration::from_millis(30_000),
        }
    }
}

impl ClockConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            (1_000..=3_600_000).contains(&super::as_ms(self.interval)),
            "clock.interval_ms",
            super::as_ms(self.interval).to_string(),
            "must be 1000 to 3600000",
        )?;
        if let Some(follow) = &self.follow {
            check(
                crate::names::is_name(follow),
                "clock.follow",
                format!("{follow:?}"),
                "must be a source's name (a vibrator name)",
            )?;
        }
        Ok(())
    }
}
