//! The receiving side of hopping: the window of wire channels that moves
//! with time (the gate every hopping wave passes is in `gate.rs`).
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
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use super::gate::HopGate;
use crate::{
    Aether, Channel, ResonateError,
    medium::{Listener, SubscriptionId},
    wave::unix_nanos,
};

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
