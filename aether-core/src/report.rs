//! Instance reports: every aether can tell the bus, at an interval, what it
//! did and what it dropped, so that an operator sees the drops inside every
//! service, not only the observer's own.
//!
//! With `[aether.report] interval_ms` above 0, the aether emits an
//! [`InstanceReport`] (JSON) on the system channel
//! `_report.<instance>` every interval: its counters (emitted, delivered,
//! drops by reason), its connection (state, malformed messages, outbox
//! use), its receive queues, and each vibrator's own counts. The gateway
//! observes these waves like any other, exports them per instance, and marks
//! an instance gone when its reports stop.
//!
//! A report travels in order with the waves its aether emitted before it,
//! so an observer that takes both from one stream can reconcile them: a
//! vibrator's `published` count against the waves of that origin it saw.
//!
//! Reports come off the network: [`InstanceReport::parse`] bounds every
//! field and refuses the rest with a [`ReportError`]; an observer should
//! bound how many instances it tracks, since anyone who may publish on the
//! bus may publish a report.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use aether_core::{Aether, AetherConfig, Vibrator, config::ReportConfig, report::InstanceReport};
//!
//! let config = AetherConfig {
//!     report: ReportConfig { interval: std::time::Duration::from_millis(100), instance: Some("shop-1".into()) },
//!     ..Default::default()
//! };
//! let aether = Aether::new(config)?;
//! let mut operator = Vibrator::create("operator", &aether).await?;
//! operator.resonate_on("_report.*").await?;
//! let wave = operator.receive().await.unwrap();
//! let report = InstanceReport::parse(&wave)?;
//! assert_eq!(report.instance, "shop-1");
//! assert!(report.vibrators.iter().any(|v| v.name == "operator"));
//! # Ok(()) }
//! ```

use std::{collections::BTreeMap, fmt, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{Channel, DropReason, EmitErrorKind, StatsSnapshot, Wave};

/// The first token of report channels.
pub const REPORT_PREFIX: &str = crate::system::REPORT_PREFIX;

/// The largest report accepted, in bytes.
pub const MAX_REPORT_BYTES: usize = 64 * 1024;

/// Most vibrators one report lists (the busiest first).
pub const MAX_REPORTED_VIBRATORS: usize = 64;

/// Most replicated maps one report lists.
pub const MAX_REPORTED_MAPS: usize = 64;

/// The reasons a replica of a map refuses what it receives, as reports and
/// metrics name them (`state::Refusal::as_str`, in its order).
pub const MAP_REFUSALS: [&str; 6] = [
    "malformed",
    "future",
    "too_old",
    "not_owner",
    "rate_limited",
    "full",
];

/// What one aether reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceReport {
    /// The instance's name (`[aether.report] instance`).
    pub instance: String,
    /// Counts up from 1 with each report of this run.
    pub seq: u64,
    /// The interval between reports, in milliseconds.
    pub interval_ms: u64,
    /// `embedded` or `nats`.
    pub medium: String,
    /// The connection's state (`ConnectionState::as_str`).
    pub connection: String,
    /// Waves accepted for emission by the aether.
    pub emitted: u64,
    /// Waves put in its receive queues.
    pub delivered: u64,
    /// Waves dropped, by reason (`DropReason::as_str`), every reason listed.
    pub dropped: BTreeMap<String, u64>,
    /// Emits its vibrators refused over their rate limits (after any wait
    /// the limit allows): not sent, the caller told.
    #[serde(default)]
    pub rate_limited: u64,
    /// Emits that waited for their turn under a rate limit that shapes,
    /// then went out.
    #[serde(default)]
    pub rate_limit_waits: u64,
    /// Waves on which a vibrator's wave handler (`on_wave`) panicked; left
    /// out while none did.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub handler_panics: u64,
    /// Emits refused, by kind (`EmitErrorKind::as_str`: `outbox_full`,
    /// `rate_limited`, `too_large`, ...): nothing sent, the caller told.
    /// Only kinds that refused one are listed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused_emits: BTreeMap<String, u64>,
    /// Messages off the network that were not waves.
    pub malformed: u64,
    /// Messages the client dropped for a full subscription buffer.
    pub slow_consumer_events: u64,
    /// Times the connection was lost.
    pub disconnects: u64,
    /// Waves waiting in the outbox, and its capacity.
    pub outbox_len: u64,
    /// Most waves the outbox holds.
    pub outbox_capacity: u64,
    /// Waves of durable channels accepted and not stored by JetStream yet.
    #[serde(default)]
    pub durable_outbox_len: u64,
    /// Bytes of those waves, against `durable_outbox_max_bytes`.
    #[serde(default)]
    pub durable_outbox_bytes: u64,
    /// `durability.outbox_max_bytes` (0 without durable channels).
    #[serde(default)]
    pub durable_outbox_max_bytes: u64,
    /// Streams that capture its durable channels
    /// (`ConnectionStatus::durable_captures`): more than 1 is a
    /// misconfiguration that strands waves across a cut link.
    #[serde(default)]
    pub durable_captures: u64,
    /// Waves in its receive queues now, and their total capacity.
    pub queued: u64,
    /// Total capacity of its receive queues.
    pub queue_capacity: u64,
    /// Its vibrators (at most [`MAX_REPORTED_VIBRATORS`]).
    pub vibrators: Vec<VibratorReport>,
    /// Its replicas of replicated maps (at most [`MAX_REPORTED_MAPS`]).
    #[serde(default)]
    pub maps: Vec<MapReport>,
    /// The last report of an aether that drains: it goes on purpose.
    #[serde(default)]
    pub leaving: bool,
    /// Its keeper's counts, if it runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keeper: Option<KeeperStats>,
    /// Its clock's offset from the bus's time, milliseconds (the bus's
    /// time is its clock plus it; [`crate::bustime`]).
    #[serde(default)]
    pub clock_offset_ms: i64,
    /// How far that offset may be off, milliseconds.
    #[serde(default)]
    pub clock_uncertainty_ms: u64,
    /// The bus's time sources it heard at its last measurement.
    #[serde(default)]
    pub clock_sources: u64,
}

/// One replica of a replicated map in an [`InstanceReport`]
/// ([`crate::state`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapReport {
    /// The map's name.
    pub map: String,
    /// The replica's node name.
    pub node: String,
    /// Keys set.
    pub keys: u64,
    /// Tombstones held.
    pub tombstones: u64,
    /// Changes applied since it opened.
    pub applied: u64,
    /// What it refused, by reason ([`MAP_REFUSALS`]); reasons with none are
    /// left out.
    pub refused: BTreeMap<String, u64>,
    /// Entries anti-entropy brought in.
    pub repaired: u64,
    /// Tombstones collected.
    pub collected: u64,
    /// Live peers.
    pub peers: u64,
    /// Changes its watchers missed.
    pub watch_lagged: u64,
    /// Changes its ledger could not write.
    pub ledger_failed: u64,
}

/// What a keeper ([`crate::state::Keeper`]) did, counted since it
/// started; in an [`InstanceReport`] of the aether it runs on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeeperStats {
    /// Maps it keeps (open).
    pub maps: usize,
    /// Maps its directory holds that are not open yet (a start opens them
    /// in the background).
    pub waiting_maps: usize,
    /// Maps written to, which its patterns name, but not kept: `max_maps`
    /// was reached.
    pub refused_maps: u64,
    /// Maps not kept because the writer that brought them has
    /// `max_maps_per_writer` kept already.
    pub refused_writer_maps: u64,
    /// Maps it could not open (their ledger unreadable, for one).
    pub failed_maps: u64,
    /// Maps closed and forgotten because they stayed empty.
    pub forgotten_maps: u64,
    /// Changes its maps' ledgers could not write (a full disk), in all: no
    /// write they carried was acknowledged until written.
    pub ledger_failed: u64,
    /// Maps whose ledger was damaged when they opened (repaired: the
    /// damage logged with the map's name, the damaged files kept aside).
    pub ledgers_damaged: u64,
    /// Writes its maps refused as `full`: past `max_bytes` of all maps,
    /// or a map's own `max_keys` or `max_map_bytes`.
    pub full_writes: u64,
    /// Refusals by its maps of changes stamped more than `max_drift` ahead
    /// of the bus's time (`future`: a writer's clock off and not measured,
    /// or two buses that settled apart and then met); a change offered
    /// again (by repair) counts again. Taken once the bus's time reaches
    /// them.
    pub future_writes: u64,
    /// Bytes of keys and values its open maps hold together.
    pub bytes: u64,
    /// What they may hold together (`max_bytes`).
    pub max_bytes: u64,
}

/// Something that reports a keeper: the state layer registers its
/// keeper with the aether, for the instance reports.
pub(crate) trait KeeperSource: Send + Sync {
    fn keeper_stats(&self) -> KeeperStats;
}

/// Something that reports a replica of a map: the state layer, above the
/// aether, registers its replicas with it ([`crate::Aether`]).
pub(crate) trait MapSource: Send + Sync {
    fn map_report(&self) -> MapReport;
}

/// One vibrator in an [`InstanceReport`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VibratorReport {
    /// Its name.
    pub name: String,
    /// Its instance id, the origin of the waves it emits, as 16 hex digits.
    pub origin: String,
    /// Waves it emitted that went out on the medium
    /// ([`StatsSnapshot::published`]).
    pub published: u64,
    /// Waves put in its queue.
    pub delivered: u64,
    /// Waves in its queue now.
    pub queued: u64,
    /// Its queue's capacity.
    pub capacity: u64,
    /// Waves it did not get, by reason; reasons with none are left out.
    pub dropped: BTreeMap<String, u64>,
}

/// Why a report was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportError(String);

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not an instance report: {}", self.0)
    }
}

impl std::error::Error for ReportError {}

impl InstanceReport {
    /// The report `wave` carries, checked: it must be on a report channel
    /// naming its instance, at most [`MAX_REPORT_BYTES`], valid JSON of this
    /// shape, with names that are vibrator names and at most
    /// [`MAX_REPORTED_VIBRATORS`] vibrators.
    pub fn parse(wave: &Wave) -> Result<Self, ReportError> {
        let bad = |why: String| Err(ReportError(why));
        if !is_report(wave.channel()) {
            return bad(format!(
                "{:?} is not a report channel",
                wave.channel().as_str()
            ));
        }
        let body = wave.payload_bytes();
        if body.len() > MAX_REPORT_BYTES {
            return bad(format!(
                "{} bytes, over the limit of {MAX_REPORT_BYTES}",
                body.len()
            ));
        }
        let report: InstanceReport = match serde_json::from_slice(body) {
            Ok(report) => report,
            Err(e) => return bad(e.to_string()),
        };
        if channel_of(&report.instance).as_ref() != Some(wave.channel()) {
            return bad(format!(
                "instance {:?} does not match its channel {:?}",
                report.instance,
                wave.channel().as_str()
            ));
        }
        if report.vibrators.len() > MAX_REPORTED_VIBRATORS {
            return bad(format!("{} vibrators listed", report.vibrators.len()));
        }
        let reasons = report
            .dropped
            .keys()
            .chain(report.vibrators.iter().flat_map(|v| v.dropped.keys()));
        for reason in reasons {
            if !DropReason::ALL.iter().any(|r| r.as_str() == reason) {
                return bad(format!("unknown drop reason {reason:?}"));
            }
        }
        if let Some(kind) = report
            .refused_emits
            .keys()
            .find(|k| !EmitErrorKind::ALL.iter().any(|e| e.as_str() == k.as_str()))
        {
            return bad(format!("unknown emit refusal {kind:?}"));
        }
        if report.maps.len() > MAX_REPORTED_MAPS {
            return bad(format!("{} maps listed", report.maps.len()));
        }
        for map in &report.maps {
            let token =
                !map.map.is_empty() && !map.map.contains('.') && crate::names::is_name(&map.map);
            if !token || !crate::names::is_name(&map.node) {
                return bad(format!(
                    "map {:?} of node {:?} is not well named",
                    map.map, map.node
                ));
            }
            if let Some(reason) = map
                .refused
                .keys()
                .find(|r| !MAP_REFUSALS.contains(&r.as_str()))
            {
                return bad(format!("unknown refusal {reason:?}"));
            }
        }
        for vibrator in &report.vibrators {
            if !crate::names::is_name(&vibrator.name)
                || vibrator.origin.len() != 16
                || u64::from_str_radix(&vibrator.origin, 16).is_err()
            {
                return bad(format!(
                    "vibrator {:?} of origin {:?} is not well named",
                    vibrator.name, vibrator.origin
                ));
            }
        }
        Ok(report)
    }
}

/// The report channel of `instance`, if it is a valid instance name.
pub fn channel_of(instance: &str) -> Option<Channel> {
    crate::system::report_channel(instance)
}

/// Whether `channel` is a report channel.
pub fn is_report(channel: &Channel) -> bool {
    channel
        .as_str()
        .strip_prefix(REPORT_PREFIX)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// The drops of `stats`: every reason (`all`) or those with some.
pub(crate) fn drops(stats: &StatsSnapshot, all: bool) -> BTreeMap<String, u64> {
    stats
        .drops()
        .filter(|(_, n)| all || *n > 0)
        .map(|(reason, n)| (reason.as_str().to_string(), n))
        .collect()
}

/// Reports every interval: `next` composes and sends one report, or says
/// there is nothing more to report (the aether was closed or dropped). The
/// aether composes and sends its own reports (`Aether::send_report`); this
/// keeps the time.
pub(crate) async fn run<F>(instance: &str, interval: Duration, mut next: impl FnMut() -> Option<F>)
where
    F: std::future::Future<Output = bool>,
{
    if channel_of(instance).is_none() {
        return;
    }
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(sent) = next() else {
            return;
        };
        sent.await;
    }
}

/// Leaves a count out of a report while it is zero, so that a report reads
/// as before to an instance that does not know the field.
fn is_zero(n: &u64) -> bool {
    *n == 0
}
