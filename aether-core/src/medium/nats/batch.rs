//! Batch frames on the way out (`[aether.nats.batch]`).
//!
//! A plain wave's emit writes its envelope straight into the frame being
//! filled for its subject (no envelope of its own, no queue of messages)
//! and returns, as `Client::publish` would; one task takes every run
//! filled so far when it wakes and publishes each as one message: a lone
//! envelope as itself (a slice of the run), several as a batch frame. A
//! run is consecutive waves on one subject, at most `max_waves` waves and
//! `max_bytes` bytes. Nothing waits for a run to fill unless `linger_us`
//! is set: while the task publishes, emits fill the next runs, and the
//! next wake-up takes them all. Runs follow the emit order, so every wave
//! keeps its place among the plain waves of its emitter, whatever the
//! subject. When more than `queue_bytes` wait, emit waits for room.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_nats::{Client, Subject};
use bytes::{Bytes, BytesMut};
use tokio::sync::{Notify, oneshot};

use super::Shared;
use crate::{
    Channel, EmitError, EmitErrorKind, Wave, config::NatsBatch, stats::DropReason, wave::wire,
    wire::WireVersion,
};

/// Bytes a run spends before its first entry: the magic, the frame byte,
/// and the count, always written as 3 varint bytes so that it can be
/// filled in when the run closes.
const HEAD: usize = 5;

/// The queue of an aether's plain waves to the connection.
pub(super) struct Batcher {
    state: Mutex<State>,
    /// Wakes the task.
    wake: Notify,
    /// Wakes emits waiting for room.
    room: Notify,
    config: NatsBatch,
    /// Most bytes waiting before emit waits.
    queue_bytes: usize,
}

#[derive(Default)]
struct State {
    runs: VecDeque<Run>,
    bytes: usize,
    /// The task waits for `wake`.
    idle: bool,
    /// Answered once the runs queued before them are with the client.
    drains: Vec<oneshot::Sender<()>>,
    /// No more waves; the task publishes what is queued and ends.
    closed: bool,
}

/// Consecutive waves on one subject: a frame being filled.
struct Run {
    subject: Subject,
    /// The channel of the waves `try_push` wrote (none for `send`'s).
    channel: Option<Channel>,
    buf: BytesMut,
    waves: usize,
}

impl Batcher {
    /// Starts the task that publishes on `client`; `queue_bytes` bounds
    /// what may wait.
    pub(super) fn start(
        client: Client,
        shared: Arc<Shared>,
        config: &NatsBatch,
        queue_bytes: usize,
    ) -> Arc<Self> {
        let batcher = Arc::new(Self {
            state: Mutex::default(),
            wake: Notify::new(),
            room: Notify::new(),
            config: config.clone(),
            queue_bytes: queue_bytes.max(config.max_bytes * 2),
        });
        tokio::spawn(run(batcher.clone(), client, shared));
        batcher
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `wave`'s envelope (`version`) into the run for its channel
    /// (`subject_of` gives the subject when a run starts); `false` if the
    /// queue is full (nothing written: encode it and [`send`](Self::send)
    /// it, which waits for room).
    pub(super) fn try_push(
        &self,
        subject_of: impl FnOnce() -> Subject,
        version: WireVersion,
        wave: &Wave,
    ) -> bool {
        let framed = wire::Framed::of(version, wave);
        let entry = framed.entry_len();
        let mut state = self.lock();
        if state.closed || state.bytes >= self.queue_bytes {
            return false;
        }
        let fits = state.runs.back().is_some_and(|run| {
            run.channel.as_ref() == Some(wave.channel())
                && run.waves < self.config.max_waves
                && run.buf.len() + entry <= self.config.max_bytes
        });
        if !fits {
            self.start_run(
                &mut state,
                subject_of(),
                Some(wave.channel().clone()),
                entry,
            );
        }
        let run = state.runs.back_mut().expect("a run");
        framed.write_into(&mut run.buf);
        run.waves += 1;
        state.bytes += entry;
        self.wake_task(state);
        true
    }

    /// Queues an envelope already written (a signed or sealed one, or one
    /// that waited for room) for `subject`; waits while the queue is full.
    pub(super) async fn send(&self, subject: Subject, envelope: Bytes) -> Result<(), EmitError> {
        loop {
            let room = self.room.notified();
            {
                let mut state = self.lock();
                if state.closed {
                    return Err(EmitError::new(
                        EmitErrorKind::Closed,
                        "the connection's sender stopped",
                    ));
                }
                if state.bytes < self.queue_bytes {
                    let before = self.run_for(&mut state, &subject, envelope.len());
                    let run = state.runs.back_mut().expect("a run");
                    wire::put_framed(&mut run.buf, &envelope);
                    run.waves += 1;
                    let added = run.buf.len() - before;
                    state.bytes += added;
                    self.wake_task(state);
                    return Ok(());
                }
            }
            room.await;
        }
    }

    /// Makes the last run one that takes an envelope of `len` bytes for
    /// `subject`; returns its length before the envelope.
    fn run_for(&self, state: &mut State, subject: &Subject, len: usize) -> usize {
        let entry = wire::framed_len_len(len) + len;
        let fits = state.runs.back().is_some_and(|run| {
            run.subject == *subject
                && run.waves < self.config.max_waves
                && run.buf.len() + entry <= self.config.max_bytes
        });
        if !fits {
            self.start_run(state, subject.clone(), None, entry);
        }
        state.runs.back().expect("a run").buf.len()
    }

    /// Starts a run for `subject` with room for an entry of `entry` bytes.
    fn start_run(
        &self,
        state: &mut State,
        subject: Subject,
        channel: Option<Channel>,
        entry: usize,
    ) {
        let mut buf = BytesMut::with_capacity((HEAD + entry).max(self.config.max_bytes));
        buf.extend_from_slice(&[wire::MAGIC, wire::FRAME, 0, 0, 0]);
        state.bytes += HEAD;
        state.runs.push_back(Run {
            subject,
            channel,
            buf,
            waves: 0,
        });
    }

    /// Wakes the task if it waits (after the lock is let go).
    fn wake_task(&self, mut state: MutexGuard<'_, State>) {
        if state.idle {
            state.idle = false;
            drop(state);
            self.wake.notify_one();
        }
    }

    /// Nothing queued and nothing being published: every wave emitted so
    /// far is with the client.
    pub(super) fn is_quiet(&self) -> bool {
        let state = self.lock();
        state.idle && state.runs.is_empty()
    }

    /// Returns once every wave queued before the call is with the client.
    pub(super) async fn drained(&self) {
        let (done, drained) = oneshot::channel();
        {
            let mut state = self.lock();
            if state.closed && state.runs.is_empty() {
                return;
            }
            state.drains.push(done);
            self.wake_task(state);
        }
        let _ = drained.await;
    }

    /// Lets the task publish what is queued and end.
    pub(super) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.idle = false;
        drop(state);
        self.wake.notify_one();
        self.room.notify_waiters();
    }
}

async fn run(batcher: Arc<Batcher>, client: Client, shared: Arc<Shared>) {
    let linger = Duration::from_micros(batcher.config.linger_us);
    loop {
        let taken = {
            let mut state = batcher.lock();
            if state.runs.is_empty() && state.drains.is_empty() {
                if state.closed {
                    return;
                }
                state.idle = true;
                None
            } else {
                state.bytes = 0;
                Some((
                    std::mem::take(&mut state.runs),
                    std::mem::take(&mut state.drains),
                    state.closed,
                ))
            }
        };
        let Some((runs, drains, closed)) = taken else {
            batcher.wake.notified().await;
            if !linger.is_zero() {
                tokio::time::sleep(linger).await;
            }
            continue;
        };
        batcher.room.notify_waiters();
        for run in runs {
            publish(run, &client, &shared).await;
        }
        for done in drains {
            let _ = done.send(());
        }
        if closed && batcher.lock().runs.is_empty() {
            return;
        }
    }
}

/// Publishes a run: a lone envelope as itself, several as a frame.
async fn publish(run: Run, client: &Client, shared: &Shared) {
    let Run {
        subject,
        mut buf,
        waves,
        ..
    } = run;
    let body = if waves == 1 {
        let body = buf.freeze();
        // The entry's length varint, then the envelope.
        let mut at = HEAD;
        while body.get(at).is_some_and(|b| b & 0x80 != 0) {
            at += 1;
        }
        body.slice(at + 1..)
    } else {
        // The count, as 3 varint bytes (a reader takes up to 3).
        let count = waves as u32;
        buf[2] = (count & 0x7F) as u8 | 0x80;
        buf[3] = ((count >> 7) & 0x7F) as u8 | 0x80;
        buf[4] = ((count >> 14) & 0x7F) as u8;
        shared.counters.framed(waves as u64);
        buf.freeze()
    };
    if client.publish(subject, body).await.is_err() {
        // The client stopped (the aether closed): these were taken by emit
        // and cannot go.
        for _ in 0..waves {
            shared.stats.dropped(DropReason::Unsent);
        }
    }
}
