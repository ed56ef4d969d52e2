//! Following interference events as they happen: [`PhysicsEvents`] (every
//! event of an aether) and [`InterferenceFollower`] (the events of channels
//! that match a pattern).

use std::{
    fmt,
    future::{Future, poll_fn},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use futures_core::Stream;
use tokio::sync::broadcast::{self, error::RecvError};

use super::{
    InterferenceEvent,
    bus::{Physics, PhysicsHub},
};

impl Physics {
    /// Every interference event from now on. A follower that falls more than
    /// `physics.follower_buffer` events behind skips the oldest, and the skip
    /// is counted ([`PhysicsStats::lagged`](super::PhysicsStats::lagged)).
    pub fn events(&self) -> PhysicsEvents {
        PhysicsEvents::new(self.hub.subscribe(), self.hub.clone())
    }
}
use crate::Channel;

type Receiver = broadcast::Receiver<Arc<InterferenceEvent>>;
type Recv =
    Pin<Box<dyn Future<Output = (Result<Arc<InterferenceEvent>, RecvError>, Receiver)> + Send>>;

enum State {
    Idle(Receiver),
    /// A receive in progress, kept across polls (and across a dropped
    /// `next()`), so that no event is lost.
    Waiting(Recv),
    Done,
}

/// Every interference event of an aether from the moment it was made:
/// [`Physics::events`](super::Physics::events).
///
/// A [`Stream`], and [`next`](Self::next). It ends when the aether is closed
/// or dropped. A follower that falls more than `physics.follower_buffer`
/// events behind skips the oldest; the skip is counted
/// ([`PhysicsStats::lagged`](super::PhysicsStats::lagged)).
pub struct PhysicsEvents {
    state: State,
    hub: Arc<PhysicsHub>,
}

impl PhysicsEvents {
    pub(crate) fn new(receiver: Receiver, hub: Arc<PhysicsHub>) -> Self {
        Self {
            state: State::Idle(receiver),
            hub,
        }
    }

    /// The next event; `None` once the aether is closed or dropped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is never lost to a dropped `next()`.
    pub async fn next(&mut self) -> Option<InterferenceEvent> {
        poll_fn(|cx| self.poll_event(cx))
            .await
            .map(Arc::unwrap_or_clone)
    }

    /// The next event if one is waiting, without waiting.
    pub fn try_next(&mut self) -> Option<InterferenceEvent> {
        match self.poll_event(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(event) => event.map(Arc::unwrap_or_clone),
            Poll::Pending => None,
        }
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arc<InterferenceEvent>>> {
        loop {
            let mut recv = match std::mem::replace(&mut self.state, State::Done) {
                State::Done => return Poll::Ready(None),
                State::Idle(receiver) => Box::pin(receive(receiver)),
                State::Waiting(recv) => recv,
            };
            let Poll::Ready((result, receiver)) = recv.as_mut().poll(cx) else {
                self.state = State::Waiting(recv);
                return Poll::Pending;
            };
            match result {
                Ok(event) => {
                    self.state = State::Idle(receiver);
                    return Poll::Ready(Some(event));
                }
                Err(RecvError::Lagged(missed)) => {
                    self.hub.count_lagged(missed);
                    self.state = State::Idle(receiver);
                }
                Err(RecvError::Closed) => return Poll::Ready(None),
            }
        }
    }
}

async fn receive(mut receiver: Receiver) -> (Result<Arc<InterferenceEvent>, RecvError>, Receiver) {
    let result = receiver.recv().await;
    (result, receiver)
}

impl Stream for PhysicsEvents {
    type Item = InterferenceEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<InterferenceEvent>> {
        self.get_mut()
            .poll_event(cx)
            .map(|event| event.map(Arc::unwrap_or_clone))
    }
}

impl fmt::Debug for PhysicsEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhysicsEvents")
            .field("ended", &matches!(self.state, State::Done))
            .finish()
    }
}

/// The interference events of the channels that match a pattern, from the
/// moment it was made: [`Vibrator::follow_interference`].
///
/// A [`Stream`], and [`next`](Self::next); it ends when the aether is closed
/// or dropped. An event's channel is the channel its waves were emitted on,
/// matched by [`Channel::matches`]. Over NATS, an aether's engine sees the
/// waves its own vibrators receive: follow from a vibrator of the aether that
/// hears the channels (a gateway resonating on `*` sees everything).
///
/// [`Vibrator::follow_interference`]: crate::Vibrator::follow_interference
pub struct InterferenceFollower {
    events: PhysicsEvents,
    pattern: Channel,
}

impl InterferenceFollower {
    pub(crate) fn new(events: PhysicsEvents, pattern: Channel) -> Self {
        Self { events, pattern }
    }

    /// The pattern it follows.
    pub fn pattern(&self) -> &Channel {
        &self.pattern
    }

    /// The next event on a matching channel; `None` once the aether is
    /// closed or dropped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is never lost to a dropped `next()`.
    pub async fn next(&mut self) -> Option<InterferenceEvent> {
        poll_fn(|cx| self.poll_matching(cx))
            .await
            .map(Arc::unwrap_or_clone)
    }

    /// The next event on a matching channel if one is waiting, without
    /// waiting.
    pub fn try_next(&mut self) -> Option<InterferenceEvent> {
        match self.poll_matching(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(event) => event.map(Arc::unwrap_or_clone),
            Poll::Pending => None,
        }
    }

    fn poll_matching(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arc<InterferenceEvent>>> {
        loop {
            match self.events.poll_event(cx) {
                Poll::Ready(Some(event)) if !event.channel.matches(&self.pattern) => continue,
                other => return other,
            }
        }
    }
}

impl Stream for InterferenceFollower {
    type Item = InterferenceEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<InterferenceEvent>> {
        self.get_mut()
            .poll_matching(cx)
            .map(|event| event.map(Arc::unwrap_or_clone))
    }
}

impl fmt::Debug for InterferenceFollower {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InterferenceFollower")
            .field("pattern", &self.pattern.as_str())
            .field("events", &self.events)
            .finish()
    }
}
