//! A vibrator's receive queue: bounded, amplitude-aware, waking on arrival.
//!
//! Mediums [`offer`](Inbox::offer) waves; the vibrator takes them out. When
//! the queue is full the weakest wave is shed: the incoming one if it is no
//! stronger than the weakest queued wave (so among equals the newest goes, and
//! order is kept), otherwise the oldest of the weakest queued waves.
//!
//! The vibrator takes every queued wave at once into a batch of its own
//! (swapping buffers, so nothing is copied or allocated), and locks again only
//! when that batch is empty. Emitter and receiver thus meet on the lock once
//! per batch, not once per wave. A taken batch belongs to the vibrator: at
//! most `capacity` waves wait in the queue, and at most as many in the batch.
//!
//! Why a `std::sync::Mutex` around a `VecDeque` and not a channel: shedding
//! needs to look at and remove any element, and the critical sections are a
//! few instructions long, never across an `.await`.
//!
//! Emitters and the receiver run on different cores, so the fields are laid
//! out by who writes them, each group on its own cache line: the settings
//! emitters read on every offer, the lock, the count of queued waves (which
//! the receiver reads to decide whether to lock at all), the waker, and the
//! counters. Without that, the receiver's lock attempts would evict the
//! settings every emitter reads.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use arc_swap::ArcSwap;
use crossbeam_utils::CachePadded;
use futures_util::task::AtomicWaker;
use smol_str::SmolStr;

use crate::{
    Channel, Wave, WaveId,
    physics::PhysicsHub,
    recent::Recent,
    stats::{Counters, DropReason},
};

/// Identifies one subscription on a medium: which of a queue's
/// resonances brought a wave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SubscriptionId(pub(crate) u64);

/// How a receiver whose waves also go to other queues waits before it
/// parks: this many checks of the queue, this many `spin_loop`s apart
/// (about 70 ns here).
///
/// An emitter whose waves go to several queues wakes, for each wave, every
/// receiver that parked after emptying its queue: one scheduler call each,
/// on the emitter's thread, which is the bottleneck of a fan-out. A short
/// spin (about half a microsecond) lets those receivers take the next wave
/// without it. A receiver that alone hears its waves parks at once: there
/// the emitter pays at most one wake-up per batch, and a spinning receiver
/// would instead take one wave at a time, so that every emit met it on the
/// queue's lock (BENCHMARKS.md measures both).
const SPIN_CHECKS: usize = 8;
const SPINS_PER_CHECK: usize = 8;

/// What became of an offered wave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Queued for the vibrator.
    Queued,
    /// Queued, and a weaker queued wave was shed to make room.
    QueuedShedding,
    /// Not queued, for this reason.
    Dropped(DropReason),
    /// The vibrator asked not to hear its own waves.
    SkippedOwn,
    /// The vibrator is gone.
    Closed,
    /// The vibrator got this wave already, through another of its group
    /// resonances ([`Inbox::offer_once`]): not a loss, so not counted.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    Duplicate,
    /// Handed to the vibrator's handler, which panicked on it.
    HandlerPanicked,
}

/// A vibrator's handler ([`crate::VibratorBuilder::on_wave`]): run on each
/// wave where it arrives instead of queueing it.
pub(crate) type Handler = Arc<dyn Fn(Wave) + Send + Sync>;

/// How often a vibrator whose handler panics says so in the log (each
/// panic is counted).
const PANIC_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

pub(crate) struct Inbox {
    settings: CachePadded<Settings>,
    state: CachePadded<Mutex<State>>,
    /// How many waves `state.queue` holds, written under the lock and read
    /// without it: the receiver locks only when there is something to take.
    queued: CachePadded<AtomicUsize>,
    /// Whether the last wave offered here went to other queues too (written
    /// only when it changes, on a line of its own so that a change does not
    /// disturb the settings every offer reads): the receiver then spins
    /// briefly before it parks ([`Inbox::poll_take`]).
    shared: CachePadded<AtomicBool>,
    /// Set (after `state.closed`) when the queue closes.
    closed: AtomicBool,
    waker: CachePadded<AtomicWaker>,
    stats: CachePadded<Counters>,
    /// The vibrator's own (not group) resonances, oldest first, for mediums
    /// that deliver once per subscription (NATS): a wave is taken from the
    /// oldest of them that hears it.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    patterns: ArcSwap<Vec<(SubscriptionId, Channel)>>,
    /// How many group resonances the vibrator has on a medium that delivers
    /// once per subscription (NATS, where each is a queue subscription that
    /// may bring its own copy of a message): with two or more, waves that
    /// come through them are offered once ([`Inbox::offer_once`]).
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    groups: AtomicUsize,
    /// When a panic of the handler was last said in the log.
    panic_warned: Mutex<Option<std::time::Instant>>,
}

/// What every offer reads; written only when a setting changes.
struct Settings {
    id: u64,
    /// The vibrator's name: the resonator of the deliveries the aether's
    /// physics engine observes.
    name: SmolStr,
    /// The aether's physics, which observes deliveries once it runs.
    physics: Arc<PhysicsHub>,
    capacity: usize,
    /// `f64` bits: waves weaker than this are not delivered.
    noise_floor: AtomicU64,
    skip_own: AtomicBool,
    /// Run on each wave instead of queueing it, if set.
    handler: Option<Handler>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Wave>,
    closed: bool,
    /// `(amplitude, how many queued waves have it)` of the weakest queued
    /// waves, or `None` when not known (worked out again when needed).
    weakest: Option<(f64, usize)>,
    /// The waves offered last through group resonances, while there are
    /// two or more (empty otherwise), by id and hop count: a relayed wave
    /// keeps its id but travels one hop more, and is a wave of its own.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    recent: Recent<(WaveId, u32), RECENT_WAVES>,
}

/// How many waves a queue remembers of those its group resonances brought
/// ([`Inbox::offer_once`]). The copies of one message that two queue
/// subscriptions of one connection bring are handed out within a few of
/// the arrivals' rounds of each other (each takes at most
/// `arrivals::ROUND_WAVES` waves, an equal share from each subscription);
/// this many apart, the second would be taken for a new wave. Grown as
/// used, and only by a vibrator in two groups or more.
const RECENT_WAVES: usize = 16_384;

/// The room an empty queue keeps, in waves.
const IDLE_QUEUE_WAVES: usize = 16;

impl State {
    #[inline(always)]
    fn push(&mut self, wave: Wave) {
        let amplitude = wave.amplitude().value();
        self.weakest = match self.weakest {
            _ if self.queue.is_empty() => Some((amplitude, 1)),
            Some((min, _)) if amplitude < min => Some((amplitude, 1)),
            Some((min, n)) if amplitude == min => Some((min, n + 1)),
            other => other,
        };
        self.queue.push_back(wave);
    }

    fn forget(&mut self, amplitude: f64) {
        if let Some((min, n)) = self.weakest
            && amplitude == min
        {
            self.weakest = (n > 1).then_some((min, n - 1));
        }
    }

    fn weakest_amplitude(&mut self) -> f64 {
        if let Some((min, _)) = self.weakest {
            return min;
        }
        let mut min = f64::INFINITY;
        let mut count = 0;
        for wave in &self.queue {
            let a = wave.amplitude().value();
            if a < min {
                (min, count) = (a, 1);
            } else if a == min {
                count += 1;
            }
        }
        self.weakest = (count > 0).then_some((min, count));
        min
    }

    /// Removes the oldest of the weakest queued waves.
    fn shed_weakest(&mut self) -> Option<Wave> {
        let min = self.weakest_amplitude();
        let index = self
            .queue
            .iter()
            .position(|w| w.amplitude().value() == min)?;
        let wave = self.queue.remove(index)?;
        self.forget(min);
        Some(wave)
    }
}

impl Inbox {
    pub(crate) fn new(
        id: u64,
        name: SmolStr,
        physics: Arc<PhysicsHub>,
        capacity: usize,
        noise_floor: f64,
        skip_own: bool,
        handler: Option<Handler>,
    ) -> Self {
        Self {
            settings: CachePadded::new(Settings {
                id,
                name,
                physics,
                capacity,
                noise_floor: AtomicU64::new(noise_floor.to_bits()),
                skip_own: AtomicBool::new(skip_own),
                handler,
            }),
            state: CachePadded::new(Mutex::new(State::default())),
            queued: CachePadded::new(AtomicUsize::new(0)),
            shared: CachePadded::new(AtomicBool::new(false)),
            closed: AtomicBool::new(false),
            waker: CachePadded::new(AtomicWaker::new()),
            stats: CachePadded::new(Counters::default()),
            patterns: ArcSwap::default(),
            groups: AtomicUsize::new(0),
            panic_warned: Mutex::new(None),
        }
    }

    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn add_pattern(&self, id: SubscriptionId, pattern: Channel) {
        self.patterns.rcu(|patterns| {
            let mut patterns = Vec::clone(patterns);
            patterns.push((id, pattern.clone()));
            patterns
        });
    }

    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn remove_pattern(&self, id: SubscriptionId) {
        self.patterns.rcu(|patterns| {
            let mut patterns = Vec::clone(patterns);
            patterns.retain(|(other, _)| *other != id);
            patterns
        });
    }

    /// Whether a wave on `channel` that came through subscription `id` is
    /// also heard through another of the vibrator's resonances, which then
    /// delivers it: an older own resonance, or for a group subscription
    /// (`grouped`) any own resonance.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn heard_elsewhere(
        &self,
        channel: &Channel,
        id: SubscriptionId,
        grouped: bool,
    ) -> bool {
        self.patterns
            .load()
            .iter()
            .any(|(other, pattern)| hears_before(*other, id, grouped) && channel.matches(pattern))
    }

    /// Whether another of the vibrator's resonances could hear what
    /// subscription `id` brings ([`Inbox::heard_elsewhere`] for some
    /// channel): an older own resonance, or for a group subscription
    /// (`grouped`) any own resonance.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn may_hear_elsewhere(&self, id: SubscriptionId, grouped: bool) -> bool {
        self.patterns
            .load()
            .iter()
            .any(|(other, _)| hears_before(*other, id, grouped))
    }

    pub(crate) fn id(&self) -> u64 {
        self.settings.id
    }

    /// The vibrator's name.
    pub(crate) fn name(&self) -> &SmolStr {
        &self.settings.name
    }

    /// Most waves the queue holds.
    pub(crate) fn capacity(&self) -> usize {
        self.settings.capacity
    }

    /// The aether's physics.
    #[inline]
    pub(crate) fn physics(&self) -> &PhysicsHub {
        &self.settings.physics
    }

    /// Whether the queue was closed (the vibrator or the aether is gone).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn stats(&self) -> &Counters {
        &self.stats
    }

    pub(crate) fn noise_floor(&self) -> f64 {
        f64::from_bits(self.settings.noise_floor.load(Ordering::Relaxed))
    }

    pub(crate) fn set_noise_floor(&self, floor: f64) {
        self.settings
            .noise_floor
            .store(floor.to_bits(), Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves the queue consistent (every
        // mutation is a single push or pop), so poisoning is not an error.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Offers a wave measured on arrival. Counts what it does.
    #[inline(always)]
    pub(crate) fn offer(&self, wave: Wave) -> Offer {
        if let Some(refused) = self.screen(&wave, self.noise_floor(), self.skips_own()) {
            return refused;
        }
        if let Some(handler) = &self.settings.handler {
            return self.hand(handler, wave);
        }
        let state = self.lock();
        if state.closed {
            return Offer::Closed;
        }
        self.queue(state, wave)
    }

    /// Offers a wave that came through one of the vibrator's group
    /// resonances: while it has two or more (on NATS, each brings its own
    /// copy of a message whose channel they all hear), a wave it was offered
    /// already through another is refused as [`Offer::Duplicate`], so that
    /// the vibrator gets it once, as on the embedded medium. The check and
    /// the queueing are one critical section, so waves keep their order.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn offer_once(&self, wave: Wave) -> Offer {
        if self.groups.load(Ordering::Acquire) < 2 {
            return self.offer(wave);
        }
        self.offer_remembered(wave)
    }

    #[cold]
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    fn offer_remembered(&self, wave: Wave) -> Offer {
        let mut state = self.lock();
        if state.closed {
            return Offer::Closed;
        }
        // A foreign wave without an id (id 0) cannot be told apart from
        // another: always new.
        if wave.id() != WaveId::default()
            && !state.recent.insert((wave.id(), wave.propagation_count()))
        {
            return Offer::Duplicate;
        }
        if let Some(refused) = self.screen(&wave, self.noise_floor(), self.skips_own()) {
            return refused;
        }
        if let Some(handler) = &self.settings.handler {
            drop(state);
            return self.hand(handler, wave);
        }
        self.queue(state, wave)
    }

    /// Runs the vibrator's handler on a screened wave, on this thread, and
    /// counts it delivered; a panic in the handler is caught, counted and
    /// said in the log (at most once a minute), and the next wave is
    /// handed as any other.
    fn hand(&self, handler: &Handler, wave: Wave) -> Offer {
        if self.is_closed() {
            return Offer::Closed;
        }
        self.stats.delivered();
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(wave)));
        if ran.is_ok() {
            return Offer::Queued;
        }
        self.stats.handler_panicked();
        self.warn_panicked();
        Offer::HandlerPanicked
    }

    #[cold]
    fn warn_panicked(&self) {
        let mut warned = self.panic_warned.lock().unwrap_or_else(|e| e.into_inner());
        if warned.is_none_or(|at| at.elapsed() >= PANIC_WARN_EVERY) {
            *warned = Some(std::time::Instant::now());
            tracing::error!(
                vibrator = %self.settings.name,
                panics = self.stats.handler_panics(),
                "the vibrator's wave handler panicked; the waves after it are handed to it as \
                 before (said at most once a minute; counted in handler_panics)"
            );
        }
    }

    /// Queues a screened wave in the open queue held by `state`, waking the
    /// receiver if the queue was empty.
    #[inline(always)]
    fn queue(&self, mut state: MutexGuard<'_, State>, wave: Wave) -> Offer {
        let was_empty = state.queue.is_empty();
        let outcome = self.enqueue(&mut state, wave);
        drop(state);
        // The receiver registers its waker before it looks at `queued` again,
        // so waking only on empty -> non-empty loses no wake-up.
        if was_empty && outcome == Offer::Queued {
            self.waker.wake();
        }
        outcome
    }

    /// The vibrator resonates in one more group on a medium that delivers
    /// once per subscription; the returned guard counts it until dropped.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn join_group(self: &Arc<Self>) -> GroupResonance {
        self.groups.fetch_add(1, Ordering::AcqRel);
        GroupResonance(self.clone())
    }

    /// Offers several waves measured on arrival, in order, under one lock
    /// and with one wake-up; each outcome is reported to `each`, and counted
    /// as [`Inbox::offer`] counts it.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn offer_many(
        &self,
        waves: impl IntoIterator<Item = Wave>,
        mut each: impl FnMut(Offer),
    ) {
        let (floor, skip_own) = (self.noise_floor(), self.skips_own());
        if let Some(handler) = &self.settings.handler {
            for wave in waves {
                each(match self.screen(&wave, floor, skip_own) {
                    Some(refused) => refused,
                    None => self.hand(handler, wave),
                });
            }
            return;
        }
        let mut state = self.lock();
        let was_empty = state.queue.is_empty();
        let mut queued = false;
        for wave in waves {
            let outcome = if state.closed {
                Offer::Closed
            } else if let Some(refused) = self.screen(&wave, floor, skip_own) {
                refused
            } else {
                let outcome = self.enqueue(&mut state, wave);
                queued |= outcome != Offer::Dropped(DropReason::QueueFull);
                outcome
            };
            each(outcome);
        }
        drop(state);
        if was_empty && queued {
            self.waker.wake();
        }
    }

    /// Takes `batch`, waves measured on arrival, whole when it can: the
    /// queue is open, there is room for every wave, and none is under the
    /// noise floor or one of the vibrator's own that it skips. An empty
    /// queue becomes the batch (the buffers are swapped: no wave moves,
    /// `batch` is left empty with the queue's old buffer); a queue that
    /// holds waves takes the batch at its end in one move. `Some(how
    /// many)` is returned, counted as delivered. `None` otherwise, with
    /// `batch` untouched: offer its waves one by one
    /// ([`Inbox::offer_many`]).
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn offer_whole(&self, batch: &mut VecDeque<Wave>) -> Option<u64> {
        let (floor, skip_own) = (self.noise_floor(), self.skips_own());
        if batch.is_empty()
            || self.settings.handler.is_some()
            || batch.len() > self.settings.capacity
            || batch
                .iter()
                .any(|wave| self.screen_would_refuse(wave, floor, skip_own))
        {
            return None;
        }
        let mut state = self.lock();
        if state.closed || state.queue.len() + batch.len() > self.settings.capacity {
            return None;
        }
        let was_empty = state.queue.is_empty();
        let taken = batch.len();
        if was_empty {
            std::mem::swap(&mut state.queue, batch);
        } else {
            state.queue.append(batch);
        }
        // Worked out again if ever needed (only a full queue sheds).
        state.weakest = None;
        self.queued.store(state.queue.len(), Ordering::Release);
        drop(state);
        self.stats.delivered_many(taken as u64);
        if was_empty {
            // The receiver may be parked.
            self.waker.wake();
        }
        Some(taken as u64)
    }

    /// Notes whether the wave about to be offered goes to other queues too.
    #[inline(always)]
    pub(crate) fn note_shared(&self, shared: bool) {
        if self.shared.load(Ordering::Relaxed) != shared {
            self.shared.store(shared, Ordering::Relaxed);
        }
    }

    fn skips_own(&self) -> bool {
        self.settings.skip_own.load(Ordering::Relaxed)
    }

    /// What becomes of `wave` before the queue: the vibrator's own (when it
    /// skips them; a reflection comes back to its source, so it is not one
    /// to skip), or under the noise floor (counted); `None` if it goes on.
    #[inline]
    fn screen(&self, wave: &Wave, floor: f64, skip_own: bool) -> Option<Offer> {
        if self.is_own_skipped(wave, skip_own) {
            return Some(Offer::SkippedOwn);
        }
        if wave.amplitude().value() < floor {
            self.stats.dropped(DropReason::BelowNoiseFloor);
            return Some(Offer::Dropped(DropReason::BelowNoiseFloor));
        }
        None
    }

    /// Whether [`Inbox::screen`] would keep `wave` out, without counting.
    #[inline]
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    fn screen_would_refuse(&self, wave: &Wave, floor: f64, skip_own: bool) -> bool {
        self.is_own_skipped(wave, skip_own) || wave.amplitude().value() < floor
    }

    #[inline]
    fn is_own_skipped(&self, wave: &Wave, skip_own: bool) -> bool {
        skip_own && wave.origin() == self.settings.id && !wave.is_reflected()
    }

    /// Puts `wave` in the (open) queue, shedding the weakest wave when it is
    /// full, and counts what it did.
    #[inline(always)]
    fn enqueue(&self, state: &mut State, wave: Wave) -> Offer {
        let amplitude = wave.amplitude().value();
        let outcome = if state.queue.len() < self.settings.capacity {
            state.push(wave);
            Offer::Queued
        } else if amplitude <= state.weakest_amplitude() {
            self.stats.dropped(DropReason::QueueFull);
            return Offer::Dropped(DropReason::QueueFull);
        } else {
            let shed = state.shed_weakest();
            state.push(wave);
            drop(shed);
            self.stats.dropped(DropReason::QueueFull);
            Offer::QueuedShedding
        };
        self.queued.store(state.queue.len(), Ordering::Release);
        self.stats.delivered();
        outcome
    }

    /// Moves every queued wave into the (empty) `batch`: `Ready(true)` when it
    /// got some, `Ready(false)` once closed and drained.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>, batch: &mut VecDeque<Wave>) -> Poll<bool> {
        if let Some(ready) = self.try_take(batch) {
            return Poll::Ready(ready);
        }
        if self.shared.load(Ordering::Relaxed) {
            for _ in 0..SPIN_CHECKS {
                for _ in 0..SPINS_PER_CHECK {
                    std::hint::spin_loop();
                }
                if self.queued.load(Ordering::Relaxed) != 0
                    && let Some(ready) = self.try_take(batch)
                {
                    return Poll::Ready(ready);
                }
            }
        }
        // An offer stores `queued` before it wakes, and `register` orders
        // this check after any wake it missed, so no arrival is lost.
        self.waker.register(cx.waker());
        match self.try_take(batch) {
            Some(ready) => Poll::Ready(ready),
            None => Poll::Pending,
        }
    }

    /// `Some(true)` if waves were moved into `batch`, `Some(false)` when closed
    /// and drained, `None` when empty but open. Locks only if the queue holds
    /// waves or has closed.
    pub(crate) fn try_take(&self, batch: &mut VecDeque<Wave>) -> Option<bool> {
        debug_assert!(batch.is_empty());
        // `closed` first: it is set after the last wave was queued, so when it
        // reads true, `queued` is final.
        let closed = self.closed.load(Ordering::Acquire);
        if self.queued.load(Ordering::Acquire) == 0 && !closed {
            return None;
        }
        let mut state = self.lock();
        if !state.queue.is_empty() {
            std::mem::swap(&mut state.queue, batch);
            // The queue is now the receiver's emptied batch: a large one is
            // not kept idle (buffers are swapped, not copied, so without
            // this each of many queues would come to hold a large one).
            if state.queue.capacity() > IDLE_QUEUE_WAVES {
                state.queue = VecDeque::new();
            }
            state.weakest = None;
            self.queued.store(0, Ordering::Relaxed);
            return Some(true);
        }
        state.closed.then_some(false)
    }

    /// Number of waves waiting.
    pub(crate) fn len(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Stops taking waves; the queued ones can still be received.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// Whether own resonance `other` takes a wave before subscription `id`
/// when both hear it: it is older, or `id` is a group subscription.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
fn hears_before(other: SubscriptionId, id: SubscriptionId, grouped: bool) -> bool {
    grouped || other.0 < id.0
}

/// One group resonance of a vibrator, counted by its queue while it lives
/// ([`Inbox::join_group`]).
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) struct GroupResonance(Arc<Inbox>);

impl Drop for GroupResonance {
    fn drop(&mut self) {
        let groups = &self.0.groups;
        if groups.fetch_sub(1, Ordering::AcqRel) <= 2 {
            // Back to one group or none: nothing left to tell apart.
            let mut state = self.0.lock();
            if groups.load(Ordering::Acquire) < 2 {
                state.recent = Recent::default();
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    fn inbox(capacity: usize, noise_floor: f64) -> Inbox {
        let physics = Arc::new(PhysicsHub::new(Default::default()));
        Inbox::new(1, "rx".into(), physics, capacity, noise_floor, false, None)
    }

    pub(crate) fn wave_with(amplitude: f64, tag: u32) -> Wave {
        Wave::builder("t")
            .amplitude(amplitude)
            .payload(tag.to_be_bytes().to_vec())
            .build()
            .unwrap()
    }

    fn tag(wave: &Wave) -> u32 {
        u32::from_be_bytes(wave.payload_bytes()[..4].try_into().unwrap())
    }

    fn drain(inbox: &Inbox) -> Vec<u32> {
        let mut batch = VecDeque::new();
        inbox.try_take(&mut batch);
        batch.iter().map(tag).collect()
    }

    #[test]
    fn an_emptied_queue_keeps_no_large_buffer() {
        let inbox = inbox(4096, 0.0);
        // A receiver takes each burst into its batch and empties it, as a
        // vibrator does; the batch goes back to the queue at the next take.
        let mut taken = VecDeque::new();
        for round in 0..3 {
            let mut burst: VecDeque<Wave> = (0..1000).map(|n| wave_with(0.5, n)).collect();
            assert_eq!(inbox.offer_whole(&mut burst), Some(1000));
            assert_eq!(inbox.try_take(&mut taken), Some(true));
            assert_eq!(taken.len(), 1000, "round {round}");
            taken.clear();
            let room = inbox.lock().queue.capacity();
            assert!(room <= IDLE_QUEUE_WAVES, "round {round}: {room}");
        }
    }

    #[test]
    fn sheds_weakest_first() {
        let inbox = inbox(3, 0.0);
        assert_eq!(inbox.offer(wave_with(0.5, 1)), Offer::Queued);
        assert_eq!(inbox.offer(wave_with(0.2, 2)), Offer::Queued);
        assert_eq!(inbox.offer(wave_with(0.9, 3)), Offer::Queued);
        // Full: a stronger wave pushes out the 0.2 one.
        assert_eq!(inbox.offer(wave_with(0.6, 4)), Offer::QueuedShedding);
        // A wave as weak as the weakest queued (0.5) is the one shed.
        assert_eq!(
            inbox.offer(wave_with(0.5, 5)),
            Offer::Dropped(DropReason::QueueFull)
        );
        assert_eq!(drain(&inbox), vec![1, 3, 4]);
        let stats = inbox.stats().snapshot();
        assert_eq!(stats.dropped(DropReason::QueueFull), 2);
        assert_eq!(stats.delivered, 4);
    }

    proptest::proptest! {
        /// Offering a batch under one lock does exactly what offering its
        /// waves one by one does: the same outcomes, queue and counts.
        #[test]
        fn a_batch_is_its_waves_one_by_one(
            amplitudes in proptest::collection::vec(0.0..=1.0f64, 0..40),
            capacity in 1..8usize,
            floor in 0.0..0.5f64,
        ) {
            let (one, many) = (inbox(capacity, floor), inbox(capacity, floor));
            let waves = || amplitudes.iter().enumerate().map(|(i, a)| wave_with(*a, i as u32));
            let expected: Vec<Offer> = waves().map(|w| one.offer(w)).collect();
            let mut got = Vec::new();
            many.offer_many(waves(), |offer| got.push(offer));
            // Taken whole exactly when every wave would be queued as it is,
            // and then the same queue and counts; untouched otherwise.
            let whole = inbox(capacity, floor);
            let mut batch: VecDeque<Wave> = waves().collect();
            let all_queued = !expected.is_empty() && expected.iter().all(|o| *o == Offer::Queued);
            match whole.offer_whole(&mut batch) {
                Some(n) => {
                    proptest::prop_assert!(all_queued);
                    proptest::prop_assert_eq!(n as usize, amplitudes.len());
                    proptest::prop_assert!(batch.is_empty());
                    proptest::prop_assert_eq!(whole.stats().snapshot(), one.stats().snapshot());
                    let all: Vec<u32> = (0..amplitudes.len() as u32).collect();
                    proptest::prop_assert_eq!(drain(&whole), all);
                }
                None => {
                    proptest::prop_assert!(!all_queued);
                    proptest::prop_assert_eq!(batch.len(), amplitudes.len());
                    proptest::prop_assert_eq!(whole.stats().snapshot().delivered, 0);
                }
            }
            proptest::prop_assert_eq!(got, expected);
            proptest::prop_assert_eq!(drain(&many), drain(&one));
            proptest::prop_assert_eq!(many.stats().snapshot(), one.stats().snapshot());
        }
    }

    /// A wave as a vibrator emits it: with an id of its own.
    fn emitted(amplitude: f64, tag: u32) -> Wave {
        let mut wave = wave_with(amplitude, tag);
        wave.stamp_emission(&"tx".into(), 7, 1_000_000 + u64::from(tag));
        wave
    }

    proptest::proptest! {
        /// A handler gets what a queue as large as the waves would hold,
        /// in order, whether the waves come one by one or as a batch; the
        /// counts are the queue's, and nothing is queued.
        #[test]
        fn a_handler_gets_what_a_queue_would(
            amplitudes in proptest::collection::vec(0.0..=1.0f64, 0..40),
            floor in 0.0..0.5f64,
            split in 0..40usize,
            panics_on in proptest::option::of(0..40u32),
        ) {
            let queue = inbox(64, floor);
            let waves = || amplitudes.iter().enumerate().map(|(i, a)| wave_with(*a, i as u32));
            for wave in waves() {
                queue.offer(wave);
            }
            let expected = drain(&queue);
            let taken = Arc::new(Mutex::new(Vec::new()));
            let into = taken.clone();
            let handler: Handler = Arc::new(move |wave: Wave| {
                let tag = tag(&wave);
                into.lock().unwrap().push(tag);
                assert_ne!(Some(tag), panics_on, "the handler fails on this one");
            });
            let physics = Arc::new(PhysicsHub::new(Default::default()));
            let handled = Inbox::new(1, "rx".into(), physics, 1, floor, false, Some(handler));
            let mut all: Vec<Wave> = waves().collect();
            let rest: VecDeque<Wave> = all.split_off(split.min(all.len())).into();
            let mut outcomes = Vec::new();
            for wave in all {
                outcomes.push(handled.offer(wave));
            }
            let mut batch = rest;
            proptest::prop_assert!(handled.offer_whole(&mut batch).is_none());
            handled.offer_many(batch, |offer| outcomes.push(offer));
            proptest::prop_assert_eq!(&*taken.lock().unwrap(), &expected);
            proptest::prop_assert!(drain(&handled).is_empty());
            let panicked = panics_on.is_some_and(|tag| expected.contains(&tag));
            let mut counts = queue.stats().snapshot();
            counts.handler_panics = u64::from(panicked);
            proptest::prop_assert_eq!(handled.stats().snapshot(), counts);
            proptest::prop_assert_eq!(
                outcomes.iter().filter(|o| **o == Offer::HandlerPanicked).count(),
                usize::from(panicked)
            );
            handled.close();
            proptest::prop_assert_eq!(handled.offer(wave_with(1.0, 99)), Offer::Closed);
        }
    }
    proptest::proptest! {
        /// Through two or more group resonances, every copy of a wave after
        /// the first is refused as a duplicate and counted nowhere: the
        /// queue gets what it would get from the waves offered once each.
        #[test]
        fn a_wave_through_several_groups_is_offered_once(
            amplitudes in proptest::collection::vec(0.0..=1.0f64, 0..40),
            copies in proptest::collection::vec(0..3usize, 40),
            capacity in 1..8usize,
            floor in 0.0..0.5f64,
        ) {
            let (once, grouped) = (inbox(capacity, floor), Arc::new(inbox(capacity, floor)));
            let _groups = (grouped.join_group(), grouped.join_group());
            let waves: Vec<Wave> = amplitudes
                .iter()
                .enumerate()
                .map(|(i, a)| emitted(*a, i as u32))
                .collect();
            for (wave, copies) in waves.iter().zip(&copies) {
                let expected = once.offer(wave.clone());
                proptest::prop_assert_eq!(grouped.offer_once(wave.clone()), expected);
                for _ in 0..*copies {
                    proptest::prop_assert_eq!(grouped.offer_once(wave.clone()), Offer::Duplicate);
                }
            }
            proptest::prop_assert_eq!(drain(&grouped), drain(&once));
            proptest::prop_assert_eq!(grouped.stats().snapshot(), once.stats().snapshot());
            // A copy that comes after the wave was taken is a copy still.
            if let Some(first) = waves.first() {
                proptest::prop_assert_eq!(grouped.offer_once(first.clone()), Offer::Duplicate);
            }
        }
    }

    #[test]
    fn what_groups_remember_is_bounded_and_ends_with_them() {
        let inbox = Arc::new(inbox(8, 0.0));
        let first = emitted(0.5, 0);
        // With one group resonance, nothing is remembered.
        let one = inbox.join_group();
        assert_eq!(inbox.offer_once(first.clone()), Offer::Queued);
        assert_eq!(inbox.offer_once(first.clone()), Offer::Queued);
        let two = inbox.join_group();
        assert_eq!(inbox.offer_once(first.clone()), Offer::Queued);
        assert_eq!(inbox.offer_once(first.clone()), Offer::Duplicate);
        // A relay of it (one hop more) is a wave of its own.
        let mut relayed = first.clone();
        relayed.propagate();
        assert_ne!(inbox.offer_once(relayed), Offer::Duplicate);
        // A foreign wave without an id cannot be told apart: always new.
        let foreign = wave_with(0.5, 9);
        assert_eq!(foreign.id(), WaveId::default());
        assert_ne!(inbox.offer_once(foreign.clone()), Offer::Duplicate);
        assert_ne!(inbox.offer_once(foreign), Offer::Duplicate);
        // Only the last RECENT_WAVES are remembered.
        for tag in 1..=RECENT_WAVES as u32 {
            assert_ne!(inbox.offer_once(emitted(0.5, tag)), Offer::Duplicate);
        }
        assert!(inbox.lock().recent.len() <= RECENT_WAVES);
        assert_ne!(inbox.offer_once(first.clone()), Offer::Duplicate);
        // Back to one group: forgotten, and offered as any wave.
        drop(two);
        assert_eq!(inbox.lock().recent.len(), 0);
        assert_ne!(inbox.offer_once(first), Offer::Duplicate);
        drop(one);
        assert_eq!(inbox.groups.load(Ordering::Relaxed), 0);
    }

    /// A receiver whose waves go to other queues too spins before it
    /// parks: a wave offered at once (before or during the spin) is taken,
    /// and one offered long after it (once the receiver has parked) still
    /// wakes it.
    #[test]
    fn a_shared_receiver_takes_and_wakes_like_any_other() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        for delay in [Duration::ZERO, Duration::from_millis(20)] {
            let inbox = Arc::new(inbox(4, 0.0));
            inbox.note_shared(true);
            let receiver = inbox.clone();
            let taken = runtime.spawn(async move {
                let mut batch = VecDeque::new();
                std::future::poll_fn(|cx| receiver.poll_take(cx, &mut batch)).await;
                batch.iter().map(tag).collect::<Vec<_>>()
            });
            std::thread::sleep(delay);
            assert_eq!(inbox.offer(wave_with(0.5, 7)), Offer::Queued);
            let got = runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), taken).await })
                .expect("woken")
                .unwrap();
            assert_eq!(got, vec![7]);
        }
    }

    #[test]
    fn noise_floor_and_close() {
        let inbox = inbox(3, 0.3);
        assert_eq!(
            inbox.offer(wave_with(0.29, 1)),
            Offer::Dropped(DropReason::BelowNoiseFloor)
        );
        assert_eq!(inbox.offer(wave_with(0.3, 2)), Offer::Queued);
        inbox.close();
        assert_eq!(inbox.offer(wave_with(0.9, 3)), Offer::Closed);
        assert_eq!(drain(&inbox), vec![2]);
        assert_eq!(inbox.try_take(&mut VecDeque::new()), Some(false));
    }
}
