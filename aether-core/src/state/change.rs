//! What a replica tells: the changes applied to it, the writes of its own
//! another superseded, who comes and goes, and its counts.

use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::{
    error::{Refusal, StateError, StateErrorKind},
    hlc::Stamp,
};

/// A change applied to a replica, local or remote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The key.
    pub key: String,
    /// Its value before (`None`: unset or deleted).
    pub old: Option<Bytes>,
    /// Its value now (`None`: deleted).
    pub new: Option<Bytes>,
    /// The name of the replica that wrote it.
    pub writer: String,
    /// The write's stamp.
    pub stamp: Stamp,
}

impl Change {
    /// The value now, read as JSON of type `T` (`None`: deleted), as
    /// written by [`StateMap::set_json`](super::StateMap::set_json); `Payload`, naming the key, its
    /// writer and the type, if it is not a `T`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use aether_core::{Aether, state::StateMap};
    /// use futures_util::StreamExt;
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize, Debug, PartialEq)]
    /// struct Reading {
    ///     celsius: f64,
    /// }
    ///
    /// let aether = Aether::default();
    /// let map = StateMap::open(&aether, "home").await?;
    /// let mut changes = map.watch(">");
    /// map.set_json("living.temp", &Reading { celsius: 21.5 }).await?;
    /// map.set_json("living.temp", &Reading { celsius: 22.0 }).await?;
    /// let first = changes.next().await.unwrap();
    /// assert_eq!(first.old_json::<Reading>()?, None);
    /// let second = changes.next().await.unwrap();
    /// assert_eq!(second.old_json()?, Some(Reading { celsius: 21.5 }));
    /// assert_eq!(second.new_json()?, Some(Reading { celsius: 22.0 }));
    /// # Ok(()) }
    /// ```
    pub fn new_json<T: DeserializeOwned>(&self) -> Result<Option<T>, StateError> {
        self.read_json(self.new.as_deref(), "new")
    }

    /// The value before, read as JSON of type `T` (`None`: unset or
    /// deleted); `Payload`, naming the key and the type, if it is not a `T`.
    pub fn old_json<T: DeserializeOwned>(&self) -> Result<Option<T>, StateError> {
        self.read_json(self.old.as_deref(), "old")
    }

    fn read_json<T: DeserializeOwned>(
        &self,
        value: Option<&[u8]>,
        which: &str,
    ) -> Result<Option<T>, StateError> {
        value.map(serde_json::from_slice).transpose().map_err(|e| {
            StateError::new(
                StateErrorKind::Payload,
                format!(
                    "the {which} value of {:?} (written by {:?}) is not a {}: {e}",
                    self.key,
                    self.writer,
                    std::any::type_name::<T>()
                ),
            )
        })
    }
}

/// One entry a replica holds, a tombstone too, with its stamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamped {
    /// The key.
    pub key: String,
    /// Its value (`None`: deleted, a tombstone).
    pub value: Option<Bytes>,
    /// The winning write's stamp.
    pub stamp: Stamp,
    /// The name of the replica that put it on the bus.
    pub writer: String,
}

/// A write of this replica that a write with a higher stamp overwrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superseded {
    /// The key.
    pub key: String,
    /// The stamp of this replica's write.
    pub mine: Stamp,
    /// The write that won.
    pub by: Change,
}

/// Someone joined or left a map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presence {
    /// A replica named this was heard for the first time (or again).
    Joined(String),
    /// A replica named this said it goes, or was not heard for
    /// `presence_timeout`.
    Left(String),
}

/// What a replica did, counted since it opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateStats {
    /// Keys set.
    pub keys: usize,
    /// Tombstones held.
    pub tombstones: usize,
    /// Changes applied (local and remote).
    pub applied: u64,
    /// Entries received that changed nothing (duplicates, older writes).
    pub stale: u64,
    /// Refused, by reason ([`Refusal::ALL`] order).
    pub refused: [u64; Refusal::ALL.len()],
    /// Entries that anti-entropy brought in.
    pub repaired: u64,
    /// Tombstones collected.
    pub collected: u64,
    /// Changes watchers missed because they fell behind.
    pub watch_lagged: u64,
    /// Live peers.
    pub peers: usize,
    /// Changes applied but not written to the ledger (a full disk, for
    /// one): lost to a restart of this replica, not to its peers.
    pub ledger_failed: u64,
    /// 1 if this replica's ledger was damaged when it opened (the damage
    /// logged with the map's name, the damaged files kept aside), else 0.
    pub ledger_damaged: u64,
    /// This replica's changes the aether did not take to send (a medium
    /// that failed, a closing aether): held here, its peers get them from
    /// anti-entropy.
    pub unsent: u64,
}

impl StateStats {
    /// How many were refused for `reason`.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused[reason as usize]
    }
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) applied: AtomicU64,
    pub(super) stale: AtomicU64,
    pub(super) refused: [AtomicU64; Refusal::ALL.len()],
    pub(super) repaired: AtomicU64,
    pub(super) collected: AtomicU64,
    pub(super) watch_lagged: AtomicU64,
    pub(super) ledger_failed: AtomicU64,
    pub(super) ledger_damaged: AtomicU64,
    pub(super) unsent: AtomicU64,
}
