//! The payloads of the state channels (`_state.<map>.*`), byte by byte.
//!
//! Every message starts `magic "AS" | version 2 | kind u8`; integers are
//! little-endian. docs/guide/wire.md gives the layout. Decoding never panics
//! and refuses, whole, anything cut short, too long, over a limit or with
//! bytes left over.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use smol_str::SmolStr;

use crate::config::{MAX_PRESENCE_BYTES, MAX_PRESENCE_SLOT_BYTES, MAX_PRESENCE_SLOTS};

use super::{
    hlc::Stamp,
    store::{BUCKETS, Digest, Entry},
};

pub(crate) const MAGIC: [u8; 2] = *b"AS";
/// Version 2: the fingerprints of the digest fold a word at a time
/// (`store::fingerprint`).
pub(crate) const VERSION: u8 = 2;

const KIND_CHANGES: u8 = 1;
const KIND_DIGEST: u8 = 2;
const KIND_HELLO: u8 = 3;
const KIND_SYNC: u8 = 4;
const KIND_ASK: u8 = 5;
const KIND_HOLD: u8 = 6;
const KIND_HELD: u8 = 7;
const KIND_PING: u8 = 8;
const KIND_ACK: u8 = 9;
const KIND_GONE: u8 = 10;
const KIND_ROSTER: u8 = 11;
const KIND_COVERS: u8 = 12;
const KIND_PRESENCE: u8 = 13;

/// Most members one roster message names.
pub(crate) const MAX_ROSTER: usize = 1024;

/// Most entries one message carries.
pub(crate) const MAX_ENTRIES: usize = 4096;
/// No bucket: live changes, not a repair.
const NO_BUCKET: u8 = 0xFF;
/// Not a bucket of the digest: the sender's own node-owned keys.
pub(crate) const OWN_KEYS: u8 = 0xFE;
/// In a [`Message::Sync`]'s buckets, no bucket: the answering replica
/// refused writes as full and lacks some of the bus's state.
pub(crate) const LACKS_WRITES: u8 = 0xFD;

/// One message of a map's replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Message {
    /// Entries: live changes (`repair: None`) or a repair of one bucket,
    /// `last` on its final chunk.
    Changes {
        repair: Option<(u8, bool)>,
        entries: Vec<(SmolStr, Entry)>,
    },
    /// A replica's digest: peers send it the buckets it lacks.
    Digest { node: u64, digest: Box<Digest> },
    /// Presence: a replica is there (or, `leaving`, is going), with the
    /// fingerprint of the keys it owns.
    Hello {
        node: u64,
        leaving: bool,
        owned: u64,
    },
    /// A replica `node` asks the owner it is sent to for the keys it owns
    /// (its fingerprint of them differs from the owner's hello).
    Ask { node: u64 },
    /// The answer to a sync request: the buckets that will follow.
    Sync { node: u64, buckets: Vec<u8> },
    /// A writer `node` asks every replica to take its writes and say so
    /// ([`Message::Held`], to its repair channel, echoing `token`).
    Hold {
        node: u64,
        token: u64,
        entries: Vec<(SmolStr, Entry)>,
    },
    /// A probe of a replica `node` that is there, to the repair channel
    /// of the replica probed, with the fingerprint of the keys it owns:
    /// [`Message::Ack`] answers it.
    Ping { node: u64, owned: u64 },
    /// The answer to a [`Message::Ping`], to the prober's repair channel.
    Ack { node: u64, owned: u64 },
    /// Presence: the replica `node` did not answer its probes for
    /// `presence_timeout` (it answers with a hello if it is there).
    Gone { node: u64 },
    /// Members of the map a replica knows (node ids, names, and the
    /// fingerprint of the keys each owns as held there), to the repair
    /// channel of a replica that caught up from it.
    Roster { members: Vec<(u64, SmolStr, u64)> },
    /// The bus time (Unix ns) from which the state of the replica `node`
    /// reflects every change on the bus, to the repair channel of a
    /// replica that catches up from it, before the buckets: a replica back
    /// after more than the horizon drops what such a peer lacks.
    Covers { node: u64, since: u64 },
    /// A replica `node` holds the writes of the hold `token` (`refused`:
    /// [`HELD_ALL`], or why it took not all of them); `keeper`: it keeps
    /// the map for others, on its disk.
    Held {
        node: u64,
        token: u64,
        keeper: bool,
        refused: u8,
    },
    /// Presence values of the replica `node` (each slot's value, or `None`:
    /// cleared), to every replica on the presence channel as they change,
    /// or to one replica's repair channel, `full`, when it meets it: a full
    /// set replaces what the receiver held of the sender.
    Presence {
        node: u64,
        full: bool,
        values: Vec<(SmolStr, Option<Bytes>)>,
    },
}

/// [`Message::Held`]'s `token` when it acknowledges no hold: a keeper
/// tells a replica it meets that it keeps the map (hold tokens are odd).
pub(crate) const KEEPER_TOKEN: u64 = 0;
/// [`Message::Hold`]'s `token` of a knock: a replica that writes and
/// knows no keeper of its map shows keepers its writes (a map earns a
/// keeper with a write, not with a hello). Replicas take its writes and
/// answer nothing.
pub(crate) const KNOCK_TOKEN: u64 = 0;
/// [`Message::Held`]'s `refused` when every write is held.
pub(crate) const HELD_ALL: u8 = 0;
/// [`Message::Held`]'s `refused` when the replica's ledger failed.
pub(crate) const HELD_NOT_LOGGED: u8 = 0x10;
/// [`Message::Held`]'s `refused` when a keeper keeps no more maps
/// (`max_maps`, `max_maps_per_writer`) and does not keep this one.
pub(crate) const HELD_NOT_KEPT: u8 = 0x11;
/// [`Message::Held`]'s `refused`, with [`KEEPER_TOKEN`], to a replica whose
/// hello asked for a map a keeper kept before and is opening from its
/// disk: the keeper's replica answers catch-ups in a moment, so the
/// replica asks again rather than start from nothing.
pub(crate) const HELD_OPENING: u8 = 0x12;
/// [`Message::Held`]'s `refused` from a keeper that keeps nothing of the
/// map, to a writer's hold of deletes alone (which opens no map): no
/// keeper's disk holds those deletes.
pub(crate) const HELD_NOTHING: u8 = 0x13;

/// The limits a decoder enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_key_bytes: usize,
    pub(crate) max_value_bytes: usize,
}

impl Limits {
    /// What every replica takes from the others (and from its own ledger):
    /// the protocol's bounds, not this replica's `max_key_bytes` and
    /// `max_value_bytes`, which bound the writes made through it. Replicas
    /// set with other limits still converge.
    pub(crate) const WIRE: Limits = Limits {
        max_key_bytes: crate::config::MOST_KEY_BYTES,
        max_value_bytes: crate::config::MOST_VALUE_BYTES,
    };
}

/// Why a payload was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a state message: {0}")]
pub(crate) struct DecodeError(pub(crate) &'static str);

impl Message {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        out.put_slice(&MAGIC);
        out.put_u8(VERSION);
        match self {
            Message::Changes { repair, entries } => {
                out.put_u8(KIND_CHANGES);
                match repair {
                    None => {
                        out.put_u8(NO_BUCKET);
                        out.put_u8(0);
                    }
                    Some((bucket, last)) => {
                        out.put_u8(*bucket);
                        out.put_u8(u8::from(*last));
                    }
                }
                put_counted(&mut out, entries);
            }
            Message::Digest { node, digest } => {
                out.put_u8(KIND_DIGEST);
                out.put_u64_le(*node);
                for bucket in digest.0 {
                    out.put_u64_le(bucket);
                }
            }
            Message::Hello {
                node,
                leaving,
                owned,
            } => {
                out.put_u8(KIND_HELLO);
                out.put_u64_le(*node);
                out.put_u8(u8::from(*leaving));
                out.put_u64_le(*owned);
            }
            Message::Ask { node } => {
                out.put_u8(KIND_ASK);
                out.put_u64_le(*node);
            }
            Message::Hold {
                node,
                token,
                entries,
            } => {
                out.put_u8(KIND_HOLD);
                out.put_u64_le(*node);
                out.put_u64_le(*token);
                put_counted(&mut out, entries);
            }
            Message::Held {
                node,
                token,
                keeper,
                refused,
            } => {
                out.put_u8(KIND_HELD);
                out.put_u64_le(*node);
                out.put_u64_le(*token);
                out.put_u8(u8::from(*keeper));
                out.put_u8(*refused);
            }
            Message::Ping { node, owned } | Message::Ack { node, owned } => {
                out.put_u8(if matches!(self, Message::Ping { .. }) {
                    KIND_PING
                } else {
                    KIND_ACK
                });
                out.put_u64_le(*node);
                out.put_u64_le(*owned);
            }
            Message::Gone { node } => {
                out.put_u8(KIND_GONE);
                out.put_u64_le(*node);
            }
            Message::Covers { node, since } => {
                out.put_u8(KIND_COVERS);
                out.put_u64_le(*node);
                out.put_u64_le(*since);
            }
            Message::Roster { members } => {
                out.put_u8(KIND_ROSTER);
                out.put_u16_le(members.len() as u16);
                for (node, name, owned) in members {
                    out.put_u64_le(*node);
                    out.put_u8(name.len() as u8);
                    out.put_slice(name.as_bytes());
                    out.put_u64_le(*owned);
                }
            }
            Message::Presence { node, full, values } => {
                out.put_u8(KIND_PRESENCE);
                out.put_u64_le(*node);
                out.put_u8(u8::from(*full));
                out.put_u16_le(values.len() as u16);
                for (slot, value) in values {
                    out.put_u8(slot.len() as u8);
                    out.put_slice(slot.as_bytes());
                    match value {
                        None => out.put_u8(0),
                        Some(value) => {
                            out.put_u8(1);
                            out.put_u16_le(value.len() as u16);
                            out.put_slice(value);
                        }
                    }
                }
            }
            Message::Sync { node, buckets } => {
                out.put_u8(KIND_SYNC);
                out.put_u64_le(*node);
                out.put_u8(buckets.len() as u8);
                out.put_slice(buckets);
            }
        }
        out.freeze()
    }

    pub(crate) fn decode(mut bytes: Bytes, limits: &Limits) -> Result<Message, DecodeError> {
        let b = &mut bytes;
        if take(b, 2)?[..] != MAGIC {
            return Err(DecodeError("bad magic"));
        }
        if u8_of(b)? != VERSION {
            return Err(DecodeError("unknown version"));
        }
        let message = match u8_of(b)? {
            KIND_CHANGES => {
                let bucket = u8_of(b)?;
                let last = bool_of(b)?;
                let repair = match bucket {
                    NO_BUCKET if !last => None,
                    NO_BUCKET => return Err(DecodeError("a live change marked last")),
                    b if usize::from(b) < BUCKETS || b == OWN_KEYS => Some((b, last)),
                    _ => return Err(DecodeError("no such bucket")),
                };
                let entries = counted_of(b, limits)?;
                Message::Changes { repair, entries }
            }
            KIND_DIGEST => {
                let node = u64_of(b)?;
                let mut digest = Box::<Digest>::default();
                for bucket in &mut digest.0 {
                    *bucket = u64_of(b)?;
                }
                Message::Digest { node, digest }
            }
            KIND_HELLO => Message::Hello {
                node: u64_of(b)?,
                leaving: bool_of(b)?,
                owned: u64_of(b)?,
            },
            KIND_ASK => Message::Ask { node: u64_of(b)? },
            KIND_HOLD => {
                let node = u64_of(b)?;
                let token = u64_of(b)?;
                let entries = counted_of(b, limits)?;
                Message::Hold {
                    node,
                    token,
                    entries,
                }
            }
            KIND_HELD => Message::Held {
                node: u64_of(b)?,
                token: u64_of(b)?,
                keeper: bool_of(b)?,
                refused: u8_of(b)?,
            },
            KIND_PING => Message::Ping {
                node: u64_of(b)?,
                owned: u64_of(b)?,
            },
            KIND_ACK => Message::Ack {
                node: u64_of(b)?,
                owned: u64_of(b)?,
            },
            KIND_GONE => Message::Gone { node: u64_of(b)? },
            KIND_COVERS => Message::Covers {
                node: u64_of(b)?,
                since: u64_of(b)?,
            },
            KIND_ROSTER => {
                let count = usize::from(u16_of(b)?);
                if count > MAX_ROSTER {
                    return Err(DecodeError("too many members"));
                }
                let mut members = Vec::with_capacity(count.min(64));
                for _ in 0..count {
                    let node = u64_of(b)?;
                    let len = usize::from(u8_of(b)?);
                    let name = std::str::from_utf8(&take(b, len)?)
                        .map(SmolStr::new)
                        .map_err(|_| DecodeError("name not UTF-8"))?;
                    members.push((node, name, u64_of(b)?));
                }
                Message::Roster { members }
            }
            KIND_SYNC => {
                let node = u64_of(b)?;
                let count = usize::from(u8_of(b)?);
                let buckets = take(b, count)?.to_vec();
                if buckets
                    .iter()
                    .any(|&x| usize::from(x) >= BUCKETS && x != OWN_KEYS && x != LACKS_WRITES)
                {
                    return Err(DecodeError("no such bucket"));
                }
                Message::Sync { node, buckets }
            }
            KIND_PRESENCE => {
                let node = u64_of(b)?;
                let full = bool_of(b)?;
                let count = usize::from(u16_of(b)?);
                if count > MAX_PRESENCE_SLOTS {
                    return Err(DecodeError("too many presence slots"));
                }
                let mut values = Vec::with_capacity(count.min(b.len() / 3));
                for _ in 0..count {
                    let len = usize::from(u8_of(b)?);
                    let slot = std::str::from_utf8(&take(b, len)?)
                        .map(SmolStr::new)
                        .map_err(|_| DecodeError("slot not UTF-8"))?;
                    if !is_slot(&slot) {
                        return Err(DecodeError("not a presence slot"));
                    }
                    let value = if bool_of(b)? {
                        let len = usize::from(u16_of(b)?);
                        if len > MAX_PRESENCE_BYTES {
                            return Err(DecodeError("presence value too long"));
                        }
                        Some(take(b, len)?)
                    } else {
                        None
                    };
                    values.push((slot, value));
                }
                Message::Presence { node, full, values }
            }
            _ => return Err(DecodeError("unknown kind")),
        };
        if b.has_remaining() {
            return Err(DecodeError("bytes left over"));
        }
        Ok(message)
    }
}

/// Whether `slot` names a presence slot: a name (letters, digits, `_`, `-`
/// in dot-separated tokens) of at most [`MAX_PRESENCE_SLOT_BYTES`].
pub(crate) fn is_slot(slot: &str) -> bool {
    slot.len() <= MAX_PRESENCE_SLOT_BYTES && crate::names::is_name(slot)
}

/// Entries back to back after a `count u32`: a ledger record, or a
/// snapshot of a whole map.
pub(crate) fn encode_all<'a>(entries: impl IntoIterator<Item = (&'a str, &'a Entry)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&0u32.to_le_bytes());
    let mut count: u32 = 0;
    for (key, entry) in entries {
        put_entry(&mut out, key, entry);
        count += 1;
    }
    out[..4].copy_from_slice(&count.to_le_bytes());
    out
}

/// Reads what [`encode_all`] wrote, refused whole if anything is wrong.
pub(crate) fn decode_all(
    bytes: Bytes,
    limits: &Limits,
) -> Result<Vec<(SmolStr, Entry)>, DecodeError> {
    decode_all_as(bytes, limits, |key, entry| (key, entry))
}

/// [`decode_all`], each entry made into a `T` as it is read.
pub(crate) fn decode_all_as<T>(
    mut bytes: Bytes,
    limits: &Limits,
    mut each: impl FnMut(SmolStr, Entry) -> T,
) -> Result<Vec<T>, DecodeError> {
    let b = &mut bytes;
    let count = u32_of(b)? as usize;
    // Each entry takes at least 24 bytes: a count beyond that is a lie.
    if count > b.remaining() / 24 {
        return Err(DecodeError("cut short"));
    }
    let mut entries = Vec::with_capacity(count);
    let mut writer = None;
    for _ in 0..count {
        let (key, entry) = entry_of(b, limits, &mut writer)?;
        entries.push(each(key, entry));
    }
    if b.has_remaining() {
        return Err(DecodeError("bytes left over"));
    }
    Ok(entries)
}

/// `count u16 | entries` (a message's entries).
fn put_counted(out: &mut BytesMut, entries: &[(SmolStr, Entry)]) {
    // Sized once: a chunk of thousands of entries is not copied as it grows.
    let len = 2 + entries
        .iter()
        .map(|(key, entry)| entry_len(key, entry))
        .sum::<usize>();
    let start = out.len();
    out.resize(start + len, 0);
    let mut at = Out(&mut out[start..]);
    at.put(&(entries.len() as u16).to_le_bytes());
    for (key, entry) in entries {
        write_entry(&mut at, key, entry);
    }
    debug_assert!(at.0.is_empty());
}

/// What [`put_counted`] wrote: at most [`MAX_ENTRIES`].
fn counted_of(b: &mut Bytes, limits: &Limits) -> Result<Vec<(SmolStr, Entry)>, DecodeError> {
    let count = usize::from(u16_of(b)?);
    if count > MAX_ENTRIES {
        return Err(DecodeError("too many entries"));
    }
    // Each entry takes at least 25 bytes: a count the payload cannot hold
    // reserves no more than it can.
    let mut entries = Vec::with_capacity(count.min(b.len() / 25));
    let mut writer = None;
    for _ in 0..count {
        entries.push(entry_of(b, limits, &mut writer)?);
    }
    Ok(entries)
}

/// `key len u16 | key | physical u64 | logical u32 | node u64 | writer len
/// u8 | writer | has value u8 | (value len u32 | value)`.
/// How many bytes [`put_entry`] writes.
fn entry_len(key: &str, entry: &Entry) -> usize {
    2 + key.len()
        + 20
        + 1
        + entry.writer.len()
        + 1
        + entry.value.as_ref().map_or(0, |v| 4 + v.len())
}

fn put_entry(out: &mut Vec<u8>, key: &str, entry: &Entry) {
    let start = out.len();
    out.resize(start + entry_len(key, entry), 0);
    let mut at = Out(&mut out[start..]);
    write_entry(&mut at, key, entry);
    debug_assert!(at.0.is_empty());
}

/// [`put_entry`]'s bytes written into room made for them: a copy a field,
/// the fixed ones of known size, no check of room a field.
fn write_entry(at: &mut Out<'_>, key: &str, entry: &Entry) {
    at.put(&(key.len() as u16).to_le_bytes());
    at.put(key.as_bytes());
    at.put(&entry.stamp.physical_ns.to_le_bytes());
    at.put(&entry.stamp.logical.to_le_bytes());
    at.put(&entry.stamp.node.to_le_bytes());
    at.put(&[entry.writer.len() as u8]);
    at.put(entry.writer.as_bytes());
    match &entry.value {
        None => at.put(&[0]),
        Some(value) => {
            at.put(&[1]);
            at.put(&(value.len() as u32).to_le_bytes());
            at.put(value);
        }
    }
}

/// Room made for bytes, filled front first.
struct Out<'a>(&'a mut [u8]);

impl Out<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let (head, rest) = std::mem::take(&mut self.0).split_at_mut(bytes.len());
        head.copy_from_slice(bytes);
        self.0 = rest;
    }
}

/// The entry at the front of `b`, read in place. `writer` is the last
/// entry's writer, taken again (a copy of its handle) when this entry's
/// names the same bytes: a message's or a snapshot's entries mostly share
/// a few writers, each then checked and made once.
fn entry_of(
    b: &mut Bytes,
    limits: &Limits,
    writer: &mut Option<SmolStr>,
) -> Result<(SmolStr, Entry), DecodeError> {
    let mut r = Cursor(&b[..]);
    let key_len = usize::from(u16::from_le_bytes(r.array()?));
    if key_len == 0 || key_len > limits.max_key_bytes {
        return Err(DecodeError("key empty or too long"));
    }
    let key = std::str::from_utf8(r.bytes(key_len)?)
        .map(SmolStr::new)
        .map_err(|_| DecodeError("key not UTF-8"))?;
    let stamp = Stamp {
        physical_ns: u64::from_le_bytes(r.array()?),
        logical: u32::from_le_bytes(r.array()?),
        node: u64::from_le_bytes(r.array()?),
    };
    let [writer_len] = r.array()?;
    let named = r.bytes(usize::from(writer_len))?;
    let writer = match writer {
        Some(last) if last.as_bytes() == named => last.clone(),
        _ => {
            let named = std::str::from_utf8(named)
                .map(SmolStr::new)
                .map_err(|_| DecodeError("writer not UTF-8"))?;
            writer.insert(named).clone()
        }
    };
    let value = match r.array()? {
        [0] => None,
        [1] => {
            let len = usize::try_from(u32::from_le_bytes(r.array()?)).unwrap_or(usize::MAX);
            if len > limits.max_value_bytes {
                return Err(DecodeError("value too long"));
            }
            // A value of its own, not a slice of the message (or snapshot)
            // it came in: kept for long, a slice would keep the whole
            // message.
            Some(Bytes::copy_from_slice(r.bytes(len)?))
        }
        _ => return Err(DecodeError("a flag neither 0 nor 1")),
    };
    let read = b.len() - r.0.len();
    b.advance(read);
    Ok((
        key,
        Entry {
            stamp,
            value,
            writer,
        },
    ))
}

/// Bytes read front first, in place: each read checks once that they are
/// there.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    /// The next `n` bytes.
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let Some((head, rest)) = self.0.split_at_checked(n) else {
            return Err(DecodeError("cut short"));
        };
        self.0 = rest;
        Ok(head)
    }

    /// The next `N` bytes, as an array.
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let Some((head, rest)) = self.0.split_first_chunk::<N>() else {
            return Err(DecodeError("cut short"));
        };
        self.0 = rest;
        Ok(*head)
    }
}

fn take(b: &mut Bytes, n: usize) -> Result<Bytes, DecodeError> {
    if b.remaining() < n {
        return Err(DecodeError("cut short"));
    }
    Ok(b.split_to(n))
}

fn u8_of(b: &mut Bytes) -> Result<u8, DecodeError> {
    if b.remaining() < 1 {
        return Err(DecodeError("cut short"));
    }
    Ok(b.get_u8())
}

fn bool_of(b: &mut Bytes) -> Result<bool, DecodeError> {
    match u8_of(b)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError("a flag neither 0 nor 1")),
    }
}

fn u16_of(b: &mut Bytes) -> Result<u16, DecodeError> {
    if b.remaining() < 2 {
        return Err(DecodeError("cut short"));
    }
    Ok(b.get_u16_le())
}

fn u32_of(b: &mut Bytes) -> Result<u32, DecodeError> {
    if b.remaining() < 4 {
        return Err(DecodeError("cut short"));
    }
    Ok(b.get_u32_le())
}

fn u64_of(b: &mut Bytes) -> Result<u64, DecodeError> {
    if b.remaining() < 8 {
        return Err(DecodeError("cut short"));
    }
    Ok(b.get_u64_le())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const LIMITS: Limits = Limits {
        max_key_bytes: 256,
        max_value_bytes: 32 * 1024,
    };

    fn arb_entry() -> impl Strategy<Value = (SmolStr, Entry)> {
        (
            "[a-z./]{1,40}",
            any::<(u64, u32, u64)>(),
            // Entries of a message or snapshot mostly share writers: the
            // decoder takes a writer named as the last entry's again.
            prop_oneof![
                Just("w".to_string()),
                Just("a-writer-named-past-inline-length".to_string()),
                "[a-z_-]{0,20}"
            ],
            prop::option::of(prop::collection::vec(any::<u8>(), 0..100)),
        )
            .prop_map(|(key, (p, l, n), writer, value)| {
                (
                    SmolStr::new(key),
                    Entry {
                        stamp: Stamp {
                            physical_ns: p,
                            logical: l,
                            node: n,
                        },
                        value: value.map(Bytes::from),
                        writer: SmolStr::new(writer),
                    },
                )
            })
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (
                prop::option::of((0u8..BUCKETS as u8, any::<bool>())),
                prop::collection::vec(arb_entry(), 0..8)
            )
                .prop_map(|(repair, entries)| Message::Changes { repair, entries }),
            (any::<u64>(), prop::array::uniform32(any::<u64>())).prop_map(|(node, half)| {
                let mut digest = Box::<Digest>::default();
                digest.0[..32].copy_from_slice(&half);
                digest.0[32..].copy_from_slice(&half);
                Message::Digest { node, digest }
            }),
            (any::<u64>(), any::<bool>(), any::<u64>()).prop_map(|(node, leaving, owned)| {
                Message::Hello {
                    node,
                    leaving,
                    owned,
                }
            }),
            any::<u64>().prop_map(|node| Message::Ask { node }),
            (
                any::<u64>(),
                prop::collection::vec(
                    prop_oneof![
                        6 => 0u8..BUCKETS as u8,
                        1 => Just(OWN_KEYS),
                        1 => Just(LACKS_WRITES)
                    ],
                    0..64
                )
            )
                .prop_map(|(node, buckets)| Message::Sync { node, buckets }),
            (
                any::<(u64, u64)>(),
                prop::collection::vec(arb_entry(), 0..8)
            )
                .prop_map(|((node, token), entries)| Message::Hold {
                    node,
                    token,
                    entries
                }),
            any::<(u64, u64)>().prop_map(|(node, owned)| Message::Ping { node, owned }),
            any::<(u64, u64)>().prop_map(|(node, owned)| Message::Ack { node, owned }),
            any::<u64>().prop_map(|node| Message::Gone { node }),
            any::<(u64, u64)>().prop_map(|(node, since)| Message::Covers { node, since }),
            prop::collection::vec((any::<u64>(), "[a-z_-]{1,20}", any::<u64>()), 0..8).prop_map(
                |members| Message::Roster {
                    members: members
                        .into_iter()
                        .map(|(n, name, owned)| (n, SmolStr::new(name), owned))
                        .collect(),
                }
            ),
            (
                any::<(u64, bool)>(),
                prop::collection::vec(
                    (
                        "[a-z][a-z0-9_-]{0,15}",
                        prop::option::of(prop::collection::vec(any::<u8>(), 0..64))
                    ),
                    0..8
                )
            )
                .prop_map(|((node, full), values)| Message::Presence {
                    node,
                    full,
                    values: values
                        .into_iter()
                        .map(|(slot, value)| (SmolStr::new(slot), value.map(Bytes::from)))
                        .collect(),
                }),
            any::<(u64, u64, bool, u8)>().prop_map(|(node, token, keeper, refused)| {
                Message::Held {
                    node,
                    token,
                    keeper,
                    refused,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn messages_round_trip(message in arb_message()) {
            prop_assert_eq!(Message::decode(message.encode(), &LIMITS).unwrap(), message);
        }

        #[test]
        fn any_cut_or_flipped_byte_is_refused_or_another_message_never_a_panic(
            message in arb_message(),
            cut in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let bytes = message.encode();
            let cut = cut.index(bytes.len());
            prop_assert!(Message::decode(bytes.slice(..cut), &LIMITS).is_err());
            let mut flipped = bytes.to_vec();
            let at = flip.0.index(flipped.len());
            flipped[at] ^= flip.1;
            let _ = Message::decode(Bytes::from(flipped), &LIMITS);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = Message::decode(Bytes::from(bytes.clone()), &LIMITS);
            let _ = decode_all(Bytes::from(bytes), &LIMITS);
        }

        #[test]
        fn ledger_records_round_trip(entries in prop::collection::vec(arb_entry(), 0..20)) {
            let bytes = encode_all(entries.iter().map(|(k, e)| (k.as_str(), e)));
            prop_assert_eq!(decode_all(Bytes::from(bytes), &LIMITS).unwrap(), entries);
        }
    }

    #[test]
    fn over_the_limits_is_refused() {
        let big = Message::Changes {
            repair: None,
            entries: vec![(
                "k".into(),
                Entry {
                    stamp: Stamp::default(),
                    value: Some(Bytes::from(vec![0; 40 * 1024])),
                    writer: SmolStr::new("w"),
                },
            )],
        };
        assert_eq!(
            Message::decode(big.encode(), &LIMITS),
            Err(DecodeError("value too long"))
        );
        let mut claims = BytesMut::new();
        claims.put_slice(b"AS\x02\x01\xFF\x00");
        claims.put_u16_le(4000);
        assert_eq!(
            Message::decode(claims.freeze(), &LIMITS),
            Err(DecodeError("cut short")),
            "a count larger than what follows is refused, not trusted"
        );
    }
}
