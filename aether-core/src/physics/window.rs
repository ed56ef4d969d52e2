//! Coherence windows: per (channel, correlation key), the waves of the last
//! `coherence_window_ms`, where constructive interference and cancellation
//! are found.

use smol_str::SmolStr;

use super::{
    InterferencePattern, PhysicsConfig,
    interference::{InterferenceKind, kind_of, phase_difference},
    pattern::Seen,
    recent::RecentTable,
};
use crate::Wave;

/// The largest buffer (in waves) a window reused for another (channel,
/// correlation key) keeps.
const REUSED_CAPACITY: usize = 8;

/// What a wave made with its window.
pub(crate) struct Coherent {
    pub(crate) pattern: InterferencePattern,
    /// The waves involved, the new one last (empty unless asked for).
    pub(crate) involved: Vec<Seen>,
}

/// At most `max_tracked_keys` windows (the recent waves of one (channel,
/// correlation key)), the least recently used forgotten; windows whose last
/// wave left the coherence window are dropped a few at a time on each wave,
/// and all by [`CoherenceWindows::expire`].
#[derive(Debug)]
pub(crate) struct CoherenceWindows {
    table: RecentTable<SmolStr>,
}

impl CoherenceWindows {
    pub(crate) fn new(max_keys: usize) -> Self {
        Self {
            table: RecentTable::new(max_keys, REUSED_CAPACITY),
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
        let window_ns = crate::config::as_ns(config.coherence_window);
        let now = seen.at_ns;
        let key = wave.correlation_key();
        let window = self.table.entry(fingerprint, channel, wave, key, now);
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

        window.push(seen, config.max_window_waves);

        self.table.sweep(now, window_ns);
        result
    }

    /// Drops every window whose last wave is older than the coherence window
    /// at `now_ns`.
    pub(crate) fn expire(&mut self, now_ns: u64, window_ms: u64) {
        self.table.expire(now_ns, window_ms);
    }
}
