//! Resonance detection: which services are related, as a graph whose edges
//! are emitter → resonator, by channel, with a rate and a mean amplitude.
//!
//! An edge is one (emitter, resonator, exact channel): the channel a wave was
//! emitted on, not the pattern it was heard through, so the graph says what
//! actually flows. Its rate and mean amplitude are exponentially decayed
//! over `resonance_window_ms` (the time constant τ): each delivery counts
//! `exp(−age / τ)`, so the rate is the decayed count divided by τ, which
//! for a steady stream of `r` waves per second tends to `r` after a few τ.
//! The graph keeps at most `max_edges` edges, forgetting the least recently
//! seen, and drops edges idle for `resonance_idle_ms`.

use std::{
    hash::{BuildHasher, RandomState},
    time::SystemTime,
};

use smol_str::SmolStr;

use super::{
    PhysicsConfig,
    lru::Lru,
    pattern::{system_time, unix_ns},
};
use crate::{Amplitude, Channel};

/// One edge of the [`ResonanceGraph`]: `emitter` emits on `channel` and
/// `resonator` hears it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ResonanceEdge {
    /// The vibrator that emits.
    pub emitter: String,
    /// The vibrator that hears.
    pub resonator: String,
    /// The channel the waves were emitted on.
    pub channel: Channel,
    /// Deliveries per second over the decayed window.
    pub rate_per_s: f64,
    /// The mean amplitude of the deliveries over the decayed window.
    pub mean_amplitude: f64,
    /// Every delivery counted on this edge since it was first seen.
    pub deliveries: u64,
    /// The first delivery.
    pub first_seen: SystemTime,
    /// The latest delivery.
    pub last_seen: SystemTime,
}

struct Edge {
    emitter: SmolStr,
    resonator: SmolStr,
    channel: Channel,
    /// The decayed count of deliveries, as of `last_ns`.
    weight: f64,
    /// The decayed sum of their amplitudes, as of `last_ns`.
    amplitude_sum: f64,
    deliveries: u64,
    first_ns: u64,
    last_ns: u64,
}

/// The resonance graph: emitter → resonator edges, by channel. Bounded by
/// `max_edges` (least recently seen forgotten). See the
/// [module](crate::physics) guide.
pub struct ResonanceGraph {
    edges: Lru<Edge>,
    hasher: RandomState,
    tau_ns: f64,
    idle_ns: u64,
    /// The latest delivery time observed.
    latest_ns: u64,
}

/// Idle edges dropped per delivery from the least recently seen end.
const SWEEP: usize = 2;

impl ResonanceGraph {
    /// An empty graph with `config`'s window, idle time and bound (a
    /// validated config; out-of-range values are brought into range).
    pub(crate) fn new(config: &PhysicsConfig) -> Self {
        Self {
            edges: Lru::new(config.max_edges),
            hasher: RandomState::new(),
            tau_ns: (crate::config::as_ms(config.resonance_window).max(1) as f64) * 1e6,
            idle_ns: crate::config::as_ns(config.resonance_idle),
            latest_ns: 0,
        }
    }

    /// Counts one delivery of a wave from `emitter`, emitted on `channel`,
    /// heard by `resonator` with `amplitude`, at `at`.
    pub(crate) fn observe(
        &mut self,
        emitter: &str,
        resonator: &str,
        channel: &Channel,
        amplitude: Amplitude,
        at: SystemTime,
    ) {
        let now = unix_ns(at);
        let a = amplitude.value();
        let fingerprint = self.hasher.hash_one((emitter, resonator, channel.as_str()));
        let fresh = || Edge {
            emitter: SmolStr::new(emitter),
            resonator: SmolStr::new(resonator),
            channel: channel.clone(),
            weight: 0.0,
            amplitude_sum: 0.0,
            deliveries: 0,
            first_ns: now,
            last_ns: now,
        };
        let edge = self.edges.get_or_insert_with(fingerprint, |_| fresh());
        if edge.emitter != emitter || edge.resonator != resonator || edge.channel != *channel {
            // Two edges on one 64-bit keyed fingerprint: practically never.
            *edge = fresh();
        }
        if now >= edge.last_ns {
            let keep = decay(now - edge.last_ns, self.tau_ns);
            edge.weight = edge.weight * keep + 1.0;
            edge.amplitude_sum = edge.amplitude_sum * keep + a;
            edge.last_ns = now;
        } else {
            // A delivery older than the latest one counts as already decayed.
            let keep = decay(edge.last_ns - now, self.tau_ns);
            edge.weight += keep;
            edge.amplitude_sum += a * keep;
        }
        edge.first_ns = edge.first_ns.min(now);
        edge.deliveries += 1;
        self.latest_ns = self.latest_ns.max(now);

        for _ in 0..SWEEP {
            match self.edges.peek_lru() {
                Some(e) if e.last_ns.saturating_add(self.idle_ns) < now => {
                    self.edges.pop_lru();
                }
                _ => break,
            }
        }
    }

    /// The edges as of the latest delivery observed, busiest first.
    pub fn edges(&self) -> Vec<ResonanceEdge> {
        self.edges_as_of(self.latest_ns)
    }

    /// The edges with their rates decayed to `now`, busiest first.
    pub fn edges_at(&self, now: SystemTime) -> Vec<ResonanceEdge> {
        self.edges_as_of(unix_ns(now))
    }

    fn edges_as_of(&self, now: u64) -> Vec<ResonanceEdge> {
        let mut edges: Vec<ResonanceEdge> = self
            .edges
            .iter()
            .map(|e| {
                let weight = e.weight * decay(now.saturating_sub(e.last_ns), self.tau_ns);
                ResonanceEdge {
                    emitter: e.emitter.to_string(),
                    resonator: e.resonator.to_string(),
                    channel: e.channel.clone(),
                    rate_per_s: weight / (self.tau_ns / 1e9),
                    mean_amplitude: if e.weight > 0.0 {
                        e.amplitude_sum / e.weight
                    } else {
                        0.0
                    },
                    deliveries: e.deliveries,
                    first_seen: system_time(e.first_ns),
                    last_seen: system_time(e.last_ns),
                }
            })
            .collect();
        edges.sort_by(|a, b| {
            b.rate_per_s
                .total_cmp(&a.rate_per_s)
                .then_with(|| a.emitter.cmp(&b.emitter))
                .then_with(|| a.resonator.cmp(&b.resonator))
                .then_with(|| a.channel.as_str().cmp(b.channel.as_str()))
        });
        edges
    }

    /// How many edges the graph holds (at most `max_edges`).
    pub fn len(&self) -> usize {
        self.edges.len()
    }

    /// Whether the graph has no edge.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every edge idle for longer than `resonance_idle_ms` at `now`.
    pub(crate) fn expire(&mut self, now: SystemTime) {
        let now = unix_ns(now);
        let idle = self.idle_ns;
        self.edges.retain(|e| e.last_ns.saturating_add(idle) >= now);
    }
}

/// `exp(−age / τ)`.
fn decay(age_ns: u64, tau_ns: f64) -> f64 {
    (-(age_ns as f64) / tau_ns).exp()
}

impl std::fmt::Debug for ResonanceGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResonanceGraph")
            .field("edges", &self.len())
            .field("window_ms", &(self.tau_ns / 1e6))
            .finish()
    }
}
