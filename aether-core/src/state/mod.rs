//! Replicated state: maps every replica on the bus holds and converges on,
//! and node-owned state with presence.
//!
//! A [`StateMap`] is a named key-value map replicated over the aether's own
//! waves, so it works the same on the embedded medium and over NATS. Writes
//! are local first (a `get` right after a `set` sees it) and spread in the
//! background; conflicts resolve by hybrid logical clock stamps (the highest
//! wins, a delete is a tombstone), so every replica ends with the same
//! contents whatever order the waves took. A replica that joins late takes
//! the whole state from a peer before [`StateMap::open`] returns, and
//! replicas compare digests at an interval and repair what differs, so
//! waves lost to a partition, a shed or a restart are made good by
//! themselves. [`NodeState`] is the node-owned shape: each node writes only
//! its own keys, reads any node's, and sees who is there.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use aether_core::{Aether, state::StateMap};
//!
//! let aether = Aether::default();
//! let kitchen = StateMap::builder("home").node("kitchen").open(&aether).await?;
//! let hall = StateMap::builder("home").node("hall").open(&aether).await?;
//!
//! kitchen.set_json("living.temp", &21.5).await?;
//! assert_eq!(kitchen.get_json::<f64>("living.temp")?, Some(21.5)); // local first
//! hall.changed("living.temp").await; // spreads in the background
//! assert_eq!(hall.get_json::<f64>("living.temp")?, Some(21.5));
//! # Ok(()) }
//! ```
//!
//! The rules are in the user guide (`docs/guide/state.md`); the messages,
//! byte by byte, in docs/guide/wire.md.

mod budget;
mod catch_up;
mod change;
mod codec;
mod coverage;
mod error;
mod held;
pub mod hlc;
mod keeper;
mod ledger;
mod members;
mod node;
mod presence;
mod protocol;
mod store;
mod task;
mod watch;

use std::{
    collections::{HashMap, HashSet},
    fmt,
    num::NonZeroU32,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_core::Stream;
use governor::{Quota, RateLimiter, clock::DefaultClock, state::keyed::HashMapStateStore};
use serde::{Serialize, de::DeserializeOwned};
use smol_str::SmolStr;
use tokio::sync::{Notify, broadcast};
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};

use crate::{Aether, Channel, Emitter, RequestErrorKind, Vibrator, Wave, names::is_name};

use self::change::Counters;
pub use self::{
    change::{Change, Presence, Stamped, StateStats, Superseded},
    error::{Refusal, StateError, StateErrorKind},
    held::{Held, HeldBy},
    hlc::Stamp,
    keeper::{Keeper, KeeperStats},
    node::NodeState,
    presence::PresenceValue,
    watch::Watch,
};
use self::{
    codec::{Limits, Message},
    hlc::Clock,
    ledger::{Durable, Ledger},
    store::{Cap, Caps, Entry, Merged, Store},
};
use self::{task::run, watch::Lossy};
pub use crate::config::StateConfig;

/// Builds a [`StateMap`]: its name, this replica's node name and settings.
#[derive(Clone, Debug)]
pub struct StateMapBuilder {
    map: String,
    node: Option<String>,
    config: Option<StateConfig>,
    dir: Option<std::path::PathBuf>,
    keeper: bool,
    acknowledges: bool,
    values: Option<ValueCheck>,
    /// The keeper's budget its bytes count against.
    budget: Option<std::sync::Arc<budget::Budget>>,
}

/// Which values a replica takes from the others ([`StateMapBuilder::values`]).
pub type ValueCheck = fn(&[u8]) -> bool;

impl StateMapBuilder {
    /// This replica takes a value from another replica (a change, a repair,
    /// a catch-up, a hold) only if `check` passes it; any other is refused
    /// and counted as [`Refusal::Malformed`], as a message that does not
    /// decode is. A binding whose language cannot hold every byte string
    /// (Python's JSON) reads by its own rule so. Tombstones always pass.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use aether_core::{Aether, state::{Refusal, StateMap}};
    ///
    /// let aether = Aether::default();
    /// let reader = StateMap::builder("home")
    ///     .values(|value| value != b"NaN")
    ///     .open(&aether)
    ///     .await?;
    /// let writer = StateMap::open(&aether, "home").await?;
    /// writer.set("temp", "NaN").await?;
    /// writer.set("ok", "1").await?;
    /// let arrived = async {
    ///     while reader.get("ok").is_none() {
    ///         tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    ///     }
    /// };
    /// tokio::time::timeout(std::time::Duration::from_secs(10), arrived).await?;
    /// assert_eq!(reader.get("temp"), None);
    /// assert_eq!(reader.stats().refused(Refusal::Malformed), 1);
    /// # Ok(()) }
    /// ```
    pub fn values(mut self, check: ValueCheck) -> Self {
        self.values = Some(check);
        self
    }

    /// This replica keeps the map for others (it needs a state
    /// directory): its acknowledgements of [`StateMap::flush`] say so, and
    /// a flush may wait for keepers ([`HeldBy::keepers`]). [`Keeper`] opens
    /// its maps so.
    pub fn keeper(mut self, keeper: bool) -> Self {
        self.keeper = keeper;
        self
    }

    /// Whether this replica acknowledges other replicas' holds
    /// ([`StateMap::flush`]); default yes. A replica that will not stay (a
    /// one-shot command) should not: a write it acknowledged is lost when
    /// it exits, and its writer was told the write is held. It still takes
    /// the writes; it answers no catch-up either (a replica that opens
    /// takes the map from one that stays).
    pub fn acknowledges(mut self, acknowledges: bool) -> Self {
        self.acknowledges = acknowledges;
        self
    }

    /// Its bytes count against `budget` with other maps' (a keeper's).
    pub(crate) fn budget(mut self, budget: std::sync::Arc<budget::Budget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// This replica's name: the writer its changes carry, and the owner of
    /// `node/<name>/...` keys. A vibrator name; default `replica-<random>`.
    pub fn node(mut self, name: impl Into<String>) -> Self {
        self.node = Some(name.into());
        self
    }

    /// Keeps the map in `dir` (a directory per map, one process at a
    /// time): every change applied here is appended to a ledger there, and
    /// a replica opened again on it starts from what it held, then catches
    /// up from its peers. Without it the map is kept in `<dir>/<map>` of
    /// the settings' `dir`, or lives in memory if that is not set either.
    pub fn state_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Its settings, instead of the aether's `[aether.state]`.
    pub fn config(mut self, config: StateConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// Opens the replica on `aether`: it takes the current state from a
    /// live peer (up to `ready_timeout`), then returns.
    pub async fn open(self, aether: &Aether) -> Result<StateMap, StateError> {
        StateMap::open_with(aether, self).await
    }
}

/// One replica of a named, replicated key-value map.
///
/// Cheap to clone; every clone is the same replica. Dropping the last clone
/// (or [`StateMap::close`]) says goodbye to the peers and stops it.
#[derive(Clone)]
pub struct StateMap {
    shared: Arc<Shared>,
    _guard: Arc<Guard>,
}

/// Stops the replica when the last handle goes.
struct Guard(Arc<Shared>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.stop();
    }
}

struct Shared {
    /// The ledger, with a state directory.
    ledger: Option<Arc<Durable>>,
    /// What its state covers, and whether it is back after more than the
    /// horizon ([`coverage`]).
    coverage: Mutex<coverage::Coverage>,
    /// When it last heard a peer, by the bus's clock (Unix ns).
    heard: AtomicU64,
    /// It keeps the map for others.
    keeper: bool,
    /// It acknowledges others' holds and answers catch-ups
    /// ([`StateMapBuilder::acknowledges`]).
    acknowledges: bool,
    /// Its catch-up came from replicas that lacked writes they refused as
    /// full: it says it lacks them too.
    caught_up_lacking: AtomicBool,
    /// Writes refused as full lately: counted once, and while one is not
    /// held it answers catch-ups as a replica that lacks writes.
    full_refused: Mutex<protocol::FullRefused>,
    /// When it last warned that its ledger could not write a change.
    ledger_warned: Mutex<Option<Instant>>,
    /// When it last warned of changes refused for their stamps (a clock
    /// off here or there).
    clock_warned: Mutex<Option<Instant>>,
    /// When it last warned of a replica speaking another version of the
    /// state payloads.
    version_warned: Mutex<Option<Instant>>,
    /// The values it takes from others ([`StateMapBuilder::values`]).
    values: Option<ValueCheck>,
    /// This replica's writes, by key, and how many replicas and keepers
    /// acknowledged each (forgotten when a higher stamp overwrites it).
    /// Every write goes in: hashed with a seeded fast hash (keys may come
    /// from pages through a bridge, so never an unseeded one).
    unacked: Mutex<held::Unacked>,
    /// The flushes: the holds waiting for acknowledgements, and whose turn
    /// it is to send one.
    flushes: held::Flushes,
    map: String,
    node_name: SmolStr,
    config: StateConfig,
    clock: Clock,
    store: Mutex<Store>,
    emitter: Emitter,
    channels: Channels,
    changes: watch::Watchers<Change>,
    superseded: watch::Watchers<Superseded>,
    presence: watch::Watchers<Presence>,
    /// This replica's presence values ([`presence`]).
    own_presence: Mutex<presence::Own>,
    /// The other replicas' presence values held here.
    presences: Mutex<presence::Table>,
    /// Counts the changes of `presences`, for those who show them.
    presences_changed: tokio::sync::watch::Sender<u64>,
    /// `own_presence` has changes to send.
    presence_due: Notify,
    members: Mutex<members::Members>,
    counters: Counters,
    writers: Limiter,
    /// Repairs, digests, catch-ups and asks taken from one source a second:
    /// what one forged message can make a replica send is bounded by it.
    chatter: Limiter,
    /// When this replica last said hello to all, told it is gone.
    last_hello_back: Mutex<Option<Instant>>,
    /// When this replica last sent its own recent writes to all
    /// ([`Shared::resend_own`]).
    last_resend: Mutex<Option<Instant>>,
    /// When this replica last knocked (wrote knowing no keeper).
    last_knock: Mutex<Option<Instant>>,
    /// Each owner it asked for its keys: when, for which fingerprint the
    /// owner advertised, and how many times for it.
    asked: Mutex<HashMap<u64, (Instant, u64, u32)>>,
    /// Catch-up: the buckets still expected from the peer that answered.
    pending_sync: Mutex<Option<(u64, HashSet<u8>)>>,
    /// This replica's changes not sent yet: the replica's task sends them,
    /// those made while the last message went out together in the next.
    outgoing: Mutex<Vec<(SmolStr, store::Entry)>>,
    /// How many changes the last send took from `outgoing`: the room the
    /// next changes are given at once (a stream's next batch is not grown
    /// by copies as its writes come).
    last_taken: std::sync::atomic::AtomicUsize,
    /// Sends of `outgoing` one at a time, so that changes leave in order.
    sending: tokio::sync::Mutex<()>,
    /// `outgoing` has changes to send.
    send_due: Notify,
    /// The task gathers a stream of writes: it takes `outgoing` by itself.
    gathering: AtomicBool,
    /// Why the last send of `outgoing` failed, until one succeeds.
    send_failed: Mutex<Option<String>>,
    /// Whether `send_failed` holds a reason: read at every write, the lock
    /// taken only then.
    sends_failing: AtomicBool,
    synced: Notify,
    /// Caught up: the task starts answering catch-ups.
    ready: Notify,
    /// No more writes; the task ends.
    stopped: AtomicBool,
    /// The replica said goodbye to its peers.
    goodbye: AtomicBool,
    /// An anti-entropy round is due: the next probe carries the digest.
    digest_due: AtomicBool,
    /// Who gives this replica members, and until when: the replicas it
    /// caught up from (the first roster's sender, or the answers'), within
    /// twice `ready_timeout` of the catch-up.
    answerer: Mutex<(Vec<SmolStr>, Option<Instant>)>,
    /// A keeper said it is opening this map from its disk
    /// ([`codec::HELD_OPENING`]): the catch-up asks until it answers.
    keeper_opening: AtomicBool,
    /// When this replica last sent repairs for each member's digest.
    repaired_for: Mutex<HashMap<u64, Instant>>,
    stop: Notify,
    /// The replica's task, awaited by `close` (its end leaves the
    /// map's channels, the catch-up group among them).
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// How far back a replica sends its own writes to all again when a digest
/// shows a peer lacks some ([`Shared::resend_own`]).
const RESEND_OWN_WITHIN: Duration = Duration::from_secs(60);

/// How many times a replica asks an owner for its keys while the owner
/// advertises one fingerprint.
const ASKS_PER_FINGERPRINT: u32 = 3;

/// A rate limit per source.
type Limiter = RateLimiter<SmolStr, HashMapStateStore<SmolStr>, DefaultClock>;

/// Repair chunks, digests, catch-up requests and asks taken from one source
/// a second (a map's full repair is at most a few chunks per bucket).
const CHATTER_PER_S: u32 = 512;

/// The channels of one map.
struct Channels {
    changes: Channel,
    presence: Channel,
    sync: Channel,
    /// Writers' holds ([`StateMap::flush`]).
    hold: Channel,
    /// Repairs addressed to this replica.
    repair: Channel,
    map: String,
}

impl Channels {
    fn of(map: &str, node: u64) -> Self {
        let prefix = format!("_state.{map}");
        Self {
            changes: Channel::new(format!("{prefix}.c")),
            presence: Channel::new(format!("{prefix}.p")),
            sync: Channel::new(format!("{prefix}.s")),
            hold: Channel::new(format!("{prefix}.k")),
            repair: repair_channel(map, node),
            map: map.to_string(),
        }
    }

    fn repair_of(&self, node: u64) -> Channel {
        repair_channel(&self.map, node)
    }
}

/// The channel of the repairs (and answers) addressed to replica `node`
/// of `map`.
fn repair_channel(map: &str, node: u64) -> Channel {
    Channel::new(format!("_state.{map}.r.{node:016x}"))
}

/// The node that owns `key`: `Some(name)` for a node-owned key
/// (`node/<name>/...`), which only that node's replica may write; `None`
/// for a shared key.
pub fn owner_of(key: &str) -> Option<&str> {
    store::owner_of(key)
}

/// What taking in entries did.
#[derive(Default)]
struct Taken {
    /// The first reason one was refused.
    refused: Option<Refusal>,
    /// The last ledger record written.
    logged: Option<u64>,
    /// One won but was not written to the ledger.
    not_logged: bool,
}

/// What applying an entry did.
enum Applied {
    /// It won: its ledger record's sequence number, or why it was not
    /// written (`None`: no ledger).
    Won(Option<Result<u64, String>>),
    /// This replica held it already, or a winning entry.
    Stale,
    /// It would win, but the map is full ([`Cap`]): the key back.
    Full(Cap, SmolStr),
}

/// A random node id: the process nonce mixed with a count and the time, so
/// that replicas in one process and across processes differ.
fn node_id() -> u64 {
    crate::wave::unique_odd_id()
}

impl StateMap {
    /// A builder for the replica of map `name` (one token of
    /// `A-Z a-z 0-9 _ -`).
    pub fn builder(name: impl Into<String>) -> StateMapBuilder {
        StateMapBuilder {
            map: name.into(),
            node: None,
            config: None,
            dir: None,
            keeper: false,
            acknowledges: true,
            values: None,
            budget: None,
        }
    }

    /// Opens a replica of map `name` with the default settings.
    pub async fn open(aether: &Aether, name: impl Into<String>) -> Result<StateMap, StateError> {
        Self::builder(name).open(aether).await
    }

    /// Takes in entries a writer `source` sent before this replica
    /// listened (a keeper opening a map on a writer's knock), as a hold's.
    pub(crate) fn take_changes(&self, source: &str, entries: Vec<(SmolStr, Entry)>) {
        self.shared.take_entries(source, entries, false);
    }

    async fn open_with(aether: &Aether, builder: StateMapBuilder) -> Result<StateMap, StateError> {
        // Stamps follow the bus's time: measured before the first.
        crate::bustime::start(aether).await;
        let StateMapBuilder {
            map,
            node,
            config,
            dir,
            keeper,
            acknowledges,
            values,
            budget,
        } = builder;
        let config = config.unwrap_or_else(|| aether.config().state.clone());
        config
            .validate()
            .map_err(|e| StateError::with_source(StateErrorKind::Config, e))?;
        if map.is_empty() || map.contains('.') || !is_name(&map) {
            return Err(StateError::new(
                StateErrorKind::InvalidName,
                format!(
                    "map name {map:?} is not one token of 1 to {} bytes of A-Z a-z 0-9 _ -",
                    crate::names::MAX_NAME_BYTES
                ),
            ));
        }
        let id = node_id();
        let node_name = node.unwrap_or_else(|| format!("replica-{:08x}", id as u32));
        if !is_name(&node_name) || node_name.len() > 255 {
            return Err(StateError::new(
                StateErrorKind::InvalidName,
                format!("node name {node_name:?} is not a vibrator name"),
            ));
        }
        let dir = dir.or_else(|| config.dir.as_ref().map(|root| root.join(&map)));
        if keeper && dir.is_none() {
            return Err(StateError::new(
                StateErrorKind::Config,
                format!(
                    "a keeper of map {map:?} needs a state directory (state_dir, or [aether.state] dir)"
                ),
            ));
        }
        let channels = Channels::of(&map, id);
        let mut vibrator = Vibrator::builder(node_name.clone())
            .skip_own_waves(true)
            .queue_capacity(16_384)
            .create(aether)
            .await
            .map_err(|e| StateError::with_source(StateErrorKind::Closed, e))?;
        // Not yet on the catch-up channel: a replica answers catch-ups only
        // once it caught up itself, and the first one hears "no
        // responders" at once.
        for channel in [
            &channels.changes,
            &channels.presence,
            &channels.hold,
            &channels.repair,
        ] {
            // The bus's own channels: the ACL does not apply to them, so
            // only a closed aether refuses them.
            vibrator
                .resonate_on(channel.clone())
                .await
                .map_err(|e| StateError::with_source(StateErrorKind::Closed, e))?;
        }
        let clock = Clock::new(id, config.max_drift);
        let mut damaged = false;
        let (ledger, mut store) = match &dir {
            None => (None, Store::default()),
            Some(dir) => {
                let (ledger, store, skipped) =
                    Ledger::open(dir, &Limits::WIRE, config.snapshot_every)
                        .map_err(|e| StateError::with_source(StateErrorKind::Ledger, e))?;
                if skipped > 0 {
                    tracing::warn!(map, dir = %dir.display(), skipped, "ledger records that do not decode were skipped");
                }
                if let Some(repair) = ledger.repair() {
                    damaged = true;
                    tracing::warn!(
                        map,
                        damage = %repair.damage,
                        kept = repair.kept,
                        read_on = repair.read_on,
                        lost_bytes = repair.lost_bytes,
                        kept_aside = %match &repair.kept_aside {
                            Ok(path) => path.display().to_string(),
                            Err(why) => why.clone(),
                        },
                        "a map's ledger was damaged: the records before and after the damage \
                         were kept, the damaged bytes lost (other replicas may hold them); the \
                         damaged files as they were are kept aside"
                    );
                }
                for (_, entry) in store.entries() {
                    clock.advance(entry.stamp);
                }
                (Some(Durable::new(ledger)), store)
            }
        };
        let mut coverage =
            coverage::Coverage::open(dir.as_deref(), clock.wall(), config.tombstone_horizon);
        // A ledger holding fewer records than it had written (a segment
        // deleted or cut short past what the journal sees, a torn tail that
        // took more than the record it tore) lost them.
        let holds = ledger.as_ref().and_then(|l| l.ledger().next_seq());
        if let (Some(dir), None, Some(holds)) = (&dir, coverage.last_records(), holds)
            && holds > 0
        {
            tracing::warn!(
                map,
                dir = %dir.display(),
                holds,
                "a map's ledger has no record count beside it (its covers file is missing or \
                 damaged): whether records were lost from it cannot be told at this open"
            );
        }
        if let (Some(had), Some(holds)) = (coverage.last_records(), holds)
            && holds < had
        {
            damaged = true;
            tracing::warn!(
                map,
                had,
                holds,
                "a map's ledger holds fewer records than it had written (a file deleted or cut \
                 short): what they held is lost here (other replicas may hold it)"
            );
        }
        if let Some(returning) = &coverage.returning {
            tracing::warn!(
                map,
                last_heard_s_ago = clock.wall().saturating_sub(returning.heard) / 1_000_000_000,
                "this replica is back after more than tombstone_horizon: it offers nothing until \
                 it has caught up, and drops what it held from before it went that a peer \
                 covering its absence lacks (deleted meanwhile)"
            );
        }
        let heard = AtomicU64::new(coverage.last_heard().unwrap_or_else(|| clock.wall()));
        // The file is there from the open (then rewritten in place), so a
        // disk that fills right after still takes the count.
        if let (Some(dir), None) = (&dir, coverage.last_records())
            && let Err(error) = coverage.keep(
                heard.load(std::sync::atomic::Ordering::Relaxed),
                holds.unwrap_or(0),
                true,
            )
        {
            tracing::warn!(
                map,
                dir = %dir.display(),
                %error,
                "cannot write a map's covers file: whether its ledger loses records later \
                 cannot be told until it is written"
            );
        }
        store.set_caps(Caps {
            max_keys: config.max_keys,
            max_bytes: config.max_map_bytes,
        });
        if let Some(budget) = budget {
            store.set_budget(budget);
        }
        let quota = Quota::per_second(NonZeroU32::new(config.max_writes_per_s).expect("validated"));
        let lacking = ledger.as_ref().is_some_and(|l| l.ledger().lacking());
        let shared = Arc::new(Shared {
            clock,
            store: Mutex::new(store),
            ledger,
            acknowledges,
            full_refused: Mutex::default(),
            ledger_warned: Mutex::new(None),
            clock_warned: Mutex::new(None),
            version_warned: Mutex::new(None),
            coverage: Mutex::new(coverage),
            heard,
            keeper,
            values,
            unacked: Mutex::new(held::Unacked::default()),
            flushes: held::Flushes::default(),
            emitter: vibrator.emitter(),
            channels,
            changes: watch::Watchers::new(config.watch_buffer),
            superseded: watch::Watchers::new(config.watch_buffer),
            presence: watch::Watchers::new(config.watch_buffer),
            own_presence: Mutex::default(),
            presences: Mutex::default(),
            presences_changed: tokio::sync::watch::Sender::new(0),
            presence_due: Notify::new(),
            members: Mutex::new(members::Members::new(id ^ hlc::wall_ns())),
            counters: Counters {
                ledger_damaged: AtomicU64::new(u64::from(damaged)),
                ..Counters::default()
            },
            writers: RateLimiter::hashmap(quota),
            chatter: RateLimiter::hashmap(Quota::per_second(
                NonZeroU32::new(CHATTER_PER_S).expect("non-zero"),
            )),
            last_hello_back: Mutex::new(None),
            last_knock: Mutex::new(None),
            last_resend: Mutex::new(None),
            asked: Mutex::new(HashMap::new()),
            pending_sync: Mutex::new(None),
            outgoing: Mutex::new(Vec::new()),
            last_taken: std::sync::atomic::AtomicUsize::new(0),
            sending: tokio::sync::Mutex::new(()),
            send_due: Notify::new(),
            gathering: AtomicBool::new(false),
            send_failed: Mutex::new(None),
            sends_failing: AtomicBool::new(false),
            synced: Notify::new(),
            ready: Notify::new(),
            stopped: AtomicBool::new(false),
            goodbye: AtomicBool::new(false),
            digest_due: AtomicBool::new(false),
            answerer: Mutex::new((Vec::new(), None)),
            keeper_opening: AtomicBool::new(false),
            // A ledger that lacks changes an earlier process could not
            // write lacks them until it catches up whole: it says so.
            caught_up_lacking: AtomicBool::new(lacking),
            repaired_for: Mutex::new(HashMap::new()),
            stop: Notify::new(),
            task: Mutex::new(None),
            map,
            node_name: SmolStr::new(node_name),
            config,
        });
        let (answering, answers) = tokio::sync::oneshot::channel();
        let source: Arc<dyn crate::report::MapSource> = shared.clone();
        aether.register_map(Arc::downgrade(&source));
        let task = tokio::spawn(run(shared.clone(), vibrator, answering));
        *shared.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        let map = StateMap {
            _guard: Arc::new(Guard(shared.clone())),
            shared,
        };
        map.shared.hello(false).await;
        map.shared.catch_up().await;
        map.shared.settle_coverage();
        // Ready: from now on it answers others' catch-ups. Waited for, so
        // that a replica opened after `open` returned finds it.
        map.shared.ready.notify_one();
        let _ = answers.await;
        Ok(map)
    }

    /// The map's name.
    pub fn name(&self) -> &str {
        &self.shared.map
    }

    /// This replica's node name.
    pub fn node(&self) -> &str {
        &self.shared.node_name
    }

    /// The settings this replica opened with: its limits (`max_key_bytes`,
    /// `max_value_bytes`), timings and bounds.
    pub fn config(&self) -> &StateConfig {
        &self.shared.config
    }

    /// This replica's id: the `node` of the stamps of its own writes.
    pub fn replica_id(&self) -> u64 {
        self.shared.clock.node()
    }

    /// A number that changes whenever this replica's contents change (a
    /// change applied, tombstones collected): what was read at one version
    /// is still true while the version is the same.
    pub fn version(&self) -> u64 {
        self.shared.lock_store().version()
    }

    /// Sets `key` to `value` here at once, and sends it to every replica:
    /// the replica's task sends it, with the other changes made while its
    /// last message went out (one message for a burst). `NotSent` while the
    /// medium refuses this replica's changes (the write is kept, and sent
    /// later or brought by anti-entropy; `stats().unsent` counts them). With a ledger, it returns once the change is handed
    /// to the operating system, or with `sync_writes` once it is on the
    /// disk; `Ledger` if it could not be written (it is kept in memory and
    /// sent, not on this disk).
    pub async fn set(&self, key: &str, value: impl Into<Bytes>) -> Result<Stamp, StateError> {
        self.write(key, Some(value.into())).await
    }

    /// Sets `key` to `value` as JSON.
    pub async fn set_json(&self, key: &str, value: &impl Serialize) -> Result<Stamp, StateError> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| StateError::with_source(StateErrorKind::Payload, e))?;
        self.set(key, bytes).await
    }

    /// Deletes `key` (a tombstone, so no older write brings it back).
    pub async fn delete(&self, key: &str) -> Result<Stamp, StateError> {
        self.write(key, None).await
    }

    async fn write(&self, key: &str, value: Option<Bytes>) -> Result<Stamp, StateError> {
        let shared = &self.shared;
        self.check_write(key, value.as_ref())?;
        let stamp = shared.clock.now();
        self.put(key, value, stamp).await?;
        Ok(stamp)
    }

    /// Merges a write that was stamped elsewhere: by a replica that is not
    /// on the bus itself, such as a browser behind the gateway's bridge,
    /// which keeps its own clock and may write while it is offline. The
    /// same rules as for any replica's write: the highest stamp wins, a
    /// delete is a tombstone. `Ok(true)` if it won here (it is then sent to
    /// every replica, as this replica's write: its writer is this replica's
    /// name, its stamp the one given); `Ok(false)` if this replica holds
    /// that write already or a higher one (read it with
    /// [`StateMap::stamped`]). Refused like a write of this replica (key,
    /// size, owner), and with `Stamp` when the stamp is more than
    /// `max_drift` ahead of this replica's clock or before the tombstone
    /// horizon.
    pub async fn merge(
        &self,
        key: &str,
        value: Option<Bytes>,
        stamp: Stamp,
    ) -> Result<bool, StateError> {
        let shared = &self.shared;
        self.check_write(key, value.as_ref())?;
        if stamp.physical_ns < shared.horizon() {
            return Err(StateError::new(
                StateErrorKind::Stamp,
                format!("a write of {key:?} stamped {stamp}, before the tombstone horizon"),
            ));
        }
        if let Err(far) = shared.clock.observe(stamp) {
            return Err(StateError::new(
                StateErrorKind::Stamp,
                format!(
                    "a write of {key:?} stamped {:?} ahead of this replica's clock; at most max_drift = {:?}",
                    far.ahead, shared.config.max_drift
                ),
            ));
        }
        self.put(key, value, stamp).await
    }

    /// Refuses a write this replica may not make: closed, key, size, owner.
    fn check_write(&self, key: &str, value: Option<&Bytes>) -> Result<(), StateError> {
        let shared = &self.shared;
        if shared.stopped.load(Ordering::Acquire) {
            return Err(StateError::new(
                StateErrorKind::Closed,
                "the map was closed",
            ));
        }
        if shared.emitter.aether().is_closed() {
            return Err(StateError::new(
                StateErrorKind::Closed,
                "the aether was closed",
            ));
        }
        shared.check_key(key)?;
        if let Some(value) = value
            && value.len() > shared.config.max_value_bytes
        {
            return Err(StateError::new(
                StateErrorKind::TooLarge,
                format!(
                    "a value of {} bytes for {key:?}; at most max_value_bytes = {}",
                    value.len(),
                    shared.config.max_value_bytes
                ),
            ));
        }
        if let Some(owner) = store::owner_of(key)
            && owner != shared.node_name.as_str()
        {
            return Err(StateError::new(
                StateErrorKind::NotOwner,
                format!(
                    "{key:?} belongs to node {owner:?}; this replica is {:?}",
                    shared.node_name
                ),
            ));
        }
        Ok(())
    }

    /// Applies a checked write here and, if it won, sends it and waits for
    /// the ledger as the settings ask. Whether it won.
    async fn put(&self, key: &str, value: Option<Bytes>, stamp: Stamp) -> Result<bool, StateError> {
        let shared = &self.shared;
        let entry = Entry {
            stamp,
            value,
            writer: shared.node_name.clone(),
        };
        // One copy of the key, inline up to 23 bytes (shared beyond):
        // the store, the unacknowledged writes and the queue each hold it.
        let key = SmolStr::new(key);
        let logged = match shared.apply(key.clone(), entry.clone(), false, true) {
            Applied::Won(logged) => {
                shared.wrote(key.clone(), stamp);
                shared.flushes.wrote();
                logged
            }
            Applied::Stale => return Ok(false),
            Applied::Full(cap, _) => return Err(shared.full(&key, cap)),
        };
        // Sent by the replica's task: changes made while one message goes
        // out leave together in the next.
        shared.queue_change(key, entry).await;
        match (logged, &shared.ledger) {
            (Some(Err(error)), Some(_)) => {
                return Err(StateError::new(StateErrorKind::Ledger, error));
            }
            (Some(Ok(seq)), Some(durable)) if shared.config.sync_writes => {
                durable
                    .synced(seq)
                    .await
                    .map_err(|error| StateError::new(StateErrorKind::Ledger, error))?;
            }
            _ => {}
        }
        // The last send of this replica's changes failed: this one is kept
        // and queued, and the writer hears that they are not leaving.
        if let Some(error) = shared.send_failing() {
            return Err(StateError::new(
                StateErrorKind::NotSent,
                format!(
                    "changes of map {:?} are not leaving ({error}); this write is kept here and sent when the medium takes it, or by anti-entropy",
                    shared.map
                ),
            ));
        }
        Ok(true)
    }

    /// The value of `key`, if it is set.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.shared.lock_store().get(key).cloned()
    }

    /// The value of `key` as JSON of type `T`; `Payload` if it is not.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StateError> {
        self.get(key)
            .map(|bytes| serde_json::from_slice(&bytes))
            .transpose()
            .map_err(|e| {
                StateError::new(
                    StateErrorKind::Payload,
                    format!(
                        "the value of {key:?} in map {:?} is not a {}: {e}",
                        self.shared.map,
                        std::any::type_name::<T>()
                    ),
                )
            })
    }

    /// The stamp and writer of `key`'s current entry (a tombstone too).
    pub fn stamp_of(&self, key: &str) -> Option<(Stamp, String)> {
        self.shared
            .lock_store()
            .entry(key)
            .map(|e| (e.stamp, e.writer.to_string()))
    }

    /// The entry of `key` with its stamp, a tombstone too.
    pub fn stamped(&self, key: &str) -> Option<Stamped> {
        self.shared.lock_store().entry(key).map(|e| Stamped {
            key: key.to_string(),
            value: e.value.clone(),
            stamp: e.stamp,
            writer: e.writer.to_string(),
        })
    }

    /// Every entry with its stamp, tombstones included, in key order: what
    /// a replica that is not on the bus needs to merge its own writes.
    pub fn stamped_entries(&self) -> Vec<Stamped> {
        self.shared
            .lock_store()
            .entries()
            .map(|(k, e)| Stamped {
                key: k.to_string(),
                value: e.value.clone(),
                stamp: e.stamp,
                writer: e.writer.to_string(),
            })
            .collect()
    }

    /// Every key set and its value, in key order.
    pub fn entries(&self) -> Vec<(String, Bytes)> {
        self.shared
            .lock_store()
            .entries()
            .filter_map(|(k, e)| e.value.as_ref().map(|v| (k.to_string(), v.clone())))
            .collect()
    }

    /// Keys set.
    pub fn len(&self) -> usize {
        self.shared.lock_store().len()
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every change applied from now on to a key that `pattern` matches
    /// (the channel grammar: `living.*`, `>`; a key that is no channel, such
    /// as one with spaces, is matched by `*` and `>` only, or by itself).
    pub fn watch(&self, pattern: &str) -> Watch {
        Watch {
            pattern: Channel::new(pattern),
            raw: pattern.to_string(),
            changes: Lossy {
                inner: BroadcastStream::new(self.shared.changes.subscribe()),
                shared: self.shared.clone(),
                missed: 0,
            },
        }
    }

    /// This replica's writes that a higher stamp overwrote, from now on.
    pub fn superseded(&self) -> impl Stream<Item = Superseded> + Send + Unpin + 'static {
        Lossy {
            inner: BroadcastStream::new(self.shared.superseded.subscribe()),
            shared: self.shared.clone(),
            missed: 0,
        }
    }

    /// Joins and leaves of the map's replicas, from now on.
    pub fn presence(&self) -> impl Stream<Item = Presence> + Send + Unpin + 'static {
        Lossy {
            inner: BroadcastStream::new(self.shared.presence.subscribe()),
            shared: self.shared.clone(),
            missed: 0,
        }
    }

    /// The live replicas of this map (their node names), this one aside.
    pub fn peers(&self) -> Vec<String> {
        self.shared.lock_members().names()
    }

    /// [`peers`](Self::peers), each with whether it keeps the map for
    /// others (a [`Keeper`]'s replica, such as `aether node`'s): a keeper
    /// says so to each replica it meets. Sorted, each pair once.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use aether_core::{Aether, config::StateConfig, state::{Keeper, StateMap}};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let mut config = StateConfig { dir: Some(dir.path().into()), ..Default::default() };
    /// config.keeper.maps = vec!["*".into()];
    /// let aether = Aether::default();
    /// let _keeper = Keeper::start_with(&aether, "pi", config).await?;
    /// let sensor = StateMap::builder("sensors").node("kitchen").open(&aether).await?;
    /// let monitor = StateMap::builder("sensors").node("monitor").open(&aether).await?;
    /// // A map earns a keeper with a write.
    /// sensor.set("kitchen.temp", "21.5").await?;
    /// let keeper = ("pi".to_string(), true);
    /// let told = async {
    ///     while !monitor.peer_roles().contains(&keeper) || !sensor.peer_roles().contains(&keeper) {
    ///         tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    ///     }
    /// };
    /// tokio::time::timeout(std::time::Duration::from_secs(10), told).await?;
    /// assert_eq!(monitor.peer_roles(), [("kitchen".to_string(), false), keeper]);
    /// assert_eq!(monitor.peers(), ["kitchen", "pi"]);
    /// # Ok(()) }
    /// ```
    pub fn peer_roles(&self) -> Vec<(String, bool)> {
        self.shared.lock_members().roles()
    }

    /// Waits until a change to `key` is applied here (from now on).
    pub async fn changed(&self, key: &str) {
        let mut watch = self.watch(key);
        let _ = futures_util::StreamExt::next(&mut watch).await;
    }

    /// What the replica did, counted.
    pub fn stats(&self) -> StateStats {
        self.shared.stats()
    }

    /// Says goodbye to the peers (they see it leave at once) and stops,
    /// closing its ledger (the state directory is free for another
    /// replica). Returns once the goodbye left this process (up to a second
    /// while the connection is down), so a program may exit right after.
    /// With a state directory, when the records since the ledger's last
    /// snapshot are at least a quarter of the next one's due, the map is
    /// written as a snapshot first (the time to write it once), so that
    /// the next opening reads the snapshot alone.
    pub async fn close(&self) {
        self.shared.send_outgoing().await;
        self.shared.say_goodbye().await;
        self.shared.stop();
        // Off the map's channels (the catch-up group among them) before
        // `close` returns, the goodbye and the leaving sent: a catch-up
        // asked right after goes to a replica still open.
        let task = self
            .shared
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        let _ = self
            .shared
            .emitter
            .aether()
            .flush(Duration::from_secs(1))
            .await;
        // The ledger's directory is free for a replica opened again, in
        // this process too.
        if let Some(ledger) = &self.shared.ledger {
            let store = self.shared.lock_store();
            ledger.ledger().close(&store);
        }
    }
}

impl fmt::Debug for StateMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateMap")
            .field("map", &self.shared.map)
            .field("node", &self.shared.node_name)
            .field("keys", &self.len())
            .finish()
    }
}

/// A repair's last chunk of `bucket` came. What a catch-up awaits: `None`
/// before anything happened; `(0, buckets)` the buckets whose last chunk
/// came before the peer's answer listed them; `(node, buckets)` the buckets
/// still awaited from the peer that answered.
fn note_last_chunk(pending: &mut Option<(u64, HashSet<u8>)>, bucket: u8) {
    match pending {
        // The answer to the catch-up is still on its way: noted, to be
        // taken off what it will list.
        None => *pending = Some((0, HashSet::from([bucket]))),
        Some((0, arrived)) => {
            arrived.insert(bucket);
        }
        // The answer came: one bucket fewer awaited.
        Some((_, left)) => {
            left.remove(&bucket);
        }
    }
}

/// The peer `node` answered a catch-up with `buckets`: what is still
/// awaited, less what came already. `false` when nothing is.
fn await_buckets(pending: &mut Option<(u64, HashSet<u8>)>, node: u64, buckets: Vec<u8>) -> bool {
    let arrived = match pending.take() {
        Some((0, arrived)) => arrived,
        _ => HashSet::new(),
    };
    let left: HashSet<u8> = buckets
        .into_iter()
        .filter(|b| !arrived.contains(b))
        .collect();
    if left.is_empty() {
        return false;
    }
    *pending = Some((node.max(1), left));
    true
}

#[cfg(test)]
mod tests {
    use super::{watch::watch_wants, *};

    #[test]
    fn a_watch_hears_keys_by_the_channel_grammar() {
        let hears = |raw: &str, key: &str| watch_wants(raw, &Channel::new(raw), key);
        assert!(hears("living.*", "living.temp"));
        // A trailing wildcard takes one token or more, as on channels.
        assert!(hears("living.*", "living.temp.max"));
        assert!(hears("living.*.max", "living.temp.max"));
        assert!(!hears("living.*.max", "living.temp.min"));
        assert!(!hears("living.*", "living"));
        assert!(!hears("kitchen.*", "living.temp"));
        assert!(hears("*", "living.temp"));
        assert!(hears(">", "living.temp"));
        // A key that is no channel: its exact text, `*` or `>` only.
        for key in ["bad key with spaces", "a..b", "a.*", ".x"] {
            assert!(hears(key, key), "{key}");
            assert!(hears("*", key), "{key}");
            assert!(hears(">", key), "{key}");
            assert!(!hears("bad.*", key), "{key}");
            assert!(!hears("bad", key), "{key}");
        }
    }

    #[test]
    fn repairs_that_come_before_the_answer_count_for_it() {
        // Two buckets' last chunks come first, then the answer lists three.
        let mut pending = None;
        note_last_chunk(&mut pending, 4);
        note_last_chunk(&mut pending, 9);
        assert!(await_buckets(&mut pending, 77, vec![4, 9, 12]));
        assert_eq!(pending, Some((77, HashSet::from([12]))));
        note_last_chunk(&mut pending, 12);
        assert_eq!(pending, Some((77, HashSet::new())));
        // Everything came first: nothing to await.
        let mut early = None;
        for b in [1, 2] {
            note_last_chunk(&mut early, b);
        }
        assert!(!await_buckets(&mut early, 5, vec![2, 1]));
    }
}
