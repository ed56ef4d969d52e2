//! Settings of the physics engine: windows, tolerances and the caps that
//! bound its memory.

use std::f64::consts::FRAC_PI_2;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, check};
use crate::Channel;

/// Settings of a [`PhysicsEngine`](crate::PhysicsEngine). Every field has a
/// default; [`PhysicsConfig::validate`] refuses a value out of range, naming
/// the key (`physics.<field>`).
///
/// Memory is bounded whatever the traffic: at most `max_tracked_keys`
/// coherence windows of at most `max_window_waves` waves each, at most
/// `max_tracked_keys` standing-wave rings of `standing_min_repeats` waves
/// each, and at most `max_edges` resonance edges. About 80 bytes per wave
/// kept, plus the names: with the defaults, under 60 MB in the worst case
/// (every window full), and a few hundred bytes per key in the usual one.
///
/// ```
/// use aether_core::PhysicsConfig;
///
/// let config = PhysicsConfig { coherence_window: std::time::Duration::from_millis(500), ..Default::default() };
/// assert!(config.validate().is_ok());
///
/// let bad = PhysicsConfig { phase_tolerance: 2.0, ..Default::default() };
/// assert_eq!(bad.validate().unwrap_err().key(), "physics.phase_tolerance");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhysicsConfig {
    /// Two waves interfere only if their emission times are at most this far
    /// apart, in milliseconds. Default 1000.
    #[serde(rename = "coherence_window_ms", with = "super::millis")]
    pub coherence_window: Duration,
    /// How far from 0 (in phase) or from π (opposite) a phase difference may
    /// be, in radians, in `[0, π/2)`. Default 0.1.
    pub phase_tolerance: f64,
    /// Most waves kept per (channel, correlation key) window; the oldest goes
    /// first. 1 to 4096. Default 64.
    pub max_window_waves: usize,
    /// Most (channel, correlation key) windows, and most (channel, payload)
    /// rings, tracked at once; past it the least recently used one is
    /// forgotten. 1 to 10,000,000. Default 10,000.
    pub max_tracked_keys: usize,
    /// Occurrences of the same (channel, payload) at a steady period that make
    /// a standing wave. 3 to 64. Default 4.
    pub standing_min_repeats: usize,
    /// How much the intervals between those occurrences may vary, as a
    /// fraction of their mean, in `(0, 1]`. Default 0.2 (20 %).
    pub standing_jitter: f64,
    /// The occurrences of a standing wave all fall within this span, in
    /// milliseconds. Default 10,000.
    #[serde(rename = "standing_window_ms", with = "super::millis")]
    pub standing_window: Duration,
    /// Time constant of the resonance rates and mean amplitudes (an
    /// exponentially decayed window), in milliseconds. Default 10,000.
    #[serde(rename = "resonance_window_ms", with = "super::millis")]
    pub resonance_window: Duration,
    /// A resonance edge not seen for this long is dropped, in milliseconds.
    /// Default 60,000.
    #[serde(rename = "resonance_idle_ms", with = "super::millis")]
    pub resonance_idle: Duration,
    /// Most resonance edges kept; past it the least recently seen one is
    /// dropped. 1 to 10,000,000. Default 10,000.
    pub max_edges: usize,
    /// The budget of an aether's engine ([`Aether::physics`]): most
    /// deliveries it observes per second. Past it, whole batches are skipped
    /// (and counted), so the engine never takes more than its share of a
    /// core: each costs the engine thread about 1 to 1.5 µs, so the default
    /// takes at most 5 to 8 % of one core. 1 to 100,000,000. Default 50,000.
    ///
    /// [`Aether::physics`]: crate::Aether::physics
    pub max_waves_per_s: u64,
    /// Amplitude kept by a diffracting wave at each bend to a parent
    /// channel, in `(0, 1]`. Default 0.5.
    pub diffraction_factor: f64,
    /// Interference events kept for followers: a follower further behind
    /// skips the oldest (counted). 1 to 1,000,000. Default 1024.
    pub follower_buffer: usize,
    /// Channel patterns whose channels interfere as one. A wave on a
    /// channel that one of them matches (the first that does) is correlated
    /// on that pattern instead of its own channel: with `"inventory.*"`,
    /// `inventory.reserved` (phase 0) and `inventory.insufficient` (phase
    /// π) about the same order cancel, two deciders answering one order both
    /// ways. At most 64 patterns, each a valid channel or pattern. Default
    /// none: each channel interferes only with itself.
    pub correlate: Vec<String>,
}

impl Default for PhysicsConfig {
    fn default() -> Self {
        Self {
            coherence_window: Duration::from_millis(1000),
            phase_tolerance: 0.1,
            max_window_waves: 64,
            max_tracked_keys: 10_000,
            standing_min_repeats: 4,
            standing_jitter: 0.2,
            standing_window: Duration::from_millis(10_000),
            resonance_window: Duration::from_millis(10_000),
            resonance_idle: Duration::from_millis(60_000),
            max_edges: 10_000,
            max_waves_per_s: 50_000,
            diffraction_factor: 0.5,
            follower_buffer: 1024,
            correlate: Vec::new(),
        }
    }
}

/// Most patterns in `correlate`.
const MAX_CORRELATE: usize = 64;

/// The longest window accepted: one day.
const MAX_WINDOW_MS: u64 = 86_400_000;

impl PhysicsConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let window = |key, ms: u64| {
            check(
                (1..=MAX_WINDOW_MS).contains(&ms),
                key,
                ms.to_string(),
                "must be between 1 and 86400000 (one day)",
            )
        };
        window(
            "physics.coherence_window_ms",
            super::as_ms(self.coherence_window),
        )?;
        check(
            (0.0..FRAC_PI_2).contains(&self.phase_tolerance),
            "physics.phase_tolerance",
            self.phase_tolerance.to_string(),
            "must be in [0, π/2) radians",
        )?;
        check(
            (1..=4096).contains(&self.max_window_waves),
            "physics.max_window_waves",
            self.max_window_waves.to_string(),
            "must be between 1 and 4096",
        )?;
        check(
            (1..=10_000_000).contains(&self.max_tracked_keys),
            "physics.max_tracked_keys",
            self.max_tracked_keys.to_string(),
            "must be between 1 and 10000000",
        )?;
        check(
            (3..=64).contains(&self.standing_min_repeats),
            "physics.standing_min_repeats",
            self.standing_min_repeats.to_string(),
            "must be between 3 and 64",
        )?;
        check(
            self.standing_jitter > 0.0 && self.standing_jitter <= 1.0,
            "physics.standing_jitter",
            self.standing_jitter.to_string(),
            "must be in (0, 1]",
        )?;
        window(
            "physics.standing_window_ms",
            super::as_ms(self.standing_window),
        )?;
        window(
            "physics.resonance_window_ms",
            super::as_ms(self.resonance_window),
        )?;
        window(
            "physics.resonance_idle_ms",
            super::as_ms(self.resonance_idle),
        )?;
        check(
            (1..=10_000_000).contains(&self.max_edges),
            "physics.max_edges",
            self.max_edges.to_string(),
            "must be between 1 and 10000000",
        )?;
        check(
            (1..=100_000_000).contains(&self.max_waves_per_s),
            "physics.max_waves_per_s",
            self.max_waves_per_s.to_string(),
            "must be between 1 and 100000000",
        )?;
        check(
            self.diffraction_factor > 0.0 && self.diffraction_factor <= 1.0,
            "physics.diffraction_factor",
            self.diffraction_factor.to_string(),
            "must be in (0, 1]",
        )?;
        check(
            (1..=1_000_000).contains(&self.follower_buffer),
            "physics.follower_buffer",
            self.follower_buffer.to_string(),
            "must be between 1 and 1000000",
        )?;
        check(
            self.correlate.len() <= MAX_CORRELATE,
            "physics.correlate",
            format!("{} patterns", self.correlate.len()),
            "must name at most 64 patterns",
        )?;
        for pattern in &self.correlate {
            check(
                Channel::new(pattern).is_valid(),
                "physics.correlate",
                pattern.clone(),
                "each must be a valid channel or pattern, such as \"inventory.*\"",
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(PhysicsConfig::default().validate(), Ok(()));
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: [(PhysicsConfig, &str); 16] = [
            (
                PhysicsConfig {
                    coherence_window: Duration::from_millis(0),
                    ..Default::default()
                },
                "physics.coherence_window_ms",
            ),
            (
                PhysicsConfig {
                    phase_tolerance: f64::NAN,
                    ..Default::default()
                },
                "physics.phase_tolerance",
            ),
            (
                PhysicsConfig {
                    max_window_waves: 0,
                    ..Default::default()
                },
                "physics.max_window_waves",
            ),
            (
                PhysicsConfig {
                    max_tracked_keys: 0,
                    ..Default::default()
                },
                "physics.max_tracked_keys",
            ),
            (
                PhysicsConfig {
                    standing_min_repeats: 2,
                    ..Default::default()
                },
                "physics.standing_min_repeats",
            ),
            (
                PhysicsConfig {
                    standing_jitter: 0.0,
                    ..Default::default()
                },
                "physics.standing_jitter",
            ),
            (
                PhysicsConfig {
                    standing_window: Duration::from_millis(MAX_WINDOW_MS + 1),
                    ..Default::default()
                },
                "physics.standing_window_ms",
            ),
            (
                PhysicsConfig {
                    resonance_window: Duration::from_millis(0),
                    ..Default::default()
                },
                "physics.resonance_window_ms",
            ),
            (
                PhysicsConfig {
                    resonance_idle: Duration::from_millis(0),
                    ..Default::default()
                },
                "physics.resonance_idle_ms",
            ),
            (
                PhysicsConfig {
                    max_edges: 0,
                    ..Default::default()
                },
                "physics.max_edges",
            ),
            (
                PhysicsConfig {
                    max_waves_per_s: 0,
                    ..Default::default()
                },
                "physics.max_waves_per_s",
            ),
            (
                PhysicsConfig {
                    diffraction_factor: 0.0,
                    ..Default::default()
                },
                "physics.diffraction_factor",
            ),
            (
                PhysicsConfig {
                    diffraction_factor: f64::NAN,
                    ..Default::default()
                },
                "physics.diffraction_factor",
            ),
            (
                PhysicsConfig {
                    follower_buffer: 0,
                    ..Default::default()
                },
                "physics.follower_buffer",
            ),
            (
                PhysicsConfig {
                    correlate: vec!["inventory..x".into()],
                    ..Default::default()
                },
                "physics.correlate",
            ),
            (
                PhysicsConfig {
                    correlate: vec!["a.*".into(); 65],
                    ..Default::default()
                },
                "physics.correlate",
            ),
        ];
        for (config, key) in cases {
            let err = config.validate().expect_err(key);
            assert_eq!(err.key(), key);
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn reads_from_json_with_defaults_and_refuses_unknown_keys() {
        let config: PhysicsConfig =
            serde_json::from_str(r#"{"coherence_window_ms": 250}"#).expect("valid");
        assert_eq!(
            config.coherence_window,
            std::time::Duration::from_millis(250)
        );
        assert_eq!(config.max_tracked_keys, 10_000);
        assert!(serde_json::from_str::<PhysicsConfig>(r#"{"coherence": 1}"#).is_err());
    }
}
