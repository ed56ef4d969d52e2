//! The gateway's journal: every wave it observes on the channels of
//! `[gateway.journal] channels`, appended to an [`aether_journal`] journal
//! by a writer thread behind a bounded queue, and snapshots of what the
//! gateway counted, so a restarted gateway resumes its counters and its
//! resonance graph.
//!
//! A record is one wave, exactly as it was observed: the channel, then the
//! wave's envelope (`aether_core::wire::encode`, the NATS body):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 2 | channel length C, u16 little-endian |
//! | 2 | C | the channel, UTF-8 (a hopping wave's wire channel as observed) |
//! | 2 + C | rest | the envelope (ARCHITECTURE.md, "Wire format") |
//!
//! The record's time is when the gateway observed the wave (Unix ms).
//!
//! Journaling never slows the bus: the observer hands each wave (a cheap
//! clone) to the writer with `try_send` on a bounded queue
//! (`queue_capacity`); a full queue drops the wave from the journal and
//! counts it (`aether_gateway_journal_dropped_total{reason="queue_full"}`).
//! Every `snapshot_interval_ms` the observer queues its counters (a
//! [`JournalState`]) behind the waves it queued so far; the writer, which
//! takes the queue in order, writes that state as the snapshot at the
//! position it has reached, so the snapshot covers exactly the records
//! before it. A restart loads the snapshot and counts the records after it
//! again. Waves observed after the last snapshot that were not journaled
//! (filtered out, or dropped by the queue) are not counted again. The
//! resonance graph's edges come from the physics engine, which counts
//! deliveries on its own thread, ahead of or behind the journal's
//! position; the gateway's own edges on journaled channels are
//! snapshotted as far as the observer has taken waves instead, so that
//! the restart's count of the records after the snapshot counts each of
//! them once.

use std::{
    collections::HashMap,
    sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError},
    time::{Duration, SystemTime},
};

use aether_core::Operator;
use aether_core::{Channel, Wave, wire};
use aether_journal::{Journal, JournalError, Reader, Recovery};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde::{Deserialize, Serialize};

use crate::snapshot::unix_ms;

pub use crate::settings::{FsyncMode, JournalConfig};

/// A journal record of `wave`: its channel, then its envelope.
pub fn encode_record(wave: &Wave) -> Vec<u8> {
    let channel = wave.channel().as_str().as_bytes();
    let envelope = wire::encode(wave);
    let mut record = Vec::with_capacity(2 + channel.len() + envelope.len());
    // A valid channel is at most 256 bytes.
    record.extend_from_slice(&(channel.len() as u16).to_le_bytes());
    record.extend_from_slice(channel);
    record.extend_from_slice(&envelope);
    record
}

/// The wave of a journal record; `None` if it is not one.
pub fn decode_record(record: &[u8]) -> Option<Wave> {
    let len = usize::from(u16::from_le_bytes([*record.first()?, *record.get(1)?]));
    let channel = std::str::from_utf8(record.get(2..2 + len)?).ok()?;
    let body = record.get(2 + len..)?.to_vec();
    let limits = wire::Limits {
        max_body_bytes: aether_journal::MAX_RECORD_LEN,
    };
    wire::decode(Channel::new(channel), body.into(), &limits).ok()
}

/// What the gateway counted, as a snapshot stores it (JSON).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JournalState {
    /// Waves observed.
    pub waves_observed: u64,
    /// Waves observed by phase: assert, retract, other.
    pub by_phase: [u64; 3],
    /// Waves observed by amplitude, ten buckets of 0.1.
    pub amplitude_buckets: [u64; 10],
    /// Waves observed by family.
    pub families: Vec<FamilyCount>,
    /// The resonance graph.
    pub edges: Vec<EdgeCount>,
    /// Records written to the journal.
    pub journaled: u64,
    /// Waves not journaled, by reason.
    pub journal_dropped: HashMap<String, u64>,
    /// Interference events of the physics engine, by pattern (earlier runs
    /// included).
    pub engine_events: std::collections::BTreeMap<String, u64>,
}

/// One family's count.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FamilyCount {
    /// The family label.
    pub family: String,
    /// Waves.
    pub waves: u64,
    /// The sum of their amplitudes.
    pub amplitude_sum: f64,
}

/// One resonance edge, as kept across restarts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeCount {
    /// The vibrator that emits.
    pub emitter: String,
    /// The vibrator that hears.
    pub resonator: String,
    /// The channel.
    pub channel: String,
    /// Deliveries since the edge was first seen.
    pub deliveries: u64,
    /// Mean amplitude of the deliveries, lately.
    pub mean_amplitude: f64,
    /// The latest delivery, Unix ms.
    pub last_seen_ms: u64,
}

/// The most edges a snapshot keeps (the most recently seen).
pub const MAX_SAVED_EDGES: usize = 10_000;

/// The journal's metrics.
#[derive(Clone, Debug)]
pub(crate) struct JournalMetrics {
    pub(crate) records: IntCounter,
    pub(crate) dropped: IntCounterVec,
    pub(crate) snapshots: IntCounter,
    pub(crate) repaired_bytes: IntCounter,
    pub(crate) bytes: IntGauge,
}

impl JournalMetrics {
    pub(crate) fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let records = IntCounter::new(
            "aether_gateway_journal_records_total",
            "Waves written to the gateway's journal (continued across restarts).",
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "aether_gateway_journal_dropped_total",
                "Waves the gateway observed and did not journal, by reason: queue_full (the \
                 writer fell behind) or write_error.",
            ),
            &["reason"],
        )?;
        let snapshots = IntCounter::new(
            "aether_gateway_journal_snapshots_total",
            "Snapshots of the gateway's counters written since it started.",
        )?;
        let repaired_bytes = IntCounter::new(
            "aether_gateway_journal_repaired_bytes_total",
            "Bytes of a torn or damaged journal tail cut when the gateway started.",
        )?;
        let bytes = IntGauge::new(
            "aether_gateway_journal_bytes",
            "Size of the journal's segment files.",
        )?;
        for reason in ["queue_full", "write_error"] {
            dropped.with_label_values(&[reason]);
        }
        registry.register(Box::new(records.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(snapshots.clone()))?;
        registry.register(Box::new(repaired_bytes.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        Ok(Self {
            records,
            dropped,
            snapshots,
            repaired_bytes,
            bytes,
        })
    }
}

/// What the observer sends the writer.
pub(crate) enum Command {
    /// A wave observed at this time (Unix ms).
    Wave(Wave, u64),
    /// The counters, as of every wave sent before.
    Snapshot(Box<JournalState>),
}

/// The observer's end of the journal.
pub(crate) struct JournalLink {
    pub(crate) sender: SyncSender<Command>,
    /// The gateway's aether: a wave whose channel's payloads are sealed is
    /// journaled sealed, as it travelled.
    pub(crate) aether: aether_core::Aether,
    pub(crate) patterns: Vec<Channel>,
    pub(crate) metrics: JournalMetrics,
    pub(crate) snapshot_interval: Duration,
}

impl JournalLink {
    /// Queues `wave` if its channel is journaled, sealed if its channel's
    /// payloads are; never waits. Whether its channel is journaled (the
    /// wave queued, or dropped and counted).
    pub(crate) fn offer(&self, wave: &Wave, now_ms: u64) -> bool {
        if !self.patterns.iter().any(|p| wave.channel().matches(p)) {
            return false;
        }
        match self
            .sender
            .try_send(Command::Wave(self.aether.sealed_at_rest(wave), now_ms))
        {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.metrics
                    .dropped
                    .with_label_values(&["queue_full"])
                    .inc();
            }
            Err(TrySendError::Disconnected(_)) => {
                self.metrics
                    .dropped
                    .with_label_values(&["write_error"])
                    .inc();
            }
        }
        true
    }

    /// Queues a snapshot of `state`; skipped (until the next one) if the
    /// queue is full, unless `wait`.
    pub(crate) fn snapshot(&self, state: JournalState, wait: bool) {
        let command = Command::Snapshot(Box::new(state));
        let _ = if wait {
            self.sender.send(command).map_err(|_| ())
        } else {
            self.sender.try_send(command).map_err(|_| ())
        };
    }

    /// The drops so far, by reason.
    pub(crate) fn dropped(&self) -> HashMap<String, u64> {
        ["queue_full", "write_error"]
            .into_iter()
            .map(|r| {
                (
                    r.to_string(),
                    self.metrics.dropped.with_label_values(&[r]).get(),
                )
            })
            .collect()
    }
}

/// What a gateway finds in its journal when it starts.
#[derive(Debug)]
pub(crate) struct Restored {
    pub(crate) journal: Journal,
    pub(crate) recovery: Recovery,
    pub(crate) state: JournalState,
    /// The waves journaled after the snapshot.
    pub(crate) tail: Vec<Wave>,
}

/// Opens (and repairs) the journal of `config`, and reads its snapshot and
/// the waves after it. Blocking.
pub(crate) fn restore(config: &JournalConfig) -> Result<Restored, JournalError> {
    let aether_journal::Opened {
        journal,
        recovery,
        snapshot,
    } = Journal::open_with_snapshot(&config.dir, config.options())?;
    if let Some(damage) = &recovery.damage {
        tracing::warn!(
            segment = %damage.segment.display(),
            offset = damage.offset,
            kind = %damage.kind,
            cut_bytes = recovery.truncated_bytes,
            removed_segments = recovery.removed_segments,
            "the journal's damaged tail was cut"
        );
    }
    // Read once, by the journal's opening.
    let (state, from) = match snapshot {
        Ok(Some(snapshot)) => match serde_json::from_slice::<JournalState>(&snapshot.data) {
            Ok(state) => (state, snapshot.position),
            Err(error) => {
                tracing::warn!(%error, "the journal's snapshot is unreadable; counting from the journal alone");
                (JournalState::default(), 0)
            }
        },
        Ok(None) => (JournalState::default(), 0),
        Err(error) => {
            tracing::warn!(%error, "counting from the journal alone");
            (JournalState::default(), 0)
        }
    };
    let mut tail = Vec::new();
    let reader = Reader::open(&config.dir)?;
    for record in reader.records(from) {
        match decode_record(&record?.payload) {
            Some(wave) => tail.push(wave),
            None => tracing::warn!("a journal record that is not a wave was skipped"),
        }
    }
    tracing::info!(
        records = recovery.records,
        snapshot_position = from,
        tail = tail.len(),
        "journal opened"
    );
    Ok(Restored {
        journal,
        recovery,
        state,
        tail,
    })
}

/// The writer thread: takes the queue in order, appends waves, writes
/// snapshots and enforces retention; ends when the observer drops its
/// sender, after writing and fsyncing everything.
pub(crate) fn run_writer(
    mut journal: Journal,
    commands: Receiver<Command>,
    metrics: JournalMetrics,
) {
    let mut journaled = metrics.records.get();
    metrics
        .bytes
        .set(i64::try_from(journal.bytes()).unwrap_or(i64::MAX));
    let mut failing = false;
    loop {
        let wait = journal.sync_due_in().unwrap_or(Duration::from_secs(1));
        let first = match commands.recv_timeout(wait) {
            Ok(command) => command,
            Err(RecvTimeoutError::Timeout) => {
                report(journal.flush(), &mut failing, "flush");
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(command) = next.take() {
            match command {
                Command::Wave(wave, time_ms) => {
                    match journal.append(time_ms, &encode_record(&wave)) {
                        Ok(_) => {
                            journaled += 1;
                            metrics.records.inc();
                        }
                        Err(error) => {
                            metrics.dropped.with_label_values(&["write_error"]).inc();
                            report(Err(error), &mut failing, "append");
                        }
                    }
                }
                Command::Snapshot(mut state) => {
                    state.journaled = journaled;
                    let now = unix_ms(SystemTime::now());
                    match serde_json::to_vec(&*state) {
                        Ok(data) => {
                            let written = journal.write_snapshot(now, &data);
                            if written.is_ok() {
                                metrics.snapshots.inc();
                            }
                            report(written.map(drop), &mut failing, "snapshot");
                        }
                        Err(error) => tracing::warn!(%error, "the snapshot could not be encoded"),
                    }
                    report(
                        journal.enforce_retention(now).map(drop),
                        &mut failing,
                        "retention",
                    );
                }
            }
            taken += 1;
            if taken < 4096 {
                next = commands.try_recv().ok();
            }
        }
        report(journal.flush(), &mut failing, "flush");
        metrics
            .bytes
            .set(i64::try_from(journal.bytes()).unwrap_or(i64::MAX));
    }
    if let Err(error) = journal.close() {
        tracing::warn!(%error, "the journal could not be closed cleanly");
    }
}

/// Logs a failure once, until the journal works again.
fn report(result: Result<(), JournalError>, failing: &mut bool, what: &str) {
    match result {
        Ok(()) => *failing = false,
        Err(error) => {
            if !*failing {
                tracing::warn!(%error, what, "the journal failed; waves are not journaled until it works again");
            }
            *failing = true;
        }
    }
}

/// The resonance graph's edges kept across restarts, keyed by (emitter,
/// resonator, channel).
pub(crate) type EdgeKey = (String, String, String);

/// Adds a delivery of `wave` to `resonator` to `edges`.
pub(crate) fn count_edge(edges: &mut HashMap<EdgeKey, EdgeCount>, wave: &Wave, resonator: &str) {
    let Some(source) = wave.source() else {
        return;
    };
    let key = (
        source.to_string(),
        resonator.to_string(),
        wave.channel().to_string(),
    );
    let at = wave.emitted_at().map_or(0, unix_ms);
    let edge = edges.entry(key).or_insert_with_key(|(e, r, c)| EdgeCount {
        emitter: e.clone(),
        resonator: r.clone(),
        channel: c.clone(),
        ..Default::default()
    });
    let amplitude = wave.amplitude().value();
    edge.mean_amplitude =
        (edge.mean_amplitude * edge.deliveries as f64 + amplitude) / (edge.deliveries + 1) as f64;
    edge.deliveries += 1;
    edge.last_seen_ms = edge.last_seen_ms.max(at);
}

#[cfg(test)]
mod tests {
    use aether_ops::settings::Validate;

    use super::*;

    #[test]
    fn a_record_is_the_channel_then_the_envelope() {
        let wave = Wave::builder("orders.created")
            .amplitude(0.5)
            .payload("hi")
            .build()
            .unwrap();
        let record = encode_record(&wave);
        assert_eq!(&record[..2], &14u16.to_le_bytes());
        assert_eq!(&record[2..16], b"orders.created");
        assert_eq!(&record[16..], &wire::encode(&wave)[..]);
        let back = decode_record(&record).unwrap();
        assert_eq!(back.channel().as_str(), "orders.created");
        assert_eq!(back.amplitude().value(), 0.5);
        assert_eq!(&back.payload_bytes()[..], b"hi");
        for cut in 0..record.len() {
            let _ = decode_record(&record[..cut]);
        }
        assert!(decode_record(b"").is_none());
    }

    #[test]
    fn settings_are_checked() {
        let config = JournalConfig::default();
        config.validate().unwrap();
        let bad = JournalConfig {
            channels: vec!["orders..x".into()],
            ..JournalConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().key(), Some("channels"));
        let bad = JournalConfig {
            snapshot_interval_ms: 1,
            ..JournalConfig::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().key(),
            Some("snapshot_interval_ms")
        );
    }
}
