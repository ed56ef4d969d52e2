//! The bookkeeping the standing waves and the coherence windows share: per
//! keyed fingerprint, the recent waves of one identity in arrival order, at
//! most `max_tracked_keys` of them, the least recently used forgotten and
//! the idle ones dropped.

use std::collections::VecDeque;

use smol_str::SmolStr;

use super::{channel_for, lru::Lru, pattern::Seen};
use crate::{Channel, Wave};

/// What a fingerprint stands for besides its channel: the fingerprint
/// itself (standing waves) or a correlation key (coherence windows).
pub(super) trait Identity {
    /// The identity as a wave gives it.
    type Given: ?Sized;
    /// Whether this is `given`.
    fn is(&self, given: &Self::Given) -> bool;
    /// The identity kept for `given`.
    fn keep(given: &Self::Given) -> Self;
}

impl Identity for u64 {
    type Given = u64;

    fn is(&self, given: &u64) -> bool {
        self == given
    }

    fn keep(given: &u64) -> Self {
        *given
    }
}

impl Identity for SmolStr {
    type Given = str;

    fn is(&self, given: &str) -> bool {
        self == given
    }

    fn keep(given: &str) -> Self {
        SmolStr::new(given)
    }
}

/// The recent waves of one (channel, identity), in arrival order.
pub(super) struct Recent<I> {
    channel: Channel,
    identity: I,
    pub(super) waves: VecDeque<Seen>,
    /// The latest emission time among them.
    last_ns: u64,
}

impl<I: Identity> Recent<I> {
    fn new(channel: Channel, identity: &I::Given, now: u64) -> Self {
        Self {
            channel,
            identity: I::keep(identity),
            waves: VecDeque::new(),
            last_ns: now,
        }
    }

    /// Adds `seen`, the oldest wave dropped first if there are `most`.
    pub(super) fn push(&mut self, seen: &Seen, most: usize) {
        if self.waves.len() >= most {
            self.waves.pop_front();
        }
        self.waves.push_back(seen.clone());
        self.last_ns = self.last_ns.max(seen.at_ns);
    }

    /// Makes this the entry of (`channel`, `identity`), empty, keeping its
    /// buffer unless it holds more than `reused_capacity` waves (an entry
    /// forgotten to make room is reused, so a flood of new identities
    /// allocates little, and no buffer stays large).
    fn reset(&mut self, channel: Channel, identity: &I::Given, now: u64, reused_capacity: usize) {
        self.channel = channel;
        self.identity = I::keep(identity);
        if self.waves.capacity() > reused_capacity {
            self.waves = VecDeque::new();
        } else {
            self.waves.clear();
        }
        self.last_ns = now;
    }
}

/// Entries idle for longer than their span are dropped this many at a time
/// from the least recently used end on each wave (amortized O(1));
/// [`RecentTable::expire`] drops them all.
const SWEEP: usize = 2;

/// At most `max_tracked_keys` entries, the least recently used forgotten.
#[derive(Debug)]
pub(super) struct RecentTable<I> {
    table: Lru<Recent<I>>,
    /// The largest buffer (in waves) a reused entry keeps.
    reused_capacity: usize,
}

impl<I: Identity> RecentTable<I> {
    pub(super) fn new(max_keys: usize, reused_capacity: usize) -> Self {
        Self {
            table: Lru::new(max_keys),
            reused_capacity,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// The entry of `fingerprint` (the keyed fingerprint of `(channel,
    /// identity)`), empty if it was another's or none: `wave` as heard on
    /// `channel` at `now`.
    pub(super) fn entry(
        &mut self,
        fingerprint: u64,
        channel: &str,
        wave: &Wave,
        identity: &I::Given,
        now: u64,
    ) -> &mut Recent<I> {
        let reused_capacity = self.reused_capacity;
        let entry = self
            .table
            .get_or_insert_with(fingerprint, |evicted| match evicted {
                Some(mut entry) => {
                    entry.reset(channel_for(channel, wave), identity, now, reused_capacity);
                    entry
                }
                None => Recent::new(channel_for(channel, wave), identity, now),
            });
        if entry.channel.as_str() != channel || !entry.identity.is(identity) {
            // Two identities on one 64-bit keyed fingerprint: practically
            // never; the newer one takes the slot.
            entry.reset(channel_for(channel, wave), identity, now, reused_capacity);
        }
        entry
    }

    /// Drops a few entries whose last wave is older than `span_ns` at `now`.
    pub(super) fn sweep(&mut self, now: u64, span_ns: u64) {
        self.table.sweep(SWEEP, now, span_ns, |r| r.last_ns);
    }

    /// Drops every entry whose last wave is older than `span_ms` at `now_ns`.
    pub(super) fn expire(&mut self, now_ns: u64, span_ms: u64) {
        let span_ns = span_ms.saturating_mul(1_000_000);
        self.table.expire(now_ns, span_ns, |r| r.last_ns);
    }
}
