//! What the engine reports: interference patterns, with the waves involved.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use smol_str::SmolStr;

use crate::{Channel, Phase, Wave, WaveId};

/// A pattern of interference among waves of the same channel.
///
/// When a wave makes several, the engine reports one, in this order of
/// priority: [`Cancellation`](Self::Cancellation) (conflicting messages are
/// the most urgent), then [`StandingWave`](Self::StandingWave) (a loop or a
/// stuck producer, whose repeats would otherwise all look constructive), then
/// [`Constructive`](Self::Constructive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InterferencePattern {
    /// In phase with a wave of the same correlation key, within the coherence
    /// window: a duplicate or a confirmation.
    Constructive,
    /// About π apart from a wave of the same correlation key, within the
    /// coherence window: conflicting messages (approved and rejected for the
    /// same order).
    Cancellation,
    /// The same (channel, payload) recurring at a steady period: a loop, a
    /// retry storm or a stuck producer.
    StandingWave,
}

/// An interference pattern with what made it: [`PhysicsEngine::detect`].
///
/// [`PhysicsEngine::detect`]: super::PhysicsEngine::detect
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct InterferenceEvent {
    /// Which pattern.
    pub pattern: InterferencePattern,
    /// The channel the waves were observed on.
    pub channel: Channel,
    /// The correlation key of the wave that completed the pattern.
    pub correlation_key: String,
    /// The waves involved, oldest first; the wave that completed the pattern
    /// is the last. Constructive: the waves in phase with it; cancellation:
    /// the waves opposite to it; standing wave: its last repeats.
    pub waves: Vec<InvolvedWave>,
    /// The amplitude of the superposition of [`waves`](Self::waves) (the sum
    /// of their phasors; for two waves, docs/guide/contract.md's rule): near 0 for a
    /// cancellation of equal waves.
    pub resultant_amplitude: f64,
    /// For a standing wave, the mean interval between its repeats.
    pub period: Option<Duration>,
    /// When the wave that completed the pattern was emitted (or observed,
    /// if it was not emitted).
    pub at: SystemTime,
}

/// One wave of an [`InterferenceEvent`], as the engine remembers it: about
/// 80 bytes whatever its payload (the payload is not kept), and cheap to
/// clone (short source names are stored inline).
#[derive(Clone, Debug, PartialEq)]
pub struct InvolvedWave {
    pub(crate) id: WaveId,
    pub(crate) source: Option<SmolStr>,
    pub(crate) amplitude: f64,
    pub(crate) phase: Phase,
    pub(crate) at_ns: u64,
    pub(crate) hops: u32,
}

impl InvolvedWave {
    pub(crate) fn of(wave: &Wave, at_ns: u64) -> Self {
        Self {
            id: wave.id(),
            source: wave.source().map(SmolStr::new),
            amplitude: wave.amplitude().value(),
            phase: wave.phase(),
            at_ns,
            hops: wave.propagation_count(),
        }
    }

    /// Its id ([`WaveId::NIL`] if it was not emitted).
    pub fn id(&self) -> WaveId {
        self.id
    }

    /// The vibrator that emitted it, if known.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// Its amplitude when it was observed.
    pub fn amplitude(&self) -> f64 {
        self.amplitude
    }

    /// Its phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// When it was emitted (or observed, if it was not emitted).
    pub fn at(&self) -> SystemTime {
        system_time(self.at_ns)
    }

    /// Its hop count.
    pub fn hops(&self) -> u32 {
        self.hops
    }

    /// The same sighting of the same wave: an emitted wave at the same hop
    /// count (one wave heard by several resonators). A wave that hops again
    /// (a relay, a loop) is a new sighting.
    pub(crate) fn same_sighting(&self, other: &InvolvedWave) -> bool {
        self.id != WaveId::NIL && self.id == other.id && self.hops == other.hops
    }
}

/// How the engine's tables call a remembered wave.
pub(crate) type Seen = InvolvedWave;

/// Unix nanoseconds of `time` (0 before the epoch, saturating far after it).
pub(crate) fn unix_ns(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The time `ns` Unix nanoseconds.
pub(crate) fn system_time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_remembered_wave_stays_small() {
        // The memory bounds in `PhysicsConfig`'s docs count on it.
        assert!(std::mem::size_of::<super::InvolvedWave>() <= 80);
    }
}
