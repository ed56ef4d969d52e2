//! Attenuation: how a wave weakens with time and hops.
//!
//! The effective amplitude of a wave is
//!
//! ```text
//! a = a0 · exp(−decay_per_s · age) · attenuation_factor^hops
//! ```
//!
//! where `a0` is the amplitude it was emitted (or re-amplified) with, `age`
//! the seconds since then, and `hops` its propagation count. A wave whose
//! effective amplitude falls below the aether's `min_amplitude` is dead, so
//! time decay is a time-to-live with a meaning:
//! `ttl = ln(a0 / min_amplitude) / decay_per_s`.
//!
//! [`effective_amplitude`] is the one place this rule is written; waves and
//! mediums call it.
//!
//! ```
//! use aether_core::attenuation::{effective_amplitude, time_to_live};
//! use std::time::Duration;
//!
//! // No decay and no hops: the wave keeps its amplitude.
//! assert_eq!(effective_amplitude(0.8, 0.0, Duration::from_secs(60), 0.95, 0), 0.8);
//! // Two hops at 0.95.
//! let a = effective_amplitude(1.0, 0.0, Duration::ZERO, 0.95, 2);
//! assert!((a - 0.9025).abs() < 1e-12);
//! // A wave decaying at ln(100)/s lives one second above 0.01.
//! let ttl = time_to_live(1.0, 0.01, 100f64.ln()).unwrap();
//! assert!((ttl.as_secs_f64() - 1.0).abs() < 1e-9);
//! ```

use std::time::Duration;

/// Per-hop attenuation used when none is configured.
pub const DEFAULT_ATTENUATION_FACTOR: f64 = 0.95;

/// The effective amplitude rule (see the module docs).
///
/// `decay_per_s` of 0 means no time decay. Never exceeds `a0` for
/// `decay_per_s >= 0` and `factor` in `[0, 1]`.
pub fn effective_amplitude(
    a0: f64,
    decay_per_s: f64,
    age: Duration,
    factor: f64,
    hops: u32,
) -> f64 {
    let mut amplitude = a0;
    if decay_per_s > 0.0 && !age.is_zero() {
        amplitude *= (-decay_per_s * age.as_secs_f64()).exp();
    }
    if hops > 0 {
        amplitude *= factor.powi(hops.min(i32::MAX as u32) as i32);
    }
    amplitude
}

/// How long a wave emitted at `a0` and decaying at `decay_per_s` stays at or
/// above `min_amplitude` (ignoring hops). `None` means forever (no decay).
pub fn time_to_live(a0: f64, min_amplitude: f64, decay_per_s: f64) -> Option<Duration> {
    if decay_per_s <= 0.0 {
        return None;
    }
    if a0 <= min_amplitude {
        return Some(Duration::ZERO);
    }
    let secs = (a0 / min_amplitude).ln() / decay_per_s;
    Duration::try_from_secs_f64(secs).ok()
}

/// The decay rate that makes a wave emitted at `a0` fall to `min_amplitude`
/// after `ttl`: the inverse of [`time_to_live`].
pub fn decay_for_ttl(a0: f64, min_amplitude: f64, ttl: Duration) -> f64 {
    if ttl.is_zero() || a0 <= min_amplitude || min_amplitude <= 0.0 {
        return f64::INFINITY;
    }
    (a0 / min_amplitude).ln() / ttl.as_secs_f64()
}
