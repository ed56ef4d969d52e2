//! Keepers: replicas that hold maps for others, on their disk, so a map
//! outlives every program that wrote it.
//!
//! A [`Keeper`] listens for writers' holds and knocks (`_state.*.k`: a
//! replica that writes and knows no keeper shows its writes there) and
//! opens a replica, with a ledger in `<dir>/<map>`, of each map its
//! patterns name that is written to: a map earns a keeper with a write,
//! not with a replica's hello. A map that stays empty is closed and its
//! directory removed. Started again, it opens the maps its directory holds
//! in the background, several at a time, first those a replica asks for
//! (a hello); `start` returns once they are open or after two seconds,
//! whichever is first.
//!
//! Its replicas are replicas like any other (they converge, answer
//! catch-ups and anti-entropy) that say they are keepers when they
//! acknowledge a writer's [`StateMap::flush`]. Bounds: `max_maps` maps,
//! `max_maps_per_writer` of them brought by one writer, `max_bytes` of
//! keys and values in all (a write past it is refused as `full`); each
//! refusal counted and logged (at most once a minute).
//!
//! Beside the maps' directories, the file `kept` names the maps that hold
//! keys here (a map brought by a write is named before it opens; one
//! forgotten leaves it before its directory goes): a map it names whose
//! directory is gone, or holds no record, at the next start lost what it
//! held here, and is said and counted damaged.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    path::PathBuf,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use smol_str::SmolStr;

use super::{
    Refusal, StateConfig, StateError, StateErrorKind, StateMap,
    budget::Budget,
    codec::{
        HELD_NOT_KEPT, HELD_NOT_LOGGED, HELD_NOTHING, HELD_OPENING, KEEPER_TOKEN, KNOCK_TOKEN,
        Limits, Message,
    },
};
pub use crate::report::KeeperStats;
use crate::{Aether, Emitter, Vibrator, names::is_name, report::KeeperSource};

mod list;
mod stamped;
use list::lost_maps;

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
    tasks: Vec<tokio::task::AbortHandle>,
}

struct Inner {
    aether: Aether,
    name: String,
    config: StateConfig,
    dir: PathBuf,
    /// The keys and values of all its maps together.
    budget: Arc<Budget>,
    maps: Mutex<HashMap<String, Kept>>,
    /// Maps being opened now, each with the writer that brought it.
    opening: Mutex<HashMap<String, Option<u64>>>,
    /// The writers' holds that came for each map being opened (node, token,
    /// writes): told if it cannot be opened (locked after `opening`).
    opening_holds: Mutex<HashMap<String, Vec<Hold>>>,
    /// Maps its directory holds that are not open yet.
    waiting: Mutex<BTreeSet<String>>,
    /// Wakes the opener: a map waiting is asked for.
    asked: tokio::sync::Notify,
    /// Maps refused, each counted once (up to [`REMEMBERED`]).
    refused: Mutex<HashSet<String>>,
    refused_maps: AtomicU64,
    refused_writer_maps: AtomicU64,
    failed_maps: AtomicU64,
    forgotten_maps: AtomicU64,
    /// The counts of the maps it closed: its totals do not go back when a
    /// map is forgotten.
    retired: Mutex<KeeperStats>,
    /// When a refusal was last logged.
    warned: Mutex<Option<Instant>>,
    /// Held while it runs: the directory is this keeper's (let go by
    /// `close`).
    dir_lock: Mutex<Option<std::fs::File>>,
    /// Closed: a map that opens now is closed at once.
    closed: std::sync::atomic::AtomicBool,
    /// The node id its refusals of holds carry.
    refusing_node: u64,
    /// The maps its `kept` file names, and whether the file is behind
    /// (a write failed: tried again each second).
    listed: Mutex<(BTreeSet<String>, bool)>,
}

/// A map kept: its replica, the writer that brought it (none for a map
/// kept before), since when.
struct Kept {
    map: StateMap,
    writer: Option<u64>,
    since: Instant,
}

/// How many refused map names a keeper remembers (each is counted once).
const REMEMBERED: usize = 4096;
/// Writers' holds remembered for one map while it opens.
const MAX_HOLDS_WHILE_OPENING: usize = 1024;

/// A writer's hold: its node, its token, and how many writes it holds.
type Hold = (u64, u64, u64);
/// At most one warning of each kind a minute.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// How long `start` waits for the maps its directory holds to open.
const START_WAIT: Duration = Duration::from_secs(2);
/// Maps opened at once.
const OPEN_AT_ONCE: usize = 32;
/// A map opened that holds no key (tombstones aside) this long after is
/// closed and forgotten.
const EMPTY_FOR: Duration = Duration::from_secs(10);
/// How often the keeper looks at its maps.
const LOOK_EVERY: Duration = Duration::from_secs(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a claim of a map came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Claim {
    /// The caller opens it.
    Taken,
    /// Kept or being opened already, or not named: nothing to do.
    Passed,
    /// Past a bound: counted and logged.
    Refused,
}

/// Why a map was not kept.
#[derive(Clone, Copy)]
enum Refused {
    MaxMaps,
    Writer,
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
        // A keeper is one of the bus's time sources from its start, before
        // it opens a map (maps open as they are written), its time past the
        // writes it keeps.
        if let Some(past) = config.dir.as_deref().and_then(stamped::read) {
            crate::wave::clock::stamped(past);
            // A program that measured already (the command line measures
            // as it connects) holds the time past it now, if alone.
            crate::wave::clock::hold_past(past);
        }
        crate::bustime::start(aether).await;
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
        // Its owner's only, as the ledgers in it are.
        aether_journal::create_private_dir(&dir).map_err(|e| {
            StateError::new(
                StateErrorKind::Ledger,
                format!("cannot make the keeper's directory {}: {e}", dir.display()),
            )
        })?;
        // One keeper a directory: a second would find every map's ledger
        // taken and keep nothing.
        let lock_path = dir.join("keeper.lock");
        let dir_lock = aether_journal::private(
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true),
        )
        .open(&lock_path)
        .map_err(|e| {
            StateError::new(
                StateErrorKind::Ledger,
                format!("cannot write {}: {e}", lock_path.display()),
            )
        })?;
        if dir_lock.try_lock().is_err() {
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
        let waiting = kept_in(&dir, &config);
        let (lost, mut listed) = lost_maps(&dir, &config);
        // A directory kept before the list was (or with maps it lacks):
        // every map on the disk is named.
        listed.extend(waiting.iter().cloned());
        let inner = Arc::new(Inner {
            aether: aether.clone(),
            name,
            budget: Budget::new(config.keeper.max_bytes),
            waiting: Mutex::new(waiting),
            config,
            dir,
            maps: Mutex::new(HashMap::new()),
            opening: Mutex::new(HashMap::new()),
            opening_holds: Mutex::new(HashMap::new()),
            asked: tokio::sync::Notify::new(),
            refused: Mutex::new(HashSet::new()),
            refused_maps: AtomicU64::new(0),
            refused_writer_maps: AtomicU64::new(0),
            failed_maps: AtomicU64::new(0),
            forgotten_maps: AtomicU64::new(0),
            retired: Mutex::new(KeeperStats::default()),
            warned: Mutex::new(None),
            dir_lock: Mutex::new(Some(dir_lock)),
            closed: std::sync::atomic::AtomicBool::new(false),
            refusing_node: crate::wave::unique_odd_id(),
            listed: Mutex::new((listed, true)),
        });
        lock(&inner.retired).ledgers_damaged += lost.len() as u64;
        inner.write_list();
        let source: Arc<dyn KeeperSource> = inner.clone();
        aether.register_keeper(Arc::downgrade(&source));
        let tasks = vec![
            tokio::spawn(listen(inner.clone(), vibrator)).abort_handle(),
            tokio::spawn(open_waiting(inner.clone())).abort_handle(),
            tokio::spawn(look(inner.clone())).abort_handle(),
        ];
        // What it kept before opens in the background; a small directory
        // is open before `start` returns.
        let deadline = Instant::now() + START_WAIT;
        while Instant::now() < deadline
            && !(lock(&inner.waiting).is_empty() && lock(&inner.opening).is_empty())
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Keeper { inner, tasks })
    }

    /// The names of the maps it keeps open, sorted.
    pub fn maps(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.inner.maps).keys().cloned().collect();
        names.sort();
        names
    }

    /// Its replica of map `name`, if it keeps it open.
    pub fn map(&self, name: &str) -> Option<StateMap> {
        lock(&self.inner.maps).get(name).map(|k| k.map.clone())
    }

    /// Its settings.
    pub fn config(&self) -> &StateConfig {
        &self.inner.config
    }

    /// What it did, counted.
    pub fn stats(&self) -> KeeperStats {
        self.inner.stats()
    }

    /// Stops listening and closes every replica (each says goodbye; its
    /// ledger is closed).
    pub async fn close(&self) {
        for task in &self.tasks {
            task.abort();
        }
        self.inner.closed.store(true, Ordering::Release);
        let maps: Vec<StateMap> = lock(&self.inner.maps).drain().map(|(_, k)| k.map).collect();
        // Together: each waits up to a second or two for its goodbye to
        // leave (all of it while the medium is down), not one after another.
        futures_util::future::join_all(maps.iter().map(StateMap::close)).await;
        for map in &maps {
            self.inner.retire(map);
        }
        // Maps opening as it closed close as they open.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !lock(&self.inner.opening).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        lock(&self.inner.dir_lock).take();
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
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

/// Whether a map's directory holds no record: only its lock and empty
/// files.
fn holds_nothing(dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().all(|entry| {
        entry.file_name() == aether_journal::LOCK_FILE
            || entry.metadata().is_ok_and(|m| m.is_file() && m.len() == 0)
    })
}

/// The maps `dir` holds that `config`'s patterns name.
fn kept_in(dir: &std::path::Path, config: &StateConfig) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| is_name(name) && !name.contains('.') && config.keeper.keeps(name))
        .collect()
}

impl KeeperSource for Inner {
    fn keeper_stats(&self) -> KeeperStats {
        self.stats()
    }
}

impl Inner {
    fn stats(&self) -> KeeperStats {
        // Each map's counts are read off the keeper's lock: a map's own
        // tasks may wait for it while they hold the map.
        let maps: Vec<StateMap> = lock(&self.maps).values().map(|k| k.map.clone()).collect();
        let mut stats = KeeperStats {
            maps: maps.len(),
            waiting_maps: lock(&self.waiting).len(),
            refused_maps: self.refused_maps.load(Ordering::Relaxed),
            refused_writer_maps: self.refused_writer_maps.load(Ordering::Relaxed),
            failed_maps: self.failed_maps.load(Ordering::Relaxed),
            forgotten_maps: self.forgotten_maps.load(Ordering::Relaxed),
            bytes: self.budget.used(),
            max_bytes: self.budget.limit(),
            ..KeeperStats::default()
        };
        let retired = lock(&self.retired).clone();
        stats.ledger_failed = retired.ledger_failed;
        stats.ledgers_damaged = retired.ledgers_damaged;
        stats.full_writes = retired.full_writes;
        stats.future_writes = retired.future_writes;
        for map in &maps {
            let counts = map.stats();
            stats.ledger_failed += counts.ledger_failed;
            stats.ledgers_damaged += counts.ledger_damaged;
            stats.full_writes += counts.refused(Refusal::Full);
            stats.future_writes += counts.refused(Refusal::Future);
        }
        stats
    }

    /// Keeps the counts of a map it closed.
    fn retire(&self, map: &StateMap) {
        let counts = map.stats();
        let mut retired = lock(&self.retired);
        retired.ledger_failed += counts.ledger_failed;
        retired.ledgers_damaged += counts.ledger_damaged;
        retired.full_writes += counts.refused(Refusal::Full);
        retired.future_writes += counts.refused(Refusal::Future);
    }

    /// Takes `map` to be opened by the caller, brought by `writer` (none:
    /// kept before, on its disk), or says why not: kept or being opened
    /// already, or not named by the patterns (passed), or past a bound
    /// (refused, counted and logged).
    fn claim(&self, map: &str, writer: Option<u64>, hold: Option<Hold>) -> Claim {
        if !self.config.keeper.keeps(map) {
            return Claim::Passed;
        }
        let on_disk = lock(&self.waiting).contains(map);
        let writer = if on_disk { None } else { writer };
        let maps = lock(&self.maps);
        let mut opening = lock(&self.opening);
        if maps.contains_key(map) {
            return Claim::Passed;
        }
        // A writer's hold for a map being opened: told if it cannot be.
        let note = |hold: Option<Hold>| {
            if let Some(hold) = hold {
                let mut holds = lock(&self.opening_holds);
                let waiting = holds.entry(map.to_string()).or_default();
                // A hold sent again is one hold.
                let again = waiting.iter().any(|h| (h.0, h.1) == (hold.0, hold.1));
                if !again && waiting.len() < MAX_HOLDS_WHILE_OPENING {
                    waiting.push(hold);
                }
            }
        };
        if opening.contains_key(map) {
            note(hold);
            return Claim::Passed;
        }
        let refused = if maps.len() + opening.len() >= self.config.keeper.max_maps {
            Some(Refused::MaxMaps)
        } else if writer.is_some_and(|writer| {
            let brought = maps.values().filter(|k| k.writer == Some(writer)).count()
                + opening.values().filter(|w| **w == Some(writer)).count();
            brought >= self.config.keeper.max_maps_per_writer
        }) {
            Some(Refused::Writer)
        } else {
            None
        };
        if let Some(why) = refused {
            drop((maps, opening));
            self.refuse(map, why);
            return Claim::Refused;
        }
        opening.insert(map.to_string(), writer);
        note(hold);
        drop((maps, opening));
        lock(&self.waiting).remove(map);
        Claim::Taken
    }

    fn refuse(&self, map: &str, why: Refused) {
        let mut refused = lock(&self.refused);
        if refused.contains(map) {
            return;
        }
        if refused.len() < REMEMBERED {
            refused.insert(map.to_string());
        }
        drop(refused);
        let (count, message) = match why {
            Refused::MaxMaps => (
                self.refused_maps.fetch_add(1, Ordering::Relaxed) + 1,
                "a map is not kept: this keeper keeps max_maps maps already (raise \
                 [aether.state.keeper] max_maps, or name fewer maps)",
            ),
            Refused::Writer => (
                self.refused_writer_maps.fetch_add(1, Ordering::Relaxed) + 1,
                "a map is not kept: the writer that brought it brought \
                 max_maps_per_writer maps kept already ([aether.state.keeper])",
            ),
        };
        if self.may_warn() {
            tracing::warn!(
                keeper = %self.name,
                map,
                refused = count,
                max_maps = self.config.keeper.max_maps,
                max_maps_per_writer = self.config.keeper.max_maps_per_writer,
                "{message}"
            );
        }
    }

    fn may_warn(&self) -> bool {
        let mut warned = lock(&self.warned);
        let due = warned.is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if due {
            *warned = Some(Instant::now());
        }
        due
    }

    /// Tells replica `node` of `map` what came of its hold `token` (or,
    /// with [`KEEPER_TOKEN`], of its hello): `refused`, a
    /// [`Message::Held`] code.
    async fn tell(&self, emitter: &Emitter, map: &str, node: u64, token: u64, refused: u8) {
        let said = Message::Held {
            node: self.refusing_node,
            token,
            keeper: true,
            refused,
        };
        let channel = super::repair_channel(map, node);
        let _ = emitter
            .emit_own(crate::Wave::new(channel, said.encode()))
            .await;
    }

    /// Opens the replica of a claimed map, and takes in `entries` (a
    /// writer's knock) that came before it listened. The writers whose
    /// holds came meanwhile are told (with `emitter`) if the map cannot be
    /// opened.
    async fn open(
        &self,
        map: String,
        source: Option<(String, Vec<(SmolStr, super::Entry)>)>,
        emitter: Option<Emitter>,
    ) {
        // A map brought by a write is named in the list before its replica
        // can acknowledge anything.
        let for_write =
            source.is_some() || lock(&self.opening).get(&map).copied().flatten().is_some();
        if for_write {
            self.list(&map, true);
        }
        let attempt = || {
            StateMap::builder(map.as_str())
                .node(self.name.as_str())
                .config(self.config.clone())
                .keeper(true)
                .budget(self.budget.clone())
                .open(&self.aether)
        };
        let mut opened = attempt().await;
        // Once more, a moment later: the replica it takes over from (a
        // keeper closed just before, on this directory) may still be
        // letting go of it.
        if let Err(error) = &opened {
            tracing::info!(keeper = %self.name, map, %error, "opening the map again");
            tokio::time::sleep(Duration::from_millis(250)).await;
            opened = attempt().await;
        }
        let writer = lock(&self.opening).get(&map).copied().flatten();
        let mut failed = false;
        match opened {
            Ok(replica) if self.closed.load(Ordering::Acquire) => replica.close().await,
            Ok(replica) => {
                if let Some((source, entries)) = source {
                    replica.take_changes(&source, entries);
                }
                tracing::info!(keeper = %self.name, map, keys = replica.len(), "keeping map");
                lock(&self.maps).insert(
                    map.clone(),
                    Kept {
                        map: replica,
                        writer,
                        since: Instant::now(),
                    },
                );
            }
            Err(error) => {
                self.failed_maps.fetch_add(1, Ordering::Relaxed);
                // Once a minute at most: each write to a map that cannot
                // be opened (a full disk) tries again. Counted each time.
                if self.may_warn() {
                    tracing::warn!(keeper = %self.name, map, %error, "cannot keep map (said at most once a minute; counted in failed_maps)");
                }
                failed = true;
                // A map first written while the disk was full left a
                // directory that holds nothing: not opened again at every
                // start.
                let dir = self.dir.join(&map);
                if holds_nothing(&dir) {
                    self.list(&map, false);
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
        let holds = {
            let mut opening = lock(&self.opening);
            let holds = lock(&self.opening_holds).remove(&map);
            opening.remove(&map);
            holds.unwrap_or_default()
        };
        // Their writes are on no disk here: the writers hear so (counted as
        // writes not written), rather than wait or take another replica's
        // acknowledgement. Opened, its replica answers their holds.
        if let (true, Some(emitter)) = (failed, emitter) {
            for (node, token, writes) in holds {
                lock(&self.retired).ledger_failed += writes;
                self.tell(&emitter, &map, node, token, HELD_NOT_LOGGED)
                    .await;
            }
        }
    }

    /// Closes the maps that stayed empty and forgets them (their
    /// directories removed).
    async fn forget_empty(&self) {
        let empty: Vec<(String, StateMap)> = {
            let maps = lock(&self.maps);
            maps.iter()
                .filter(|(_, k)| k.since.elapsed() >= EMPTY_FOR)
                .map(|(name, k)| (name.clone(), k.map.clone()))
                .collect()
        };
        // Tombstones alone keep nothing worth a slot: a map of deletes only
        // is closed too (its other replicas hold the tombstones).
        for (name, map) in empty {
            if map.stats().keys > 0 {
                continue;
            }
            let Some(kept) = lock(&self.maps).remove(&name) else {
                continue;
            };
            kept.map.close().await;
            self.retire(&kept.map);
            if kept.map.stats().keys > 0 {
                // Written to as it closed: kept, opened again.
                lock(&self.waiting).insert(name);
                self.asked.notify_one();
                continue;
            }
            // Out of the list before its directory goes: a kill between
            // the two is not taken for a loss.
            self.list(&name, false);
            if let Err(error) = std::fs::remove_dir_all(self.dir.join(&name)) {
                tracing::warn!(keeper = %self.name, map = name, %error, "cannot remove an empty map's directory");
            }
            self.forgotten_maps.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(keeper = %self.name, map = name, "an empty map is forgotten");
        }
    }
}

/// Opens the maps waiting (kept before), [`OPEN_AT_ONCE`] at a time, in
/// name order unless one is asked for.
async fn open_waiting(inner: Arc<Inner>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(OPEN_AT_ONCE));
    loop {
        let next = lock(&inner.waiting).first().cloned();
        let Some(map) = next else {
            inner.asked.notified().await;
            continue;
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        if inner.claim(&map, None, None) != Claim::Taken {
            // Kept now, or past a bound (counted): not waiting any more.
            lock(&inner.waiting).remove(&map);
            continue;
        }
        let inner = inner.clone();
        tokio::spawn(async move {
            inner.open(map, None, None).await;
            drop(permit);
        });
    }
}

/// Each second: forgets the maps that stayed empty, and says when writes
/// were refused as full.
async fn look(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(LOOK_EVERY);
    let mut full_said = 0;
    let mut stamped_said = 0;
    loop {
        tick.tick().await;
        inner.forget_empty().await;
        inner.list_kept();
        let latest = crate::wave::clock::latest_seen();
        if latest > stamped_said {
            match stamped::write(&inner.dir, latest) {
                Ok(()) => stamped_said = latest,
                Err(error) if inner.may_warn() => tracing::warn!(
                    keeper = %inner.name,
                    %error,
                    "cannot write the keeper's stamped file (tried again each second)"
                ),
                Err(_) => {}
            }
        }
        let stats = inner.stats();
        if stats.full_writes > full_said && inner.may_warn() {
            tracing::warn!(
                keeper = %inner.name,
                full_writes = stats.full_writes,
                bytes = stats.bytes,
                max_bytes = stats.max_bytes,
                "writes are refused as full: the maps kept hold their max_keys or \
                 max_map_bytes, or all of them together [aether.state.keeper] max_bytes"
            );
            full_said = stats.full_writes;
        }
    }
}

/// Opens a replica of each map named that is written to (a writer's hold
/// or knock, well formed), and of a map kept before that a replica says
/// hello to. Anything else on those channels opens nothing.
async fn listen(inner: Arc<Inner>, mut vibrator: Vibrator) {
    let limits = Limits::WIRE;
    let emitter = vibrator.emitter();
    while let Some(wave) = vibrator.receive().await {
        let mut tokens = wave.channel().as_str().split('.');
        let (Some("_state"), Some(map), Some(kind), None) =
            (tokens.next(), tokens.next(), tokens.next(), tokens.next())
        else {
            continue;
        };
        // Maps kept cost no decoding: their replicas take their waves.
        if !is_name(map) || !inner.config.keeper.keeps(map) || lock(&inner.maps).contains_key(map) {
            continue;
        }
        // A map being opened: a hello is told to wait; a writer's hold is
        // noted, and told if the map cannot be opened.
        let opening = lock(&inner.opening).contains_key(map);
        let mut answer_to = None;
        let (writer, knock) = match (kind, Message::decode(wave.payload_bytes().clone(), &limits)) {
            (
                "p",
                Ok(Message::Hello {
                    node,
                    leaving: false,
                    ..
                }),
            ) => {
                // A hello opens only a map kept before; its replica is
                // told to wait for this keeper's.
                let on_disk = lock(&inner.waiting).contains(map);
                if opening || on_disk {
                    inner
                        .tell(&emitter, map, node, KEEPER_TOKEN, HELD_OPENING)
                        .await;
                }
                if on_disk && !opening {
                    (None, None)
                } else {
                    continue;
                }
            }
            (
                "k",
                Ok(Message::Hold {
                    node,
                    token,
                    entries,
                }),
            ) => {
                // A map earns a keeper with a value: a hold of nothing, or of
                // deletes alone, opens no map but one kept before. A writer's
                // such hold is told this keeper keeps nothing of the map (its
                // deletes are on no disk here).
                let valued = entries.iter().any(|(_, entry)| entry.value.is_some());
                if !valued && !lock(&inner.waiting).contains(map) {
                    if token != KNOCK_TOKEN {
                        inner.tell(&emitter, map, node, token, HELD_NOTHING).await;
                    }
                    continue;
                }
                if token != KNOCK_TOKEN {
                    answer_to = Some((node, token, entries.len() as u64));
                }
                let source = wave.source().map(str::to_string);
                (Some(node), source.map(|s| (s, entries)))
            }
            _ => continue,
        };
        match inner.claim(map, writer, answer_to) {
            Claim::Taken => {}
            Claim::Passed => continue,
            Claim::Refused => {
                // A writer waiting for keepers is told this one keeps no
                // more maps, rather than left to time out.
                if let Some((node, token, _)) = answer_to {
                    inner.tell(&emitter, map, node, token, HELD_NOT_KEPT).await;
                }
                continue;
            }
        }
        let (inner, map, emitter) = (inner.clone(), map.to_string(), emitter.clone());
        tokio::spawn(async move { inner.open(map, knock, Some(emitter)).await });
    }
}

#[cfg(test)]
mod tests;
