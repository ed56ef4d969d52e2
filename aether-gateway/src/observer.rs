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
    collections::VecDeque,
    f64::consts::{PI, TAU},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use aether_core::{
    Aether, ConnectionState, InterferenceEvent, Physics, PhysicsEvents, StatsSnapshot, Vibrator,
    Wave, hopping::is_hop_channel,
};
use aether_ops::shutdown::Shutdown;
use prometheus::IntCounter;
use tokio::sync::watch;

use crate::{
    family::{Families, HOPPING, HopAttribution, family_of},
    metrics::Metrics,
    metrics::scrape::pattern_name,
    snapshot::{BusStats, EdgeRow, EventRow, FamilyRow, Published, Snapshot, unix_ms},
};

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
}

/// The observer task's state.
pub(crate) struct Observer {
    parts: ObserverParts,
    aether: Aether,
    families: Families<FamilyState>,
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
}

impl Observer {
    pub(crate) fn new(parts: ObserverParts) -> Self {
        let aether = parts.vibrator.aether().clone();
        let events = parts.physics.as_ref().map(Physics::events);
        Self {
            families: Families::new(parts.max_families),
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
        }
    }

    /// Observes until `shutdown` (or until the aether is closed), then
    /// publishes a last snapshot. Dropping the observer's vibrator stops its
    /// resonance; dropping the snapshot sender ends every `/events` stream.
    pub(crate) async fn run(mut self, shutdown: Shutdown) {
        let stop = shutdown.wait();
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(self.parts.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
    }

    /// Observes `first` and the waves queued behind it, up to a batch;
    /// `true` if that emptied the queue.
    fn observe_batch(&mut self, first: Wave) -> bool {
        // One clock reading per batch: the waves were queued by then.
        let now = SystemTime::now();
        let now_ms = unix_ms(now);
        self.observe(&first, now, now_ms);
        for _ in 1..BATCH {
            match self.parts.vibrator.try_receive() {
                Some(wave) => self.observe(&wave, now, now_ms),
                None => return true,
            }
        }
        false
    }

    fn observe(&mut self, wave: &Wave, now: SystemTime, now_ms: u64) {
        let channel = wave.channel();
        let family = if is_hop_channel(channel) {
            match &mut self.parts.hops {
                Some(hops) => {
                    let stamp_ms = wave.emitted_at().map_or(now_ms, unix_ms);
                    hops.family_or_hopping(channel, stamp_ms)
                }
                None => HOPPING,
            }
        } else {
            family_of(channel.as_str(), self.parts.family_depth)
        };
        let metrics = &self.parts.metrics;
        let state = self
            .families
            .get_or_insert_with(family, |label| FamilyState {
                counter: metrics.waves_observed.with_label_values(&[label]),
                waves: 0,
                amplitude_sum: 0.0,
                waves_at_last_snapshot: 0,
                rate: None,
            });
        let amplitude = wave.amplitude().value();
        state.counter.inc();
        state.waves += 1;
        state.amplitude_sum += amplitude;
        metrics.amplitude.observe(amplitude);
        if let Some(emitted) = wave.emitted_at() {
            // A clock behind the emitter's counts as no delay.
            let latency = now.duration_since(emitted).unwrap_or_default();
            metrics.latency.observe(latency.as_secs_f64());
        }
        metrics.by_phase[phase_index(wave.phase().radians(), self.phase_tolerance)].inc();
        self.waves += 1;
        self.interval_waves += 1;
        self.interval_amplitude += amplitude;
        let bucket = ((amplitude * 10.0) as usize).min(9);
        self.amplitude_buckets[bucket] += 1;
    }

    fn record(&mut self, event: &InterferenceEvent) {
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
            None => (Vec::new(), 0, Default::default()),
            Some(physics) => {
                let edges = physics.edges();
                let stats = physics.stats();
                let totals = [
                    aether_core::InterferencePattern::Constructive,
                    aether_core::InterferencePattern::Cancellation,
                    aether_core::InterferencePattern::StandingWave,
                ]
                .into_iter()
                .map(|p| (pattern_name(p), stats.events(p)))
                .collect();
                let rows = edges
                    .iter()
                    .take(self.parts.top_edges)
                    .map(EdgeRow::of)
                    .collect();
                (rows, edges.len(), totals)
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
