//! A replica's ledger: with a state directory, every change applied to the
//! map is appended to a journal (`aether-journal`: checksummed records, a
//! torn tail cut off on open), with a snapshot of the whole map every
//! `snapshot_every` records (`StateConfig`), after which the segments it
//! covers are deleted. A restarted replica reads the snapshot and the records after
//! it, then catches up from its peers.

use std::path::Path;

use aether_journal::{FsyncPolicy, Journal, Options, Reader, read_snapshot};
use bytes::Bytes;

use super::{
    codec::{self, Limits},
    store::{Entry, Store},
};

/// Why the ledger could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LedgerError {
    #[error("cannot make the state directory {0}: {1}")]
    Dir(std::path::PathBuf, std::io::Error),
    #[error(transparent)]
    Journal(#[from] aether_journal::JournalError),
}

/// The ledger of one replica.
#[derive(Debug)]
pub(crate) struct Ledger {
    journal: Journal,
    since_snapshot: u64,
    /// Records between snapshots (0: never).
    snapshot_every: u64,
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
        std::fs::create_dir_all(dir).map_err(|e| LedgerError::Dir(dir.to_path_buf(), e))?;
        let options = Options {
            fsync: FsyncPolicy::Every {
                interval: std::time::Duration::from_millis(200),
                records: 0,
            },
            segment_bytes: 8 * 1024 * 1024,
            ..Default::default()
        };
        let (journal, _recovery) = Journal::open(dir, options)?;
        let mut store = Store::default();
        let mut skipped = 0;
        let mut from = 0;
        if let Some(snapshot) = read_snapshot(dir)? {
            match codec::decode_all(Bytes::from(snapshot.data), limits) {
                Ok(entries) => {
                    for (key, entry) in entries {
                        store.merge(&key, entry);
                    }
                    from = from.max(snapshot.position);
                }
                Err(_) => skipped += 1,
            }
        }
        let mut replayed = 0;
        for record in Reader::open(dir)?.records(from) {
            let record = record?;
            match codec::decode_all(Bytes::from(record.payload), limits) {
                Ok(entries) => {
                    for (key, entry) in entries {
                        store.merge(&key, entry);
                    }
                    replayed += 1;
                }
                Err(_) => skipped += 1,
            }
        }
        Ok((
            Ledger {
                journal,
                since_snapshot: replayed,
                snapshot_every,
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
    pub(crate) fn append(
        &mut self,
        key: &str,
        entry: &Entry,
        store: &Store,
    ) -> Result<(), LedgerError> {
        let record = codec::encode_all([(key, entry)]);
        self.journal
            .append(entry.stamp.physical_ns / 1_000_000, &record)?;
        self.journal.flush()?;
        self.since_snapshot += 1;
        // At least as many records as the map has entries between
        // snapshots: a snapshot costs the whole map, so this keeps what is
        // written at most twice what is changed, and a restart reads at
        // most about twice the map.
        let due = self
            .snapshot_every
            .max((store.len() + store.tombstones()) as u64);
        if self.snapshot_every > 0 && self.since_snapshot >= due {
            let all = codec::encode_all(store.entries().map(|(k, e)| (k.as_str(), e)));
            let position = self
                .journal
                .write_snapshot(super::hlc::wall_ns() / 1_000_000, &all)?;
            self.journal.compact_before(position)?;
            self.since_snapshot = 0;
        }
        Ok(())
    }
}
