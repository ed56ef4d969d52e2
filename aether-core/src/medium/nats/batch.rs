//! Batch frames on the way out (`[aether.nats.batch]`).
//!
//! A plain wave's emit writes its envelope straight into the frame being
//! filled for its subject (no envelope of its own, no queue of messages)
//! and returns, as `Client::publish` would (spending the runtime's
//! budget as it does, so that a loop of emits yields its worker once in a
//! while); one task takes every run
//! filled so far when it wakes and publishes each as one message: a lone
//! envelope as itself (a slice of the run), several as a batch frame. A
//! run is consecutive waves on one subject, at most `max_waves` waves and
//! `max_bytes` bytes. Nothing waits for a run to fill unless `linger_us`
//! is set: while the task publishes, emits fill the next runs, and the
//! next wake-up takes them all. Runs follow the emit order, so every wave
//! keeps its place among the plain waves of its emitter, whatever the
//! subject. When more than `queue_bytes` wait, emit waits for room.
//!
//! Waking the task costs the emitting thread a system call when the
//! task's worker sleeps: more than the emit itself. So in a fast stream
//! (at least [`FAST_PER_MS`] waves published in the last millisecond, and
//! more queued again while the task published) the task gathers: it sleeps
//! for at most [`GATHER`], or until [`GATHERED_FRAMES`] frames' worth are
//! queued, and emits meanwhile do not wake it. Such a stream then costs a
//! wake-up per millisecond and a message per frame, not per wave. Slower
//! waves (10,000 a second) and a wave on a quiet bus leave at once, and a
//! flush ends the gathering.

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

/// Longest a gathering task sleeps: the most a wave of a steady stream
/// waits for its frame.
const GATHER: Duration = Duration::from_millis(1);

/// Waves published in a millisecond that make a stream fast enough to
/// gather (100,000 a second).
const FAST_PER_MS: u64 = 100;

/// Frames' worth queued that end a gathering before [`GATHER`] is up (a
/// producer that fast pays one wake-up for as many frames).
const GATHERED_FRAMES: usize = 8;

/// The first capacity of a run's buffer: it grows (to `max_bytes`) only
/// when waves come faster than the task takes them.
const FIRST_CAPACITY: usize = 4096;

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
    /// The server's largest message (0: not known): a frame never
    /// outgrows it.
    server_max: Arc<std::sync::atomic::AtomicUsize>,
}

#[derive(Default)]
struct State {
    runs: VecDeque<Run>,
    bytes: usize,
    /// The task waits for `wake`.
    idle: bool,
    /// The task gathers a stream: `wake` once a frame's worth is queued.
    gathering: bool,
    /// Answered once the runs queued before them are with the client.
    drains: Vec<oneshot::Sender<()>>,
    /// No more waves; the task publishes what is queued and ends.
    closed: bool,
    /// The longest frame the task took last: a run starts with this much
    /// room (a stream's frames are filled without growing their buffer
    /// again and again; quiet traffic's stay small).
    last_frame: usize,
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
        server_max: Arc<std::sync::atomic::AtomicUsize>,
    ) -> Arc<Self> {
        let batcher = Arc::new(Self {
            state: Mutex::default(),
            wake: Notify::new(),
            room: Notify::new(),
            config: config.clone(),
            queue_bytes: queue_bytes.max(config.max_bytes * 2),
            server_max,
        });
        tokio::spawn(run(batcher.clone(), client, shared));
        batcher
    }

    /// The largest frame: `max_bytes`, or less when the server takes
    /// only smaller messages.
    fn max_frame(&self) -> usize {
        match self.server_max.load(std::sync::atomic::Ordering::Relaxed) {
            0 => self.config.max_bytes,
            server => server.min(self.config.max_bytes),
        }
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
        let max_frame = self.max_frame();
        let fits = state.runs.back().is_some_and(|run| {
            run.channel.as_ref() == Some(wave.channel())
                && run.waves < self.config.max_waves
                && run.buf.len() + entry <= max_frame
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
        let max_frame = self.max_frame();
        let fits = state.runs.back().is_some_and(|run| {
            run.subject == *subject
                && run.waves < self.config.max_waves
                && run.buf.len() + entry <= max_frame
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
        let room = FIRST_CAPACITY.max(state.last_frame).min(self.max_frame());
        let mut buf = BytesMut::with_capacity((HEAD + entry).max(room));
        buf.extend_from_slice(&[wire::MAGIC, wire::FRAME, 0, 0, 0]);
        state.bytes += HEAD;
        state.runs.push_back(Run {
            subject,
            channel,
            buf,
            waves: 0,
        });
    }

    /// Wakes the task if it waits, or if it gathers and a frame's worth
    /// is queued (after the lock is let go).
    fn wake_task(&self, mut state: MutexGuard<'_, State>) {
        if state.idle {
            state.idle = false;
            drop(state);
            self.wake.notify_one();
        } else if state.gathering && self.gathered_enough(&state) {
            state.gathering = false;
            drop(state);
            self.wake.notify_one();
        }
    }

    /// Enough is queued to end a gathering.
    fn gathered_enough(&self, state: &State) -> bool {
        state.bytes >= self.config.max_bytes * GATHERED_FRAMES
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
            // A flush does not wait for a gathering to end.
            state.gathering = false;
            state.idle = false;
            drop(state);
            self.wake.notify_one();
        }
        let _ = drained.await;
    }

    /// Lets the task publish what is queued and end.
    pub(super) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.idle = false;
        state.gathering = false;
        drop(state);
        self.wake.notify_one();
        self.room.notify_waiters();
    }
}

/// How fast waves leave: those published in the last whole millisecond
/// and in this one.
struct Pace {
    since: std::time::Instant,
    now: u64,
    last: u64,
}

impl Pace {
    fn new() -> Self {
        Self {
            since: std::time::Instant::now(),
            now: 0,
            last: 0,
        }
    }

    fn turn(&mut self) {
        let elapsed = self.since.elapsed();
        if elapsed >= Duration::from_millis(1) {
            // A quiet gap longer than a millisecond forgets the last one.
            self.last = if elapsed < Duration::from_millis(2) {
                self.now
            } else {
                0
            };
            self.now = 0;
            self.since = std::time::Instant::now();
        }
    }

    fn published(&mut self, waves: u64) {
        self.turn();
        self.now += waves;
    }

    fn fast(&mut self) -> bool {
        self.turn();
        self.now.max(self.last) >= FAST_PER_MS
    }
}

/// What the task found in the queue.
enum Taken {
    Runs(VecDeque<Run>, Vec<oneshot::Sender<()>>, bool),
    /// Part of a stream: it waits for a frame's worth first.
    Gather,
    /// Nothing: it sleeps until an emit wakes it.
    Nothing,
}

async fn run(batcher: Arc<Batcher>, client: Client, shared: Arc<Shared>) {
    let linger = Duration::from_micros(batcher.config.linger_us);
    // It published last time round: what is queued now came meanwhile.
    let mut streaming = false;
    let mut pace = Pace::new();
    loop {
        let taken = {
            let mut state = batcher.lock();
            if state.runs.is_empty() && state.drains.is_empty() {
                if state.closed {
                    return;
                }
                state.idle = true;
                Taken::Nothing
            } else if streaming
                && state.drains.is_empty()
                && !state.closed
                && pace.fast()
                && !batcher.gathered_enough(&state)
            {
                state.gathering = true;
                Taken::Gather
            } else {
                state.bytes = 0;
                state.last_frame = state.runs.iter().map(|r| r.buf.len()).max().unwrap_or(0);
                Taken::Runs(
                    std::mem::take(&mut state.runs),
                    std::mem::take(&mut state.drains),
                    state.closed,
                )
            }
        };
        let (runs, drains, closed) = match taken {
            Taken::Runs(runs, drains, closed) => (runs, drains, closed),
            Taken::Gather => {
                let _ = tokio::time::timeout(GATHER, batcher.wake.notified()).await;
                batcher.lock().gathering = false;
                streaming = false;
                continue;
            }
            Taken::Nothing => {
                batcher.wake.notified().await;
                streaming = false;
                if !linger.is_zero() {
                    tokio::time::sleep(linger).await;
                }
                continue;
            }
        };
        streaming = true;
        batcher.room.notify_waiters();
        for run in runs {
            pace.published(run.waves as u64);
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
