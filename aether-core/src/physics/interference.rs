//! Superposition of two waves: the interference rule of docs/guide/contract.md, written
//! once here and used by everything that reports interference.

use std::f64::consts::{PI, TAU};

use crate::Phase;

/// What two waves make together: [`PhysicsEngine::calculate_interference`].
///
/// [`PhysicsEngine::calculate_interference`]: super::PhysicsEngine::calculate_interference
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interference {
    /// The resultant amplitude, `sqrt(a1² + a2² + 2·a1·a2·cos(φ1 − φ2))`, in
    /// `[|a1 − a2|, a1 + a2]` (so up to 2 for two full-strength waves).
    pub amplitude: f64,
    /// How far apart the phases are, in radians, in `[0, π]`.
    pub phase_difference: f64,
    /// In phase, opposite, or in between, within the engine's
    /// `phase_tolerance`.
    pub kind: InterferenceKind,
    /// Whether the waves interfere at all: same channel, same correlation key,
    /// and emitted within the coherence window of each other. The amplitude
    /// is the superposition either way.
    pub coherent: bool,
}

/// How two phases relate, within a tolerance `tol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InterferenceKind {
    /// In phase (difference at most `tol`): the waves reinforce each other.
    Constructive,
    /// Opposite (difference at least `π − tol`): the waves cancel out.
    Destructive,
    /// Anything in between.
    Partial,
}

/// The distance between two phases, in `[0, π]` (exactly symmetric: both
/// phases are in `[0, 2π)`, so `|a − b|` is too).
pub(crate) fn phase_difference(a: Phase, b: Phase) -> f64 {
    let d = (a.radians() - b.radians()).abs();
    if d > PI { TAU - d } else { d }
}

/// The kind of a phase difference `d` in `[0, π]`, with tolerance `tol`
/// (in `[0, π/2)`, so the two ends never overlap).
pub(crate) fn kind_of(d: f64, tol: f64) -> InterferenceKind {
    if d <= tol {
        InterferenceKind::Constructive
    } else if d >= PI - tol {
        InterferenceKind::Destructive
    } else {
        InterferenceKind::Partial
    }
}

/// The resultant amplitude of two waves, by docs/guide/contract.md's superposition rule.
pub(crate) fn resultant(a1: f64, a2: f64, phase_difference: f64) -> f64 {
    // `a1 * a2` first, so that swapping the waves gives the same bits.
    let squared = a1 * a1 + a2 * a2 + 2.0 * (a1 * a2) * phase_difference.cos();
    // Rounding can take an exact cancellation a hair below zero.
    let a = squared.max(0.0).sqrt();
    // ... and keep it a hair outside the bounds the rule guarantees.
    a.clamp((a1 - a2).abs(), a1 + a2)
}

/// The resultant amplitude of any number of waves `(amplitude, phase)`: the
/// length of the sum of their phasors. For two waves it is [`resultant`]
/// (the same rule, written for n).
pub(crate) fn superpose(waves: impl IntoIterator<Item = (f64, f64)>) -> f64 {
    let (x, y) = waves
        .into_iter()
        .fold((0.0, 0.0), |(x, y), (a, phase): (f64, f64)| {
            (x + a * phase.cos(), y + a * phase.sin())
        });
    x.hypot(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(radians: f64) -> Phase {
        Phase::new(radians).expect("finite")
    }

    #[test]
    fn phase_difference_is_the_short_way_round() {
        assert_eq!(phase_difference(phase(0.0), phase(PI)), PI);
        assert!((phase_difference(phase(0.1), phase(TAU - 0.1)) - 0.2).abs() < 1e-12);
        assert_eq!(phase_difference(phase(1.0), phase(1.0)), 0.0);
    }

    #[test]
    fn kinds_at_the_edges() {
        assert_eq!(kind_of(0.1, 0.1), InterferenceKind::Constructive);
        assert_eq!(kind_of(0.11, 0.1), InterferenceKind::Partial);
        assert_eq!(kind_of(PI - 0.1, 0.1), InterferenceKind::Destructive);
        assert_eq!(kind_of(PI, 0.0), InterferenceKind::Destructive);
        assert_eq!(kind_of(0.0, 0.0), InterferenceKind::Constructive);
    }

    #[test]
    fn superpose_agrees_with_the_two_wave_rule() {
        for (a1, a2, p1, p2) in [
            (1.0, 0.5, 0.0, 2.0),
            (0.3, 0.9, 5.0, 1.0),
            (1.0, 1.0, 0.0, PI),
        ] {
            let d = phase_difference(phase(p1), phase(p2));
            let two = resultant(a1, a2, d);
            let n = superpose([(a1, p1), (a2, p2)]);
            assert!((two - n).abs() < 1e-9, "{two} vs {n}");
        }
    }
}
