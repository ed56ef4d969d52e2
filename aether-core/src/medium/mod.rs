//! Mediums: what carries waves between vibrators.
//!
//! A medium only routes: it finds the receive queues whose patterns match a
//! wave's channel ([`Channel::matches`](crate::Channel::matches)) and offers
//! the wave to them. Everything that is the same on every medium (validation,
//! hop limit, expiry, stamping) happens in [`Aether`](crate::Aether) before,
//! and noise floor and shedding in the receive queue after.

pub(crate) mod disk_outbox;
pub(crate) mod durable;
pub(crate) mod embedded;
pub(crate) mod nats;

use std::sync::Arc;

use crate::{hopping::gate::HopGate, inbox::Inbox, reply::ReplyMux};

pub(crate) use crate::inbox::SubscriptionId;

/// Who hears the waves of a subscription.
#[derive(Clone)]
pub(crate) enum Listener {
    /// A vibrator's receive queue.
    Inbox(Arc<Inbox>),
    /// A vibrator's receive queue, sharing each wave with the rest of its
    /// group: one member of the group gets each wave.
    Group(Arc<str>, Arc<Inbox>),
    /// The waiters of a vibrator's requests.
    Replies(Arc<ReplyMux>),
    /// A vibrator's hopping resonance, on one of its wire channels: the gate
    /// checks the wave and hands it to the receive queue with its base
    /// channel.
    Hopping(Arc<HopGate>),
}

impl Listener {
    /// The name of the vibrator that listens, if a vibrator does.
    pub(crate) fn owner(&self) -> Option<&str> {
        match self {
            Listener::Inbox(inbox) | Listener::Group(_, inbox) => Some(inbox.name()),
            Listener::Hopping(gate) => Some(gate.inbox().name()),
            Listener::Replies(_) => None,
        }
    }
}

/// How many receivers a wave reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Routed {
    /// Receive queues and reply waiters that matched.
    pub(crate) matched: usize,
    /// The checks dropped the wave (and counted it): it went nowhere.
    pub(crate) dropped: bool,
}

impl Routed {
    /// A wave the checks dropped.
    pub(crate) fn dropped() -> Self {
        Self {
            matched: 0,
            dropped: true,
        }
    }
}

/// The medium of an aether.
pub(crate) enum Medium {
    Embedded(embedded::EmbeddedMedium),
    /// Boxed: one per aether, and much larger than the embedded table.
    Nats(Box<nats::NatsMedium>),
}

impl Medium {
    pub(crate) fn unsubscribe(&self, ids: &[SubscriptionId]) {
        match self {
            Medium::Embedded(m) => m.unsubscribe(ids),
            Medium::Nats(m) => m.unsubscribe(ids),
        }
    }
}

pub(crate) use crate::offer::{
    offer_all_counted, offer_batch_counted, offer_counted, offer_counted_once,
};
