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

/// What became of waves offered to a queue: the one outcome every offer
/// returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Delivered {
    /// The (last) wave went into the queue.
    pub(crate) queued: bool,
    /// The vibrator is still there: `false` once it is gone, so that its
    /// subscription ends.
    pub(crate) open: bool,
}

impl Delivered {
    pub(crate) const QUEUED: Self = Self {
        queued: true,
        open: true,
    };
    pub(crate) const NOT_QUEUED: Self = Self {
        queued: false,
        open: true,
    };
    pub(crate) const GONE: Self = Self {
        queued: false,
        open: false,
    };
}

/// Offers `wave` to `inbox`, counting the outcome in `stats`: whether it
/// was queued, and whether the vibrator is still there.
///
/// This is where the aether's physics engine observes deliveries, on every
/// medium: while it runs, a wave put in the queue is recorded with the
/// vibrator's name (`physics/bus.rs`). While it does not, this costs one
/// relaxed load.
#[inline(always)]
pub(crate) fn offer_counted(inbox: &Inbox, wave: Wave, stats: &Counters) -> Delivered {
    offer_with(inbox, wave, stats, Inbox::offer)
}

/// [`offer_counted`] for a wave that came through a group resonance of the
/// vibrator's ([`Inbox::offer_once`]): a copy it got already through
/// another group is not offered again.
#[inline(always)]
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) fn offer_counted_once(inbox: &Inbox, wave: Wave, stats: &Counters) -> Delivered {
    offer_with(inbox, wave, stats, Inbox::offer_once)
}

/// Offers `wave` to `inbox` with `offer`, counting the outcome in `stats`,
/// and observed by the physics engine while it runs.
#[inline(always)]
fn offer_with(
    inbox: &Inbox,
    wave: Wave,
    stats: &Counters,
    offer: impl FnOnce(&Inbox, Wave) -> Offer,
) -> Delivered {
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
) -> Delivered {
    if wave.is_reflected() {
        return count(offer(inbox, wave), stats);
    }
    let shard = physics.shard();
    let copy = shard.has_room().then(|| wave.clone());
    let delivered = count(offer(inbox, wave), stats);
    if delivered.queued {
        physics.record(shard, copy, inbox.name());
    }
    delivered
}

/// Offers `waves` to `inbox` under one lock (while the physics engine is
/// idle; one by one while it observes deliveries), counting each outcome in
/// `stats`: whether the last was queued, and whether the vibrator is still
/// there.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) fn offer_all_counted(
    inbox: &Inbox,
    waves: impl IntoIterator<Item = Wave>,
    stats: &Counters,
) -> Delivered {
    let mut last = Delivered::NOT_QUEUED;
    let mut open = true;
    if inbox.physics().is_active() {
        // Every wave is offered (and counted), whatever the earlier ones met.
        for wave in waves {
            last = offer_counted(inbox, wave, stats);
            open &= last.open;
        }
    } else {
        inbox.offer_many(waves, |offer| {
            last = count(offer, stats);
            open &= last.open;
        });
    }
    Delivered {
        queued: last.queued,
        open,
    }
}

/// Offers the waves of `batch` to `inbox` as [`offer_all_counted`] does,
/// leaving `batch` empty (and keeping its buffer for the next batch). While
/// the physics engine is idle, a batch that the queue takes whole
/// ([`Inbox::offer_whole`]) becomes the queue without a wave moving.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) fn offer_batch_counted(
    inbox: &Inbox,
    batch: &mut VecDeque<Wave>,
    stats: &Counters,
) -> Delivered {
    if !inbox.physics().is_active()
        && let Some(queued) = inbox.offer_whole(batch)
    {
        stats.delivered_many(queued);
        return Delivered::QUEUED;
    }
    offer_all_counted(inbox, batch.drain(..), stats)
}

/// Counts what became of an offer.
#[inline]
fn count(offer: Offer, stats: &Counters) -> Delivered {
    match offer {
        Offer::Queued => {
            stats.delivered();
            Delivered::QUEUED
        }
        Offer::QueuedShedding => {
            stats.delivered();
            stats.dropped(DropReason::QueueFull);
            Delivered::QUEUED
        }
        Offer::Dropped(reason) => {
            stats.dropped(reason);
            Delivered::NOT_QUEUED
        }
        Offer::HandlerPanicked => {
            stats.delivered();
            stats.handler_panicked();
            Delivered::QUEUED
        }
        Offer::SkippedOwn | Offer::Duplicate => Delivered::NOT_QUEUED,
        Offer::Closed => Delivered::GONE,
    }
}
