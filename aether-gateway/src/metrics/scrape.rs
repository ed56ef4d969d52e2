//! Metrics read at scrape time that are the gateway's own: the observer's
//! drops, the physics engine, the allocator, panics and the build. The
//! aether's statistics, its connection and the process are
//! [`aether_ops::metrics::AetherCollector`]'s, as every program exports
//! them. Their sources keep monotonic counters of their own; a scrape
//! brings the Prometheus counters up to them.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use aether_core::{Aether, DropReason, InterferencePattern, Physics, StatsSnapshot};
use aether_ops::metrics::{Maker, Parts, raise, saturating_i64};
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
}

/// The physics engine's events by pattern, those of earlier runs added
/// (the dashboard's totals and the journal's snapshots).
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

pub(crate) const PATTERNS: [(InterferencePattern, &str); 3] = [
    (InterferencePattern::Constructive, "constructive"),
    (InterferencePattern::Cancellation, "cancellation"),
    (InterferencePattern::StandingWave, "standing_wave"),
];

/// The name of an interference pattern, as a label and on the dashboard.
pub(crate) fn pattern_name(pattern: InterferencePattern) -> &'static str {
    PATTERNS
        .iter()
        .find(|(p, _)| *p == pattern)
        .map_or("other", |(_, name)| name)
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
    observer_dropped: IntCounterVec,
    physics: Option<PhysicsMetrics>,
    allocator: Option<Allocator>,
    panics: Option<IntCounter>,
    /// Every metric above, to describe and gather them.
    parts: Parts,
}

impl ScrapeCollector {
    pub(crate) fn new(sources: Sources) -> prometheus::Result<Self> {
        let mut parts: Vec<Box<dyn Collector>> = Vec::new();
        let mut m = Maker(&mut parts);
        let reasons: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        let observer_dropped = m.counters(
            "aether_gateway_observer_dropped_total",
            "Waves the gateway's observer did not get, by reason (queue_full: it fell \
             behind and its bounded queue shed the weakest waves).",
            "reason",
            &reasons,
        )?;
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
            observer_dropped,
            physics,
            allocator,
            panics,
            parts: Parts::new(parts),
        })
    }

    /// Brings every metric up to its source.
    fn refresh(&self) {
        let observer = *self
            .sources
            .observer
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (reason, n) in observer.drops() {
            raise(
                &self.observer_dropped.with_label_values(&[reason.as_str()]),
                n,
            );
        }
        if let Some(physics) = &self.physics {
            self.refresh_physics(physics);
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
        // The engine's own counts: a restarted gateway starts them at 0, as
        // Prometheus expects of a restarted process (a counter restored a
        // little below what was scraped before a crash would read as a
        // reset, and `increase()` would see a huge jump).
        for (pattern, name) in PATTERNS {
            raise(&m.events.with_label_values(&[name]), stats.events(pattern));
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

impl Collector for ScrapeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.parts.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.parts.collect_after(|| self.refresh())
    }
}
