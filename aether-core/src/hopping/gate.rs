//! The gate every hopping wave passes on its way into a receive queue: it
//! refuses replays and waves whose source the ACL does not let emit on the
//! base, and puts the base channel on the wave. The mediums call it instead
//! of offering to the receive queue, so the opaque channel never reaches the
//! vibrator. It sits below the mediums, beside the queues.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use arc_swap::ArcSwap;

use super::sequence::{HopSequence, Refusal};
use crate::{
    Channel, Wave,
    inbox::Inbox,
    offer::{Delivered, offer_counted},
    security::Security,
    stats::{Counters, DropReason},
    wave::unix_nanos,
};

/// The receiving end of one hopping resonance.
pub(crate) struct HopGate {
    pub(super) sequence: HopSequence,
    pub(super) inbox: Arc<Inbox>,
    /// The aether's access rules, applied to the base channel: the wire
    /// channel is the bus's own and says nothing of who may use it.
    pub(super) security: Arc<Security>,
    /// `(slot, wire channel)` of the slots subscribed now, kept by the
    /// window, so that most arrivals need no HMAC.
    pub(super) known: ArcSwap<Vec<(u64, Channel)>>,
    /// Set when the resonance stops: nothing is delivered any more, and the
    /// window ends at its next move if it was not aborted already.
    pub(super) stopped: AtomicBool,
}

impl HopGate {
    pub(crate) fn new(sequence: HopSequence, inbox: Arc<Inbox>, security: Arc<Security>) -> Self {
        Self {
            sequence,
            inbox,
            security,
            known: ArcSwap::default(),
            stopped: AtomicBool::new(false),
        }
    }

    /// The base channel it delivers waves on.
    pub(crate) fn base(&self) -> &Channel {
        self.sequence.base()
    }

    /// The receive queue it delivers to.
    pub(crate) fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }

    /// Stops delivering.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    /// Offers a wave that arrived on one of the resonance's wire channels:
    /// refused and counted as a replay, or as denied when its source may
    /// not emit on the base channel (the ACL), or given its base channel and
    /// offered to the receive queue. `false` once the vibrator is gone.
    pub(crate) fn offer(&self, mut wave: Wave, stats: &Counters) -> Delivered {
        if self.stopped.load(Ordering::Acquire) {
            // As if already unsubscribed.
            stats.unrouted();
            return Delivered::NOT_QUEUED;
        }
        let stamp_ms = wave.emitted_at().and_then(|t| {
            let since = t.duration_since(std::time::UNIX_EPOCH).ok()?;
            u64::try_from(since.as_millis()).ok()
        });
        if self
            .admit(wave.channel(), stamp_ms, unix_nanos() / 1_000_000)
            .is_err()
        {
            stats.dropped(DropReason::Replay);
            self.inbox.stats().dropped(DropReason::Replay);
            return Delivered::NOT_QUEUED;
        }
        let base = self.sequence.base();
        if self.security.is_enabled() && !self.security.may_emit(wave.source(), base) {
            stats.dropped(DropReason::Denied);
            self.inbox.stats().dropped(DropReason::Denied);
            return Delivered::NOT_QUEUED;
        }
        wave.set_channel(base.clone());
        offer_counted(&self.inbox, wave, stats)
    }

    /// [`HopSequence::check`], with the wire channels of the subscribed
    /// slots known.
    pub(crate) fn admit(
        &self,
        wire: &Channel,
        stamp_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let stamp_slot = self.sequence.check_time(stamp_ms, now_ms)?;
        let known = self.known.load();
        let matches = match known.iter().find(|(slot, _)| *slot == stamp_slot) {
            Some((_, expected)) => expected == wire,
            None => self.sequence.channel_at_slot(stamp_slot) == *wire,
        };
        if matches {
            Ok(())
        } else {
            Err(Refusal::WrongHop { stamp_slot })
        }
    }
}
