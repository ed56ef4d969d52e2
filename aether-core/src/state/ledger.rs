//! A replica's ledger: with a state directory, every change applied to the
//! map is appended to a journal (`aether-journal`: checksummed records, a
//! torn tail cut off on open), with a snapshot of the whole map every
//! `snapshot_every` records (`StateConfig`), after which the segments it
//! covers are deleted, and one more at a close once a quarter of the next
//! is due. A restarted replica reads the snapshot and the records after
//! it, then catches up from its peers.

use std::{
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
};

use aether_journal::{FsyncPolicy, Journal, JournalError, Options, Record, Restore, Snapshot};
use bytes::Bytes;

use super::{
    codec::{self, Limits},
    store::{Entry, Store},
};

/// Why the ledger could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LedgerError {
    #[error(transparent)]
    Journal(#[from] aether_journal::JournalError),
    #[error("the map was closed: its ledger is closed")]
    Closed,
}

/// What opening a damaged ledger did.
#[derive(Debug)]
pub(crate) struct Repair {
    /// Where the damage was, and what it was.
    pub(crate) damage: String,
    /// Records before the damage, kept.
    pub(crate) kept: u64,
    /// Valid records after it, read on.
    pub(crate) read_on: u64,
    /// Bytes after it that were part of no valid record (the damaged
    /// records: what is lost, unless other replicas hold it).
    pub(crate) lost_bytes: u64,
    /// Where the damaged files were copied, as they were.
    pub(crate) kept_aside: Result<std::path::PathBuf, String>,
}

/// The file beside a ledger that says it lacks changes: made when an
/// append fails (a full disk), so that a replica started again on it knows
/// it lacks them until it caught up whole from a peer; removed once the
/// ledger holds everything again.
pub(crate) const LACKS_FILE: &str = "lacks";

/// A ledger's segment: what a compaction leaves besides the snapshot
/// and the records after it is at most one segment.
const SEGMENT_BYTES: u64 = 1 << 20;
/// Records since the last snapshot of at least this many bytes (and as
/// many as the map holds) make the next snapshot due.
const SNAPSHOT_FLOOR: u64 = 256 << 10;
/// A ledger closed with records since its last snapshot of at least
/// `1 / CLOSE_PART` of what makes the next one due writes one first.
const CLOSE_PART: u64 = 4;

/// The ledger of one replica.
#[derive(Debug)]
pub(crate) struct Ledger {
    /// What its opening repaired, if it was damaged.
    repair: Option<Repair>,
    /// None once the map closed (the directory is free for another).
    journal: Option<Journal>,
    since_snapshot: u64,
    /// Bytes of the records appended since the last snapshot.
    since_snapshot_bytes: u64,
    /// Records between snapshots (0: never).
    snapshot_every: u64,
    /// The last record appended by this process.
    last: Option<u64>,
    /// Keys whose entry in the map is not in the ledger: its append failed
    /// (a full disk). Holds covering them are not acknowledged; they are
    /// written again at the next append or hold.
    unlogged: std::collections::BTreeSet<String>,
    /// Its directory.
    dir: std::path::PathBuf,
    /// [`LACKS_FILE`] is there.
    lacking: bool,
}

/// A ledger's map as its journal opens: the snapshot, then each record
/// after it merged as the opening checks it.
struct Restored<'a> {
    dir: &'a Path,
    limits: &'a Limits,
    store: Store,
    /// Records (or the snapshot) that did not decode.
    skipped: u64,
    /// The sequence number the records are read from.
    from: u64,
    /// Records read from `from` on.
    read: u64,
    /// Records merged.
    replayed: u64,
    /// The snapshot was damaged: kept aside, and the records read from
    /// their start.
    snapshot_damage: Option<Repair>,
    /// The snapshot could not be read (an I/O error): the opening fails.
    failed: Option<JournalError>,
}

impl Restore for Restored<'_> {
    fn snapshot(&mut self, snapshot: Result<Option<Snapshot>, JournalError>) -> u64 {
        // A damaged snapshot is kept aside and the records read from
        // their start: what it alone held is lost here (other replicas may
        // hold it), the rest is kept.
        let snapshot = match snapshot {
            Ok(snapshot) => snapshot,
            Err(JournalError::SnapshotCorrupt { reason, .. }) => {
                let size = std::fs::metadata(self.dir.join(aether_journal::SNAPSHOT_FILE))
                    .map_or(0, |m| m.len());
                let kept_aside = aether_journal::snapshot_aside(self.dir);
                self.snapshot_damage = Some(Repair {
                    damage: format!("the snapshot: {reason}"),
                    kept: 0,
                    read_on: 0,
                    lost_bytes: size,
                    kept_aside,
                });
                None
            }
            Err(error) => {
                self.failed = Some(error);
                return u64::MAX;
            }
        };
        if let Some(snapshot) = snapshot {
            let data = Bytes::from(snapshot.data);
            match codec::decode_all_as(data, self.limits, super::store::keyed) {
                Ok(entries) => {
                    // Written in key order: built in one pass.
                    self.store = Store::undigested_from_sorted(entries);
                    self.from = snapshot.position;
                }
                Err(_) => self.skipped += 1,
            }
        }
        self.from
    }

    fn record(&mut self, record: Record) {
        self.read += 1;
        match codec::decode_all(Bytes::from(record.payload), self.limits) {
            Ok(entries) => {
                for (key, entry) in entries {
                    // Uncapped while it replays: every entry fits.
                    let _ = self.store.merge_owned(key, entry);
                }
                self.replayed += 1;
            }
            Err(_) => self.skipped += 1,
        }
    }
}

impl Ledger {
    /// Opens the ledger in `dir` and reads back what it holds. A record
    /// that does not decode (written by another version, or damaged past
    /// its checksum) is skipped and counted.
    pub(crate) fn open(
        dir: &Path,
        limits: &Limits,
        snapshot_every: u64,
    ) -> Result<(Ledger, Store, u64), LedgerError> {
        let options = Options {
            fsync: FsyncPolicy::Every {
                interval: std::time::Duration::from_millis(200),
                records: 0,
            },
            segment_bytes: SEGMENT_BYTES,
            ..Default::default()
        };
        // Damage (a torn tail, bytes changed on the disk): the damaged files
        // are kept aside, and every valid record after the damage is read
        // on (in the pass that checks the segments) and appended again once
        // the journal is cut there; a change is merged by its stamp, so its
        // place does not matter. The snapshot and the records after it are
        // merged as that pass reads them.
        let mut restored = Restored {
            dir,
            limits,
            store: Store::undigested(),
            skipped: 0,
            from: 0,
            read: 0,
            replayed: 0,
            snapshot_damage: None,
            failed: None,
        };
        let (mut journal, recovery, salvage) =
            Journal::open_salvaging(dir, options, &mut restored)?;
        if let Some(error) = restored.failed.take() {
            return Err(error.into());
        }
        let mut repair = restored.snapshot_damage.take();
        if let (Some(salvage), Some(damage)) = (salvage, &recovery.damage) {
            for record in &salvage.records {
                journal.append(record.time_ms, &record.payload)?;
            }
            journal.flush()?;
            // A damaged snapshot is said before the records' damage.
            repair = repair.or(Some(Repair {
                damage: format!(
                    "{} in {} at byte {}",
                    damage.kind,
                    damage.segment.display(),
                    damage.offset
                ),
                kept: recovery.records,
                read_on: salvage.records.len() as u64,
                lost_bytes: salvage.skipped_bytes,
                kept_aside: salvage.kept_aside,
            }));
            for record in salvage.records {
                restored.record(record);
            }
        }
        let Restored {
            mut store,
            skipped,
            from,
            read,
            replayed,
            ..
        } = restored;
        store.digest_all();
        // Every record from the snapshot's position on is read back: fewer
        // (a segment deleted, the older one of two) lost the rest.
        let written = journal.next_seq().saturating_sub(from);
        if repair.is_none() && read < written {
            repair = Some(Repair {
                damage: format!(
                    "{} of the records {from} to {} are missing (a segment deleted)",
                    written - read,
                    journal.next_seq().saturating_sub(1)
                ),
                kept: read,
                read_on: 0,
                lost_bytes: 0,
                kept_aside: Err("nothing to keep aside: the records' file is gone".into()),
            });
        }
        let lacking = dir.join(LACKS_FILE).exists();
        Ok((
            Ledger {
                dir: dir.to_path_buf(),
                lacking,
                repair,
                journal: Some(journal),
                since_snapshot: replayed,
                since_snapshot_bytes: 0,
                snapshot_every,
                last: None,
                unlogged: Default::default(),
            },
            store,
            skipped,
        ))
    }

    /// Appends an applied change, handed to the operating system before
    /// this returns (a killed process keeps it; the disk has it within
    /// 200 ms). Every `snapshot_every` records (or as many as the map has
    /// entries, if more), `store` is written as a
    /// snapshot and the segments before it are deleted.
    /// Returns the record's sequence number.
    /// A change that cannot be appended leaves its key unlogged (see
    /// [`holds`](Self::holds)) until an append of it succeeds.
    pub(crate) fn append(
        &mut self,
        key: &str,
        entry: &Entry,
        store: &Store,
    ) -> Result<u64, LedgerError> {
        if !self.unlogged.is_empty() {
            self.retry(store);
        }
        match self.append_one(key, entry, store) {
            Ok(seq) => {
                self.unlogged.remove(key);
                Ok(seq)
            }
            Err(error) => {
                // At most the map's keys.
                if !matches!(error, LedgerError::Closed) {
                    self.unlogged.insert(key.to_string());
                    self.set_lacking(true);
                }
                Err(error)
            }
        }
    }

    /// Whether the ledger holds the map's entry for `key` (false while an
    /// append of it failed and none since succeeded).
    pub(crate) fn holds(&self, key: &str) -> bool {
        !self.unlogged.contains(key)
    }

    /// Whether it said it lacks changes ([`LACKS_FILE`]): an append failed
    /// here, or in an earlier process on this directory, and it was not
    /// cleared since.
    pub(crate) fn lacking(&self) -> bool {
        self.lacking
    }

    /// Makes or removes [`LACKS_FILE`] (an empty file: made on a full
    /// disk too, as a rule; a failure leaves it as it was).
    pub(crate) fn set_lacking(&mut self, lacking: bool) {
        if lacking == self.lacking {
            return;
        }
        let path = self.dir.join(LACKS_FILE);
        let done = if lacking {
            aether_journal::private(
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true),
            )
            .open(&path)
            .map(|_| ())
        } else {
            std::fs::remove_file(&path)
        };
        match done {
            Ok(()) => self.lacking = lacking,
            Err(error) => {
                tracing::debug!(%error, path = %path.display(), "the ledger's lacks file")
            }
        }
    }

    /// How many keys of the map the ledger does not hold.
    pub(crate) fn unlogged(&self) -> usize {
        self.unlogged.len()
    }

    /// Appends again the entries whose append failed, as `store` holds
    /// them now: how many are held now.
    pub(crate) fn retry(&mut self, store: &Store) -> usize {
        let keys: Vec<String> = self.unlogged.iter().cloned().collect();
        let mut held = 0;
        for key in keys {
            let written = match store.entry(&key) {
                Some(entry) => self.append_one(&key, &entry.clone(), store).map(|_| ()),
                // Gone from the map (collected): nothing to hold.
                None => Ok(()),
            };
            if written.is_err() {
                break;
            }
            self.unlogged.remove(&key);
            held += 1;
        }
        held
    }

    fn append_one(&mut self, key: &str, entry: &Entry, store: &Store) -> Result<u64, LedgerError> {
        let record = codec::encode_all([(key, entry)]);
        let journal = self.journal.as_mut().ok_or(LedgerError::Closed)?;
        let seq = journal.append(entry.stamp.physical_ns / 1_000_000, &record)?;
        journal.flush()?;
        self.last = Some(seq);
        self.since_snapshot += 1;
        self.since_snapshot_bytes += record.len() as u64;
        if self.due(store, 1) {
            // The record is held whatever becomes of the snapshot: a
            // snapshot that fails (a full disk) is tried again after as
            // many records more, and the change is not appended again.
            self.snapshot(store);
        }
        Ok(seq)
    }

    /// Whether the records since the last snapshot reach `1 / part` of
    /// what makes the next one due. At least as many records as the map
    /// has entries between snapshots: a snapshot costs the whole map, so
    /// this keeps what is written at most twice what is changed, and a
    /// restart reads at most about twice the map. Records as large as the
    /// map (and [`SNAPSHOT_FLOOR`]) are due too: the disk holds about
    /// twice the map, plus a segment, whatever the size of its values.
    fn due(&self, store: &Store, part: u64) -> bool {
        let due = self.snapshot_every.max(store.held() as u64);
        let due_bytes = store.bytes().max(SNAPSHOT_FLOOR);
        self.snapshot_every > 0
            && self.since_snapshot > 0
            && (self.since_snapshot * part >= due || self.since_snapshot_bytes * part >= due_bytes)
    }

    /// Writes the whole map as the snapshot and deletes the segments it
    /// covers; a failure (a full disk) is said, and the records stay.
    fn snapshot(&mut self, store: &Store) {
        let Some(journal) = self.journal.as_mut() else {
            return;
        };
        self.since_snapshot = 0;
        self.since_snapshot_bytes = 0;
        let all = codec::encode_all(store.entries().map(|(k, e)| (k.as_str(), e)));
        let snapshot = journal
            .write_snapshot(super::hlc::wall_ns() / 1_000_000, &all)
            .and_then(|position| journal.compact_before(position));
        if let Err(error) = snapshot {
            tracing::warn!(%error, "a map's snapshot was not written; its ledger grows until one is");
        }
    }

    /// What opening it repaired, if it was damaged.
    pub(crate) fn repair(&self) -> Option<&Repair> {
        self.repair.as_ref()
    }

    /// The sequence number of the last record this process appended.
    pub(crate) fn last(&self) -> Option<u64> {
        self.last
    }

    /// The number the next record appended gets (none once closed): how
    /// many the ledger has written, snapshots' records counted.
    pub(crate) fn next_seq(&self) -> Option<u64> {
        self.journal.as_ref().map(Journal::next_seq)
    }

    /// Closes the journal (what it holds stays on the disk) and frees the
    /// directory for another replica, in this process or another; appends
    /// after it fail. With records since the last snapshot of at least a
    /// quarter of what makes the next one due ([`CLOSE_PART`]), the map
    /// `store` holds is written as the snapshot first, so that the next
    /// opening reads the snapshot alone (a restart after a crash reads
    /// the records after the last snapshot too, up to about the map).
    pub(crate) fn close(&mut self, store: &Store) {
        if self.due(store, CLOSE_PART) {
            self.snapshot(store);
        }
        if let Some(journal) = self.journal.take()
            && let Err(error) = journal.close()
        {
            tracing::warn!(%error, "closing a map's ledger");
        }
    }
}

/// A ledger and its group commit: a writer that must see its record on the
/// disk waits for an fsync that covers it; one fsync runs at a time, off
/// the ledger's lock, and the writers that came while it ran share the
/// next one.
#[derive(Debug)]
pub(crate) struct Durable {
    ledger: Mutex<Ledger>,
    commit: Mutex<Commit>,
}

#[derive(Debug, Default)]
struct Commit {
    /// Records below this sequence number are on the disk.
    synced: u64,
    /// An fsync runs.
    running: bool,
    /// Writers waiting: the sequence number they wait for.
    waiters: Vec<(u64, tokio::sync::oneshot::Sender<Result<(), String>>)>,
}

impl Durable {
    pub(crate) fn new(ledger: Ledger) -> Arc<Self> {
        Arc::new(Self {
            ledger: Mutex::new(ledger),
            commit: Mutex::default(),
        })
    }

    /// The ledger, to append to.
    pub(crate) fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn commit(&self) -> MutexGuard<'_, Commit> {
        self.commit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns once record `seq` is on the disk, or why it may not be.
    pub(crate) async fn synced(self: &Arc<Self>, seq: u64) -> Result<(), String> {
        let waiting = {
            let mut commit = self.commit();
            if commit.synced > seq {
                return Ok(());
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            commit.waiters.push((seq, tx));
            if !commit.running {
                commit.running = true;
                let durable = self.clone();
                tokio::task::spawn_blocking(move || durable.sync_while_waited());
            }
            rx
        };
        waiting
            .await
            .unwrap_or_else(|_| Err("the ledger's fsync stopped".to_string()))
    }

    /// Fsyncs until no writer waits.
    fn sync_while_waited(&self) {
        loop {
            let pending = match self.ledger().journal.as_mut() {
                Some(journal) => journal.sync_later().map_err(|e| e.to_string()),
                None => Err(LedgerError::Closed.to_string()),
            };
            let result = pending.and_then(|p| p.sync().map_err(|e| e.to_string()));
            let mut commit = self.commit();
            match result {
                Ok(covers) => {
                    commit.synced = commit.synced.max(covers);
                    let synced = commit.synced;
                    let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut commit.waiters)
                        .into_iter()
                        .partition(|(seq, _)| *seq < synced);
                    commit.waiters = waiting;
                    for (_, tx) in done {
                        let _ = tx.send(Ok(()));
                    }
                }
                Err(error) => {
                    for (_, tx) in commit.waiters.drain(..) {
                        let _ = tx.send(Err(error.clone()));
                    }
                }
            }
            if commit.waiters.is_empty() {
                commit.running = false;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use smol_str::SmolStr;

    use super::*;
    use crate::state::hlc::Stamp;

    /// `n` changes of `keys` keys (each a new value of `value` bytes),
    /// merged and appended as a replica does.
    fn write(ledger: &mut Ledger, store: &mut Store, n: u64, keys: u64, value: usize) {
        for n in 0..n {
            let key = format!("k{}", n % keys);
            let entry = Entry {
                stamp: Stamp {
                    physical_ns: 1_000_000 * (n + 1),
                    logical: 0,
                    node: 1,
                },
                value: Some(Bytes::from(vec![b'v'; value])),
                writer: SmolStr::new("w"),
            };
            store.merge(&key, entry.clone()).unwrap();
            ledger.append(&key, &entry, store).unwrap();
        }
    }

    /// A snapshot that cannot be written (here its temporary file's name
    /// is taken by a directory, as a full disk fails it) leaves the record
    /// written held: the change is not appended again, and the ledger
    /// reads back each change once.
    #[test]
    fn a_failed_snapshot_leaves_the_record_held_and_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_key_bytes: 256,
            max_value_bytes: 1024,
        };
        let (mut ledger, mut store, _) = Ledger::open(dir.path(), &limits, 4).unwrap();
        std::fs::create_dir(dir.path().join(aether_journal::SNAPSHOT_TEMP_FILE)).unwrap();
        write(&mut ledger, &mut store, 20, 20, 100);
        assert_eq!(ledger.unlogged(), 0);
        assert_eq!(ledger.next_seq(), Some(20), "each change written once");
        ledger.close(&store);
        std::fs::remove_dir(dir.path().join(aether_journal::SNAPSHOT_TEMP_FILE)).unwrap();
        let (_, again, skipped) = Ledger::open(dir.path(), &limits, 4).unwrap();
        assert_eq!((again.len(), skipped), (20, 0));
    }

    /// A ledger closed with records since its snapshot of at least a
    /// quarter of the next one's due writes the snapshot first: the next
    /// opening reads no record. With fewer, the records stay as they are
    /// and are read back.
    #[test]
    fn a_close_writes_the_snapshot_once_a_quarter_of_one_is_due() {
        let limits = Limits {
            max_key_bytes: 256,
            max_value_bytes: 1024,
        };
        // A snapshot every 100 records: 25 at the close make one.
        for (records, read_back) in [(24, 24), (25, 0), (124, 24), (125, 0)] {
            let dir = tempfile::tempdir().unwrap();
            let (mut ledger, mut store, _) = Ledger::open(dir.path(), &limits, 100).unwrap();
            write(&mut ledger, &mut store, records, 10, 10);
            ledger.close(&store);
            let (ledger, again, skipped) = Ledger::open(dir.path(), &limits, 100).unwrap();
            assert_eq!((again.len(), skipped), (10, 0), "{records} records");
            assert_eq!(again, store, "{records} records: the map as it was");
            assert_eq!(
                ledger.since_snapshot, read_back,
                "{records} records: those read back"
            );
        }
    }

    /// A ledger that lacks changes says so to the next process that opens
    /// it (its replica answers catch-ups as lacking), until it is cleared.
    #[test]
    fn lacking_changes_is_kept_across_a_restart_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_key_bytes: 256,
            max_value_bytes: 1024,
        };
        let (mut ledger, store, _) = Ledger::open(dir.path(), &limits, 4).unwrap();
        assert!(!ledger.lacking());
        ledger.set_lacking(true);
        ledger.close(&store);
        let (mut ledger, store, _) = Ledger::open(dir.path(), &limits, 4).unwrap();
        assert!(ledger.lacking(), "said again after a restart");
        ledger.set_lacking(false);
        assert!(!dir.path().join(LACKS_FILE).exists());
        ledger.close(&store);
        let (ledger, _, _) = Ledger::open(dir.path(), &limits, 4).unwrap();
        assert!(!ledger.lacking());
    }

    /// A ledger whose older segment was deleted (by hand, a file system
    /// repair) reads back fewer records than it wrote since its snapshot,
    /// and says so as damage.
    #[test]
    fn a_deleted_older_segment_is_said() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_key_bytes: 256,
            max_value_bytes: 64 * 1024,
        };
        let (mut ledger, mut store, _) = Ledger::open(dir.path(), &limits, 0).unwrap();
        write(&mut ledger, &mut store, 40, 40, 30 * 1024);
        ledger.close(&store);
        let mut segments: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        segments.sort();
        assert!(segments.len() >= 2, "{segments:?}");
        std::fs::remove_file(&segments[0]).unwrap();
        let (ledger, again, _) = Ledger::open(dir.path(), &limits, 0).unwrap();
        let repair = ledger.repair().expect("said damaged");
        assert!(repair.damage.contains("missing"), "{}", repair.damage);
        assert_eq!(repair.kept, again.len() as u64);
        assert!(again.len() < 40);
    }
}
