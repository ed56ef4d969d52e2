//! What goes wrong with a state operation, and why a replica refuses
//! what a peer sends.

use std::fmt;

use crate::{Error, error::kinds};

kinds! {
    /// What went wrong with a state operation.
    StateErrorKind => StateError {
        /// The map or node name is not a single token of `A-Z a-z 0-9 _ -`.
        InvalidName = "invalid_name" => "invalid name",
        /// A key is empty or longer than `max_key_bytes`.
        InvalidKey = "invalid_key" => "invalid key",
        /// A value is longer than `max_value_bytes`.
        TooLarge = "too_large" => "value too large",
        /// A node-owned key (`node/<name>/...`) of another node.
        NotOwner = "not_owner" => "not the owner",
        /// A value did not serialize, or did not deserialize as asked.
        Payload = "payload" => "bad payload",
        /// The settings are out of range.
        Config = "config" => "invalid state settings",
        /// The aether or the map was closed.
        Closed = "closed" => "closed",
        /// The write is kept here but this replica's changes are not leaving
        /// (the medium refused the last send); anti-entropy sends them when it
        /// can.
        NotSent = "not_sent" => "not sent",
        /// A ledger could not be opened, read or written: this replica's state
        /// directory, or (a flush's) a keeper's disk, full or failing.
        Ledger = "ledger" => "ledger failed",
        /// A write stamped elsewhere ([`StateMap::merge`](crate::state::StateMap::merge)) is stamped more than
        /// `max_drift` ahead of this replica's clock, or before the tombstone
        /// horizon.
        Stamp = "stamp" => "stamp out of range",
        /// The map holds `max_keys` keys (tombstones counted until collected),
        /// or the write would take it past `max_map_bytes`: delete keys, or
        /// raise the setting on every replica.
        Full = "full" => "map full",
        /// No replica (or not as many as asked, or no keeper) acknowledged
        /// the writes of a [`StateMap::flush`](crate::state::StateMap::flush) in time.
        NotHeld = "not_held" => "not acknowledged",
    }
}

/// Why a replica refused something it received, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// Not a state message, or over a size limit.
    Malformed,
    /// Stamped more than `max_drift` ahead.
    Future,
    /// Stamped before the tombstone horizon.
    TooOld,
    /// A node-owned key written (or relayed) by another node.
    NotOwner,
    /// Past `max_writes_per_s` from one writer.
    RateLimited,
    /// A key more than `max_keys`, or past `max_map_bytes`.
    Full,
}

impl Refusal {
    /// Every reason, in counter order.
    pub const ALL: [Refusal; 6] = [
        Refusal::Malformed,
        Refusal::Future,
        Refusal::TooOld,
        Refusal::NotOwner,
        Refusal::RateLimited,
        Refusal::Full,
    ];

    /// Its name as a metric label.
    pub fn as_str(&self) -> &'static str {
        crate::report::MAP_REFUSALS[*self as usize]
    }
}
