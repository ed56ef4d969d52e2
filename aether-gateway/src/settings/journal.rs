//! The `[gateway.journal]` section: where and how the gateway journals
//! the waves it observes.

use std::{path::PathBuf, time::Duration};

use aether_core::Channel;
use aether_journal::{FsyncPolicy, Options, Retention};
use aether_ops::settings::{SettingsError, Validate};
use serde::{Deserialize, Serialize};

/// When the journal forces its writes to the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// After every wave (slow: one disk flush each).
    Always,
    /// Every `fsync_interval_ms`, or every `fsync_records` waves.
    #[default]
    Interval,
    /// Never (the operating system decides); snapshots still fsync.
    Never,
}

/// The `[gateway.journal]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalConfig {
    /// Whether to journal. Default false.
    pub enabled: bool,
    /// The journal's directory (created if missing). Default `journal`.
    pub dir: PathBuf,
    /// Channel patterns of the waves to journal. Default `["*"]`, all.
    pub channels: Vec<String>,
    /// `always`, `interval` (default) or `never`.
    pub fsync: FsyncMode,
    /// With `interval`: the longest time between fsyncs, ms. Default 1000.
    pub fsync_interval_ms: u64,
    /// With `interval`: the most waves between fsyncs, 0 for no bound.
    /// Default 0.
    pub fsync_records: u64,
    /// Size of a segment file, bytes. 4096 to 1 GiB, default 64 MiB.
    pub segment_bytes: u64,
    /// Keep at most this many bytes (whole old segments deleted); 0 keeps
    /// everything. Default 1 GiB.
    pub retention_bytes: u64,
    /// Delete segments whose newest wave is older than this, in seconds;
    /// 0 keeps everything. Default 604800 (7 days).
    pub retention_s: u64,
    /// How often the counters are snapshotted, ms. 100 to 3,600,000,
    /// default 10,000.
    pub snapshot_interval_ms: u64,
    /// The writer's queue, in waves; when full, waves are not journaled,
    /// and counted. 1 to 10,000,000, default 100,000.
    pub queue_capacity: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: PathBuf::from("journal"),
            channels: vec!["*".into()],
            fsync: FsyncMode::Interval,
            fsync_interval_ms: 1000,
            fsync_records: 0,
            segment_bytes: 64 * 1024 * 1024,
            retention_bytes: 1 << 30,
            retention_s: 7 * 24 * 3600,
            snapshot_interval_ms: 10_000,
            queue_capacity: 100_000,
        }
    }
}

impl JournalConfig {
    /// The journal's options.
    pub fn options(&self) -> Options {
        Options {
            fsync: match self.fsync {
                FsyncMode::Always => FsyncPolicy::Always,
                FsyncMode::Never => FsyncPolicy::Never,
                FsyncMode::Interval => FsyncPolicy::Every {
                    interval: Duration::from_millis(self.fsync_interval_ms),
                    records: self.fsync_records,
                },
            },
            segment_bytes: self.segment_bytes,
            retention: Retention {
                max_bytes: (self.retention_bytes > 0).then_some(self.retention_bytes),
                max_age: (self.retention_s > 0).then(|| Duration::from_secs(self.retention_s)),
            },
        }
    }

    /// The channel patterns, parsed.
    pub fn patterns(&self) -> Vec<Channel> {
        self.channels.iter().map(Channel::new).collect()
    }
}

impl Validate for JournalConfig {
    fn validate(&self) -> Result<(), SettingsError> {
        for pattern in &self.channels {
            if let Err(err) = Channel::parse(pattern) {
                return Err(SettingsError::invalid("channels", pattern, err.to_string()));
            }
        }
        let check = |key: &str, ok: bool, value: String, rule: &str| {
            if ok {
                Ok(())
            } else {
                Err(SettingsError::invalid(key, value, rule))
            }
        };
        check(
            "segment_bytes",
            (4096..=1 << 30).contains(&self.segment_bytes),
            self.segment_bytes.to_string(),
            "must be 4096 to 1073741824",
        )?;
        check(
            "fsync_interval_ms",
            self.fsync != FsyncMode::Interval
                || self.fsync_interval_ms > 0
                || self.fsync_records > 0,
            self.fsync_interval_ms.to_string(),
            "must be above 0 unless fsync_records is (or use fsync = \"always\")",
        )?;
        check(
            "snapshot_interval_ms",
            (100..=3_600_000).contains(&self.snapshot_interval_ms),
            self.snapshot_interval_ms.to_string(),
            "must be 100 to 3600000",
        )?;
        check(
            "queue_capacity",
            (1..=10_000_000).contains(&self.queue_capacity),
            self.queue_capacity.to_string(),
            "must be 1 to 10000000",
        )
    }
}
