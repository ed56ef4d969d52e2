//! Keepers: replicas that hold maps for others, on their disk, so a map
//! outlives every program that wrote it.
//!
//! A [`Keeper`] listens for any map's presence and holds (`_state.*.p`,
//! `_state.*.k`) and opens a replica, with a ledger in `<dir>/<map>`, of
//! each map its patterns name, the first time it hears of it; started
//! again, it opens every map its directory holds before it listens. Its
//! replicas are replicas like any other (they converge, answer catch-ups
//! and anti-entropy) that say they are keepers when they acknowledge a
//! writer's [`StateMap::flush`]. The number of maps is bounded
//! (`max_maps`); a map past it is refused, counted and logged.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::{
    StateConfig, StateError, StateErrorKind, StateMap,
    codec::{Limits, Message},
};
use crate::{Aether, Vibrator, names::is_name};

/// What a keeper did, counted since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeeperStats {
    /// Maps it keeps.
    pub maps: usize,
    /// Maps it heard of, which its patterns name, but did not keep:
    /// `max_maps` was reached.
    pub refused_maps: u64,
    /// Maps it could not open (their ledger unreadable, for one).
    pub failed_maps: u64,
    /// Changes its maps' ledgers could not write (a full disk), in all: no
    /// write they carried was acknowledged until written.
    pub ledger_failed: u64,
    /// Maps whose ledger was damaged when they opened (repaired: the
    /// damage logged with the map's name, the damaged files kept aside).
    pub ledgers_damaged: u64,
}

/// A keeper of the maps `[aether.state.keeper] maps` names.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use aether_core::{Aether, config::StateConfig, state::{HeldBy, Keeper, StateMap}};
///
/// let dir = tempfile::tempdir()?;
/// let mut config = StateConfig { dir: Some(dir.path().into()), ..Default::default() };
/// config.keeper.maps = vec!["*".into()];
/// let aether = Aether::default();
/// let keeper = Keeper::start_with(&aether, "keeper", config).await?;
///
/// let script = StateMap::open(&aether, "home").await?;
/// script.set("hall.light", "on").await?;
/// let held = script.flush_to(HeldBy::keepers(1), Duration::from_secs(5)).await?;
/// assert_eq!(held.keepers, 1);
/// script.close().await;
/// assert_eq!(keeper.map("home").unwrap().get("hall.light").as_deref(), Some(&b"on"[..]));
/// # Ok(()) }
/// ```
pub struct Keeper {
    inner: Arc<Inner>,
    listener: tokio::task::AbortHandle,
}

struct Inner {
    aether: Aether,
    name: String,
    config: StateConfig,
    dir: PathBuf,
    maps: Mutex<HashMap<String, StateMap>>,
    /// Maps being opened now.
    opening: Mutex<HashSet<String>>,
    /// Maps refused, each once (up to [`REMEMBERED`]).
    refused: Mutex<HashSet<String>>,
    refused_maps: AtomicU64,
    failed_maps: AtomicU64,
    /// When a refusal was last logged.
    warned: Mutex<Option<Instant>>,
    /// Held while it runs: the directory is this keeper's.
    _lock: std::fs::File,
}

/// How many refused map names a keeper remembers (each is counted once).
const REMEMBERED: usize = 4096;
/// At most one warning of refused maps a minute.
const WARN_EVERY: Duration = Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Keeper {
    /// Starts a keeper named `name` (its replicas' node name) with the
    /// aether's `[aether.state]` settings.
    pub async fn start(aether: &Aether, name: impl Into<String>) -> Result<Keeper, StateError> {
        Self::start_with(aether, name, aether.config().state.clone()).await
    }

    /// Starts a keeper with `config`: `keeper.maps` names the maps, `dir`
    /// where they are kept, the other settings bound each map.
    pub async fn start_with(
        aether: &Aether,
        name: impl Into<String>,
        config: StateConfig,
    ) -> Result<Keeper, StateError> {
        let name = name.into();
        config
            .validate()
            .map_err(|e| StateError::with_source(StateErrorKind::Config, e))?;
        let Some(dir) = config.dir.clone() else {
            return Err(StateError::new(
                StateErrorKind::Config,
                "a keeper keeps its maps on disk: set [aether.state] dir",
            ));
        };
        if !is_name(&name) {
            return Err(StateError::new(
                StateErrorKind::InvalidName,
                format!("keeper name {name:?} is not a vibrator name"),
            ));
        }
        std::fs::create_dir_all(&dir).map_err(|e| {
            StateError::new(
                StateErrorKind::Ledger,
                format!("cannot make the keeper's directory {}: {e}", dir.display()),
            )
        })?;
        // One keeper a directory: a second would find every map's ledger
        // taken and keep nothing.
        let lock_path = dir.join("keeper.lock");
        let lock = std::fs::File::create(&lock_path).map_err(|e| {
            StateError::new(
                StateErrorKind::Ledger,
                format!("cannot write {}: {e}", lock_path.display()),
            )
        })?;
        if lock.try_lock().is_err() {
            return Err(StateError::new(
                StateErrorKind::Ledger,
                format!(
                    "another keeper keeps {}: give each keeper a directory of its own",
                    dir.display()
                ),
            ));
        }
        let mut vibrator = Vibrator::builder(format!("{name}-keeper"))
            .skip_own_waves(true)
            .queue_capacity(16_384)
            .create(aether)
            .await
            .map_err(|e| StateError::with_source(StateErrorKind::Closed, e))?;
        for pattern in ["_state.*.p", "_state.*.k"] {
            vibrator
                .resonate_on(pattern)
                .await
                .map_err(|e| StateError::with_source(StateErrorKind::Closed, e))?;
        }
        let inner = Arc::new(Inner {
            aether: aether.clone(),
            name,
            config,
            dir,
            maps: Mutex::new(HashMap::new()),
            opening: Mutex::new(HashSet::new()),
            refused: Mutex::new(HashSet::new()),
            refused_maps: AtomicU64::new(0),
            failed_maps: AtomicU64::new(0),
            warned: Mutex::new(None),
            _lock: lock,
        });
        // What it kept before: open again before anything else, so a
        // replica that asks finds it.
        for map in inner.kept_before() {
            if inner.claim(&map) {
                inner.open(map).await;
            }
        }
        let listener = tokio::spawn(listen(inner.clone(), vibrator)).abort_handle();
        Ok(Keeper { inner, listener })
    }

    /// The names of the maps it keeps, sorted.
    pub fn maps(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.inner.maps).keys().cloned().collect();
        names.sort();
        names
    }

    /// Its replica of map `name`, if it keeps it.
    pub fn map(&self, name: &str) -> Option<StateMap> {
        lock(&self.inner.maps).get(name).cloned()
    }

    /// What it did, counted.
    pub fn stats(&self) -> KeeperStats {
        // Each map's counts are read off the keeper's lock: a map's own
        // tasks may wait for it while they hold the map.
        let maps: Vec<StateMap> = lock(&self.inner.maps).values().cloned().collect();
        let mut stats = KeeperStats {
            maps: maps.len(),
            refused_maps: self.inner.refused_maps.load(Ordering::Relaxed),
            failed_maps: self.inner.failed_maps.load(Ordering::Relaxed),
            ledger_failed: 0,
            ledgers_damaged: 0,
        };
        for map in &maps {
            let counts = map.stats();
            stats.ledger_failed += counts.ledger_failed;
            stats.ledgers_damaged += counts.ledger_damaged;
        }
        stats
    }

    /// Stops listening and closes every replica (each says goodbye; its
    /// ledger is closed).
    pub async fn close(&self) {
        self.listener.abort();
        let maps: Vec<StateMap> = lock(&self.inner.maps).drain().map(|(_, m)| m).collect();
        for map in maps {
            map.close().await;
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper")
            .field("name", &self.inner.name)
            .field("dir", &self.inner.dir)
            .field("maps", &lock(&self.inner.maps).len())
            .finish()
    }
}

impl Inner {
    /// The maps its directory holds that its patterns name.
    fn kept_before(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| is_name(name) && !name.contains('.') && self.config.keeper.keeps(name))
            .collect();
        names.sort();
        names
    }

    /// Whether `map` is kept or being opened.
    fn known(&self, map: &str) -> bool {
        lock(&self.maps).contains_key(map) || lock(&self.opening).contains(map)
    }

    /// Takes `map` to be opened by the caller: `false` if it is kept or
    /// being opened already, not named by the patterns, or past
    /// `max_maps` (then counted and logged).
    fn claim(&self, map: &str) -> bool {
        if !self.config.keeper.keeps(map) {
            return false;
        }
        let maps = lock(&self.maps);
        let mut opening = lock(&self.opening);
        if maps.contains_key(map) || opening.contains(map) {
            return false;
        }
        if maps.len() + opening.len() >= self.config.keeper.max_maps {
            drop((maps, opening));
            self.refuse(map);
            return false;
        }
        opening.insert(map.to_string());
        true
    }

    fn refuse(&self, map: &str) {
        let mut refused = lock(&self.refused);
        if refused.contains(map) {
            return;
        }
        if refused.len() < REMEMBERED {
            refused.insert(map.to_string());
        }
        let count = self.refused_maps.fetch_add(1, Ordering::Relaxed) + 1;
        drop(refused);
        let mut warned = lock(&self.warned);
        if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *warned = Some(Instant::now());
            tracing::warn!(
                keeper = %self.name,
                map,
                refused_maps = count,
                max_maps = self.config.keeper.max_maps,
                "a map is not kept: this keeper keeps max_maps maps already (raise \
                 [aether.state.keeper] max_maps, or name fewer maps)"
            );
        }
    }

    /// Opens the replica of a claimed map.
    async fn open(&self, map: String) {
        let attempt = || {
            StateMap::builder(map.as_str())
                .node(self.name.as_str())
                .config(self.config.clone())
                .keeper(true)
                .open(&self.aether)
        };
        let mut opened = attempt().await;
        // Once more, a moment later: the replica it takes over from (a
        // keeper closed just before, on this directory) may still be
        // letting go of it.
        if let Err(error) = &opened {
            tracing::info!(keeper = %self.name, map, %error, "opening the map again");
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            opened = attempt().await;
        }
        match opened {
            Ok(replica) => {
                tracing::info!(keeper = %self.name, map, keys = replica.len(), "keeping map");
                lock(&self.maps).insert(map.clone(), replica);
            }
            Err(error) => {
                self.failed_maps.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(keeper = %self.name, map, %error, "cannot keep map");
            }
        }
        lock(&self.opening).remove(&map);
    }
}

/// Opens a replica of each map named that it hears of: a replica's hello
/// or a writer's hold, well formed (anything else on those channels opens
/// nothing).
async fn listen(inner: Arc<Inner>, mut vibrator: Vibrator) {
    let limits = Limits {
        max_key_bytes: inner.config.max_key_bytes,
        max_value_bytes: inner.config.max_value_bytes,
    };
    while let Some(wave) = vibrator.receive().await {
        let mut tokens = wave.channel().as_str().split('.');
        let (Some("_state"), Some(map), Some(kind), None) =
            (tokens.next(), tokens.next(), tokens.next(), tokens.next())
        else {
            continue;
        };
        // Maps kept or being opened cost no decoding: their replicas
        // take their waves.
        if !is_name(map) || !inner.config.keeper.keeps(map) || inner.known(map) {
            continue;
        }
        let heard = matches!(
            (kind, Message::decode(wave.payload_bytes().clone(), &limits)),
            ("p", Ok(Message::Hello { leaving: false, .. })) | ("k", Ok(Message::Hold { .. }))
        );
        if !heard || !inner.claim(map) {
            continue;
        }
        let (inner, map) = (inner.clone(), map.to_string());
        tokio::spawn(async move { inner.open(map).await });
    }
}
