//! Settings of the NATS medium.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::{ConfigError, check};
use crate::{Channel, Secret, wire::WireVersion};

/// How an aether reaches NATS: [`Aether::connect`](crate::Aether::connect)
/// reads it from [`AetherConfig::nats`](crate::AetherConfig::nats).
///
/// ```
/// use aether_core::{AetherConfig, config::NatsConfig};
///
/// let config = AetherConfig {
///     nats: NatsConfig {
///         urls: vec!["nats://10.0.0.1:4222".into(), "nats://10.0.0.2:4222".into()],
///         subject_prefix: "shop".into(),
///         ..Default::default()
///     },
///     ..Default::default()
/// };
/// config.validate()?;
/// # Ok::<(), aether_core::ConfigError>(())
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Servers of one cluster; the client picks one and fails over to the
    /// others. Default `["nats://127.0.0.1:4222"]`.
    pub urls: Vec<String>,
    /// Every channel `c` travels on the subject `<subject_prefix>.c`, so
    /// several aethers can share one NATS account. Tokens of a channel,
    /// no wildcards. Default `aether`.
    pub subject_prefix: String,
    /// The connection's name, shown by the server's monitoring.
    pub connection_name: Option<String>,
    /// The subject prefix of the client's own inboxes, where replies to
    /// its requests (and JetStream's answers) arrive. Default
    /// `<subject_prefix>._INBOX`. Where each NATS user may read only its
    /// own inboxes (the permissions of
    /// [`AclRule::nats_permissions`](crate::config::AclRule::nats_permissions)),
    /// set it to `<subject_prefix>._INBOX.<user's vibrator name>`.
    pub inbox_prefix: Option<String>,
    /// Waves kept while disconnected, sent in order on reconnect; when it is
    /// full, `emit` fails with `OutboxFull`. Default 10,000.
    pub outbox_capacity: usize,
    /// Messages the client may hold for one subscription before the server
    /// connection drops them (counted as slow-consumer events). Waves are
    /// moved from there into the vibrator's queue as they come, so this only
    /// absorbs bursts. Default 262,144.
    pub subscription_capacity: usize,
    /// Commands (publishes, subscribes) queued for the connection before
    /// `emit` waits. Default 65,536.
    pub client_capacity: usize,
    /// Time allowed to connect to one server, in milliseconds. Default 5000.
    #[serde(rename = "connect_timeout_ms", with = "super::millis")]
    pub connect_timeout: Duration,
    /// How often the client pings the server, in milliseconds; two missed
    /// pongs mark the connection dead. Default 10,000.
    #[serde(rename = "ping_interval_ms", with = "super::millis")]
    pub ping_interval: Duration,
    /// Longest wait between reconnect attempts, in milliseconds (the delay
    /// grows up to it). Default 2000.
    #[serde(rename = "reconnect_delay_max_ms", with = "super::millis")]
    pub reconnect_delay_max: Duration,
    /// Reconnect attempts before giving up; none = forever (default).
    pub max_reconnects: Option<usize>,
    /// Keep trying when no server answers at start, instead of failing.
    /// Default false.
    pub retry_on_initial_connect: bool,
    /// Largest message body (envelope and payload) accepted off the wire,
    /// in bytes. Default 1 MiB (the server's default `max_payload`).
    pub max_wave_bytes: usize,
    /// The envelope this aether writes: 1 (the full one) or 2 (compact,
    /// the default). Both are always read.
    pub wire_version: WireVersion,
    /// Batch frames: waves queued for one subject while the connection is
    /// busy travel as one message (`[aether.nats.batch]`).
    pub batch: NatsBatch,
    /// TLS to the servers.
    pub tls: NatsTls,
    /// Credentials, at most one kind.
    pub auth: NatsAuth,
}

/// `[aether.nats.batch]`: waves emitted on the same subject while the
/// connection is busy are sent as one NATS message (a batch frame) holding
/// their envelopes, each still a wave of its own at the receiver. Nothing
/// waits for a frame to fill unless `linger_us` says so, or the stream is
/// faster than about 100,000 waves a second (then what comes is gathered
/// for up to a millisecond): what is queued when the connection takes the
/// next message goes. A queue group member gets a whole frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsBatch {
    /// Batch at all. Default true; false sends one message per wave.
    pub enabled: bool,
    /// Microseconds to wait for more waves before sending what is queued
    /// (throughput over latency). Default 0; at most 100,000.
    pub linger_us: u64,
    /// Largest frame, bytes (a wave larger than this goes alone). Default
    /// 65,536; 1,024 to `max_wave_bytes`.
    pub max_bytes: usize,
    /// Most waves in one frame. Default 256; 2 to 65,535.
    pub max_waves: usize,
}

impl Default for NatsBatch {
    fn default() -> Self {
        Self {
            enabled: true,
            linger_us: 0,
            max_bytes: 65_536,
            max_waves: 256,
        }
    }
}

/// TLS settings: server verification against `ca_file` (or the system's
/// roots), and a client certificate for mutual TLS.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsTls {
    /// Refuse to talk without TLS. Implied by any file below or a `tls://`
    /// URL.
    pub required: bool,
    /// PEM file of the certificate authorities that sign the servers.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate (mutual TLS), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client key, with `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// Credentials for the servers. Secrets print as `[redacted]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsAuth {
    /// A token.
    pub token: Option<Secret>,
    /// A user name, with `password`.
    pub user: Option<String>,
    /// The user's password.
    pub password: Option<Secret>,
    /// An NKey seed (`SU...`).
    pub nkey_seed: Option<Secret>,
    /// A `.creds` file (JWT and NKey seed) from `nsc`.
    pub credentials_file: Option<PathBuf>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            urls: vec!["nats://127.0.0.1:4222".to_string()],
            subject_prefix: "aether".to_string(),
            connection_name: None,
            inbox_prefix: None,
            outbox_capacity: 10_000,
            subscription_capacity: 262_144,
            client_capacity: 65_536,
            connect_timeout: Duration::from_millis(5000),
            ping_interval: Duration::from_millis(10_000),
            reconnect_delay_max: Duration::from_millis(2000),
            max_reconnects: None,
            retry_on_initial_connect: false,
            max_wave_bytes: 1_048_576,
            wire_version: WireVersion::V2,
            batch: NatsBatch::default(),
            tls: NatsTls::default(),
            auth: NatsAuth::default(),
        }
    }
}

impl NatsConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            !self.urls.is_empty(),
            "nats.urls",
            "[]".into(),
            "must name at least one server",
        )?;
        for url in &self.urls {
            check(
                !url.trim().is_empty() && is_server_address(url),
                "nats.urls",
                redact_url(url),
                "is not a server address (nats://host:port or tls://host:port)",
            )?;
        }
        if let Some(inbox) = &self.inbox_prefix {
            let own = format!("{}._INBOX", self.subject_prefix);
            check(
                Channel::new(inbox.as_str()).validate_concrete().is_ok()
                    && (*inbox == own || inbox.starts_with(&format!("{own}."))),
                "nats.inbox_prefix",
                inbox.clone(),
                "must be <subject_prefix>._INBOX, optionally followed by more tokens \
                 (for example aether._INBOX.alpha)",
            )?;
        }
        let prefix = Channel::new(self.subject_prefix.as_str());
        check(
            prefix.validate_concrete().is_ok() && !self.subject_prefix.starts_with("_INBOX"),
            "nats.subject_prefix",
            self.subject_prefix.clone(),
            "must be channel tokens ([A-Za-z0-9_-], dot-separated) without wildcards",
        )?;
        for (key, value) in [
            ("nats.outbox_capacity", self.outbox_capacity),
            ("nats.subscription_capacity", self.subscription_capacity),
            ("nats.client_capacity", self.client_capacity),
        ] {
            check(
                (1..=100_000_000).contains(&value),
                key,
                value.to_string(),
                "must be between 1 and 100000000",
            )?;
        }
        for (key, value) in [
            (
                "nats.connect_timeout_ms",
                super::as_ms(self.connect_timeout),
            ),
            ("nats.ping_interval_ms", super::as_ms(self.ping_interval)),
            (
                "nats.reconnect_delay_max_ms",
                super::as_ms(self.reconnect_delay_max),
            ),
        ] {
            check(value > 0, key, value.to_string(), "must be at least 1")?;
        }
        check(
            self.max_wave_bytes >= crate::wire::HEADER_LEN,
            "nats.max_wave_bytes",
            self.max_wave_bytes.to_string(),
            "must hold at least the envelope header (63 bytes)",
        )?;
        check(
            self.batch.linger_us <= 100_000,
            "nats.batch.linger_us",
            self.batch.linger_us.to_string(),
            "must be at most 100000",
        )?;
        check(
            (1024..=self.max_wave_bytes.max(1024)).contains(&self.batch.max_bytes),
            "nats.batch.max_bytes",
            self.batch.max_bytes.to_string(),
            "must be 1024 to nats.max_wave_bytes",
        )?;
        check(
            (2..=65_535).contains(&self.batch.max_waves),
            "nats.batch.max_waves",
            self.batch.max_waves.to_string(),
            "must be 2 to 65535",
        )?;
        check(
            self.tls.cert_file.is_some() == self.tls.key_file.is_some(),
            "nats.tls.cert_file",
            format!("{:?}", self.tls.cert_file),
            "and nats.tls.key_file must be given together",
        )?;
        let auth = &self.auth;
        let kinds = [
            auth.token.is_some(),
            auth.user.is_some() || auth.password.is_some(),
            auth.nkey_seed.is_some(),
            auth.credentials_file.is_some(),
        ];
        check(
            kinds.iter().filter(|k| **k).count() <= 1,
            "nats.auth",
            "several kinds".into(),
            "must use one of token, user/password, nkey_seed, credentials_file",
        )?;
        check(
            auth.user.is_some() == auth.password.is_some(),
            "nats.auth.user",
            format!("{:?}", auth.user),
            "and nats.auth.password must be given together",
        )
    }

    /// Whether TLS is asked for, by a setting or a `tls://` URL.
    pub fn tls_required(&self) -> bool {
        self.tls.required
            || self.tls.ca_file.is_some()
            || self.tls.cert_file.is_some()
            || self.urls.iter().any(|u| u.starts_with("tls://"))
    }

    /// The prefix of the client's own inboxes.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn inbox_prefix(&self) -> String {
        self.inbox_prefix
            .clone()
            .unwrap_or_else(|| format!("{}._INBOX", self.subject_prefix))
    }

    /// The servers' addresses as they may be shown: credentials in a URL
    /// are redacted.
    pub fn redacted_urls(&self) -> Vec<String> {
        self.urls.iter().map(|u| redact_url(u)).collect()
    }
}

impl std::fmt::Debug for NatsConfig {
    /// Like a derived `Debug`, with credentials in URLs redacted (secrets
    /// in `auth` print as `[redacted]` already).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("urls", &self.redacted_urls())
            .field("subject_prefix", &self.subject_prefix)
            .field("connection_name", &self.connection_name)
            .field("inbox_prefix", &self.inbox_prefix)
            .field("outbox_capacity", &self.outbox_capacity)
            .field("subscription_capacity", &self.subscription_capacity)
            .field("client_capacity", &self.client_capacity)
            .field("connect_timeout_ms", &super::as_ms(self.connect_timeout))
            .field("ping_interval_ms", &super::as_ms(self.ping_interval))
            .field(
                "reconnect_delay_max_ms",
                &super::as_ms(self.reconnect_delay_max),
            )
            .field("max_reconnects", &self.max_reconnects)
            .field("retry_on_initial_connect", &self.retry_on_initial_connect)
            .field("max_wave_bytes", &self.max_wave_bytes)
            .field("wire_version", &self.wire_version)
            .field("batch", &self.batch)
            .field("tls", &self.tls)
            .field("auth", &self.auth)
            .finish()
    }
}

/// `url` with the credentials it holds (`user:password@`, `token@`)
/// replaced by `[redacted]@`, and its query or fragment by `?[redacted]`;
/// each of several comma-separated servers so; unchanged if it holds none.
///
/// ```
/// use aether_core::config::redact_url;
/// assert_eq!(redact_url("nats://u:p@h:4222"), "nats://[redacted]@h:4222");
/// assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
/// assert_eq!(
///     redact_url("nats://a:s1@h:1,nats://b:s2@k:2"),
///     "nats://[redacted]@h:1,nats://[redacted]@k:2"
/// );
/// assert_eq!(redact_url("nats://h:4222?token=s3"), "nats://h:4222?[redacted]");
/// assert_eq!(redact_url("nats://a:s3cr/3t@h:1"), "nats://[redacted]@h:1");
/// assert_eq!(redact_url("nats:/a:s3@h:1"), "[redacted]@h:1");
/// ```
pub fn redact_url(url: &str) -> String {
    // Several servers in one value (`a,b`): each is redacted.
    if url.contains(',') {
        return url.split(',').map(redact_url).collect::<Vec<_>>().join(",");
    }
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    // Whatever stands before the last `@` may be a secret, whatever it
    // holds (`/`, `?` and `#` are common in generated passwords), and so
    // may a query or a fragment after the host.
    let (shown, hidden_auth) = match rest.rfind('@') {
        Some(at) => (&rest[at + 1..], "[redacted]@"),
        None => (rest, ""),
    };
    let (shown, hidden_query) = match shown.find(['?', '#']) {
        Some(at) => (&shown[..at], "?[redacted]"),
        None => (shown, ""),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{hidden_auth}{shown}{hidden_query}"),
        None => format!("{hidden_auth}{shown}{hidden_query}"),
    }
}

/// Whether `url` names a NATS server (`nats://host:port`, `tls://host:port`,
/// `host:port`, ...).
#[cfg(feature = "nats")]
fn is_server_address(url: &str) -> bool {
    url.parse::<async_nats::ServerAddr>().is_ok()
}

/// Whether `url` could name a NATS server: without the `nats` feature no
/// server is reached, and nothing more than its shape is checked.
#[cfg(not(feature = "nats"))]
fn is_server_address(url: &str) -> bool {
    !url.chars().any(char::is_whitespace)
}
