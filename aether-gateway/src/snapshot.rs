//! What the dashboard shows: a [`Snapshot`] of the bus, made by the
//! observer every `snapshot_interval_ms` and sent as JSON to every
//! `/events` stream (and served at `/snapshot`).

use std::{collections::BTreeMap, sync::Arc, time::SystemTime};

use aether_core::{
    InterferenceEvent, InterferencePattern, InvolvedWave, Phase, ResonanceEdge, StatsSnapshot,
};
use serde::Serialize;

use crate::metrics::scrape::pattern_name;

/// The bus at one moment, as the dashboard shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Snapshot {
    /// When it was made, Unix milliseconds.
    pub at_ms: u64,
    /// `embedded` or `nats`.
    pub medium: String,
    /// The connection state: `embedded`, `connected`, `disconnected`,
    /// `closed`.
    pub connection: String,
    /// Whether `/ready` answers 200.
    pub ready: bool,
    /// Waves observed since the gateway started.
    pub waves_observed: u64,
    /// Waves observed per second, lately.
    pub rate_per_s: f64,
    /// The mean amplitude of the waves observed since the previous
    /// snapshot, if any.
    pub mean_amplitude: Option<f64>,
    /// Waves observed by amplitude, in ten buckets of 0.1 (the last one
    /// includes 1.0), since the gateway started.
    pub amplitude_buckets: [u64; 10],
    /// Waves the observer did not get (its queue shed them).
    pub observer_dropped: u64,
    /// Channel families, busiest first.
    pub families: Vec<FamilyRow>,
    /// The most families counted apart (then `other`).
    pub max_families: usize,
    /// The instances that report on the bus, by name.
    pub instances: Vec<crate::instances::InstanceRow>,
    /// The latest interference events, newest first.
    pub interference: Vec<EventRow>,
    /// Interference events since the engine started, by pattern.
    pub interference_totals: BTreeMap<&'static str, u64>,
    /// The busiest resonance edges.
    pub edges: Vec<EdgeRow>,
    /// Edges in the resonance graph.
    pub edges_total: usize,
    /// The gateway's aether's counters.
    pub stats: BusStats,
}

/// One channel family on the dashboard.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FamilyRow {
    /// The family (the first tokens of its channels), `other` or `hopping`.
    pub family: String,
    /// Waves observed.
    pub waves: u64,
    /// Waves per second, lately.
    pub rate_per_s: f64,
    /// Mean amplitude of all its waves.
    pub mean_amplitude: f64,
}

/// One interference event on the dashboard.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventRow {
    /// `constructive`, `cancellation` or `standing_wave`.
    pub pattern: &'static str,
    /// The channel of its waves.
    pub channel: String,
    /// Their correlation key.
    pub correlation_key: String,
    /// The amplitude of their superposition.
    pub resultant_amplitude: f64,
    /// How many waves made it.
    pub waves: usize,
    /// Who emitted them, each once.
    pub sources: Vec<String>,
    /// A standing wave's period, in milliseconds.
    pub period_ms: Option<f64>,
    /// When it happened, Unix milliseconds.
    pub at_ms: u64,
    /// What it usually means, for an operator.
    pub diagnosis: &'static str,
    /// The waves involved: the last [`MAX_INVOLVED`] to arrive, in the
    /// order they were emitted.
    pub involved: Vec<InvolvedRow>,
}

/// Most waves of an event shown on the dashboard.
pub const MAX_INVOLVED: usize = 8;

/// One wave of an interference event on the dashboard.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InvolvedRow {
    /// Its id (32 hex digits).
    pub id: String,
    /// Who emitted it.
    pub source: Option<String>,
    /// `assert`, `retract`, or the angle in radians.
    pub phase: String,
    /// Its amplitude when observed.
    pub amplitude: f64,
    /// Milliseconds after the first wave shown was emitted.
    pub after_ms: f64,
    /// Its hop count.
    pub hops: u32,
}

/// What each pattern usually means.
fn diagnosis(pattern: InterferencePattern) -> &'static str {
    match pattern {
        InterferencePattern::StandingWave => {
            "the same message again and again at a steady period: a retry storm, a loop or a \
             stuck producer"
        }
        InterferencePattern::Cancellation => {
            "opposite phases for one key: conflicting messages, such as approved and rejected"
        }
        _ => "in phase for one key: a duplicate, or a confirmation",
    }
}

impl EventRow {
    /// The row of `event`.
    pub fn of(event: &InterferenceEvent) -> Self {
        let mut sources: Vec<String> = Vec::new();
        for wave in &event.waves {
            if let Some(source) = wave.source()
                && !sources.iter().any(|s| s == source)
            {
                sources.push(source.to_string());
            }
        }
        Self {
            pattern: pattern_name(event.pattern),
            channel: event.channel.to_string(),
            correlation_key: event.correlation_key.clone(),
            resultant_amplitude: event.resultant_amplitude,
            waves: event.waves.len(),
            sources,
            period_ms: event.period.map(|p| p.as_secs_f64() * 1000.0),
            at_ms: unix_ms(event.at),
            diagnosis: diagnosis(event.pattern),
            involved: involved(&event.waves),
        }
    }
}

/// The last [`MAX_INVOLVED`] of `waves` (as they arrived), as rows in the
/// order they were emitted: waves resent after an outage arrive late, and
/// are shown where they were made.
fn involved(waves: &[InvolvedWave]) -> Vec<InvolvedRow> {
    let mut shown: Vec<&InvolvedWave> = waves[waves.len().saturating_sub(MAX_INVOLVED)..]
        .iter()
        .collect();
    shown.sort_by_key(|wave| wave.at());
    let first = shown.first().map(|wave| wave.at());
    shown
        .into_iter()
        .map(|wave| InvolvedRow {
            id: wave.id().to_string(),
            source: wave.source().map(str::to_string),
            phase: match wave.phase() {
                Phase::ASSERT => "assert".into(),
                Phase::RETRACT => "retract".into(),
                phase => format!("{:.2} rad", phase.radians()),
            },
            amplitude: wave.amplitude(),
            after_ms: first.map_or(0.0, |first| match wave.at().duration_since(first) {
                Ok(after) => after.as_secs_f64() * 1000.0,
                Err(before) => -before.duration().as_secs_f64() * 1000.0,
            }),
            hops: wave.hops(),
        })
        .collect()
}

/// One resonance edge on the dashboard.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EdgeRow {
    /// The vibrator that emits.
    pub emitter: String,
    /// The vibrator that hears.
    pub resonator: String,
    /// The channel.
    pub channel: String,
    /// Deliveries per second (decayed).
    pub rate_per_s: f64,
    /// Mean amplitude of the deliveries (decayed).
    pub mean_amplitude: f64,
    /// Deliveries since the edge was first seen.
    pub deliveries: u64,
}

impl EdgeRow {
    /// The row of `edge`.
    pub fn of(edge: &ResonanceEdge) -> Self {
        Self {
            emitter: edge.emitter.clone(),
            resonator: edge.resonator.clone(),
            channel: edge.channel.to_string(),
            rate_per_s: edge.rate_per_s,
            mean_amplitude: edge.mean_amplitude,
            deliveries: edge.deliveries,
        }
    }
}

/// An aether's counters, for the dashboard.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BusStats {
    /// Waves accepted for emission.
    pub emitted: u64,
    /// Waves put in receive queues.
    pub delivered: u64,
    /// Waves nobody resonated on.
    pub unrouted: u64,
    /// Drops by reason.
    pub dropped: BTreeMap<&'static str, u64>,
}

impl From<&StatsSnapshot> for BusStats {
    fn from(stats: &StatsSnapshot) -> Self {
        Self {
            emitted: stats.emitted,
            delivered: stats.delivered,
            unrouted: stats.unrouted,
            dropped: stats.drops().map(|(r, n)| (r.as_str(), n)).collect(),
        }
    }
}

/// A snapshot and its JSON, made once for every client.
#[derive(Clone, Debug, Default)]
pub struct Published {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// It as JSON.
    pub json: Arc<str>,
}

impl Published {
    /// `snapshot` with its JSON.
    pub fn new(snapshot: Snapshot) -> Self {
        let json = serde_json::to_string(&snapshot).unwrap_or_else(|_| "{}".into());
        Self {
            snapshot,
            json: json.into(),
        }
    }
}

/// Unix milliseconds of `time` (0 before the epoch).
pub(crate) fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod involved_tests {
    use std::time::{Duration, SystemTime};

    use aether_core::{Phase, PhysicsEngine, Wave};

    use super::EventRow;

    /// A wave resent after an outage arrives after one emitted later: the
    /// dashboard shows them in the order they were emitted, the offsets
    /// growing from the first.
    #[test]
    fn involved_waves_are_shown_in_emission_order() {
        let mut engine = PhysicsEngine::new();
        let t0 = SystemTime::now();
        let approved = Wave::builder("orders.review")
            .correlation_key("order-42")
            .build()
            .unwrap();
        let rejected = Wave::builder("orders.review")
            .correlation_key("order-42")
            .phase(Phase::RETRACT)
            .amplitude(0.8)
            .build()
            .unwrap();
        // The rejection, emitted 40 ms after the approval, arrives first.
        assert!(
            engine
                .detect_at("orders.review", &rejected, t0 + Duration::from_millis(40))
                .is_none()
        );
        let event = engine
            .detect_at("orders.review", &approved, t0)
            .expect("a cancellation");
        let row = EventRow::of(&event);
        let phases: Vec<_> = row.involved.iter().map(|w| w.phase.as_str()).collect();
        assert_eq!(phases, ["assert", "retract"], "{row:?}");
        assert_eq!(row.involved[0].after_ms, 0.0);
        assert!((row.involved[1].after_ms - 40.0).abs() < 1.0, "{row:?}");
    }
}
