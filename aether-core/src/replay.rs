//! The replay window of signed waves: where signatures are required, a
//! receiver refuses a wave it has already taken, or one stamped too far from
//! its own clock to tell. A signature proves who wrote a wave, not that it
//! is new; the window makes a captured wave worthless once taken, and
//! worthless everywhere once it is old.
//!
//! What receives remembers the waves it took (by id, hop count and whether
//! it is a reflection) for `window` on either side of the clock: a plain
//! subscription its own, the members of a group in one aether one memory
//! between them (a group takes a wave once, whichever member NATS gives a
//! copy to). Memory is bounded: past `capacity` waves the oldest remembered
//! one is forgotten and its stamp becomes a floor, and waves stamped at or
//! before the floor are refused too, so forgetting never lets a replay
//! through. A fresh memory starts with its floor at its start, less
//! [`START_SKEW`]: it cannot know what was taken before it (by a process
//! that restarted, say), so it takes nothing stamped earlier.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::Duration,
};

use smol_str::SmolStr;

use crate::{Wave, WaveId};

/// How far before its start a fresh memory still takes waves: the clock
/// skew between hosts it allows, and the waves in flight when it started.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) const START_SKEW: Duration = Duration::from_secs(1);

/// The replay windows of one subscription, one per source: what one
/// source sends (a flood of waves stamped ahead, say) fills its own memory
/// and moves its own floor, never another's. Where signatures are required
/// only sources with a key get this far, so their number is bounded by the
/// keys configured.
#[derive(Debug)]
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) struct Replays {
    window: Duration,
    capacity: usize,
    /// Waves stamped at or before this are refused by every source's
    /// window: they may have been taken before this memory started.
    start_floor_ns: u64,
    by_source: HashMap<SmolStr, ReplayWindow>,
}

impl Replays {
    /// A memory that takes nothing stamped at or before `start_floor_ns`.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn new(window: Duration, capacity: usize, start_floor_ns: u64) -> Self {
        Self {
            window,
            capacity,
            start_floor_ns,
            by_source: HashMap::new(),
        }
    }

    /// [`ReplayWindow::admit`] in the window of `wave`'s source.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn admit(&mut self, wave: &Wave, now_ns: u64) -> bool {
        let source = SmolStr::new(wave.source().unwrap_or(""));
        let (window, capacity, floor) = (self.window, self.capacity, self.start_floor_ns);
        self.by_source
            .entry(source)
            .or_insert_with(|| {
                let mut memory = ReplayWindow::new(window, capacity);
                memory.floor_ns = floor;
                memory
            })
            .admit(wave, now_ns)
    }
}

/// What identifies one taking of a wave: a relay (one more hop) or a
/// reflection of the same wave is another.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
type Key = (WaveId, u32, bool);

/// The memory of one subscription.
#[derive(Debug)]
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) struct ReplayWindow {
    window_ns: u64,
    capacity: usize,
    seen: HashSet<Key>,
    /// In the order taken, with their stamps.
    order: VecDeque<(u64, Key)>,
    /// Waves stamped at or before this were forgotten or may have been.
    floor_ns: u64,
}

impl ReplayWindow {
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window_ns: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
            capacity: capacity.max(1),
            seen: HashSet::new(),
            order: VecDeque::new(),
            floor_ns: 0,
        }
    }

    /// Whether `wave` is new at `now_ns` (then it is remembered): `false`
    /// for a wave taken already, stamped (emitted, or re-amplified for a
    /// deliberate resend) outside the window, unstamped, or stamped at or
    /// before the floor.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn admit(&mut self, wave: &Wave, now_ns: u64) -> bool {
        // A deliberate resend (re-amplified) counts from its resend.
        let stamp = wave.stamped_at_ns();
        // What fell out of the window can no longer be replayed: a replay
        // of it is refused by its stamp.
        while let Some((oldest, key)) = self.order.front().copied() {
            if oldest.saturating_add(self.window_ns) >= now_ns {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&key);
        }
        if stamp == 0
            || stamp <= self.floor_ns
            || stamp.saturating_add(self.window_ns) < now_ns
            || stamp > now_ns.saturating_add(self.window_ns)
        {
            return false;
        }
        let key = (wave.id(), wave.propagation_count(), wave.is_reflected());
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back((stamp, key));
        if self.order.len() > self.capacity
            && let Some((forgotten, key)) = self.order.pop_front()
        {
            self.seen.remove(&key);
            self.floor_ns = self.floor_ns.max(forgotten);
        }
        true
    }

    /// How many waves it remembers.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn wave_at(stamp_ns: u64) -> Wave {
        let mut wave = Wave::new("orders.created", "x");
        wave.stamp_emission(&smol_str::SmolStr::new("alpha"), 7, stamp_ns);
        wave
    }

    #[test]
    fn a_wave_is_taken_once_and_only_within_the_window() {
        let now = 1_000 * SECOND;
        let mut window = ReplayWindow::new(Duration::from_secs(30), 1_000);
        let wave = wave_at(now - SECOND);
        assert!(window.admit(&wave, now));
        assert!(!window.admit(&wave, now), "the same wave again");
        assert!(!window.admit(&wave, now + 5 * SECOND), "still again");
        let mut relayed = wave.clone();
        relayed.propagate();
        assert!(
            window.admit(&relayed, now),
            "one more hop is another taking"
        );
        assert!(!window.admit(&wave_at(now - 31 * SECOND), now), "too old");
        assert!(
            !window.admit(&wave_at(now + 31 * SECOND), now),
            "too far ahead"
        );
        assert!(
            !window.admit(&Wave::new("orders.created", "x"), now),
            "unstamped"
        );
        // Once out of the window, the wave is forgotten, and refused by its
        // stamp alone.
        assert!(!window.admit(&wave, now + 40 * SECOND));
        assert_eq!(window.len(), 0);
    }

    #[test]
    fn past_its_capacity_it_refuses_what_it_may_have_forgotten() {
        let now = 1_000 * SECOND;
        let mut window = ReplayWindow::new(Duration::from_secs(30), 3);
        let waves: Vec<Wave> = (0..5).map(|n| wave_at(now - 10 * SECOND + n)).collect();
        for wave in &waves {
            assert!(window.admit(wave, now));
            assert!(window.len() <= 3);
        }
        // The first two were forgotten: their stamps are under the floor.
        assert!(!window.admit(&waves[0], now));
        assert!(!window.admit(&waves[1], now));
        assert!(!window.admit(&waves[4], now));
        assert!(window.admit(&wave_at(now), now), "a newer wave is taken");
    }

    #[test]
    fn a_fresh_memory_takes_nothing_stamped_before_it_started() {
        let now = 1_000 * SECOND;
        let mut replays = Replays::new(Duration::from_secs(30), 8, now - SECOND);
        assert!(
            !replays.admit(&wave_at(now - 2 * SECOND), now),
            "before its start"
        );
        assert!(!replays.admit(&wave_at(now - SECOND), now), "at its floor");
        assert!(
            replays.admit(&wave_at(now - SECOND / 2), now),
            "within the skew"
        );
    }

    #[test]
    fn one_source_filling_its_memory_leaves_the_others_alone() {
        let now = 1_000 * SECOND;
        let mut replays = Replays::new(Duration::from_secs(30), 8, 0);
        // mallory floods waves stamped 25 s ahead, past its memory.
        for n in 0..100 {
            let mut wave = Wave::new("orders.created", "x");
            wave.stamp_emission(&SmolStr::new("mallory"), 1, now + 25 * SECOND + n);
            replays.admit(&wave, now);
        }
        let mut honest = Wave::new("orders.created", "y");
        honest.stamp_emission(&SmolStr::new("alpha"), 2, now);
        assert!(replays.admit(&honest, now), "another source's fresh wave");
        let mut own = Wave::new("orders.created", "z");
        own.stamp_emission(&SmolStr::new("mallory"), 1, now);
        assert!(!replays.admit(&own, now), "under mallory's own floor");
    }

    proptest! {
        /// Whatever arrives, in whatever order and however often, no
        /// (wave, hops) is taken twice, nothing outside the window is
        /// taken, and memory stays within its capacity.
        #[test]
        fn no_wave_is_taken_twice(
            arrivals in prop::collection::vec((0u64..40, 0u64..60, 0u32..2), 1..300),
            capacity in 1usize..50,
        ) {
            let window_ns = 10 * SECOND;
            let mut window = ReplayWindow::new(Duration::from_nanos(window_ns), capacity);
            let mut waves = std::collections::HashMap::new();
            let mut taken = HashSet::new();
            let mut now = 100 * SECOND;
            for (which, age_s, hops) in arrivals {
                now += SECOND / 10;
                let wave = waves
                    .entry(which)
                    .or_insert_with(|| wave_at(now.saturating_sub(age_s * SECOND / 4)))
                    .clone();
                let mut wave = wave;
                for _ in 0..hops {
                    wave.propagate();
                }
                if window.admit(&wave, now) {
                    let at = wave.stamped_at_ns();
                    prop_assert!(at + window_ns >= now && at <= now + window_ns);
                    prop_assert!(taken.insert((wave.id(), wave.propagation_count())), "taken twice");
                }
                prop_assert!(window.len() <= capacity);
            }
        }
    }
}
