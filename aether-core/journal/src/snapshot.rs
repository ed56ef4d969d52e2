//! Snapshots: one file, `snapshot.bin`, replaced atomically.

use std::{
    fs::{self, File},
    io::Write,
    path::Path,
};

use crate::JournalError;

/// The snapshot's file name in the journal directory.
pub const SNAPSHOT_FILE: &str = "snapshot.bin";
/// The temporary file a snapshot is written to before it is renamed.
pub const SNAPSHOT_TEMP_FILE: &str = "snapshot.bin.tmp";
/// The first four bytes of a snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"AEJS";
/// The snapshot format version.
pub const SNAPSHOT_VERSION: u8 = 1;
/// Bytes before the snapshot's data.
pub const SNAPSHOT_HEADER_LEN: usize = 32;
/// The largest snapshot data, in bytes (1 GiB).
pub const MAX_SNAPSHOT_LEN: usize = 1 << 30;

/// A snapshot: the state of whatever the records build, as of `position`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// It covers every record with a sequence number below this one:
    /// restart from it, then apply the records from `position` on.
    pub position: u64,
    /// When it was written, Unix milliseconds (as given by the writer).
    pub time_ms: u64,
    /// The state, in the caller's own encoding.
    pub data: Vec<u8>,
}

fn crc_of(file: &[u8]) -> u32 {
    // Length, position and time (bytes 12 to 32), then the data.
    crc32c::crc32c(&file[12..])
}

/// Writes `snapshot` to `dir` atomically: a temporary file, fsync, rename
/// over the previous one, fsync of the directory. A crash leaves the old
/// snapshot or the new one, never a mix.
pub(crate) fn write(dir: &Path, snapshot: &Snapshot) -> Result<(), JournalError> {
    if snapshot.data.len() > MAX_SNAPSHOT_LEN {
        return Err(JournalError::RecordTooLarge {
            len: snapshot.data.len(),
            max: MAX_SNAPSHOT_LEN,
        });
    }
    let mut bytes = Vec::with_capacity(SNAPSHOT_HEADER_LEN + snapshot.data.len());
    bytes.extend_from_slice(&SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&[SNAPSHOT_VERSION, 0, 0, 0]);
    bytes.extend_from_slice(&[0; 4]);
    bytes.extend_from_slice(&(snapshot.data.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&snapshot.position.to_le_bytes());
    bytes.extend_from_slice(&snapshot.time_ms.to_le_bytes());
    bytes.extend_from_slice(&snapshot.data);
    let crc = crc_of(&bytes);
    bytes[8..12].copy_from_slice(&crc.to_le_bytes());

    let temp = dir.join(SNAPSHOT_TEMP_FILE);
    let path = dir.join(SNAPSHOT_FILE);
    let mut file = crate::files::private(
        fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true),
    )
    .open(&temp)
    .map_err(|e| JournalError::io(&temp, e))?;
    if let Err(error) = file.write_all(&bytes).and_then(|()| file.sync_all()) {
        // A half-written copy would hold the space a full disk needs.
        drop(file);
        let _ = fs::remove_file(&temp);
        return Err(JournalError::io(&temp, error));
    }
    drop(file);
    fs::rename(&temp, &path).map_err(|e| JournalError::io(&path, e))?;
    sync_dir(dir)
}

/// Reads the snapshot of the journal in `dir`: `None` if there is none,
/// [`JournalError::SnapshotCorrupt`] if the file is not a valid snapshot.
pub fn read_snapshot(dir: impl AsRef<Path>) -> Result<Option<Snapshot>, JournalError> {
    let path = dir.as_ref().join(SNAPSHOT_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(JournalError::io(path, e)),
    };
    decode(bytes)
        .map(Some)
        .map_err(|reason| JournalError::SnapshotCorrupt {
            path: path.clone(),
            reason: reason.into(),
        })
}

/// The file's bytes become the snapshot's data in place (the header
/// moved out of the way), not copied: a snapshot is the size of the state
/// it holds, and a copy would double what opening it takes.
fn decode(mut bytes: Vec<u8>) -> Result<Snapshot, &'static str> {
    if bytes.len() < SNAPSHOT_HEADER_LEN {
        return Err("shorter than its header");
    }
    if bytes[..4] != SNAPSHOT_MAGIC {
        return Err("not a snapshot (magic)");
    }
    if bytes[4] != SNAPSHOT_VERSION || bytes[5..8] != [0, 0, 0] {
        return Err("unknown version");
    }
    let u32_at =
        |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let len = u32_at(12) as usize;
    if len != bytes.len() - SNAPSHOT_HEADER_LEN {
        return Err("its length field does not match the file");
    }
    if crc_of(&bytes) != u32_at(8) {
        return Err("checksum mismatch");
    }
    let (position, time_ms) = (u64_at(16), u64_at(24));
    bytes.drain(..SNAPSHOT_HEADER_LEN);
    Ok(Snapshot {
        position,
        time_ms,
        data: bytes,
    })
}

/// Makes a directory's entries (created, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| JournalError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_snapshot(dir.path()).unwrap(), None);
        let snapshot = Snapshot {
            position: 42,
            time_ms: 7,
            data: b"state".to_vec(),
        };
        write(dir.path(), &snapshot).unwrap();
        assert_eq!(read_snapshot(dir.path()).unwrap(), Some(snapshot));
        assert!(!dir.path().join(SNAPSHOT_TEMP_FILE).exists());
        let path = dir.path().join(SNAPSHOT_FILE);
        let good = fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            fs::write(&path, &bad).unwrap();
            assert!(matches!(
                read_snapshot(dir.path()),
                Err(JournalError::SnapshotCorrupt { .. })
            ));
        }
        for cut in 0..good.len() {
            fs::write(&path, &good[..cut]).unwrap();
            assert!(read_snapshot(dir.path()).is_err());
        }
    }
}
