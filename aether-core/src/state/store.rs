//! A map's contents on one replica, and the merge rule.
//!
//! For each key the entry with the highest [`Stamp`] wins; a delete is an
//! entry too (a tombstone, no value), so a write stamped before it cannot
//! bring the key back. Merging is commutative, associative and idempotent:
//! the order waves arrive in, duplicates and replays change nothing. Two
//! entries with the same stamp (which honest replicas never make) are
//! ordered by their values, so even then every replica keeps the same one.
//!
//! The store keeps a digest: the keys fall into [`BUCKETS`] buckets by a
//! hash of the key, and each bucket's digest is the XOR of its entries'
//! fingerprints (key and stamp). Two replicas with the same digest hold
//! the same entries; anti-entropy sends only the buckets that differ.

use std::{collections::BTreeMap, sync::Arc};

use bytes::Bytes;
use smol_str::SmolStr;

use super::{
    budget::{Budget, Share},
    hlc::Stamp,
};

/// Buckets of the digest.
pub(crate) const BUCKETS: usize = 64;

/// A key in the store's tree, with its first eight bytes beside it as one
/// big-endian number: a walk of the tree compares keys dozens of times,
/// and two keys that differ in their first eight bytes are ordered by one
/// comparison of those numbers, with no look at the string and no call to
/// `memcmp`; keys alike that far (`sensors/kitchen/...` beside
/// `sensors/hall/...`) are compared whole, each comparison decoding both
/// inline strings (a walk about a third dearer than plain `String` keys'
/// for such keys; BENCHMARKS.md has the counts). The order is the strings'
/// byte order, so the tree answers lookups by `&str` too.
#[derive(Clone, Debug)]
pub(crate) struct Key {
    head: u64,
    key: SmolStr,
}

impl Key {
    fn new(key: SmolStr) -> Key {
        Key {
            head: head_of(key.as_bytes()),
            key,
        }
    }
}

/// An entry as the tree holds it: what a snapshot is decoded into, so
/// that [`Store::undigested_from_sorted`] builds the tree in the decoder's own
/// allocation.
pub(crate) fn keyed(key: SmolStr, entry: Entry) -> (Key, Entry) {
    (Key::new(key), entry)
}

/// The first eight bytes of `key`, zeros after its end, big-endian: if two
/// keys' heads differ, they order as the keys do.
fn head_of(key: &[u8]) -> u64 {
    let mut head = [0u8; 8];
    let n = key.len().min(8);
    head[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(head)
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.head == other.head && self.key == other.key
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> std::cmp::Ordering {
        self.head
            .cmp(&other.head)
            .then_with(|| self.key.as_bytes().cmp(other.key.as_bytes()))
    }
}

impl std::borrow::Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.key
    }
}

impl std::ops::Deref for Key {
    type Target = str;

    fn deref(&self) -> &str {
        &self.key
    }
}

/// What a replica holds for a key: a value, or a tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) stamp: Stamp,
    /// `None`: deleted.
    pub(crate) value: Option<Bytes>,
    /// The name of the replica that wrote it.
    pub(crate) writer: SmolStr,
}

impl Entry {
    /// Whether this entry wins over `other` for the same key.
    pub(crate) fn beats(&self, other: &Entry) -> bool {
        (self.stamp, &self.value) > (other.stamp, &other.value)
    }
}

/// What merging an entry did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Merged {
    /// It won: the entry it replaced, if any.
    Applied(Option<Entry>),
    /// The store already held this entry or a winning one.
    Stale,
}

/// A merge that would win but is past a cap ([`Store::merge_owned`]): one
/// key more than `max_keys`, or past `max_bytes` or the budget; which, and
/// the key back.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) cap: Cap,
    pub(crate) key: SmolStr,
}

/// A cap of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cap {
    /// Keys held, tombstones counted.
    Keys,
    /// Bytes of keys and values held.
    Bytes,
    /// Bytes of every map its keeper keeps, together (the keeper's
    /// `max_bytes`).
    Budget,
}

/// What a store may hold: keys (tombstones counted until collected) and
/// bytes of keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Caps {
    pub(crate) max_keys: usize,
    pub(crate) max_bytes: u64,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            max_keys: usize::MAX,
            max_bytes: u64::MAX,
        }
    }
}

pub(crate) use crate::config::ENTRY_BYTES;

/// What an entry of `key` costs a store: its key and value bytes, and
/// [`ENTRY_BYTES`].
fn cost(key: &str, entry: &Entry) -> u64 {
    (key.len() + entry.value.as_ref().map_or(0, Bytes::len)) as u64 + ENTRY_BYTES
}

/// One replica's contents.
#[derive(Clone, Debug, Default)]
pub(crate) struct Store {
    entries: BTreeMap<Key, Entry>,
    digest: Digest,
    /// Node-owned keys (`node/<owner>/...`) are not in the digest (only
    /// their owner may send them): one fingerprint per owner instead.
    owned: std::collections::HashMap<SmolStr, u64>,
    tombstones: usize,
    /// Bytes of keys and values held.
    bytes: u64,
    /// Counts every change of the contents (a merge applied, tombstones
    /// collected).
    version: u64,
    caps: Caps,
    /// Its share of a keeper's budget, if a keeper keeps it.
    share: Share,
    /// The digest and the owners' fingerprints are not kept: a ledger
    /// read back merges each key up to ten times and more, and fingerprints
    /// the map once at its end ([`Store::digest_all`]).
    undigested: bool,
}

impl Drop for Store {
    fn drop(&mut self) {
        self.share.give(self.bytes);
    }
}

/// Two stores are equal when they hold the same entries (how they came to
/// hold them, and their caps, aside).
impl PartialEq for Store {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
            && self.digest == other.digest
            && self.owned == other.owned
            && self.tombstones == other.tombstones
            && self.bytes == other.bytes
    }
}

impl Eq for Store {}

/// A store's digest: one fingerprint per bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Digest(pub(crate) [u64; BUCKETS]);

impl Default for Digest {
    fn default() -> Self {
        Digest([0; BUCKETS])
    }
}

impl Digest {
    /// The buckets where `self` and `other` differ.
    pub(crate) fn differing(&self, other: &Digest) -> Vec<usize> {
        (0..BUCKETS).filter(|&b| self.0[b] != other.0[b]).collect()
    }
}

/// The owner of a node-owned key: `node/<owner>/...`.
pub(crate) fn owner_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("node/")?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// FNV-1a, 64 bits: a stable hash every replica computes alike, for the
/// bucket of a key.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// The bucket of `key`: FNV-1a-64 of its bytes, mod [`BUCKETS`].
pub(crate) fn bucket_of(key: &str) -> usize {
    let mut hash = Fnv::new();
    hash.update(key.as_bytes());
    (hash.0 % BUCKETS as u64) as usize
}

/// The multiplier of [`fingerprint`]'s steps (the golden ratio's bits).
const MIX: u64 = 0x9e37_79b9_7f4a_7c15;
/// Where [`fingerprint`] starts and what it ends with.
const SEAL: u64 = 0xbf58_476d_1ce4_e5b9;

/// One step of [`fingerprint`]: `a * b` as 128 bits, its halves XORed.
fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// `state` after `bytes`, eight at a time (little-endian words, the last
/// padded with zeros; lengths are folded in apart).
fn fold_bytes(mut state: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        state = fold(state ^ word, MIX);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        state = fold(state ^ u64::from_le_bytes(last), MIX);
    }
    state
}

/// The fingerprint of an entry, the same on every replica (state protocol
/// version 2): from [`SEAL`], each step `state = fold(state ^ x, MIX)` for
/// x = the key's length, the key's bytes as words, the stamp's physical,
/// logical and node, then `u64::MAX` for a tombstone or the value's length
/// and its bytes as words; the result `fold(state ^ SEAL, SEAL)`. A word
/// a step, cheap enough for every merge: the digest finds what differs
/// between honest replicas, and is no defence (what a replica takes in is
/// checked entry by entry).
fn fingerprint(key: &str, entry: &Entry) -> u64 {
    let mut state = fold(SEAL ^ key.len() as u64, MIX);
    state = fold_bytes(state, key.as_bytes());
    state = fold(state ^ entry.stamp.physical_ns, MIX);
    state = fold(state ^ u64::from(entry.stamp.logical), MIX);
    state = fold(state ^ entry.stamp.node, MIX);
    match &entry.value {
        None => state = fold(state ^ u64::MAX, MIX),
        Some(value) => {
            state = fold(state ^ value.len() as u64, MIX);
            state = fold_bytes(state, value);
        }
    }
    fold(state ^ SEAL, SEAL)
}

/// The fingerprint slot of `key`: its bucket of `digest`, or its owner's
/// fingerprint in `owned`.
fn slot<'a>(
    digest: &'a mut Digest,
    owned: &'a mut std::collections::HashMap<SmolStr, u64>,
    key: &str,
) -> &'a mut u64 {
    match owner_of(key) {
        Some(owner) => {
            if !owned.contains_key(owner) {
                owned.insert(SmolStr::new(owner), 0);
            }
            owned.get_mut(owner).expect("inserted above")
        }
        None => &mut digest.0[bucket_of(key)],
    }
}

/// Moves a store's bytes from `*held` to `bytes`, within `caps` and its
/// `share` of a budget (a shrink always): nothing changed if past one.
fn resize(held: &mut u64, caps: &Caps, share: &Share, bytes: u64) -> Result<(), Cap> {
    if bytes > *held {
        if bytes > caps.max_bytes {
            return Err(Cap::Bytes);
        }
        if !share.take(bytes - *held) {
            return Err(Cap::Budget);
        }
    } else {
        share.give(*held - bytes);
    }
    *held = bytes;
    Ok(())
}

impl Store {
    /// The fingerprint slot of `key`.
    fn slot(&mut self, key: &str) -> &mut u64 {
        slot(&mut self.digest, &mut self.owned, key)
    }

    /// The fingerprint of the keys `owner` owns here (0: none).
    pub(crate) fn owned_fingerprint(&self, owner: &str) -> u64 {
        self.owned.get(owner).copied().unwrap_or(0)
    }

    /// An empty store that keeps no digest until [`Store::digest_all`]:
    /// what a ledger is read back into.
    pub(crate) fn undigested() -> Store {
        let mut store = Store::default();
        store.undigested = true;
        store
    }

    /// A store holding `entries`, given in strictly increasing key order
    /// (a snapshot's): the tree built in one pass, no key searched for.
    /// Entries out of order (not a snapshot of this code's) are merged one
    /// by one instead. No digest is kept, as [`Store::undigested`].
    pub(crate) fn undigested_from_sorted(entries: Vec<(Key, Entry)>) -> Store {
        let mut store = Store::undigested();
        if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
            for (key, entry) in entries {
                // Uncapped: every entry fits.
                let _ = store.merge_owned(key.key, entry);
            }
            return store;
        }
        for (key, entry) in &entries {
            store.bytes += cost(key, entry);
            store.tombstones += usize::from(entry.value.is_none());
        }
        store.version = entries.len() as u64;
        store.entries = entries.into_iter().collect();
        store
    }

    /// Fingerprints every entry into the digest and the owners'
    /// fingerprints, which are kept from now on.
    pub(crate) fn digest_all(&mut self) {
        let Store {
            entries,
            digest,
            owned,
            ..
        } = self;
        *digest = Digest::default();
        owned.clear();
        for (key, entry) in entries.iter() {
            *slot(digest, owned, key) ^= fingerprint(key, entry);
        }
        self.undigested = false;
    }

    /// Holds it to `caps` from now on (what it holds already stays).
    pub(crate) fn set_caps(&mut self, caps: Caps) {
        self.caps = caps;
    }

    /// Counts it against `budget` from now on: what it holds is taken at
    /// once (fitting or not), each growth must fit.
    pub(crate) fn set_budget(&mut self, budget: Arc<Budget>) {
        self.share.give(self.bytes);
        self.share = Share::of(budget);
        self.share.force(self.bytes);
    }

    /// The budget it counts against, if any.
    pub(crate) fn budget(&self) -> Option<&Arc<Budget>> {
        self.share.budget()
    }

    /// Moves the store's bytes from `self.bytes` to `bytes`, within the
    /// caps (a shrink always): false, and nothing changed, if past one.
    fn resize(&mut self, bytes: u64) -> Result<(), Cap> {
        resize(&mut self.bytes, &self.caps, &self.share, bytes)
    }

    /// Merges `entry` for `key`, within the caps: a write that would take
    /// the store past one is not applied, and names the cap (a key it
    /// holds may always shrink). The tests' way in; the code hands its
    /// keys over with [`Store::merge_owned`].
    #[cfg(test)]
    pub(crate) fn merge(&mut self, key: &str, entry: Entry) -> Result<Merged, Cap> {
        self.merge_owned(SmolStr::new(key), entry)
            .map_err(|full| full.cap)
    }

    /// [`Store::merge`] with the key owned (kept in the tree if the entry
    /// wins, no copy made): one walk of the tree, whether the key is held
    /// or new. A write past a cap gives the key back.
    pub(crate) fn merge_owned(&mut self, key: SmolStr, entry: Entry) -> Result<Merged, Refused> {
        use std::collections::btree_map::Entry as Slot;
        let Store {
            entries,
            digest,
            owned,
            tombstones,
            bytes,
            version,
            caps,
            share,
            undigested,
        } = self;
        let new_cost = cost(&key, &entry);
        let held_keys = entries.len();
        match entries.entry(Key::new(key)) {
            Slot::Occupied(mut held) => {
                if !entry.beats(held.get()) {
                    return Ok(Merged::Stale);
                }
                let held_cost = cost(held.key(), held.get());
                if let Err(cap) = resize(bytes, caps, share, *bytes - held_cost + new_cost) {
                    let key = held.key().key.clone();
                    return Err(Refused { cap, key });
                }
                *tombstones = *tombstones - usize::from(held.get().value.is_none())
                    + usize::from(entry.value.is_none());
                *version += 1;
                if !*undigested {
                    let key = held.key();
                    *slot(digest, owned, key) ^=
                        fingerprint(key, held.get()) ^ fingerprint(key, &entry);
                }
                Ok(Merged::Applied(Some(held.insert(entry))))
            }
            Slot::Vacant(vacant) => {
                if held_keys >= caps.max_keys {
                    let (cap, key) = (Cap::Keys, vacant.into_key().key);
                    return Err(Refused { cap, key });
                }
                if let Err(cap) = resize(bytes, caps, share, *bytes + new_cost) {
                    let key = vacant.into_key().key;
                    return Err(Refused { cap, key });
                }
                *version += 1;
                if !*undigested {
                    *slot(digest, owned, vacant.key()) ^= fingerprint(vacant.key(), &entry);
                }
                *tombstones += usize::from(entry.value.is_none());
                vacant.insert(entry);
                Ok(Merged::Applied(None))
            }
        }
    }

    /// The entry of `key`, tombstone included.
    pub(crate) fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// The value of `key`, if it is set.
    pub(crate) fn get(&self, key: &str) -> Option<&Bytes> {
        self.entries.get(key).and_then(|e| e.value.as_ref())
    }

    /// Every entry, tombstones included, in key order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&SmolStr, &Entry)> {
        self.entries.iter().map(|(key, entry)| (&key.key, entry))
    }

    /// The entries of the buckets `wanted` picks (node-owned keys aside),
    /// grouped by bucket, in one pass over the map.
    pub(crate) fn buckets(&self, wanted: &[bool; BUCKETS]) -> Vec<Vec<(SmolStr, Entry)>> {
        let mut out = vec![Vec::new(); BUCKETS];
        for (key, entry) in &self.entries {
            if owner_of(key).is_some() {
                continue;
            }
            let bucket = bucket_of(key);
            if wanted[bucket] {
                out[bucket].push((key.key.clone(), entry.clone()));
            }
        }
        out
    }

    /// Keys set (not deleted).
    pub(crate) fn len(&self) -> usize {
        self.entries.len() - self.tombstones
    }

    /// Tombstones held.
    pub(crate) fn tombstones(&self) -> usize {
        self.tombstones
    }

    /// Keys held, tombstones included (what `max_keys` counts).
    pub(crate) fn held(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of keys and values held (what `max_bytes` counts).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Changes of the contents so far: the same number, the same contents.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// The keys `owner` owns here, with their entries.
    pub(crate) fn owned_by(&self, owner: &str) -> Vec<(SmolStr, Entry)> {
        let prefix = format!("node/{owner}/");
        self.entries
            .range::<str, _>((
                std::ops::Bound::Included(prefix.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, e)| (k.key.clone(), e.clone()))
            .collect()
    }

    pub(crate) fn digest(&self) -> Digest {
        debug_assert!(!self.undigested, "a digest of a store read back unfinished");
        self.digest
    }

    /// Forgets the tombstones stamped before `before_ns`: how many.
    pub(crate) fn collect(&mut self, before_ns: u64) -> usize {
        let old: Vec<SmolStr> = self
            .entries
            .iter()
            .filter(|(_, e)| e.value.is_none() && e.stamp.physical_ns < before_ns)
            .map(|(k, _)| k.key.clone())
            .collect();
        for key in &old {
            let entry = self.entries.remove(key.as_str()).expect("listed above");
            *self.slot(key) ^= fingerprint(key, &entry);
            self.tombstones -= 1;
            let _ = self.resize(self.bytes - cost(key, &entry));
        }
        if !old.is_empty() {
            self.version += 1;
        }
        old.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn entry(physical_ns: u64, node: u64, value: Option<&'static [u8]>) -> Entry {
        Entry {
            stamp: Stamp {
                physical_ns,
                logical: 0,
                node,
            },
            value: value.map(Bytes::from_static),
            writer: SmolStr::new("w"),
        }
    }

    /// The fingerprint is the one docs/guide/wire.md describes (these
    /// values computed from that text by another program): every replica
    /// of a map computes it alike.
    #[test]
    fn the_fingerprint_is_the_one_the_wire_guide_describes() {
        let stamp = Stamp {
            physical_ns: 1_700_000_000_000_000_000,
            logical: 3,
            node: 0x1234,
        };
        let set = Entry {
            stamp,
            value: Some(Bytes::from_static(br#"{"text":"milk"}"#)),
            writer: SmolStr::new("w"),
        };
        assert_eq!(fingerprint("todo/1", &set), 0xe7c5_2a28_3151_0b05);
        let delete = Entry {
            stamp: Stamp {
                logical: 4,
                ..stamp
            },
            value: None,
            writer: SmolStr::new("w"),
        };
        assert_eq!(fingerprint("todo/1", &delete), 0x82c2_864c_75f1_49c4);
    }

    /// The merge rule as the shared examples (`stamps.json`) say it, which
    /// the browser client's tests hold it to too: equal stamps settle on the
    /// greater value as bytes, a delete below any value.
    #[test]
    fn merges_are_as_the_shared_examples_say() {
        let vectors = crate::state::hlc::tests::vectors();
        let side = |e: &serde_json::Value| Entry {
            stamp: e["stamp"].as_str().unwrap().parse().unwrap(),
            value: e["value"]
                .as_str()
                .map(|v| Bytes::copy_from_slice(v.as_bytes())),
            writer: SmolStr::new("w"),
        };
        for case in vectors["merges"].as_array().unwrap() {
            let (held, incoming) = (side(&case["held"]), side(&case["incoming"]));
            let wins = case["incoming_wins"].as_bool().unwrap();
            assert_eq!(incoming.beats(&held), wins, "{case}");
            let mut store = Store::default();
            assert!(matches!(
                store.merge("k", held.clone()),
                Ok(Merged::Applied(_))
            ));
            let merged = store.merge("k", incoming.clone()).unwrap();
            assert_eq!(matches!(merged, Merged::Applied(_)), wins, "{case}");
            let kept = if wins { &incoming } else { &held };
            assert_eq!(store.entry("k").map(|e| &e.value), Some(&kept.value));
        }
    }

    /// A write: a key among a few, a stamp, a value or a delete.
    fn arb_write() -> impl Strategy<Value = (SmolStr, Entry)> {
        (
            prop::sample::select(vec!["a", "b", "c", "living.temp", "node/x/t"]),
            0u64..50,
            0u32..3,
            1u64..5,
            prop::option::of(prop::sample::select(vec![&b"1"[..], b"2", b"three"])),
        )
            .prop_map(|(key, physical_ns, logical, node, value)| {
                (
                    SmolStr::new(key),
                    Entry {
                        stamp: Stamp {
                            physical_ns,
                            logical,
                            node,
                        },
                        value: value.map(Bytes::from_static),
                        writer: SmolStr::new("w"),
                    },
                )
            })
    }

    proptest! {
        /// The tree's keys order as their strings do, and are equal when
        /// the strings are: keys around eight bytes long, alike for a
        /// while, NUL bytes among them (a key's head pads with zeros).
        #[test]
        fn keys_order_as_their_strings(
            a in "[ab\u{0}é]{0,12}",
            b in "[ab\u{0}é]{0,12}",
            shared in "[ab\u{0}]{0,10}",
        ) {
            let (a, b) = (format!("{shared}{a}"), format!("{shared}{b}"));
            let (ka, kb) = (Key::new(SmolStr::new(&a)), Key::new(SmolStr::new(&b)));
            prop_assert_eq!(ka.cmp(&kb), a.as_str().cmp(b.as_str()));
            prop_assert_eq!(ka == kb, a == b);
            let held: BTreeMap<Key, ()> = [(ka, ())].into_iter().collect();
            prop_assert_eq!(held.contains_key(b.as_str()), a == b);
        }

        /// Any order, with duplicates: the same contents and digest.
        #[test]
        fn merge_is_commutative_associative_and_idempotent(
            writes in prop::collection::vec(arb_write(), 0..40),
            order in any::<prop::sample::Index>(),
            dupes in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        ) {
            let mut forward = Store::default();
            for (k, e) in &writes {
                forward.merge(k, e.clone()).unwrap();
            }
            let mut shuffled = writes.clone();
            if !shuffled.is_empty() {
                let n = shuffled.len();
                shuffled.rotate_left(order.index(n));
                shuffled.reverse();
                for d in &dupes {
                    let w = shuffled[d.index(n)].clone();
                    shuffled.push(w);
                }
            }
            let mut other = Store::default();
            for (k, e) in shuffled {
                other.merge(&k, e).unwrap();
            }
            prop_assert_eq!(&forward, &other);
            prop_assert_eq!(forward.digest(), other.digest());
        }

        /// A store built in one pass from another's entries (a snapshot,
        /// in key order), then more merged into it with no digest kept and
        /// every entry fingerprinted at the end (a ledger read back),
        /// equals the store that kept its digest all along, owners'
        /// fingerprints included; entries out of order are merged one by
        /// one.
        #[test]
        fn a_store_read_back_undigested_is_the_same(
            writes in prop::collection::vec(arb_write(), 0..40),
            more in prop::collection::vec(arb_write(), 0..40),
        ) {
            let mut store = Store::default();
            for (k, e) in &writes {
                store.merge(k, e.clone()).unwrap();
            }
            let sorted: Vec<(Key, Entry)> =
                store.entries().map(|(k, e)| keyed(k.clone(), e.clone())).collect();
            let mut built = Store::undigested_from_sorted(sorted.clone());
            let mut reversed = sorted;
            reversed.reverse();
            let mut merged = Store::undigested_from_sorted(reversed);
            for (k, e) in &more {
                let kept = store.merge(k, e.clone());
                prop_assert_eq!(&built.merge(k, e.clone()), &kept);
                prop_assert_eq!(&merged.merge(k, e.clone()), &kept);
            }
            built.digest_all();
            merged.digest_all();
            prop_assert_eq!(&built, &store);
            prop_assert_eq!(built.digest(), store.digest());
            prop_assert_eq!(&merged, &store);
        }

        /// A tombstone is never undone by an older write, whatever order.
        #[test]
        fn a_delete_is_never_undone_by_an_older_write(writes in prop::collection::vec(arb_write(), 1..30)) {
            let mut store = Store::default();
            for (k, e) in &writes {
                store.merge(k, e.clone()).unwrap();
            }
            for (key, held) in store.entries() {
                let newest = writes.iter().filter(|(k, _)| k == key).map(|(_, e)| e).fold(None::<&Entry>, |best, e| match best {
                    Some(b) if !e.beats(b) => Some(b),
                    _ => Some(e),
                });
                prop_assert_eq!(Some(held), newest);
            }
        }
    }

    /// Anti-entropy as the replicas do it: each sends the other the
    /// buckets where their digests differ.
    fn exchange(a: &mut Store, b: &mut Store) {
        let mut wanted = [false; BUCKETS];
        for bucket in a.digest().differing(&b.digest()) {
            wanted[bucket] = true;
        }
        let from_a = a.buckets(&wanted);
        let from_b = b.buckets(&wanted);
        for (k, e) in from_a.into_iter().flatten() {
            b.merge(&k, e).unwrap();
        }
        for (k, e) in from_b.into_iter().flatten() {
            a.merge(&k, e).unwrap();
        }
        // Node-owned keys, by owner, where the fingerprints differ (the
        // replicas do it by asking the owner; here either side relays).
        for owner in ["x"] {
            if a.owned_fingerprint(owner) != b.owned_fingerprint(owner) {
                for (k, e) in a.owned_by(owner) {
                    b.merge(&k, e).unwrap();
                }
                for (k, e) in b.owned_by(owner) {
                    a.merge(&k, e).unwrap();
                }
            }
        }
    }

    proptest! {
        /// N replicas, each write delivered to a random subset of them, in
        /// random order, some twice: after one round of digest exchanges
        /// every replica holds the same entries, byte for byte, and the
        /// same digest.
        #[test]
        fn replicas_converge_after_losses_duplicates_and_anti_entropy(
            n in 2usize..6,
            writes in prop::collection::vec((arb_write(), any::<u8>(), any::<bool>()), 0..60),
            order in prop::collection::vec(any::<prop::sample::Index>(), 0..60),
        ) {
            let mut replicas = vec![Store::default(); n];
            let mut deliveries: Vec<(usize, SmolStr, Entry)> = Vec::new();
            for ((key, entry), mask, twice) in &writes {
                for (r, _) in replicas.iter().enumerate() {
                    if mask & (1 << r) != 0 {
                        deliveries.push((r, key.clone(), entry.clone()));
                        if *twice {
                            deliveries.push((r, key.clone(), entry.clone()));
                        }
                    }
                }
            }
            for (i, at) in order.iter().enumerate() {
                if !deliveries.is_empty() {
                    let j = at.index(deliveries.len());
                    let i = i % deliveries.len();
                    deliveries.swap(i, j);
                }
            }
            for (r, key, entry) in deliveries {
                replicas[r].merge(&key, entry).unwrap();
            }
            // A chain of exchanges there and back: what any replica holds
            // reaches the last, then every other.
            let chain: Vec<usize> = (0..n - 1).chain((0..n - 1).rev()).collect();
            for r in chain {
                let (left, right) = replicas.split_at_mut(r + 1);
                exchange(&mut left[r], &mut right[0]);
            }
            // The contents every replica must hold: the winner of each key
            // among the writes any replica received.
            let mut all = Store::default();
            for ((key, entry), mask, _) in &writes {
                if (0..n).any(|r| mask & (1 << r) != 0) {
                    all.merge(key, entry.clone()).unwrap();
                }
            }
            for replica in &replicas {
                prop_assert_eq!(replica, &all);
                prop_assert_eq!(replica.digest(), all.digest());
            }
        }
    }

    proptest! {
        /// Whatever is merged, a capped store holds at most its keys and
        /// bytes, counts its bytes truly, and refuses only what would pass
        /// a cap.
        #[test]
        fn a_capped_store_stays_within_its_caps(
            writes in prop::collection::vec(arb_write(), 0..60),
            max_keys in 1usize..4,
            max_bytes in 1u64..(3 * ENTRY_BYTES + 16),
        ) {
            let mut store = Store::default();
            store.set_caps(Caps { max_keys, max_bytes });
            for (key, entry) in writes {
                let before = (store.held(), store.bytes());
                let merged = store.merge(&key, entry);
                if merged.is_err() {
                    prop_assert_eq!((store.held(), store.bytes()), before);
                }
                let bytes: u64 = store.entries().map(|(k, e)| cost(k, e)).sum();
                prop_assert_eq!(store.bytes(), bytes);
                prop_assert!(store.held() <= max_keys);
                prop_assert!(store.bytes() <= max_bytes || matches!(merged, Ok(Merged::Stale)));
            }
        }
    }

    #[test]
    fn collection_forgets_old_tombstones_only_and_keeps_the_digest_true() {
        let mut store = Store::default();
        store.merge("a", entry(10, 1, None)).unwrap();
        store.merge("b", entry(30, 1, None)).unwrap();
        store.merge("c", entry(5, 1, Some(b"v"))).unwrap();
        assert_eq!(store.tombstones(), 2);
        assert_eq!(store.collect(20), 1);
        assert!(store.entry("a").is_none());
        assert!(store.entry("b").is_some());
        assert_eq!(store.get("c").unwrap(), &Bytes::from_static(b"v"));
        let mut fresh = Store::default();
        fresh.merge("b", entry(30, 1, None)).unwrap();
        fresh.merge("c", entry(5, 1, Some(b"v"))).unwrap();
        assert_eq!(store.digest(), fresh.digest());
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn equal_stamps_settle_on_the_same_value_everywhere() {
        let mut x = Store::default();
        let mut y = Store::default();
        x.merge("k", entry(1, 1, Some(b"a"))).unwrap();
        x.merge("k", entry(1, 1, Some(b"b"))).unwrap();
        y.merge("k", entry(1, 1, Some(b"b"))).unwrap();
        y.merge("k", entry(1, 1, Some(b"a"))).unwrap();
        assert_eq!(x, y);
    }
}
