//! Mediums: what carries waves between vibrators, and the whole boundary
//! between the bus and what carries it.
//!
//! A medium routes: it finds the receive queues whose patterns match a
//! wave's channel ([`Channel::matches`](crate::Channel::matches)) and offers
//! the wave to them, keeps durable channels, answers requests and reports
//! its connection. Everything that is the same on every medium (validation,
//! the ACL, hop limit, expiry, stamping) happens in [`Aether`](crate::Aether)
//! before, and noise floor and shedding in the receive queue after. Each
//! operation here is one match over the mediums; nothing above this
//! module knows which medium it runs on.
//!
//! # What a medium provides
//!
//! A third medium (a variant of [`Medium`] and a match arm in each
//! operation) owes the bus these, held by the behaviour suite
//! (`tests/behaviour/`, run on every medium) and, for durable channels,
//! by `tests/durable_embedded.rs` and `tests/durable.rs`:
//!
//! - **Routing by pattern**: a wave reaches every subscription whose
//!   pattern matches its channel, once each ([`Medium::subscribe`],
//!   [`Medium::unsubscribe`]).
//! - **Groups**: of the members of one group on one pattern, one gets each
//!   wave ([`Listener::Group`]).
//! - **Per-emitter order**: the waves of one emitter on one channel arrive
//!   in the order emitted.
//! - **Requests**: a request reaches its responders and the first reply
//!   comes back to the asker ([`Medium::request`]); with nobody
//!   resonating, "no responders" at once, not a timeout.
//! - **Tracked waves**: a diffracting or reflecting wave learns that
//!   nobody heard it, at once (the embedded router's `route_tracked`; over
//!   NATS the server's "no responders" to its probe subject), and is bent
//!   or reflected.
//! - **Flush and status**: [`Medium::flush`] returns once every wave
//!   emitted before it has left the process (or fails, saying what is
//!   left); [`Medium::status`] and [`Medium::events`] say what the
//!   connection does.
//! - **Arrival checks**, for a medium that crosses processes: what arrives
//!   is hostile until checked, as `medium/nats/receive.rs` `take` checks it
//!   (subject, envelope, reflection rule, signature, ACL, replay window,
//!   then the life check), each refusal counted.
//! - **Durable channels**: a wave on one is kept until a receiver's
//!   application took it ([`Medium::hand_out`]); one a receiver did not
//!   hand out comes again ([`Medium::release`]). Over NATS a wave handed out
//!   twice to one queue (within its last 16,384 ids) is dropped as a
//!   redelivery; the embedded medium hands each stored wave to one taker.
//!   Where a wave can still arrive twice, on each medium:
//!   [durable.md](../../../docs/guide/durable.md#limits).
//! - **Reflections** go back to their source ([`Medium::reflect`]).
//! - **Replicated maps** over it pass the state suite (`tests/state_suite/`).

pub(crate) mod disk_outbox;
pub(crate) mod embedded;
#[cfg(feature = "nats")]
pub(crate) mod nats;

use std::{sync::Arc, time::Duration};

use tokio::sync::broadcast;

use crate::{
    Channel, DropReason, EmitError, RequestError, RequestErrorKind, ResonateError, Wave,
    connection::{ConnectionEvent, ConnectionStatus},
    hopping::gate::HopGate,
    inbox::Inbox,
    reply::ReplyMux,
};

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

/// The medium of an aether.
pub(crate) enum Medium {
    Embedded(embedded::EmbeddedMedium),
    /// Boxed: one per aether, and much larger than the embedded table.
    #[cfg(feature = "nats")]
    Nats(Box<nats::NatsMedium>),
}

impl Medium {
    /// Its name, as settings and logs say it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Medium::Embedded(_) => "embedded",
            #[cfg(feature = "nats")]
            Medium::Nats(_) => "nats",
        }
    }

    /// Whether its waves reach other processes, whose receivers judge
    /// their signatures.
    pub(crate) fn crosses_processes(&self) -> bool {
        match self {
            Medium::Embedded(_) => false,
            #[cfg(feature = "nats")]
            Medium::Nats(_) => true,
        }
    }

    /// Makes the durable consumers named (over NATS; nothing to make on
    /// the embedded medium).
    pub(crate) async fn make_durable_consumers(
        &self,
        consumers: &[crate::config::DurableConsumer],
    ) -> Result<(), crate::ConnectError> {
        match self {
            Medium::Embedded(_) => {
                let _ = consumers;
                Ok(())
            }
            #[cfg(feature = "nats")]
            Medium::Nats(nats) => nats.make_durable_consumers(consumers).await,
        }
    }

    /// The durable channels' stream (NATS only).
    pub(crate) async fn durable_stream(
        &self,
    ) -> Result<crate::connection::StreamStatus, crate::ConnectError> {
        match self {
            Medium::Embedded(_) => Err(crate::ConnectError::new(
                crate::ConnectErrorKind::Config,
                "the embedded medium keeps durable waves in its outbox, not in a stream",
            )),
            #[cfg(feature = "nats")]
            Medium::Nats(nats) => nats.durable_stream().await,
        }
    }

    /// The connection now.
    pub(crate) fn status(&self) -> ConnectionStatus {
        match self {
            Medium::Embedded(_) => ConnectionStatus::embedded(),
            #[cfg(feature = "nats")]
            Medium::Nats(nats) => nats.status(),
        }
    }

    /// Every change of the connection from now on (none in process).
    pub(crate) fn events(&self) -> broadcast::Receiver<ConnectionEvent> {
        match self {
            Medium::Embedded(_) => broadcast::channel(1).1,
            #[cfg(feature = "nats")]
            Medium::Nats(nats) => nats.events(),
        }
    }

    /// Adds a resonance on `pattern` for `listener`.
    pub(crate) async fn subscribe(
        &self,
        pattern: Channel,
        listener: Listener,
    ) -> Result<SubscriptionId, ResonateError> {
        match self {
            Medium::Embedded(embedded) => Ok(embedded.subscribe(pattern, listener)),
            #[cfg(feature = "nats")]
            Medium::Nats(nats) => nats.subscribe(pattern, listener).await,
        }
    }

    pub(crate) fn unsubscribe(&self, ids: &[SubscriptionId]) {
        match self {
            Medium::Embedded(embedded) => embedded.unsubscribe(ids),
            #[cfg(feature = "nats")]
            Medium::Nats(nats) => nats.unsubscribe(ids),
        }
    }

    /// Carries a wave the emit checks admitted (`dropped`: what they made
    /// of it, `Some` if it was dropped and counted, when it may reflect).
    #[inline]
    pub(crate) async fn publish(
        &self,
        wave: Wave,
        dropped: Option<DropReason>,
    ) -> Result<(), EmitError> {
        match self.start_publish(wave, dropped) {
            Publishing::Done => Ok(()),
            publishing => self.finish_publish(publishing).await,
        }
    }

    /// What [`Medium::publish`] can do without waiting: on the embedded
    /// medium, route a plain wave all the way into the receive queues; over
    /// NATS, work out the subject and envelope of a plain wave, so that
    /// what then waits on the client is those alone (the wave, and the
    /// work done on it, are behind it). The rest is for
    /// [`Medium::finish_publish`]. Split in two so that the common wave on
    /// the embedded medium never builds a future.
    #[inline(always)]
    pub(crate) fn start_publish(&self, wave: Wave, dropped: Option<DropReason>) -> Publishing {
        match self {
            Medium::Embedded(embedded) => match embedded.publish_now(wave, dropped) {
                None => Publishing::Done,
                Some(durable) => Publishing::Durable(durable),
            },
            #[cfg(feature = "nats")]
            Medium::Nats(nats) => {
                if dropped.is_none() {
                    match nats.prepare(&wave) {
                        Some(nats::Prepared::Queued) => return Publishing::Queued,
                        Some(nats::Prepared::Direct(subject, body)) => {
                            return Publishing::Direct(subject, body);
                        }
                        None => {}
                    }
                }
                Publishing::Admitted(crate::admission::Admitted::of(wave, dropped))
            }
        }
    }

    /// Ends what [`Medium::start_publish`] began. The rare paths' futures
    /// are boxed, so that they do not swell every emit's future; the NATS
    /// fast path stays inline (boxing it costs an allocation per emit).
    pub(crate) async fn finish_publish(&self, publishing: Publishing) -> Result<(), EmitError> {
        match (self, publishing) {
            (_, Publishing::Done) => Ok(()),
            // In the frame being filled. A loop of publishes leaves the
            // runtime's other tasks (the frames' own, the connection's, a
            // receiver in this process) their turn, as a channel's sender
            // does: otherwise it holds its worker until the queue is full.
            #[cfg(feature = "nats")]
            (_, Publishing::Queued) => {
                tokio::task::consume_budget().await;
                Ok(())
            }
            (Medium::Embedded(embedded), Publishing::Durable(wave)) => {
                Box::pin(embedded.publish_durable(wave)).await
            }
            #[cfg(feature = "nats")]
            (Medium::Nats(nats), Publishing::Direct(subject, body)) => {
                nats.publish_direct(subject, body).await
            }
            #[cfg(feature = "nats")]
            (Medium::Nats(nats), Publishing::Admitted(admitted)) => {
                Box::pin(nats.publish_admitted(admitted)).await
            }
            #[cfg(feature = "nats")]
            _ => Err(EmitError::new(
                crate::EmitErrorKind::Medium,
                "a publish begun on one medium was finished on another",
            )),
        }
    }

    /// Sends a reflection (made by `Wave::into_reflection`) to its source.
    pub(crate) async fn reflect(&self, reflected: Wave) -> Result<(), EmitError> {
        match self {
            Medium::Embedded(embedded) => {
                embedded.reflect(reflected);
                Ok(())
            }
            #[cfg(feature = "nats")]
            Medium::Nats(nats) => nats.reflect(reflected).await,
        }
    }

    /// Emits `wave` as a request and waits up to `timeout` for the first
    /// reply. `replies` is the asker's reply inbox, for a medium that
    /// routes replies to it; `admit` stamps and checks the wave (once it
    /// names where its reply goes). A wave the checks drop has no
    /// responders.
    pub(crate) async fn request<'a>(
        &self,
        wave: Wave,
        timeout: Duration,
        replies: impl Future<Output = Result<&'a Arc<ReplyMux>, RequestError>>,
        admit: impl FnOnce(&mut Wave) -> Result<Option<DropReason>, EmitError>,
    ) -> Result<Wave, RequestError> {
        match self {
            Medium::Embedded(embedded) => embedded.request(wave, timeout, replies, admit).await,
            #[cfg(feature = "nats")]
            Medium::Nats(nats) => {
                // NATS answers on its own inboxes.
                drop(replies);
                let mut wave = wave;
                let channel = wave.channel().clone();
                if admit(&mut wave)?.is_some() {
                    return Err(no_responders(&channel));
                }
                nats.request(&wave, timeout).await
            }
        }
    }

    /// A vibrator (its queue `inbox`) hands `wave` to its application: a
    /// durable wave is acknowledged now. `false` if the vibrator handed out
    /// this wave already (a redelivery), which it then drops. Called from
    /// `poll`: never waits on a disk or the network.
    pub(crate) fn hand_out(&self, inbox: u64, wave: &Wave) -> bool {
        match self {
            Medium::Embedded(embedded) => {
                let _ = inbox;
                embedded.hand_out(wave)
            }
            #[cfg(feature = "nats")]
            Medium::Nats(nats) => nats.hand_out(inbox, wave),
        }
    }

    /// A vibrator (its queue `inbox`) went away without handing out
    /// `waves`: durable ones are not acknowledged, and come again.
    pub(crate) fn release<'a>(&self, inbox: u64, waves: impl Iterator<Item = &'a Wave>) {
        match self {
            Medium::Embedded(embedded) => {
                let _ = inbox;
                embedded.release(waves);
            }
            #[cfg(feature = "nats")]
            Medium::Nats(nats) => {
                drop(waves);
                nats.release(inbox);
            }
        }
    }

    /// Waits until every wave emitted so far has left this process.
    pub(crate) async fn flush(&self, timeout: Duration) -> Result<(), EmitError> {
        match self {
            Medium::Embedded(embedded) => {
                let _ = timeout;
                embedded.flush().await
            }
            #[cfg(feature = "nats")]
            Medium::Nats(nats) => nats.flush(timeout).await,
        }
    }

    /// Lets go of the connection; what is still on its way is dropped.
    pub(crate) fn close(&self) {
        match self {
            Medium::Embedded(_) => {}
            #[cfg(feature = "nats")]
            Medium::Nats(nats) => nats.close(),
        }
    }
}

/// A publish begun by [`Medium::start_publish`].
pub(crate) enum Publishing {
    /// Nothing is left to do.
    Done,
    /// Over NATS, a plain wave written into the batch frame being filled:
    /// nothing is left to do either, but [`Medium::finish_publish`] leaves
    /// the runtime's other tasks their turn once in a while, as a
    /// channel's sender does.
    #[cfg(feature = "nats")]
    Queued,
    /// A wave on a durable channel of the embedded medium, for the outbox.
    Durable(Wave),
    /// The subject and envelope of a plain wave, for the NATS client.
    #[cfg(feature = "nats")]
    Direct(async_nats::Subject, bytes::Bytes),
    /// Anything else over NATS: tracked, durable, dropped or while the
    /// outbox is in use.
    #[cfg(feature = "nats")]
    Admitted(crate::admission::Admitted),
}

/// The refusal of a request nobody resonates on.
pub(crate) fn no_responders(channel: &Channel) -> RequestError {
    RequestError::new(
        RequestErrorKind::NoResponders,
        format!("no vibrator resonates on {:?}", channel.as_str()),
    )
}

pub(crate) use crate::offer::offer_counted;
#[cfg(feature = "nats")]
pub(crate) use crate::offer::{offer_all_counted, offer_batch_counted, offer_counted_once};
