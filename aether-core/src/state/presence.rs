//! Presence values: what a replica says of itself while it is there (its
//! user's name and cursor, what it is editing, a service's status), in
//! named slots. Never written to the map, never kept on disk: sent to every
//! replica as they change (at most every [`PRESENCE_EVERY`]), the whole set
//! to a replica met and with each hello to all, and dropped by every
//! replica when their sender leaves or is found gone.
//!
//! [`Own`] is this replica's slots and what is still to send; [`Table`] the
//! others' slots held here, bounded by
//! [`MAX_PRESENCE_HELD_BYTES`](crate::config::MAX_PRESENCE_HELD_BYTES).
//! Keepers hold none. Below them, `StateMap`'s presence calls, and what a
//! replica sends and takes (`Shared::send_presence`, `on_presence`).

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use bytes::Bytes;
use smol_str::SmolStr;

use crate::config::{MAX_PRESENCE_HELD_BYTES, MAX_PRESENCE_SLOTS, PRESENCE_SLOT_COST};

#[allow(clippy::wildcard_imports)]
use super::*;

/// The most often a replica sends its changed presence values (20 a
/// second): a cursor moving sends its latest position, not each one.
pub(super) const PRESENCE_EVERY: Duration = Duration::from_millis(50);

/// The most value bytes one presence message carries: a full set of many
/// slots (a gateway's pages) leaves in several.
pub(super) const MESSAGE_BYTES: usize = 128 * 1024;

/// One presence value of another replica of the map
/// ([`StateMap::presences`](super::StateMap::presences)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceValue {
    /// The node name of the replica that set it.
    pub node: String,
    /// Its slot (one replica may set many: a gateway sets one per page).
    pub slot: String,
    /// The value, as set.
    pub value: Bytes,
}

/// This replica's own presence values, and the changes not sent yet.
#[derive(Debug, Default)]
pub(super) struct Own {
    values: BTreeMap<SmolStr, Bytes>,
    unsent: BTreeMap<SmolStr, Option<Bytes>>,
}

impl Own {
    /// Sets `slot`; `false` if it would be a slot past
    /// [`MAX_PRESENCE_SLOTS`].
    pub(super) fn set(&mut self, slot: &str, value: Bytes) -> bool {
        if !self.values.contains_key(slot) && self.values.len() >= MAX_PRESENCE_SLOTS {
            return false;
        }
        if self.values.get(slot) != Some(&value) {
            self.values.insert(SmolStr::new(slot), value.clone());
            self.unsent.insert(SmolStr::new(slot), Some(value));
        }
        true
    }

    /// Clears `slot`, if it is set.
    pub(super) fn clear(&mut self, slot: &str) {
        if self.values.remove(slot).is_some() {
            self.unsent.insert(SmolStr::new(slot), None);
        }
    }

    #[cfg(test)]
    pub(super) fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// The changes not sent yet, taken.
    pub(super) fn take_unsent(&mut self) -> Vec<(SmolStr, Option<Bytes>)> {
        std::mem::take(&mut self.unsent).into_iter().collect()
    }

    /// Every value set (`None` when there is none to send).
    pub(super) fn all(&self) -> Option<Vec<(SmolStr, Option<Bytes>)>> {
        (!self.values.is_empty()).then(|| {
            self.values
                .iter()
                .map(|(slot, value)| (slot.clone(), Some(value.clone())))
                .collect()
        })
    }

    pub(super) fn values(&self) -> Vec<(String, Bytes)> {
        self.values
            .iter()
            .map(|(slot, value)| (slot.to_string(), value.clone()))
            .collect()
    }
}

/// `values` in messages of at most [`MESSAGE_BYTES`] of values each (one,
/// empty, when there are none): the first of a full set is `full`, the
/// rest add to it.
pub(super) fn chunks(
    values: Vec<(SmolStr, Option<Bytes>)>,
) -> impl Iterator<Item = Vec<(SmolStr, Option<Bytes>)>> {
    let mut chunks = vec![Vec::new()];
    let mut bytes = 0;
    for (slot, value) in values {
        let size = slot.len() + value.as_ref().map_or(0, Bytes::len) + 4;
        let last = chunks.last_mut().expect("one at least");
        if !last.is_empty() && bytes + size > MESSAGE_BYTES {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        chunks.last_mut().expect("one at least").push((slot, value));
    }
    chunks.into_iter()
}

/// The other replicas' presence values held here.
#[derive(Debug, Default)]
pub(super) struct Table {
    peers: HashMap<u64, Peer>,
    /// What every slot held costs together ([`cost`]).
    bytes: usize,
}

#[derive(Debug)]
struct Peer {
    name: SmolStr,
    values: BTreeMap<SmolStr, Bytes>,
}

/// What taking a presence message changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Taken {
    /// Something shown changed.
    pub(super) changed: bool,
    /// Slots refused: the table held [`MAX_PRESENCE_HELD_BYTES`], or the
    /// sender set more than [`MAX_PRESENCE_SLOTS`].
    pub(super) refused: u64,
}

/// What a slot held costs.
fn cost(slot: &str, value: &Bytes) -> usize {
    slot.len() + value.len() + PRESENCE_SLOT_COST
}

impl Table {
    /// Takes the presence message of replica `node` named `name`: a `full`
    /// set replaces what is held of it, changes add to it (a `None` value
    /// clears its slot).
    pub(super) fn take(
        &mut self,
        node: u64,
        name: &str,
        full: bool,
        values: Vec<(SmolStr, Option<Bytes>)>,
    ) -> Taken {
        let mut taken = Taken::default();
        if full && let Some(old) = self.peers.remove(&node) {
            self.bytes -= old.values.iter().map(|(s, v)| cost(s, v)).sum::<usize>();
            taken.changed |= !old.values.is_empty();
        }
        let peer = self.peers.entry(node).or_insert_with(|| Peer {
            name: SmolStr::new(name),
            values: BTreeMap::new(),
        });
        for (slot, value) in values {
            let setting = value.is_some();
            let old = match value {
                Some(value) => {
                    let old_cost = peer.values.get(&slot).map_or(0, |v| cost(&slot, v));
                    let new_cost = cost(&slot, &value);
                    let over = self.bytes - old_cost + new_cost > MAX_PRESENCE_HELD_BYTES
                        || (old_cost == 0 && peer.values.len() >= MAX_PRESENCE_SLOTS);
                    if over {
                        taken.refused += 1;
                        continue;
                    }
                    if peer.values.get(&slot) == Some(&value) {
                        continue;
                    }
                    self.bytes += new_cost;
                    peer.values.insert(slot.clone(), value)
                }
                None => peer.values.remove(&slot),
            };
            if let Some(old) = &old {
                self.bytes -= cost(&slot, old);
            }
            taken.changed |= setting || old.is_some();
        }
        if peer.values.is_empty() {
            self.peers.remove(&node);
        }
        taken
    }

    /// Drops what replica `node` set (it left): whether it had set any.
    pub(super) fn remove(&mut self, node: u64) -> bool {
        let Some(peer) = self.peers.remove(&node) else {
            return false;
        };
        self.bytes -= peer.values.iter().map(|(s, v)| cost(s, v)).sum::<usize>();
        true
    }

    /// Every value held, by node name and slot.
    pub(super) fn values(&self) -> Vec<PresenceValue> {
        let mut out: Vec<PresenceValue> = self
            .peers
            .values()
            .flat_map(|peer| {
                peer.values.iter().map(|(slot, value)| PresenceValue {
                    node: peer.name.to_string(),
                    slot: slot.to_string(),
                    value: value.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.node, &a.slot).cmp(&(&b.node, &b.slot)));
        out
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The presence API of a replica.
impl StateMap {
    /// Sets this replica's presence value in `slot` (a name: letters,
    /// digits, `_`, `-`, dots between): every replica of the map sees it
    /// in [`presences`](Self::presences) within moments, until it is
    /// cleared or this replica leaves (closed, dropped, or its process
    /// gone for `presence_timeout`). Presence is never written to the map
    /// nor kept on disk: a user's name and cursor, what it is editing, a
    /// service's status. Changes leave at most every 50 ms, the latest of
    /// each slot.
    ///
    /// `InvalidName` for a bad slot, `TooLarge` past
    /// [`MAX_PRESENCE_BYTES`](crate::config::MAX_PRESENCE_BYTES), `Full`
    /// for a slot past [`MAX_PRESENCE_SLOTS`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use aether_core::{Aether, state::StateMap};
    ///
    /// let aether = Aether::default();
    /// let alice = StateMap::builder("board").node("alice").open(&aether).await?;
    /// let bob = StateMap::builder("board").node("bob").open(&aether).await?;
    /// let mut changed = bob.presences_changed();
    /// alice.set_presence("user", r#"{"name":"Alice","editing":"card-7"}"#)?;
    /// while !bob.presences().iter().any(|p| p.node == "alice") {
    ///     changed.changed().await?;
    /// }
    /// let seen = &bob.presences()[0];
    /// assert_eq!((seen.slot.as_str(), &seen.value[..]), ("user", &br#"{"name":"Alice","editing":"card-7"}"#[..]));
    /// alice.close().await;
    /// while !bob.presences().is_empty() {
    ///     changed.changed().await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn set_presence(&self, slot: &str, value: impl Into<Bytes>) -> Result<(), StateError> {
        self.check_slot(slot)?;
        let value = value.into();
        if value.len() > crate::config::MAX_PRESENCE_BYTES {
            return Err(StateError::new(
                StateErrorKind::TooLarge,
                format!(
                    "a presence value of {} bytes; the most is {}",
                    value.len(),
                    crate::config::MAX_PRESENCE_BYTES
                ),
            ));
        }
        let set = self.shared.lock_own_presence().set(slot, value);
        if !set {
            return Err(StateError::new(
                StateErrorKind::Full,
                format!(
                    "presence slot {slot:?} would be one past the most one replica sets, {}",
                    crate::config::MAX_PRESENCE_SLOTS
                ),
            ));
        }
        self.shared.presence_due.notify_one();
        Ok(())
    }

    /// [`set_presence`](Self::set_presence) with `value` as JSON.
    pub fn set_presence_json<T: Serialize + ?Sized>(
        &self,
        slot: &str,
        value: &T,
    ) -> Result<(), StateError> {
        let json = serde_json::to_vec(value)
            .map_err(|e| StateError::new(StateErrorKind::Payload, e.to_string()))?;
        self.set_presence(slot, json)
    }

    /// Clears this replica's presence value in `slot`, if it is set.
    pub fn clear_presence(&self, slot: &str) -> Result<(), StateError> {
        self.check_slot(slot)?;
        self.shared.lock_own_presence().clear(slot);
        self.shared.presence_due.notify_one();
        Ok(())
    }

    /// This replica's own presence values, by slot.
    pub fn own_presence(&self) -> Vec<(String, Bytes)> {
        self.shared.lock_own_presence().values()
    }

    /// The presence values of the map's other replicas, by node and slot.
    pub fn presences(&self) -> Vec<PresenceValue> {
        self.shared.lock_presences().values()
    }

    /// Tells of each change of [`presences`](Self::presences): a value set,
    /// changed or cleared, a replica gone with its values. Changes close
    /// together are told once; read `presences()` when told.
    pub fn presences_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.presences_changed.subscribe()
    }

    fn check_slot(&self, slot: &str) -> Result<(), StateError> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(StateError::new(StateErrorKind::Closed, "the map is closed"));
        }
        if codec::is_slot(slot) {
            return Ok(());
        }
        Err(StateError::new(
            StateErrorKind::InvalidName,
            format!(
                "presence slot {slot:?}: 1 to {} bytes of A-Z a-z 0-9 _ - in tokens between dots",
                crate::config::MAX_PRESENCE_SLOT_BYTES
            ),
        ))
    }
}

/// Presence between replicas: what this replica sends, and takes.
impl Shared {
    pub(super) fn lock_own_presence(&self) -> MutexGuard<'_, presence::Own> {
        self.own_presence.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn lock_presences(&self) -> MutexGuard<'_, presence::Table> {
        self.presences.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The member `node` left or was found gone (`left`, if it was a
    /// member): its presence values go with it.
    pub(super) fn gone(&self, node: u64, left: Option<Presence>) {
        self.tell(left);
        if self.lock_presences().remove(node) {
            self.presences_changed.send_modify(|n| *n += 1);
        }
    }

    /// Sends this replica's presence values: `Some(node)`, the whole set
    /// to that replica; `None`, to all (the whole set when `values` is
    /// [`presence::Own::all`], else its changes).
    pub(super) async fn send_presence(
        &self,
        to: Option<u64>,
        values: Vec<(SmolStr, Option<Bytes>)>,
        full: bool,
    ) {
        for (i, values) in presence::chunks(values).enumerate() {
            let message = Message::Presence {
                node: self.clock.node(),
                full: full && i == 0,
                values,
            };
            let channel = match to {
                Some(node) => self.channels.repair_of(node),
                None => self.channels.presence.clone(),
            };
            if let Err(error) = self.emit(channel, message).await {
                tracing::debug!(map = %self.map, %error, "could not send presence values");
                return;
            }
        }
    }

    /// Sends this replica's presence changes to all, if it has any.
    pub(super) async fn send_presence_changes(&self) {
        let unsent = self.lock_own_presence().take_unsent();
        if !unsent.is_empty() {
            self.send_presence(None, unsent, false).await;
        }
    }

    /// Another replica's presence values, to all or to this one.
    pub(super) async fn on_presence(
        self: &Arc<Self>,
        source: &str,
        channel: &Channel,
        node: u64,
        full: bool,
        values: Vec<(SmolStr, Option<Bytes>)>,
    ) {
        if (*channel != self.channels.presence && *channel != self.channels.repair)
            || node == self.clock.node()
        {
            self.refuse(Refusal::Malformed);
            return;
        }
        // A keeper shows nobody presence: it holds none.
        if self.keeper {
            return;
        }
        // A sign of life, as a hello is.
        self.spoke(node, source, Instant::now()).await;
        if !self.is_peer(node, source) {
            // Not a member (said gone lately, another name, or too many).
            self.refuse(Refusal::Malformed);
            return;
        }
        let taken = self.lock_presences().take(node, source, full, values);
        for _ in 0..taken.refused {
            self.refuse(Refusal::Full);
        }
        if taken.changed {
            self.presences_changed.send_modify(|n| *n += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn set(slot: &str, value: &str) -> (SmolStr, Option<Bytes>) {
        (
            SmolStr::new(slot),
            Some(Bytes::copy_from_slice(value.as_bytes())),
        )
    }

    #[test]
    fn a_full_set_replaces_changes_add_and_a_leave_drops_all() {
        let mut table = Table::default();
        let taken = table.take(1, "a", true, vec![set("x", "1"), set("y", "2")]);
        assert_eq!(
            taken,
            Taken {
                changed: true,
                refused: 0
            }
        );
        let taken = table.take(
            1,
            "a",
            false,
            vec![(SmolStr::new("x"), None), set("z", "3")],
        );
        assert!(taken.changed);
        let slots: Vec<_> = table.values().into_iter().map(|v| v.slot).collect();
        assert_eq!(slots, ["y", "z"]);
        // The same again changes nothing.
        assert!(!table.take(1, "a", false, vec![set("z", "3")]).changed);
        table.take(1, "a", true, vec![set("w", "4")]);
        let slots: Vec<_> = table.values().into_iter().map(|v| v.slot).collect();
        assert_eq!(slots, ["w"]);
        assert!(table.remove(1));
        assert!(!table.remove(1));
        assert!(table.values().is_empty());
        assert_eq!(table.bytes(), 0);
    }

    #[test]
    fn others_past_the_held_bound_are_refused_and_counted() {
        let mut table = Table::default();
        let big = Bytes::from(vec![b'x'; 4000]);
        let per = cost("s0000", &big);
        let fit = MAX_PRESENCE_HELD_BYTES / per;
        let mut refused = 0;
        for node in 0..(fit as u64 / 1000 + 2) {
            let values = (0..1000)
                .map(|i| (SmolStr::new(format!("s{i:04}")), Some(big.clone())))
                .collect();
            refused += table.take(node, "n", true, values).refused;
        }
        assert!(table.bytes() <= MAX_PRESENCE_HELD_BYTES);
        assert_eq!(table.values().len(), fit);
        assert_eq!(refused as usize, (fit / 1000 + 2) * 1000 - fit);
    }

    #[test]
    fn own_slots_are_bounded_and_sent_once() {
        let mut own = Own::default();
        for i in 0..MAX_PRESENCE_SLOTS {
            assert!(own.set(&format!("s{i}"), Bytes::from_static(b"1")));
        }
        assert!(!own.set("one-more", Bytes::from_static(b"1")));
        assert!(own.set("s0", Bytes::from_static(b"2")));
        assert_eq!(own.take_unsent().len(), MAX_PRESENCE_SLOTS);
        assert!(!own.has_unsent());
        own.set("s0", Bytes::from_static(b"2"));
        assert!(!own.has_unsent(), "the same value again is no change");
        own.clear("s1");
        assert_eq!(own.take_unsent(), vec![(SmolStr::new("s1"), None)]);
        let chunks: Vec<_> = chunks(own.all().unwrap()).collect();
        assert_eq!(chunks.len(), 1);
    }

    #[test]
    fn chunks_keep_every_value_in_order_within_the_message_bound() {
        let values: Vec<_> = (0..200)
            .map(|i| {
                (
                    SmolStr::new(format!("s{i}")),
                    Some(Bytes::from(vec![0; 4096])),
                )
            })
            .collect();
        let chunks: Vec<_> = chunks(values.clone()).collect();
        assert!(chunks.len() > 1);
        for chunk in &chunks {
            let bytes: usize = chunk
                .iter()
                .map(|(s, v)| s.len() + v.as_ref().unwrap().len() + 4)
                .sum();
            assert!(bytes <= MESSAGE_BYTES);
        }
        assert_eq!(chunks.concat(), values);
        assert_eq!(super::chunks(Vec::new()).count(), 1);
    }

    proptest! {
        /// Whatever comes in whatever order, the bytes counted are the
        /// bytes held, and a leave of every sender leaves nothing.
        #[test]
        fn the_count_is_what_is_held(
            steps in prop::collection::vec(
                (0u64..4, any::<bool>(), prop::collection::vec((0u8..6, prop::option::of(0usize..300)), 0..6)),
                0..40,
            )
        ) {
            let mut table = Table::default();
            for (node, full, values) in steps {
                let values = values
                    .into_iter()
                    .map(|(slot, len)| (SmolStr::new(format!("s{slot}")), len.map(|n| Bytes::from(vec![1; n]))))
                    .collect();
                table.take(node, "n", full, values);
                let held: usize = table.values().iter().map(|v| cost(&v.slot, &v.value)).sum();
                prop_assert_eq!(held, table.bytes());
            }
            for node in 0..4 {
                table.remove(node);
            }
            prop_assert_eq!(table.bytes(), 0);
        }
    }
}
