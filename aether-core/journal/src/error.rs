//! What can go wrong with a journal.

use std::{io, path::PathBuf};

/// Why a journal operation failed. Damaged data found on open is not an
/// error: it is repaired and reported in [`Recovery`](crate::Recovery).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The file system refused an operation; `path` says on what.
    #[error("journal I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error of the operating system.
        source: io::Error,
    },
    /// Another journal (in this process or another) has the directory open
    /// for writing. Stop it, or read with [`Reader`](crate::Reader).
    #[error("the journal in {0} is open for writing elsewhere (its LOCK file is held)")]
    Locked(PathBuf),
    /// A record is larger than [`MAX_RECORD_LEN`](crate::MAX_RECORD_LEN)
    /// bytes; nothing was written.
    #[error("a record of {len} bytes is larger than the limit of {max} bytes")]
    RecordTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The snapshot file exists but is not a valid snapshot (bad magic,
    /// version, length or checksum). Delete it to start from the log alone.
    #[error("the snapshot {path} is damaged: {reason}")]
    SnapshotCorrupt {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An option is out of range.
    #[error("invalid journal option {name}: {reason}")]
    InvalidOption {
        /// The option.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

impl JournalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
