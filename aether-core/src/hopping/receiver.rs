//! The receiving side of hopping: the gate every hopping wave passes on its
//! way into a receive queue, and the window of wire channels that moves with
//! time.
//!
//! A hopping resonance subscribes to the wire channels of the slots `s - 1`
//! to `s + 2` (one slot ahead of what it accepts, so that a subscription is
//! in place before the first wave can use it, and a window task that wakes a
//! little late at a slot boundary loses nothing). The task moves the window
//! at each boundary. Each subscription's listener is the resonance's
//! [`HopGate`], which the mediums call instead of offering to the receive
//! queue: it refuses replays and puts the base channel on the wave. So the
//! opaque channel never reaches the vibrator, and ordinary waves never meet
//! the gate.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;

use super::sequence::HopSequence;
use crate::{
    Aether, Channel, ResonateError, Wave,
    hopping::Refusal,
    inbox::Inbox,
    medium::{Listener, SubscriptionId, offer_counted},
    security::Security,
    stats::{Counters, DropReason},
    wave::unix_nanos,
};

/// The receiving end of one hopping resonance.
pub(crate) struct HopGate {
    sequence: HopSequence,
    inbox: Arc<Inbox>,
    /// The aether's access rules, applied to the base channel: the wire
    /// channel is the bus's own and says nothing of who may use it.
    security: Arc<Security>,
    /// `(slot, wire channel)` of the slots subscribed now, kept by the
    /// window, so that most arrivals need no HMAC.
    known: ArcSwap<Vec<(u64, Channel)>>,
    /// Set when the resonance stops: nothing is delivered any more, and the
    /// window ends at its next move if it was not aborted already.
    stopped: AtomicBool,
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
    pub(crate) fn offer(&self, mut wave: Wave, stats: &Counters) -> bool {
        if self.stopped.load(Ordering::Acquire) {
            // As if already unsubscribed.
            stats.unrouted();
            return true;
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
            return true;
        }
        let base = self.sequence.base();
        if self.security.is_enabled() && !self.security.may_emit(wave.source(), base) {
            stats.dropped(DropReason::Denied);
            self.inbox.stats().dropped(DropReason::Denied);
            return true;
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

/// The subscriptions of one hopping resonance; dropping it unsubscribes.
pub(crate) struct Window {
    aether: Aether,
    gate: Arc<HopGate>,
    subscribed: Vec<(Channel, SubscriptionId)>,
}

impl Window {
    pub(crate) fn new(aether: Aether, gate: Arc<HopGate>) -> Self {
        Self {
            aether,
            gate,
            subscribed: Vec::new(),
        }
    }

    /// Subscribes to the wire channels of the slots `s - 1` to `s + 2` around
    /// Unix time `now_ms`, then unsubscribes from the others.
    pub(crate) async fn follow(&mut self, now_ms: u64) -> Result<(), ResonateError> {
        let sequence = &self.gate.sequence;
        let s = sequence.slot(now_ms);
        let wanted: Vec<(u64, Channel)> = (s.saturating_sub(1)..=s.saturating_add(2))
            .map(|slot| (slot, sequence.channel_at_slot(slot)))
            .collect();
        for (_, channel) in &wanted {
            if self.subscribed.iter().any(|(c, _)| c == channel) {
                continue;
            }
            let listener = Listener::Hopping(self.gate.clone());
            let id = self.aether.subscribe(channel.clone(), listener).await?;
            self.subscribed.push((channel.clone(), id));
        }
        let (keep, stale): (Vec<_>, Vec<_>) = std::mem::take(&mut self.subscribed)
            .into_iter()
            .partition(|(c, _)| wanted.iter().any(|(_, w)| w == c));
        self.subscribed = keep;
        self.gate.known.store(Arc::new(wanted));
        let stale: Vec<SubscriptionId> = stale.into_iter().map(|(_, id)| id).collect();
        self.aether.unsubscribe(&stale);
        Ok(())
    }

    /// Moves the window at every slot boundary, until the aether closes or
    /// the task is aborted (when the resonance stops).
    pub(crate) async fn run(mut self) {
        let interval = self.gate.sequence.hop_interval_ms();
        loop {
            let now_ms = unix_nanos() / 1_000_000;
            let next_boundary = (self.gate.sequence.slot(now_ms) + 1) * interval;
            tokio::time::sleep(Duration::from_millis(next_boundary - now_ms)).await;
            if self.gate.stopped.load(Ordering::Acquire)
                || self.follow(unix_nanos() / 1_000_000).await.is_err()
            {
                return; // stopped, or the aether was closed
            }
        }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        let ids: Vec<SubscriptionId> = self.subscribed.iter().map(|(_, id)| *id).collect();
        self.aether.unsubscribe(&ids);
    }
}
