//! Amplitude (importance) and phase (state) of a wave.

use std::{f64::consts::PI, fmt};

/// Importance of a wave, in `[0, 1]`. NaN or out-of-range values are refused,
/// never clamped.
///
/// ```
/// use aether_core::Amplitude;
/// assert_eq!(Amplitude::new(0.5).unwrap().value(), 0.5);
/// assert!(Amplitude::new(1.5).is_err());
/// assert!(Amplitude::new(f64::NAN).is_err());
/// ```
#[derive(Clone, Copy, PartialEq, PartialOrd)]
pub struct Amplitude(f64);

impl Amplitude {
    /// Full strength, the default for new waves.
    pub const MAX: Amplitude = Amplitude(1.0);
    /// Silence.
    pub const ZERO: Amplitude = Amplitude(0.0);

    /// An amplitude, if `value` is in `[0, 1]`.
    pub fn new(value: f64) -> Result<Self, AmplitudeError> {
        if (0.0..=1.0).contains(&value) {
            Ok(Self(value))
        } else {
            Err(AmplitudeError { value })
        }
    }

    /// Within the crate, for values the attenuation rule made from valid ones.
    pub(crate) fn from_rule(value: f64) -> Self {
        debug_assert!(!value.is_nan());
        Self(value.clamp(0.0, 1.0))
    }

    /// The value, in `[0, 1]`.
    pub fn value(self) -> f64 {
        self.0
    }
}

impl Default for Amplitude {
    fn default() -> Self {
        Self::MAX
    }
}

impl fmt::Debug for Amplitude {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.4}", self.0)
    }
}

impl fmt::Display for Amplitude {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl TryFrom<f64> for Amplitude {
    type Error = AmplitudeError;

    fn try_from(value: f64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

/// An amplitude outside `[0, 1]` (or NaN) was refused.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[error("amplitude {value} is out of range: it must be a number in [0, 1]")]
pub struct AmplitudeError {
    /// The refused value.
    pub value: f64,
}

/// State of a wave, an angle in `[0, 2π)`.
///
/// Convention: [`Phase::ASSERT`] (0) asserts (created, approved),
/// [`Phase::RETRACT`] (π) retracts (cancelled, rejected). Any finite angle is
/// accepted and brought into `[0, 2π)`; NaN and infinities are refused.
///
/// ```
/// use aether_core::Phase;
/// use std::f64::consts::PI;
/// assert_eq!(Phase::new(3.0 * PI).unwrap(), Phase::RETRACT);
/// assert!(Phase::new(f64::INFINITY).is_err());
/// ```
#[derive(Clone, Copy, Default, PartialEq, PartialOrd)]
pub struct Phase(f64);

impl Phase {
    /// 0: the wave asserts something.
    pub const ASSERT: Phase = Phase(0.0);
    /// π: the wave retracts something.
    pub const RETRACT: Phase = Phase(PI);

    /// A phase from an angle in radians.
    pub fn new(radians: f64) -> Result<Self, PhaseError> {
        if !radians.is_finite() {
            return Err(PhaseError { value: radians });
        }
        // Most phases are in range already (every one off the wire that a
        // wave was emitted with): no division for them.
        if (0.0..2.0 * PI).contains(&radians) {
            return Ok(Self(radians));
        }
        let wrapped = radians.rem_euclid(2.0 * PI);
        // rem_euclid can round up to exactly 2π for tiny negative inputs.
        Ok(Self(if wrapped >= 2.0 * PI { 0.0 } else { wrapped }))
    }

    /// The angle in radians, in `[0, 2π)`.
    pub fn radians(self) -> f64 {
        self.0
    }

    /// This phase shifted by π (a reflection).
    pub fn inverted(self) -> Phase {
        Phase::new(self.0 + PI).unwrap_or(Phase::RETRACT)
    }
}

impl fmt::Debug for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.4}rad", self.0)
    }
}

/// A phase that is not a finite angle was refused.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[error("phase {value} is not a finite angle in radians")]
pub struct PhaseError {
    /// The refused value.
    pub value: f64,
}
