//! Batch frames on the way out (`[aether.nats.batch]`).
//!
//! A plain wave's emit hands its subject and envelope to a queue and
//! returns, as `Client::publish` would; one task takes everything queued
//! when it wakes, cuts it into runs of consecutive waves on one subject
//! (at most `max_waves` waves and `max_bytes` bytes each), and publishes
//! each run as one message: a lone envelope as itself, several as a batch
//! frame ([`wire::encode_frame`]). Nothing waits for a run to fill unless
//! `linger_us` is set: while the connection is busy, waves queue, and the
//! next wake-up takes them all. Runs follow the queue's order, so every
//! wave keeps its place among the plain waves of its emitter, whatever the
//! subject.

use std::{sync::Arc, time::Duration};

use async_nats::{Client, Subject};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::Shared;
use crate::{EmitError, EmitErrorKind, config::NatsBatch, stats::DropReason, wire};

/// What the task is given.
enum Outgoing {
    /// A wave's envelope, for its subject.
    Wave(Subject, Bytes),
    /// Answered once everything queued before it is with the client.
    Drained(oneshot::Sender<()>),
}

/// The queue of an aether's batched waves.
pub(super) struct Batcher {
    tx: mpsc::Sender<Outgoing>,
}

/// Bytes a run's frame spends besides its envelopes: the frame's head and
/// each envelope's length, at most.
const FRAME_HEAD: usize = 2 + 3;
const LENGTH: usize = 3;

impl Batcher {
    /// Starts the task that publishes on `client`; it ends when the
    /// batcher is dropped and the queue is empty.
    pub(super) fn start(
        client: Client,
        shared: Arc<Shared>,
        config: &NatsBatch,
        capacity: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(run(client, shared, rx, config.clone()));
        Self { tx }
    }

    /// Queues `body` for `subject`; waits only while the queue is full.
    pub(super) async fn send(&self, subject: Subject, body: Bytes) -> Result<(), EmitError> {
        self.tx
            .send(Outgoing::Wave(subject, body))
            .await
            .map_err(|_| EmitError::new(EmitErrorKind::Closed, "the connection's sender stopped"))
    }

    /// Returns once every wave queued before the call is with the client.
    pub(super) async fn drained(&self) {
        let (done, drained) = oneshot::channel();
        if self.tx.send(Outgoing::Drained(done)).await.is_ok() {
            let _ = drained.await;
        }
    }
}

async fn run(
    client: Client,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Outgoing>,
    config: NatsBatch,
) {
    let linger = Duration::from_micros(config.linger_us);
    let take = config.max_waves.saturating_mul(4).max(64);
    let mut queued = Vec::with_capacity(take);
    let mut run = Run::default();
    while rx.recv_many(&mut queued, take).await > 0 {
        if !linger.is_zero() {
            tokio::time::sleep(linger).await;
            while queued.len() < take {
                match rx.try_recv() {
                    Ok(item) => queued.push(item),
                    Err(_) => break,
                }
            }
        }
        for item in queued.drain(..) {
            match item {
                Outgoing::Wave(subject, body) => {
                    let fits = run.subject.as_ref() == Some(&subject)
                        && run.envelopes.len() < config.max_waves
                        && run.bytes + LENGTH + body.len() <= config.max_bytes;
                    if !fits {
                        run.publish(&client, &shared).await;
                        run.subject = Some(subject);
                    }
                    run.bytes += LENGTH + body.len();
                    run.envelopes.push(body);
                }
                Outgoing::Drained(done) => {
                    run.publish(&client, &shared).await;
                    let _ = done.send(());
                }
            }
        }
        run.publish(&client, &shared).await;
    }
}

/// Consecutive waves on one subject.
#[derive(Default)]
struct Run {
    subject: Option<Subject>,
    envelopes: Vec<Bytes>,
    bytes: usize,
}

impl Run {
    /// Publishes the run (a lone envelope as itself) and starts anew.
    async fn publish(&mut self, client: &Client, shared: &Shared) {
        self.bytes = FRAME_HEAD;
        let Some(subject) = self.subject.take() else {
            return;
        };
        let waves = self.envelopes.len();
        let body = if waves == 1 {
            self.envelopes.pop().expect("one envelope")
        } else {
            let frame = wire::encode_frame(&self.envelopes);
            self.envelopes.clear();
            shared.counters.framed(waves as u64);
            frame
        };
        if client.publish(subject, body).await.is_err() {
            // The client stopped (the aether closed): these were taken by
            // emit and cannot go.
            for _ in 0..waves {
                shared.stats.dropped(DropReason::Unsent);
            }
        }
    }
}
