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

use super::{
    PhysicsConfig,
    pattern::Seen,
    recent::{Recent, RecentTable},
};
use crate::Wave;

/// The last occurrences of one (channel, payload), in arrival order, under
/// the keyed fingerprint of (channel, payload): the payload itself is not
/// kept (it may be large). A ring forgotten to make room is reused with its
/// buffer (at most `standing_min_repeats` waves), so a flood of new payloads
/// allocates nothing.
type Ring = Recent<u64>;

/// A standing wave found.
pub(crate) struct Standing {
    /// The mean interval between the repeats, in nanoseconds.
    pub(crate) period_ns: u64,
    /// The repeats, the new one last (empty unless asked for).
    pub(crate) involved: Vec<Seen>,
}

/// At most `max_tracked_keys` rings, the least recently used forgotten;
/// rings idle for longer than the standing window are dropped a few at a
/// time on each wave, and all by [`StandingWaves::expire`].
#[derive(Debug)]
pub(crate) struct StandingWaves {
    table: RecentTable<u64>,
}

impl StandingWaves {
    pub(crate) fn new(max_keys: usize) -> Self {
        Self {
            table: RecentTable::new(max_keys, usize::MAX),
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
        let span_ns = crate::config::as_ns(config.standing_window);
        let now = seen.at_ns;
        let ring: &mut Ring = self
            .table
            .entry(fingerprint, channel, wave, &fingerprint, now);
        if ring.waves.iter().any(|w| w.same_sighting(seen)) {
            return None;
        }
        ring.waves.retain(|w| w.at_ns.abs_diff(now) <= span_ns);
        ring.push(seen, config.standing_min_repeats);

        let result = steady_period(&ring.waves, config).map(|period_ns| Standing {
            period_ns,
            involved: if detail {
                ring.waves.iter().cloned().collect()
            } else {
                Vec::new()
            },
        });

        self.table.sweep(now, span_ns);
        result
    }

    /// Drops every ring whose last occurrence is older than the standing
    /// window at `now_ns`.
    pub(crate) fn expire(&mut self, now_ns: u64, window_ms: u64) {
        self.table.expire(now_ns, window_ms);
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
    if span > crate::config::as_ns(config.standing_window) {
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
