//! The instances of the bus, from the reports every aether sends on
//! `_report.<instance>` ([`aether_core::report`]): what each one emitted,
//! delivered and dropped by reason, its queues, outbox and connection, and
//! how many of the waves it sent the gateway saw.
//!
//! The observer takes the reports in the same stream as the waves of plain
//! channels, so when a report arrives the gateway has taken every such wave
//! its instance sent before it. Durable waves come through the gateway's
//! own consumer, and waves still in an instance's outboxes have not been
//! sent: so what was sent and not observed
//! (`aether_instance_unobserved_waves`) is reckoned again at every snapshot,
//! and settles at what the gateway really missed.
//!
//! Reports come off the bus, so the registry is bounded: at most
//! `max_instances` names; a report that does not parse, or that would add
//! one more, is refused and counted. An instance whose reports stop for
//! `instance_gone_ms` is marked gone: its series are removed and it is
//! counted in `aether_gateway_instances_gone_total` (the alert
//! `AetherInstanceGone`). An instance that drains sends a last report
//! marked `leaving`: its series go at once and it is counted in
//! `aether_gateway_instances_left_total` instead.
//!
//! The replicas of replicated maps that reports list are bounded the same
//! way, since each costs 8 to 13 series: at most `max_maps_per_instance`
//! per instance and `max_map_series` in all are exported (and shown). A
//! replica exported keeps its place while its instance lists it; the others
//! are counted in `aether_gateway_map_replicas_unexported{reason}`
//! (`max_maps_per_instance`, `max_map_series`) and take the places freed at
//! their instance's next report.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use aether_core::{
    Wave,
    report::{InstanceReport, MapReport, is_report},
};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use serde::Serialize;

mod metrics;

use self::metrics::InstanceMetrics;

/// Origins whose observed waves are remembered (the least recently seen
/// are forgotten past it).
const MAX_ORIGINS: usize = 16_384;

/// One instance on the dashboard.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct InstanceRow {
    /// Its name.
    pub instance: String,
    /// `embedded` or `nats`.
    pub medium: String,
    /// Its connection state.
    pub connection: String,
    /// Waves its vibrators sent out.
    pub published: u64,
    /// Of those, the waves the gateway observed.
    pub observed: u64,
    /// Sent and not observed by the gateway (as of its last report).
    pub unobserved: i64,
    /// Its drops, by reason (those with some).
    pub dropped: Vec<(String, u64)>,
    /// Waves in its queues, and their capacity.
    pub queued: u64,
    /// Total capacity of its queues.
    pub queue_capacity: u64,
    /// Waves waiting in its outbox.
    pub outbox_len: u64,
    /// Messages it refused as not waves.
    pub malformed: u64,
    /// Milliseconds since its last report.
    pub last_report_ms: u64,
    /// Its replicas of replicated maps that are exported (`max_maps_per_instance`, `max_map_series`).
    pub maps: Vec<MapRow>,
}

/// One replica of a replicated map on the dashboard.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MapRow {
    /// The map.
    pub map: String,
    /// The replica's node name.
    pub node: String,
    /// Keys set.
    pub keys: u64,
    /// Live peers.
    pub peers: u64,
    /// Changes applied.
    pub applied: u64,
    /// Entries anti-entropy brought in.
    pub repaired: u64,
    /// What it refused, by reason (those with some).
    pub refused: Vec<(String, u64)>,
}

struct Instance {
    report: InstanceReport,
    last_seen: Instant,
    observed: u64,
    unobserved: i64,
    /// The replicas of its report that are exported, by map and node.
    exported: HashSet<MapKey>,
    /// Its replicas not exported, by [`UNEXPORTED`] reason.
    unexported: [u64; 2],
}

/// A replica: its map and node.
type MapKey = (String, String);

/// Why a replica is not exported: the label values of
/// `aether_gateway_map_replicas_unexported`.
const UNEXPORTED: [&str; 2] = ["max_maps_per_instance", "max_map_series"];

fn key_of(map: &MapReport) -> MapKey {
    (map.map.clone(), map.node.clone())
}

impl Instance {
    /// The replicas of its report that are exported.
    fn exported_maps(&self) -> impl Iterator<Item = &MapReport> {
        self.report
            .maps
            .iter()
            .filter(|m| self.exported.contains(&(m.map.clone(), m.node.clone())))
    }
}

/// The waves `report`'s vibrators sent out (at most `u64::MAX`: the counts
/// are the reporter's, whatever they are).
fn published(report: &InstanceReport) -> u64 {
    report
        .vibrators
        .iter()
        .map(|v| v.published)
        .fold(0, u64::saturating_add)
}

/// The instances that report, bounded.
pub(crate) struct Instances {
    max: usize,
    gone_after: Duration,
    by_name: HashMap<String, Instance>,
    /// Waves observed by origin, and the order origins were first seen in.
    observed: HashMap<u64, u64>,
    order: VecDeque<u64>,
    metrics: InstanceMetrics,
    refused: u64,
    last_refusal_log: Option<Instant>,
    /// Most replicas exported per instance, and in all.
    max_maps_per_instance: usize,
    max_map_series: usize,
    /// Replicas exported now, in all.
    map_series: usize,
    /// Replicas not exported now, by [`UNEXPORTED`] reason.
    unexported: [u64; 2],
    /// Since when the gateway has not heard the bus (its connection down).
    deaf_since: Option<Instant>,
    /// Instances marked gone, and when: shown until they report again or
    /// for [`GONE_SHOWN`] (at most `max`).
    gone: HashMap<String, Instant>,
}

/// How long an instance marked gone is shown as gone
/// (`aether_gateway_instance_gone`), unless it reports again.
pub(crate) const GONE_SHOWN: Duration = Duration::from_secs(3600);

impl Instances {
    pub(crate) fn new(
        registry: &Registry,
        max: usize,
        gone_after: Duration,
    ) -> Result<Self, prometheus::Error> {
        Ok(Self {
            max,
            gone_after,
            by_name: HashMap::new(),
            observed: HashMap::new(),
            order: VecDeque::new(),
            metrics: InstanceMetrics::new(registry)?,
            refused: 0,
            last_refusal_log: None,
            max_maps_per_instance: aether_core::report::MAX_REPORTED_MAPS,
            max_map_series: usize::MAX,
            map_series: 0,
            unexported: [0; 2],
            deaf_since: None,
            gone: HashMap::new(),
        })
    }

    /// Exports at most `per_instance` replicas of each instance and
    /// `total` in all (`max_maps_per_instance`, `max_map_series`).
    pub(crate) fn map_limits(mut self, per_instance: usize, total: usize) -> Self {
        self.max_maps_per_instance = per_instance;
        self.max_map_series = total;
        self
    }

    /// Takes a wave the observer took: a report updates its instance; any
    /// other wave (reflections excluded: they carry their source's origin
    /// but another sent them) counts for its origin. `true` for a report.
    pub(crate) fn take(&mut self, wave: &Wave, now: Instant) -> bool {
        if is_report(wave.channel()) {
            self.take_report(wave, now);
            return true;
        }
        if !wave.is_reflected() && wave.origin() != 0 {
            let origin = wave.origin();
            match self.observed.get_mut(&origin) {
                Some(n) => *n += 1,
                None => {
                    if self.order.len() >= MAX_ORIGINS
                        && let Some(oldest) = self.order.pop_front()
                    {
                        self.observed.remove(&oldest);
                    }
                    self.observed.insert(origin, 1);
                    self.order.push_back(origin);
                }
            }
        }
        false
    }

    fn take_report(&mut self, wave: &Wave, now: Instant) {
        let report = match InstanceReport::parse(wave) {
            Ok(report) => report,
            Err(error) => return self.refuse("malformed", &error.to_string(), now),
        };
        // An instance reports in its own name: the wave's source is the
        // instance (and where signatures are required, the arrival check
        // proved it), so no one reports for another.
        if wave.source() != Some(report.instance.as_str()) {
            let why = format!(
                "the report of {:?} comes from {:?}",
                report.instance,
                wave.source().unwrap_or("no source")
            );
            return self.refuse("not_its_own", &why, now);
        }
        if !self.by_name.contains_key(&report.instance) && self.by_name.len() >= self.max {
            let why = format!("{} instances report already", self.max);
            return self.refuse("too_many_instances", &why, now);
        }
        self.not_gone(&report.instance);
        if report.leaving {
            // It drained and said so: gone on purpose, not lost. What it
            // sent and the gateway never saw outlives it.
            if let Some(mut instance) = self.by_name.remove(&report.instance) {
                (_, instance.unobserved) = self.reconcile(&report);
                self.forget(&report.instance, &instance);
            }
            tracing::info!(
                instance = report.instance,
                "instance left: it drained and said so"
            );
            self.metrics.left.inc();
            self.metrics.instances.set(self.by_name.len() as i64);
            self.set_unexported();
            return;
        }
        let (observed, unobserved) = self.reconcile(&report);
        let name = report.instance.clone();
        let old = self.by_name.remove(&name);
        if let Some(old) = &old {
            self.forget_places(old);
        }
        let (exported, unexported) = self.places(&report, old.as_ref().map(|o| &o.exported));
        let instance = Instance {
            report,
            last_seen: now,
            observed,
            unobserved,
            exported,
            unexported,
        };
        if let Some(old) = &old {
            self.metrics.forget_maps(&name, old, &instance);
        }
        self.map_series += instance.exported.len();
        for (sum, n) in self.unexported.iter_mut().zip(instance.unexported) {
            *sum += n;
        }
        self.metrics.set(&name, &instance);
        self.by_name.insert(name, instance);
        self.metrics.instances.set(self.by_name.len() as i64);
        self.set_unexported();
    }

    /// Which of `report`'s replicas are exported, and how many are not by
    /// reason: those exported before (`before`) first, so that they keep
    /// their places, then the others in the report's order, while the
    /// instance's and the total's places last. Its own earlier places must
    /// already be given back ([`Instances::forget_places`]).
    fn places(
        &self,
        report: &InstanceReport,
        before: Option<&HashSet<MapKey>>,
    ) -> (HashSet<MapKey>, [u64; 2]) {
        let mut exported = HashSet::new();
        let mut unexported = [0; 2];
        let mut seen = HashSet::new();
        let was = |m: &MapReport| before.is_some_and(|b| b.contains(&key_of(m)));
        let kept = report.maps.iter().filter(|m| was(m));
        let new = report.maps.iter().filter(|m| !was(m));
        // Replicas within the instance's own bound, exported or not.
        let mut within = 0;
        for map in kept.chain(new) {
            let key = key_of(map);
            if !seen.insert(key.clone()) {
                continue;
            }
            if within >= self.max_maps_per_instance {
                unexported[0] += 1;
                continue;
            }
            within += 1;
            if self.map_series + exported.len() >= self.max_map_series {
                unexported[1] += 1;
            } else {
                exported.insert(key);
            }
        }
        (exported, unexported)
    }

    /// Removes a departed instance's series and places; what it sent and
    /// the gateway never saw outlives it in the total.
    fn forget(&mut self, name: &str, instance: &Instance) {
        self.metrics.remove(name, instance);
        self.forget_places(instance);
        self.metrics
            .unobserved_total
            .inc_by(u64::try_from(instance.unobserved).unwrap_or(0));
    }

    /// Shows `name` as gone, the oldest gone one making room past `max`.
    fn mark_gone(&mut self, name: String, now: Instant) {
        if self.gone.len() >= self.max.max(1)
            && let Some(oldest) = self
                .gone
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(n, _)| n.clone())
        {
            self.not_gone(&oldest);
        }
        self.metrics.gone_now.with_label_values(&[&name]).set(1);
        self.gone.insert(name, now);
    }

    /// `name` is no longer shown as gone (it reports again, or was shown
    /// long enough).
    fn not_gone(&mut self, name: &str) {
        if self.gone.remove(name).is_some() {
            let _ = self.metrics.gone_now.remove_label_values(&[name]);
        }
    }

    /// Gives back `instance`'s places and takes its unexported replicas
    /// out of the sums.
    fn forget_places(&mut self, instance: &Instance) {
        self.map_series -= instance.exported.len();
        for (sum, n) in self.unexported.iter_mut().zip(instance.unexported) {
            *sum -= n;
        }
    }

    fn set_unexported(&self) {
        for (reason, n) in UNEXPORTED.iter().zip(self.unexported) {
            self.metrics
                .unexported
                .with_label_values(&[reason])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// What the gateway saw of `report`'s vibrators, and what it has not
    /// seen of what they sent: published, less what still waits in the
    /// instance's outboxes (not sent yet, so nobody could see it), less
    /// what was observed, and never below 0. Recomputed at each report and
    /// at each snapshot, since waves may arrive after the report that
    /// counted them (durable waves come through a consumer of their own,
    /// and an outbox drains later).
    fn reconcile(&self, report: &InstanceReport) -> (u64, i64) {
        let observed: u64 = report
            .vibrators
            .iter()
            .filter_map(|v| u64::from_str_radix(&v.origin, 16).ok())
            .map(|origin| self.observed.get(&origin).copied().unwrap_or(0))
            .fold(0, u64::saturating_add);
        let in_flight = report.outbox_len.saturating_add(report.durable_outbox_len);
        let sent = published(report).saturating_sub(in_flight);
        let unobserved = i64::try_from(sent.saturating_sub(observed)).unwrap_or(i64::MAX);
        (observed, unobserved)
    }

    fn refuse(&mut self, reason: &'static str, why: &str, now: Instant) {
        self.refused += 1;
        self.metrics.refused.with_label_values(&[reason]).inc();
        let quiet = self
            .last_refusal_log
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(10));
        if !quiet {
            tracing::warn!(
                reason,
                refused = self.refused,
                "instance report refused: {why}"
            );
            self.last_refusal_log = Some(now);
        }
    }

    /// Marks gone the instances whose reports stopped, and reconciles the
    /// others again with what was observed since their last report. While
    /// the gateway itself cannot hear the bus (`hearing` false: its own
    /// connection is down), no report can reach it, so none is marked
    /// gone; once it hears again, every instance has `instance_gone_ms`
    /// anew to report.
    pub(crate) fn sweep(&mut self, now: Instant, hearing: bool) {
        match (hearing, self.deaf_since) {
            (false, None) => {
                self.deaf_since = Some(now);
                tracing::info!(
                    "the gateway does not hear the bus: no instance is marked gone until it does"
                );
            }
            (true, Some(_)) => {
                self.deaf_since = None;
                for instance in self.by_name.values_mut() {
                    instance.last_seen = instance.last_seen.max(now);
                }
            }
            _ => {}
        }
        let names: Vec<String> = self.by_name.keys().cloned().collect();
        for name in names {
            let (observed, unobserved) = self.reconcile(&self.by_name[&name].report);
            let instance = self.by_name.get_mut(&name).expect("listed above");
            if (instance.observed, instance.unobserved) != (observed, unobserved) {
                instance.observed = observed;
                instance.unobserved = unobserved;
                self.metrics.set(&name, instance);
            }
        }
        let gone_after = self.gone_after;
        let gone: Vec<String> = self
            .by_name
            .iter()
            .filter(|_| hearing)
            .filter(|(_, i)| now.duration_since(i.last_seen) > gone_after)
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(instance) = self.by_name.remove(&name) {
                tracing::warn!(
                    instance = name,
                    "instance gone: its reports stopped without a leaving report (it crashed, \
                     was killed, or is cut off from the bus)"
                );
                self.forget(&name, &instance);
                self.metrics.gone.inc();
                self.mark_gone(name, now);
            }
        }
        let shown: Vec<String> = self
            .gone
            .iter()
            .filter(|(_, at)| now.duration_since(**at) >= GONE_SHOWN)
            .map(|(name, _)| name.clone())
            .collect();
        for name in shown {
            self.not_gone(&name);
        }
        self.metrics.instances.set(self.by_name.len() as i64);
        self.set_unexported();
    }

    /// The instances for the dashboard, by name.
    pub(crate) fn rows(&self, now: Instant) -> Vec<InstanceRow> {
        let mut rows: Vec<InstanceRow> = self
            .by_name
            .iter()
            .map(|(name, i)| {
                let report = &i.report;
                InstanceRow {
                    instance: name.clone(),
                    medium: report.medium.clone(),
                    connection: report.connection.clone(),
                    published: published(report),
                    observed: i.observed,
                    unobserved: i.unobserved,
                    dropped: report
                        .dropped
                        .iter()
                        .filter(|(_, n)| **n > 0)
                        .map(|(r, n)| (r.clone(), *n))
                        .collect(),
                    queued: report.queued,
                    queue_capacity: report.queue_capacity,
                    outbox_len: report.outbox_len,
                    malformed: report.malformed,
                    last_report_ms: now.duration_since(i.last_seen).as_millis() as u64,
                    maps: i
                        .exported_maps()
                        .map(|m| MapRow {
                            map: m.map.clone(),
                            node: m.node.clone(),
                            keys: m.keys,
                            peers: m.peers,
                            applied: m.applied,
                            repaired: m.repaired,
                            refused: m.refused.iter().map(|(r, n)| (r.clone(), *n)).collect(),
                        })
                        .collect(),
                }
            })
            .collect();
        rows.sort_by(|a, b| a.instance.cmp(&b.instance));
        rows
    }
}

#[cfg(test)]
mod tests {
    use aether_core::{Channel, report::VibratorReport};

    use super::*;

    /// `wave` as sent by `source`: the envelope written with that source
    /// name.
    fn sourced(wave: &Wave, source: &str) -> Wave {
        use aether_core::wire::{self, HEADER_LEN};
        // Version 1: the source name length at a fixed offset.
        let body = wire::encode_as(wire::WireVersion::V1, wave).to_vec();
        assert_eq!(body[HEADER_LEN - 1], 0, "no source yet");
        let mut out = body[..HEADER_LEN].to_vec();
        out[HEADER_LEN - 1] = source.len() as u8;
        out.extend_from_slice(source.as_bytes());
        out.extend_from_slice(&body[HEADER_LEN..]);
        wire::decode(wave.channel().clone(), out.into(), &wire::Limits::default()).unwrap()
    }

    fn report_wave(report: &InstanceReport) -> Wave {
        let channel = aether_core::report::channel_of(&report.instance).unwrap();
        let wave = Wave::new(channel, serde_json::to_vec(report).unwrap());
        sourced(&wave, &report.instance)
    }

    fn report(instance: &str, origin: u64, published: u64) -> InstanceReport {
        InstanceReport {
            instance: instance.into(),
            seq: 1,
            interval_ms: 1000,
            medium: "nats".into(),
            connection: "connected".into(),
            dropped: [("queue_full".to_string(), 3)].into_iter().collect(),
            durable_outbox_bytes: 1200,
            durable_outbox_max_bytes: 4096,
            durable_captures: 2,
            vibrators: vec![VibratorReport {
                name: "beta".into(),
                origin: format!("{origin:016x}"),
                published,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn reports_reconcile_bounded_and_gone() {
        let registry = Registry::new();
        let mut instances = Instances::new(&registry, 2, Duration::from_secs(5)).unwrap();
        let now = Instant::now();
        // Three waves of one origin observed, and a report of five sent.
        let mut wave = Wave::new("orders.created", "x");
        wave = aether_core::wire::decode(
            Channel::new("orders.created"),
            {
                // Version 1: the origin at offset 28.
                let mut body =
                    aether_core::wire::encode_as(aether_core::wire::WireVersion::V1, &wave)
                        .to_vec();
                body[28..36].copy_from_slice(&7u64.to_le_bytes());
                body.into()
            },
            &aether_core::wire::Limits::default(),
        )
        .unwrap();
        for _ in 0..3 {
            assert!(!instances.take(&wave, now));
        }
        assert!(instances.take(&report_wave(&report("beta-1", 7, 5)), now));
        let rows = instances.rows(now);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].published, rows[0].observed, rows[0].unobserved),
            (5, 3, 2)
        );
        let text = render(&registry);
        for series in [
            "aether_instance_durable_outbox_waves{instance=\"beta-1\"} 0",
            "aether_instance_durable_outbox_bytes{instance=\"beta-1\"} 1200",
            "aether_instance_durable_outbox_capacity_bytes{instance=\"beta-1\"} 4096",
            "aether_instance_durable_captures{instance=\"beta-1\"} 2",
        ] {
            assert!(text.contains(series), "{series}: {text}");
        }
        assert!(
            text.contains("aether_instance_unobserved_waves{instance=\"beta-1\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "aether_instance_dropped_waves{instance=\"beta-1\",reason=\"queue_full\"} 3"
            ),
            "{text}"
        );
        // A second instance fits, a third is refused; garbage is refused.
        assert!(instances.take(&report_wave(&report("beta-2", 8, 0)), now));
        assert!(instances.take(&report_wave(&report("beta-3", 9, 0)), now));
        let garbage = Wave::new(Channel::new("_report.beta-4"), "{\"instance\": 5}");
        assert!(instances.take(&garbage, now));
        let mismatched = Wave::new(
            Channel::new("_report.beta-5"),
            serde_json::to_vec(&report("beta-6", 1, 0)).unwrap(),
        );
        assert!(instances.take(&mismatched, now));
        // Well formed, but sent by another than the instance it names.
        let for_another = sourced(
            &Wave::new(
                Channel::new("_report.beta-1"),
                serde_json::to_vec(&report("beta-1", 7, 999)).unwrap(),
            ),
            "service-alpha",
        );
        assert!(instances.take(&for_another, now));
        assert_eq!(instances.rows(now).len(), 2);
        let text = render(&registry);
        assert!(
            text.contains(
                "aether_gateway_instance_reports_refused_total{reason=\"too_many_instances\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("aether_gateway_instance_reports_refused_total{reason=\"malformed\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "aether_gateway_instance_reports_refused_total{reason=\"not_its_own\"} 1"
            ),
            "{text}"
        );
        assert_eq!(
            instances.rows(now)[0].published,
            5,
            "beta-1's own report stands"
        );
        // Silent past the timeout: gone, and its series with it, but for
        // the one that says it is gone.
        instances.sweep(now + Duration::from_secs(6), true);
        assert!(instances.rows(now).is_empty());
        let text = render(&registry);
        let beta: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("instance=\"beta-1\""))
            .collect();
        assert_eq!(
            beta,
            ["aether_gateway_instance_gone{instance=\"beta-1\"} 1"],
            "{text}"
        );
        assert!(
            text.contains("aether_gateway_instances_gone_total 2"),
            "{text}"
        );
        // What beta-1 sent and was never observed outlives its series.
        assert!(
            text.contains("aether_gateway_unobserved_waves_total 2"),
            "{text}"
        );
    }

    /// An instance that drains says so: it is counted as left at once,
    /// its series go, and a later sweep does not count it as gone.
    #[test]
    fn a_leaving_report_is_counted_as_left_not_gone() {
        let registry = Registry::new();
        let mut instances = Instances::new(&registry, 2, Duration::from_secs(5)).unwrap();
        let now = Instant::now();
        let mut beta = report("beta-1", 7, 1);
        beta.rate_limited = 250;
        beta.refused_emits.insert("outbox_full".into(), 1244);
        assert!(instances.take(&report_wave(&beta), now));
        let text = render(&registry);
        for series in [
            "aether_instance_rate_limited_emits{instance=\"beta-1\"} 250",
            "aether_instance_refused_emits{instance=\"beta-1\",reason=\"outbox_full\"} 1244",
        ] {
            assert!(text.contains(series), "{series}: {text}");
        }
        assert!(!text.contains("reason=\"too_large\""), "{text}");
        assert!(instances.take(&report_wave(&report("alpha-1", 8, 1)), now));
        let leaving = InstanceReport {
            leaving: true,
            seq: 2,
            ..report("beta-1", 7, 1)
        };
        assert!(instances.take(&report_wave(&leaving), now));
        assert_eq!(instances.rows(now).len(), 1);
        instances.sweep(now + Duration::from_secs(6), true);
        let text = render(&registry);
        assert!(!text.contains("instance=\"beta-1\""), "{text}");
        assert!(
            text.contains("aether_gateway_instances_left_total 1"),
            "{text}"
        );
        assert!(
            text.contains("aether_gateway_instances_gone_total 1"),
            "alpha only: {text}"
        );
        assert!(
            text.contains("aether_gateway_instance_gone{instance=\"alpha-1\"} 1")
                && !text.contains("aether_gateway_instance_gone{instance=\"beta-1\"}"),
            "{text}"
        );
        // Alpha back: no longer gone. Gone again, it is shown for an hour.
        let later = now + Duration::from_secs(7);
        assert!(instances.take(&report_wave(&report("alpha-1", 8, 1)), later));
        assert!(!render(&registry).contains("aether_gateway_instance_gone{"));
        instances.sweep(later + Duration::from_secs(6), true);
        assert!(render(&registry).contains("aether_gateway_instance_gone{instance=\"alpha-1\"} 1"));
        instances.sweep(later + Duration::from_secs(6) + GONE_SHOWN, true);
        assert!(!render(&registry).contains("aether_gateway_instance_gone{"));
    }

    /// While the gateway does not hear the bus, silence proves nothing: no
    /// instance is marked gone, and once it hears again each has the full
    /// time to report.
    #[test]
    fn nobody_is_gone_while_the_gateway_cannot_hear() {
        let registry = Registry::new();
        let mut instances = Instances::new(&registry, 2, Duration::from_secs(5)).unwrap();
        let now = Instant::now();
        assert!(instances.take(&report_wave(&report("beta-1", 7, 1)), now));
        instances.sweep(now + Duration::from_secs(30), false);
        assert_eq!(instances.rows(now).len(), 1, "kept while deaf");
        instances.sweep(now + Duration::from_secs(31), true);
        assert_eq!(instances.rows(now).len(), 1, "a fresh start once it hears");
        instances.sweep(now + Duration::from_secs(37), true);
        assert!(
            instances.rows(now).is_empty(),
            "silent past the timeout after"
        );
        assert!(render(&registry).contains("aether_gateway_instances_gone_total 1"));
    }

    /// Counts are the reporter's to give: sums of huge ones saturate
    /// rather than overflow.
    #[test]
    fn huge_counts_saturate() {
        let registry = Registry::new();
        let mut instances = Instances::new(&registry, 2, Duration::from_secs(5)).unwrap();
        let mut huge = report("beta-1", 7, u64::MAX);
        huge.vibrators.push(huge.vibrators[0].clone());
        let now = Instant::now();
        assert!(instances.take(&report_wave(&huge), now));
        assert_eq!(instances.rows(now)[0].published, u64::MAX);
    }

    #[test]
    fn replicated_maps_are_exported_per_replica_and_forgotten_when_they_go() {
        let registry = Registry::new();
        let mut instances = Instances::new(&registry, 2, Duration::from_secs(5)).unwrap();
        let now = Instant::now();
        let mut with_map = report("home-1", 7, 1);
        with_map.maps.push(aether_core::report::MapReport {
            map: "home".into(),
            node: "lights".into(),
            keys: 3,
            peers: 2,
            applied: 9,
            repaired: 4,
            refused: [("not_owner".to_string(), 1)].into_iter().collect(),
            ..Default::default()
        });
        assert!(instances.take(&report_wave(&with_map), now));
        let text = render(&registry);
        for line in [
            r#"aether_state_keys{instance="home-1",map="home",node="lights"} 3"#,
            r#"aether_state_peers{instance="home-1",map="home",node="lights"} 2"#,
            r#"aether_state_repaired_entries{instance="home-1",map="home",node="lights"} 4"#,
            r#"aether_state_refused{instance="home-1",map="home",node="lights",reason="not_owner"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        let rows = instances.rows(now);
        assert_eq!(rows[0].maps[0].keys, 3);
        assert_eq!(rows[0].maps[0].refused, [("not_owner".to_string(), 1)]);

        // The replica closed: its series go with the next report.
        let mut without = report("home-1", 7, 1);
        without.seq = 2;
        assert!(instances.take(&report_wave(&without), now));
        assert!(!render(&registry).contains("aether_state_keys{"));

        // A report naming a refusal nobody makes is refused whole.
        let mut odd = with_map.clone();
        odd.maps[0].refused = [("bribed".to_string(), 1)].into_iter().collect();
        assert!(InstanceReport::parse(&report_wave(&odd)).is_err());
        let mut dotted = with_map;
        dotted.maps[0].map = "two.tokens".into();
        assert!(InstanceReport::parse(&report_wave(&dotted)).is_err());
    }

    /// A report of `instance` with `maps` replicas, each with every
    /// refusal reason, named as long as names may be.
    fn report_with_maps(instance: &str, maps: usize) -> InstanceReport {
        let mut report = report(instance, 1, 1);
        for n in 0..maps {
            report.maps.push(aether_core::report::MapReport {
                map: format!("map-{n:02}"),
                node: format!("{instance}-node"),
                keys: 1,
                refused: aether_core::report::MAP_REFUSALS
                    .iter()
                    .map(|r| (r.to_string(), 1))
                    .collect(),
                ..Default::default()
            });
        }
        report
    }

    /// The replicas exported per instance and in all are bounded (as with
    /// 250 made-up instances of 64 maps each), the rest counted by reason;
    /// a replica exported keeps its place, and the places of an instance
    /// gone are taken by others.
    #[test]
    fn map_series_are_bounded_and_the_rest_counted() {
        let registry = Registry::new();
        let defaults = crate::GatewayConfig::default();
        let mut instances = Instances::new(&registry, 256, Duration::from_secs(5))
            .unwrap()
            .map_limits(defaults.max_maps_per_instance, defaults.max_map_series);
        let now = Instant::now();
        for n in 0..250 {
            let name = format!("forged-instance-{n:03}");
            assert!(instances.take(&report_wave(&report_with_maps(&name, 64)), now));
        }
        let started = Instant::now();
        let text = render(&registry);
        let took = started.elapsed();
        let keys = text
            .lines()
            .filter(|l| l.starts_with("aether_state_keys{"))
            .count();
        let series = text.lines().filter(|l| !l.starts_with('#')).count();
        println!(
            "{} bytes, {series} series, rendered in {took:?}",
            text.len()
        );
        assert_eq!(keys, 256, "replicas exported in all");
        assert!(text.len() < 1 << 20, "{} bytes", text.len());
        // 16 each: the first 16 instances.
        let of = |name: &str| {
            text.lines()
                .filter(|l| l.starts_with("aether_state_keys{") && l.contains(name))
                .count()
        };
        assert_eq!(of("\"forged-instance-000\""), 16);
        assert_eq!(of("\"forged-instance-015\""), 16);
        assert_eq!(of("\"forged-instance-016\""), 0);
        let unexported = |reason: &str| {
            let series = format!("aether_gateway_map_replicas_unexported{{reason=\"{reason}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str()))
                .and_then(|n| n.parse::<u64>().ok())
        };
        assert_eq!(unexported("max_maps_per_instance"), Some(250 * 48));
        assert_eq!(unexported("max_map_series"), Some(234 * 16));

        // A second report keeps the places; an instance gone gives its
        // places to the others' next reports.
        let mut again = report_with_maps("forged-instance-000", 64);
        again.seq = 2;
        assert!(instances.take(&report_wave(&again), now));
        let later = now + Duration::from_secs(4);
        for n in 1..250 {
            let mut report = report_with_maps(&format!("forged-instance-{n:03}"), 64);
            report.seq = 2;
            assert!(instances.take(&report_wave(&report), later));
        }
        instances.sweep(now + Duration::from_secs(6), true);
        let mut next = report_with_maps("forged-instance-016", 64);
        next.seq = 3;
        assert!(instances.take(&report_wave(&next), later));
        let text = render(&registry);
        let keys = |text: &str, name: &str| {
            text.lines()
                .filter(|l| l.starts_with("aether_state_keys{") && l.contains(name))
                .count()
        };
        assert_eq!(keys(&text, "instance="), 256);
        assert_eq!(keys(&text, "\"forged-instance-000\""), 0);
        assert_eq!(keys(&text, "\"forged-instance-001\""), 16);
        assert_eq!(keys(&text, "\"forged-instance-016\""), 16);
        assert_eq!(keys(&text, "\"forged-instance-017\""), 0);
        let unexported = |reason: &str| {
            let series = format!("aether_gateway_map_replicas_unexported{{reason=\"{reason}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str()))
                .and_then(|n| n.parse::<u64>().ok())
        };
        assert_eq!(unexported("max_maps_per_instance"), Some(249 * 48));
        assert_eq!(unexported("max_map_series"), Some(233 * 16));
    }

    fn render(registry: &Registry) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }
}
