//! An append-only journal: records (any bytes) appended to segment files,
//! each record checksummed and length-prefixed; on open, a torn or damaged
//! tail is found and cut, never a panic whatever the bytes; fsync when the
//! policy says ([`FsyncPolicy`]); old segments deleted whole by size and
//! age ([`Retention`]); and snapshots, written atomically, that record the
//! position they cover, so that a restart is "load the snapshot, then
//! apply the records after it".
//!
//! ```
//! use aether_journal::{Journal, Options, Reader, read_snapshot};
//!
//! let dir = tempfile::tempdir()?;
//! let (mut journal, _) = Journal::open(dir.path(), Options::default())?;
//! let mut total = 0u64;
//! for n in 1..=3u64 {
//!     journal.append(n, &n.to_le_bytes())?;
//!     total += n;
//! }
//! journal.write_snapshot(3, &total.to_le_bytes())?; // covers records 0 to 2
//! journal.append(4, &4u64.to_le_bytes())?;
//! journal.close()?;
//!
//! // Restart: the snapshot, then the records after it.
//! let snapshot = read_snapshot(dir.path())?.expect("a snapshot");
//! let mut total = u64::from_le_bytes(snapshot.data.try_into().unwrap());
//! for record in Reader::open(dir.path())?.records(snapshot.position) {
//!     total += u64::from_le_bytes(record?.payload.try_into().unwrap());
//! }
//! assert_eq!(total, 10);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # On disk
//!
//! A journal is a directory: segment files `NNNNNNNNNNNNNNNNNNNN.log`
//! (the sequence number of their first record, 20 decimal digits, so
//! names sort in order), `snapshot.bin`, and `LOCK`, held with an
//! exclusive lock by the one writer. Every integer is little-endian.
//! Records are numbered from 0 in the order they were appended (their
//! *sequence number*); a record's number is its segment's base plus its
//! index in the segment. Bases normally follow on (a segment starts where
//! the previous one ends) and may skip ahead, never back.
//!
//! A segment is a 24-byte header, then records, back to back, to the end
//! of the file:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `AEJL` (`41 45 4a 4c`) |
//! | 4 | 1 | version, `1` |
//! | 5 | 3 | zero |
//! | 8 | 8 | base: the sequence number of the first record, u64 (equal to the file name's) |
//! | 16 | 8 | previous end: the sequence number the journal had reached when the segment was made, u64; equal to the base unless a snapshot moved the sequence on, never above it |
//!
//! A record is a 16-byte header and its payload:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | CRC-32C (Castagnoli) of bytes 4 to the end of the record (length, time and payload), u32 |
//! | 4 | 4 | payload length L, u32, at most [`MAX_RECORD_LEN`] (64 MiB) |
//! | 8 | 8 | time given at append, Unix milliseconds, u64 |
//! | 16 | L | payload |
//!
//! An empty record with time 0 is the 16 bytes `5d b5 60 2b` (the CRC-32C
//! of twelve zero bytes) and twelve zero bytes. CRC-32C is the iSCSI
//! checksum (polynomial `0x1EDC6F41`, reflected, initial and final
//! `0xFFFFFFFF`; `"123456789"` gives `0xE3069283`).
//!
//! The snapshot, `snapshot.bin`, is one file:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `AEJS` (`41 45 4a 53`) |
//! | 4 | 1 | version, `1` |
//! | 5 | 3 | zero |
//! | 8 | 4 | CRC-32C of bytes 12 to the end of the file, u32 |
//! | 12 | 4 | data length D, u32 (the file is 32 + D bytes) |
//! | 16 | 8 | position: it covers every record numbered below this, u64 |
//! | 24 | 8 | time it was written, Unix milliseconds, u64 |
//! | 32 | D | data, in the writer's own encoding |
//!
//! # Recovery
//!
//! [`Journal::open`] reads every segment in order and checks each header
//! and record. The first of these ends the valid records: a file that ends
//! inside a header or a record (*torn*, a write cut short), a record
//! length over the limit, a checksum that does not match, a header that is
//! not the one of its file name, a segment whose header says it was made
//! at another end than the one of the segment before it (a *gap*: the
//! older segment lost records at a record boundary).
//! The segment is cut just before it (deleted if nothing valid is left) and
//! every later segment is deleted, so the journal holds exactly the valid
//! records before the damage, in order, and new records follow them. A
//! snapshot is written to `snapshot.bin.tmp`, fsynced, then renamed over
//! `snapshot.bin` and the directory fsynced, so a crash leaves the old
//! snapshot or the new one; a leftover temporary file is deleted on open.
//! A [`Reader`] reads the same checks without changing anything.
//!
//! A writer whose records stand on their own (each merged by its own
//! stamp, whatever its place) opens with [`Journal::open_salvaging`]: the
//! damaged files are copied aside and the valid records after the damage
//! are returned, to be appended again; the snapshot and the records kept
//! are handed to its [`Restore`] as the opening reads them.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod error;
mod files;
mod format;
mod journal;
mod options;
mod reader;
mod salvage;
mod snapshot;

pub use error::JournalError;
pub use files::{create_private_dir, private};
pub use format::{
    DamageKind, MAX_RECORD_LEN, RECORD_HEADER_LEN, Record, SEGMENT_HEADER_LEN, SEGMENT_MAGIC,
    SEGMENT_VERSION,
};
pub use journal::{Damage, Journal, LOCK_FILE, Opened, PendingSync, Recovery, Restore, Retained};
pub use options::{FsyncPolicy, Options, Retention};
pub use reader::{Reader, Records};
pub use salvage::{Salvage, snapshot_aside};
pub use snapshot::{
    MAX_SNAPSHOT_LEN, SNAPSHOT_FILE, SNAPSHOT_HEADER_LEN, SNAPSHOT_MAGIC, SNAPSHOT_TEMP_FILE,
    SNAPSHOT_VERSION, Snapshot, read_snapshot,
};
