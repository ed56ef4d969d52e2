//! The journal's behaviour: fsync policies, segments, retention,
//! snapshots, the lock, and the damage the properties may miss by chance.

use std::{fs, time::Duration};

use aether_journal::{
    DamageKind, FsyncPolicy, Journal, JournalError, MAX_RECORD_LEN, Options, Reader, Retention,
    SNAPSHOT_FILE, read_snapshot,
};

fn opts(fsync: FsyncPolicy, segment_bytes: u64) -> Options {
    Options {
        fsync,
        segment_bytes,
        ..Options::default()
    }
}

fn payloads(dir: &std::path::Path, from: u64) -> Vec<Vec<u8>> {
    Reader::open(dir)
        .unwrap()
        .records(from)
        .map(|r| r.unwrap().payload)
        .collect()
}

fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

#[test]
fn always_writes_each_record_at_once_and_others_at_flush() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(dir.path(), opts(FsyncPolicy::Always, 1 << 20)).unwrap();
    journal.append(1, b"a").unwrap();
    assert_eq!(payloads(dir.path(), 0), vec![b"a".to_vec()]);
    drop(journal);

    let dir = tempfile::tempdir().unwrap();
    let every = FsyncPolicy::Every {
        interval: Duration::from_secs(3600),
        records: 2,
    };
    let (mut journal, _) = Journal::open(dir.path(), opts(every, 1 << 20)).unwrap();
    journal.append(1, b"a").unwrap();
    assert!(payloads(dir.path(), 0).is_empty(), "buffered until flush");
    assert!(journal.sync_due_in().is_some());
    journal.flush().unwrap();
    assert_eq!(payloads(dir.path(), 0).len(), 1);
    journal.append(2, b"b").unwrap();
    journal.flush().unwrap(); // two records since the last fsync: synced
    assert_eq!(journal.sync_due_in(), None);
}

#[test]
fn segments_roll_and_records_read_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(dir.path(), opts(FsyncPolicy::Never, 4096)).unwrap();
    for i in 0..100u64 {
        journal.append(i, &[i as u8; 200]).unwrap();
    }
    journal.close().unwrap();
    assert!(segment_files(dir.path()).len() > 4);
    let read = payloads(dir.path(), 37);
    assert_eq!(read.len(), 63);
    assert_eq!(read[0], vec![37u8; 200]);
}

#[test]
fn a_cut_at_a_record_boundary_of_an_older_segment_drops_the_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(dir.path(), opts(FsyncPolicy::Never, 4096)).unwrap();
    for i in 0..60u64 {
        journal.append(i, &[i as u8; 200]).unwrap();
    }
    journal.close().unwrap();
    let files = segment_files(dir.path());
    let first = fs::read(&files[0]).unwrap();
    let per_segment = (first.len() - 24) / 216;
    // Cut the first segment after its first record, exactly at its end.
    fs::write(&files[0], &first[..24 + 216]).unwrap();
    let (journal, recovery) = Journal::open(dir.path(), opts(FsyncPolicy::Never, 4096)).unwrap();
    assert_eq!(recovery.records, 1, "{recovery:?}");
    assert_eq!(recovery.damage.as_ref().unwrap().kind, DamageKind::Gap);
    assert_eq!(recovery.removed_segments, files.len() - 1);
    assert_eq!(journal.next_seq(), 1);
    assert!(per_segment > 1);
}

#[test]
fn retention_deletes_whole_old_segments_by_size_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        fsync: FsyncPolicy::Never,
        segment_bytes: 4096,
        retention: Retention {
            max_bytes: Some(3 * 4096),
            max_age: None,
        },
    };
    let (mut journal, _) = Journal::open(dir.path(), options).unwrap();
    for i in 0..200u64 {
        journal.append(1000 + i, &[0; 200]).unwrap();
    }
    journal.flush().unwrap();
    let retained = journal.enforce_retention(0).unwrap();
    assert!(retained.segments > 0);
    assert!(journal.bytes() <= 3 * 4096, "{}", journal.bytes());
    let first = journal.first_seq();
    assert_eq!(first, 200 - payloads(dir.path(), 0).len() as u64);
    assert_eq!(Reader::open(dir.path()).unwrap().first_seq(), Some(first));
    drop(journal);

    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        fsync: FsyncPolicy::Never,
        segment_bytes: 4096,
        retention: Retention {
            max_bytes: None,
            max_age: Some(Duration::from_secs(10)),
        },
    };
    let (mut journal, _) = Journal::open(dir.path(), options).unwrap();
    for i in 0..40u64 {
        journal.append(i * 1000, &[0; 200]).unwrap(); // 0 s to 39 s
    }
    journal.flush().unwrap();
    journal.enforce_retention(40_000).unwrap();
    // Every segment left has a record newer than 30 s; the active one stays.
    let times: Vec<u64> = Reader::open(dir.path())
        .unwrap()
        .records(0)
        .map(|r| r.unwrap().time_ms)
        .collect();
    assert!(
        *times.first().unwrap() > 10_000 && *times.first().unwrap() <= 30_000,
        "{times:?}"
    );
    assert_eq!(*times.last().unwrap(), 39_000);
}

#[test]
fn a_snapshot_covers_what_was_appended_and_survives_a_lost_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(dir.path(), opts(FsyncPolicy::Never, 1 << 20)).unwrap();
    for i in 0..10u64 {
        journal.append(i, b"r").unwrap();
    }
    assert_eq!(journal.write_snapshot(99, b"ten").unwrap(), 10);
    journal.close().unwrap();
    let snapshot = read_snapshot(dir.path()).unwrap().unwrap();
    assert_eq!((snapshot.position, snapshot.time_ms), (10, 99));
    assert_eq!(snapshot.data, b"ten");

    // The log loses records the snapshot covers (an unsynced tail lost
    // with the machine): new records still come after the snapshot.
    let file = &segment_files(dir.path())[0];
    let bytes = fs::read(file).unwrap();
    fs::write(file, &bytes[..bytes.len() - 3 * 17]).unwrap();
    let (mut journal, recovery) =
        Journal::open(dir.path(), opts(FsyncPolicy::Never, 1 << 20)).unwrap();
    assert_eq!(recovery.records, 7);
    assert_eq!(journal.append(1, b"new").unwrap(), 10);
    journal.close().unwrap();
    let (_, again) = Journal::open(dir.path(), opts(FsyncPolicy::Never, 1 << 20)).unwrap();
    assert!(!again.repaired(), "{again:?}");
    let after: Vec<_> = Reader::open(dir.path())
        .unwrap()
        .records(10)
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(after.len(), 1);
    assert_eq!(
        (after[0].seq, after[0].payload.as_slice()),
        (10, &b"new"[..])
    );

    // Opened with its snapshot: the one read_snapshot reads.
    let opened =
        Journal::open_with_snapshot(dir.path(), opts(FsyncPolicy::Never, 1 << 20)).unwrap();
    assert_eq!(opened.snapshot.unwrap(), Some(snapshot));
    assert_eq!(opened.journal.next_seq(), 11);
    drop(opened.journal);

    // A damaged snapshot is an error that says so, and moves nothing.
    fs::write(dir.path().join(SNAPSHOT_FILE), b"AEJS junk").unwrap();
    assert!(matches!(
        read_snapshot(dir.path()),
        Err(JournalError::SnapshotCorrupt { .. })
    ));
    let opened =
        Journal::open_with_snapshot(dir.path(), opts(FsyncPolicy::Never, 1 << 20)).unwrap();
    assert!(matches!(
        opened.snapshot,
        Err(JournalError::SnapshotCorrupt { .. })
    ));
    assert_eq!(opened.journal.next_seq(), 11);
}

#[test]
fn one_writer_per_directory_and_bad_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(dir.path(), Options::default()).unwrap();
    let err = Journal::open(dir.path(), Options::default()).unwrap_err();
    assert!(matches!(err, JournalError::Locked(_)), "{err}");
    assert!(err.to_string().contains("open for writing"), "{err}");
    let big = vec![0u8; MAX_RECORD_LEN + 1];
    assert!(matches!(
        journal.append(0, &big),
        Err(JournalError::RecordTooLarge { .. })
    ));
    assert_eq!(journal.next_seq(), 0);
    let err = Journal::open(
        dir.path().join("x"),
        Options {
            segment_bytes: 10,
            ..Options::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("segment_bytes"), "{err}");
    drop(journal);
    Journal::open(dir.path(), Options::default()).unwrap();
}

#[test]
fn a_reader_ends_where_the_journal_was_when_it_opened() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(dir.path(), opts(FsyncPolicy::Always, 1 << 20)).unwrap();
    journal.append(0, b"a").unwrap();
    let reader = Reader::open(dir.path()).unwrap();
    journal.append(0, b"b").unwrap();
    let mut records = reader.records(0);
    assert_eq!(records.by_ref().count(), 1);
    assert_eq!(records.damage(), None);
}

#[test]
fn compaction_deletes_only_segments_a_snapshot_covers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(dir.path(), opts(FsyncPolicy::Never, 4096)).unwrap();
    for i in 0..60u64 {
        journal.append(i, &[i as u8; 200]).unwrap();
    }
    let position = journal.write_snapshot(60, b"state of 60").unwrap();
    for i in 60..80u64 {
        journal.append(i, &[i as u8; 200]).unwrap();
    }
    let before = segment_files(dir.path()).len();
    let retained = journal.compact_before(position).unwrap();
    assert!(retained.segments > 0 && retained.records <= position);
    assert_eq!(segment_files(dir.path()).len(), before - retained.segments);
    journal.close().unwrap();
    // Everything from the snapshot on is still there, in order.
    let read = payloads(dir.path(), position);
    assert_eq!(read.len(), 20);
    assert_eq!(read[0], vec![60u8; 200]);
    // The first record kept is at or before the snapshot: nothing it does
    // not cover was deleted.
    assert!(Reader::open(dir.path()).unwrap().first_seq().unwrap() <= position);
}

#[test]
fn a_pending_sync_covers_what_was_appended_before_it_and_runs_without_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(
        dir.path(),
        opts(
            FsyncPolicy::Every {
                interval: Duration::from_secs(3600),
                records: 0,
            },
            4096,
        ),
    )
    .unwrap();
    for n in 0..10u8 {
        journal.append(1, &[n; 40]).unwrap();
    }
    let pending = journal.sync_later().unwrap();
    assert_eq!(pending.covers(), 10);
    // The journal takes appends while the fsync has not run.
    for n in 10..20u8 {
        journal.append(1, &[n; 40]).unwrap();
    }
    assert_eq!(pending.sync().unwrap(), 10);
    // What it covered was written, and readable.
    assert_eq!(payloads(dir.path(), 0).len(), 10);
    journal.flush().unwrap();
    assert_eq!(payloads(dir.path(), 0).len(), 20);
}
