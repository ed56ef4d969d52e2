//! Settings of frequency hopping.

use serde::{Deserialize, Serialize};

use super::{ConfigError, check};
use crate::Secret;

/// Shortest hopping secret accepted, in bytes. A shorter one could be found
/// by trying every value against the wire channels an observer sees.
pub const MIN_HOPPING_SECRET_BYTES: usize = 16;

/// Shortest and longest `hop_interval_ms`.
pub const HOP_INTERVAL_MS_RANGE: std::ops::RangeInclusive<u64> = 10..=86_400_000;

/// How vibrators hop ([`Vibrator::emit_time_hopping_wave`] and
/// [`Vibrator::resonate_hopping`]): read from
/// [`AetherConfig::hopping`](crate::AetherConfig::hopping), the
/// `[aether.hopping]` table. Every vibrator that must hear another's hopping
/// waves uses the same secret and the same interval.
///
/// Without a secret, hopping still spreads waves over `hop_count` wire
/// channels and works, but it conceals nothing: anyone who knows (or
/// guesses) a base channel can work out its wire channels.
///
/// ```
/// use aether_core::{AetherConfig, Secret, config::HoppingConfig};
///
/// let config = AetherConfig {
///     hopping: HoppingConfig {
///         secret: Some(Secret::new("a shared secret of 16+ bytes")),
///         hop_interval_ms: 500,
///     },
///     ..Default::default()
/// };
/// config.validate()?;
///
/// let short = HoppingConfig { secret: Some(Secret::new("short")), ..Default::default() };
/// let err = AetherConfig { hopping: short, ..Default::default() }.validate().unwrap_err();
/// assert_eq!(err.key(), "hopping.secret");
/// assert!(!err.to_string().contains("short"), "the secret is never printed");
/// # Ok::<(), aether_core::ConfigError>(())
/// ```
///
/// [`Vibrator::emit_time_hopping_wave`]: crate::Vibrator::emit_time_hopping_wave
/// [`Vibrator::resonate_hopping`]: crate::Vibrator::resonate_hopping
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HoppingConfig {
    /// The key of the hop sequence and of the wire channels, shared by the
    /// vibrators that hop together; at least 16 bytes. None (the default):
    /// hopping conceals nothing. Prints as `[redacted]`.
    pub secret: Option<Secret>,
    /// Length of a time slot, in milliseconds: the wire channel changes at
    /// every slot. Receivers accept waves stamped within one slot of their
    /// own clock, so clocks may be this far apart. Default 200, between 10
    /// and 86,400,000 (a day).
    pub hop_interval_ms: u64,
}

impl Default for HoppingConfig {
    fn default() -> Self {
        Self {
            secret: None,
            hop_interval_ms: 200,
        }
    }
}

impl HoppingConfig {
    /// Checks every field; the error names the first bad one and never
    /// holds the secret.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            HOP_INTERVAL_MS_RANGE.contains(&self.hop_interval_ms),
            "hopping.hop_interval_ms",
            self.hop_interval_ms.to_string(),
            "must be between 10 and 86400000",
        )?;
        if let Some(secret) = &self.secret {
            check_secret(secret)?;
        }
        Ok(())
    }
}

/// Refuses a hopping secret shorter than [`MIN_HOPPING_SECRET_BYTES`],
/// naming its length only.
pub(crate) fn check_secret(secret: &Secret) -> Result<(), ConfigError> {
    let len = secret.expose().len();
    check(
        len >= MIN_HOPPING_SECRET_BYTES,
        "hopping.secret",
        format!("[redacted] ({len} bytes)"),
        "must be at least 16 bytes; leave it out to hop without concealment",
    )
}
