//! Settings of durable channels: JetStream on the NATS medium, and the
//! emitter's outbox on disk.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::{ConfigError, check};
use crate::Channel;

/// Where the stream keeps its waves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurableStorage {
    /// On the server's disk (survives a server restart). The default.
    #[default]
    File,
    /// In the server's memory (lost when the server stops).
    Memory,
}

/// Durable channels (`[aether.durability]`): a wave on a channel that one of
/// `channels` matches is delivered at least once until an application takes
/// it (a vibrator hands it out), deduplicated by wave id. Over NATS such
/// waves are stored in a JetStream stream and resonances within those
/// patterns read them through durable consumers that resume where they
/// stopped; on the embedded medium they are kept in the durable outbox
/// (`outbox_dir`) until taken, and a wave nobody resonated on waits there.
/// Every other channel keeps its path. With `channels` empty (the default)
/// nothing is durable and nothing changes. `stream`, `storage`,
/// `duplicate_window_ms`, `max_age_ms`, `max_bytes`, `ack_wait_ms`,
/// `max_deliver` and `replicas` are JetStream's, read by the NATS medium
/// only.
///
/// ```
/// use aether_core::{AetherConfig, config::DurabilityConfig};
///
/// let config = AetherConfig {
///     durability: DurabilityConfig {
///         channels: vec!["orders.*".into()],
///         outbox_dir: Some("/var/lib/orders/outbox".into()),
///         ..Default::default()
///     },
///     ..Default::default()
/// };
/// config.validate()?;
///
/// let bad = DurabilityConfig { channels: vec!["_INBOX.*".into()], ..Default::default() };
/// let err = AetherConfig { durability: bad, ..Default::default() }.validate().unwrap_err();
/// assert_eq!(err.key(), "durability.channels");
/// # Ok::<(), aether_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DurabilityConfig {
    /// Channel patterns whose waves are durable (the channel grammar: `*`
    /// inner or trailing, `>`). Empty (the default): none.
    pub channels: Vec<String>,
    /// The JetStream stream that stores them: created at connect, or
    /// updated to these settings (with `manage_stream`). One stream per
    /// subject prefix. Default `AETHER`.
    pub stream: String,
    /// Whether this program creates the stream and updates it to these
    /// settings (the default), or only uses it: with `false` it looks the
    /// stream up at connect, and refuses to start, saying why, if it is
    /// missing or does not hold these channels. On a bus shared by several
    /// NATS users, one user manages the stream (its permissions from
    /// `NatsPermissions::managing_stream`) and every program runs with
    /// `false` and the permissions of `NatsPermissions::with_jetstream`, which
    /// let it use its own consumers and nothing else.
    pub manage_stream: bool,
    /// The JetStream domain whose stream stores the durable channels (its
    /// API at `$JS.<domain>.API`): on a leaf node, the hub's domain (`hub`
    /// for a hub started with `jetstream { domain: hub }`), so that waves
    /// emitted at the edge are stored in the hub, the durable outbox
    /// keeping them while the leaf's link is cut. A program whose server
    /// has a JetStream of another domain with a stream that also captures
    /// these channels refuses to start (both would store every wave).
    /// None (the default): the JetStream of the server the program
    /// connects to.
    pub domain: Option<String>,
    /// `file` (the default) or `memory`.
    pub storage: DurableStorage,
    /// How long the stream remembers a wave id to drop a second copy, in
    /// milliseconds: a resend within it is stored once. Default 120,000.
    #[serde(rename = "duplicate_window_ms", with = "super::millis")]
    pub duplicate_window: Duration,
    /// Oldest wave kept, in milliseconds; 0 (the default) = no limit.
    #[serde(rename = "max_age_ms", with = "super::millis")]
    pub max_age: Duration,
    /// Most bytes kept, the oldest waves going first; 0 (the default) = no
    /// limit.
    pub max_bytes: u64,
    /// How long a consumer's delivery waits for its acknowledgement before
    /// the server sends it again, in milliseconds. Default 30,000.
    #[serde(rename = "ack_wait_ms", with = "super::millis")]
    pub ack_wait: Duration,
    /// Most deliveries of one wave to a consumer; 0 (the default) = no
    /// limit.
    pub max_deliver: u32,
    /// Copies of the stream JetStream keeps on different servers of a
    /// cluster, 1 to 5: with 3, the loss of any one server loses nothing
    /// stored. 0 (the default): as many as the cluster has servers, up to 3
    /// (1 on a single server; with a `domain`, the stream's own, else 1:
    /// name it for a hub's cluster).
    pub replicas: usize,
    /// Directory of the on-disk durable outbox, written and synced before
    /// `emit` returns. Over NATS it holds durable waves that could not be
    /// stored (NATS unreachable, or no acknowledgement), sent when the
    /// connection is back; on the embedded medium, every durable wave until
    /// an application took it. The next process that starts with this
    /// directory sends or delivers what is left. None (the default): the
    /// outbox is in memory, lost with the process.
    pub outbox_dir: Option<PathBuf>,
    /// Most bytes of waves the durable outbox holds (in memory or on disk;
    /// on the embedded medium, the waves not taken yet); past it, `emit` on
    /// a durable channel fails with `OutboxFull`.
    /// Default 268,435,456 (256 MiB).
    pub outbox_max_bytes: u64,
}

impl Default for DurabilityConfig {
    fn default() -> Self {
        Self {
            channels: Vec::new(),
            stream: "AETHER".to_string(),
            manage_stream: true,
            domain: None,
            storage: DurableStorage::File,
            duplicate_window: Duration::from_millis(120_000),
            max_age: Duration::from_millis(0),
            max_bytes: 0,
            ack_wait: Duration::from_millis(30_000),
            max_deliver: 0,
            replicas: 0,
            outbox_dir: None,
            outbox_max_bytes: 256 * 1024 * 1024,
        }
    }
}

impl DurabilityConfig {
    /// Whether any channel is durable.
    pub fn is_enabled(&self) -> bool {
        !self.channels.is_empty()
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(domain) = &self.domain {
            check(
                !domain.is_empty()
                    && domain.len() <= 64
                    && domain
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "durability.domain",
                domain.clone(),
                "is not a JetStream domain (1 to 64 of A-Z a-z 0-9 - _)",
            )?;
        }
        for pattern in &self.channels {
            check(
                Channel::new(pattern.as_str()).is_valid(),
                "durability.channels",
                pattern.clone(),
                "is not a valid channel or pattern",
            )?;
            check(
                !Channel::new(pattern).is_system() && pattern != "*" && pattern != ">",
                "durability.channels",
                pattern.clone(),
                "would hold the bus's own channels (_INBOX, _reflect, _hop...); \
                 name the channels to keep",
            )?;
        }
        check(
            is_stream_name(&self.stream),
            "durability.stream",
            self.stream.clone(),
            "must be 1 to 64 of A-Z a-z 0-9 _ -",
        )?;
        check(
            (100..=86_400_000).contains(&super::as_ms(self.duplicate_window)),
            "durability.duplicate_window_ms",
            super::as_ms(self.duplicate_window).to_string(),
            "must be between 100 and 86400000",
        )?;
        check(
            super::as_ms(self.max_age) == 0
                || super::as_ms(self.max_age) >= super::as_ms(self.duplicate_window),
            "durability.max_age_ms",
            super::as_ms(self.max_age).to_string(),
            "must be 0 (no limit) or at least durability.duplicate_window_ms",
        )?;
        check(
            self.max_bytes <= i64::MAX as u64,
            "durability.max_bytes",
            self.max_bytes.to_string(),
            "is too large",
        )?;
        check(
            (100..=86_400_000).contains(&super::as_ms(self.ack_wait)),
            "durability.ack_wait_ms",
            super::as_ms(self.ack_wait).to_string(),
            "must be between 100 and 86400000",
        )?;
        check(
            self.replicas <= 5,
            "durability.replicas",
            self.replicas.to_string(),
            "must be 0 (as many as the cluster has servers, up to 3) or 1 to 5",
        )?;
        if let Some(dir) = &self.outbox_dir {
            check(
                !dir.as_os_str().is_empty(),
                "durability.outbox_dir",
                String::new(),
                "must be a directory path; leave it out for an outbox in memory",
            )?;
            check(
                !dir.is_file(),
                "durability.outbox_dir",
                dir.display().to_string(),
                "is a file, not a directory",
            )?;
        }
        check(
            (1024..=1 << 40).contains(&self.outbox_max_bytes),
            "durability.outbox_max_bytes",
            self.outbox_max_bytes.to_string(),
            "must be between 1024 and 1099511627776",
        )
    }

    /// The durable patterns, as channels.
    pub(crate) fn patterns(&self) -> Vec<Channel> {
        self.channels
            .iter()
            .map(|p| Channel::new(p.as_str()))
            .collect()
    }
}

/// Whether `name` is a stream name this crate accepts (JetStream refuses
/// `.`, `*`, `>`, spaces and path separators).
fn is_stream_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(config: DurabilityConfig) -> &'static str {
        config.validate().unwrap_err().key()
    }

    #[test]
    fn defaults_are_valid_and_off() {
        let config = DurabilityConfig::default();
        config.validate().unwrap();
        assert!(!config.is_enabled());
    }

    #[test]
    fn bad_values_name_their_key() {
        let base = DurabilityConfig {
            channels: vec!["orders.*".into()],
            ..Default::default()
        };
        base.validate().unwrap();
        for pattern in ["orders..x", "*", ">", "_hop.*"] {
            let config = DurabilityConfig {
                channels: vec![pattern.into()],
                ..base.clone()
            };
            assert_eq!(refused(config), "durability.channels");
        }
        for stream in ["", "A.B", "a b", "a*"] {
            let config = DurabilityConfig {
                stream: stream.into(),
                ..base.clone()
            };
            assert_eq!(refused(config), "durability.stream");
        }
        let config = DurabilityConfig {
            duplicate_window: Duration::from_millis(0),
            ..base.clone()
        };
        assert_eq!(refused(config), "durability.duplicate_window_ms");
        let config = DurabilityConfig {
            max_age: Duration::from_millis(1000),
            ..base.clone()
        };
        assert_eq!(refused(config), "durability.max_age_ms");
        let config = DurabilityConfig {
            ack_wait: Duration::from_millis(5),
            ..base.clone()
        };
        assert_eq!(refused(config), "durability.ack_wait_ms");
        let config = DurabilityConfig {
            outbox_dir: Some(PathBuf::new()),
            ..base.clone()
        };
        assert_eq!(refused(config), "durability.outbox_dir");
        let config = DurabilityConfig {
            outbox_max_bytes: 10,
            ..base
        };
        assert_eq!(refused(config), "durability.outbox_max_bytes");
    }
}
