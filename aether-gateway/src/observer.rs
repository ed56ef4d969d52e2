//! The observer: a vibrator named `gateway` that resonates on every channel
//! (`*`), and the task that takes its waves and counts them.
//!
//! It never slows the bus: its receive queue is bounded
//! (`observer_queue_capacity`), and when the task falls behind, the queue
//! sheds the weakest waves and counts them as `queue_full` (exported as
//! `aether_gateway_observer_dropped_total`); emitters never wait for it.
//! Once it has emptied its queue it rests for `observer_rest_ms` before it
//! waits again, so that emitters wake it once per batch rather than once
//! per wave (a wake-up costs the emitter a system call when the task
//! sleeps). The task counts each wave it takes by channel family, amplitude,
//! latency and phase, keeps the latest interference events, and every
//! `snapshot_interval_ms` publishes a [`Snapshot`] for the dashboard.

use std::{
    collections::{HashMap, VecDeque},
    f64::consts::{PI, TAU},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use aether_core::Operator;
use aether_core::{
    Aether, ConnectionState, InterferenceEvent, Physics, PhysicsEvents, StatsSnapshot, Vibrator,
    Wave, hopping::is_hop_channel,
};
use aether_ops::shutdown::Shutdown;
use prometheus::IntCounter;
use tokio::sync::watch;

use crate::{
    family::{Families, HOPPING, HopAttribution, family_of},
    instances::Instances,
    journal::{
        EdgeCount, EdgeKey, FamilyCount, JournalLink, JournalState, MAX_SAVED_EDGES, count_edge,
    },
    metrics::Metrics,
    metrics::scrape::pattern_name,
    snapshot::{BusStats, EdgeRow, EventRow, FamilyRow, Published, Snapshot, unix_ms},
};

/// The name of the observer vibrator, the `resonator` of its edges.
pub const OBSERVER_NAME: &str = "gateway";

/// Waves taken from the queue at once before the task looks at its other
/// work (snapshots, events, shutdown).
const BATCH: usize = 1024;

/// Time constant of the rates shown on the dashboard.
const RATE_TAU: Duration = Duration::from_secs(1);

/// Whether `aether` can take and bring waves: embedded, or connected to
/// NATS, and not closed.
pub fn is_ready(aether: &Aether) -> bool {
    !aether.is_closed()
        && matches!(
            aether.connection().state,
            ConnectionState::Embedded | ConnectionState::Connected
        )
}

/// What the observer knows of one family.
struct FamilyState {
    counter: IntCounter,
    waves: u64,
    amplitude_sum: f64,
    waves_at_last_snapshot: u64,
    rate: Option<f64>,
}

impl FamilyState {
    /// A family labelled `label`, nothing counted yet.
    fn new(metrics: &Metrics, label: &str) -> Self {
        Self {
            counter: metrics.waves_observed.with_label_values(&[label]),
            waves: 0,
            amplitude_sum: 0.0,
            waves_at_last_snapshot: 0,
            rate: None,
        }
    }
}

/// What the observer is told to do.
pub(crate) struct ObserverParts {
    pub(crate) vibrator: Vibrator,
    pub(crate) metrics: Metrics,
    pub(crate) family_depth: usize,
    pub(crate) max_families: usize,
    pub(crate) hops: Option<HopAttribution>,
    pub(crate) physics: Option<Physics>,
    pub(crate) recent_events: usize,
    pub(crate) top_edges: usize,
    pub(crate) interval: Duration,
    pub(crate) rest: Duration,
    pub(crate) medium: &'static str,
    pub(crate) observer_stats: Arc<Mutex<StatsSnapshot>>,
    pub(crate) snapshots: watch::Sender<Arc<Published>>,
    /// Interference events of earlier runs, by pattern, shared with the
    /// scrape-time metrics (set by [`Observer::restore`]).
    pub(crate) events_before: Arc<[std::sync::atomic::AtomicU64; 3]>,
    /// The journal writer's queue, when the gateway journals.
    pub(crate) journal: Option<JournalLink>,
    /// The instances that report on the bus.
    pub(crate) instances: Instances,
}

/// The observer task's state.
pub(crate) struct Observer {
    parts: ObserverParts,
    aether: Aether,
    families: Families<FamilyState>,
    /// The families interference events were correlated on (a pattern such
    /// as `inventory.*` is one of its own), each with its label.
    event_families: Families<Box<str>>,
    events: Option<PhysicsEvents>,
    recent: VecDeque<EventRow>,
    phase_tolerance: f64,
    waves: u64,
    amplitude_buckets: [u64; 10],
    /// Waves and their amplitudes since the previous snapshot.
    interval_waves: u64,
    interval_amplitude: f64,
    last_snapshot: Instant,
    rate: Option<f64>,
    /// Resonance edges counted before the gateway (re)started, from its
    /// journal; the live graph's are added to them.
    restored_edges: HashMap<EdgeKey, EdgeCount>,
    /// The gateway's own deliveries on journaled channels that it has
    /// taken from its queue (and offered to the journal), by channel and
    /// emitter, since it started: what a journal snapshot counts of its
    /// edges, so that a restart counting the journal after the snapshot
    /// counts each once. (The physics engine counts deliveries on its own
    /// thread, ahead of or behind the journal's position.)
    journaled_edges: HashMap<String, HashMap<String, u64>>,
    /// Keys in `journaled_edges`, at most [`MAX_SAVED_EDGES`].
    journaled_keys: usize,
    /// Counts by phase: assert, retract, other.
    by_phase: [u64; 3],
}

impl Observer {
    pub(crate) fn new(parts: ObserverParts) -> Self {
        let aether = parts.vibrator.aether().clone();
        let events = parts.physics.as_ref().map(Physics::events);
        Self {
            families: Families::new(parts.max_families),
            event_families: Families::new(parts.max_families),
            events,
            recent: VecDeque::with_capacity(parts.recent_events),
            phase_tolerance: aether.config().physics.phase_tolerance,
            aether,
            parts,
            waves: 0,
            amplitude_buckets: [0; 10],
            interval_waves: 0,
            interval_amplitude: 0.0,
            last_snapshot: Instant::now(),
            rate: None,
            restored_edges: HashMap::new(),
            journaled_edges: HashMap::new(),
            journaled_keys: 0,
            by_phase: [0; 3],
        }
    }

    /// Resumes the counts of a previous run: its snapshot `state`, then the
    /// waves it journaled after that snapshot, counted again. Prometheus
    /// counters continue from there.
    pub(crate) fn restore(&mut self, state: &crate::journal::JournalState, tail: &[Wave]) {
        let metrics = self.parts.metrics.clone();
        for family in &state.families {
            let entry = self
                .families
                .get_or_insert_with(&family.family, |label| FamilyState::new(&metrics, label));
            entry.counter.inc_by(family.waves);
            entry.waves += family.waves;
            entry.waves_at_last_snapshot = entry.waves;
            entry.amplitude_sum += family.amplitude_sum;
        }
        for (i, n) in state.by_phase.iter().enumerate() {
            metrics.by_phase[i].inc_by(*n);
            self.by_phase[i] += n;
        }
        self.waves += state.waves_observed;
        for (bucket, n) in self
            .amplitude_buckets
            .iter_mut()
            .zip(state.amplitude_buckets)
        {
            *bucket += n;
        }
        for (i, (_, name)) in crate::metrics::scrape::PATTERNS.iter().enumerate() {
            let n = state.engine_events.get(*name).copied().unwrap_or(0);
            self.parts.events_before[i].store(n, std::sync::atomic::Ordering::Relaxed);
        }
        for edge in &state.edges {
            let key = (
                edge.emitter.clone(),
                edge.resonator.clone(),
                edge.channel.clone(),
            );
            self.restored_edges.insert(key, edge.clone());
        }
        if let Some(journal) = &self.parts.journal {
            journal
                .metrics
                .records
                .inc_by(state.journaled + tail.len() as u64);
            for (reason, n) in &state.journal_dropped {
                journal
                    .metrics
                    .dropped
                    .with_label_values(&[reason.as_str()])
                    .inc_by(*n);
            }
        }
        for wave in tail {
            let stamp_ms = wave.emitted_at().map_or(0, unix_ms);
            self.count(wave, stamp_ms);
            count_edge(&mut self.restored_edges, wave, OBSERVER_NAME);
        }
        // Rates start from here, not from the restored totals.
        for (_, family) in self.families.iter_mut() {
            family.waves_at_last_snapshot = family.waves;
        }
        self.interval_waves = 0;
        self.interval_amplitude = 0.0;
    }

    /// What a journal snapshot keeps: the counts and the resonance graph.
    fn journal_state(&self, journal: &JournalLink) -> JournalState {
        let mut edges = self.merged_edges();
        // The gateway's own edges on journaled channels (those it counted
        // as it offered their waves to the journal): as far as it has taken
        // waves (the journal's position), not as far as the engine counted
        // them.
        for edge in &mut edges {
            if edge.resonator != OBSERVER_NAME {
                continue;
            }
            let Some(taken) = self
                .journaled_edges
                .get(&edge.channel)
                .and_then(|by| by.get(&edge.emitter))
            else {
                continue;
            };
            let key = (
                edge.emitter.clone(),
                edge.resonator.clone(),
                edge.channel.clone(),
            );
            let before = self.restored_edges.get(&key).map_or(0, |e| e.deliveries);
            edge.deliveries = before + taken;
        }
        edges.sort_by_key(|edge| std::cmp::Reverse(edge.last_seen_ms));
        edges.truncate(MAX_SAVED_EDGES);
        JournalState {
            waves_observed: self.waves,
            by_phase: self.by_phase,
            amplitude_buckets: self.amplitude_buckets,
            families: self
                .families
                .iter()
                .map(|(family, state)| FamilyCount {
                    family: family.to_string(),
                    waves: state.waves,
                    amplitude_sum: state.amplitude_sum,
                })
                .collect(),
            edges,
            journaled: 0,
            journal_dropped: journal.dropped(),
            engine_events: self
                .parts
                .physics
                .as_ref()
                .map(|physics| {
                    crate::metrics::scrape::engine_events(physics, &self.parts.events_before)
                        .into_iter()
                        .map(|(name, n)| (name.to_string(), n))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The restored edges with the live graph's added, and the live rates.
    fn merged_edges(&self) -> Vec<EdgeCount> {
        let mut merged = self.restored_edges.clone();
        if let Some(physics) = &self.parts.physics {
            for edge in physics.edges() {
                let key = (
                    edge.emitter.clone(),
                    edge.resonator.clone(),
                    edge.channel.to_string(),
                );
                let last_seen_ms = unix_ms(edge.last_seen);
                let entry = merged.entry(key).or_insert_with_key(|(e, r, c)| EdgeCount {
                    emitter: e.clone(),
                    resonator: r.clone(),
                    channel: c.clone(),
                    ..Default::default()
                });
                entry.deliveries += edge.deliveries;
                entry.mean_amplitude = edge.mean_amplitude;
                entry.last_seen_ms = entry.last_seen_ms.max(last_seen_ms);
            }
        }
        merged.into_values().collect()
    }

    /// Observes until `shutdown` (or until the aether is closed), then
    /// publishes a last snapshot. Dropping the observer's vibrator stops its
    /// resonance; dropping the snapshot sender ends every `/events` stream.
    pub(crate) async fn run(mut self, shutdown: Shutdown) {
        let stop = shutdown.wait();
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(self.parts.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let journal_every = self
            .parts
            .journal
            .as_ref()
            .map_or(Duration::from_secs(3600), |j| j.snapshot_interval);
        let mut journal_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + journal_every, journal_every);
        journal_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // While it rests, it does not wait on its queue, so no emitter has
        // to wake it: waves gather and are taken as one batch.
        let rest = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(rest);
        let mut resting = false;
        loop {
            tokio::select! {
                biased;
                () = &mut stop => break,
                _ = tick.tick() => self.publish(),
                _ = journal_tick.tick(), if self.parts.journal.is_some() => self.snapshot_journal(false),
                event = next_event(&mut self.events), if self.events.is_some() => match event {
                    Some(event) => self.record(&event),
                    None => self.events = None,
                },
                () = &mut rest, if resting => resting = false,
                wave = self.parts.vibrator.receive(), if !resting => match wave {
                    Some(wave) => {
                        let drained = self.observe_batch(wave);
                        if drained && !self.parts.rest.is_zero() {
                            rest.as_mut().reset(tokio::time::Instant::now() + self.parts.rest);
                            resting = true;
                        }
                    }
                    None => break,
                },
            }
        }
        self.publish();
        self.snapshot_journal(true);
    }

    /// Queues a snapshot of the counts behind the waves queued so far;
    /// `wait` for room (at the end) rather than skip it.
    fn snapshot_journal(&self, wait: bool) {
        if let Some(journal) = &self.parts.journal {
            journal.snapshot(self.journal_state(journal), wait);
        }
    }

    /// Observes `first` and the waves queued behind it, up to a batch;
    /// `true` if that emptied the queue.
    fn observe_batch(&mut self, first: Wave) -> bool {
        // One clock reading per batch: the waves were queued by then.
        let now = aether_core::bustime::now();
        let now_ms = unix_ms(now);
        let instant = Instant::now();
        self.observe(&first, now, now_ms, instant);
        for _ in 1..BATCH {
            match self.parts.vibrator.try_receive() {
                Some(wave) => self.observe(&wave, now, now_ms, instant),
                None => return true,
            }
        }
        false
    }

    fn observe(&mut self, wave: &Wave, now: SystemTime, now_ms: u64, instant: Instant) {
        // An instance report is the bus's telemetry, not traffic.
        if self.parts.instances.take(wave, instant) {
            return;
        }
        let amplitude = self.count(wave, wave.emitted_at().map_or(now_ms, unix_ms));
        let metrics = &self.parts.metrics;
        metrics.amplitude.observe(amplitude);
        if let Some(emitted) = wave.emitted_at() {
            // A clock behind the emitter's counts as no delay.
            let latency = now.duration_since(emitted).unwrap_or_default();
            metrics.latency.observe(latency.as_secs_f64());
        }
        self.interval_waves += 1;
        self.interval_amplitude += amplitude;
        if let Some(journal) = &self.parts.journal
            && journal.offer(wave, now_ms)
            && let Some(source) = wave.source()
        {
            let channel = wave.channel().as_str();
            match self
                .journaled_edges
                .get_mut(channel)
                .map(|by| by.get_mut(source))
            {
                Some(Some(n)) => *n += 1,
                _ if self.journaled_keys < MAX_SAVED_EDGES => {
                    self.journaled_keys += 1;
                    self.journaled_edges
                        .entry(channel.to_string())
                        .or_default()
                        .insert(source.to_string(), 1);
                }
                // Past the bound, an edge's snapshot count is the engine's.
                _ => {}
            }
        }
    }

    /// Counts `wave` (stamped `stamp_ms`) by family, phase and amplitude
    /// bucket; returns its amplitude.
    fn count(&mut self, wave: &Wave, stamp_ms: u64) -> f64 {
        let channel = wave.channel();
        let family = if is_hop_channel(channel) {
            // Counted under its base only if its source may emit there: a
            // hop of a base it may not use is not that base's traffic.
            let aether = &self.aether;
            match &mut self.parts.hops {
                Some(hops) => hops.family_or_hopping(channel, stamp_ms, |base| {
                    aether.acl_allows_emit(wave.source(), base)
                }),
                None => HOPPING,
            }
        } else {
            family_of(channel.as_str(), self.parts.family_depth)
        };
        let metrics = &self.parts.metrics;
        let state = self
            .families
            .get_or_insert_with(family, |label| FamilyState::new(metrics, label));
        let amplitude = wave.amplitude().value();
        state.counter.inc();
        state.waves += 1;
        state.amplitude_sum += amplitude;
        let phase = phase_index(wave.phase().radians(), self.phase_tolerance);
        metrics.by_phase[phase].inc();
        self.by_phase[phase] += 1;
        self.waves += 1;
        let bucket = ((amplitude * 10.0) as usize).min(9);
        self.amplitude_buckets[bucket] += 1;
        amplitude
    }

    fn record(&mut self, event: &InterferenceEvent) {
        let family = family_of(event.channel.as_str(), self.parts.family_depth);
        let label = self
            .event_families
            .get_or_insert_with(family, |label| label.into());
        self.parts
            .metrics
            .interference
            .with_label_values(&[pattern_name(event.pattern), label])
            .inc();
        if self.recent.len() == self.parts.recent_events {
            self.recent.pop_back();
        }
        self.recent.push_front(EventRow::of(event));
        tracing::debug!(
            pattern = pattern_name(event.pattern),
            channel = %event.channel,
            key = %event.correlation_key,
            "interference"
        );
    }

    /// Makes a snapshot and sends it to every dashboard.
    fn publish(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.last_snapshot).as_secs_f64();
        self.last_snapshot = now;
        let smooth = |rate: Option<f64>, delta: u64| {
            let instant = if dt > 0.0 { delta as f64 / dt } else { 0.0 };
            Some(match rate {
                None => instant,
                Some(rate) => {
                    let alpha = 1.0 - (-dt / RATE_TAU.as_secs_f64()).exp();
                    rate + alpha * (instant - rate)
                }
            })
        };
        let mut families: Vec<FamilyRow> = self
            .families
            .iter_mut()
            .map(|(family, state)| {
                state.rate = smooth(state.rate, state.waves - state.waves_at_last_snapshot);
                state.waves_at_last_snapshot = state.waves;
                FamilyRow {
                    family: family.to_string(),
                    waves: state.waves,
                    rate_per_s: state.rate.unwrap_or(0.0),
                    mean_amplitude: state.amplitude_sum / state.waves.max(1) as f64,
                }
            })
            .collect();
        families.sort_by(|a, b| b.waves.cmp(&a.waves).then(a.family.cmp(&b.family)));
        self.rate = smooth(self.rate, self.interval_waves);
        let mean_amplitude =
            (self.interval_waves > 0).then(|| self.interval_amplitude / self.interval_waves as f64);
        self.interval_waves = 0;
        self.interval_amplitude = 0.0;

        let hearing = matches!(
            self.aether.connection().state,
            ConnectionState::Embedded | ConnectionState::Connected
        );
        self.parts.instances.sweep(now, hearing);
        let observer = self.parts.vibrator.stats();
        *self
            .parts
            .observer_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = observer;
        self.parts
            .metrics
            .families
            .set(i64::try_from(self.families.len()).unwrap_or(i64::MAX));

        let (edges, edges_total, interference_totals) = match &self.parts.physics {
            None if self.restored_edges.is_empty() => (Vec::new(), 0, Default::default()),
            None => (
                self.edge_rows(),
                self.merged_edges().len(),
                Default::default(),
            ),
            Some(physics) => {
                let edges = physics.edges();
                let totals =
                    crate::metrics::scrape::engine_events(physics, &self.parts.events_before)
                        .into_iter()
                        .collect();
                if self.restored_edges.is_empty() {
                    let rows = edges
                        .iter()
                        .take(self.parts.top_edges)
                        .map(EdgeRow::of)
                        .collect();
                    (rows, edges.len(), totals)
                } else {
                    (self.edge_rows(), self.merged_edges().len(), totals)
                }
            }
        };
        let snapshot = Snapshot {
            at_ms: unix_ms(SystemTime::now()),
            medium: self.parts.medium.to_string(),
            connection: self.aether.connection().state.as_str().to_string(),
            ready: is_ready(&self.aether),
            waves_observed: self.waves,
            rate_per_s: self.rate.unwrap_or(0.0),
            mean_amplitude,
            amplitude_buckets: self.amplitude_buckets,
            observer_dropped: observer.dropped_total(),
            families,
            max_families: self.parts.max_families,
            instances: self.parts.instances.rows(now),
            interference: self.recent.iter().cloned().collect(),
            interference_totals,
            edges,
            edges_total,
            stats: BusStats::from(&self.aether.stats()),
        };
        self.parts
            .snapshots
            .send_replace(Arc::new(Published::new(snapshot)));
    }
}

impl Observer {
    /// The busiest edges of the live graph and the restored one: live
    /// edges with their rate and the deliveries of both runs, restored
    /// edges not seen since with a rate of 0.
    fn edge_rows(&self) -> Vec<EdgeRow> {
        let live: HashMap<EdgeKey, aether_core::ResonanceEdge> = self
            .parts
            .physics
            .as_ref()
            .map(|p| p.edges())
            .unwrap_or_default()
            .into_iter()
            .map(|e| {
                (
                    (
                        e.emitter.clone(),
                        e.resonator.clone(),
                        e.channel.to_string(),
                    ),
                    e,
                )
            })
            .collect();
        let mut rows: Vec<EdgeRow> = self
            .merged_edges()
            .into_iter()
            .map(|edge| {
                let key = (
                    edge.emitter.clone(),
                    edge.resonator.clone(),
                    edge.channel.clone(),
                );
                EdgeRow {
                    rate_per_s: live.get(&key).map_or(0.0, |e| e.rate_per_s),
                    emitter: edge.emitter,
                    resonator: edge.resonator,
                    channel: edge.channel,
                    mean_amplitude: edge.mean_amplitude,
                    deliveries: edge.deliveries,
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            b.rate_per_s
                .total_cmp(&a.rate_per_s)
                .then(b.deliveries.cmp(&a.deliveries))
        });
        rows.truncate(self.parts.top_edges);
        rows
    }
}

/// The next interference event, or never if there is no engine.
async fn next_event(events: &mut Option<PhysicsEvents>) -> Option<InterferenceEvent> {
    match events {
        Some(events) => events.next().await,
        None => std::future::pending().await,
    }
}

/// 0 for assert (near 0), 1 for retract (near π), 2 for any other phase.
fn phase_index(radians: f64, tolerance: f64) -> usize {
    if radians <= tolerance || radians >= TAU - tolerance {
        0
    } else if (radians - PI).abs() <= tolerance {
        1
    } else {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_told_apart() {
        assert_eq!(phase_index(0.0, 0.1), 0);
        assert_eq!(phase_index(TAU - 0.05, 0.1), 0);
        assert_eq!(phase_index(PI, 0.1), 1);
        assert_eq!(phase_index(PI + 0.05, 0.1), 1);
        assert_eq!(phase_index(PI / 2.0, 0.1), 2);
    }

    #[test]
    fn ready_when_embedded_and_open() {
        let aether = Aether::default();
        assert!(is_ready(&aether));
        aether.close();
        assert!(!is_ready(&aether));
    }
}
