//! A replica's flushes taking turns: a lane for each acknowledgement
//! asked, at most [`TURNS_AT_ONCE`] turns under way in it, and what the
//! flushes waiting are told when one ends.

use std::{
    collections::HashMap,
    sync::{Arc, MutexGuard},
};

use tokio::sync::mpsc;

use super::{Ack, Held, HeldBy};
use crate::state::{StateError, StateErrorKind};

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
pub(in crate::state) struct Flushes {
    /// The holds waiting: each hold's token and where its
    /// acknowledgements go.
    pub(super) waiting: std::sync::Mutex<HashMap<u64, mpsc::UnboundedSender<(u64, Ack)>>>,
    /// Writes made by this replica so far, counted once each is among its
    /// unacknowledged writes (or, before its first flush, in the map, where
    /// [`Shared::track`](crate::state::Shared::track) finds it): a flush waits for those made before it.
    pub(super) written: std::sync::atomic::AtomicU64,
    /// The turns of each [`HeldBy`] asked for.
    lanes: std::sync::Mutex<HashMap<HeldBy, Arc<Lane>>>,
    /// Told when the map closes: the flushes waiting end.
    pub(super) closed: tokio::sync::Notify,
    /// Whether this replica keeps its writes among the unacknowledged
    /// ones: from its first flush on ([`Shared::track`](crate::state::Shared::track)). Before, a write
    /// costs no bookkeeping and the map itself says which writes are this
    /// replica's.
    pub(super) tracking: std::sync::atomic::AtomicBool,
}

/// The turns of the flushes that ask for one [`HeldBy`].
pub(super) struct Lane {
    /// A permit each turn under way: at most [`TURNS_AT_ONCE`].
    pub(super) turn: tokio::sync::Semaphore,
    /// Told when a turn ends, however it ended: the flushes waiting look
    /// whether it took their writes, and one of those it did not starts
    /// the next.
    pub(super) ended: tokio::sync::Notify,
    state: std::sync::Mutex<LaneState>,
}

#[derive(Default)]
pub(super) struct LaneState {
    /// Turns ended so far.
    pub(super) turns: u64,
    /// The last turn that was acknowledged.
    pub(super) last: Option<Turn>,
    /// The last turn, if a replica refused its writes: its number, how
    /// far its writes went, and the refusal (what a flush that waited
    /// for those writes during it is told too).
    refused: Option<(u64, u64, StateErrorKind, String)>,
}

/// A flush's turn, until it ends: then the flushes waiting are told.
pub(super) struct TurnEnds<'a> {
    pub(super) lane: &'a Lane,
    pub(super) turn: Option<tokio::sync::SemaphorePermit<'a>>,
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
pub(super) struct Turn {
    want: HeldBy,
    upto: u64,
    pub(super) held: Held,
}

impl Flushes {
    /// Counts a write of this replica, after it went among its
    /// unacknowledged writes (or, before the first flush, into the map).
    pub(in crate::state) fn wrote(&self) {
        self.written
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    pub(super) fn written(&self) -> u64 {
        self.written.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The map closed: the flushes waiting end with `Closed`.
    pub(in crate::state) fn close(&self) {
        self.closed.notify_waiters();
    }

    pub(super) fn lane(&self, want: HeldBy) -> Arc<Lane> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(lanes.entry(want).or_default())
    }

    /// What the last turn of any lane was told, if it held every write up
    /// to `upto` as `want` asks (or more).
    pub(super) fn covered(&self, want: HeldBy, upto: u64) -> Option<Held> {
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
    pub(super) fn held(&mut self, want: HeldBy, upto: u64, held: &Held) {
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
    pub(super) fn refused(&mut self, upto: u64, error: &StateError) {
        self.refused = Some((self.turns, upto, error.kind(), error.message().to_string()));
    }

    /// The refusal a flush that waited from `since` turns ended on, for
    /// the writes up to `mine`, shares: a turn ended meanwhile took them
    /// and was refused.
    pub(super) fn refusal_of(&self, since: u64, mine: u64) -> Option<StateError> {
        let (turn, upto, kind, why) = self.refused.as_ref()?;
        (*turn >= since && *upto >= mine).then(|| StateError::new(*kind, why.clone()))
    }

    /// What the last held turn was told, if it took every write up to
    /// `upto` and `want` asks no more than it did.
    pub(super) fn covers(&self, want: HeldBy, upto: u64) -> Option<Held> {
        let turn = self.last.as_ref()?;
        (turn.upto >= upto
            && turn.want.replicas >= want.replicas
            && turn.want.keepers >= want.keepers)
            .then(|| turn.held.clone())
    }
}

impl Lane {
    pub(super) fn lock(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Turns of one lane under way at once: a turn starts while the last is
/// still waiting for its acknowledgements, so a write waits for about one
/// crossing to the acknowledging replicas and back, not two.
pub(super) const TURNS_AT_ONCE: usize = 2;
