//! Coherence windows: per (channel, correlation key), the waves of the last
//! `coherence_window_ms`, where constructive interference and cancellation
//! are found.

use std::collections::VecDeque;

use smol_str::SmolStr;

use super::{
    InterferencePattern, PhysicsConfig, channel_for,
    interference::{InterferenceKind, kind_of, phase_difference},
    lru::Lru,
    pattern::Seen,
};
use crate::{Channel, Wave};

/// The recent waves of one (channel, correlation key), in arrival order.
struct Window {
    channel: Channel,
    key: SmolStr,
    waves: VecDeque<Seen>,
    /// The latest emission time among them.
    last_ns: u64,
}

impl Window {
    /// Makes this the window of (`channel`, `key`), empty, keeping its
    /// buffer if it is small (a window forgotten to make room is reused, so
    /// a flood of new keys allocates little, and no buffer stays large).
    fn reset(&mut self, channel: Channel, key: &str, now: u64) {
        self.channel = channel;
        self.key = SmolStr::new(key);
        if self.waves.capacity() > REUSED_CAPACITY {
            self.waves = VecDeque::new();
        } else {
            self.waves.clear();
        }
        self.last_ns = now;
    }
}

/// The largest buffer (in waves) a reused window keeps.
const REUSED_CAPACITY: usize = 8;

/// What a wave made with its window.
pub(crate) struct Coherent {
    pub(crate) pattern: InterferencePattern,
    /// The waves involved, the new one last (empty unless asked for).
    pub(crate) involved: Vec<Seen>,
}

/// At most `max_tracked_keys` windows, the least recently used forgotten.
#[derive(Debug)]
pub(crate) struct CoherenceWindows {
    table: Lru<Window>,
}

/// Windows whose last wave left the coherence window are dropped this many at
/// a time from the least recently used end on each wave (amortized O(1));
/// [`CoherenceWindows::expire`] drops them all.
const SWEEP: usize = 2;

impl CoherenceWindows {
    pub(crate) fn new(max_keys: usize) -> Self {
        Self {
            table: Lru::new(max_keys),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Adds `seen` (`wave` as heard on `channel`) to the window of
    /// `fingerprint` (the fingerprint of `(channel, correlation key)`) and
    /// says whether it interferes with a wave there. `detail` asks for the
    /// waves involved.
    pub(crate) fn observe(
        &mut self,
        fingerprint: u64,
        channel: &str,
        wave: &Wave,
        seen: &Seen,
        config: &PhysicsConfig,
        detail: bool,
    ) -> Option<Coherent> {
        let window_ns = config.coherence_window_ms.saturating_mul(1_000_000);
        let now = seen.at_ns;
        let key = wave.correlation_key();
        let window = self
            .table
            .get_or_insert_with(fingerprint, |evicted| match evicted {
                Some(mut window) => {
                    window.reset(channel_for(channel, wave), key, now);
                    window
                }
                None => Window {
                    channel: channel_for(channel, wave),
                    key: SmolStr::new(key),
                    waves: VecDeque::new(),
                    last_ns: now,
                },
            });
        if window.channel.as_str() != channel || window.key != key {
            // Two identities on one 64-bit keyed fingerprint: practically
            // never; the newer one takes the slot.
            window.reset(channel_for(channel, wave), key, now);
        }
        while window
            .waves
            .front()
            .is_some_and(|w| w.at_ns.saturating_add(window_ns) < now)
        {
            window.waves.pop_front();
        }

        let coherent = |w: &Seen| w.at_ns.abs_diff(now) <= window_ns;
        let kind = |w: &Seen| {
            kind_of(
                phase_difference(w.phase, seen.phase),
                config.phase_tolerance,
            )
        };
        let mut in_phase = false;
        let mut opposite = false;
        for w in &window.waves {
            if w.same_sighting(seen) {
                // The same wave heard again (by another resonator): nothing new.
                return None;
            }
            if coherent(w) {
                match kind(w) {
                    InterferenceKind::Constructive => in_phase = true,
                    InterferenceKind::Destructive => opposite = true,
                    InterferenceKind::Partial => {}
                }
            }
        }
        let found = if opposite {
            Some((
                InterferencePattern::Cancellation,
                InterferenceKind::Destructive,
            ))
        } else if in_phase {
            Some((
                InterferencePattern::Constructive,
                InterferenceKind::Constructive,
            ))
        } else {
            None
        };
        let result = found.map(|(pattern, wanted)| Coherent {
            pattern,
            involved: if detail {
                window
                    .waves
                    .iter()
                    .filter(|w| coherent(w) && kind(w) == wanted)
                    .cloned()
                    .chain(std::iter::once(seen.clone()))
                    .collect()
            } else {
                Vec::new()
            },
        });

        if window.waves.len() >= config.max_window_waves {
            window.waves.pop_front();
        }
        window.waves.push_back(seen.clone());
        window.last_ns = window.last_ns.max(now);

        self.table.sweep(SWEEP, now, window_ns, |w| w.last_ns);
        result
    }

    /// Drops every window whose last wave is older than the coherence window
    /// at `now_ns`.
    pub(crate) fn expire(&mut self, now_ns: u64, window_ms: u64) {
        let window_ns = window_ms.saturating_mul(1_000_000);
        self.table.expire(now_ns, window_ns, |w| w.last_ns);
    }
}
