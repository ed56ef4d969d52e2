//! Acknowledged writes: a writer asks the map's other replicas to take its
//! writes and say so, and waits until enough of them (or a keeper) did.
//!
//! [`StateMap::flush`] sends this replica's writes that no replica has
//! acknowledged yet as a [`Message::Hold`] on the map's hold channel
//! (`_state.<map>.k`), again and again until the deadline; each replica
//! that hears it merges the entries as live changes (the same checks) and
//! answers [`Message::Held`] on the writer's repair channel once they are
//! applied, and written to its ledger when it has one. A replica that
//! refuses one (its map is full, a stamp out of range) says why; the flush
//! fails with that reason once the members that have not answered could
//! no longer make up what it waits for (another keeper with room may hold
//! what a full one refused), or at its deadline.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, MutexGuard},
    time::Duration,
};

use smol_str::SmolStr;
use tokio::sync::mpsc;

use super::{
    Refusal, Shared, StateError, StateErrorKind, StateMap,
    codec::{self, HELD_ALL, HELD_NOT_KEPT, HELD_NOT_LOGGED, HELD_NOTHING, KNOCK_TOKEN, Message},
    node_id,
    store::Entry,
};

/// How many acknowledgements a flush waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HeldBy {
    /// Other replicas, keepers counted.
    pub replicas: usize,
    /// Of which keepers (replicas that keep the map on their disk for
    /// others: `aether node`, a gateway with `[aether.state.keeper]`).
    pub keepers: usize,
}

impl HeldBy {
    /// One other replica, a keeper or not: what [`StateMap::flush`] waits
    /// for.
    pub const ONE: HeldBy = HeldBy {
        replicas: 1,
        keepers: 0,
    };

    /// `n` other replicas, keepers or not.
    pub fn replicas(n: usize) -> HeldBy {
        HeldBy {
            replicas: n,
            keepers: 0,
        }
    }

    /// `n` keepers.
    pub fn keepers(n: usize) -> HeldBy {
        HeldBy {
            replicas: n,
            keepers: n,
        }
    }

    fn met(&self, acks: &HashMap<u64, Ack>) -> bool {
        let keepers = acks.values().filter(|a| a.keeper).count();
        acks.len() >= self.replicas && keepers >= self.keepers
    }
}

impl Default for HeldBy {
    fn default() -> Self {
        HeldBy::ONE
    }
}

/// What a flush waited for.
///
/// Flushes of one replica take turns, and a turn sends every write still
/// waiting: a flush whose writes another's turn took (many writers in
/// flight) ends with that turn, told who acknowledged it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// This replica's writes it waited for: those its turn sent, or those
    /// of the turn that took its writes while it waited; 0 when none was
    /// waiting.
    pub writes: usize,
    /// The replicas that acknowledged them all, by name (each once): for
    /// writes another flush's turn took, or none waiting, those that
    /// acknowledged the last turn that held them (none if no write was
    /// ever held).
    pub by: Vec<String>,
    /// How many of them are keepers.
    pub keepers: usize,
}

/// This replica's writes a flush may yet have to send, by key: those no
/// replica acknowledged apart from those some did, so that a flush looks
/// over the first alone while each of the others is held as it asks (a
/// replica that wrote many keys does not look them all over at each
/// flush).
#[derive(Default)]
pub(super) struct Unacked {
    /// Acknowledged by none yet.
    fresh: Keyed,
    /// Acknowledged by some.
    some: Keyed,
    /// How many of `some` are held by how many (replicas, keepers): a
    /// few levels at most.
    levels: Vec<((usize, usize), usize)>,
    /// Writes made: the keys held are compared with the writes kept once
    /// every [`LOOK_EVERY`] ([`Shared::wrote`]).
    writes: u64,
}

/// Writes kept past twice the keys held before those no longer in the map
/// are looked for ([`Unacked::forget_gone`]).
pub(super) const FORGET_AFTER: usize = 1024;

/// Writes between two comparisons of the writes kept with the keys held.
const LOOK_EVERY: u64 = 256;

type Keyed = HashMap<SmolStr, Acked, foldhash::fast::RandomState>;

impl Unacked {
    /// A write of this replica won here: none acknowledged it yet.
    pub(super) fn wrote(&mut self, key: SmolStr, stamp: super::Stamp) {
        self.writes += 1;
        if !self.some.is_empty()
            && let Some(old) = self.some.remove(key.as_str())
        {
            count(&mut self.levels, &old, false);
        }
        let fresh = Acked {
            stamp,
            replicas: 0,
            keepers: 0,
        };
        self.fresh.insert(key, fresh);
    }

    fn len(&self) -> usize {
        self.fresh.len() + self.some.len()
    }

    /// The writes that `want` asks more acknowledgements of.
    fn short_of(&self, want: HeldBy) -> impl Iterator<Item = (&SmolStr, &Acked)> {
        let some_short = self
            .levels
            .iter()
            .any(|((replicas, keepers), _)| *replicas < want.replicas || *keepers < want.keepers);
        let some = some_short.then(|| {
            self.some.iter().filter(move |(_, acked)| {
                acked.replicas < want.replicas || acked.keepers < want.keepers
            })
        });
        self.fresh.iter().chain(some.into_iter().flatten())
    }

    /// Forgets `key`'s write.
    fn remove(&mut self, key: &str) {
        if self.fresh.remove(key).is_none()
            && let Some(old) = self.some.remove(key)
        {
            count(&mut self.levels, &old, false);
        }
    }

    /// Forgets the writes no longer in `store` as this replica wrote them
    /// (overwritten by a higher stamp, a tombstone collected) once they may
    /// outnumber twice the keys held and [`FORGET_AFTER`]: writes still in
    /// the map are at most the keys held, so a look forgets at least half
    /// of what it looks at, and a replica that wrote many keys still held
    /// is never looked over for it.
    fn forget_gone(&mut self, store: &super::store::Store) {
        if self.len() > 2 * store.held() + FORGET_AFTER {
            self.retain(|key, acked| store.entry(key).is_some_and(|e| e.stamp == acked.stamp));
        }
    }

    /// Keeps the writes `keep` says to.
    fn retain(&mut self, mut keep: impl FnMut(&str, &Acked) -> bool) {
        self.fresh.retain(|key, acked| keep(key, acked));
        let levels = &mut self.levels;
        self.some.retain(|key, acked| {
            let kept = keep(key, acked);
            if !kept {
                count(levels, acked, false);
            }
            kept
        });
    }

    /// Notes that `replicas` replicas, `keepers` of them keepers, hold
    /// `key`'s write stamped `stamp` (unless written again since).
    fn acknowledged(&mut self, key: &str, stamp: super::Stamp, replicas: usize, keepers: usize) {
        if replicas == 0 {
            return;
        }
        if self
            .fresh
            .get(key)
            .is_some_and(|acked| acked.stamp == stamp)
            && let Some((key, _)) = self.fresh.remove_entry(key)
        {
            let acked = Acked {
                stamp,
                replicas,
                keepers,
            };
            count(&mut self.levels, &acked, true);
            self.some.insert(key, acked);
        } else if let Some(acked) = self.some.get_mut(key)
            && acked.stamp == stamp
            && (replicas > acked.replicas || keepers > acked.keepers)
        {
            count(&mut self.levels, acked, false);
            acked.replicas = acked.replicas.max(replicas);
            acked.keepers = acked.keepers.max(keepers);
            count(&mut self.levels, acked, true);
        }
    }
}

/// Counts `acked` in (or out of) its level in `levels`.
fn count(levels: &mut Vec<((usize, usize), usize)>, acked: &Acked, add: bool) {
    let at = (acked.replicas, acked.keepers);
    match levels.iter().position(|(level, _)| *level == at) {
        Some(i) if add => levels[i].1 += 1,
        Some(i) => {
            levels[i].1 -= 1;
            if levels[i].1 == 0 {
                levels.swap_remove(i);
            }
        }
        None if add => levels.push((at, 1)),
        None => {}
    }
}

/// A write of this replica and the most replicas (and keepers) that
/// acknowledged it so far.
#[derive(Clone, Copy, Debug)]
pub(super) struct Acked {
    pub(super) stamp: super::Stamp,
    pub(super) replicas: usize,
    pub(super) keepers: usize,
}

/// One replica's acknowledgement of a hold.
#[derive(Clone, Debug)]
pub(super) struct Ack {
    pub(super) name: SmolStr,
    pub(super) keeper: bool,
    pub(super) refused: u8,
}

/// A replica's flushes. Those that ask for the same acknowledgements take
/// turns: each turn sends every write of the replica still waiting, so
/// the flushes that waited meanwhile find theirs held and end without a
/// hold of their own. The writes of many writers in flight are thus
/// acknowledged together, one hold a turn, as a ledger's fsyncs group its
/// writes. Two turns may be under way at once ([`TURNS_AT_ONCE`]): the
/// writers whose flushes one turn ended write again while the next waits
/// for its answer, and their turn starts then. Flushes that ask for other
/// acknowledgements (a replica, a keeper) take turns apart: one never
/// waits for another's.
#[derive(Default)]
pub(super) struct Flushes {
    /// The holds waiting: each hold's token and where its
    /// acknowledgements go.
    waiting: std::sync::Mutex<HashMap<u64, mpsc::UnboundedSender<(u64, Ack)>>>,
    /// Writes made by this replica so far, counted once each is among its
    /// unacknowledged writes (or, before its first flush, in the map, where
    /// [`Shared::track`] finds it): a flush waits for those made before it.
    written: std::sync::atomic::AtomicU64,
    /// The turns of each [`HeldBy`] asked for.
    lanes: std::sync::Mutex<HashMap<HeldBy, Arc<Lane>>>,
    /// Told when the map closes: the flushes waiting end.
    closed: tokio::sync::Notify,
    /// Whether this replica keeps its writes among the unacknowledged
    /// ones: from its first flush on ([`Shared::track`]). Before, a write
    /// costs no bookkeeping and the map itself says which writes are this
    /// replica's.
    tracking: std::sync::atomic::AtomicBool,
}

/// The turns of the flushes that ask for one [`HeldBy`].
struct Lane {
    /// A permit each turn under way: at most [`TURNS_AT_ONCE`].
    turn: tokio::sync::Semaphore,
    /// Told when a turn ends, however it ended: the flushes waiting look
    /// whether it took their writes, and one of those it did not starts
    /// the next.
    ended: tokio::sync::Notify,
    state: std::sync::Mutex<LaneState>,
}

#[derive(Default)]
struct LaneState {
    /// Turns ended so far.
    turns: u64,
    /// The last turn that was acknowledged.
    last: Option<Turn>,
    /// The last turn, if a replica refused its writes: its number, how
    /// far its writes went, and the refusal (what a flush that waited
    /// for those writes during it is told too).
    refused: Option<(u64, u64, StateErrorKind, String)>,
}

/// A flush's turn, until it ends: then the flushes waiting are told.
struct TurnEnds<'a> {
    lane: &'a Lane,
    turn: Option<tokio::sync::SemaphorePermit<'a>>,
}

impl Drop for TurnEnds<'_> {
    fn drop(&mut self) {
        self.lane.lock().turns += 1;
        // Let go first: a flush told must find the turn free.
        self.turn.take();
        self.lane.ended.notify_waiters();
    }
}

/// A turn acknowledged: every write of the replica up to `upto` (in
/// [`Flushes::written`]'s count) is held as `want` asked.
#[derive(Clone)]
struct Turn {
    want: HeldBy,
    upto: u64,
    held: Held,
}

impl Flushes {
    /// Counts a write of this replica, after it went among its
    /// unacknowledged writes (or, before the first flush, into the map).
    pub(super) fn wrote(&self) {
        self.written
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    fn written(&self) -> u64 {
        self.written.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The map closed: the flushes waiting end with `Closed`.
    pub(super) fn close(&self) {
        self.closed.notify_waiters();
    }

    fn lane(&self, want: HeldBy) -> Arc<Lane> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(lanes.entry(want).or_default())
    }

    /// What the last turn of any lane was told, if it held every write up
    /// to `upto` as `want` asks (or more).
    fn covered(&self, want: HeldBy, upto: u64) -> Option<Held> {
        // A lane's state is never held while the lanes are looked up, so
        // both are held here in that order.
        let lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        lanes
            .values()
            .find_map(|lane| lane.lock().covers(want, upto))
    }
}

impl Default for Lane {
    fn default() -> Self {
        Lane {
            turn: tokio::sync::Semaphore::new(TURNS_AT_ONCE),
            ended: tokio::sync::Notify::new(),
            state: std::sync::Mutex::default(),
        }
    }
}

impl LaneState {
    /// A turn that took this replica's writes up to `upto` was held as
    /// `want` asked. Turns under way together may end in either order:
    /// the one that took the most writes stands, and it ends a refusal of
    /// no more writes than it took.
    fn held(&mut self, want: HeldBy, upto: u64, held: &Held) {
        if self.last.as_ref().is_none_or(|last| last.upto <= upto) {
            self.last = Some(Turn {
                want,
                upto,
                held: held.clone(),
            });
        }
        if self
            .refused
            .as_ref()
            .is_some_and(|(_, refused_upto, ..)| *refused_upto <= upto)
        {
            self.refused = None;
        }
    }

    /// A turn that took the writes up to `upto` was refused.
    fn refused(&mut self, upto: u64, error: &StateError) {
        self.refused = Some((self.turns, upto, error.kind(), error.message().to_string()));
    }

    /// The refusal a flush that waited from `since` turns ended on, for
    /// the writes up to `mine`, shares: a turn ended meanwhile took them
    /// and was refused.
    fn refusal_of(&self, since: u64, mine: u64) -> Option<StateError> {
        let (turn, upto, kind, why) = self.refused.as_ref()?;
        (*turn >= since && *upto >= mine).then(|| StateError::new(*kind, why.clone()))
    }

    /// What the last held turn was told, if it took every write up to
    /// `upto` and `want` asks no more than it did.
    fn covers(&self, want: HeldBy, upto: u64) -> Option<Held> {
        let turn = self.last.as_ref()?;
        (turn.upto >= upto
            && turn.want.replicas >= want.replicas
            && turn.want.keepers >= want.keepers)
            .then(|| turn.held.clone())
    }
}

impl Lane {
    fn lock(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Turns of one lane under way at once: a turn starts while the last is
/// still waiting for its acknowledgements, so a write waits for about one
/// crossing to the acknowledging replicas and back, not two.
const TURNS_AT_ONCE: usize = 2;

/// The first resend of a hold, then doubling.
const FIRST_RESEND: Duration = Duration::from_millis(100);
/// The longest time between two sends of a hold.
const LAST_RESEND: Duration = Duration::from_secs(1);

impl StateMap {
    /// Waits until another replica of the map (a keeper or not) holds every
    /// write this replica made that none acknowledged yet, up to `timeout`:
    /// `NotHeld` if none said so in time (the writes stay here and spread
    /// as usual; a later flush sends them again). A replica that refuses a
    /// write fails it with its reason (`Full` when its map is full) once
    /// the members that have not answered could not make up for it (a
    /// second keeper with room holds what a full one refused), or at the
    /// deadline; `Closed` on a closed map.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use aether_core::{Aether, state::StateMap};
    ///
    /// let aether = Aether::default();
    /// let keeper = StateMap::open(&aether, "home").await?;
    /// let script = StateMap::open(&aether, "home").await?;
    /// script.set("hall.light", "on").await?;
    /// let held = script.flush(Duration::from_secs(2)).await?;
    /// assert_eq!(held.writes, 1);
    /// assert_eq!(keeper.get("hall.light").as_deref(), Some(&b"on"[..]));
    /// # Ok(()) }
    /// ```
    pub async fn flush(&self, timeout: Duration) -> Result<Held, StateError> {
        self.flush_to(HeldBy::ONE, timeout).await
    }

    /// [`flush`](Self::flush), waiting for `want` acknowledgements: several
    /// replicas, or keepers. A write is sent again until as many replicas
    /// and keepers as asked acknowledged it, whatever an earlier flush
    /// waited for. `Config` if `want` asks for no replica, or for more
    /// keepers than replicas.
    pub async fn flush_to(&self, want: HeldBy, timeout: Duration) -> Result<Held, StateError> {
        let shared = &self.shared;
        if shared.stopped.load(std::sync::atomic::Ordering::Acquire) {
            return Err(StateError::new(
                StateErrorKind::Closed,
                "the map was closed",
            ));
        }
        if want.replicas == 0 || want.keepers > want.replicas {
            return Err(StateError::new(
                StateErrorKind::Config,
                format!(
                    "a flush waits for at least one replica, keepers among them: {} replicas \
                     of which {} keepers",
                    want.replicas, want.keepers
                ),
            ));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let flushes = &shared.flushes;
        // This flush waits for the writes made so far: done if a turn
        // took them all already.
        let mine = flushes.written();
        if let Some(held) = flushes.covered(want, mine) {
            // None was waiting: held already, by those.
            return Ok(Held { writes: 0, ..held });
        }
        // A turn at a time in a lane, or two ([`Flushes`]); another
        // flush's turn may take these writes meanwhile.
        let lane = flushes.lane(want);
        let closed = flushes.closed.notified();
        let mut closed = std::pin::pin!(closed);
        closed.as_mut().enable();
        let since = lane.lock().turns;
        let _turn = loop {
            let ended = lane.ended.notified();
            let mut ended = std::pin::pin!(ended);
            ended.as_mut().enable();
            if shared.stopped.load(std::sync::atomic::Ordering::Acquire) {
                return Err(StateError::new(
                    StateErrorKind::Closed,
                    "the map was closed while the flush waited",
                ));
            }
            if let Some(held) = flushes.covered(want, mine) {
                return Ok(held);
            }
            if let Some(refusal) = lane.lock().refusal_of(since, mine) {
                // A turn that took these writes while this flush waited
                // was refused: so are they.
                return Err(refusal);
            }
            if let Ok(turn) = lane.turn.try_acquire() {
                break TurnEnds {
                    lane: &lane,
                    turn: Some(turn),
                };
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    let waiting = shared.unacked_entries(want).0.len();
                    return Err(shared.not_held(want, &HashMap::new(), waiting, timeout));
                }
                () = &mut ended => {}
                () = &mut closed => {}
            }
        };
        if lane.turn.available_permits() + 1 < TURNS_AT_ONCE {
            // Another turn is under way: the flushes woken with this one
            // (the writers its end told) write first, and this turn takes
            // their writes too.
            tokio::task::yield_now().await;
        }
        // The writes still queued leave (together) before the hold that
        // names them; a flush whose writes a turn took sends nothing.
        shared.send_outgoing().await;
        let (waiting, upto) = shared.unacked_entries(want);
        if waiting.is_empty() {
            let last = lane.lock().last.clone();
            return Ok(last.map_or_else(Held::default, |turn| Held {
                writes: 0,
                ..turn.held
            }));
        }
        let mut held = Held {
            writes: waiting.len(),
            ..Held::default()
        };
        let mut by: HashMap<u64, Ack> = HashMap::new();
        // A chunk fits in one second of a receiver's rate for this writer.
        let most = (shared.config.max_writes_per_s as usize).clamp(1, codec::MAX_ENTRIES);
        for chunk in chunks(waiting, shared.config.max_value_bytes, most) {
            let acks = match shared
                .hold(&chunk, held.writes, want, deadline, timeout, &mut closed)
                .await
            {
                Ok(acks) => acks,
                Err(error) => {
                    if !matches!(
                        error.kind(),
                        StateErrorKind::NotHeld | StateErrorKind::Closed
                    ) {
                        lane.lock().refused(upto, &error);
                    }
                    return Err(error);
                }
            };
            let keepers = acks.values().filter(|a| a.keeper).count();
            shared.acknowledged(&chunk, acks.len(), keepers);
            if by.is_empty() {
                by = acks;
            } else {
                by.retain(|node, _| acks.contains_key(node));
            }
        }
        held.keepers = by.values().filter(|a| a.keeper).count();
        held.by = by.into_values().map(|a| a.name.to_string()).collect();
        held.by.sort();
        lane.lock().held(want, upto, &held);
        Ok(held)
    }

    /// How many writes of this replica no other replica acknowledged yet.
    pub fn unacknowledged(&self) -> usize {
        let shared = &self.shared;
        let mut unacked = shared.lock_unacked();
        shared.track(&mut unacked);
        let store = shared.lock_store();
        unacked
            .fresh
            .iter()
            .filter(|(key, a)| store.entry(key).is_some_and(|e| e.stamp == a.stamp))
            .count()
    }
}

/// Entries in chunks a message carries (a repair, a hold), `most`
/// entries each at most; one chunk, maybe empty, at least.
pub(super) fn chunks(
    entries: Vec<(SmolStr, Entry)>,
    max_value_bytes: usize,
    most: usize,
) -> Vec<Vec<(SmolStr, Entry)>> {
    let budget = max_value_bytes.max(64 * 1024) * 4;
    let mut out = vec![Vec::new()];
    let mut size = 0;
    for (key, entry) in entries {
        let cost = key.len() + entry.value.as_ref().map_or(0, |v| v.len()) + 64;
        let last = out.last_mut().expect("one");
        if !last.is_empty() && (size + cost > budget || last.len() >= most) {
            out.push(Vec::new());
            size = 0;
        }
        size += cost;
        out.last_mut().expect("one").push((key, entry));
    }
    out
}

/// Forgets a flush's token when it ends, however it ends.
struct Waiting<'a> {
    shared: &'a Shared,
    token: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.shared.lock_flushes().remove(&self.token);
    }
}

impl Shared {
    pub(super) fn lock_unacked(&self) -> MutexGuard<'_, Unacked> {
        self.unacked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_flushes(&self) -> MutexGuard<'_, HashMap<u64, mpsc::UnboundedSender<(u64, Ack)>>> {
        self.flushes
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// This replica's writes not yet acknowledged as `want` asks, as held
    /// now (a write a higher stamp overwrote since is no longer this
    /// replica's to hold, and is forgotten), and how many writes this
    /// replica had made then (all of them among those or acknowledged).
    ///
    /// The store is read for the writes still short of `want` alone (those
    /// held as asked are not looked over); the others, gone from the map
    /// since, are forgotten as [`Unacked::forget_gone`] says.
    pub(super) fn unacked_entries(&self, want: HeldBy) -> (Vec<(SmolStr, Entry)>, u64) {
        let mut unacked = self.lock_unacked();
        self.track(&mut unacked);
        // Read under the lock every write takes to join the unacknowledged
        // ones, after the look at the map: the writes counted are all
        // there.
        let upto = self.flushes.written();
        let store = self.lock_store();
        unacked.forget_gone(&store);
        let mut waiting = Vec::new();
        let mut overwritten = Vec::new();
        for (key, acked) in unacked.short_of(want) {
            match store.entry(key) {
                Some(entry) if entry.stamp == acked.stamp => {
                    waiting.push((key.clone(), entry.clone()));
                }
                _ => overwritten.push(key.clone()),
            }
        }
        for key in overwritten {
            unacked.remove(&key);
        }
        (waiting, upto)
    }

    /// A write of this replica won here: it waits for a flush. A replica
    /// that never flushes would keep every key it ever wrote, so every
    /// [`LOOK_EVERY`] writes it forgets those gone from the map, as a flush
    /// does ([`Unacked::forget_gone`]).
    pub(super) fn wrote(&self, key: SmolStr, stamp: super::Stamp) {
        // Stamped by this replica's clock before its first flush: found in
        // the map when one comes. A write stamped elsewhere (`merge`) is
        // kept at once, the map not saying whose it is.
        if stamp.node == self.clock.node()
            && !self
                .flushes
                .tracking
                .load(std::sync::atomic::Ordering::Acquire)
        {
            return;
        }
        let mut unacked = self.lock_unacked();
        unacked.wrote(key, stamp);
        if unacked.writes.is_multiple_of(LOOK_EVERY) && unacked.len() > FORGET_AFTER {
            unacked.forget_gone(&self.lock_store());
        }
    }

    /// Keeps this replica's writes among the unacknowledged ones from now
    /// on (its first flush, or a count asked of them): those it made
    /// before are the entries of the map stamped by its clock. Under
    /// `unacked`'s lock, as every write that joins them: a write merged
    /// before the look is in the map, one merged after it sees the keeping
    /// on (the store's lock orders the two).
    fn track(&self, unacked: &mut Unacked) {
        use std::sync::atomic::Ordering;
        if self.flushes.tracking.load(Ordering::Acquire) {
            return;
        }
        self.flushes.tracking.store(true, Ordering::Release);
        let node = self.clock.node();
        let store = self.lock_store();
        for (key, entry) in store.entries() {
            if entry.stamp.node == node {
                unacked.wrote(key.clone(), entry.stamp);
            }
        }
    }

    /// Notes that `replicas` replicas, `keepers` of them keepers, hold the
    /// writes of `chunk` (unless written again since).
    fn acknowledged(&self, chunk: &[(SmolStr, Entry)], replicas: usize, keepers: usize) {
        let mut unacked = self.lock_unacked();
        for (key, entry) in chunk {
            unacked.acknowledged(key, entry.stamp, replicas, keepers);
        }
    }

    /// Sends `entries` (a chunk of the flush's `writes`) as a hold until
    /// `want` replicas acknowledged them all, or the deadline.
    async fn hold(
        &self,
        entries: &[(SmolStr, Entry)],
        writes: usize,
        want: HeldBy,
        deadline: tokio::time::Instant,
        timeout: Duration,
        closed: &mut std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    ) -> Result<HashMap<u64, Ack>, StateError> {
        let token = node_id();
        let (tell, mut acks) = mpsc::unbounded_channel();
        self.lock_flushes().insert(token, tell);
        let _waiting = Waiting {
            shared: self,
            token,
        };
        let message = Message::Hold {
            node: self.clock.node(),
            token,
            entries: entries.to_vec(),
        };
        let mut held: HashMap<u64, Ack> = HashMap::new();
        let mut refused: HashMap<u64, Ack> = HashMap::new();
        let send = || async {
            if let Err(error) = self.emit(self.channels.hold.clone(), message.clone()).await {
                tracing::debug!(map = %self.map, %error, "could not send a hold");
            }
        };
        send().await;
        let mut resend = FIRST_RESEND;
        let mut next = tokio::time::Instant::now() + resend;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {
                    send().await;
                    resend = (resend * 2).min(LAST_RESEND);
                    next = tokio::time::Instant::now() + resend;
                }
                ack = acks.recv() => {
                    let Some((node, ack)) = ack else { continue };
                    if ack.refused != HELD_ALL {
                        if held.contains_key(&node) {
                            continue;
                        }
                        let first = refused.is_empty();
                        refused.entry(node).or_insert(ack.clone());
                        if !self.may_yet_hold(want, &held, &refused) {
                            return Err(self.refused_by(&ack, writes));
                        }
                        if first {
                            tracing::debug!(map = %self.map, refused_by = %ack.name, "a replica refused a hold; waiting for the others");
                        }
                        continue;
                    }
                    refused.remove(&node);
                    held.insert(node, ack);
                    if want.met(&held) {
                        return Ok(held);
                    }
                }
                () = closed.as_mut() => {
                    return Err(StateError::new(
                        StateErrorKind::Closed,
                        "the map was closed while the flush waited",
                    ));
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if let Some(ack) = refused.values().next() {
                        return Err(self.refused_by(ack, writes));
                    }
                    return Err(self.not_held(want, &held, writes, timeout));
                }
            }
        }
    }

    /// Whether the members that have answered neither way could still
    /// make up `want` with those that held the writes.
    fn may_yet_hold(
        &self,
        want: HeldBy,
        held: &HashMap<u64, Ack>,
        refused: &HashMap<u64, Ack>,
    ) -> bool {
        let members = self.lock_members();
        let open: Vec<u64> = members
            .roster()
            .into_iter()
            .map(|(node, _)| node)
            .filter(|node| !held.contains_key(node) && !refused.contains_key(node))
            .collect();
        let open_keepers = open.iter().filter(|&&node| members.is_keeper(node)).count();
        let held_keepers = held.values().filter(|a| a.keeper).count();
        held.len() + open.len() >= want.replicas && held_keepers + open_keepers >= want.keepers
    }

    fn refused_by(&self, ack: &Ack, writes: usize) -> StateError {
        let who = if ack.keeper { "keeper" } else { "replica" };
        let (kind, why) = match ack.refused {
            HELD_NOT_LOGGED => (
                StateErrorKind::Ledger,
                "it could not write them to its ledger (its disk is full or failing)".to_string(),
            ),
            HELD_NOTHING => (
                StateErrorKind::NotHeld,
                "it keeps nothing of this map, and a flush of deletes alone opens no map on a \
                 keeper: no keeper's disk holds them"
                    .to_string(),
            ),
            HELD_NOT_KEPT => (
                StateErrorKind::Full,
                "it keeps as many maps as it may (max_maps, or max_maps_per_writer for this \
                 writer) and this map is not one of them"
                    .to_string(),
            ),
            code => match Refusal::ALL.get(usize::from(code).wrapping_sub(1)) {
                Some(Refusal::Full) => (
                    StateErrorKind::Full,
                    "its map is full (max_keys or max_map_bytes), or the maps it keeps are, together (max_bytes)".to_string(),
                ),
                Some(Refusal::Future) => (
                    StateErrorKind::Stamp,
                    "a stamp is ahead of its clock by more than max_drift".to_string(),
                ),
                Some(Refusal::TooOld) => (
                    StateErrorKind::Stamp,
                    "a stamp is older than its tombstone horizon".to_string(),
                ),
                Some(reason) => (StateErrorKind::NotHeld, reason.as_str().to_string()),
                None => (StateErrorKind::NotHeld, format!("reason {code}")),
            },
        };
        StateError::new(
            kind,
            format!(
                "{who} {:?} of map {:?} refused {} of this replica's {writes} writes: {why}",
                ack.name.as_str(),
                self.map,
                if writes == 1 { "one" } else { "some" },
            ),
        )
    }

    fn not_held(
        &self,
        want: HeldBy,
        held: &HashMap<u64, Ack>,
        writes: usize,
        timeout: Duration,
    ) -> StateError {
        let keepers = held.values().filter(|a| a.keeper).count();
        let asked = if want.keepers > 0 {
            format!("{} keeper(s)", want.keepers)
        } else if want.replicas == 1 {
            "a keeper or another replica".to_string()
        } else {
            format!("{} other replicas", want.replicas)
        };
        let fewer = if held.is_empty() {
            "none did: they are held by this replica only, and lost if it stops before another \
             replica takes them"
                .to_string()
        } else {
            format!(
                "{} replica(s), {keepers} keeper(s) of them, did: fewer than asked",
                held.len()
            )
        };
        StateError::new(
            StateErrorKind::NotHeld,
            format!(
                "{asked} of map {:?} did not acknowledge this replica's {writes} write(s) within \
                 {timeout:?}; {fewer}. Run a keeper: `aether keep --dir DIR`, `aether node` \
                 (it keeps every map), or a gateway with [aether.state.keeper] maps; a keeper \
                 that keeps max_maps maps already keeps no new one",
                self.map,
            ),
        )
    }

    /// A writer's hold: merges its entries as live changes and answers
    /// whether they are held here. Not answered when past the writer's
    /// rate (it sends again).
    pub(super) async fn take_hold(
        self: &Arc<Self>,
        source: &str,
        node: u64,
        token: u64,
        entries: Vec<(SmolStr, Entry)>,
    ) {
        // A knock is for keepers not keeping the map yet: a replica has
        // its writes as live changes.
        if token == KNOCK_TOKEN {
            return;
        }
        // Writes new here count against the writer's rate, as live
        // changes do; a hold of writes held already costs one.
        let fresh = {
            let store = self.lock_store();
            entries
                .iter()
                .filter(|(k, e)| store.entry(k).is_none_or(|held| held.stamp < e.stamp))
                .count()
        };
        let n =
            NonZeroU32::new(u32::try_from(fresh).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        if !matches!(
            self.writers.check_key_n(&SmolStr::new(source), n),
            Ok(Ok(_))
        ) {
            self.refuse(Refusal::RateLimited);
            return;
        }
        // Changes its ledger could not write (a full disk) are written
        // again first: a hold is acknowledged only once they are.
        self.retry_unlogged();
        let taken = self.take_entries(source, entries, false);
        if !self.acknowledges {
            return;
        }
        let mut refused = taken.refused.map_or(HELD_ALL, |reason| reason as u8 + 1);
        if taken.not_logged {
            refused = HELD_NOT_LOGGED;
        }
        let answer = Message::Held {
            node: self.clock.node(),
            token,
            keeper: self.keeper,
            refused,
        };
        let channel = self.channels.repair_of(node);
        // With `sync_writes`, held means on the disk: the entries may have
        // come earlier as live changes, so the fsync must cover every
        // record appended so far.
        let last = if self.config.sync_writes {
            self.ledger.as_ref().and_then(|l| l.ledger().last())
        } else {
            None
        };
        match (&self.ledger, taken.logged.max(last)) {
            (Some(ledger), Some(seq)) if self.config.sync_writes && refused == HELD_ALL => {
                // On the disk before it says so, without holding up the
                // map's other waves.
                let (ledger, shared) = (ledger.clone(), self.clone());
                tokio::spawn(async move {
                    let answer = match ledger.synced(seq).await {
                        Ok(()) => answer,
                        Err(_) => Message::Held {
                            node: shared.clock.node(),
                            token,
                            keeper: shared.keeper,
                            refused: HELD_NOT_LOGGED,
                        },
                    };
                    let _ = shared.emit(channel, answer).await;
                });
            }
            _ => {
                if let Err(error) = self.emit(channel, answer).await {
                    tracing::debug!(map = %self.map, %error, "could not acknowledge a hold");
                }
            }
        }
    }

    /// A replica's acknowledgement of one of this replica's holds.
    pub(super) fn take_held(&self, source: &str, node: u64, token: u64, keeper: bool, refused: u8) {
        if let Some(tell) = self.lock_flushes().get(&token) {
            let _ = tell.send((
                node,
                Ack {
                    name: SmolStr::new(source),
                    keeper,
                    refused,
                },
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use proptest::prelude::*;

    use super::{Acked, Held, HeldBy, LaneState, Unacked};
    use crate::state::Stamp;

    #[derive(Clone, Debug)]
    enum Step {
        Write(u8),
        Ack {
            key: u8,
            current: bool,
            replicas: usize,
            keepers: usize,
        },
        Remove(u8),
        Retain(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0u8..6).prop_map(Step::Write),
            4 => (0u8..6, any::<bool>(), 0usize..4, 0usize..3).prop_map(
                |(key, current, replicas, keepers)| Step::Ack {
                    key,
                    current,
                    replicas,
                    keepers: keepers.min(replicas),
                }
            ),
            1 => (0u8..6).prop_map(Step::Remove),
            1 => (0u8..6).prop_map(Step::Retain),
        ]
    }

    fn stamp(n: u64) -> Stamp {
        Stamp {
            physical_ns: n,
            logical: 0,
            node: 1,
        }
    }

    /// A replica that writes keys of its own and does not flush again
    /// after a first count of its unacknowledged writes (a script that
    /// adds jobs and deletes them) keeps a bounded count of writes to
    /// send, however many keys it wrote over its life: those that left the
    /// map (tombstones collected) are forgotten.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_that_stops_flushing_forgets_the_keys_that_left() {
        use std::time::Duration;

        use crate::{
            Aether,
            state::{StateConfig, StateMap},
        };

        let aether = Aether::default();
        let config = StateConfig {
            anti_entropy_interval: Duration::from_millis(20),
            tombstone_horizon: Duration::from_millis(60),
            ..Default::default()
        };
        let map = StateMap::builder("jobs")
            .config(config)
            .open(&aether)
            .await
            .expect("open");
        // Its writes are kept from its first flush, or count, on.
        assert_eq!(map.unacknowledged(), 0);
        let (rounds, per_round) = (8, 1_000);
        for round in 0..rounds {
            for i in 0..per_round {
                let key = format!("job.{round}.{i}");
                map.set(&key, "queued").await.expect("set");
                map.delete(&key).await.expect("delete");
            }
            // Gone from the map once the tombstones are collected.
            let collected = tokio::time::timeout(Duration::from_secs(10), async {
                while map.stats().tombstones > 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            assert!(collected.is_ok(), "round {round}: tombstones not collected");
        }
        let kept = map.shared.lock_unacked().len();
        assert!(
            kept <= 2 * per_round + super::FORGET_AFTER + super::LOOK_EVERY as usize,
            "{kept} writes kept for {} keys written, none left in the map",
            rounds * per_round
        );
        map.close().await;
    }

    /// Until its first flush a replica keeps no list of its writes (a
    /// script that never flushes pays nothing a write for it); the first
    /// flush finds them in the map, those another replica overwrote since
    /// left out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_first_flush_finds_the_writes_made_before_it_in_the_map() {
        use std::time::Duration;

        use crate::{Aether, state::StateMap};

        let aether = Aether::default();
        let a = StateMap::builder("jobs")
            .node("a")
            .open(&aether)
            .await
            .expect("open");
        let b = StateMap::builder("jobs")
            .node("b")
            .open(&aether)
            .await
            .expect("open");
        let n = 500;
        for i in 0..n {
            a.set(&format!("job.{i}"), "queued").await.expect("set");
        }
        a.delete("job.0").await.expect("delete");
        assert_eq!(
            a.shared.lock_unacked().len(),
            0,
            "nothing kept before a flush"
        );
        for i in n - 10..n {
            b.set(&format!("job.{i}"), "taken").await.expect("set");
        }
        tokio::time::timeout(Duration::from_secs(10), async {
            while (n - 10..n).any(|i| a.get(&format!("job.{i}")).as_deref() != Some(&b"taken"[..]))
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("b's writes reach a");
        let held = a.flush(Duration::from_secs(10)).await.expect("held");
        assert_eq!(
            held.writes,
            n - 10,
            "a's writes still a's, the delete among them"
        );
        assert_eq!(held.by, vec!["b".to_string()]);
        assert_eq!(a.unacknowledged(), 0);
        // Kept from now on: a write after it waits for the next flush.
        a.set("job.new", "queued").await.expect("set");
        assert_eq!(a.unacknowledged(), 1);
        assert_eq!(
            a.flush(Duration::from_secs(10)).await.expect("held").writes,
            1
        );
        a.close().await;
        b.close().await;
    }

    /// A flush whose writes came after another flush's hold went out
    /// sends its own without waiting for that one's answer, and a third
    /// waits while two are under way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_turn_starts_while_another_waits_for_its_answer() {
        use std::time::Duration;

        use crate::{
            Aether, Vibrator,
            state::{
                StateErrorKind, StateMap,
                codec::{KNOCK_TOKEN, Limits, Message},
            },
        };

        let aether = Aether::default();
        let mut spy = Vibrator::create("spy", &aether).await.expect("spy");
        spy.resonate_on("_state.turns.k").await.expect("resonate");
        // Alone on the bus: no hold is answered, each is sent again.
        let map = StateMap::open(&aether, "turns").await.expect("open");
        // The next hold of a token not seen yet, with its keys.
        let mut seen = std::collections::HashSet::new();
        let mut next_hold = async |within: Duration| {
            tokio::time::timeout(within, async {
                loop {
                    let wave = spy.receive().await.expect("spy open");
                    let Ok(Message::Hold { token, entries, .. }) =
                        Message::decode(wave.payload_bytes().clone(), &Limits::WIRE)
                    else {
                        panic!("not a hold: {wave:?}");
                    };
                    // A knock (for keepers not keeping the map) is not a turn's.
                    if token != KNOCK_TOKEN && seen.insert(token) {
                        let mut keys: Vec<String> =
                            entries.iter().map(|(k, _)| k.to_string()).collect();
                        keys.sort();
                        return keys;
                    }
                }
            })
            .await
        };
        let flush = |map: &StateMap| {
            let map = map.clone();
            tokio::spawn(async move { map.flush(Duration::from_secs(3)).await })
        };
        map.set("a", "1").await.expect("set");
        let first = flush(&map);
        assert_eq!(
            next_hold(Duration::from_secs(2)).await.expect("first hold"),
            ["a"]
        );
        map.set("b", "1").await.expect("set");
        let second = flush(&map);
        // Well before the first hold's deadline: the second turn is
        // under way beside it, with every write no one acknowledged.
        assert_eq!(
            next_hold(Duration::from_millis(1_000))
                .await
                .expect("a second turn at once"),
            ["a", "b"]
        );
        map.set("c", "1").await.expect("set");
        let third = flush(&map);
        assert!(
            next_hold(Duration::from_millis(500)).await.is_err(),
            "a third turn while two are under way"
        );
        for flush in [first, second, third] {
            let error = flush
                .await
                .expect("flush task")
                .expect_err("no one to hold them");
            assert_eq!(error.kind(), StateErrorKind::NotHeld);
        }
        map.close().await;
    }

    /// How turns of a lane end, in any order.
    #[derive(Clone, Debug)]
    enum Ending {
        /// A turn that took the writes up to this count was held.
        Held(u64),
        /// One that took them was refused.
        Refused(u64),
        /// A turn ended (after its outcome was noted).
        Ended,
    }

    proptest! {
        /// Whatever order turns under way together end in, a flush waiting
        /// for its writes up to `mine` is told held only by the turn that
        /// took the most writes (and at least its), and refused only by the
        /// last refusal, if it took them, ended while the flush waited, and
        /// no turn held as many writes after it.
        #[test]
        fn turns_ending_in_any_order_tell_each_flush_its_own(
            endings in proptest::collection::vec(
                prop_oneof![
                    (0u64..20).prop_map(Ending::Held),
                    (0u64..20).prop_map(Ending::Refused),
                    Just(Ending::Ended),
                ],
                0..40,
            )
        ) {
            let error = crate::state::StateError::new(
                crate::state::StateErrorKind::Full,
                "full",
            );
            let mut state = LaneState::default();
            let (mut most_held, mut refusal): (Option<u64>, Option<(u64, u64)>) = (None, None);
            for ending in endings {
                match ending {
                    Ending::Held(upto) => {
                        let held = Held { writes: upto as usize, ..Held::default() };
                        state.held(HeldBy::ONE, upto, &held);
                        most_held = most_held.max(Some(upto));
                        refusal = refusal.filter(|&(_, refused)| refused > upto);
                    }
                    Ending::Refused(upto) => {
                        state.refused(upto, &error);
                        refusal = Some((state.turns, upto));
                    }
                    Ending::Ended => state.turns += 1,
                }
                for mine in 0..21 {
                    let covered = state.covers(HeldBy::ONE, mine);
                    prop_assert_eq!(
                        covered.map(|held| held.writes as u64),
                        most_held.filter(|&most| most >= mine)
                    );
                    for since in 0..=state.turns {
                        let told = state.refusal_of(since, mine);
                        let expected = refusal
                            .is_some_and(|(turn, upto)| turn >= since && upto >= mine);
                        prop_assert_eq!(told.is_some(), expected);
                    }
                }
            }
        }

        /// The writes a flush looks over are those of one map of every
        /// write with its most acknowledgements, short of what it asks:
        /// whatever the writes, acknowledgements (of a write overwritten
        /// since too) and forgetting came before.
        #[test]
        fn a_flush_finds_the_writes_short_of_what_it_asks(
            steps in proptest::collection::vec(step(), 0..60)
        ) {
            let mut unacked = Unacked::default();
            let mut model: HashMap<String, Acked> = HashMap::new();
            let mut clock = 0;
            for step in steps {
                match step {
                    Step::Write(key) => {
                        clock += 1;
                        let key = format!("k{key}");
                        unacked.wrote(key.as_str().into(), stamp(clock));
                        model.insert(key, Acked { stamp: stamp(clock), replicas: 0, keepers: 0 });
                    }
                    Step::Ack { key, current, replicas, keepers } => {
                        let key = format!("k{key}");
                        let Some(now) = model.get(&key).map(|a| a.stamp) else { continue };
                        let acked_stamp = if current { now } else { stamp(now.physical_ns - 1) };
                        unacked.acknowledged(&key, acked_stamp, replicas, keepers);
                        let acked = model.get_mut(&key).expect("held");
                        if acked.stamp == acked_stamp {
                            acked.replicas = acked.replicas.max(replicas);
                            acked.keepers = acked.keepers.max(keepers);
                        }
                    }
                    Step::Remove(key) => {
                        let key = format!("k{key}");
                        unacked.remove(&key);
                        model.remove(&key);
                    }
                    Step::Retain(key) => {
                        let key = format!("k{key}");
                        unacked.retain(|k, _| k != key);
                        model.remove(&key);
                    }
                }
                prop_assert_eq!(unacked.len(), model.len());
                let levels: usize = unacked.levels.iter().map(|(_, n)| n).sum();
                prop_assert_eq!(levels, unacked.some.len());
                for want in [HeldBy::ONE, HeldBy::keepers(1), HeldBy::replicas(2), HeldBy::keepers(3)] {
                    let found: BTreeSet<(String, Stamp)> = unacked
                        .short_of(want)
                        .map(|(k, a)| (k.to_string(), a.stamp))
                        .collect();
                    let expected: BTreeSet<(String, Stamp)> = model
                        .iter()
                        .filter(|(_, a)| a.replicas < want.replicas || a.keepers < want.keepers)
                        .map(|(k, a)| (k.clone(), a.stamp))
                        .collect();
                    prop_assert_eq!(found, expected, "asked {:?}", want);
                }
            }
        }
    }
}
