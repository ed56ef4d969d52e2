//! The physics engine on the bus: each aether's deliveries, observed off the
//! emit and receive paths by an engine thread of its own.
//!
//! - **Lazy.** Nothing is observed until someone asks for the engine's
//!   results ([`Aether::physics`](crate::Aether::physics), or a follower).
//!   Until then a delivery costs one relaxed atomic load.
//! - **Observed at delivery.** Once active, every wave put in a receive queue
//!   (`medium::offer_counted`, on both mediums) is observed with the name of
//!   the vibrator that got it: a clone of the wave and that name go into one
//!   of a few batch buffers, picked by a per-thread index so that emitting
//!   threads rarely meet on a lock. Reflections are not observed.
//! - **An engine thread.** A `std::thread` (never a tokio worker) wakes every
//!   10 ms, swaps the buffers out and feeds
//!   [`detect`](super::PhysicsEngine::detect) (interference; one wave heard
//!   by several resonators counts once) and
//!   [`observe_delivery`](super::PhysicsEngine::observe_delivery) (the
//!   resonance graph). Waves on the bus's own channels
//!   ([`Channel::is_system`](crate::Channel::is_system): presence, digests
//!   and reports, steady by design) make the graph but are not looked at
//!   for interference. It ends when the aether is closed or dropped.
//! - **Bounded.** Each buffer holds a bounded number of waves: when full,
//!   deliveries are not observed and are counted (`dropped_buffer_full`).
//!   The engine observes at most `physics.max_waves_per_s`: past that budget
//!   it skips whole batches, counted (`skipped_over_budget`). Nothing here
//!   ever blocks an emitter or grows without bound.

use std::{
    cell::Cell,
    fmt,
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crossbeam_utils::CachePadded;
use smol_str::SmolStr;
use tokio::sync::broadcast;

use super::{InterferenceEvent, InterferencePattern, PhysicsConfig, PhysicsEngine, ResonanceEdge};
use crate::Wave;

/// Batch buffers; a power of two.
const SHARDS: usize = 8;
/// How often the engine thread takes the buffers.
const TICK: Duration = Duration::from_millis(10);
/// How often the engine drops what has expired when traffic stops.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// One delivery: the wave and who heard it.
struct Observation {
    wave: Wave,
    resonator: SmolStr,
}

/// One batch buffer.
pub(crate) struct Shard {
    buffer: Mutex<Vec<Observation>>,
    /// Set when the buffer is at capacity, cleared when the engine takes it:
    /// a delivery reads it before cloning anything.
    full: AtomicBool,
    /// Deliveries not observed because the buffer was full.
    dropped: AtomicU64,
}

impl Shard {
    /// Whether a delivery now would be kept (read without the lock).
    #[inline]
    pub(crate) fn has_room(&self) -> bool {
        !self.full.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Observation>> {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An aether's physics: the buffers deliveries are observed into, the engine
/// and its thread, the followers' channel and the counters.
pub(crate) struct PhysicsHub {
    /// Read on every delivery; written once when the engine starts and once
    /// when it stops.
    active: CachePadded<AtomicBool>,
    shards: Box<[CachePadded<Shard>]>,
    shard_capacity: usize,
    config: PhysicsConfig,
    engine: Mutex<PhysicsEngine>,
    control: Mutex<Control>,
    wake: Condvar,
    running: AtomicBool,
    observed: AtomicU64,
    skipped: AtomicU64,
    lagged: AtomicU64,
    /// Nanoseconds the engine thread spent working.
    busy_ns: AtomicU64,
    /// Events reported, by pattern: constructive, cancellation, standing.
    patterns: [AtomicU64; 3],
}

#[derive(Default)]
struct Control {
    started: bool,
    stopped: bool,
    /// Where followers subscribe; taken when the engine stops, so that they
    /// end once the thread (which holds the other sender) is gone.
    events: Option<broadcast::Sender<Arc<InterferenceEvent>>>,
}

impl PhysicsHub {
    /// An inactive hub with `config` (validated with the aether's).
    pub(crate) fn new(config: PhysicsConfig) -> Self {
        // Each buffer holds two ticks of the whole budget, so one busy thread
        // can feed the engine all it may observe.
        let per_tick = config.max_waves_per_s / (1000 / TICK.as_millis() as u64);
        let shard_capacity = usize::try_from(per_tick.saturating_mul(2))
            .unwrap_or(usize::MAX)
            .clamp(64, 1 << 20);
        let engine =
            PhysicsEngine::with_config(config.clone()).unwrap_or_else(|_| PhysicsEngine::new());
        Self {
            active: CachePadded::new(AtomicBool::new(false)),
            shards: (0..SHARDS)
                .map(|_| {
                    CachePadded::new(Shard {
                        buffer: Mutex::new(Vec::new()),
                        full: AtomicBool::new(false),
                        dropped: AtomicU64::new(0),
                    })
                })
                .collect(),
            shard_capacity,
            config,
            engine: Mutex::new(engine),
            control: Mutex::new(Control::default()),
            wake: Condvar::new(),
            running: AtomicBool::new(false),
            observed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            lagged: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            patterns: Default::default(),
        }
    }

    /// Whether deliveries are observed: one relaxed load.
    #[inline]
    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// The buffer of the calling thread.
    #[inline]
    pub(crate) fn shard(&self) -> &Shard {
        &self.shards[thread_index() & (SHARDS - 1)]
    }

    /// Records a delivery to `resonator` in `shard`: `wave` is its copy, or
    /// `None` if the buffer was full when the delivery began (counted).
    pub(crate) fn record(&self, shard: &Shard, wave: Option<Wave>, resonator: &SmolStr) {
        let Some(wave) = wave else {
            shard.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut buffer = shard.lock();
        if buffer.len() >= self.shard_capacity {
            drop(buffer);
            shard.full.store(true, Ordering::Relaxed);
            shard.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        buffer.push(Observation {
            wave,
            resonator: resonator.clone(),
        });
        if buffer.len() >= self.shard_capacity {
            shard.full.store(true, Ordering::Relaxed);
        }
    }

    fn lock_control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_engine(&self) -> MutexGuard<'_, PhysicsEngine> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the engine thread and observing, once; not after a stop.
    pub(crate) fn activate(self: &Arc<Self>) {
        if self.is_active() {
            return;
        }
        let mut control = self.lock_control();
        if control.started || control.stopped {
            return;
        }
        let (events, _) = broadcast::channel(self.config.follower_buffer);
        let hub = self.clone();
        let sender = events.clone();
        self.running.store(true, Ordering::Release);
        let spawned = thread::Builder::new()
            .name("aether-physics".into())
            .spawn(move || run(&hub, &sender));
        match spawned {
            Ok(_) => {
                control.started = true;
                control.events = Some(events);
                self.active.store(true, Ordering::Release);
            }
            Err(error) => {
                self.running.store(false, Ordering::Release);
                tracing::warn!(%error, "could not start the physics engine thread; physics stays off");
            }
        }
    }

    /// Stops observing and ends the engine thread (the aether was closed or
    /// dropped). Followers end once the thread is gone.
    pub(crate) fn stop(&self) {
        self.active.store(false, Ordering::Release);
        let mut control = self.lock_control();
        control.stopped = true;
        control.events = None;
        drop(control);
        self.wake.notify_all();
    }

    /// Waits one tick; `true` once stopped.
    fn wait_tick(&self) -> bool {
        let control = self.lock_control();
        let (control, _) = self
            .wake
            .wait_timeout_while(control, TICK, |c| !c.stopped)
            .unwrap_or_else(|e| e.into_inner());
        control.stopped
    }

    /// Every interference event from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<InterferenceEvent>> {
        match &self.lock_control().events {
            Some(events) => events.subscribe(),
            // Stopped (or never started): a receiver that ends at once.
            None => broadcast::channel(1).1,
        }
    }

    fn count_pattern(&self, pattern: InterferencePattern) {
        self.patterns[pattern_index(pattern)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_lagged(&self, n: u64) {
        self.lagged.fetch_add(n, Ordering::Relaxed);
    }

    /// Feeds one batch to the engine and sends what it finds. While nobody
    /// follows, only the patterns are counted: the waves involved are not
    /// gathered (in a flood of one key, that is most of the engine's work).
    fn feed(&self, batch: &[Observation], events: &broadcast::Sender<Arc<InterferenceEvent>>) {
        let now = crate::wave::clock::bus_now();
        let followed = events.receiver_count() > 0;
        let mut engine = self.lock_engine();
        for Observation { wave, resonator } in batch {
            // The bus's own channels beat steadily by design (presence,
            // digests, reports): not faults, so not looked at for
            // interference; their deliveries still make the graph.
            let interferes = !wave.channel().is_system();
            if interferes && followed {
                if let Some(event) = engine.detect(wave) {
                    self.count_pattern(event.pattern);
                    // A follower may have gone meanwhile: fine.
                    let _ = events.send(Arc::new(event));
                }
            } else if interferes {
                let on = engine.correlated_on(wave);
                if let Some(pattern) = engine.detect_patterns(on.as_str(), wave) {
                    self.count_pattern(pattern);
                }
            }
            if let Some(source) = wave.source() {
                let at = wave.emitted_at().unwrap_or(now);
                engine.observe_delivery(source, resonator, wave.channel(), wave.amplitude(), at);
            }
        }
        self.observed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
}

/// The engine thread: takes the buffers every tick and feeds the engine
/// within the budget, until stopped.
fn run(hub: &PhysicsHub, events: &broadcast::Sender<Arc<InterferenceEvent>>) {
    let rate = hub.config.max_waves_per_s as f64;
    // A token bucket that holds one full buffer: a batch is observed whole
    // or skipped whole.
    let burst = hub.shard_capacity as f64;
    let mut tokens = burst;
    let mut last = Instant::now();
    let mut last_expire = last;
    let mut batch = Vec::new();
    while !hub.wait_tick() {
        let now = Instant::now();
        tokens = (tokens + rate * now.duration_since(last).as_secs_f64()).min(burst);
        last = now;
        for shard in hub.shards.iter() {
            {
                let mut buffer = shard.lock();
                std::mem::swap(&mut *buffer, &mut batch);
                shard.full.store(false, Ordering::Relaxed);
            }
            if batch.is_empty() {
                continue;
            }
            let n = batch.len() as f64;
            if tokens >= n {
                tokens -= n;
                hub.feed(&batch, events);
            } else {
                hub.skipped.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            batch.clear();
        }
        if now.duration_since(last_expire) >= EXPIRE_EVERY {
            hub.lock_engine().expire(crate::wave::clock::bus_now());
            last_expire = now;
        }
        let busy = u64::try_from(now.elapsed().as_nanos()).unwrap_or(u64::MAX);
        hub.busy_ns.fetch_add(busy, Ordering::Relaxed);
    }
    for shard in hub.shards.iter() {
        shard.lock().clear();
    }
    hub.running.store(false, Ordering::Release);
}

fn pattern_index(pattern: InterferencePattern) -> usize {
    match pattern {
        InterferencePattern::Constructive => 0,
        InterferencePattern::Cancellation => 1,
        InterferencePattern::StandingWave => 2,
    }
}

/// A small number per thread, to spread threads over the buffers.
#[inline]
fn thread_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    INDEX.with(|index| {
        let mut i = index.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Ordering::Relaxed);
            index.set(i);
        }
        i
    })
}

/// An aether's physics engine at work on the bus: [`Aether::physics`].
///
/// A cheap, cloneable handle. Over the embedded medium the engine sees every
/// wave delivered in the process; over NATS, each aether's engine sees the
/// waves its own vibrators receive (a gateway that resonates on `*` sees
/// them all).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use aether_core::{Aether, InterferencePattern, Phase, Vibrator, Wave};
///
/// let aether = Aether::default();
/// let physics = aether.physics(); // the engine starts here
/// let mut events = physics.events();
///
/// let mut inventory = Vibrator::create("inventory", &aether).await?;
/// inventory.resonate_on("orders.*").await?;
/// let shop = Vibrator::create("shop", &aether).await?;
/// for phase in [Phase::ASSERT, Phase::RETRACT] {
///     let wave = Wave::builder("orders.review").correlation_key("order-42").phase(phase);
///     shop.emit(wave.build()?).await?;
/// }
///
/// let event = events.next().await.unwrap();
/// assert_eq!(event.pattern, InterferencePattern::Cancellation);
/// assert_eq!(event.correlation_key, "order-42");
/// let edge = &physics.edges()[0];
/// assert_eq!((edge.emitter.as_str(), edge.resonator.as_str()), ("shop", "inventory"));
/// # Ok(()) }
/// ```
///
/// [`Aether::physics`]: crate::Aether::physics
#[derive(Clone)]
pub struct Physics {
    pub(super) hub: Arc<PhysicsHub>,
}

impl Physics {
    pub(crate) fn new(hub: Arc<PhysicsHub>) -> Self {
        Self { hub }
    }

    /// The resonance graph now: emitter → resonator edges by channel, with
    /// their rates decayed to now, busiest first. A delivery shows here
    /// within a few milliseconds (the engine takes its buffers every 10 ms).
    pub fn edges(&self) -> Vec<ResonanceEdge> {
        self.hub
            .lock_engine()
            .resonance()
            .edges_at(crate::wave::clock::bus_now())
    }

    /// What the engine did so far, read without locks.
    pub fn stats(&self) -> PhysicsStats {
        let hub = &*self.hub;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PhysicsStats {
            running: self.is_running(),
            observed: load(&hub.observed),
            skipped_over_budget: load(&hub.skipped),
            dropped_buffer_full: hub.shards.iter().map(|s| load(&s.dropped)).sum(),
            lagged: load(&hub.lagged),
            busy: Duration::from_nanos(load(&hub.busy_ns)),
            constructive: load(&hub.patterns[0]),
            cancellations: load(&hub.patterns[1]),
            standing_waves: load(&hub.patterns[2]),
        }
    }

    /// Whether the engine thread runs: from the first call of
    /// [`Aether::physics`](crate::Aether::physics) until the aether is closed
    /// or dropped.
    pub fn is_running(&self) -> bool {
        self.hub.running.load(Ordering::Acquire)
    }

    /// The settings it runs with.
    pub fn config(&self) -> &PhysicsConfig {
        &self.hub.config
    }
}

impl fmt::Debug for Physics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Physics")
            .field("running", &self.is_running())
            .field("stats", &self.stats())
            .finish()
    }
}

/// What an aether's physics engine did so far: [`Physics::stats`].
///
/// Every delivery made while the engine runs is `observed`,
/// `skipped_over_budget` or `dropped_buffer_full` (reflections are not
/// observed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PhysicsStats {
    /// Whether the engine thread runs.
    pub running: bool,
    /// Deliveries fed to the engine.
    pub observed: u64,
    /// Deliveries skipped, in whole batches, because the engine was over its
    /// budget (`physics.max_waves_per_s`).
    pub skipped_over_budget: u64,
    /// Deliveries not observed because the batch buffers were full (the
    /// engine fell behind).
    pub dropped_buffer_full: u64,
    /// Events that followers missed because they fell behind.
    pub lagged: u64,
    /// Time the engine thread spent working (taking the buffers, detecting,
    /// dropping what it observed): its share of a core.
    pub busy: Duration,
    /// Constructive interference events reported.
    pub constructive: u64,
    /// Cancellation events reported.
    pub cancellations: u64,
    /// Standing-wave events reported.
    pub standing_waves: u64,
}

impl PhysicsStats {
    /// Events reported with `pattern`.
    pub fn events(&self, pattern: InterferencePattern) -> u64 {
        match pattern {
            InterferencePattern::Constructive => self.constructive,
            InterferencePattern::Cancellation => self.cancellations,
            InterferencePattern::StandingWave => self.standing_waves,
        }
    }

    /// Events reported, every pattern.
    pub fn events_total(&self) -> u64 {
        self.constructive + self.cancellations + self.standing_waves
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Aether, Vibrator};

    fn wave(n: u32) -> Wave {
        Wave::builder("t")
            .payload(n.to_be_bytes().to_vec())
            .build()
            .unwrap()
    }

    /// Heartbeats on the bus's own channels recur at a steady period by
    /// design: they make the resonance graph, never an interference event;
    /// the same beat on a user's channel is a standing wave.
    #[test]
    fn the_bus_own_channels_make_no_interference() {
        let hub = PhysicsHub::new(PhysicsConfig::default());
        let (events, mut followed) = broadcast::channel(16);
        let beat = |channel: &str, n: u64| Observation {
            wave: crate::wire::Parts {
                id: u128::from(n) + 1,
                emitted_at_ns: 1_700_000_000_000_000_000 + n * 100_000_000,
                source: Some("replica-1".into()),
                payload: bytes::Bytes::from_static(b"alive"),
                ..Default::default()
            }
            .into_wave(crate::Channel::new(channel))
            .unwrap(),
            resonator: SmolStr::new("peer"),
        };
        let system: Vec<_> = (0..8).map(|n| beat("_state.board.p", n)).collect();
        hub.feed(&system, &events);
        assert_eq!(
            hub.patterns.each_ref().map(|n| n.load(Ordering::Relaxed)),
            [0; 3]
        );
        assert!(followed.try_recv().is_err());
        assert_eq!(hub.lock_engine().edges().len(), 1);
        let user: Vec<_> = (0..8).map(|n| beat("board.beat", 100 + n)).collect();
        hub.feed(&user, &events);
        let standing =
            hub.patterns[pattern_index(InterferencePattern::StandingWave)].load(Ordering::Relaxed);
        assert!(standing > 0);
        let event = followed.try_recv().expect("a standing wave");
        assert_eq!(event.channel.as_str(), "board.beat");
    }

    #[test]
    fn buffers_stay_bounded_when_the_engine_is_stalled() {
        // Never started: nobody takes the buffers, as with a stalled engine.
        let hub = PhysicsHub::new(PhysicsConfig {
            max_waves_per_s: 1000,
            ..Default::default()
        });
        assert_eq!(hub.shard_capacity, 64);
        let name = SmolStr::new("rx");
        let shard = hub.shard();
        for n in 0..10_000 {
            let copy = shard.has_room().then(|| wave(n));
            hub.record(shard, copy, &name);
        }
        assert_eq!(shard.lock().len(), 64);
        assert!(!shard.has_room());
        let stats = Physics::new(Arc::new(hub)).stats();
        assert_eq!(stats.dropped_buffer_full, 10_000 - 64);
        assert_eq!(stats.observed, 0);
    }

    #[tokio::test]
    async fn the_engine_thread_ends_with_the_aether() {
        let aether = Aether::default();
        let physics = aether.physics();
        assert!(physics.is_running());
        let weak = Arc::downgrade(&physics.hub);
        let mut rx = Vibrator::create("rx", &aether).await.unwrap();
        rx.resonate_on("t").await.unwrap();
        let tx = Vibrator::create("tx", &aether).await.unwrap();
        tx.emit(wave(1)).await.unwrap();
        drop((rx, tx, aether));
        let deadline = Instant::now() + Duration::from_secs(5);
        while physics.is_running() {
            assert!(Instant::now() < deadline, "the engine thread still runs");
            thread::sleep(Duration::from_millis(2));
        }
        // The thread lets go of the hub as it ends (just after it says it
        // no longer runs): then nothing keeps it.
        drop(physics);
        while weak.upgrade().is_some() {
            assert!(Instant::now() < deadline, "the engine thread keeps the hub");
            thread::sleep(Duration::from_millis(2));
        }
    }

    #[tokio::test]
    async fn closing_ends_the_engine_and_its_followers() {
        let aether = Aether::default();
        let physics = aether.physics();
        let mut events = physics.events();
        aether.close();
        let ended = tokio::time::timeout(Duration::from_secs(5), events.next()).await;
        assert_eq!(ended.expect("followers end"), None);
        assert!(!physics.is_running());
        assert!(!aether.physics().is_running(), "not started again");
    }

    #[tokio::test]
    async fn over_budget_batches_are_skipped_and_counted() {
        let aether = Aether::new(crate::AetherConfig {
            physics: PhysicsConfig {
                max_waves_per_s: 1,
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
        let physics = aether.physics();
        let mut rx = Vibrator::builder("rx")
            .queue_capacity(10_000)
            .create(&aether)
            .await
            .unwrap();
        rx.resonate_on("t").await.unwrap();
        let tx = Vibrator::create("tx", &aether).await.unwrap();
        // The bucket holds 64 tokens and refills one a second: the first
        // batch of 64 passes, the rest is skipped or dropped.
        for round in 0..20u32 {
            for n in 0..64 {
                tx.emit(wave(round * 64 + n)).await.unwrap();
            }
            tokio::time::sleep(TICK * 2).await;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stats = physics.stats();
            let accounted = stats.observed + stats.skipped_over_budget + stats.dropped_buffer_full;
            if accounted == 20 * 64 {
                assert!(stats.observed <= 128, "{stats:?}");
                assert!(stats.skipped_over_budget > 0, "{stats:?}");
                break;
            }
            assert!(Instant::now() < deadline, "{stats:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
