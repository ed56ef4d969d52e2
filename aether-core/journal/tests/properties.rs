//! Properties of the journal: records round trip; any truncation or byte
//! flip of a segment leaves exactly the valid records before the damage;
//! garbage never panics.

use std::{fs, path::Path};

use aether_journal::{
    FsyncPolicy, Journal, Options, RECORD_HEADER_LEN, Reader, Record, SEGMENT_HEADER_LEN,
};
use proptest::prelude::*;

fn options(segment_bytes: u64) -> Options {
    Options {
        fsync: FsyncPolicy::Never,
        segment_bytes,
        ..Options::default()
    }
}

fn records() -> impl Strategy<Value = Vec<(u64, Vec<u8>)>> {
    prop::collection::vec(
        (any::<u64>(), prop::collection::vec(any::<u8>(), 0..600)),
        0..60,
    )
}

fn write(dir: &Path, records: &[(u64, Vec<u8>)], segment_bytes: u64) {
    let (mut journal, recovery) = Journal::open(dir, options(segment_bytes)).unwrap();
    assert!(!recovery.repaired());
    for (i, (time, payload)) in records.iter().enumerate() {
        assert_eq!(journal.append(*time, payload).unwrap(), i as u64);
    }
    journal.close().unwrap();
}

fn read_all(dir: &Path) -> Vec<Record> {
    let reader = Reader::open(dir).unwrap();
    let mut records = reader.records(0);
    let all: Vec<Record> = records.by_ref().map(Result::unwrap).collect();
    assert_eq!(
        records.damage(),
        None,
        "a repaired journal reads to its end"
    );
    all
}

/// Segment files in order, and for each the end offsets of its records,
/// walked by the length fields of an undamaged journal.
fn layout(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u64>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let bytes = fs::read(&path).unwrap();
            let mut ends = Vec::new();
            let mut at = SEGMENT_HEADER_LEN;
            while at < bytes.len() {
                let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
                at += RECORD_HEADER_LEN + len;
                ends.push(at as u64);
            }
            (path, ends)
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Harm {
    Cut,
    Flip(u8),
}

fn check_damage(
    records: Vec<(u64, Vec<u8>)>,
    segment_bytes: u64,
    file_pick: prop::sample::Index,
    offset_pick: prop::sample::Index,
    harm: Harm,
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &records, segment_bytes);
    let layout = layout(dir.path());
    let k = file_pick.index(layout.len());
    let (path, _) = &layout[k];
    let mut bytes = fs::read(path).unwrap();
    let d = offset_pick.index(bytes.len() + 1);
    match harm {
        Harm::Cut => bytes.truncate(d),
        Harm::Flip(x) => {
            if d == bytes.len() {
                return Ok(());
            }
            bytes[d] ^= x;
        }
    }
    fs::write(path, &bytes).unwrap();
    let before: usize = layout[..k].iter().map(|(_, ends)| ends.len()).sum();
    let kept_here = layout[k].1.iter().filter(|end| **end <= d as u64).count();
    let expected = before + kept_here;

    let (mut journal, recovery) = Journal::open(dir.path(), options(segment_bytes)).unwrap();
    prop_assert_eq!(recovery.records, expected as u64);
    prop_assert_eq!(journal.next_seq(), expected as u64);
    // Records lost are always reported (a cut at a record boundary of the
    // last segment is indistinguishable from a shorter journal).
    if expected < records.len() && k + 1 < layout.len() {
        prop_assert!(recovery.repaired());
    }
    if let Harm::Flip(_) = harm {
        prop_assert!(recovery.repaired());
    }
    // New records follow the valid prefix.
    prop_assert_eq!(journal.append(1, b"after").unwrap(), expected as u64);
    journal.close().unwrap();
    let read = read_all(dir.path());
    prop_assert_eq!(read.len(), expected + 1);
    for (i, record) in read[..expected].iter().enumerate() {
        prop_assert_eq!(record.seq, i as u64);
        prop_assert_eq!(record.time_ms, records[i].0);
        prop_assert_eq!(&record.payload, &records[i].1);
    }
    prop_assert_eq!(&read[expected].payload, b"after");
    // Opening again finds nothing more to repair.
    let (_, again) = Journal::open(dir.path(), options(segment_bytes)).unwrap();
    prop_assert!(!again.repaired());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn records_round_trip(records in records(), segment_bytes in 4096u64..12_000) {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &records, segment_bytes);
        let read = read_all(dir.path());
        prop_assert_eq!(read.len(), records.len());
        for (i, (record, (time, payload))) in read.iter().zip(&records).enumerate() {
            prop_assert_eq!(record.seq, i as u64);
            prop_assert_eq!(record.time_ms, *time);
            prop_assert_eq!(&record.payload, payload);
        }
        // Reading from the middle gives the rest.
        let from = records.len() as u64 / 2;
        let tail: Vec<_> = Reader::open(dir.path()).unwrap().records(from).map(Result::unwrap).collect();
        prop_assert_eq!(tail.len() as u64, records.len() as u64 - from);
        prop_assert!(tail.iter().all(|r| r.seq >= from));
        // A reopened journal continues the sequence.
        let (mut journal, recovery) = Journal::open(dir.path(), options(segment_bytes)).unwrap();
        prop_assert!(!recovery.repaired());
        prop_assert_eq!(recovery.records, records.len() as u64);
        prop_assert_eq!(journal.append(0, b"x").unwrap(), records.len() as u64);
    }

    #[test]
    fn any_truncation_leaves_exactly_the_prefix_before_it(
        records in records(),
        segment_bytes in 4096u64..12_000,
        file in any::<prop::sample::Index>(),
        offset in any::<prop::sample::Index>(),
    ) {
        check_damage(records, segment_bytes, file, offset, Harm::Cut)?;
    }

    #[test]
    fn any_byte_flip_leaves_exactly_the_prefix_before_it(
        records in records(),
        segment_bytes in 4096u64..12_000,
        file in any::<prop::sample::Index>(),
        offset in any::<prop::sample::Index>(),
        x in 1u8..=255,
    ) {
        check_damage(records, segment_bytes, file, offset, Harm::Flip(x))?;
    }

    #[test]
    fn garbage_never_panics(
        valid in records(),
        garbage in prop::collection::vec(any::<u8>(), 0..2000),
        with_header in any::<bool>(),
        snapshot in prop::collection::vec(any::<u8>(), 0..100),
    ) {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &valid, 1 << 20);
        let layout = layout(dir.path());
        let (last, _) = layout.last().unwrap();
        // Garbage after valid records, and a segment of garbage after it.
        let mut bytes = fs::read(last).unwrap();
        bytes.extend_from_slice(&garbage);
        fs::write(last, &bytes).unwrap();
        let mut next = Vec::new();
        if with_header {
            next.extend_from_slice(b"AEJL\x01\0\0\0");
            next.extend_from_slice(&(valid.len() as u64).to_le_bytes());
            next.extend_from_slice(&(valid.len() as u64).to_le_bytes());
        }
        next.extend_from_slice(&garbage);
        fs::write(dir.path().join(format!("{:020}.log", valid.len())), &next).unwrap();
        fs::write(dir.path().join("snapshot.bin"), &snapshot).unwrap();
        // Reading never panics and never gives a record that was not written.
        let reader = Reader::open(dir.path()).unwrap();
        for record in reader.records(0) {
            let record = record.unwrap();
            if (record.seq as usize) < valid.len() {
                prop_assert_eq!(&record.payload, &valid[record.seq as usize].1);
            }
        }
        let _ = aether_journal::read_snapshot(dir.path());
        let (journal, recovery) = Journal::open(dir.path(), options(1 << 20)).unwrap();
        prop_assert!(recovery.records >= valid.len() as u64);
        drop(journal);
        let read = read_all(dir.path());
        for (record, (time, payload)) in read.iter().zip(&valid) {
            prop_assert_eq!(record.time_ms, *time);
            prop_assert_eq!(&record.payload, payload);
        }
    }
}
