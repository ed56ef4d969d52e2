//! How a journal writes: fsync policy, segment size, retention.

use std::time::Duration;

use crate::JournalError;

/// When appended records are forced to the disk (`fsync`). Records are
/// always handed to the operating system by [`Journal::flush`](crate::Journal::flush)
/// (crate::Journal::flush), so a process that dies keeps them; the policy
/// decides what a machine that dies keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every append: nothing acknowledged is lost, at the cost of one
    /// disk flush per record.
    Always,
    /// When `interval` has passed since the last fsync, or `records`
    /// records were appended since (0: no count), at the next
    /// [`Journal::flush`](crate::Journal::flush)(crate::Journal::flush): at most that much is lost.
    Every {
        /// Longest time between fsyncs while records are appended.
        interval: Duration,
        /// Most records between fsyncs (0: no bound by count).
        records: u64,
    },
    /// Never: the operating system writes when it likes. Segments are still
    /// synced when a snapshot is written.
    Never,
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        FsyncPolicy::Every {
            interval: Duration::from_millis(1000),
            records: 0,
        }
    }
}

/// Which old segments are deleted, whole, by
/// [`Journal::enforce_retention`](crate::Journal::enforce_retention). The
/// segment being written is never deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many bytes of segments (oldest deleted first).
    pub max_bytes: Option<u64>,
    /// Delete segments whose newest record is older than this.
    pub max_age: Option<Duration>,
}

/// A journal's options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// When to fsync. Default: every second.
    pub fsync: FsyncPolicy,
    /// A segment is closed and a new one started when the next record
    /// would take it past this many bytes. 4 KiB to 1 GiB, default 64 MiB.
    pub segment_bytes: u64,
    /// What old segments to delete.
    pub retention: Retention,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::default(),
            segment_bytes: 64 * 1024 * 1024,
            retention: Retention::default(),
        }
    }
}

impl Options {
    /// Refuses options out of range, naming the option.
    pub fn validate(&self) -> Result<(), JournalError> {
        if !(4096..=1 << 30).contains(&self.segment_bytes) {
            return Err(JournalError::InvalidOption {
                name: "segment_bytes",
                reason: format!("{} is not 4096 to 1073741824", self.segment_bytes),
            });
        }
        if let FsyncPolicy::Every { interval, records } = self.fsync
            && interval.is_zero()
            && records == 0
        {
            return Err(JournalError::InvalidOption {
                name: "fsync",
                reason: "an interval of 0 and no record count: use Always".into(),
            });
        }
        Ok(())
    }
}
