//! The `[gateway.bridge]` section: the maps browsers reach, their tokens
//! and rights, the limits every page is held to, and their checks.

use serde::{Deserialize, Serialize};

use super::{GatewayConfig, SettingsError, in_range};

/// A token with rights: the maps a page that sends it opens, and what it
/// may write there.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeToken {
    /// The token, at least 16 bytes.
    pub token: String,
    /// The maps it opens (of `maps`); left out: every bridged map (an
    /// empty list is refused).
    #[serde(default)]
    pub maps: Option<Vec<String>>,
    /// Whether it writes nothing (`read_only = true`): pages read the map
    /// live, and each write is refused.
    #[serde(default)]
    pub read_only: bool,
    /// The key prefixes it writes under (`["cards/", "comments/"]`); left
    /// out: any key (a page writes shared keys only, whatever its token).
    /// Not with `read_only`; an empty list is refused.
    #[serde(default)]
    pub prefixes: Option<Vec<String>>,
}

impl std::fmt::Debug for BridgeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeToken")
            .field("token", &"(hidden)")
            .field("maps", &self.maps)
            .field("read_only", &self.read_only)
            .field("prefixes", &self.prefixes)
            .finish()
    }
}

/// The `[gateway.bridge]` section: which replicated maps browsers reach at
/// `/bridge/<map>`, and the limits every connection is held to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeConfig {
    /// The maps browsers may open (map names, one token each). Default
    /// none: the bridge is off, and the gateway holds no replica (the
    /// shipped `config/default.toml` and the shop example bridge `board`,
    /// the collaborative page's map).
    pub maps: Vec<String>,
    /// The token a browser sends first. Unset: the gateway makes a random
    /// one at start and logs the page's address with it. Set it with
    /// `AETHER__GATEWAY__BRIDGE__TOKEN` rather than in a file. It opens
    /// every bridged map, to read and write.
    pub token: Option<String>,
    /// Tokens with rights (`[[gateway.bridge.tokens]]`): each opens the
    /// maps it names, read-only or writing only keys under its prefixes;
    /// a write outside them is refused as `forbidden`. Default none.
    pub tokens: Vec<BridgeToken>,
    /// Most pages open at once: connections that sent the token (an
    /// upgraded WebSocket no longer counts under `max_connections`); one
    /// more is closed with code 1013 (try again later). 1 to 100,000,
    /// default 256.
    pub max_connections: usize,
    /// Most pages open at once from one IP address; one more is closed
    /// with code 1013. 1 to 100,000, default 32.
    pub max_connections_per_address: usize,
    /// Most sockets open at once that have not sent the token yet; they
    /// never take the places of pages. When they are full, the oldest is
    /// closed (1013, counted `evicted`) to make room for the newcomer, so a
    /// page that sends its token at once always gets in. 1 to 100,000,
    /// default 64.
    pub max_unauthenticated: usize,
    /// The same from one IP address (its oldest is closed first). 1 to
    /// 100,000, default 8.
    pub max_unauthenticated_per_address: usize,
    /// Largest WebSocket message (and frame) taken, in bytes; a larger one
    /// closes the connection (1009). 1,024 to 16 MiB, default 65,536.
    pub max_message_bytes: usize,
    /// Messages a connection may send a second, on average; a connection
    /// that goes past `burst` above that rate is closed (1008). 1 to
    /// 100,000, default 100.
    pub messages_per_s: u32,
    /// Messages a connection may send at once above the rate. 1 to
    /// 100,000, default 200.
    pub burst: u32,
    /// Writes a connection may send a second, on average (a `writes`
    /// message of many counts each); past `write_burst` above that rate it
    /// is closed (1008). 1 to 1,000,000, default 5,000.
    pub writes_per_s: u32,
    /// Writes a connection may send at once above the rate: a paste of
    /// that many keys leaves at once. 1 to 1,000,000, default 20,000.
    pub write_burst: u32,
    /// How long a new connection has to send its first message (the
    /// token), in milliseconds; it is closed (1008) after. 100 to 60,000,
    /// default 2,000.
    pub first_message_ms: u64,
    /// How long sending one message to a browser may take, in
    /// milliseconds; a browser that does not read for that long is closed.
    /// 100 to 600,000, default 10,000.
    pub send_timeout_ms: u64,
    /// Most bytes of snapshots (the map whole, sent to a page on connect)
    /// being sent to pages at once; more pages wait their turn. Pages share
    /// one snapshot text per version of the map. 65,536 to 1 GiB, default
    /// 32 MiB.
    pub max_snapshot_bytes_in_flight: usize,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            maps: Vec::new(),
            token: None,
            tokens: Vec::new(),
            max_connections: 256,
            max_connections_per_address: 32,
            max_unauthenticated: 64,
            max_unauthenticated_per_address: 8,
            max_message_bytes: 64 * 1024,
            messages_per_s: 100,
            burst: 200,
            writes_per_s: 5_000,
            write_burst: 20_000,
            first_message_ms: 2_000,
            send_timeout_ms: 10_000,
            max_snapshot_bytes_in_flight: 32 << 20,
        }
    }
}

/// Why `token` is too weak to admit pages, if it is: shorter than 16
/// bytes, or with blanks or control characters.
fn weak_token(token: &str) -> Option<&'static str> {
    if token.len() < 16 {
        Some("must be at least 16 bytes")
    } else if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must hold no blanks or control characters")
    } else {
        None
    }
}

impl GatewayConfig {
    pub(super) fn validate_bridge(&self) -> Result<(), SettingsError> {
        let b = &self.bridge;
        for map in &b.maps {
            let ok = !map.is_empty()
                && map.len() <= 64
                && map
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
            if !ok {
                return Err(SettingsError::invalid(
                    "bridge.maps",
                    map.clone(),
                    "each must be one token of A-Z a-z 0-9 _ - (at most 64 bytes)",
                ));
            }
        }
        if let Some(token) = &b.token
            && let Some(why) = weak_token(token)
        {
            return Err(SettingsError::invalid(
                "bridge.token",
                "(hidden)",
                format!("{why}, or unset for a random one"),
            ));
        }
        let mut seen: Vec<&str> = b.token.iter().map(String::as_str).collect();
        for (n, t) in b.tokens.iter().enumerate() {
            let key = format!("bridge.tokens[{n}]");
            let invalid = |field: &str, value: String, why: &str| {
                Err(SettingsError::invalid(format!("{key}.{field}"), value, why))
            };
            if let Some(why) = weak_token(&t.token) {
                return invalid("token", "(hidden)".into(), why);
            }
            if seen.contains(&t.token.as_str()) {
                return invalid(
                    "token",
                    "(hidden)".into(),
                    "the same as another token: each is its own",
                );
            }
            seen.push(&t.token);
            match &t.maps {
                Some(maps) if maps.is_empty() => {
                    return invalid(
                        "maps",
                        "[]".into(),
                        "opens no map: leave maps out for every bridged map",
                    );
                }
                Some(maps) => {
                    if let Some(map) = maps.iter().find(|m| !b.maps.contains(m)) {
                        return invalid("maps", map.clone(), "must be among the bridged maps");
                    }
                }
                None => {}
            }
            if let Some(prefixes) = &t.prefixes {
                if t.read_only {
                    return invalid(
                        "prefixes",
                        format!("{prefixes:?}"),
                        "a read_only token writes nothing: no prefixes",
                    );
                }
                if prefixes.is_empty() {
                    return invalid(
                        "prefixes",
                        "[]".into(),
                        "writes nowhere: leave prefixes out for any key, or set read_only",
                    );
                }
                if let Some(p) = prefixes
                    .iter()
                    .find(|p| p.is_empty() || p.starts_with("node/") || *p == "node")
                {
                    return invalid(
                        "prefixes",
                        format!("{p:?}"),
                        "must not be empty, and a page never writes node/ keys",
                    );
                }
            }
        }
        in_range(
            "bridge.max_connections",
            b.max_connections,
            1..=100_000,
            "must be 1 to 100000",
        )?;
        in_range(
            "bridge.max_connections_per_address",
            b.max_connections_per_address,
            1..=100_000,
            "must be 1 to 100000",
        )?;
        in_range(
            "bridge.max_message_bytes",
            b.max_message_bytes,
            1_024..=16 << 20,
            "must be 1024 to 16777216",
        )?;
        in_range(
            "bridge.messages_per_s",
            b.messages_per_s,
            1..=100_000,
            "must be 1 to 100000",
        )?;
        in_range(
            "bridge.max_unauthenticated",
            b.max_unauthenticated,
            1..=100_000,
            "must be 1 to 100000",
        )?;
        in_range(
            "bridge.max_unauthenticated_per_address",
            b.max_unauthenticated_per_address,
            1..=100_000,
            "must be 1 to 100000",
        )?;
        in_range(
            "bridge.max_snapshot_bytes_in_flight",
            b.max_snapshot_bytes_in_flight,
            65_536..=1 << 30,
            "must be 65536 to 1073741824",
        )?;
        in_range("bridge.burst", b.burst, 1..=100_000, "must be 1 to 100000")?;
        in_range(
            "bridge.writes_per_s",
            b.writes_per_s,
            1..=1_000_000,
            "must be 1 to 1000000",
        )?;
        in_range(
            "bridge.write_burst",
            b.write_burst,
            1..=1_000_000,
            "must be 1 to 1000000",
        )?;
        in_range(
            "bridge.first_message_ms",
            b.first_message_ms,
            100..=60_000,
            "must be 100 to 60000",
        )?;
        in_range(
            "bridge.send_timeout_ms",
            b.send_timeout_ms,
            100..=600_000,
            "must be 100 to 600000",
        )
    }
}
