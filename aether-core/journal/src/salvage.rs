//! Reading on past damage, for a writer whose records do not depend on
//! their order or their number (a replicated map's ledger: each record a
//! change merged by its own stamp). [`Journal::open`](crate::Journal::open)
//! keeps only the records before the first damage;
//! [`Journal::open_salvaging`](crate::Journal::open_salvaging), before it
//! cuts there, copies the damaged segment and those after it aside and
//! returns every valid record found after the damage, so that the caller
//! appends them again once the journal is open: a damaged record costs
//! that record, not the journal's tail.
//!
//! After damage the reader looks for the next valid record byte by byte: a
//! header whose length fits, whose time is a plausible Unix time in
//! milliseconds (2001 to 2286) and whose checksum holds over the payload.

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::{
    Damage, Journal, JournalError, Options, Recovery, Restore,
    files::create_private_dir,
    format::{MAX_RECORD_LEN, RECORD_HEADER_LEN, Record, SEGMENT_HEADER_LEN, record_crc},
};

/// Record times a salvage takes, Unix milliseconds (2001 to 2286).
const PLAUSIBLE_MS: std::ops::Range<u64> = 1_000_000_000_000..10_000_000_000_000;

/// What [`Journal::open_salvaging`] found past a journal's first damage.
#[derive(Debug)]
pub struct Salvage {
    /// The first damage: [`Journal::open`](crate::Journal::open) cuts
    /// the journal there.
    pub damage: Damage,
    /// Where the damaged segment and those after it were copied, as they
    /// were; why not, if they could not be (a full disk).
    pub kept_aside: Result<PathBuf, String>,
    /// The valid records after the damage, in the order found (their
    /// `seq` is their place in this list).
    pub records: Vec<Record>,
    /// Bytes after the damage that were part of no valid record.
    pub skipped_bytes: u64,
}

impl Journal {
    /// [`Journal::open`], keeping the damaged files aside in
    /// `dir/damaged/<unix ms>/` and reading on past the first damage
    /// before it is cut, in the same pass over the segments: what it found
    /// past the damage, if any. `restore` is handed the snapshot, then the
    /// records it keeps as they are checked.
    pub fn open_salvaging(
        dir: impl AsRef<Path>,
        options: Options,
        restore: &mut dyn Restore,
    ) -> Result<(Journal, Recovery, Option<Salvage>), JournalError> {
        let mut salvaged = None;
        let opened = Journal::open_all(
            dir.as_ref(),
            options,
            &mut |dir, damaged, damage| {
                salvaged = Some(read_past(dir, damaged, damage.clone())?);
                Ok(())
            },
            Some(restore),
        )?;
        Ok((opened.journal, opened.recovery, salvaged))
    }
}

/// Keeps `damaged` (the segment where `damage` is, and those after it)
/// aside and reads on past the damage.
fn read_past(
    dir: &Path,
    damaged: &[(u64, PathBuf, u64)],
    damage: Damage,
) -> Result<Salvage, JournalError> {
    let kept_aside = keep_aside(dir, damaged);
    let mut records = Vec::new();
    let mut skipped_bytes = 0;
    for (n, (_, path, _)) in damaged.iter().enumerate() {
        let data = fs::read(path).map_err(|e| JournalError::io(path, e))?;
        let from = if n == 0 {
            usize::try_from(damage.offset).unwrap_or(usize::MAX)
        } else {
            SEGMENT_HEADER_LEN
        };
        skipped_bytes += read_on(&data, from.min(data.len()), &mut records);
    }
    Ok(Salvage {
        damage,
        kept_aside,
        records,
        skipped_bytes,
    })
}

/// Moves a damaged snapshot of the journal in `dir` aside, into a new
/// folder under `dir/damaged/` (readable by its owner only): the journal's
/// records are then read from their start. Where it went.
pub fn snapshot_aside(dir: &Path) -> Result<PathBuf, String> {
    let path = dir.join(crate::SNAPSHOT_FILE);
    let aside = keep_aside(dir, &[(0, path.clone(), 0)])?;
    fs::remove_file(&path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
    Ok(aside)
}

/// Copies `segments` into a new folder under `dir/damaged/`, readable by
/// its owner only.
fn keep_aside(dir: &Path, segments: &[(u64, PathBuf, u64)]) -> Result<PathBuf, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let aside = dir.join("damaged").join(now.to_string());
    create_private_dir(&aside).map_err(|e| e.to_string())?;
    for (_, path, _) in segments {
        let name = path.file_name().unwrap_or_default();
        fs::copy(path, aside.join(name))
            .map_err(|e| format!("cannot copy {} aside: {e}", path.display()))?;
    }
    Ok(aside)
}

/// The valid records of `data` from `from` on, looking for the next one
/// after anything that is not; the bytes skipped.
fn read_on(data: &[u8], from: usize, out: &mut Vec<Record>) -> u64 {
    let mut at = from;
    let mut skipped = 0u64;
    while at + RECORD_HEADER_LEN <= data.len() {
        match record_at(data, at) {
            Some((time_ms, payload)) => {
                at += RECORD_HEADER_LEN + payload.len();
                out.push(Record {
                    seq: out.len() as u64,
                    time_ms,
                    payload: payload.to_vec(),
                });
            }
            None => {
                at += 1;
                skipped += 1;
            }
        }
    }
    skipped + (data.len() - at.min(data.len())) as u64
}

/// The record at `at`, if one is there whole and valid.
fn record_at(data: &[u8], at: usize) -> Option<(u64, &[u8])> {
    let header = data.get(at..at + RECORD_HEADER_LEN)?;
    let crc = u32::from_le_bytes(header[..4].try_into().ok()?);
    let len = u32::from_le_bytes(header[4..8].try_into().ok()?) as usize;
    let time_ms = u64::from_le_bytes(header[8..16].try_into().ok()?);
    if len > MAX_RECORD_LEN || !PLAUSIBLE_MS.contains(&time_ms) {
        return None;
    }
    let payload = data.get(at + RECORD_HEADER_LEN..at + RECORD_HEADER_LEN + len)?;
    (record_crc(&header[4..16], payload) == crc).then_some((time_ms, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Snapshot, journal::list_segments};

    const T: u64 = 1_700_000_000_000;

    fn journal_of(dir: &Path, n: u64) -> PathBuf {
        let (mut journal, _) = Journal::open(dir, Options::default()).unwrap();
        for i in 0..n {
            journal
                .append(T + i, format!("record {i:03}").as_bytes())
                .unwrap();
        }
        journal.close().unwrap();
        list_segments(dir).unwrap()[0].1.clone()
    }

    /// What a restore was handed.
    #[derive(Default)]
    struct Handed {
        snapshot: Option<Result<Option<Snapshot>, JournalError>>,
        records: Vec<Record>,
    }

    impl Restore for Handed {
        fn snapshot(&mut self, snapshot: Result<Option<Snapshot>, JournalError>) -> u64 {
            assert!(self.snapshot.is_none() && self.records.is_empty(), "first");
            let from = snapshot
                .as_ref()
                .ok()
                .and_then(Option::as_ref)
                .map_or(0, |s| s.position);
            self.snapshot = Some(snapshot);
            from
        }

        fn record(&mut self, record: Record) {
            self.records.push(record);
        }
    }

    /// Opens `dir` salvaging: what it kept, what it read on.
    fn open_salvaging(dir: &Path) -> (Recovery, Option<Salvage>) {
        let mut handed = Handed::default();
        let (_journal, recovery, salvaged) =
            Journal::open_salvaging(dir, Options::default(), &mut handed).unwrap();
        assert_eq!(
            handed.records.len() as u64,
            recovery.records,
            "each record kept handed once"
        );
        (recovery, salvaged)
    }

    /// The restore is handed the snapshot, then exactly the records kept
    /// from its position on, in order, as `Reader` reads them.
    #[test]
    fn a_restore_is_handed_the_snapshot_then_the_records_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path(), Options::default()).unwrap();
        for i in 0..10u64 {
            journal.append(T + i, &[i as u8]).unwrap();
        }
        let position = journal.write_snapshot(T, b"state").unwrap();
        for i in 10..15u64 {
            journal.append(T + i, &[i as u8]).unwrap();
        }
        journal.close().unwrap();
        let mut handed = Handed::default();
        let (journal, recovery, salvaged) =
            Journal::open_salvaging(dir.path(), Options::default(), &mut handed).unwrap();
        drop(journal);
        assert!(salvaged.is_none() && recovery.damage.is_none());
        let snapshot = handed.snapshot.unwrap().unwrap().unwrap();
        assert_eq!(
            (snapshot.position, &snapshot.data[..]),
            (position, &b"state"[..])
        );
        let read: Vec<Record> = crate::Reader::open(dir.path())
            .unwrap()
            .records(position)
            .map(Result::unwrap)
            .collect();
        assert_eq!(handed.records, read);
        assert_eq!(
            handed.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (10..15).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_damaged_record_costs_that_record_only() {
        let dir = tempfile::tempdir().unwrap();
        let segment = journal_of(dir.path(), 20);
        // Four bytes zeroed in the middle of the file.
        let mut bytes = fs::read(&segment).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle..middle + 4].fill(0);
        fs::write(&segment, &bytes).unwrap();
        let (recovery, found) = open_salvaging(dir.path());
        let found = found.expect("damage found");
        let kept = std::fs::read(
            found
                .kept_aside
                .as_ref()
                .unwrap()
                .join(segment.file_name().unwrap()),
        )
        .unwrap();
        assert_eq!(kept, bytes, "kept aside as it was");
        assert_eq!(Some(&found.damage), recovery.damage.as_ref());
        let before = recovery.records;
        let after = found.records.len() as u64;
        assert_eq!(before + after, 19, "one record lost of 20");
        assert!(found.skipped_bytes > 0);
        // Nothing damaged: nothing to do.
        let clean = tempfile::tempdir().unwrap();
        journal_of(clean.path(), 5);
        let (recovery, found) = open_salvaging(clean.path());
        assert!(found.is_none());
        assert_eq!(recovery.records, 5);
    }

    #[test]
    fn a_writer_holding_the_journal_is_not_read_under() {
        let dir = tempfile::tempdir().unwrap();
        let (_journal, _) = Journal::open(dir.path(), Options::default()).unwrap();
        assert!(matches!(
            Journal::open_salvaging(dir.path(), Options::default(), &mut Handed::default()),
            Err(JournalError::Locked(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn whatever_bytes_are_damaged_no_valid_record_is_lost_but_theirs(
            at in 0usize..2_000,
            span in 1usize..40,
            byte in proptest::prelude::any::<u8>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let segment = journal_of(dir.path(), 60);
            let mut bytes = fs::read(&segment).unwrap();
            let at = SEGMENT_HEADER_LEN + at % (bytes.len() - SEGMENT_HEADER_LEN);
            let end = (at + span).min(bytes.len());
            for b in &mut bytes[at..end] {
                *b ^= byte | 1;
            }
            fs::write(&segment, &bytes).unwrap();
            let (recovery, found) = open_salvaging(dir.path());
            let read_on = found.map_or(0, |s| s.records.len() as u64);
            // Each record is 16 + 10 bytes: a damaged span touches at most
            // span / 26 + 2 of them.
            let touched = (span as u64) / 26 + 2;
            proptest::prop_assert!(recovery.records + read_on + touched >= 60);
            proptest::prop_assert!(recovery.records + read_on <= 60);
        }
    }
}
