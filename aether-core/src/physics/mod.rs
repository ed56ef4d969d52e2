//! The physics engine: interference between waves, the patterns it makes,
//! and resonance between services.
//!
//! - [`PhysicsEngine::calculate_interference`]: what two waves make together,
//!   by superposition with phase (docs/guide/contract.md, "Phase and interference"):
//!   `A = sqrt(a1² + a2² + 2·a1·a2·cos(φ1 − φ2))`.
//! - [`PhysicsEngine::detect`] (and [`detect_patterns`], its pattern only):
//!   fed the waves of the aether one by one, reports
//!   [`Cancellation`](InterferencePattern::Cancellation) (conflicting
//!   messages), [`StandingWave`](InterferencePattern::StandingWave) (a loop
//!   or a stuck producer) and [`Constructive`](InterferencePattern::Constructive)
//!   interference (duplicates, confirmations), with the waves involved.
//! - [`PhysicsEngine::observe_delivery`] and [`PhysicsEngine::edges`]: the
//!   [resonance graph](ResonanceGraph), emitter → resonator by channel.
//! - On the bus: [`Aether::physics`](crate::Aether::physics) gives an
//!   aether's engine at work on its deliveries ([`Physics`]: events, edges,
//!   statistics), and [`Vibrator::follow_interference`](crate::Vibrator::follow_interference)
//!   follows the events of some channels ([`InterferenceFollower`]). The
//!   engine runs on a thread of its own, off the emit and receive paths,
//!   within a budget, and only once someone asks for it (`bus.rs`).
//!
//! ```
//! use aether_core::{InterferencePattern, Phase, PhysicsEngine, Wave};
//! use std::time::{Duration, SystemTime};
//!
//! let mut physics = PhysicsEngine::new();
//! let approved = Wave::builder("orders.review").correlation_key("order-42").build()?;
//! let rejected = Wave::builder("orders.review")
//!     .correlation_key("order-42")
//!     .phase(Phase::RETRACT)
//!     .build()?;
//!
//! let interference = physics.calculate_interference(&approved, &rejected);
//! assert!(interference.coherent && interference.amplitude < 1e-9);
//!
//! // Waves not emitted yet have no time of their own: give one.
//! let t0 = SystemTime::now();
//! assert_eq!(physics.detect_at("orders.review", &approved, t0), None);
//! let event = physics
//!     .detect_at("orders.review", &rejected, t0 + Duration::from_millis(20))
//!     .expect("conflicting messages");
//! assert_eq!(event.pattern, InterferencePattern::Cancellation);
//! assert_eq!(event.waves.len(), 2);
//! # Ok::<(), aether_core::WaveError>(())
//! ```
//!
//! # Windows, time and bounds
//!
//! Two waves interfere when they share a channel and a correlation key and
//! were emitted within `coherence_window_ms` of each other. "A channel" is
//! the wave's own, or the first of [`PhysicsConfig::correlate`] its channel
//! matches ([`PhysicsEngine::correlated_on`]). A wave's time is
//! its emission time ([`Wave::emitted_at`]); a wave not emitted yet is
//! observed at the time given to [`PhysicsEngine::detect_at`], or now. The
//! engine reads no clock of its own otherwise, so it can be driven by the
//! waves' times (deterministic in tests, and across replays).
//!
//! Memory is bounded under any traffic: each table (coherence windows,
//! standing-wave rings, resonance edges) holds at most its cap of entries
//! ([`PhysicsConfig`]), forgetting the least recently used, and entries whose
//! time has passed are dropped as new waves come ([`PhysicsEngine::expire`]
//! drops them all at once). Entries are found by a keyed 64-bit fingerprint,
//! so looking one up allocates nothing.
//!
//! # Threads
//!
//! The engine is plain data (`Send + Sync`), with `&mut self` methods: wrap it
//! in a `Mutex`, or shard it by channel (a window depends only on its own
//! channel and key, so engines fed disjoint channels find the same patterns).
//!
//! [`detect_patterns`]: PhysicsEngine::detect_patterns

mod bus;
mod follow;
mod interference;
mod lru;
mod pattern;
mod recent;
mod resonance;
mod standing;
mod window;

use std::{
    borrow::Borrow,
    fmt,
    hash::{BuildHasher, RandomState},
    time::{Duration, SystemTime},
};

pub use crate::config::PhysicsConfig;
pub(crate) use bus::PhysicsHub;
pub use bus::{Physics, PhysicsStats};
pub use follow::{InterferenceFollower, PhysicsEvents};
pub use interference::{Interference, InterferenceKind};
pub use pattern::{InterferenceEvent, InterferencePattern, InvolvedWave};
pub use resonance::{ResonanceEdge, ResonanceGraph};

use crate::{Amplitude, Channel, ConfigError, Wave};
use pattern::{Seen, system_time, unix_ns};
use standing::StandingWaves;
use window::CoherenceWindows;

/// Finds interference between waves and resonance between services. See the
/// [module](self) guide.
pub struct PhysicsEngine {
    config: PhysicsConfig,
    /// Keys the fingerprints of (channel, key) and (channel, payload).
    hasher: RandomState,
    windows: CoherenceWindows,
    standing: StandingWaves,
    resonance: ResonanceGraph,
    /// `config.correlate`, parsed.
    correlate: Vec<Channel>,
}

impl PhysicsEngine {
    /// An engine with the default settings.
    pub fn new() -> Self {
        Self::build(PhysicsConfig::default())
    }

    /// An engine with `config`, refused if a value is out of range (the
    /// error names the key).
    pub fn with_config(config: PhysicsConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::build(config))
    }

    fn build(config: PhysicsConfig) -> Self {
        Self {
            hasher: RandomState::new(),
            windows: CoherenceWindows::new(config.max_tracked_keys),
            standing: StandingWaves::new(config.max_tracked_keys),
            resonance: ResonanceGraph::new(&config),
            correlate: config.correlate.iter().map(Channel::new).collect(),
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &PhysicsConfig {
        &self.config
    }

    /// What `w1` and `w2` make together: the resultant of their current
    /// amplitudes by superposition with phase, how far apart their phases
    /// are, and whether they are coherent (same channel, same correlation
    /// key, emitted within the coherence window; a wave not emitted yet
    /// counts as emitted now). Remembers nothing.
    pub fn calculate_interference(&self, w1: &Wave, w2: &Wave) -> Interference {
        let a1 = w1.amplitude().value();
        let a2 = w2.amplitude().value();
        let phase_difference = interference::phase_difference(w1.phase(), w2.phase());
        // A wave not emitted yet counts as emitted now.
        let time = |w: &Wave| unix_ns(w.emitted_at().unwrap_or_else(crate::wave::clock::bus_now));
        let window_ns = crate::config::as_ns(self.config.coherence_window);
        let coherent = w1.channel() == w2.channel()
            && w1.correlation_key() == w2.correlation_key()
            && time(w1).abs_diff(time(w2)) <= window_ns;
        Interference {
            amplitude: interference::resultant(a1, a2, phase_difference),
            phase_difference,
            kind: interference::kind_of(phase_difference, self.config.phase_tolerance),
            coherent,
        }
    }

    /// Observes `wave` as heard on `channel` and returns the pattern it
    /// makes, if any: [`detect_on`](Self::detect_on) without the details
    /// (nothing is allocated for them).
    ///
    /// `channel` is the channel to correlate on: usually the wave's own, or a
    /// common one (`"orders"`) so that waves of several channels with the
    /// same correlation key interfere.
    pub fn detect_patterns(
        &mut self,
        channel: impl AsRef<str>,
        wave: impl Borrow<Wave>,
    ) -> Option<InterferencePattern> {
        let wave = wave.borrow();
        let at = wave_time(wave, None);
        self.observe(channel.as_ref(), wave, at, false)
            .map(|o| o.pattern)
    }

    /// Observes `wave` on the channel it is correlated on
    /// ([`correlated_on`](Self::correlated_on)): [`detect_at`](Self::detect_at)
    /// at its emission time.
    pub fn detect(&mut self, wave: &Wave) -> Option<InterferenceEvent> {
        let on = self.correlated_on(wave);
        self.detect_on(on.as_str(), wave)
    }

    /// The channel `wave` is correlated on: the first of
    /// [`PhysicsConfig::correlate`] that its channel matches, or else its own
    /// channel.
    ///
    /// ```
    /// use aether_core::{PhysicsConfig, PhysicsEngine, Wave};
    ///
    /// let engine = PhysicsEngine::with_config(PhysicsConfig {
    ///     correlate: vec!["inventory.*".into()],
    ///     ..Default::default()
    /// })?;
    /// let reserved = Wave::builder("inventory.reserved").build()?;
    /// assert_eq!(engine.correlated_on(&reserved).as_str(), "inventory.*");
    /// let created = Wave::builder("orders.created").build()?;
    /// assert_eq!(engine.correlated_on(&created).as_str(), "orders.created");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn correlated_on(&self, wave: &Wave) -> Channel {
        self.correlate
            .iter()
            .find(|pattern| wave.channel().matches(pattern))
            .unwrap_or(wave.channel())
            .clone()
    }

    /// Observes `wave` as heard on `channel`: [`detect_at`](Self::detect_at)
    /// at its emission time.
    pub fn detect_on(
        &mut self,
        channel: impl AsRef<str>,
        wave: &Wave,
    ) -> Option<InterferenceEvent> {
        let at = wave_time(wave, None);
        self.event(channel.as_ref(), wave, at)
    }

    /// Observes `wave` as heard on `channel`, emitted at `at` if it was not
    /// emitted (an emitted wave keeps its own emission time), and returns
    /// the pattern it makes with the waves observed before, with the waves
    /// involved.
    ///
    /// In order of priority: a cancellation (about π from a wave of the same
    /// correlation key within the coherence window), a standing wave (its
    /// (channel, payload) repeating at a steady period), constructive
    /// interference (in phase with a wave of the same key within the window).
    /// The wave is remembered either way. The same sighting twice (the same
    /// emitted wave at the same hop count, as heard by two resonators) is
    /// observed once; a wave that hops again (a loop) is a new sighting.
    pub fn detect_at(
        &mut self,
        channel: impl AsRef<str>,
        wave: &Wave,
        at: SystemTime,
    ) -> Option<InterferenceEvent> {
        let at = wave_time(wave, Some(at));
        self.event(channel.as_ref(), wave, at)
    }

    fn event(&mut self, channel: &str, wave: &Wave, at_ns: u64) -> Option<InterferenceEvent> {
        let outcome = self.observe(channel, wave, at_ns, true)?;
        Some(InterferenceEvent {
            pattern: outcome.pattern,
            channel: channel_for(channel, wave),
            correlation_key: wave.correlation_key().to_string(),
            resultant_amplitude: interference::superpose(
                outcome
                    .involved
                    .iter()
                    .map(|w| (w.amplitude, w.phase.radians())),
            ),
            waves: outcome.involved,
            period: outcome.period_ns.map(Duration::from_nanos),
            at: system_time(at_ns),
        })
    }

    /// Feeds `wave` to the coherence windows and the standing-wave rings and
    /// picks the pattern by priority.
    fn observe(&mut self, channel: &str, wave: &Wave, at_ns: u64, detail: bool) -> Option<Outcome> {
        let seen = InvolvedWave::of(wave, at_ns);
        let key = wave.correlation_key();
        let window = self.hasher.hash_one((channel, key));
        let coherent = self
            .windows
            .observe(window, channel, wave, &seen, &self.config, detail);
        let ring = self
            .hasher
            .hash_one((channel, wave.payload_bytes().as_ref()));
        let standing = self
            .standing
            .observe(ring, channel, wave, &seen, &self.config, detail);
        match (coherent, standing) {
            (Some(c), _) if c.pattern == InterferencePattern::Cancellation => Some(Outcome {
                pattern: c.pattern,
                involved: c.involved,
                period_ns: None,
            }),
            (_, Some(s)) => Some(Outcome {
                pattern: InterferencePattern::StandingWave,
                involved: s.involved,
                period_ns: Some(s.period_ns),
            }),
            (Some(c), None) => Some(Outcome {
                pattern: c.pattern,
                involved: c.involved,
                period_ns: None,
            }),
            (None, None) => None,
        }
    }

    /// How many (channel, correlation key) coherence windows are tracked: at
    /// most `max_tracked_keys`.
    pub fn tracked_keys(&self) -> usize {
        self.windows.len()
    }

    /// How many (channel, payload) standing-wave rings are tracked: at most
    /// `max_tracked_keys`.
    pub fn tracked_payloads(&self) -> usize {
        self.standing.len()
    }

    /// Drops everything whose time has passed at `now`: coherence windows
    /// and standing-wave rings whose last wave is older than their window,
    /// resonance edges idle for longer than `resonance_idle_ms`. Waves do
    /// this a little at a time; call it to release memory when traffic stops.
    pub fn expire(&mut self, now: SystemTime) {
        let now_ns = unix_ns(now);
        self.windows
            .expire(now_ns, crate::config::as_ms(self.config.coherence_window));
        self.standing
            .expire(now_ns, crate::config::as_ms(self.config.standing_window));
        self.resonance.expire(now);
    }

    /// Counts one delivery in the resonance graph: a wave from `emitter`,
    /// emitted on `channel`, heard by `resonator` with `amplitude`, at `at`.
    pub fn observe_delivery(
        &mut self,
        emitter: &str,
        resonator: &str,
        channel: &Channel,
        amplitude: Amplitude,
        at: SystemTime,
    ) {
        self.resonance
            .observe(emitter, resonator, channel, amplitude, at);
    }

    /// The resonance graph.
    pub fn resonance(&self) -> &ResonanceGraph {
        &self.resonance
    }

    /// The edges of the resonance graph as of the latest delivery observed,
    /// busiest first ([`ResonanceGraph::edges_at`] for another time).
    pub fn edges(&self) -> Vec<ResonanceEdge> {
        self.resonance.edges()
    }
}

impl Default for PhysicsEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PhysicsEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhysicsEngine")
            .field("config", &self.config)
            .field("tracked_keys", &self.tracked_keys())
            .field("tracked_payloads", &self.tracked_payloads())
            .field("edges", &self.resonance.len())
            .finish()
    }
}

/// The pattern a wave made, before it is reported.
struct Outcome {
    pattern: InterferencePattern,
    involved: Vec<Seen>,
    period_ns: Option<u64>,
}

/// The time of `wave`: its emission time, or `at`, or now.
fn wave_time(wave: &Wave, at: Option<SystemTime>) -> u64 {
    unix_ns(
        wave.emitted_at()
            .or(at)
            .unwrap_or_else(crate::wave::clock::bus_now),
    )
}

/// `channel` as a [`Channel`], reusing the wave's when it is the same.
fn channel_for(channel: &str, wave: &Wave) -> Channel {
    if wave.channel().as_str() == channel {
        wave.channel().clone()
    } else {
        Channel::new(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PhysicsEngine>();
        assert_send_sync::<InterferenceEvent>();
    }

    #[test]
    fn with_config_refuses_bad_values() {
        let err = PhysicsEngine::with_config(PhysicsConfig {
            max_tracked_keys: 0,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.key(), "physics.max_tracked_keys");
    }
}
