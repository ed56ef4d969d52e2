//! Metrics read at scrape time: the aether's statistics, the observer's
//! drops, the physics engine, the connection, the process and the
//! allocator. Their sources keep monotonic counters of their own; a
//! scrape brings the Prometheus counters up to them.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use aether_core::{
    Aether, ConnectionState, DropReason, InterferencePattern, Physics, StatsSnapshot,
};
use aether_ops::resources::ResourceUsage;
use prometheus::{
    GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};

use crate::{allocator, family::family_of};

/// Where the scrape-time metrics come from.
pub(crate) struct Sources {
    /// The gateway's aether.
    pub(crate) aether: Aether,
    /// Its physics engine, when the gateway runs it.
    pub(crate) physics: Option<Physics>,
    /// The observer vibrator's statistics, copied by the observer.
    pub(crate) observer: Arc<Mutex<StatsSnapshot>>,
    /// Panics counted by the panic hook, if the program installed it.
    pub(crate) panics: Option<Arc<AtomicU64>>,
    /// Resonance edges exported with their rate.
    pub(crate) top_edges: usize,
    /// Tokens of a channel family.
    pub(crate) family_depth: usize,
    /// Interference events of earlier runs, by pattern (in [`PATTERNS`]'
    /// order), restored from the journal: the engine's counts start at 0.
    pub(crate) events_before: Arc<[AtomicU64; 3]>,
}

/// The physics engine's events by pattern, those of earlier runs added.
pub(crate) fn engine_events(
    physics: &Physics,
    before: &[AtomicU64; 3],
) -> [(&'static str, u64); 3] {
    let stats = physics.stats();
    let mut i = 0;
    PATTERNS.map(|(pattern, name)| {
        let n = stats.events(pattern) + before[i].load(Ordering::Relaxed);
        i += 1;
        (name, n)
    })
}

const CONNECTION_STATES: [ConnectionState; 4] = [
    ConnectionState::Embedded,
    ConnectionState::Connected,
    ConnectionState::Disconnected,
    ConnectionState::Closed,
];

pub(crate) const PATTERNS: [(InterferencePattern, &str); 3] = [
    (InterferencePattern::Constructive, "constructive"),
    (InterferencePattern::Cancellation, "cancellation"),
    (InterferencePattern::StandingWave, "standing_wave"),
];

/// `name` as the pattern label it is, if it is one (a journal is read
/// back as data, not trusted).
pub(crate) fn known_pattern(name: &str) -> Option<&'static str> {
    PATTERNS.iter().find(|(_, n)| *n == name).map(|(_, n)| *n)
}

/// The name of an interference pattern, as a label and on the dashboard.
pub(crate) fn pattern_name(pattern: InterferencePattern) -> &'static str {
    PATTERNS
        .iter()
        .find(|(p, _)| *p == pattern)
        .map_or("other", |(_, name)| name)
}

struct Bus {
    emitted: IntCounter,
    delivered: IntCounter,
    unrouted: IntCounter,
    diffracted: IntCounter,
    reflected: IntCounter,
    rate_limited: IntCounter,
    retries: IntCounter,
    timeouts: IntCounter,
    breaker_opens: IntCounter,
    breaker_rejections: IntCounter,
    dropped: IntCounterVec,
    observer_dropped: IntCounterVec,
}

struct PhysicsMetrics {
    physics: Physics,
    events: IntCounterVec,
    observed: IntCounter,
    skipped: IntCounterVec,
    lagged: IntCounter,
    edges: IntGauge,
    edge_rate: GaugeVec,
}

struct Connection {
    state: IntGaugeVec,
    reconnects: IntCounter,
    disconnects: IntCounter,
    slow_consumer: IntCounter,
    malformed: IntCounter,
    outbox: IntGauge,
    outbox_capacity: IntGauge,
    flushed: IntCounter,
    frames_sent: IntCounter,
    waves_framed: IntCounter,
    frames_received: IntCounter,
}

struct Process {
    rss: IntGauge,
    vms: IntGauge,
    threads: IntGauge,
    open_fds: IntGauge,
}

struct Allocator {
    allocations: IntCounter,
    deallocations: IntCounter,
    reallocations: IntCounter,
    allocated: IntCounter,
    freed: IntCounter,
    live: IntGauge,
}

/// The collector registered in the gateway's registry.
pub(crate) struct ScrapeCollector {
    sources: Sources,
    bus: Bus,
    physics: Option<PhysicsMetrics>,
    connection: Connection,
    process: Option<Process>,
    allocator: Option<Allocator>,
    panics: Option<IntCounter>,
    /// Every metric above, to describe and gather them.
    parts: Vec<Box<dyn Collector>>,
    /// One scrape at a time: each brings the counters up to their sources.
    scraping: Mutex<()>,
}

/// Makes metrics and remembers them in `parts`.
struct Maker<'a>(&'a mut Vec<Box<dyn Collector>>);

impl Maker<'_> {
    fn counter(&mut self, name: &str, help: &str) -> prometheus::Result<IntCounter> {
        let metric = IntCounter::new(name, help)?;
        self.0.push(Box::new(metric.clone()));
        Ok(metric)
    }

    fn counters(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        let metric = IntCounterVec::new(Opts::new(name, help), &[label])?;
        // Every value of a fixed set is shown from the start, at 0.
        for value in values {
            metric.with_label_values(&[value]);
        }
        self.0.push(Box::new(metric.clone()));
        Ok(metric)
    }

    fn gauge(&mut self, name: &str, help: &str) -> prometheus::Result<IntGauge> {
        let metric = IntGauge::new(name, help)?;
        self.0.push(Box::new(metric.clone()));
        Ok(metric)
    }
}

impl ScrapeCollector {
    pub(crate) fn new(sources: Sources) -> prometheus::Result<Self> {
        let mut parts: Vec<Box<dyn Collector>> = Vec::new();
        let mut m = Maker(&mut parts);
        let reasons: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        let bus = Bus {
            emitted: m.counter(
                "aether_waves_emitted_total",
                "Waves accepted for emission by the gateway's aether (reflections included).",
            )?,
            delivered: m.counter(
                "aether_waves_delivered_total",
                "Waves the gateway's aether put in receive queues, once per receiver.",
            )?,
            unrouted: m.counter(
                "aether_waves_unrouted_total",
                "Waves of the gateway's aether that no vibrator resonated on.",
            )?,
            diffracted: m.counter(
                "aether_waves_diffracted_total",
                "Bends of diffracting waves to a parent channel, one per level.",
            )?,
            reflected: m.counter(
                "aether_waves_reflected_total",
                "Reflections sent back to their source by the gateway's aether.",
            )?,
            rate_limited: m.counter(
                "aether_emits_rate_limited_total",
                "Emits refused because a vibrator of the gateway's aether was over its rate limit.",
            )?,
            retries: m.counter(
                "aether_reliability_retries_total",
                "Retries made by reliability policies on the gateway's aether.",
            )?,
            timeouts: m.counter(
                "aether_reliability_timeouts_total",
                "Tries of reliability policies on the gateway's aether that timed out.",
            )?,
            breaker_opens: m.counter(
                "aether_reliability_breaker_opens_total",
                "Times a circuit breaker on the gateway's aether opened.",
            )?,
            breaker_rejections: m.counter(
                "aether_reliability_breaker_rejections_total",
                "Calls failed at once by an open circuit breaker on the gateway's aether.",
            )?,
            dropped: m.counters(
                "aether_waves_dropped_total",
                "Waves the gateway's aether did not deliver, by reason.",
                "reason",
                &reasons,
            )?,
            observer_dropped: m.counters(
                "aether_gateway_observer_dropped_total",
                "Waves the gateway's observer did not get, by reason (queue_full: it fell \
                 behind and its bounded queue shed the weakest waves).",
                "reason",
                &reasons,
            )?,
        };
        let physics = match &sources.physics {
            None => None,
            Some(physics) => Some(PhysicsMetrics {
                physics: physics.clone(),
                events: m.counters(
                    "aether_interference_events_total",
                    "Interference events the physics engine reported, by pattern.",
                    "pattern",
                    &PATTERNS.map(|(_, name)| name),
                )?,
                observed: m.counter(
                    "aether_physics_observed_total",
                    "Deliveries the physics engine observed.",
                )?,
                skipped: m.counters(
                    "aether_physics_skipped_total",
                    "Deliveries the physics engine did not observe, by reason (over_budget: \
                     past max_waves_per_s; buffer_full: it fell behind).",
                    "reason",
                    &["over_budget", "buffer_full"],
                )?,
                lagged: m.counter(
                    "aether_physics_events_lagged_total",
                    "Interference events that followers missed because they fell behind.",
                )?,
                edges: m.gauge(
                    "aether_resonance_edges",
                    "Edges of the resonance graph (emitter, resonator, channel).",
                )?,
                edge_rate: {
                    let metric = GaugeVec::new(
                        Opts::new(
                            "aether_resonance_edge_deliveries_per_second",
                            "Deliveries per second (exponentially decayed) of the busiest \
                             resonance edges, by emitter, resonator and channel family.",
                        ),
                        &["emitter", "resonator", "family"],
                    )?;
                    m.0.push(Box::new(metric.clone()));
                    metric
                },
            }),
        };
        let states: Vec<&str> = CONNECTION_STATES.iter().map(|s| s.as_str()).collect();
        let connection = Connection {
            state: {
                let metric = IntGaugeVec::new(
                    Opts::new(
                        "aether_nats_connection_state",
                        "The connection to the medium: 1 for the state it is in \
                         (embedded, connected, disconnected, closed), 0 for the others.",
                    ),
                    &["state"],
                )?;
                for state in &states {
                    metric.with_label_values(&[state]);
                }
                m.0.push(Box::new(metric.clone()));
                metric
            },
            reconnects: m.counter(
                "aether_nats_reconnects_total",
                "Times the NATS connection was established again after a loss.",
            )?,
            disconnects: m.counter(
                "aether_nats_disconnects_total",
                "Times the NATS connection was lost.",
            )?,
            slow_consumer: m.counter(
                "aether_nats_slow_consumer_events_total",
                "Messages the NATS client dropped because a subscription's buffer was full.",
            )?,
            malformed: m.counter(
                "aether_nats_malformed_messages_total",
                "Messages that arrived from NATS but were not valid waves, refused.",
            )?,
            outbox: m.gauge(
                "aether_nats_outbox_waves",
                "Waves waiting in the outbox for the NATS connection to come back.",
            )?,
            outbox_capacity: m.gauge(
                "aether_nats_outbox_capacity_waves",
                "Most waves the outbox holds (nats.outbox_capacity; 0 on the embedded medium).",
            )?,
            flushed: m.counter(
                "aether_nats_outbox_flushed_total",
                "Waves sent from the outbox after reconnects.",
            )?,
            frames_sent: m.counter(
                "aether_nats_frames_sent_total",
                "Batch frames published: NATS messages that carried several waves.",
            )?,
            waves_framed: m.counter(
                "aether_nats_waves_framed_total",
                "Waves sent inside batch frames.",
            )?,
            frames_received: m.counter(
                "aether_nats_frames_received_total",
                "Batch frames received (each wave in one counted as if it came alone).",
            )?,
        };
        let process = match ResourceUsage::read() {
            Err(_) => None,
            Ok(_) => Some(Process {
                rss: m.gauge(
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes.",
                )?,
                vms: m.gauge(
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes.",
                )?,
                threads: m.gauge("process_threads", "Number of OS threads in the process.")?,
                open_fds: m.gauge("process_open_fds", "Number of open file descriptors.")?,
            }),
        };
        let allocator = match allocator::stats() {
            None => None,
            Some(_) => Some(Allocator {
                allocations: m.counter(
                    "aether_allocator_allocations_total",
                    "Heap allocations made by the process.",
                )?,
                deallocations: m.counter(
                    "aether_allocator_deallocations_total",
                    "Heap allocations freed by the process.",
                )?,
                reallocations: m.counter(
                    "aether_allocator_reallocations_total",
                    "Heap allocations resized by the process.",
                )?,
                allocated: m.counter(
                    "aether_allocator_allocated_bytes_total",
                    "Bytes allocated on the heap (growths included).",
                )?,
                freed: m.counter(
                    "aether_allocator_freed_bytes_total",
                    "Bytes freed on the heap (shrinks included).",
                )?,
                live: m.gauge(
                    "aether_allocator_live_bytes",
                    "Bytes allocated on the heap and not freed.",
                )?,
            }),
        };
        let panics = match &sources.panics {
            None => None,
            Some(_) => Some(m.counter(
                "aether_panics_total",
                "Panics in the process, in any thread.",
            )?),
        };
        let build = IntGaugeVec::new(
            Opts::new(
                "aether_build_info",
                "The gateway's version, as a label; always 1.",
            ),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        parts.push(Box::new(build));
        Ok(Self {
            sources,
            bus,
            physics,
            connection,
            process,
            allocator,
            panics,
            parts,
            scraping: Mutex::new(()),
        })
    }

    /// Brings every metric up to its source.
    fn refresh(&self) {
        let stats = self.sources.aether.stats();
        let bus = &self.bus;
        raise(&bus.emitted, stats.emitted);
        raise(&bus.delivered, stats.delivered);
        raise(&bus.unrouted, stats.unrouted);
        raise(&bus.diffracted, stats.diffracted);
        raise(&bus.reflected, stats.reflected);
        raise(&bus.rate_limited, stats.rate_limited);
        raise(&bus.retries, stats.retries);
        raise(&bus.timeouts, stats.timeouts);
        raise(&bus.breaker_opens, stats.breaker_opens);
        raise(&bus.breaker_rejections, stats.breaker_rejections);
        let observer = *self
            .sources
            .observer
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (reason, n) in stats.drops() {
            raise(&bus.dropped.with_label_values(&[reason.as_str()]), n);
        }
        for (reason, n) in observer.drops() {
            raise(
                &bus.observer_dropped.with_label_values(&[reason.as_str()]),
                n,
            );
        }
        if let Some(physics) = &self.physics {
            self.refresh_physics(physics);
        }
        let status = self.sources.aether.connection();
        let c = &self.connection;
        for state in CONNECTION_STATES {
            c.state
                .with_label_values(&[state.as_str()])
                .set(i64::from(state == status.state));
        }
        raise(&c.reconnects, status.connects.saturating_sub(1));
        raise(&c.disconnects, status.disconnects);
        raise(&c.slow_consumer, status.slow_consumer_events);
        raise(&c.malformed, status.malformed);
        raise(&c.flushed, status.outbox_flushed);
        raise(&c.frames_sent, status.frames_sent);
        raise(&c.waves_framed, status.waves_framed);
        raise(&c.frames_received, status.frames_received);
        c.outbox.set(saturating_i64(status.outbox_len as u64));
        c.outbox_capacity
            .set(saturating_i64(status.outbox_capacity as u64));
        if let (Some(p), Ok(usage)) = (&self.process, ResourceUsage::read()) {
            p.rss.set(saturating_i64(usage.rss_bytes));
            p.vms.set(saturating_i64(usage.vms_bytes));
            p.threads.set(saturating_i64(usage.threads));
            p.open_fds.set(saturating_i64(usage.open_fds));
        }
        if let (Some(a), Some(stats)) = (&self.allocator, allocator::stats()) {
            raise(&a.allocations, stats.allocations);
            raise(&a.deallocations, stats.deallocations);
            raise(&a.reallocations, stats.reallocations);
            raise(&a.allocated, stats.allocated_bytes);
            raise(&a.freed, stats.freed_bytes);
            a.live.set(saturating_i64(stats.live_bytes()));
        }
        if let (Some(counter), Some(panics)) = (&self.panics, &self.sources.panics) {
            raise(counter, panics.load(Ordering::Relaxed));
        }
    }

    fn refresh_physics(&self, m: &PhysicsMetrics) {
        let stats = m.physics.stats();
        for (name, n) in engine_events(&m.physics, &self.sources.events_before) {
            raise(&m.events.with_label_values(&[name]), n);
        }
        raise(&m.observed, stats.observed);
        raise(
            &m.skipped.with_label_values(&["over_budget"]),
            stats.skipped_over_budget,
        );
        raise(
            &m.skipped.with_label_values(&["buffer_full"]),
            stats.dropped_buffer_full,
        );
        raise(&m.lagged, stats.lagged);
        let edges = m.physics.edges();
        m.edges.set(saturating_i64(edges.len() as u64));
        // The busiest edges, by family: a bounded set of label values.
        let mut top: Vec<((String, String, String), f64)> = Vec::new();
        let mut index: HashMap<(String, String, String), usize> = HashMap::new();
        for edge in &edges {
            let family = family_of(edge.channel.as_str(), self.sources.family_depth);
            let key = (
                edge.emitter.clone(),
                edge.resonator.clone(),
                family.to_string(),
            );
            match index.get(&key) {
                Some(&i) => top[i].1 += edge.rate_per_s,
                None if top.len() < self.sources.top_edges => {
                    index.insert(key.clone(), top.len());
                    top.push((key, edge.rate_per_s));
                }
                None => {}
            }
        }
        // Edges that left the top are removed, not left at their last rate.
        m.edge_rate.reset();
        for ((emitter, resonator, family), rate) in top {
            m.edge_rate
                .with_label_values(&[&emitter, &resonator, &family])
                .set(rate);
        }
    }
}

/// Raises `counter` to `value` (a source's own monotonic count).
fn raise(counter: &IntCounter, value: u64) {
    let current = counter.get();
    if value > current {
        counter.inc_by(value - current);
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Collector for ScrapeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.parts.iter().flat_map(|part| part.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one_at_a_time = self.scraping.lock().unwrap_or_else(|e| e.into_inner());
        self.refresh();
        self.parts.iter().flat_map(|part| part.collect()).collect()
    }
}
