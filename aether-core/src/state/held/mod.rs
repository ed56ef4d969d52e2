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

mod turns;
mod unacked;

pub(super) use turns::Flushes;
#[cfg(test)]
use turns::LaneState;
use turns::{TURNS_AT_ONCE, TurnEnds};
#[cfg(test)]
use unacked::Acked;
pub(super) use unacked::Unacked;
use unacked::{FORGET_AFTER, LOOK_EVERY};

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

/// One replica's acknowledgement of a hold.
#[derive(Clone, Debug)]
pub(super) struct Ack {
    pub(super) name: SmolStr,
    pub(super) keeper: bool,
    pub(super) refused: u8,
}

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
mod tests;
