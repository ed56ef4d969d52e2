//! Standing waves: the same (channel, payload) recurring at a steady period.
//!
//! Per (channel, payload) the engine keeps a small ring of its last
//! `standing_min_repeats` occurrences. They make a standing wave when they
//! all fall within `standing_window_ms` and the intervals between them vary
//! by less than `standing_jitter` of their mean: a loop, a retry storm or a
//! stuck producer. A burst (all at the same instant) has no period and is
//! not one.

use std::collections::VecDeque;

use smallvec::SmallVec;

use super::{PhysicsConfig, channel_for, lru::Lru, pattern::Seen};
use crate::{Channel, Wave};

/// The last occurrences of one (channel, payload), in arrival order.
struct Ring {
    channel: Channel,
    /// The keyed fingerprint of (channel, payload): the payload itself is
    /// not kept (it may be large).
    fingerprint: u64,
    waves: VecDeque<Seen>,
    last_ns: u64,
}

impl Ring {
    /// Makes this the ring of `fingerprint`, empty, keeping its buffer (at
    /// most `standing_min_repeats` waves): a ring forgotten to make room is
    /// reused, so a flood of new payloads allocates nothing.
    fn reset(&mut self, channel: Channel, fingerprint: u64, now: u64) {
        self.channel = channel;
        self.fingerprint = fingerprint;
        self.waves.clear();
        self.last_ns = now;
    }
}

/// A standing wave found.
pub(crate) struct Standing {
    /// The mean interval between the repeats, in nanoseconds.
    pub(crate) period_ns: u64,
    /// The repeats, the new one last (empty unless asked for).
    pub(crate) involved: Vec<Seen>,
}

/// At most `max_tracked_keys` rings, the least recently used forgotten.
#[derive(Debug)]
pub(crate) struct StandingWaves {
    table: Lru<Ring>,
}

/// Rings idle for longer than the standing window are dropped this many at a
/// time on each wave; [`StandingWaves::expire`] drops them all.
const SWEEP: usize = 2;

impl StandingWaves {
    pub(crate) fn new(max_keys: usize) -> Self {
        Self {
            table: Lru::new(max_keys),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Adds `seen` (`wave` as heard on `channel`) to the ring of
    /// `fingerprint` (the fingerprint of `(channel, payload)`) and says
    /// whether its repeats are now steady.
    pub(crate) fn observe(
        &mut self,
        fingerprint: u64,
        channel: &str,
        wave: &Wave,
        seen: &Seen,
        config: &PhysicsConfig,
        detail: bool,
    ) -> Option<Standing> {
        let span_ns = config.standing_window_ms.saturating_mul(1_000_000);
        let now = seen.at_ns;
        let ring = self
            .table
            .get_or_insert_with(fingerprint, |evicted| match evicted {
                Some(mut ring) => {
                    ring.reset(channel_for(channel, wave), fingerprint, now);
                    ring
                }
                None => Ring {
                    channel: channel_for(channel, wave),
                    fingerprint,
                    waves: VecDeque::new(),
                    last_ns: now,
                },
            });
        if ring.channel.as_str() != channel || ring.fingerprint != fingerprint {
            ring.reset(channel_for(channel, wave), fingerprint, now);
        }
        if ring.waves.iter().any(|w| w.same_sighting(seen)) {
            return None;
        }
        ring.waves.retain(|w| w.at_ns.abs_diff(now) <= span_ns);
        if ring.waves.len() >= config.standing_min_repeats {
            ring.waves.pop_front();
        }
        ring.waves.push_back(seen.clone());
        ring.last_ns = ring.last_ns.max(now);

        let result = steady_period(&ring.waves, config).map(|period_ns| Standing {
            period_ns,
            involved: if detail {
                ring.waves.iter().cloned().collect()
            } else {
                Vec::new()
            },
        });

        self.table.sweep(SWEEP, now, span_ns, |r| r.last_ns);
        result
    }

    /// Drops every ring whose last occurrence is older than the standing
    /// window at `now_ns`.
    pub(crate) fn expire(&mut self, now_ns: u64, window_ms: u64) {
        let span_ns = window_ms.saturating_mul(1_000_000);
        self.table.expire(now_ns, span_ns, |r| r.last_ns);
    }
}

/// The mean interval of `waves` if there are `standing_min_repeats` of them,
/// within the standing window, at intervals that vary by less than
/// `standing_jitter` of their mean.
fn steady_period(waves: &VecDeque<Seen>, config: &PhysicsConfig) -> Option<u64> {
    if waves.len() < config.standing_min_repeats {
        return None;
    }
    let mut times: SmallVec<[u64; 16]> = waves.iter().map(|w| w.at_ns).collect();
    times.sort_unstable();
    let span = times[times.len() - 1] - times[0];
    if span > config.standing_window_ms.saturating_mul(1_000_000) {
        return None;
    }
    let mean = span as f64 / (times.len() - 1) as f64;
    let worst = times
        .windows(2)
        .map(|pair| ((pair[1] - pair[0]) as f64 - mean).abs())
        .fold(0.0, f64::max);
    (mean > 0.0 && worst < config.standing_jitter * mean).then(|| mean.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Phase, WaveId};

    fn seen(at_ms: u64) -> Seen {
        Seen {
            id: WaveId::NIL,
            source: None,
            amplitude: 1.0,
            phase: Phase::ASSERT,
            at_ns: at_ms * 1_000_000,
            hops: 0,
        }
    }

    fn period(times_ms: &[u64]) -> Option<u64> {
        let waves = times_ms.iter().map(|t| seen(*t)).collect();
        steady_period(&waves, &PhysicsConfig::default()).map(|ns| ns / 1_000_000)
    }

    #[test]
    fn steady_repeats_have_a_period() {
        assert_eq!(period(&[0, 100, 200, 300]), Some(100));
        assert_eq!(period(&[0, 110, 200, 290]), Some(96));
        assert_eq!(period(&[0, 100, 200]), None, "too few");
        assert_eq!(period(&[0, 100, 300, 350]), None, "irregular");
        assert_eq!(period(&[5, 5, 5, 5]), None, "a burst has no period");
        assert_eq!(period(&[0, 5000, 10_000, 15_000]), None, "too slow");
        assert_eq!(period(&[300, 0, 200, 100]), Some(100), "out of order");
    }
}
