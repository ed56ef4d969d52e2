//! The writer: [`Journal::open`] repairs and opens a journal directory,
//! then records are appended to its newest segment.

use std::{
    fs::{self, File, OpenOptions},
    io::{BufReader, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{
    FsyncPolicy, JournalError, Options, Record, Snapshot,
    files::{create_private_dir, private},
    format::{
        DamageKind, MAX_RECORD_LEN, Next, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentReader,
        encode_record, parse_segment_name, segment_header, segment_name,
    },
    snapshot::{self, SNAPSHOT_TEMP_FILE, read_snapshot, sync_dir},
};

/// The lock file: held by the one writer of a directory.
pub const LOCK_FILE: &str = "LOCK";

/// Appended bytes kept in memory before they are written, under
/// [`FsyncPolicy::Every`] and [`FsyncPolicy::Never`].
const BUFFER_BYTES: usize = 256 * 1024;
/// The buffer's room kept between writes: a journal that is mostly idle
/// (one of a keeper's many maps) holds no more than this.
const IDLE_BUFFER_BYTES: usize = 16 * 1024;

/// An fsync of the records a journal held when it was made
/// ([`Journal::sync_later`]).
#[derive(Debug)]
pub struct PendingSync {
    file: File,
    path: PathBuf,
    covers: u64,
}

impl PendingSync {
    /// Records with a sequence number below this are on the disk once
    /// [`sync`](Self::sync) returned.
    pub fn covers(&self) -> u64 {
        self.covers
    }

    /// Fsyncs; returns [`covers`](Self::covers).
    pub fn sync(self) -> Result<u64, JournalError> {
        self.file
            .sync_data()
            .map_err(|e| JournalError::io(&self.path, e))?;
        Ok(self.covers)
    }
}

/// Where the records of a journal stopped being valid, found on open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The damaged segment file.
    pub segment: PathBuf,
    /// The offset in it of the first byte not kept.
    pub offset: u64,
    /// What was wrong there.
    pub kind: DamageKind,
}

/// What [`Journal::open`] found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segments kept.
    pub segments: usize,
    /// Valid records kept.
    pub records: u64,
    /// The first damage, if any: everything from it on was removed.
    pub damage: Option<Damage>,
    /// Bytes removed: the damaged segment's tail and the segments after it.
    pub truncated_bytes: u64,
    /// Whole segments removed because they came after the damage.
    pub removed_segments: usize,
}

impl Recovery {
    /// Whether anything was removed.
    pub fn repaired(&self) -> bool {
        self.damage.is_some()
    }
}

/// What [`Journal::open_all`] tells of the first damage it found, before
/// it cuts there: the directory, the damaged segment and those after it
/// (base, path, length), and where.
pub(crate) type AtDamage<'a> =
    dyn FnMut(&Path, &[(u64, PathBuf, u64)], &Damage) -> Result<(), JournalError> + 'a;

/// A caller that rebuilds its state from a journal as
/// [`Journal::open_salvaging`] opens it: handed the snapshot first, then
/// each record after it, as the opening checks them (each file is read
/// once).
pub trait Restore {
    /// The snapshot (`Ok(None)`: there is none; `Err`: it is damaged),
    /// before any record. Returns the sequence number from which it wants
    /// the records: the snapshot's position, or 0 for every one kept.
    fn snapshot(&mut self, snapshot: Result<Option<Snapshot>, JournalError>) -> u64;
    /// A valid record the journal keeps, in order, from that sequence
    /// number on.
    fn record(&mut self, record: Record);
}

/// What [`Journal::open_with_snapshot`] opened.
#[derive(Debug)]
pub struct Opened {
    /// The journal, for appending.
    pub journal: Journal,
    /// What opening it repaired.
    pub recovery: Recovery,
    /// Its snapshot, as [`read_snapshot`](crate::read_snapshot) reads it
    /// (`Err` if damaged).
    pub snapshot: Result<Option<Snapshot>, JournalError>,
}

/// What [`Journal::enforce_retention`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retained {
    /// Segments deleted.
    pub segments: usize,
    /// Their records.
    pub records: u64,
    /// Their bytes.
    pub bytes: u64,
}

#[derive(Clone, Debug)]
struct Segment {
    base: u64,
    records: u64,
    bytes: u64,
    /// The newest record time, Unix ms (0 when empty).
    newest_ms: u64,
    path: PathBuf,
}

/// An open journal, the only writer of its directory (a `LOCK` file held
/// with an exclusive lock).
///
/// ```
/// use aether_journal::{Journal, Options, Reader};
///
/// let dir = tempfile::tempdir()?;
/// let (mut journal, recovery) = Journal::open(dir.path(), Options::default())?;
/// assert!(!recovery.repaired());
/// let first = journal.append(1_700_000_000_000, b"hello")?;
/// journal.append(1_700_000_000_001, b"world")?;
/// journal.flush()?;
///
/// // A snapshot says what the first record built; restart = snapshot +
/// // the records after it.
/// journal.write_snapshot(1_700_000_000_002, b"state after 2 records")?;
/// let snapshot = aether_journal::read_snapshot(dir.path())?.unwrap();
/// assert_eq!(snapshot.position, first + 2);
///
/// let records: Vec<_> = Reader::open(dir.path())?.records(first).collect::<Result<_, _>>()?;
/// assert_eq!(records[1].payload, b"world");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    options: Options,
    _lock: File,
    /// Closed segments, then the active one (never empty).
    segments: Vec<Segment>,
    active: File,
    buffer: Vec<u8>,
    buffered_records: u64,
    buffered_newest_ms: u64,
    next_seq: u64,
    unsynced_records: u64,
    last_sync: Instant,
}

pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf, u64)>, JournalError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| JournalError::io(dir, e))? {
        let entry = entry.map_err(|e| JournalError::io(dir, e))?;
        let name = entry.file_name();
        let Some(base) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        let path = entry.path();
        let len = entry
            .metadata()
            .map_err(|e| JournalError::io(&path, e))?
            .len();
        segments.push((base, path, len));
    }
    segments.sort_by_key(|(base, _, _)| *base);
    Ok(segments)
}

/// Scans one segment: its valid records, the newest time, the end of the
/// valid part and the damage. `expected_start` is where the previous
/// segment ends, if there is one.
/// Each valid record (before the damage) from sequence number `from` on
/// is handed to `each`.
pub(crate) fn scan(
    path: &Path,
    (len, base, expected_start): (u64, u64, Option<u64>),
    from: u64,
    each: &mut dyn FnMut(Record),
) -> Result<(u64, u64, u64, Option<DamageKind>), JournalError> {
    let file = File::open(path).map_err(|e| JournalError::io(path, e))?;
    let io = |e| JournalError::io(path, e);
    let mut reader = match SegmentReader::open(BufReader::new(file), len, base).map_err(io)? {
        Ok(reader) => reader,
        Err(kind) => return Ok((0, 0, 0, Some(kind))),
    };
    if expected_start.is_some_and(|end| end != reader.previous_end) {
        return Ok((0, 0, 0, Some(DamageKind::Gap)));
    }
    let (mut records, mut newest) = (0u64, 0u64);
    loop {
        match reader.next().map_err(io)? {
            Next::Record { time_ms, payload } => {
                let seq = base + records;
                if seq >= from {
                    each(Record {
                        seq,
                        time_ms,
                        payload,
                    });
                }
                records += 1;
                newest = newest.max(time_ms);
            }
            Next::End => return Ok((records, newest, reader.offset, None)),
            Next::Damaged(kind) => return Ok((records, newest, reader.offset, Some(kind))),
        }
    }
}

impl Journal {
    /// Opens the journal in `dir` (created if missing) for appending.
    ///
    /// Every segment is read and checked. At the first damage (a torn
    /// write, a bad checksum, a bad header or length) the segment is cut
    /// there and every later segment is deleted, so the journal is exactly
    /// the valid records before the damage; the [`Recovery`] says what was
    /// removed. A snapshot whose position is past the log's end (its
    /// records were lost with an unsynced tail) moves the next sequence
    /// number up to it.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<(Self, Recovery), JournalError> {
        Self::open_with_snapshot(dir, options).map(|opened| (opened.journal, opened.recovery))
    }

    /// [`open`](Self::open), handing over the snapshot it reads to know
    /// where the sequence goes on: a caller that restores from it reads
    /// it once, not twice (it is the size of the state it holds).
    pub fn open_with_snapshot(
        dir: impl AsRef<Path>,
        options: Options,
    ) -> Result<Opened, JournalError> {
        Self::open_all(dir.as_ref(), options, &mut |_, _, _| Ok(()), None)
    }

    /// [`open_with_snapshot`](Self::open_with_snapshot), telling
    /// `at_damage` of the first damage (the directory, the damaged segment
    /// and those after it, where) before it is cut.
    /// With `restore`, the snapshot and the records after it are handed
    /// to it as they are read (the snapshot is not in what is returned).
    pub(crate) fn open_all(
        dir: &Path,
        options: Options,
        at_damage: &mut AtDamage<'_>,
        mut restore: Option<&mut dyn Restore>,
    ) -> Result<Opened, JournalError> {
        options.validate()?;
        let dir = dir.to_path_buf();
        create_private_dir(&dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = private(OpenOptions::new().create(true).truncate(false).write(true))
            .open(&lock_path)
            .map_err(|e| JournalError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(JournalError::Locked(dir)),
            Err(fs::TryLockError::Error(e)) => return Err(JournalError::io(lock_path, e)),
        }
        let temp = dir.join(SNAPSHOT_TEMP_FILE);
        if temp.exists() {
            fs::remove_file(&temp).map_err(|e| JournalError::io(&temp, e))?;
        }

        // A damaged snapshot is the reader's concern; it cannot move the
        // sequence.
        let mut snapshot = read_snapshot(&dir);
        let snapshot_end = snapshot
            .as_ref()
            .ok()
            .and_then(Option::as_ref)
            .map_or(0, |s| s.position);
        let (from, each): (u64, &mut dyn FnMut(Record)) = match restore.as_mut() {
            Some(restore) => {
                let snapshot = std::mem::replace(&mut snapshot, Ok(None));
                (restore.snapshot(snapshot), &mut |record| {
                    restore.record(record)
                })
            }
            None => (u64::MAX, &mut |_| {}),
        };
        let mut recovery = Recovery::default();
        let mut segments: Vec<Segment> = Vec::new();
        let found = list_segments(&dir)?;
        let mut damaged_at = None;
        for (i, (base, path, len)) in found.iter().enumerate() {
            // Segments follow each other: each header says where the
            // previous segment ended when it was made (its base, unless a
            // snapshot moved the sequence on).
            let expected = segments.last().map(|s: &Segment| s.base + s.records);
            let (records, newest, valid, kind) = scan(path, (*len, *base, expected), from, each)?;
            if let Some(kind) = kind {
                let damage = Damage {
                    segment: path.clone(),
                    offset: valid,
                    kind,
                };
                at_damage(&dir, &found[i..], &damage)?;
                recovery.damage = Some(damage);
                if records == 0 {
                    fs::remove_file(path).map_err(|e| JournalError::io(path, e))?;
                    recovery.truncated_bytes += len;
                    recovery.removed_segments += 1;
                } else {
                    let file = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(|e| JournalError::io(path, e))?;
                    file.set_len(valid)
                        .and_then(|()| file.sync_all())
                        .map_err(|e| JournalError::io(path, e))?;
                    recovery.truncated_bytes += len - valid;
                    segments.push(Segment {
                        base: *base,
                        records,
                        bytes: valid,
                        newest_ms: newest,
                        path: path.clone(),
                    });
                }
                damaged_at = Some(i);
                break;
            }
            segments.push(Segment {
                base: *base,
                records,
                bytes: *len,
                newest_ms: newest,
                path: path.clone(),
            });
        }
        if let Some(i) = damaged_at {
            for (_, path, len) in &found[i + 1..] {
                fs::remove_file(path).map_err(|e| JournalError::io(path, e))?;
                recovery.truncated_bytes += len;
                recovery.removed_segments += 1;
            }
            sync_dir(&dir)?;
        }
        recovery.segments = segments.len();
        recovery.records = segments.iter().map(|s| s.records).sum();

        let log_end = segments.last().map_or(0, |s| s.base + s.records);
        let next_seq = log_end.max(snapshot_end);
        let reuse = segments
            .last()
            .is_some_and(|s| s.base + s.records == next_seq && s.bytes < options.segment_bytes);
        let active = if reuse {
            let path = &segments.last().expect("checked").path;
            OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(|e| JournalError::io(path, e))?
        } else {
            let (file, segment) = create_segment(&dir, next_seq, log_end, options.fsync)?;
            segments.push(segment);
            file
        };
        Ok(Opened {
            journal: Self {
                dir,
                options,
                _lock: lock,
                segments,
                active,
                buffer: Vec::new(),
                buffered_records: 0,
                buffered_newest_ms: 0,
                next_seq,
                unsynced_records: 0,
                last_sync: Instant::now(),
            },
            recovery,
            snapshot,
        })
    }

    /// Appends a record stamped `time_ms` (Unix milliseconds: retention by
    /// age and time ranges read it) and returns its sequence number. It
    /// is written by the next [`flush`](Self::flush) (at once under
    /// [`FsyncPolicy::Always`], which also fsyncs it).
    pub fn append(&mut self, time_ms: u64, payload: &[u8]) -> Result<u64, JournalError> {
        if payload.len() > MAX_RECORD_LEN {
            return Err(JournalError::RecordTooLarge {
                len: payload.len(),
                max: MAX_RECORD_LEN,
            });
        }
        let size = (RECORD_HEADER_LEN + payload.len()) as u64;
        let active = self.segments.last().expect("an active segment");
        if active.bytes + self.buffer.len() as u64 + size > self.options.segment_bytes
            && active.records + self.buffered_records > 0
        {
            self.roll()?;
        }
        encode_record(&mut self.buffer, time_ms, payload);
        self.buffered_records += 1;
        self.buffered_newest_ms = self.buffered_newest_ms.max(time_ms);
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.options.fsync == FsyncPolicy::Always {
            self.flush()?;
        } else if self.buffer.len() >= BUFFER_BYTES {
            self.write_buffer()?;
        }
        Ok(seq)
    }

    /// Hands the appended records to the operating system (a process that
    /// dies after this keeps them), and fsyncs if the policy says it is
    /// time. On an error the records appended since the last flush are
    /// discarded, and the segment is cut back to its last whole record.
    pub fn flush(&mut self) -> Result<(), JournalError> {
        self.write_buffer()?;
        let due = match self.options.fsync {
            FsyncPolicy::Always => self.unsynced_records > 0,
            FsyncPolicy::Every { interval, records } => {
                self.unsynced_records > 0
                    && (self.last_sync.elapsed() >= interval
                        || (records > 0 && self.unsynced_records >= records))
            }
            FsyncPolicy::Never => false,
        };
        if due { self.sync() } else { Ok(()) }
    }

    /// Writes and fsyncs everything appended, whatever the policy.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.write_buffer()?;
        let path = &self.segments.last().expect("an active segment").path;
        self.active
            .sync_data()
            .map_err(|e| JournalError::io(path, e))?;
        self.unsynced_records = 0;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Writes what was appended and returns a [`PendingSync`] that fsyncs
    /// it without holding the journal, so appends go on while the disk
    /// works (group commit: records appended meanwhile wait for the next
    /// one). Segments closed before were fsynced when they closed, unless
    /// the policy is [`FsyncPolicy::Never`].
    pub fn sync_later(&mut self) -> Result<PendingSync, JournalError> {
        self.write_buffer()?;
        let path = self
            .segments
            .last()
            .expect("an active segment")
            .path
            .clone();
        let file = self
            .active
            .try_clone()
            .map_err(|e| JournalError::io(&path, e))?;
        Ok(PendingSync {
            file,
            path,
            covers: self.next_seq,
        })
    }

    /// How long until [`flush`](Self::flush) would fsync under
    /// [`FsyncPolicy::Every`], if records wait for it.
    pub fn sync_due_in(&self) -> Option<Duration> {
        match self.options.fsync {
            FsyncPolicy::Every { interval, .. }
                if self.unsynced_records > 0 || !self.buffer.is_empty() =>
            {
                Some(interval.saturating_sub(self.last_sync.elapsed()))
            }
            _ => None,
        }
    }

    fn write_buffer(&mut self) -> Result<(), JournalError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let active = self.segments.last_mut().expect("an active segment");
        if let Err(error) = self.active.write_all(&self.buffer) {
            // Cut the segment back to its last whole record (and the file's
            // position with it: a new segment is not opened to append, and
            // the next write must not leave a hole) and give the sequence
            // numbers back.
            let _ = self.active.set_len(active.bytes);
            let _ = self.active.seek(SeekFrom::Start(active.bytes));
            self.next_seq = active.base + active.records;
            self.buffer.clear();
            self.buffered_records = 0;
            return Err(JournalError::io(&active.path, error));
        }
        active.bytes += self.buffer.len() as u64;
        active.records += self.buffered_records;
        active.newest_ms = active.newest_ms.max(self.buffered_newest_ms);
        self.unsynced_records += self.buffered_records;
        self.buffer.clear();
        self.buffer.shrink_to(IDLE_BUFFER_BYTES);
        self.buffered_records = 0;
        self.buffered_newest_ms = 0;
        Ok(())
    }

    /// Closes the active segment and starts the next one.
    fn roll(&mut self) -> Result<(), JournalError> {
        if self.options.fsync == FsyncPolicy::Never {
            self.write_buffer()?;
        } else {
            self.sync()?;
        }
        let (file, segment) =
            create_segment(&self.dir, self.next_seq, self.next_seq, self.options.fsync)?;
        self.active = file;
        self.segments.push(segment);
        Ok(())
    }

    /// Writes a snapshot covering every record appended so far (its
    /// position is [`next_seq`](Self::next_seq)), after writing and
    /// fsyncing them; returns that position. The file is replaced
    /// atomically (see [`read_snapshot`](crate::read_snapshot)).
    pub fn write_snapshot(&mut self, time_ms: u64, data: &[u8]) -> Result<u64, JournalError> {
        self.sync()?;
        let position = self.next_seq;
        snapshot::write(
            &self.dir,
            &Snapshot {
                position,
                time_ms,
                data: data.to_vec(),
            },
        )?;
        Ok(position)
    }

    /// Deletes whole old segments past the retention: the oldest while the
    /// journal is larger than `max_bytes`, and those whose newest record is
    /// older than `max_age` before `now_ms`. The active segment stays.
    pub fn enforce_retention(&mut self, now_ms: u64) -> Result<Retained, JournalError> {
        let retention = self.options.retention;
        let mut total: u64 = self.segments.iter().map(|s| s.bytes).sum();
        let mut retained = Retained::default();
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let too_big = retention.max_bytes.is_some_and(|max| total > max);
            let too_old = retention.max_age.is_some_and(|age| {
                let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
                oldest.newest_ms < now_ms.saturating_sub(age_ms)
            });
            if !(too_big || too_old) {
                break;
            }
            fs::remove_file(&oldest.path).map_err(|e| JournalError::io(&oldest.path, e))?;
            total -= oldest.bytes;
            retained.segments += 1;
            retained.records += oldest.records;
            retained.bytes += oldest.bytes;
            self.segments.remove(0);
        }
        if retained.segments > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(retained)
    }

    /// Deletes the whole closed segments whose records all come before
    /// `seq`: what a snapshot at position `seq` covers. The active segment
    /// stays.
    pub fn compact_before(&mut self, seq: u64) -> Result<Retained, JournalError> {
        let mut retained = Retained::default();
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            if oldest.base + oldest.records > seq {
                break;
            }
            fs::remove_file(&oldest.path).map_err(|e| JournalError::io(&oldest.path, e))?;
            retained.segments += 1;
            retained.records += oldest.records;
            retained.bytes += oldest.bytes;
            self.segments.remove(0);
        }
        if retained.segments > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(retained)
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The sequence number of the oldest record kept (equal to
    /// [`next_seq`](Self::next_seq) when there is none).
    pub fn first_seq(&self) -> u64 {
        self.segments.first().map_or(self.next_seq, |s| s.base)
    }

    /// Bytes of all segments, including what is appended but not written.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum::<u64>() + self.buffer.len() as u64
    }

    /// Segment files.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes and fsyncs everything appended, then closes the journal.
    pub fn close(mut self) -> Result<(), JournalError> {
        self.sync()
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // Best effort: a journal closed with `close` has nothing left.
        let _ = self.write_buffer();
    }
}

fn create_segment(
    dir: &Path,
    base: u64,
    previous_end: u64,
    fsync: FsyncPolicy,
) -> Result<(File, Segment), JournalError> {
    let path = dir.join(segment_name(base));
    let mut file = private(OpenOptions::new().create(true).truncate(true).write(true))
        .open(&path)
        .map_err(|e| JournalError::io(&path, e))?;
    // A segment whose header could not be written (a full disk) holds
    // nothing: removed, not left to be read as a damaged one.
    let headed = file
        .write_all(&segment_header(base, previous_end))
        .and_then(|()| match fsync {
            FsyncPolicy::Never => Ok(()),
            _ => file.sync_all(),
        });
    if let Err(error) = headed {
        let _ = fs::remove_file(&path);
        return Err(JournalError::io(&path, error));
    }
    if fsync != FsyncPolicy::Never {
        sync_dir(dir)?;
    }
    Ok((
        file,
        Segment {
            base,
            records: 0,
            bytes: SEGMENT_HEADER_LEN as u64,
            newest_ms: 0,
            path,
        },
    ))
}
