//! Offering a wave to a receive queue, and counting what became of it:
//! the one place every medium and the hopping gate deliver through, and
//! where the physics engine observes deliveries.

use std::collections::VecDeque;

use crate::{
    Wave,
    inbox::{Inbox, Offer},
    physics::PhysicsHub,
    stats::{Counters, DropReason},
};

/// Offers `wave` to `inbox`, counting the outcome in `stats`; `false` if the
/// vibrator is gone.
///
/// This is where the aether's physics engine observes deliveries, on every
/// medium: while it runs, a wave put in the queue is recorded with the
/// vibrator's name (`physics/bus.rs`). While it does not, this costs one
/// relaxed load.
#[inline(always)]
pub(crate) fn offer_counted(inbox: &Inbox, wave: Wave, stats: &Counters) -> bool {
    offer_outcome(inbox, wave, stats).1
}

/// [`offer_counted`] for a wave that came through a group resonance of the
/// vibrator's ([`Inbox::offer_once`]): a copy it got already through
/// another group is not offered again.
#[inline(always)]
pub(crate) fn offer_counted_once(inbox: &Inbox, wave: Wave, stats: &Counters) -> bool {
    offer_with(inbox, wave, stats, Inbox::offer_once).1
}

/// [`offer_counted`], telling also whether the wave was queued:
/// (queued, the vibrator is still there). Durable channels need to know.
#[inline(always)]
pub(crate) fn offer_outcome(inbox: &Inbox, wave: Wave, stats: &Counters) -> (bool, bool) {
    offer_with(inbox, wave, stats, Inbox::offer)
}

/// Offers `wave` to `inbox` with `offer`, counting the outcome in `stats`,
/// and observed by the physics engine while it runs.
#[inline(always)]
fn offer_with(
    inbox: &Inbox,
    wave: Wave,
    stats: &Counters,
    offer: impl FnOnce(&Inbox, Wave) -> Offer,
) -> (bool, bool) {
    let physics = inbox.physics();
    if physics.is_active() {
        return offer_observed(inbox, wave, stats, physics, offer);
    }
    count(offer(inbox, wave), stats)
}

/// [`offer_with`] while the physics engine runs: a copy of the wave is
/// made before the offer (if its buffer has room) and recorded if the wave
/// was delivered.
#[inline(never)]
fn offer_observed(
    inbox: &Inbox,
    wave: Wave,
    stats: &Counters,
    physics: &PhysicsHub,
    offer: impl FnOnce(&Inbox, Wave) -> Offer,
) -> (bool, bool) {
    if wave.is_reflected() {
        return count(offer(inbox, wave), stats);
    }
    let shard = physics.shard();
    let copy = shard.has_room().then(|| wave.clone());
    let (delivered, open) = count(offer(inbox, wave), stats);
    if delivered {
        physics.record(shard, copy, inbox.name());
    }
    (delivered, open)
}

/// Offers `waves` to `inbox` under one lock (while the physics engine is
/// idle; one by one while it observes deliveries), counting each outcome in
/// `stats`; `false` if the vibrator is gone.
pub(crate) fn offer_all_counted(
    inbox: &Inbox,
    waves: impl IntoIterator<Item = Wave>,
    stats: &Counters,
) -> bool {
    let mut open = true;
    if inbox.physics().is_active() {
        // Every wave is offered (and counted), whatever the earlier ones met.
        for wave in waves {
            open &= offer_counted(inbox, wave, stats);
        }
        return open;
    }
    inbox.offer_many(waves, |offer| open &= count(offer, stats).1);
    open
}

/// Offers the waves of `batch` to `inbox` as [`offer_all_counted`] does,
/// leaving `batch` empty (and keeping its buffer for the next batch). While
/// the physics engine is idle, a batch that the queue takes whole
/// ([`Inbox::offer_whole`]) becomes the queue without a wave moving.
pub(crate) fn offer_batch_counted(
    inbox: &Inbox,
    batch: &mut VecDeque<Wave>,
    stats: &Counters,
) -> bool {
    if !inbox.physics().is_active()
        && let Some(queued) = inbox.offer_whole(batch)
    {
        stats.delivered_many(queued);
        return true;
    }
    offer_all_counted(inbox, batch.drain(..), stats)
}

/// Counts what became of an offer: (delivered, the vibrator is still there).
#[inline]
fn count(offer: Offer, stats: &Counters) -> (bool, bool) {
    match offer {
        Offer::Queued => {
            stats.delivered();
            (true, true)
        }
        Offer::QueuedShedding => {
            stats.delivered();
            stats.dropped(DropReason::QueueFull);
            (true, true)
        }
        Offer::Dropped(reason) => {
            stats.dropped(reason);
            (false, true)
        }
        Offer::SkippedOwn | Offer::Duplicate => (false, true),
        Offer::Closed => (false, false),
    }
}
