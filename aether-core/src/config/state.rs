//! Settings of replicated maps ([`crate::state`]).

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::{ConfigError, check};

/// `[aether.state]`: the settings every [`StateMap`](crate::state::StateMap)
/// opened on the aether starts from (a builder may give its own). Durations
/// are written in milliseconds or with a unit (`max_drift_ms = 500`,
/// `max_drift_ms = "500ms"`).
///
/// ```
/// use aether_core::config::StateConfig;
/// use std::time::Duration;
///
/// let state = StateConfig {
///     anti_entropy_interval: Duration::from_millis(500),
///     ..Default::default()
/// };
/// state.validate()?;
///
/// let bad = StateConfig { presence_timeout: Duration::from_millis(100), ..Default::default() };
/// assert_eq!(bad.validate().unwrap_err().key(), "state.presence_timeout_ms");
/// # Ok::<(), aether_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// Longest key a write made through this replica may have, bytes (1 to
    /// 65,535). Default 256. Changes from other replicas are taken up to
    /// [`MOST_KEY_BYTES`], so that replicas set apart still converge.
    pub max_key_bytes: usize,
    /// Longest value a write made through this replica may have, bytes (at
    /// most 16 MiB). Default 32 KiB. Changes from other replicas are taken
    /// up to [`MOST_VALUE_BYTES`] (and the map's `max_map_bytes`).
    pub max_value_bytes: usize,
    /// Most keys a map holds, tombstones counted until they are collected;
    /// a write of one more is refused (`Full`), and so is a change from
    /// another replica (counted, `full`). 1 to 100,000,000, default 100,000.
    pub max_keys: usize,
    /// Most bytes a map holds, its keys and values counted and
    /// [`ENTRY_BYTES`] an entry; past it a write is refused like one key
    /// too many. At least `max_key_bytes + max_value_bytes + 256`, at most
    /// 1 TiB; default 64 MiB.
    pub max_map_bytes: u64,
    /// A stamp further ahead of this replica's clock is refused. Default
    /// 500 ms.
    #[serde(rename = "max_drift_ms", with = "super::millis")]
    pub max_drift: Duration,
    /// Tombstones older than this are collected, and a write stamped
    /// before it is refused. It must be longer than any partition a replica
    /// may come back from with its state. Default 24 h.
    #[serde(rename = "tombstone_horizon_ms", with = "super::millis")]
    pub tombstone_horizon: Duration,
    /// How often a replica probes one member of the map (the next of a
    /// shuffled round), and about one of the map's replicas says hello to
    /// all. Default 1 s.
    #[serde(rename = "heartbeat_interval_ms", with = "super::millis")]
    pub heartbeat_interval: Duration,
    /// A member that answers none of its probes for this long has left.
    /// Default 3 s.
    #[serde(rename = "presence_timeout_ms", with = "super::millis")]
    pub presence_timeout: Duration,
    /// How often a replica's next probe carries its digest, and the member
    /// probed sends it what differs. Default 2 s.
    #[serde(rename = "anti_entropy_interval_ms", with = "super::millis")]
    pub anti_entropy_interval: Duration,
    /// How long `open` waits for a peer's state before it goes on alone.
    /// Default 2 s.
    #[serde(rename = "ready_timeout_ms", with = "super::millis")]
    pub ready_timeout: Duration,
    /// Most writes a second taken from one writer; past it they are
    /// refused (`rate_limited`) and anti-entropy brings them later. Default
    /// 10,000.
    pub max_writes_per_s: u32,
    /// Changes a watcher may fall behind before it misses some (counted).
    /// Default 1024.
    pub watch_buffer: usize,
    /// Where maps keep their ledgers: map `name` in `<dir>/<name>`. None
    /// (the default): maps live in memory, unless a builder gives a
    /// directory.
    pub dir: Option<PathBuf>,
    /// With a ledger: records between snapshots of the whole map, which
    /// bound what a restart reads (0: never; a restart then reads every
    /// record). Default 10,000.
    pub snapshot_every: u64,
    /// With a ledger: a write returns only once its record is on the disk
    /// (fsync). Writes made while one fsync runs share the next one (group
    /// commit), so many concurrent writers cost few fsyncs. Off (the
    /// default): a write returns once its record is handed to the operating
    /// system, which a killed process keeps and the disk has within 200 ms.
    pub sync_writes: bool,
    /// `[aether.state.keeper]`: the maps a program that runs a
    /// [`Keeper`](crate::state::Keeper) keeps for others (the gateway,
    /// `aether node`).
    pub keeper: KeeperConfig,
}

/// `[aether.state.keeper]`: which maps a [`Keeper`](crate::state::Keeper)
/// keeps, in `<dir>/<map>` of `[aether.state] dir`, and its bound.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeeperConfig {
    /// Maps to keep, by name or pattern (`*` stands for any run of
    /// characters): `["*"]` keeps every map on the bus. Empty (the
    /// default): none.
    pub maps: Vec<String>,
    /// Most maps kept (1 to 100,000); another map is refused, counted and
    /// logged. Each map is bounded by `max_keys` and `max_map_bytes`, all
    /// of them together by `max_bytes`. Default 256.
    pub max_maps: usize,
    /// Most of them one writer brings (a map is a writer's from the write
    /// that opened it until it closes): a flood of maps by one writer
    /// leaves room for the others' (above `max_maps` it is `max_maps`).
    /// 1 to 100,000; default 64.
    pub max_maps_per_writer: usize,
    /// Bytes of all its maps together, keys and values and [`ENTRY_BYTES`]
    /// an entry; a write past it is refused as `full` (the writer told;
    /// counted and logged). Memory and disk follow it: see the guide. At
    /// least `max_key_bytes + max_value_bytes + 256`, at most 1 TiB;
    /// default 64 MiB.
    pub max_bytes: u64,
}

impl Default for KeeperConfig {
    fn default() -> Self {
        Self {
            maps: Vec::new(),
            max_maps: 256,
            max_maps_per_writer: 64,
            max_bytes: 64 << 20,
        }
    }
}

impl KeeperConfig {
    /// Whether it keeps map `name`.
    pub fn keeps(&self, name: &str) -> bool {
        self.maps.iter().any(|pattern| glob(pattern, name))
    }
}

/// `pattern` (with `*` for any run of characters) matches all of `text`.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// What an entry of a map costs besides its key and value bytes (its
/// stamp, writer, tree node and allocations: about 240 bytes of resident
/// memory measured for an entry of a 1-byte value): `max_map_bytes` and a
/// keeper's `max_bytes` count it for each key, tombstones too.
pub const ENTRY_BYTES: u64 = 256;

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            max_key_bytes: 256,
            max_value_bytes: 32 * 1024,
            max_keys: 100_000,
            max_map_bytes: 64 << 20,
            max_drift: Duration::from_millis(500),
            tombstone_horizon: Duration::from_secs(24 * 3600),
            heartbeat_interval: Duration::from_secs(1),
            presence_timeout: Duration::from_secs(3),
            anti_entropy_interval: Duration::from_secs(2),
            ready_timeout: Duration::from_secs(2),
            max_writes_per_s: 10_000,
            watch_buffer: 1024,
            dir: None,
            snapshot_every: 10_000,
            sync_writes: false,
            keeper: KeeperConfig::default(),
        }
    }
}

/// The longest key any replica takes, bytes: the most `max_key_bytes`
/// may be, and the bound on keys in changes from other replicas.
pub const MOST_KEY_BYTES: usize = u16::MAX as usize;

/// The longest value any replica takes, bytes: the most `max_value_bytes`
/// may be, and the bound on values in changes from other replicas.
pub const MOST_VALUE_BYTES: usize = 16 * 1024 * 1024;

/// The largest presence value one replica sets in one slot, bytes
/// ([`StateMap::set_presence`](crate::state::StateMap::set_presence)): a
/// name, an avatar's address, what its user looks at, not state.
pub const MAX_PRESENCE_BYTES: usize = 4096;

/// The longest presence slot name, bytes (a slot is a name: letters,
/// digits, `_` and `-`).
pub const MAX_PRESENCE_SLOT_BYTES: usize = 64;

/// The most presence slots one replica sets (a gateway sets one for each
/// of its pages).
pub const MAX_PRESENCE_SLOTS: usize = 1024;

/// The most presence bytes one replica holds of all the others together
/// (each slot counted with its name and [`PRESENCE_SLOT_COST`]): past it,
/// new slots of others are refused and counted `full` until some leave.
pub const MAX_PRESENCE_HELD_BYTES: usize = 16 << 20;

/// What a presence slot held of another replica costs besides its name and
/// value bytes.
pub const PRESENCE_SLOT_COST: usize = 96;

impl StateConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ms = |d: Duration| format!("{}", d.as_millis());
        check(
            (1..=MOST_KEY_BYTES).contains(&self.max_key_bytes),
            "state.max_key_bytes",
            self.max_key_bytes.to_string(),
            "must be 1 to 65535",
        )?;
        check(
            (1..=MOST_VALUE_BYTES).contains(&self.max_value_bytes),
            "state.max_value_bytes",
            self.max_value_bytes.to_string(),
            "must be 1 to 16777216",
        )?;
        check(
            (1..=100_000_000).contains(&self.max_keys),
            "state.max_keys",
            self.max_keys.to_string(),
            "must be 1 to 100000000",
        )?;
        let least = (self.max_key_bytes + self.max_value_bytes) as u64 + ENTRY_BYTES;
        check(
            (least..=1 << 40).contains(&self.max_map_bytes),
            "state.max_map_bytes",
            self.max_map_bytes.to_string(),
            "must be at least max_key_bytes + max_value_bytes + 256, and at most 1099511627776",
        )?;
        check(
            !self.heartbeat_interval.is_zero(),
            "state.heartbeat_interval_ms",
            ms(self.heartbeat_interval),
            "must be above zero",
        )?;
        check(
            !self.anti_entropy_interval.is_zero(),
            "state.anti_entropy_interval_ms",
            ms(self.anti_entropy_interval),
            "must be above zero",
        )?;
        check(
            self.presence_timeout > self.heartbeat_interval,
            "state.presence_timeout_ms",
            ms(self.presence_timeout),
            "must be longer than heartbeat_interval_ms",
        )?;
        check(
            self.tombstone_horizon > self.anti_entropy_interval,
            "state.tombstone_horizon_ms",
            ms(self.tombstone_horizon),
            "must be longer than anti_entropy_interval_ms",
        )?;
        check(
            self.max_writes_per_s > 0,
            "state.max_writes_per_s",
            self.max_writes_per_s.to_string(),
            "must be above zero",
        )?;
        check(
            (1..=1_000_000).contains(&self.watch_buffer),
            "state.watch_buffer",
            self.watch_buffer.to_string(),
            "must be 1 to 1000000",
        )?;
        let keeper = &self.keeper;
        check(
            (1..=100_000).contains(&keeper.max_maps),
            "state.keeper.max_maps",
            keeper.max_maps.to_string(),
            "must be 1 to 100000",
        )?;
        check(
            (1..=100_000).contains(&keeper.max_maps_per_writer),
            "state.keeper.max_maps_per_writer",
            keeper.max_maps_per_writer.to_string(),
            "must be 1 to 100000",
        )?;
        check(
            (least..=1 << 40).contains(&keeper.max_bytes),
            "state.keeper.max_bytes",
            keeper.max_bytes.to_string(),
            "must be at least max_key_bytes + max_value_bytes + 256, and at most 1099511627776",
        )?;
        for pattern in &keeper.maps {
            check(
                !pattern.is_empty()
                    && pattern.len() <= 255
                    && pattern
                        .chars()
                        .all(|c| c == '*' || c == '-' || c == '_' || c.is_ascii_alphanumeric()),
                "state.keeper.maps",
                format!("{pattern:?}"),
                "each must be a map name, with * for any run of characters",
            )?;
        }
        check(
            keeper.maps.is_empty() || self.dir.is_some(),
            "state.keeper.maps",
            format!("{:?}", keeper.maps),
            "a keeper keeps its maps on disk: set state.dir",
        )
    }
}

#[cfg(test)]
mod keeper_tests {
    use proptest::prelude::*;

    use super::*;

    fn keeper(maps: &[&str]) -> KeeperConfig {
        KeeperConfig {
            maps: maps.iter().map(|m| m.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn patterns_name_maps() {
        assert!(keeper(&["*"]).keeps("home"));
        assert!(keeper(&["home"]).keeps("home"));
        assert!(!keeper(&["home"]).keeps("homes"));
        assert!(keeper(&["room-*"]).keeps("room-1"));
        assert!(!keeper(&["room-*"]).keeps("garage"));
        assert!(keeper(&["*-log"]).keeps("door-log"));
        assert!(keeper(&["a*b*c"]).keeps("aXbYc"));
        assert!(!keeper(&["a*b*c"]).keeps("aXcYb"));
        assert!(!keeper(&["ab*ba"]).keeps("aba"), "the ends do not overlap");
        assert!(!keeper(&[]).keeps("home"));
    }

    #[test]
    fn a_keeper_needs_a_directory_and_names() {
        let mut state = StateConfig::default();
        state.keeper.maps = vec!["*".into()];
        assert_eq!(state.validate().unwrap_err().key(), "state.keeper.maps");
        state.dir = Some("/tmp/x".into());
        assert!(state.validate().is_ok());
        state.keeper.maps = vec!["a.b".into()];
        assert_eq!(state.validate().unwrap_err().key(), "state.keeper.maps");
        state.keeper.maps = vec!["*".into()];
        state.keeper.max_maps = 0;
        assert_eq!(state.validate().unwrap_err().key(), "state.keeper.max_maps");
    }

    proptest! {
        /// A pattern made of a name's pieces with `*` between matches it;
        /// a name matches itself and `*`; a plain pattern only itself.
        #[test]
        fn a_pattern_matches_what_it_was_cut_from(
            name in "[a-z0-9_-]{0,20}",
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
            other in "[a-z0-9_-]{1,20}",
        ) {
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(name.len() + 1)).collect();
            at.sort_unstable();
            at.dedup();
            let mut pattern = String::new();
            let mut last = 0;
            for &cut in &at {
                pattern.push_str(&name[last..cut]);
                pattern.push('*');
                last = cut;
            }
            pattern.push_str(&name[last..]);
            prop_assert!(glob(&pattern, &name), "{} / {}", pattern, name);
            prop_assert!(glob("*", &name));
            prop_assert!(glob(&name, &name));
            prop_assert_eq!(glob(&name, &other), name == other);
        }
    }
}
