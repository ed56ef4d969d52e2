//! The gateway's settings: the `[gateway]` section ([`GatewayConfig`]) and
//! the program's settings file ([`GatewaySettings`]), read with
//! `aether_ops::settings` (`config/default.toml`, the `AETHER_ENV` overlay,
//! then `AETHER__GATEWAY__…` variables).
//!
//! ```toml
//! [gateway]
//! medium = "nats"              # or "embedded" (the default), or "lan"
//! require_durable_channels = false # on a LAN bus without JetStream: start without them
//! listen = "127.0.0.1:9464"
//! family_depth = 2             # orders.created.eu counts as orders.created
//! max_channel_families = 100   # more distinct families fold into "other"
//! observer_queue_capacity = 100000
//! header_read_timeout_ms = 5000 # a request head not whole by then: closed
//! write_stall_timeout_ms = 10000 # a peer that takes nothing this long: closed
//! max_connections = 1024       # at it, the longest waiting for a request makes room
//! max_connections_per_address = 256
//! max_event_streams = 64       # /events streams; more are answered 503
//! max_event_streams_per_address = 8
//! allowed_hosts = []           # Host names answered; empty: any
//! # public_url = "https://example.com/aether/"   # where pages reach it, behind a proxy
//! max_maps_per_instance = 16   # replicas exported per reporting instance
//! max_map_series = 256         # replicas exported in all (8 to 13 series each)
//!
//! [[gateway.hopping]]          # hopping waves of this base count as its family
//! base = "orders"
//! hop_count = 4
//! ```

use std::{net::SocketAddr, time::Duration};

use aether_core::AetherConfig;
use aether_ops::{
    resources::ResourceLimits,
    settings::{
        LogSettings, ServiceSettings, SettingsError, TelemetrySettings, Validate, validate_section,
    },
};
use serde::{Deserialize, Deserializer, Serialize, de, de::IgnoredAny};

mod bridge;
mod journal;

pub use bridge::{BridgeConfig, BridgeToken};
pub use journal::{FsyncMode, JournalConfig};

/// The default HTTP port: Prometheus' range for exporters, where no other
/// program of the workspace listens.
pub const DEFAULT_PORT: u16 = 9464;

/// The medium the gateway observes, when it makes its own aether.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Medium {
    /// In this process (`Aether::new`): what the program itself emits.
    #[default]
    Embedded,
    /// Through NATS (`Aether::connect` with `[aether.nats]`): the whole bus.
    Nats,
    /// The bus on the LAN `[aether.lan]` names (`Aether::join_lan`): this
    /// machine's `aether node`, else one announced on the LAN.
    Lan,
}

impl Medium {
    /// `embedded`, `nats` or `lan`.
    pub fn as_str(self) -> &'static str {
        match self {
            Medium::Embedded => "embedded",
            Medium::Nats => "nats",
            Medium::Lan => "lan",
        }
    }
}

impl<'de> Deserialize<'de> for Medium {
    /// By hand, for a refusal that names the choices.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.to_ascii_lowercase().as_str() {
            "embedded" => Ok(Self::Embedded),
            "nats" => Ok(Self::Nats),
            "lan" => Ok(Self::Lan),
            _ => Err(de::Error::unknown_variant(
                &text,
                &["embedded", "nats", "lan"],
            )),
        }
    }
}

/// A hopping base whose waves the gateway attributes to it: an entry of
/// `[[gateway.hopping]]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoppingBase {
    /// The base channel, as senders give it to `emit_hopping`.
    pub base: String,
    /// Its number of hops, as senders and receivers use it.
    pub hop_count: u32,
}

/// The `[gateway]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// The medium to observe when the program makes its aether. Default
    /// `embedded`; `--nats <url>` sets `nats`.
    pub medium: Medium,
    /// On a LAN bus (`medium = "lan"`) with no JetStream (nodes started
    /// without `--jetstream`), whether the gateway exits for want of the
    /// durable channels of `[aether.durability] channels` (true) or starts
    /// without them and says so once (false, the default). Over `nats` the
    /// durable channels are always required.
    pub require_durable_channels: bool,
    /// Where to serve HTTP (`/metrics`, `/health`, `/ready`, `/`,
    /// `/events`). Default `127.0.0.1:9464`; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Tokens of a channel that make its family, the label waves are
    /// counted under: with 2, `orders.created.eu` counts as
    /// `orders.created`. 1 to 16, default 2.
    pub family_depth: usize,
    /// Most distinct families counted apart; the waves of any further
    /// family count as `other`, so a metric has at most this many plus one
    /// label values. 1 to 10,000, default 100.
    pub max_channel_families: usize,
    /// Capacity of the observer's receive queue, in waves. When the gateway
    /// falls behind, the queue sheds its weakest waves (and counts them)
    /// rather than slow anyone down. 1 to 10,000,000, default 100,000.
    pub observer_queue_capacity: usize,
    /// How long the observer rests after emptying its queue, in
    /// milliseconds, before it waits for waves again: emitters then wake it
    /// once per batch instead of once per wave, which costs them less. The
    /// latency it measures includes this rest. 0 (wake on every wave) to
    /// 100, default 1.
    pub observer_rest_ms: u64,
    /// Whether to run the aether's physics engine, for interference events
    /// and the resonance graph. Default true.
    pub physics: bool,
    /// Most resonance edges exported with their rate (the busiest) and
    /// shown on the dashboard. 0 to 1,000, default 20.
    pub top_edges: usize,
    /// Interference events the dashboard keeps, newest first. 1 to 1,000,
    /// default 50.
    pub recent_events: usize,
    /// How often the dashboard's snapshot is made and sent, in
    /// milliseconds. 50 to 60,000, default 500.
    pub snapshot_interval_ms: u64,
    /// Hopping bases to attribute: a wave on a hopping wire channel counts
    /// under its base's family when it is the base's hop for the wave's
    /// slot (computed with the aether's `hopping.secret` and
    /// `hop_interval_ms`), else under `hopping`.
    pub hopping: Vec<HoppingBase>,
    /// The journal of observed waves and snapshots of the counters
    /// (`[gateway.journal]`); off by default.
    pub journal: JournalConfig,
    /// How long an HTTP connection has to send a whole request head (the
    /// request line and headers), in milliseconds: the first request's from
    /// when it opens, a later one's from when the previous answer was sent.
    /// A connection that has not by then is closed, so that half-sent
    /// requests do not hold connections open. 100 to 600,000, default
    /// 5,000.
    pub header_read_timeout_ms: u64,
    /// How long a write to an HTTP connection may make no progress, in
    /// milliseconds: a peer that takes no byte of its answer (or of its
    /// event stream, or of its WebSocket) for this long is closed, so that
    /// peers that never read hold no connection or stream. 100 to
    /// 600,000, default 10,000.
    pub write_stall_timeout_ms: u64,
    /// Most HTTP connections open at once. At the limit, a new connection
    /// makes room: the connection that has waited longest for a request
    /// is closed (one that never sent a request before one kept open
    /// after its answers); when every connection is answering a request,
    /// the new one is closed at once. New connections never wait, so a
    /// scrape gets through while the limit is reached. 1 to 100,000,
    /// default 1,024.
    pub max_connections: usize,
    /// Most HTTP connections open at once from one IP address; one more
    /// is closed at once (behind a reverse proxy, every connection is
    /// the proxy's). 1 to 100,000, default 256.
    pub max_connections_per_address: usize,
    /// Most `/events` streams (live dashboards) open at once, fewer than
    /// `max_connections`: a further one is answered 503, so that long-lived
    /// streams cannot hold every connection and starve `/metrics` and
    /// `/health`. 1 to 10,000, default 64.
    pub max_event_streams: usize,
    /// Most `/events` streams open at once from one IP address; one more
    /// is answered 503, so that one address cannot take every stream.
    /// Behind a reverse proxy every page comes from the proxy's address:
    /// raise it to the dashboards expected. 1 to 10,000, default 8.
    pub max_event_streams_per_address: usize,
    /// The host names the gateway answers to (the `Host` header, without
    /// its port, compared without case). Empty (the default): any. Set it
    /// to the names the gateway is reached by, so that a page whose name
    /// was rebound to the gateway's address (DNS rebinding) cannot read
    /// `/snapshot`, `/metrics` or the bridge: a request for another name
    /// is answered 421 Misdirected Request. `localhost`, loopback
    /// addresses (`127.0.0.1`, `[::1]`) and the `listen` address are
    /// always answered; list any other address the gateway is reached by
    /// (`"10.0.0.5"`). A request without a `Host` is refused too.
    pub allowed_hosts: Vec<String>,
    /// Where pages reach the gateway when that is not `listen`: behind a
    /// reverse proxy under a path, `"https://example.com/aether/"` (as
    /// Grafana's `root_url`). The pages' addresses the gateway logs use
    /// it, and its host is answered as one of `allowed_hosts`. Pages, their
    /// links and the bridge address they open follow where they were
    /// served from without it. Default none.
    pub public_url: Option<String>,
    /// Most instances whose reports (`_report.<instance>`) the gateway
    /// tracks and exports; a report from one more is refused and counted.
    /// 1 to 10,000, default 256.
    pub max_instances: usize,
    /// Most replicas of replicated maps exported per instance (from its
    /// reports); the instance's further replicas are not exported, and are
    /// counted in `aether_gateway_map_replicas_unexported{reason=
    /// "max_maps_per_instance"}`. 0 to 64, default 16.
    pub max_maps_per_instance: usize,
    /// Most replicas of replicated maps exported in all, over every
    /// instance: the replicas first exported keep their place, further ones
    /// are counted in `aether_gateway_map_replicas_unexported{reason=
    /// "max_map_series"}`. Each replica costs 8 series (up to 13 with
    /// refusal reasons), some 1 KB of `/metrics` with names of 16 bytes:
    /// the default bounds them at 3,328 series, about 300 KB, and a scrape
    /// of some 2 ms. 0 to 10,000, default 256.
    pub max_map_series: usize,
    /// How long an instance may stay silent before it is marked gone and
    /// its series are removed, in milliseconds. 100 to 3,600,000, default
    /// 5,000 (five reports at the programs' interval).
    pub instance_gone_ms: u64,
    /// The browser bridge: replicated maps over WebSocket at
    /// `/bridge/<map>` (`[gateway.bridge]`).
    pub bridge: BridgeConfig,
    /// A certificate to serve every endpoint over TLS (`[gateway.tls]`);
    /// plain HTTP without one.
    pub tls: TlsConfig,
}

/// The gateway's list settings read from a variable as comma-separated
/// items (`AETHER__GATEWAY__BRIDGE__MAPS=board,kanban`).
pub const LIST_KEYS: [&str; 2] = ["gateway.bridge.maps", "gateway.allowed_hosts"];

/// The host of a `public_url` (without port or brackets), if it is an
/// `http://` or `https://` address with a host and no query or fragment.
pub(crate) fn public_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    if url.contains(['?', '#']) || url.chars().any(char::is_whitespace) {
        return None;
    }
    let authority = rest.split('/').next()?;
    if authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, rest) = v6.split_once(']')?;
            (host, rest.strip_prefix(':'))
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    // A port, if given, is one a socket can have.
    if port.is_some_and(|p| !matches!(p.parse::<u16>(), Ok(1..))) {
        return None;
    }
    // Each path segment a plain one: no `.` or `..` walking out of it.
    let path = &rest[authority.len()..];
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return None;
    }
    (!host.is_empty()).then_some(host)
}

impl GatewayConfig {
    /// Where pages reach the gateway, ending in `/`: `public_url`, or the
    /// address it listens on.
    pub(crate) fn pages_base(&self, tls: bool, addr: SocketAddr) -> String {
        match &self.public_url {
            Some(url) if url.ends_with('/') => url.clone(),
            Some(url) => format!("{url}/"),
            None => format!("{}://{addr}/", if tls { "https" } else { "http" }),
        }
    }
}

/// The `[gateway.tls]` section: with both files, every endpoint (the
/// bridge's WebSocket too) is served over TLS only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM, the server's first.
    pub cert: Option<std::path::PathBuf>,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<std::path::PathBuf>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            medium: Medium::Embedded,
            require_durable_channels: false,
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            family_depth: 2,
            max_channel_families: 100,
            observer_queue_capacity: 100_000,
            observer_rest_ms: 1,
            physics: true,
            top_edges: 20,
            recent_events: 50,
            snapshot_interval_ms: 500,
            hopping: Vec::new(),
            journal: JournalConfig::default(),
            header_read_timeout_ms: 5_000,
            write_stall_timeout_ms: 10_000,
            max_connections: 1_024,
            max_connections_per_address: 256,
            max_event_streams: 64,
            max_event_streams_per_address: 8,
            allowed_hosts: Vec::new(),
            public_url: None,
            max_instances: 256,
            max_maps_per_instance: 16,
            max_map_series: 256,
            instance_gone_ms: 5_000,
            bridge: BridgeConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

impl GatewayConfig {
    /// [`GatewayConfig::snapshot_interval_ms`] as a duration.
    pub fn snapshot_interval(&self) -> Duration {
        Duration::from_millis(self.snapshot_interval_ms)
    }

    /// [`GatewayConfig::header_read_timeout_ms`] as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// [`GatewayConfig::write_stall_timeout_ms`] as a duration.
    pub fn write_stall_timeout(&self) -> Duration {
        Duration::from_millis(self.write_stall_timeout_ms)
    }
}

fn in_range<T: PartialOrd + ToString>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    what: &str,
) -> Result<(), SettingsError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(SettingsError::invalid(key, value.to_string(), what))
    }
}

impl Validate for GatewayConfig {
    fn validate(&self) -> Result<(), SettingsError> {
        in_range("family_depth", self.family_depth, 1..=16, "must be 1 to 16")?;
        in_range(
            "max_channel_families",
            self.max_channel_families,
            1..=10_000,
            "must be 1 to 10000",
        )?;
        in_range(
            "observer_queue_capacity",
            self.observer_queue_capacity,
            1..=10_000_000,
            "must be 1 to 10000000",
        )?;
        in_range(
            "observer_rest_ms",
            self.observer_rest_ms,
            0..=100,
            "must be 0 to 100",
        )?;
        in_range("top_edges", self.top_edges, 0..=1_000, "must be 0 to 1000")?;
        in_range(
            "recent_events",
            self.recent_events,
            1..=1_000,
            "must be 1 to 1000",
        )?;
        in_range(
            "snapshot_interval_ms",
            self.snapshot_interval_ms,
            50..=60_000,
            "must be 50 to 60000",
        )?;
        in_range(
            "header_read_timeout_ms",
            self.header_read_timeout_ms,
            100..=600_000,
            "must be 100 to 600000",
        )?;
        in_range(
            "max_connections",
            self.max_connections,
            1..=100_000,
            "must be 1 to 100000",
        )?;
        in_range(
            "write_stall_timeout_ms",
            self.write_stall_timeout_ms,
            100..=600_000,
            "must be 100 to 600000",
        )?;
        in_range(
            "max_connections_per_address",
            self.max_connections_per_address,
            1..=100_000,
            "must be 1 to 100000",
        )?;
        in_range(
            "max_event_streams",
            self.max_event_streams,
            1..=10_000,
            "must be 1 to 10000",
        )?;
        in_range(
            "max_event_streams_per_address",
            self.max_event_streams_per_address,
            1..=10_000,
            "must be 1 to 10000",
        )?;
        if let Some(url) = &self.public_url {
            public_host(url).ok_or_else(|| {
                SettingsError::invalid(
                    "public_url",
                    url.clone(),
                    "must be an http:// or https:// address with a host (and a port 1 to 65535), no query, fragment or `..`",
                )
            })?;
        }
        for host in &self.allowed_hosts {
            let address = host.trim_start_matches('[').trim_end_matches(']');
            let name = !host.is_empty()
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'));
            if !name && address.parse::<std::net::IpAddr>().is_err() {
                return Err(SettingsError::invalid(
                    "allowed_hosts",
                    host.clone(),
                    "each must be a host name or an address, without a port",
                ));
            }
        }
        in_range(
            "max_maps_per_instance",
            self.max_maps_per_instance,
            0..=aether_core::report::MAX_REPORTED_MAPS,
            "must be 0 to 64",
        )?;
        in_range(
            "max_map_series",
            self.max_map_series,
            0..=10_000,
            "must be 0 to 10000",
        )?;
        self.validate_bridge()?;
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(SettingsError::invalid(
                "tls",
                "one file",
                "needs both cert and key, or neither",
            ));
        }
        if self.max_event_streams >= self.max_connections {
            return Err(SettingsError::invalid(
                "max_event_streams",
                self.max_event_streams.to_string(),
                "must be under max_connections, so that other requests are always served",
            ));
        }
        in_range(
            "max_instances",
            self.max_instances,
            1..=10_000,
            "must be 1 to 10000",
        )?;
        in_range(
            "instance_gone_ms",
            self.instance_gone_ms,
            100..=3_600_000,
            "must be 100 to 3600000",
        )?;
        validate_section("journal", &self.journal)?;
        for base in &self.hopping {
            let channel = aether_core::Channel::new(base.base.as_str());
            if let Err(err) = channel.validate_concrete() {
                return Err(SettingsError::invalid(
                    "hopping.base",
                    &base.base,
                    err.to_string(),
                ));
            }
            if aether_core::hopping::is_hop_channel(&channel) {
                return Err(SettingsError::invalid(
                    "hopping.base",
                    &base.base,
                    "is a wire channel; give the base its senders use",
                ));
            }
            in_range(
                "hopping.hop_count",
                base.hop_count,
                1..=u32::MAX,
                "must be at least 1",
            )?;
        }
        Ok(())
    }
}

/// The gateway program's settings: the aether's (`[aether]`), the
/// gateway's (`[gateway]`) and the sections every program shares
/// (`[log]`, `[service]` for `shutdown_grace_ms`, `[resources]`,
/// `[telemetry]`). Every section may be left out. The sections of the
/// other programs of the workspace (`[alpha]`, `[beta]`) are accepted and
/// not read, so that the three share one settings directory; any other
/// unknown section or key is refused.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    /// The aether's settings; `[aether.nats]` when the medium is NATS.
    pub aether: AetherConfig,
    /// The gateway's own settings.
    pub gateway: GatewayConfig,
    /// Logging: level (changes on reload) and format.
    pub log: LogSettings,
    /// Of this section the gateway uses `shutdown_grace_ms`.
    pub service: ServiceSettings,
    /// Limits that log a warning when exceeded (change on reload).
    pub resources: ResourceLimits,
    /// Read and checked; not used yet.
    pub telemetry: TelemetrySettings,
    /// `aether-service-alpha`'s section of a shared settings directory:
    /// accepted, not read (alpha checks it).
    pub alpha: IgnoredAny,
    /// `aether-service-beta`'s section, likewise.
    pub beta: IgnoredAny,
}

impl GatewaySettings {
    /// What the gateway applies on reload (the log level and the resource
    /// limits); any other of its settings that a reload changes waits for a
    /// restart, and the reload says so by name.
    pub const RELOAD_SCOPE: aether_ops::reload::ReloadScope = aether_ops::reload::ReloadScope {
        applied: &["log.level", "resources"],
        // Of `[service]` the gateway reads shutdown_grace_ms alone; the
        // rest is the services'.
        others: &[
            "alpha",
            "beta",
            "service.medium",
            "service.noise_floor",
            "service.rate_limit_per_s",
            "service.rate_limit_wait_ms",
            "service.metrics_listen",
            "service.data_dir",
            "service.reliability",
            "service.programs",
        ],
    };
}

impl Validate for GatewaySettings {
    fn validate(&self) -> Result<(), SettingsError> {
        validate_section("aether", &self.aether)?;
        validate_section("gateway", &self.gateway)?;
        validate_section("log", &self.log)?;
        validate_section("service", &self.service)?;
        validate_section("resources", &self.resources)?;
        validate_section("telemetry", &self.telemetry)
    }
}

#[cfg(test)]
mod tests {
    use aether_ops::settings::SettingsSource;

    use super::*;

    fn load(toml: &str, vars: &[(&str, &str)]) -> Result<GatewaySettings, SettingsError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("default.toml"), toml).unwrap();
        LIST_KEYS
            .iter()
            .fold(
                SettingsSource::new(dir.path(), None, vars.iter().copied()),
                |source, key| source.list_key(key),
            )
            .load()
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let settings = load("", &[]).unwrap();
        assert_eq!(settings, GatewaySettings::default());
        assert_eq!(settings.gateway.listen.to_string(), "127.0.0.1:9464");
        assert_eq!(settings.gateway.medium, Medium::Embedded);
    }

    #[test]
    fn the_repository_defaults_load() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/default.toml"
        ))
        .unwrap();
        let settings = load(&text, &[]).unwrap();
        // The shipped settings turn instance reports on, make the saga's
        // channels durable and correlate beta's two answers; the library's
        // defaults do none of it.
        // (the core's own test holds the section to what it should say;
        // here, the gateway reads it as the core does)
        let plain: AetherConfig = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .build()
            .unwrap()
            .get("aether")
            .unwrap();
        assert_ne!(plain, AetherConfig::default());
        assert_eq!(settings.aether, plain);
        // And bridge the collaborative pages' maps.
        let mut gateway = GatewayConfig::default();
        gateway.bridge.maps = vec!["board".into(), "kanban".into(), "notebook".into()];
        assert_eq!(settings.gateway, gateway);
    }

    #[test]
    fn reads_the_section_and_the_environment() {
        let toml = "[gateway]\nmedium = \"NATS\"\nfamily_depth = 1\n\
                    [[gateway.hopping]]\nbase = \"orders\"\nhop_count = 4\n";
        let settings = load(
            toml,
            &[
                ("AETHER__GATEWAY__LISTEN", "0.0.0.0:9999"),
                ("AETHER__GATEWAY__MAX_CHANNEL_FAMILIES", "7"),
            ],
        )
        .unwrap();
        let gateway = settings.gateway;
        assert_eq!(gateway.medium, Medium::Nats);
        assert_eq!(gateway.family_depth, 1);
        assert_eq!(gateway.max_channel_families, 7);
        assert_eq!(gateway.listen.port(), 9999);
        assert_eq!(
            gateway.hopping,
            vec![HoppingBase {
                base: "orders".into(),
                hop_count: 4
            }]
        );
    }

    /// A reload that changes the services' settings of `[service]` says
    /// nothing of them here.
    #[test]
    fn a_reload_names_only_the_service_settings_the_gateway_reads() {
        let changed = [
            "service.rate_limit_per_s",
            "service.noise_floor",
            "service.programs.beta.rate_limit_per_s",
            "service.shutdown_grace_ms",
        ]
        .map(String::from);
        let (applied, restart) = GatewaySettings::RELOAD_SCOPE.split(&changed);
        assert!(applied.is_empty(), "{applied:?}");
        assert_eq!(restart, ["service.shutdown_grace_ms"]);
    }

    /// One settings directory for the gateway and both services: the
    /// gateway accepts their sections without reading them, and still
    /// refuses a typo in its own section or an unknown section.
    #[test]
    fn shares_a_directory_with_the_services() {
        let shared = "[aether]\nmin_amplitude = 0.02\n[service]\nnoise_floor = 0.1\n\
                      [gateway]\nfamily_depth = 3\n\
                      [alpha]\nrate_per_s = 20\nitems = [\"widget\"]\n\
                      [beta]\nstock = { widget = 5 }\n";
        let settings = load(shared, &[("AETHER__ALPHA__COUNT", "7")]).unwrap();
        assert_eq!(settings.gateway.family_depth, 3);
        assert_eq!(settings.aether.min_amplitude, 0.02);

        let typo = format!("{shared}[gateway.hoping]\nbase = \"x\"\n");
        let err = load(&typo, &[]).unwrap_err();
        assert_eq!(err.key(), Some("gateway.hoping"), "{err}");
        let err = load(&format!("{shared}[gamma]\nx = 1\n"), &[]).unwrap_err();
        assert_eq!(err.key(), Some("gamma"), "{err}");
        let err = load(shared, &[("AETHER__GATEWAY__FAMILY_DEPT", "2")]).unwrap_err();
        assert_eq!(err.key(), Some("gateway.family_dept"), "{err}");
    }

    #[test]
    fn tokens_with_rights_are_read_and_checked() {
        let base = "[gateway.bridge]\nmaps = [\"board\", \"notes\"]\ntoken = \"the-bridge-s-own-token-1\"\n";
        let settings = load(
            &format!(
                "{base}[[gateway.bridge.tokens]]\ntoken = \"a-viewer-token-0001\"\nread_only = true\n\
                 [[gateway.bridge.tokens]]\ntoken = \"a-cards-token-00002\"\nmaps = [\"board\"]\nprefixes = [\"cards/\"]\n"
            ),
            &[],
        )
        .unwrap();
        let tokens = &settings.gateway.bridge.tokens;
        assert_eq!(tokens.len(), 2);
        assert!(tokens[0].read_only && tokens[0].maps.is_none());
        assert_eq!(
            tokens[1].prefixes.as_deref(),
            Some(&["cards/".to_string()][..])
        );
        assert!(
            !format!("{settings:?}").contains("a-viewer-token"),
            "a token is not in the settings' Debug"
        );
        for bad in [
            "token = \"short\"",
            "token = \"the-bridge-s-own-token-1\"",
            "token = \"a-good-token-000003\"\nmaps = [\"elsewhere\"]",
            "token = \"a-good-token-000003\"\nprefixes = [\"\"]",
            "token = \"a-good-token-000003\"\nwrites = true",
            "token = \"                    \"",
            "token = \"a-good-token\\u0000-000003\"",
            "token = \"a-good-token-000003\"\nmaps = []",
            "token = \"a-good-token-000003\"\nprefixes = []",
            "token = \"a-good-token-000003\"\nprefixes = [\"node/x/\"]",
            "token = \"a-good-token-000003\"\nread_only = true\nprefixes = [\"cards/\"]",
        ] {
            let toml = format!("{base}[[gateway.bridge.tokens]]\n{bad}\n");
            let err = load(&toml, &[]).unwrap_err();
            assert!(
                err.key()
                    .is_some_and(|k| k.starts_with("gateway.bridge.tokens"))
                    || err.to_string().contains("writes"),
                "{bad}: {err}"
            );
            assert!(!err.to_string().contains("a-good-token"), "{err}");
        }
    }

    #[test]
    fn refuses_bad_values_naming_the_key() {
        let err = load("[gateway]\nfamily_depth = 0\n", &[]).unwrap_err();
        assert_eq!(err.key(), Some("gateway.family_depth"));
        let err = load("[gateway]\nmedium = \"carrier-pigeon\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("embedded"), "{err}");
        let err = load("[gateway]\nlisten = \"nowhere\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("gateway.listen"), "{err}");
        let err = load("[gateway]\nmax_families = 3\n", &[]).unwrap_err();
        assert!(err.to_string().contains("max_families"), "{err}");
        let toml = "[[gateway.hopping]]\nbase = \"_hop.abc\"\nhop_count = 4\n";
        let err = load(toml, &[]).unwrap_err();
        assert_eq!(err.key(), Some("gateway.hopping.base"));
        let toml = "[[gateway.hopping]]\nbase = \"orders\"\nhop_count = 0\n";
        let err = load(toml, &[]).unwrap_err();
        assert_eq!(err.key(), Some("gateway.hopping.hop_count"));
        let err = load("[gateway]\nheader_read_timeout_ms = 0\n", &[]).unwrap_err();
        assert_eq!(err.key(), Some("gateway.header_read_timeout_ms"));
        let err = load("[gateway]\nmax_connections = 0\n", &[]).unwrap_err();
        assert_eq!(err.key(), Some("gateway.max_connections"));
    }

    #[test]
    fn http_limits_have_defaults_and_can_be_set() {
        let gateway = GatewayConfig::default();
        assert_eq!(gateway.header_read_timeout(), Duration::from_secs(5));
        assert_eq!(gateway.max_connections, 1_024);
        assert_eq!(gateway.max_event_streams, 64);
        assert_eq!(gateway.max_event_streams_per_address, 8);
        assert_eq!(gateway.max_connections_per_address, 256);
        assert_eq!(gateway.write_stall_timeout(), Duration::from_secs(10));
        assert!(gateway.allowed_hosts.is_empty());
        assert_eq!(
            (gateway.max_maps_per_instance, gateway.max_map_series),
            (16, 256)
        );
        let settings = load(
            "[gateway]\nallowed_hosts = [\"gateway.example\", \"10.0.0.5\", \"[fd00::1]\"]\n",
            &[],
        )
        .unwrap();
        assert_eq!(settings.gateway.allowed_hosts.len(), 3);
        for bad in ["gateway.example:9464", "", "gate way"] {
            let toml = format!("[gateway]\nallowed_hosts = [{bad:?}]\n");
            let err = load(&toml, &[]).unwrap_err();
            assert_eq!(err.key(), Some("gateway.allowed_hosts"), "{bad}");
        }
        // Where pages reach the gateway behind a proxy: its host, and the
        // base the pages' logged addresses start with.
        for (url, host) in [
            ("https://example.com/aether/", "example.com"),
            ("http://10.0.0.5:8080", "10.0.0.5"),
            ("https://[fd00::1]:443/x/", "fd00::1"),
        ] {
            assert_eq!(public_host(url), Some(host), "{url}");
            let toml = format!("[gateway]\npublic_url = {url:?}\n");
            let settings = load(&toml, &[]).unwrap();
            let base = settings
                .gateway
                .pages_base(false, "127.0.0.1:1".parse().unwrap());
            assert!(base.starts_with(url) && base.ends_with('/'), "{base}");
        }
        for bad in [
            "example.com/aether/",
            "ftp://example.com/",
            "https:///aether/",
            "https://example.com/?x=1",
            "https://example.com/#top",
            "https://user@example.com/",
            "https://exa mple.com/",
            "https://example.com:99999/",
            "https://example.com:0/",
            "https://example.com:/",
            "https://example.com/aether/../x/",
        ] {
            let toml = format!("[gateway]\npublic_url = {bad:?}\n");
            let err = load(&toml, &[]).unwrap_err();
            assert_eq!(err.key(), Some("gateway.public_url"), "{bad}");
        }
        // Lists from variables, comma-separated.
        let settings = load(
            "",
            &[
                ("AETHER__GATEWAY__BRIDGE__MAPS", "board, kanban,react-demo"),
                ("AETHER__GATEWAY__ALLOWED_HOSTS", "gateway.example,10.0.0.5"),
            ],
        )
        .unwrap();
        assert_eq!(
            settings.gateway.bridge.maps,
            ["board", "kanban", "react-demo"]
        );
        assert_eq!(
            settings.gateway.allowed_hosts,
            ["gateway.example", "10.0.0.5"]
        );
        let err = load("[gateway]\nwrite_stall_timeout_ms = 10\n", &[]).unwrap_err();
        assert_eq!(err.key(), Some("gateway.write_stall_timeout_ms"));
        let err = load("[gateway]\nmax_maps_per_instance = 65\n", &[]).unwrap_err();
        assert_eq!(err.key(), Some("gateway.max_maps_per_instance"));
        let settings = load(
            "[gateway]\nheader_read_timeout_ms = 250\nmax_event_streams = 4\n",
            &[("AETHER__GATEWAY__MAX_CONNECTIONS", "8")],
        )
        .unwrap();
        assert_eq!(settings.gateway.header_read_timeout_ms, 250);
        assert_eq!(settings.gateway.max_connections, 8);
        assert_eq!(settings.gateway.max_event_streams, 4);
        // Streams must leave connections for the other requests.
        let err = load(
            "[gateway]\nmax_connections = 8\nmax_event_streams = 8\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(err.key(), Some("gateway.max_event_streams"));
    }
}
