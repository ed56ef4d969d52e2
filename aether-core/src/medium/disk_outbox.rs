//! The durable outbox: waves on durable channels kept in order, in memory
//! and, with `durability.outbox_dir`, in a file synced before `emit`
//! returns, so that the next process still has them. Over NATS it holds the
//! waves JetStream did not store yet (NATS unreachable, or no
//! acknowledgement), and the next process resends them; on the embedded
//! medium it holds every durable wave until an application took it
//! (`medium/embedded/durable.rs`), and the next process delivers them.
//!
//! The file, `durable-outbox.log`, is an 8-byte header then records back
//! to back (docs/guide/wire.md gives it byte by byte):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `AEOX` |
//! | 4 | 1 | version, `1` |
//! | 5 | 3 | zero |
//!
//! A record is `crc32c u32 | length u32 | body`, the CRC-32C over the
//! length and the body; the body is a kind byte then its fields: `1` a wave
//! (`subject length u16 | subject | wave id u128 big-endian | envelope`),
//! `2` an acknowledgement mark (`count u64`: the first `count` waves of the
//! file are stored), `3` a taken mark (`wave id u128 big-endian`: the
//! earliest pending wave with this id was taken by an application, embedded
//! medium). Integers are little-endian but the ids. Reading stops at the
//! first record that is cut short or fails its checksum, and the file is cut
//! back there: a crash mid-write loses only the record being written, whose
//! `emit` had not returned. When nothing is pending the file is cut back to
//! its header; a file mostly made of waves no longer pending is rewritten to
//! hold only the pending ones.

use std::{
    collections::VecDeque,
    fs::{File, OpenOptions},
    io::{self, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc,
    },
};

use bytes::Bytes;

/// The outbox file's name in `outbox_dir`.
pub(crate) const FILE_NAME: &str = "durable-outbox.log";
/// The lock file's name: one process at a time uses a directory.
const LOCK_NAME: &str = "durable-outbox.lock";
/// Magic and version of the file header.
pub(crate) const MAGIC: [u8; 4] = *b"AEOX";
pub(crate) const VERSION: u8 = 1;
/// The file header's length.
pub(crate) const FILE_HEADER_LEN: usize = 8;
/// A record's header: CRC-32C and length.
const RECORD_HEADER_LEN: usize = 8;
/// Longest record body accepted when reading (an envelope is at most a few
/// MiB).
pub(crate) const MAX_RECORD_LEN: usize = 64 * 1024 * 1024;

const KIND_WAVE: u8 = 1;
const KIND_ACKED: u8 = 2;
const KIND_TAKEN: u8 = 3;
/// A file longer than this, and more than four times what its pending waves
/// take, is rewritten to hold only them.
const COMPACT_MIN_BYTES: u64 = 16 * 1024 * 1024;

/// A durable wave waiting to be stored: its subject, its id (the
/// `Nats-Msg-Id`) and its envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) subject: String,
    pub(crate) id: u128,
    pub(crate) body: Bytes,
}

impl Entry {
    /// What the entry counts against `outbox_max_bytes`.
    fn cost(&self) -> u64 {
        (self.subject.len() + self.body.len() + 16) as u64
    }
}

/// One record of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    Wave(Entry),
    /// The first `n` waves of the file are stored.
    Acked(u64),
    /// The earliest pending wave with this id was taken.
    Taken(u128),
}

/// Appends the file header to `out`.
pub(crate) fn encode_header(out: &mut Vec<u8>) {
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&[0; 3]);
}

/// Appends `record` to `out`.
pub(crate) fn encode_record(record: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER_LEN]);
    match record {
        Record::Wave(entry) => {
            out.push(KIND_WAVE);
            let subject = entry.subject.as_bytes();
            let len = subject.len().min(u16::MAX as usize);
            out.extend_from_slice(&(len as u16).to_le_bytes());
            out.extend_from_slice(&subject[..len]);
            out.extend_from_slice(&entry.id.to_be_bytes());
            out.extend_from_slice(&entry.body);
        }
        Record::Acked(n) => {
            out.push(KIND_ACKED);
            out.extend_from_slice(&n.to_le_bytes());
        }
        Record::Taken(id) => {
            out.push(KIND_TAKEN);
            out.extend_from_slice(&id.to_be_bytes());
        }
    }
    let body_len = (out.len() - start - RECORD_HEADER_LEN) as u32;
    out[start + 4..start + 8].copy_from_slice(&body_len.to_le_bytes());
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// What reading a file found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    /// The records of the valid prefix, in order.
    pub(crate) records: Vec<Record>,
    /// Length of the valid prefix (header included); what follows is a torn
    /// or damaged tail.
    pub(crate) valid_len: usize,
}

/// The file is not an outbox of this format.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an aether durable outbox (magic {magic:02x?}, version {version})")]
pub(crate) struct Foreign {
    magic: Vec<u8>,
    version: u8,
}

/// Reads a whole file's bytes: the records of its valid prefix. Never
/// panics; a file shorter than its header that is a prefix of one (a crash
/// while creating it) is empty. Any other header is [`Foreign`].
pub(crate) fn scan(bytes: &[u8]) -> Result<Scan, Foreign> {
    let mut header = Vec::with_capacity(FILE_HEADER_LEN);
    encode_header(&mut header);
    if bytes.len() < FILE_HEADER_LEN {
        if header.starts_with(bytes) {
            return Ok(Scan::default());
        }
    } else if bytes[..FILE_HEADER_LEN] == header[..] {
        let mut scan = Scan {
            records: Vec::new(),
            valid_len: FILE_HEADER_LEN,
        };
        while let Some((record, len)) = read_record(&bytes[scan.valid_len..]) {
            scan.records.push(record);
            scan.valid_len += len;
        }
        return Ok(scan);
    }
    Err(Foreign {
        magic: bytes.iter().take(4).copied().collect(),
        version: bytes.get(4).copied().unwrap_or(0),
    })
}

/// The record at the start of `bytes` and its length, if it is whole and
/// sound.
fn read_record(bytes: &[u8]) -> Option<(Record, usize)> {
    let header = bytes.get(..RECORD_HEADER_LEN)?;
    let crc = u32::from_le_bytes(header[..4].try_into().ok()?);
    let len = u32::from_le_bytes(header[4..8].try_into().ok()?) as usize;
    if len > MAX_RECORD_LEN {
        return None;
    }
    let end = RECORD_HEADER_LEN.checked_add(len)?;
    let checked = bytes.get(4..end)?;
    if crc32c::crc32c(checked) != crc {
        return None;
    }
    let body = &bytes[RECORD_HEADER_LEN..end];
    let (&kind, rest) = body.split_first()?;
    let record = match kind {
        KIND_WAVE => {
            let subject_len = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?) as usize;
            let subject = rest.get(2..2 + subject_len)?;
            let subject = std::str::from_utf8(subject).ok()?.to_string();
            let id_at = 2 + subject_len;
            let id = u128::from_be_bytes(rest.get(id_at..id_at + 16)?.try_into().ok()?);
            let body = Bytes::copy_from_slice(&rest[id_at + 16..]);
            Record::Wave(Entry { subject, id, body })
        }
        KIND_ACKED if rest.len() == 8 => Record::Acked(u64::from_le_bytes(rest.try_into().ok()?)),
        KIND_TAKEN if rest.len() == 16 => Record::Taken(u128::from_be_bytes(rest.try_into().ok()?)),
        _ => return None,
    };
    Some((record, end))
}

/// The pending waves of a file's records, in order: the waves after the
/// largest acknowledgement mark, less those a taken mark names (each taken
/// mark removes the earliest pending wave before it with its id).
fn pending_of(records: Vec<Record>) -> VecDeque<Entry> {
    let mut waves: Vec<Option<Entry>> = Vec::new();
    let mut acked = 0u64;
    for record in records {
        match record {
            Record::Wave(entry) => waves.push(Some(entry)),
            Record::Acked(n) => acked = acked.max(n),
            Record::Taken(id) => {
                let skip = usize::try_from(acked).unwrap_or(usize::MAX);
                if let Some(slot) = waves
                    .iter_mut()
                    .skip(skip)
                    .find(|w| w.as_ref().is_some_and(|w| w.id == id))
                {
                    *slot = None;
                }
            }
        }
    }
    waves
        .into_iter()
        .skip(usize::try_from(acked).unwrap_or(usize::MAX))
        .flatten()
        .collect()
}

/// Why a wave could not be put in the outbox.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppendError {
    #[error("the durable outbox holds {0} bytes of waves already")]
    Full(u64),
    #[error("cannot write the durable outbox {path}: {error}")]
    Io { path: PathBuf, error: io::Error },
}

/// The durable outbox: pending waves in order, mirrored to a file when it
/// has one.
///
/// Two locks, always taken file first: `file` serializes what is written
/// (appends, marks, compaction), `state` guards the pending waves in memory
/// and is never held across file I/O, so that taking a wave (from a
/// vibrator's `poll`) never waits on a disk. Taken marks are written by a
/// thread of the outbox's own.
pub(crate) struct DurableOutbox {
    state: Arc<Mutex<State>>,
    file: Option<Arc<Mutex<OutboxFile>>>,
    /// Ids of taken waves on their way to the file.
    marks: Option<MarkWriter>,
    max_bytes: u64,
    /// How many waves are pending, read without the lock.
    pending: AtomicUsize,
    /// Set while the flusher sends; emits then queue behind it.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    flushing: AtomicBool,
}

struct State {
    queue: VecDeque<Entry>,
    bytes: u64,
}

struct OutboxFile {
    path: PathBuf,
    file: File,
    /// Length of the file.
    len: u64,
    /// Wave records in the file, and how many of them (the first ones) are
    /// stored.
    waves: u64,
    acked: u64,
    /// Held for the life of the outbox: one process per directory.
    _lock: File,
}

/// What the mark writer is given.
enum Mark {
    /// A wave taken.
    Taken(u128),
    /// Answer once every mark given before is written.
    Barrier(mpsc::Sender<()>),
}

/// The thread that writes taken marks, and the way to it.
struct MarkWriter {
    ids: Option<mpsc::Sender<Mark>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long opening waits for an outbox that is in use to be let go.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

impl DurableOutbox {
    /// An outbox in memory.
    pub(crate) fn in_memory(max_bytes: u64) -> Self {
        Self::with(VecDeque::new(), None, max_bytes)
    }

    /// Opens (or creates) the outbox of `dir`, with the waves a previous
    /// process left in it. A torn or damaged tail is cut off.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_NAME))?;
        // An aether of this process dropped a moment ago lets go of it as
        // its last task ends: it is given a little while.
        let deadline = std::time::Instant::now() + LOCK_PATIENCE;
        while lock.try_lock().is_err() {
            if std::time::Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "in use by another aether, in this process or another; give each \
                     aether its own outbox_dir"
                        .to_string(),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let path = dir.join(FILE_NAME);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let scan = scan(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}; move it away", path.display()),
            )
        })?;
        if scan.valid_len < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = bytes.len() - scan.valid_len,
                "cut a torn or damaged tail off the durable outbox"
            );
        }
        let queue = pending_of(scan.records);
        // Start from a clean file holding only what is pending.
        let mut clean = Vec::new();
        encode_header(&mut clean);
        for entry in &queue {
            encode_record(&Record::Wave(entry.clone()), &mut clean);
        }
        if clean[..] != bytes[..] {
            rewrite(&path, &clean)?;
            file = OpenOptions::new().read(true).write(true).open(&path)?;
        }
        sync_dir(dir)?;
        let file = OutboxFile {
            path,
            file,
            len: clean.len() as u64,
            waves: queue.len() as u64,
            acked: 0,
            _lock: lock,
        };
        if !queue.is_empty() {
            tracing::info!(
                waves = queue.len(),
                "durable outbox: waves left by a previous process will be sent"
            );
        }
        Ok(Self::with(queue, Some(file), max_bytes))
    }

    fn with(queue: VecDeque<Entry>, file: Option<OutboxFile>, max_bytes: u64) -> Self {
        let bytes = queue.iter().map(Entry::cost).sum();
        let pending = AtomicUsize::new(queue.len());
        let state = Arc::new(Mutex::new(State { queue, bytes }));
        let file = file.map(|file| Arc::new(Mutex::new(file)));
        let marks = file
            .as_ref()
            .map(|file| MarkWriter::start(file.clone(), state.clone()));
        Self {
            state,
            file,
            marks,
            max_bytes,
            pending,
            flushing: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn lock_file(&self) -> Option<MutexGuard<'_, OutboxFile>> {
        self.file.as_deref().map(lock)
    }

    /// How many waves wait.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Bytes the waiting waves count against the bound, and the bound.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn bytes(&self) -> (u64, u64) {
        (self.lock().bytes, self.max_bytes)
    }

    /// Nothing waits and nothing is being flushed: an emit may go straight
    /// to JetStream.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn is_idle(&self) -> bool {
        !self.flushing.load(Ordering::Acquire) && self.len() == 0
    }

    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn set_flushing(&self, flushing: bool) {
        self.flushing.store(flushing, Ordering::Release);
    }

    /// Appends a wave: written and synced to the file (when there is one)
    /// before this returns. Blocking: call it off the async workers.
    pub(crate) fn append(&self, entry: Entry) -> Result<(), AppendError> {
        let cost = entry.cost();
        let Some(mut file) = self.lock_file() else {
            let mut state = self.lock();
            if state.bytes + cost > self.max_bytes {
                return Err(AppendError::Full(state.bytes));
            }
            state.push(entry, cost, &self.pending);
            return Ok(());
        };
        // Appends are serialized by the file lock: only takes, which free
        // room, come between this check and the push.
        let held = self.lock().bytes;
        if held + cost > self.max_bytes {
            return Err(AppendError::Full(held));
        }
        let mut record = Vec::with_capacity(entry.body.len() + entry.subject.len() + 64);
        encode_record(&Record::Wave(entry.clone()), &mut record);
        file.append(&record, true)
            .map_err(|error| AppendError::Io {
                path: file.path.clone(),
                error,
            })?;
        file.waves += 1;
        let mut state = self.lock();
        state.push(entry, cost, &self.pending);
        file.compact_if_sparse(&state);
        Ok(())
    }

    /// Every pending wave, oldest first (the bodies are shared, not copied).
    pub(crate) fn pending(&self) -> Vec<Entry> {
        self.lock().queue.iter().cloned().collect()
    }

    /// The earliest pending wave with this id was taken: forgets it now, in
    /// memory; the outbox's thread records it in the file with a taken
    /// mark, written but not synced (a process killed later still finds it;
    /// a mark lost with the machine means the wave comes again), or cuts
    /// the file back to its header when nothing is pending. Never touches
    /// the file itself: a vibrator calls it from `poll`. `false` if no such
    /// wave is pending.
    pub(crate) fn take(&self, id: u128) -> bool {
        let mut state = self.lock();
        let Some(at) = state.queue.iter().position(|e| e.id == id) else {
            return false;
        };
        let entry = state.queue.remove(at).expect("found above");
        state.bytes -= entry.cost();
        self.pending.store(state.queue.len(), Ordering::Release);
        drop(state);
        if let Some(sender) = self.marks.as_ref().and_then(|m| m.ids.as_ref()) {
            // The thread ends only with the outbox.
            let _ = sender.send(Mark::Taken(id));
        }
        true
    }

    /// Waits until every taken mark given so far is written to the file
    /// (not synced: a killed process keeps them). Blocking: call it off the
    /// async workers.
    pub(crate) fn settle(&self) {
        let Some(sender) = self.marks.as_ref().and_then(|m| m.ids.as_ref()) else {
            return;
        };
        let (done, written) = mpsc::channel();
        if sender.send(Mark::Barrier(done)).is_ok() {
            let _ = written.recv();
        }
    }

    /// The oldest pending wave.
    #[cfg(test)]
    pub(crate) fn front(&self) -> Option<Entry> {
        self.lock().queue.front().cloned()
    }

    /// The `n` oldest pending waves (fewer if fewer wait), oldest first.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn oldest(&self, n: usize) -> Vec<Entry> {
        self.lock().queue.iter().take(n).cloned().collect()
    }

    /// The oldest pending wave is stored: forgets it. The file records it
    /// without a sync (losing that mark only means a resend, which the
    /// stream drops as a duplicate), and is cut back to its header once
    /// nothing is pending. Blocking.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn pop_stored(&self) -> io::Result<()> {
        let mut file = self.lock_file();
        let mut state = self.lock();
        let Some(entry) = state.queue.pop_front() else {
            return Ok(());
        };
        state.bytes -= entry.cost();
        self.pending.store(state.queue.len(), Ordering::Release);
        let empty = state.queue.is_empty();
        drop(state);
        let Some(file) = &mut file else {
            return Ok(());
        };
        file.acked += 1;
        if empty {
            file.cut_back(true)
        } else {
            let mut record = Vec::with_capacity(RECORD_HEADER_LEN + 9);
            encode_record(&Record::Acked(file.acked), &mut record);
            file.append(&record, false)
        }
    }
}

impl Drop for DurableOutbox {
    fn drop(&mut self) {
        // The marks still on their way are written before the directory is
        // free for the next outbox.
        if let Some(marks) = &mut self.marks {
            marks.ids = None;
            if let Some(thread) = marks.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each change leaves its value whole before anything can fail.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    fn push(&mut self, entry: Entry, cost: u64, pending: &AtomicUsize) {
        self.queue.push_back(entry);
        self.bytes += cost;
        pending.store(self.queue.len(), Ordering::Release);
    }
}

/// Writes taken marks for `taken`, or cuts the file back when nothing is
/// pending. A failure is logged: the waves stay in the file, and the next
/// process delivers them again.
fn write_marks(file: &Mutex<OutboxFile>, state: &Mutex<State>, taken: &[u128]) {
    let mut file = lock(file);
    // Appends hold the file lock too: nothing pending can arrive between
    // this look and the write.
    let empty = lock(state).queue.is_empty();
    let written = if empty {
        file.cut_back(false)
    } else {
        let mut records = Vec::with_capacity(taken.len() * (RECORD_HEADER_LEN + 17));
        for id in taken {
            encode_record(&Record::Taken(*id), &mut records);
        }
        file.append(&records, false)
    };
    if let Err(error) = written {
        tracing::warn!(%error, "could not mark durable waves as taken");
    }
}

impl MarkWriter {
    fn start(file: Arc<Mutex<OutboxFile>>, state: Arc<Mutex<State>>) -> Self {
        let (ids, marks) = mpsc::channel::<Mark>();
        let thread = std::thread::Builder::new()
            .name("aether-outbox-marks".into())
            .spawn(move || {
                while let Ok(first) = marks.recv() {
                    let mut taken = Vec::new();
                    let mut barriers = Vec::new();
                    for mark in std::iter::once(first).chain(marks.try_iter()) {
                        match mark {
                            Mark::Taken(id) => taken.push(id),
                            Mark::Barrier(done) => barriers.push(done),
                        }
                    }
                    if !taken.is_empty() {
                        write_marks(&file, &state, &taken);
                    }
                    for done in barriers {
                        let _ = done.send(());
                    }
                }
            });
        match thread {
            Ok(thread) => Self {
                ids: Some(ids),
                thread: Some(thread),
            },
            Err(error) => {
                // Without the thread, marks are not written: taken waves
                // come again after a restart, none is lost.
                tracing::warn!(%error, "could not start the durable outbox's mark writer");
                Self {
                    ids: None,
                    thread: None,
                }
            }
        }
    }
}

impl OutboxFile {
    /// Cuts the file back to its header (nothing is pending), synced if
    /// `sync`.
    fn cut_back(&mut self, sync: bool) -> io::Result<()> {
        self.file.set_len(FILE_HEADER_LEN as u64)?;
        if sync {
            self.file.sync_data()?;
        }
        (self.len, self.waves, self.acked) = (FILE_HEADER_LEN as u64, 0, 0);
        Ok(())
    }

    /// Rewrites a file grown mostly of waves no longer pending (taken out
    /// of order, so never cut back) to hold only the pending ones in
    /// `state`. Failing to is logged: the file stays valid, only longer.
    fn compact_if_sparse(&mut self, state: &State) {
        let live = state.bytes;
        if self.len < COMPACT_MIN_BYTES || self.len / 4 < live {
            return;
        }
        let mut clean = Vec::with_capacity(usize::try_from(live).unwrap_or(0) * 2);
        encode_header(&mut clean);
        for entry in &state.queue {
            encode_record(&Record::Wave(entry.clone()), &mut clean);
        }
        let reopened = rewrite(&self.path, &clean)
            .and_then(|()| OpenOptions::new().read(true).write(true).open(&self.path));
        match reopened {
            Ok(handle) => {
                self.file = handle;
                self.len = clean.len() as u64;
                self.waves = state.queue.len() as u64;
                self.acked = 0;
            }
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "could not compact the durable outbox");
            }
        }
    }
}

impl OutboxFile {
    /// Writes `record` at the end, synced if `sync`; on failure the file is
    /// cut back so no partial record stays.
    fn append(&mut self, record: &[u8], sync: bool) -> io::Result<()> {
        let written = self
            .file
            .seek(SeekFrom::Start(self.len))
            .and_then(|_| self.file.write_all(record))
            .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        match written {
            Ok(()) => {
                self.len += record.len() as u64;
                Ok(())
            }
            Err(error) => {
                let _ = self.file.set_len(self.len);
                Err(error)
            }
        }
    }
}

/// Replaces the file at `path` with `bytes`, atomically (a temp file synced,
/// then renamed over it).
fn rewrite(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Syncs a directory, so that a file created or renamed in it stays.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn entry(n: u8) -> Entry {
        Entry {
            subject: format!("aether.orders.n{n}"),
            id: u128::from(n) << 64 | 7,
            body: Bytes::from(vec![n; usize::from(n)]),
        }
    }

    fn file_of(records: &[Record]) -> Vec<u8> {
        let mut bytes = Vec::new();
        encode_header(&mut bytes);
        for record in records {
            encode_record(record, &mut bytes);
        }
        bytes
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        prop_oneof![
            (
                "[a-z._]{0,40}",
                any::<u128>(),
                prop::collection::vec(any::<u8>(), 0..200)
            )
                .prop_map(|(subject, id, body)| Record::Wave(Entry {
                    subject,
                    id,
                    body: body.into()
                })),
            any::<u64>().prop_map(Record::Acked),
            any::<u128>().prop_map(Record::Taken),
        ]
    }

    proptest! {
        #[test]
        fn records_round_trip(records in prop::collection::vec(arb_record(), 0..20)) {
            let bytes = file_of(&records);
            let scan = scan(&bytes).unwrap();
            prop_assert_eq!(scan.valid_len, bytes.len());
            prop_assert_eq!(scan.records, records);
        }

        #[test]
        fn any_truncation_leaves_a_valid_prefix(
            records in prop::collection::vec(arb_record(), 1..12),
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = file_of(&records);
            let cut = cut.index(bytes.len() + 1);
            let scan = scan(&bytes[..cut]).unwrap();
            prop_assert!(scan.valid_len <= cut.max(FILE_HEADER_LEN));
            prop_assert_eq!(&scan.records[..], &records[..scan.records.len()]);
            // Every whole record before the cut is kept.
            let whole = (0..=records.len())
                .rev()
                .find(|&n| file_of(&records[..n]).len() <= cut)
                .unwrap_or(0);
            prop_assert_eq!(scan.records.len(), whole);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = scan(&bytes);
            let mut file = file_of(&[]);
            file.extend_from_slice(&bytes);
            let scan = scan(&file).unwrap();
            prop_assert!(scan.valid_len <= file.len());
        }

        #[test]
        fn a_flipped_byte_never_yields_a_changed_record(
            records in prop::collection::vec(arb_record(), 1..8),
            at in any::<prop::sample::Index>(),
            flip in 1u8..,
        ) {
            let mut bytes = file_of(&records);
            let at = FILE_HEADER_LEN + at.index(bytes.len() - FILE_HEADER_LEN);
            bytes[at] ^= flip;
            let scan = scan(&bytes).unwrap();
            prop_assert!(scan.records.len() < records.len());
            prop_assert_eq!(&scan.records[..], &records[..scan.records.len()]);
        }
    }

    #[test]
    fn a_foreign_file_is_refused_and_a_torn_header_is_empty() {
        assert!(scan(b"hello world").is_err());
        assert!(scan(b"AEOX\x02\0\0\0").is_err());
        assert_eq!(scan(b"AEO").unwrap(), Scan::default());
        assert_eq!(scan(b"").unwrap(), Scan::default());
    }

    #[test]
    fn pending_waves_survive_a_reopen_and_stored_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        {
            let outbox = DurableOutbox::open(dir.path(), 1 << 20).unwrap();
            for n in 1..=4 {
                outbox.append(entry(n)).unwrap();
            }
            outbox.pop_stored().unwrap();
            assert_eq!(outbox.front(), Some(entry(2)));
        }
        let outbox = DurableOutbox::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(outbox.len(), 3);
        assert_eq!(outbox.front(), Some(entry(2)));
        for _ in 0..3 {
            outbox.pop_stored().unwrap();
        }
        assert!(outbox.is_idle());
        let len = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
        assert_eq!(len, FILE_HEADER_LEN as u64, "a drained outbox is cut back");
    }

    #[test]
    fn waves_taken_out_of_order_stay_taken_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let outbox = DurableOutbox::open(dir.path(), 1 << 20).unwrap();
            for n in 1..=4 {
                outbox.append(entry(n)).unwrap();
            }
            assert!(outbox.take(entry(3).id));
            assert!(outbox.take(entry(1).id));
            assert!(!outbox.take(entry(1).id), "taken once");
        }
        let outbox = DurableOutbox::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(outbox.pending(), vec![entry(2), entry(4)]);
        assert!(outbox.take(entry(4).id));
        assert!(outbox.take(entry(2).id));
        drop(outbox);
        let len = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
        assert_eq!(len, FILE_HEADER_LEN as u64, "a drained outbox is cut back");
    }

    #[test]
    fn taking_a_wave_never_waits_on_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = std::sync::Arc::new(DurableOutbox::open(dir.path(), 1 << 20).unwrap());
        for n in 1..=3 {
            outbox.append(entry(n)).unwrap();
        }
        // A disk that does not answer: whoever writes the file waits.
        let stalled = lock(outbox.file.as_ref().unwrap());
        let taker = {
            let outbox = outbox.clone();
            std::thread::spawn(move || outbox.take(entry(2).id))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !taker.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "take waited on the file"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(taker.join().unwrap());
        assert_eq!(outbox.len(), 2);
        drop(stalled);
        drop(std::sync::Arc::into_inner(outbox).unwrap());
        let outbox = DurableOutbox::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            outbox.pending(),
            vec![entry(1), entry(3)],
            "the mark was written"
        );
    }

    #[test]
    fn settle_returns_once_the_marks_given_before_are_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = DurableOutbox::open(dir.path(), 1 << 20).unwrap();
        for n in 1..=3 {
            outbox.append(entry(n)).unwrap();
        }
        assert!(outbox.take(entry(2).id));
        outbox.settle();
        // Read while the outbox is open, as the next process would after
        // a kill now.
        let bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        let records = scan(&bytes).unwrap().records;
        assert_eq!(records.last(), Some(&Record::Taken(entry(2).id)));
        DurableOutbox::in_memory(100).settle();
    }

    #[test]
    fn a_taken_mark_removes_the_earliest_pending_copy_of_an_id() {
        let (a, b) = (entry(1), entry(2));
        let records = vec![
            Record::Wave(a.clone()),
            Record::Wave(b.clone()),
            Record::Wave(a.clone()),
            Record::Taken(a.id),
            Record::Acked(1),
        ];
        assert_eq!(pending_of(records), VecDeque::from([b, a]));
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let outbox = DurableOutbox::open(dir.path(), 1 << 20).unwrap();
            outbox.append(entry(1)).unwrap();
            outbox.append(entry(2)).unwrap();
        }
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 3);
        bytes.extend_from_slice(b"garbage");
        std::fs::write(&path, &bytes).unwrap();
        let outbox = DurableOutbox::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox.front(), Some(entry(1)));
        assert_eq!(
            std::fs::read(&path).unwrap(),
            file_of(&[Record::Wave(entry(1))])
        );
    }

    #[test]
    fn one_process_per_directory_and_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = DurableOutbox::open(dir.path(), 200).unwrap();
        let err = DurableOutbox::open(dir.path(), 200).err().unwrap();
        assert!(err.to_string().contains("in use"), "{err}");
        outbox.append(entry(100)).unwrap();
        assert!(matches!(
            outbox.append(entry(100)),
            Err(AppendError::Full(_))
        ));
        let memory = DurableOutbox::in_memory(200);
        memory.append(entry(100)).unwrap();
        assert_eq!(memory.len(), 1);
    }
}
