//! The versioned binary envelope of a wave: the body of a NATS message.
//!
//! Laid out byte by byte in ARCHITECTURE.md ("Wire format"), with the test
//! vectors in `tests/vectors/wire/`. The channel is not in the envelope: it
//! travels as the NATS subject (an opaque token when frequency hopping), so
//! [`decode`] is given it.
//!
//! This module lives under `wave` so that it reads and sets the fields of
//! [`Wave`] directly. Decoding is split in two: `decode` frames the body
//! (magic, version, flags, lengths, truncation) into a `Raw` of borrowed
//! slices, and `Raw::build` checks every value and makes the wave. The test
//! helper `Parts::into_wave` goes through the same `build`, so the rules a
//! decoded wave obeys are written once.
//!
//! Decoding never panics: every read goes through `Reader::take`, which
//! checks bounds with `get` and checked additions.

use std::sync::Arc;

use bytes::Bytes;
use smol_str::SmolStr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{Amplitude, DIFFRACTS, Extras, Phase, REFLECTS, SEALED, TraceContext, Wave, WaveId};
use crate::{
    Channel,
    channel::is_token_char,
    error::{WireError, WireErrorKind},
    reflection::{MAX_REFLECTION_MESSAGE_BYTES, Reflection, ReflectionReason},
};

/// The first byte of every envelope.
pub const MAGIC: u8 = 0xAE;

/// The version byte of version 1, the full envelope (still read; written
/// when [`WireVersion::V1`] is chosen).
pub const VERSION: u8 = 1;

/// The version byte of version 2, the compact envelope (written by
/// default).
pub const VERSION_2: u8 = 2;

/// The second byte of a batch frame: several envelopes in one body
/// ([`encode_frame`], [`frame_envelopes`]).
pub const FRAME: u8 = 0xFB;

/// Length of version 1's fixed part, up to and including the source name
/// length byte.
pub const HEADER_LEN: usize = 63;

/// Length of version 2's fixed part for the common wave (amplitude 1, phase
/// 0, no hops, emitted in its id's millisecond, flags in one byte), up to
/// and including the source name length byte: at most this, at least 26.
pub const V2_COMMON_HEADER_LEN: usize = 28;

/// Version 2, flag bit 10: the amplitude (f64) follows; without it, 1.0.
pub const FLAG_AMPLITUDE: u32 = 1 << 10;

/// Version 2, flag bit 11: the source amplitude `a0` (f64) follows; without
/// it, equal to the amplitude.
pub const FLAG_SOURCE_AMPLITUDE: u32 = 1 << 11;

/// Version 2, flag bit 12: the phase (f64) follows; without it, 0.
pub const FLAG_PHASE: u32 = 1 << 12;

/// Version 2, flag bit 13: the id's 4 random bytes follow; without them,
/// they are the origin's high 32 bits.
pub const FLAG_ID_NODE: u32 = 1 << 13;

/// Version 2, flag bit 14: `emitted_at` follows as a u64; without it, as a
/// varint of the nanoseconds past the id's millisecond.
pub const FLAG_EMITTED_AT: u32 = 1 << 14;

/// The flags version 2 knows.
pub const KNOWN_FLAGS_V2: u32 = KNOWN_FLAGS as u32
    | FLAG_AMPLITUDE
    | FLAG_SOURCE_AMPLITUDE
    | FLAG_PHASE
    | FLAG_ID_NODE
    | FLAG_EMITTED_AT;

/// Which envelope an aether writes: `[aether.nats] wire_version`, 1 or 2
/// (the default). Both are always read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WireVersion {
    /// The full envelope: a 63-byte fixed part.
    V1,
    /// The compact envelope: 28 bytes for the common wave.
    #[default]
    V2,
}

impl WireVersion {
    /// The version byte.
    pub fn byte(self) -> u8 {
        match self {
            WireVersion::V1 => VERSION,
            WireVersion::V2 => VERSION_2,
        }
    }
}

impl serde::Serialize for WireVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.byte())
    }
}

impl<'de> serde::Deserialize<'de> for WireVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match <u8 as serde::Deserialize>::deserialize(d)? {
            1 => Ok(WireVersion::V1),
            2 => Ok(WireVersion::V2),
            other => Err(serde::de::Error::custom(format!(
                "wire version {other}; 1 or 2"
            ))),
        }
    }
}

/// Flag bit 0: the time decay section (`decay_per_s`, `amplified_at`) follows
/// the source name.
pub const FLAG_DECAY: u16 = 1 << 0;

/// Flag bit 1: the correlation key section follows.
pub const FLAG_CORRELATION_KEY: u16 = 1 << 1;

/// Flag bit 2: the reply channel section follows.
pub const FLAG_REPLY_TO: u16 = 1 << 2;

/// Flag bit 3: the wave diffracts (no section).
pub const FLAG_DIFFRACT: u16 = 1 << 3;

/// Flag bit 4: the wave reflects on failure (no section).
pub const FLAG_REFLECT: u16 = 1 << 4;

/// Flag bit 5: the wave is a reflection; the reflection section (reason,
/// message, the channel it was emitted on) follows the reply channel.
pub const FLAG_REFLECTED: u16 = 1 << 5;

/// Flag bit 6: the trace section (W3C trace id, span id, trace flags)
/// follows the reflection section.
pub const FLAG_TRACE: u16 = 1 << 6;

/// Flag bit 7: the body ends with a [`SIGNATURE_LEN`]-byte HMAC-SHA256 of
/// the subject and the rest of the body, made with the source's key
/// ([`encode_signed`], [`verify`]).
pub const FLAG_SIGNED: u16 = 1 << 7;

/// Flag bit 9: the payload is sealed: a 24-byte nonce, then the payload
/// encrypted with XChaCha20-Poly1305 and its 16-byte tag, the subject as
/// associated data ([`crate::config::EncryptionRule`]).
pub const FLAG_SEALED: u16 = 1 << 9;

/// The flags version 1 knows; any other bit set is refused
/// ([`WireErrorKind::UnknownFlags`]).
pub const KNOWN_FLAGS: u16 = FLAG_DECAY
    | FLAG_CORRELATION_KEY
    | FLAG_REPLY_TO
    | FLAG_DIFFRACT
    | FLAG_REFLECT
    | FLAG_REFLECTED
    | FLAG_TRACE
    | FLAG_SIGNED
    | FLAG_SEALED;

/// Length of the trace section: trace id (16), span id (8), flags (1).
pub const TRACE_LEN: usize = 25;

/// Length of the signature at the end of a signed body.
pub const SIGNATURE_LEN: usize = 32;

/// The longest reflection message, in bytes.
pub const MAX_REFLECTION_MESSAGE_LEN: usize = MAX_REFLECTION_MESSAGE_BYTES;

/// The longest source name, in bytes (the vibrator name limit).
pub const MAX_SOURCE_LEN: usize = crate::names::MAX_NAME_BYTES;

/// The longest correlation key, in bytes.
pub const MAX_CORRELATION_KEY_LEN: usize = 256;

/// The default [`Limits::max_body_bytes`]: 1 MiB, NATS's default
/// `max_payload`.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1_048_576;

// The source length is one byte on the wire.
const _: () = assert!(MAX_SOURCE_LEN <= u8::MAX as usize);

/// Offsets of the fixed fields (the table in ARCHITECTURE.md), for the
/// encoder and the decoder alike.
const AT_FLAGS: usize = 2;
const AT_ID: usize = 4;
const AT_EMITTED_AT: usize = 20;
const AT_ORIGIN: usize = 28;
const AT_AMPLITUDE: usize = 36;
const AT_SOURCE_AMPLITUDE: usize = 44;
const AT_PHASE: usize = 52;
const AT_HOPS: usize = 60;
const AT_SOURCE_LEN: usize = 62;

/// What [`decode`] accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest body decoded, in bytes; a larger one is refused as
    /// [`WireErrorKind::Oversized`]. Default [`DEFAULT_MAX_BODY_BYTES`].
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

// ---------------------------------------------------------------- encoding

/// The variable sections of a wave as they go on the wire.
struct Sections<'a> {
    source: &'a [u8],
    /// [`FLAG_DIFFRACT`] and [`FLAG_REFLECT`], which have no section.
    bare_flags: u16,
    decay: Option<(f64, u64)>,
    key: Option<&'a [u8]>,
    reply_to: Option<&'a [u8]>,
    /// Reason code, message, channel.
    reflection: Option<(u8, &'a [u8], &'a [u8])>,
    trace: Option<TraceContext>,
    /// A signature follows the payload.
    signed: bool,
}

impl<'a> Sections<'a> {
    fn of(wave: &'a Wave) -> Self {
        let source = wave
            .source
            .as_deref()
            .filter(|s| source_problem(s.as_bytes()).is_none())
            .map_or(&[][..], str::as_bytes);
        let mut bare_flags = 0;
        if wave.flags & DIFFRACTS != 0 {
            bare_flags |= FLAG_DIFFRACT;
        }
        if wave.flags & REFLECTS != 0 {
            bare_flags |= FLAG_REFLECT;
        }
        if wave.flags & SEALED != 0 {
            bare_flags |= FLAG_SEALED;
        }
        let Some(extras) = wave.extras.as_deref() else {
            return Self {
                source,
                bare_flags,
                decay: None,
                key: None,
                reply_to: None,
                reflection: None,
                trace: None,
                signed: false,
            };
        };
        let decay = (extras.decay_per_s.to_bits() != 0 || extras.amplified_at_ns != 0)
            .then_some((extras.decay_per_s, extras.amplified_at_ns));
        let key = extras
            .correlation_key
            .as_deref()
            .filter(|k| !k.is_empty())
            .map(|k| truncate_at_char_boundary(k, MAX_CORRELATION_KEY_LEN).as_bytes());
        let reply_to = extras
            .reply_to
            .as_ref()
            .filter(|c| c.validate_concrete().is_ok())
            .map(|c| c.as_str().as_bytes());
        let reflection = extras
            .reflection
            .as_deref()
            .filter(|r| r.channel.validate_concrete().is_ok())
            .map(|r| {
                let message = r.reason.message().unwrap_or("");
                let message = truncate_at_char_boundary(message, MAX_REFLECTION_MESSAGE_LEN);
                (
                    r.reason.code(),
                    message.as_bytes(),
                    r.channel.as_str().as_bytes(),
                )
            });
        Self {
            source,
            bare_flags,
            decay,
            key,
            reply_to,
            reflection,
            trace: extras.trace,
            signed: false,
        }
    }

    fn flags(&self) -> u16 {
        let mut flags = self.bare_flags;
        if self.decay.is_some() {
            flags |= FLAG_DECAY;
        }
        if self.key.is_some() {
            flags |= FLAG_CORRELATION_KEY;
        }
        if self.reply_to.is_some() {
            flags |= FLAG_REPLY_TO;
        }
        if self.reflection.is_some() {
            flags |= FLAG_REFLECTED;
        }
        if self.trace.is_some() {
            flags |= FLAG_TRACE;
        }
        if self.signed {
            flags |= FLAG_SIGNED;
        }
        flags
    }

    /// Version 2's flags for `wave`: the sections' and the defaults left
    /// out.
    fn flags_v2(&self, wave: &Wave) -> u32 {
        let mut flags = u32::from(self.flags());
        let amplitude = wave.amplitude.value();
        if amplitude.to_bits() != 1.0f64.to_bits() {
            flags |= FLAG_AMPLITUDE;
        }
        if wave.source_amplitude.value().to_bits() != amplitude.to_bits() {
            flags |= FLAG_SOURCE_AMPLITUDE;
        }
        if wave.phase.radians().to_bits() != 0 {
            flags |= FLAG_PHASE;
        }
        let id = wave.id.as_u128();
        if id_node(id) != (wave.origin >> 32) as u32 {
            flags |= FLAG_ID_NODE;
        }
        if wave.emitted_at_ns / 1_000_000 != id_millis(id) {
            flags |= FLAG_EMITTED_AT;
        }
        flags
    }

    /// The length of version 2's fixed part (with the source length byte).
    fn fixed_len_v2(&self, wave: &Wave) -> usize {
        let flags = self.flags_v2(wave);
        let id = wave.id.as_u128();
        let mut len = 2 + varint_len(flags) + 12 + 8 + 1;
        len += if flags & FLAG_EMITTED_AT != 0 {
            8
        } else {
            varint_len((wave.emitted_at_ns - id_millis(id) * 1_000_000) as u32)
        };
        len += varint_len(u32::from(wave.hops));
        for (flag, size) in [
            (FLAG_AMPLITUDE, 8),
            (FLAG_SOURCE_AMPLITUDE, 8),
            (FLAG_PHASE, 8),
            (FLAG_ID_NODE, 4),
        ] {
            if flags & flag != 0 {
                len += size;
            }
        }
        len
    }

    fn len(&self, version: WireVersion, wave: &Wave) -> usize {
        let fixed = match version {
            WireVersion::V1 => HEADER_LEN,
            WireVersion::V2 => self.fixed_len_v2(wave),
        };
        fixed + self.tail_len(wave.payload.len())
    }

    /// The length of what follows the source name length byte.
    fn tail_len(&self, payload_len: usize) -> usize {
        self.source.len()
            + self.decay.map_or(0, |_| 16)
            + self.key.map_or(0, |k| 2 + k.len())
            + self.reply_to.map_or(0, |r| 2 + r.len())
            + self
                .reflection
                .map_or(0, |(_, m, c)| 1 + 2 + m.len() + 2 + c.len())
            + self.trace.map_or(0, |_| TRACE_LEN)
            + payload_len
            + if self.signed { SIGNATURE_LEN } else { 0 }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary.
fn truncate_at_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The wave id of its three parts: Unix milliseconds, the random bytes,
/// the sequence ([`id_millis`], [`id_node`], [`id_sequence`]).
fn id_of(millis: u64, node: u32, sequence: u64) -> u128 {
    (u128::from(millis & 0xFFFF_FFFF_FFFF) << 80)
        | (u128::from(node) << 48)
        | u128::from(sequence & 0xFFFF_FFFF_FFFF)
}

/// A u48, little-endian.
fn u48_le(bytes: [u8; 6]) -> u64 {
    let mut wide = [0u8; 8];
    wide[..6].copy_from_slice(&bytes);
    u64::from_le_bytes(wide)
}

/// The wave id's Unix milliseconds (its bytes 0 to 5).
fn id_millis(id: u128) -> u64 {
    (id >> 80) as u64
}

/// The wave id's random bytes 6 to 9.
fn id_node(id: u128) -> u32 {
    (id >> 48) as u32
}

/// The wave id's sequence (its bytes 10 to 15).
fn id_sequence(id: u128) -> u64 {
    (id as u64) & 0xFFFF_FFFF_FFFF
}

/// The bytes of `value` as a LEB128 varint.
fn varint_len(value: u32) -> usize {
    match value {
        0..=0x7F => 1,
        0x80..=0x3FFF => 2,
        0x4000..=0x1F_FFFF => 3,
        0x20_0000..=0xFFF_FFFF => 4,
        _ => 5,
    }
}

/// Writes `value` as a LEB128 varint.
fn put_varint(out: &mut impl Sink, mut value: u32) {
    let mut bytes = [0u8; 5];
    let mut n = 0;
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            bytes[n] = byte;
            n += 1;
            break;
        }
        bytes[n] = byte | 0x80;
        n += 1;
    }
    out.put(&bytes[..n]);
}

/// The length in bytes of `encode(wave)` (version 2).
pub fn encoded_len(wave: &Wave) -> usize {
    encoded_len_as(WireVersion::V2, wave)
}

/// The length in bytes of `encode_as(version, wave)`.
pub fn encoded_len_as(version: WireVersion, wave: &Wave) -> usize {
    Sections::of(wave).len(version, wave)
}

/// The envelope of `wave`: the body of its NATS message.
///
/// One allocation of exactly [`encoded_len`] bytes; the payload is copied
/// once. The channel is not written (it is the NATS subject).
///
/// Encoding never fails, and a wave the public API builds always travels
/// exactly ([`check`] says so for any wave). As a defence only, a field the
/// envelope cannot carry is never written out of bounds: an empty key is
/// written as no key, one longer than [`MAX_CORRELATION_KEY_LEN`] bytes is
/// cut at the last character boundary within it (and so is a reflection
/// message longer than [`MAX_REFLECTION_MESSAGE_LEN`]), and an invalid source
/// name, reply channel or reflected channel is left out (with its section).
///
/// Version 2, the default; [`encode_as`] writes either.
pub fn encode(wave: &Wave) -> Bytes {
    encode_as(WireVersion::V2, wave)
}

/// [`encode`] in `version`.
pub fn encode_as(version: WireVersion, wave: &Wave) -> Bytes {
    let sections = Sections::of(wave);
    let len = sections.len(version, wave);
    let mut out = Vec::with_capacity(len);
    write(version, wave, &sections, &mut out);
    debug_assert_eq!(out.len(), len);
    debug_assert_eq!(out.capacity(), len);
    Bytes::from(out)
}

/// Like [`encode`], but into a per-thread arena of 64 KiB blocks: no
/// allocation per wave, and the envelope's clones (the connection keeps one)
/// are reference counts. For the hot emit path of a medium.
pub(crate) fn encode_pooled(version: WireVersion, wave: &Wave) -> Bytes {
    thread_local! {
        static ARENA: std::cell::RefCell<bytes::BytesMut> =
            std::cell::RefCell::new(bytes::BytesMut::new());
    }
    const BLOCK: usize = 64 * 1024;
    let sections = Sections::of(wave);
    let len = sections.len(version, wave);
    if len > BLOCK / 4 {
        return encode_as(version, wave);
    }
    ARENA.with_borrow_mut(|arena| {
        if arena.capacity() < len {
            *arena = bytes::BytesMut::with_capacity(BLOCK);
        }
        write(version, wave, &sections, arena);
        debug_assert_eq!(arena.len(), len);
        arena.split().freeze()
    })
}

/// A wave's envelope about to be written into a batch frame, its layout
/// worked out once.
pub(crate) struct Framed<'a> {
    wave: &'a Wave,
    sections: Sections<'a>,
    version: WireVersion,
    len: usize,
}

impl<'a> Framed<'a> {
    pub(crate) fn of(version: WireVersion, wave: &'a Wave) -> Self {
        let sections = Sections::of(wave);
        let len = sections.len(version, wave);
        Self {
            wave,
            sections,
            version,
            len,
        }
    }

    /// The bytes it takes in a frame: its length varint, then itself.
    pub(crate) fn entry_len(&self) -> usize {
        varint_len(self.len as u32) + self.len
    }

    /// Appends it to `out`: its length as a varint, then the envelope,
    /// written in place (no envelope of its own first).
    pub(crate) fn write_into(&self, out: &mut bytes::BytesMut) {
        out.reserve(self.entry_len());
        put_varint(out, self.len as u32);
        write(self.version, self.wave, &self.sections, out);
    }
}

/// Appends an envelope already written to `out`, after its length as a
/// varint.
pub(crate) fn put_framed(out: &mut bytes::BytesMut, envelope: &[u8]) {
    out.reserve(3 + envelope.len());
    put_varint(out, envelope.len() as u32);
    out.put(envelope);
}

/// The bytes of `value` as a LEB128 varint, for a batch frame's writer.
pub(crate) fn framed_len_len(value: usize) -> usize {
    varint_len(value as u32)
}

/// Where [`write`] puts bytes: a `Vec` or an arena.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for bytes::BytesMut {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Writes the envelope of `wave` in `version`, laid out by `sections`,
/// into `out`.
fn write(version: WireVersion, wave: &Wave, sections: &Sections<'_>, out: &mut impl Sink) {
    match version {
        WireVersion::V1 => write_fixed_v1(wave, sections, out),
        WireVersion::V2 => write_fixed_v2(wave, sections, out),
    }
    write_tail(wave, sections, out);
}

/// Version 2's fixed part, up to and including the source name length.
fn write_fixed_v2(wave: &Wave, sections: &Sections<'_>, out: &mut impl Sink) {
    let flags = sections.flags_v2(wave);
    let id = wave.id.as_u128();
    // At most 2 + 3 + 12 + 8 + 8 + 3 + 8 + 8 + 8 + 4 + 1 = 73 bytes.
    let mut fixed = FixedBuf::default();
    fixed.put(&[MAGIC, VERSION_2]);
    put_varint(&mut fixed, flags);
    fixed.put(&id_millis(id).to_le_bytes()[..6]);
    fixed.put(&id_sequence(id).to_le_bytes()[..6]);
    fixed.put(&wave.origin.to_le_bytes());
    if flags & FLAG_EMITTED_AT != 0 {
        fixed.put(&wave.emitted_at_ns.to_le_bytes());
    } else {
        // Under 10^6: the nanoseconds past the id's millisecond.
        put_varint(
            &mut fixed,
            (wave.emitted_at_ns - id_millis(id) * 1_000_000) as u32,
        );
    }
    put_varint(&mut fixed, u32::from(wave.hops));
    if flags & FLAG_AMPLITUDE != 0 {
        fixed.put(&wave.amplitude.value().to_le_bytes());
    }
    if flags & FLAG_SOURCE_AMPLITUDE != 0 {
        fixed.put(&wave.source_amplitude.value().to_le_bytes());
    }
    if flags & FLAG_PHASE != 0 {
        fixed.put(&wave.phase.radians().to_le_bytes());
    }
    if flags & FLAG_ID_NODE != 0 {
        fixed.put(&id_node(id).to_be_bytes());
    }
    fixed.put(&[sections.source.len() as u8]);
    out.put(fixed.as_slice());
}

/// A stack buffer for version 2's fixed part.
struct FixedBuf {
    bytes: [u8; 80],
    len: usize,
}

impl Default for FixedBuf {
    fn default() -> Self {
        Self {
            bytes: [0; 80],
            len: 0,
        }
    }
}

impl FixedBuf {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Sink for FixedBuf {
    fn put(&mut self, bytes: &[u8]) {
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }
}

/// Version 1's fixed header.
fn write_fixed_v1(wave: &Wave, sections: &Sections<'_>, out: &mut impl Sink) {
    // The fixed header, built at its offsets and put in one piece.
    let mut header = [0u8; HEADER_LEN];
    header[0] = MAGIC;
    header[1] = VERSION;
    put_field(&mut header, AT_FLAGS, sections.flags().to_le_bytes());
    put_field(&mut header, AT_ID, wave.id.as_u128().to_be_bytes());
    put_field(&mut header, AT_EMITTED_AT, wave.emitted_at_ns.to_le_bytes());
    put_field(&mut header, AT_ORIGIN, wave.origin.to_le_bytes());
    put_field(
        &mut header,
        AT_AMPLITUDE,
        wave.amplitude.value().to_le_bytes(),
    );
    put_field(
        &mut header,
        AT_SOURCE_AMPLITUDE,
        wave.source_amplitude.value().to_le_bytes(),
    );
    put_field(&mut header, AT_PHASE, wave.phase.radians().to_le_bytes());
    put_field(&mut header, AT_HOPS, wave.hops.to_le_bytes());
    // At most MAX_SOURCE_LEN (64) bytes: Sections::of keeps valid names only.
    header[AT_SOURCE_LEN] = sections.source.len() as u8;
    out.put(&header);
}

/// What follows the fixed part, in both versions: the source name, the
/// sections, the payload.
fn write_tail(wave: &Wave, sections: &Sections<'_>, out: &mut impl Sink) {
    out.put(sections.source);
    if let Some((decay_per_s, amplified_at_ns)) = sections.decay {
        out.put(&decay_per_s.to_le_bytes());
        out.put(&amplified_at_ns.to_le_bytes());
    }
    // Keys are at most 256 bytes and reply channels are valid (at most 256
    // bytes), so both lengths fit in a u16.
    if let Some(key) = sections.key {
        out.put(&(key.len() as u16).to_le_bytes());
        out.put(key);
    }
    if let Some(reply_to) = sections.reply_to {
        out.put(&(reply_to.len() as u16).to_le_bytes());
        out.put(reply_to);
    }
    // A message is at most 1024 bytes, a channel at most 256.
    if let Some((code, message, channel)) = sections.reflection {
        out.put(&[code]);
        out.put(&(message.len() as u16).to_le_bytes());
        out.put(message);
        out.put(&(channel.len() as u16).to_le_bytes());
        out.put(channel);
    }
    if let Some(trace) = &sections.trace {
        out.put(&trace.trace_id());
        out.put(&trace.span_id());
        out.put(&[trace.flags()]);
    }
    out.put(&wave.payload);
}

/// Like [`encode`], then signed for `subject` (the NATS subject the body is
/// published on) with `key`, the key of the wave's source: [`FLAG_SIGNED`]
/// is set and the body ends with the [`SIGNATURE_LEN`]-byte HMAC-SHA256 of
/// the subject's length (u16, little-endian), the subject, and every byte of
/// the body before the signature. The subject is signed so that a signed
/// body cannot be replayed onto another channel.
///
/// Version 2, the default; [`encode_signed_as`] writes either.
pub fn encode_signed(wave: &Wave, subject: &str, key: &[u8]) -> Bytes {
    encode_signed_as(WireVersion::V2, wave, subject, key)
}

/// [`encode_signed`] in `version`.
pub fn encode_signed_as(version: WireVersion, wave: &Wave, subject: &str, key: &[u8]) -> Bytes {
    let mut sections = Sections::of(wave);
    sections.signed = true;
    let len = sections.len(version, wave);
    let mut out = Vec::with_capacity(len);
    write(version, wave, &sections, &mut out);
    let signature = signature_of(subject, &out, key);
    out.extend_from_slice(&signature);
    debug_assert_eq!(out.len(), len);
    Bytes::from(out)
}

/// The HMAC-SHA256 of `subject` and `signed` with `key`.
fn signature_of(subject: &str, signed: &[u8], key: &[u8]) -> [u8; SIGNATURE_LEN] {
    mac_of(subject, signed, key).finalize().into_bytes().into()
}

/// The HMAC-SHA256 state over `subject` (its length as u16 LE, then its
/// bytes) and `signed`, keyed with `key`.
fn mac_of(subject: &str, signed: &[u8], key: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    // Subjects are at most a few hundred bytes; a longer one is cut in the
    // length only, and still signed whole.
    mac.update(&(subject.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
    mac.update(subject.as_bytes());
    mac.update(signed);
    mac
}

/// What [`verify`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signature {
    /// The body carries no signature ([`FLAG_SIGNED`] is clear).
    Unsigned,
    /// The signature matches `key` and the subject.
    Valid,
    /// The body claims a signature that does not match (wrong key, another
    /// subject, or altered bytes).
    Invalid,
}

/// Checks the signature of `body` (an envelope published on `subject`)
/// against `key`, in constant time. A body too short to hold the flags and a
/// signature is [`Signature::Invalid`] when it claims one.
pub fn verify(subject: &str, body: &[u8], key: &[u8]) -> Signature {
    let Some(flags) = flags_of(body) else {
        return Signature::Unsigned;
    };
    if flags & u32::from(FLAG_SIGNED) == 0 {
        return Signature::Unsigned;
    }
    let Some(split) = body.len().checked_sub(SIGNATURE_LEN) else {
        return Signature::Invalid;
    };
    let (signed, signature) = body.split_at(split);
    match mac_of(subject, signed, key).verify_slice(signature) {
        Ok(()) => Signature::Valid,
        Err(_) => Signature::Invalid,
    }
}

/// The most envelopes one batch frame may say it holds.
pub const MAX_FRAME_WAVES: usize = 65_535;

/// A batch frame holding `envelopes` (each a whole envelope, either
/// version): `0xAE 0xFB`, the count as a varint, then each envelope's
/// length as a varint and its bytes. One NATS message carries it; the
/// receiver treats each envelope as if it had come alone.
pub fn encode_frame<B: AsRef<[u8]>>(envelopes: &[B]) -> Bytes {
    let len = 2
        + varint_len(envelopes.len() as u32)
        + envelopes
            .iter()
            .map(|e| varint_len(e.as_ref().len() as u32) + e.as_ref().len())
            .sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.put(&[MAGIC, FRAME]);
    put_varint(&mut out, envelopes.len() as u32);
    for envelope in envelopes {
        put_varint(&mut out, envelope.as_ref().len() as u32);
        out.put(envelope.as_ref());
    }
    debug_assert_eq!(out.len(), len);
    Bytes::from(out)
}

/// Whether `body` is a batch frame (its first two bytes say so).
pub fn is_frame(body: &[u8]) -> bool {
    body.starts_with(&[MAGIC, FRAME])
}

/// The envelopes of the batch frame `body`, as slices of it (no copy).
/// Checked whole before any is given: a body over the limit is
/// `Oversized`; one that is not a frame, says it holds no envelope or more
/// than [`MAX_FRAME_WAVES`] or more than its bytes could, holds an empty
/// envelope, ends inside one, or has bytes after the last is `BadFrame`.
/// Never panics. The envelopes themselves are not decoded here.
pub fn frame_envelopes(body: &Bytes, limits: &Limits) -> Result<Vec<Bytes>, WireError> {
    Ok(frame_ranges(body, limits)?
        .into_iter()
        .map(|range| body.slice(range))
        .collect())
}

/// Where the envelopes of the batch frame `body` lie, checked as
/// [`frame_envelopes`] checks them.
pub(crate) fn frame_ranges(
    body: &[u8],
    limits: &Limits,
) -> Result<Vec<std::ops::Range<usize>>, WireError> {
    let bad = |message: String| WireError::new(WireErrorKind::BadFrame, message);
    if body.len() > limits.max_body_bytes {
        return Err(WireError::new(
            WireErrorKind::Oversized,
            format!(
                "frame is {} bytes, the limit is {} (Limits::max_body_bytes)",
                body.len(),
                limits.max_body_bytes
            ),
        ));
    }
    if !is_frame(body) {
        return Err(bad("not a batch frame (it starts 0xAE 0xFB)".to_string()));
    }
    let mut reader = Reader { body, at: 2 };
    let count = reader
        .varint(3, "frame count")
        .map_err(|e| bad(e.message().to_string()))? as usize;
    // Each envelope takes at least two bytes (its length, and one).
    let room = (body.len() - reader.at) / 2;
    if count == 0 || count > MAX_FRAME_WAVES || count > room {
        return Err(bad(format!(
            "the frame says it holds {count} envelopes; 1 to {} fit in its {} bytes",
            room.min(MAX_FRAME_WAVES),
            body.len()
        )));
    }
    let mut envelopes = Vec::with_capacity(count);
    for n in 0..count {
        let len = reader
            .varint(3, "envelope length")
            .map_err(|e| bad(format!("envelope {n}: {}", e.message())))? as usize;
        if len == 0 {
            return Err(bad(format!("envelope {n} is empty")));
        }
        let start = reader.at;
        reader
            .take(len, "envelope")
            .map_err(|e| bad(format!("envelope {n} of {count}: {}", e.message())))?;
        envelopes.push(start..start + len);
    }
    if reader.at != body.len() {
        return Err(bad(format!(
            "{} bytes follow the last of the {count} envelopes",
            body.len() - reader.at
        )));
    }
    Ok(envelopes)
}

/// The flags of an envelope of either version, if its bytes hold them.
fn flags_of(body: &[u8]) -> Option<u32> {
    match *body.get(1)? {
        VERSION => {
            let flags = body.get(AT_FLAGS..AT_FLAGS + 2)?;
            Some(u32::from(u16::from_le_bytes([flags[0], flags[1]])))
        }
        VERSION_2 => {
            let mut reader = Reader { body, at: 2 };
            reader.varint(3, "flags").ok()
        }
        _ => None,
    }
}

/// `Ok` if [`encode`] carries `wave` exactly; otherwise an
/// [`WireErrorKind::InvalidField`] error saying what it would change (an empty
/// correlation key, or one longer than [`MAX_CORRELATION_KEY_LEN`] bytes, a
/// reflection message longer than [`MAX_REFLECTION_MESSAGE_LEN`] bytes).
/// The public API cannot build such a wave (the builder and `reflect`
/// refuse those values); it is a check for waves made by other means.
pub fn check(wave: &Wave) -> Result<(), WireError> {
    let source = wave.source.as_deref().map(str::as_bytes);
    if let Some(problem) = source.and_then(source_problem) {
        return Err(invalid(problem));
    }
    if let Some(extras) = wave.extras.as_deref() {
        if let Some(key) = extras.correlation_key.as_deref() {
            key_length_problem(key.len()).map_or(Ok(()), |p| Err(invalid(p)))?;
        }
        if let Some(reply_to) = &extras.reply_to {
            reply_to
                .validate_concrete()
                .map_err(|e| invalid(format!("reply channel: {e}")))?;
        }
        if let Some(reflection) = &extras.reflection {
            let len = reflection.reason.message().map_or(0, str::len);
            if len > MAX_REFLECTION_MESSAGE_LEN {
                return Err(invalid(message_length_problem(len)));
            }
            reflection
                .channel
                .validate_concrete()
                .map_err(|e| invalid(format!("reflected channel: {e}")))?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- decoding

/// Reads `body` as an envelope into a wave on `channel` (the NATS subject it
/// came on).
///
/// The payload of the wave is a slice of `body` (no copy). A body that is
/// larger than `limits` allows, not an envelope, of another version, with
/// unknown flags, cut short, or with a value out of range is refused with the
/// matching [`WireErrorKind`] and a message naming the field and the value.
/// Never panics, whatever the bytes.
pub fn decode(channel: Channel, body: Bytes, limits: &Limits) -> Result<Wave, WireError> {
    decode_with(channel, &body, 0..body.len(), limits, None)
}

/// The source name of the last envelope decoded with it, checked: the
/// envelopes of one emitter (a batch frame's, a subscription's stream)
/// check and copy their source name once.
#[derive(Debug, Default)]
pub(crate) struct SourceCache {
    last: Option<SmolStr>,
}

/// [`decode`] of the envelope at `range` of `whole` (a message, or a batch
/// frame), reusing the source name `cache` holds when it is the same. The
/// payload is a slice of `whole`.
pub(crate) fn decode_cached(
    channel: Channel,
    whole: &Bytes,
    range: std::ops::Range<usize>,
    limits: &Limits,
    cache: &mut SourceCache,
) -> Result<Wave, WireError> {
    decode_with(channel, whole, range, limits, Some(cache))
}

fn decode_with(
    channel: Channel,
    whole: &Bytes,
    range: std::ops::Range<usize>,
    limits: &Limits,
    cache: Option<&mut SourceCache>,
) -> Result<Wave, WireError> {
    let offset = range.start;
    let body: &[u8] = whole.get(range).unwrap_or_default();
    let len = body.len();
    if len > limits.max_body_bytes {
        return Err(WireError::new(
            WireErrorKind::Oversized,
            format!(
                "body is {len} bytes, the limit is {} (Limits::max_body_bytes)",
                limits.max_body_bytes
            ),
        ));
    }
    let mut reader = Reader { body, at: 0 };
    let [magic] = reader.array("magic byte")?;
    if magic != MAGIC {
        return Err(WireError::new(
            WireErrorKind::BadMagic,
            format!("first byte is {magic:#04x}, an Aether envelope starts with {MAGIC:#04x}"),
        ));
    }
    let [version] = reader.array("version")?;
    let (fixed, flags) = match version {
        VERSION => fixed_v1(&mut reader, len)?,
        VERSION_2 => match fixed_v2_fast(body) {
            Some((fixed, flags, end)) => {
                reader.at = end;
                (fixed, flags)
            }
            None => fixed_v2(&mut reader)?,
        },
        FRAME => {
            return Err(WireError::new(
                WireErrorKind::UnsupportedVersion,
                "a batch frame of several envelopes, not one envelope (wire::frame_envelopes reads it)",
            ));
        }
        _ => {
            return Err(WireError::new(
                WireErrorKind::UnsupportedVersion,
                format!(
                    "envelope version {version}; this build reads versions {VERSION} and {VERSION_2}"
                ),
            ));
        }
    };
    let Fixed {
        id,
        emitted_at_ns,
        origin,
        amplitude,
        source_amplitude,
        phase,
        hops,
        source_len,
    } = fixed;
    if source_len > MAX_SOURCE_LEN {
        return Err(invalid(format!(
            "source name length {source_len} is over the limit of {MAX_SOURCE_LEN} bytes"
        )));
    }
    let source = reader.take(source_len, "source name")?;
    let decay = if flags & FLAG_DECAY != 0 {
        let decay_per_s = f64::from_le_bytes(reader.array("decay_per_s")?);
        let amplified_at_ns = u64::from_le_bytes(reader.array("amplified_at")?);
        Some((decay_per_s, amplified_at_ns))
    } else {
        None
    };
    let key = if flags & FLAG_CORRELATION_KEY != 0 {
        let key_len = usize::from(u16::from_le_bytes(reader.array("correlation key length")?));
        if let Some(problem) = key_length_problem(key_len) {
            return Err(invalid(problem));
        }
        Some(reader.take(key_len, "correlation key")?)
    } else {
        None
    };
    let reply_to = if flags & FLAG_REPLY_TO != 0 {
        let reply_len = usize::from(u16::from_le_bytes(reader.array("reply channel length")?));
        if reply_len > crate::channel::MAX_BYTES {
            return Err(invalid(format!(
                "reply channel length {reply_len} is over the limit of {} bytes",
                crate::channel::MAX_BYTES
            )));
        }
        Some(reader.take(reply_len, "reply channel")?)
    } else {
        None
    };
    let reflection = if flags & FLAG_REFLECTED != 0 {
        let [code] = reader.array("reflection reason")?;
        let message_len = usize::from(u16::from_le_bytes(
            reader.array("reflection message length")?,
        ));
        if message_len > MAX_REFLECTION_MESSAGE_LEN {
            return Err(invalid(message_length_problem(message_len)));
        }
        let message = reader.take(message_len, "reflection message")?;
        let channel_len = usize::from(u16::from_le_bytes(
            reader.array("reflected channel length")?,
        ));
        if channel_len > crate::channel::MAX_BYTES {
            return Err(invalid(format!(
                "reflected channel length {channel_len} is over the limit of {} bytes",
                crate::channel::MAX_BYTES
            )));
        }
        Some((
            code,
            message,
            reader.take(channel_len, "reflected channel")?,
        ))
    } else {
        None
    };
    let trace = if flags & FLAG_TRACE != 0 {
        Some(reader.take(TRACE_LEN, "trace section")?)
    } else {
        None
    };
    let payload_start = reader.at;
    let mut payload_end = len;
    if flags & FLAG_SIGNED != 0 {
        if len - payload_start < SIGNATURE_LEN {
            return Err(WireError::new(
                WireErrorKind::Truncated,
                format!(
                    "signature needs {SIGNATURE_LEN} bytes at the end, but only {} follow the sections",
                    len - payload_start
                ),
            ));
        }
        payload_end = len - SIGNATURE_LEN;
    }
    Raw {
        id,
        emitted_at_ns,
        origin,
        amplitude,
        source_amplitude,
        phase,
        hops,
        flags,
        source,
        decay,
        key,
        reply_to,
        reflection,
        trace,
    }
    .build(
        channel,
        whole.slice(offset + payload_start..offset + payload_end),
        cache,
    )
}

/// The fixed fields of an envelope, either version.
struct Fixed {
    id: u128,
    emitted_at_ns: u64,
    origin: u64,
    amplitude: f64,
    source_amplitude: f64,
    phase: f64,
    hops: u16,
    source_len: usize,
}

/// Version 1's flags and fixed header, after the version byte; the reader
/// is left after the source name length.
fn fixed_v1(reader: &mut Reader<'_>, len: usize) -> Result<(Fixed, u16), WireError> {
    let flags = u16::from_le_bytes(reader.array("flags")?);
    if flags & !KNOWN_FLAGS != 0 {
        return Err(WireError::new(
            WireErrorKind::UnknownFlags,
            format!(
                "flags {flags:#06x} hold unknown bits {:#06x} (version {VERSION} knows {KNOWN_FLAGS:#06x})",
                flags & !KNOWN_FLAGS
            ),
        ));
    }
    if len < HEADER_LEN {
        return Err(WireError::new(
            WireErrorKind::Truncated,
            format!("body is {len} bytes, shorter than the {HEADER_LEN}-byte header"),
        ));
    }
    debug_assert_eq!(reader.at, AT_FLAGS + 2);
    // The fixed fields, at fixed offsets of a header known to be whole: one
    // bounds check for all of them.
    let header: &[u8; HEADER_LEN] = reader.array_ref("header")?;
    reader.at = HEADER_LEN;
    Ok((
        Fixed {
            id: u128::from_be_bytes(field(header, AT_ID)),
            emitted_at_ns: u64::from_le_bytes(field(header, AT_EMITTED_AT)),
            origin: u64::from_le_bytes(field(header, AT_ORIGIN)),
            amplitude: f64::from_le_bytes(field(header, AT_AMPLITUDE)),
            source_amplitude: f64::from_le_bytes(field(header, AT_SOURCE_AMPLITUDE)),
            phase: f64::from_le_bytes(field(header, AT_PHASE)),
            hops: u16::from_le_bytes(field(header, AT_HOPS)),
            source_len: usize::from(header[AT_SOURCE_LEN]),
        },
        flags,
    ))
}

/// The longest fixed part of version 2: magic, version, flags (3), id (12),
/// origin, `emitted_at` (8), hops (3), amplitude, source amplitude, phase,
/// id node, source name length.
const V2_MAX_FIXED: usize = 2 + 3 + 12 + 8 + 8 + 3 + 8 + 8 + 8 + 4 + 1;

/// Version 2's fixed part read in one piece from a body long enough for
/// any fixed part, and with every value in range; `None` otherwise (then
/// [`fixed_v2`] reads it field by field and says what is wrong). Returns
/// where the source name starts.
#[inline]
fn fixed_v2_fast(body: &[u8]) -> Option<(Fixed, u16, usize)> {
    let b: &[u8; V2_MAX_FIXED] = body.get(..V2_MAX_FIXED)?.try_into().ok()?;
    let mut at = 2;
    let varint = |at: &mut usize| -> Option<u32> {
        let mut value = 0u32;
        for i in 0..3 {
            let byte = b[*at];
            *at += 1;
            value |= u32::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    };
    let flags = varint(&mut at)?;
    if flags & !KNOWN_FLAGS_V2 != 0 {
        return None;
    }
    let u48 = |at: usize| u48_le(b[at..at + 6].try_into().expect("6 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let (millis, sequence, origin) = (u48(at), u48(at + 6), u64_at(at + 12));
    at += 20;
    let emitted_at_ns = if flags & FLAG_EMITTED_AT != 0 {
        at += 8;
        u64_at(at - 8)
    } else {
        let past = varint(&mut at)?;
        if past >= 1_000_000 {
            return None;
        }
        millis
            .checked_mul(1_000_000)?
            .checked_add(u64::from(past))?
    };
    let hops = u16::try_from(varint(&mut at)?).ok()?;
    let mut f64_if = |flag: u32, default: f64| {
        if flags & flag != 0 {
            at += 8;
            f64::from_bits(u64_at(at - 8))
        } else {
            default
        }
    };
    let amplitude = f64_if(FLAG_AMPLITUDE, 1.0);
    let source_amplitude = f64_if(FLAG_SOURCE_AMPLITUDE, amplitude);
    let phase = f64_if(FLAG_PHASE, 0.0);
    let node = if flags & FLAG_ID_NODE != 0 {
        at += 4;
        u32::from_be_bytes(b[at - 4..at].try_into().expect("4 bytes"))
    } else {
        (origin >> 32) as u32
    };
    let source_len = usize::from(b[at]);
    at += 1;
    let id = id_of(millis, node, sequence);
    Some((
        Fixed {
            id,
            emitted_at_ns,
            origin,
            amplitude,
            source_amplitude,
            phase,
            hops,
            source_len,
        },
        flags as u16,
        at,
    ))
}

/// Version 2's flags and fixed part, after the version byte, field by
/// field (ARCHITECTURE.md); the reader is left after the source name
/// length. The flags keep their version-1 bits for the sections.
fn fixed_v2(reader: &mut Reader<'_>) -> Result<(Fixed, u16), WireError> {
    let flags = reader.varint(3, "flags")?;
    if flags & !KNOWN_FLAGS_V2 != 0 {
        return Err(WireError::new(
            WireErrorKind::UnknownFlags,
            format!(
                "flags {flags:#x} hold unknown bits {:#x} (version {VERSION_2} knows {KNOWN_FLAGS_V2:#x})",
                flags & !KNOWN_FLAGS_V2
            ),
        ));
    }
    let millis = u48_le(reader.array("id time")?);
    let sequence = u48_le(reader.array("id sequence")?);
    let origin = u64::from_le_bytes(reader.array("origin")?);
    let emitted_at_ns = if flags & FLAG_EMITTED_AT != 0 {
        u64::from_le_bytes(reader.array("emitted_at")?)
    } else {
        let past = reader.varint(3, "emitted_at past the id's millisecond")?;
        if past >= 1_000_000 {
            return Err(invalid(format!(
                "emitted_at is {past} ns past the id's millisecond; at most 999999"
            )));
        }
        millis
            .checked_mul(1_000_000)
            .and_then(|ns| ns.checked_add(u64::from(past)))
            .ok_or_else(|| {
                invalid(format!(
                    "the id's millisecond {millis} is past the range of emitted_at (set EMITTED_AT)"
                ))
            })?
    };
    let hops = reader.varint(3, "hops")?;
    let hops = u16::try_from(hops)
        .map_err(|_| invalid(format!("hops {hops} is over the limit of {}", u16::MAX)))?;
    let amplitude = if flags & FLAG_AMPLITUDE != 0 {
        f64::from_le_bytes(reader.array("amplitude")?)
    } else {
        1.0
    };
    let source_amplitude = if flags & FLAG_SOURCE_AMPLITUDE != 0 {
        f64::from_le_bytes(reader.array("source amplitude")?)
    } else {
        amplitude
    };
    let phase = if flags & FLAG_PHASE != 0 {
        f64::from_le_bytes(reader.array("phase")?)
    } else {
        0.0
    };
    let node = if flags & FLAG_ID_NODE != 0 {
        u32::from_be_bytes(reader.array("id node")?)
    } else {
        (origin >> 32) as u32
    };
    let [source_len] = reader.array("source name length")?;
    let id = id_of(millis, node, sequence);
    Ok((
        Fixed {
            id,
            emitted_at_ns,
            origin,
            amplitude,
            source_amplitude,
            phase,
            hops,
            source_len: usize::from(source_len),
        },
        // Every known bit is below 16.
        flags as u16,
    ))
}

/// The `N` bytes of `header` at `at`; the offsets are constants within the
/// header, so this cannot fail.
#[inline(always)]
fn field<const N: usize>(header: &[u8; HEADER_LEN], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&header[at..at + N]);
    out
}

/// Writes `bytes` into `header` at `at`, [`field`]'s inverse.
#[inline(always)]
fn put_field<const N: usize>(header: &mut [u8; HEADER_LEN], at: usize, bytes: [u8; N]) {
    header[at..at + N].copy_from_slice(&bytes);
}

/// A cursor over the body whose reads are all bounds-checked.
struct Reader<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// The next `n` bytes, or `Truncated` naming `field`.
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], WireError> {
        let bytes = self
            .at
            .checked_add(n)
            .and_then(|end| self.body.get(self.at..end));
        match bytes {
            Some(bytes) => {
                self.at += n;
                Ok(bytes)
            }
            None => Err(WireError::new(
                WireErrorKind::Truncated,
                format!(
                    "{field} needs {n} bytes at offset {}, but the body ends at {}",
                    self.at,
                    self.body.len()
                ),
            )),
        }
    }

    /// The first `N` bytes of the body, whatever was read already, as an
    /// array reference (`Truncated` naming `field` if the body is shorter).
    fn array_ref<const N: usize>(&self, field: &str) -> Result<&'a [u8; N], WireError> {
        self.body
            .get(..N)
            .and_then(|bytes| <&[u8; N]>::try_from(bytes).ok())
            .ok_or_else(|| {
                WireError::new(
                    WireErrorKind::Truncated,
                    format!(
                        "{field} needs {N} bytes, but the body ends at {}",
                        self.body.len()
                    ),
                )
            })
    }

    /// A LEB128 varint of at most `max_bytes` bytes (`Truncated` if the
    /// body ends inside it, `InvalidField` if it runs longer).
    fn varint(&mut self, max_bytes: usize, field: &str) -> Result<u32, WireError> {
        let mut value: u32 = 0;
        for i in 0..max_bytes {
            let [byte] = self.array::<1>(field)?;
            value |= u32::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(invalid(format!(
            "{field}: a varint longer than {max_bytes} bytes"
        )))
    }

    /// The next `N` bytes as an array.
    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], WireError> {
        let bytes = self.take(N, field)?;
        <[u8; N]>::try_from(bytes).map_err(|_| {
            WireError::new(WireErrorKind::Truncated, format!("{field} needs {N} bytes"))
        })
    }
}

/// The fields of an envelope, framed but not yet checked.
struct Raw<'a> {
    id: u128,
    emitted_at_ns: u64,
    origin: u64,
    amplitude: f64,
    source_amplitude: f64,
    phase: f64,
    hops: u16,
    /// The envelope's flags (the bits without a section matter here).
    flags: u16,
    /// Empty: no source.
    source: &'a [u8],
    decay: Option<(f64, u64)>,
    key: Option<&'a [u8]>,
    reply_to: Option<&'a [u8]>,
    /// Reason code, message, channel.
    reflection: Option<(u8, &'a [u8], &'a [u8])>,
    /// The trace section's [`TRACE_LEN`] bytes.
    trace: Option<&'a [u8]>,
}

impl Raw<'_> {
    /// Checks every value and makes the wave; the one place the rules of a
    /// decoded wave are written.
    fn build(
        self,
        channel: Channel,
        payload: Bytes,
        cache: Option<&mut SourceCache>,
    ) -> Result<Wave, WireError> {
        let amplitude = unit_amplitude("amplitude", self.amplitude)?;
        let source_amplitude = unit_amplitude("source amplitude", self.source_amplitude)?;
        // Only angles already in [0, 2π) are accepted, so `Phase::new` keeps
        // the value bit for bit.
        if !(0.0..std::f64::consts::TAU).contains(&self.phase) {
            return Err(invalid(format!("phase {} is outside [0, 2π)", self.phase)));
        }
        let phase = Phase::new(self.phase)
            .map_err(|_| invalid(format!("phase {} is outside [0, 2π)", self.phase)))?;
        let known = cache
            .as_ref()
            .and_then(|c| c.last.as_ref())
            .filter(|name| name.as_bytes() == self.source);
        let source = if self.source.is_empty() {
            None
        } else if let Some(name) = known {
            Some(name.clone())
        } else {
            if let Some(problem) = source_problem(self.source) {
                return Err(invalid(problem));
            }
            // The alphabet is ASCII, so the bytes are UTF-8.
            let text = std::str::from_utf8(self.source)
                .map_err(|_| invalid("source name is not UTF-8".to_string()))?;
            let name = SmolStr::new(text);
            if let Some(cache) = cache {
                cache.last = Some(name.clone());
            }
            Some(name)
        };
        let bad_decay = self.decay.filter(|(d, _)| !(d.is_finite() && *d >= 0.0));
        if let Some((decay_per_s, _)) = bad_decay {
            return Err(invalid(format!(
                "decay_per_s {decay_per_s} is invalid: it must be a finite number >= 0"
            )));
        }
        let correlation_key = match self.key {
            None => None,
            Some(key) => {
                if let Some(problem) = key_length_problem(key.len()) {
                    return Err(invalid(problem));
                }
                let text = std::str::from_utf8(key).map_err(|e| {
                    invalid(format!(
                        "correlation key is not valid UTF-8 (from byte {} of {})",
                        e.valid_up_to(),
                        key.len()
                    ))
                })?;
                Some(SmolStr::new(text))
            }
        };
        let reply_to = match self.reply_to {
            None => None,
            Some(reply_to) => {
                let text = std::str::from_utf8(reply_to).map_err(|e| {
                    invalid(format!(
                        "reply channel is not valid UTF-8 (from byte {} of {})",
                        e.valid_up_to(),
                        reply_to.len()
                    ))
                })?;
                let channel = Channel::new(text);
                channel
                    .validate_concrete()
                    .map_err(|e| invalid(format!("reply channel: {e}")))?;
                Some(channel)
            }
        };
        let reflection = match self.reflection {
            None => None,
            Some((code, message, channel)) => {
                Some(Box::new(reflection_of(code, message, channel)?))
            }
        };
        let trace = match self.trace {
            None => None,
            Some(bytes) => Some(trace_of(bytes)?),
        };
        let extras = (self.decay.is_some()
            || correlation_key.is_some()
            || reply_to.is_some()
            || reflection.is_some()
            || trace.is_some())
        .then(|| {
            let (decay_per_s, amplified_at_ns) = self.decay.unwrap_or((0.0, 0));
            Arc::new(Extras {
                decay_per_s,
                amplified_at_ns,
                correlation_key,
                reply_to,
                reflection,
                trace,
            })
        });
        let mut flags = 0;
        if self.flags & FLAG_DIFFRACT != 0 {
            flags |= DIFFRACTS;
        }
        if self.flags & FLAG_REFLECT != 0 {
            flags |= REFLECTS;
        }
        if self.flags & FLAG_SEALED != 0 {
            flags |= SEALED;
        }
        Ok(Wave {
            payload,
            channel,
            source,
            id: WaveId::from_u128(self.id),
            amplitude,
            source_amplitude,
            phase,
            emitted_at_ns: self.emitted_at_ns,
            origin: self.origin,
            hops: self.hops,
            flags,
            extras,
        })
    }
}

/// The reflection section's values, checked.
fn reflection_of(code: u8, message: &[u8], channel: &[u8]) -> Result<Reflection, WireError> {
    let text = std::str::from_utf8(message).map_err(|e| {
        invalid(format!(
            "reflection message is not valid UTF-8 (from byte {} of {})",
            e.valid_up_to(),
            message.len()
        ))
    })?;
    let reason = ReflectionReason::from_code(code, text).ok_or_else(|| {
        if code > 4 {
            invalid(format!(
                "reflection reason {code} is unknown (version {VERSION} knows 0 to 4)"
            ))
        } else {
            invalid(format!(
                "reflection reason {code} carries no message, but the section holds {} bytes",
                message.len()
            ))
        }
    })?;
    let channel = std::str::from_utf8(channel)
        .map(Channel::new)
        .map_err(|e| {
            invalid(format!(
                "reflected channel is not valid UTF-8 (from byte {} of {})",
                e.valid_up_to(),
                channel.len()
            ))
        })?;
    channel
        .validate_concrete()
        .map_err(|e| invalid(format!("reflected channel: {e}")))?;
    Ok(Reflection { reason, channel })
}

/// The trace section's values, checked.
fn trace_of(bytes: &[u8]) -> Result<TraceContext, WireError> {
    let mut reader = Reader { body: bytes, at: 0 };
    let trace_id = reader.array::<16>("trace id")?;
    let span_id = reader.array::<8>("span id")?;
    let [flags] = reader.array::<1>("trace flags")?;
    TraceContext::new(trace_id, span_id, flags).map_err(|e| invalid(e.to_string()))
}

/// Why a reflection message of `len` bytes cannot travel.
fn message_length_problem(len: usize) -> String {
    format!(
        "reflection message length {len} is over the limit of {MAX_REFLECTION_MESSAGE_LEN} bytes"
    )
}

fn invalid(message: String) -> WireError {
    WireError::new(WireErrorKind::InvalidField, message)
}

fn unit_amplitude(field: &str, value: f64) -> Result<Amplitude, WireError> {
    Amplitude::new(value).map_err(|_| invalid(format!("{field} {value} is outside [0, 1]")))
}

/// Why `name` is not a source name (`A-Z a-z 0-9 _ - .`, 1 to 64 bytes).
fn source_problem(name: &[u8]) -> Option<String> {
    if name.is_empty() {
        return Some("source name is empty".to_string());
    }
    if name.len() > MAX_SOURCE_LEN {
        return Some(format!(
            "source name length {} is over the limit of {MAX_SOURCE_LEN} bytes",
            name.len()
        ));
    }
    name.iter()
        .position(|&b| !(is_token_char(char::from(b)) || b == b'.'))
        .map(|i| {
            format!(
                "source name {:?} has byte {:#04x} at {i}; use A-Z a-z 0-9 _ - .",
                String::from_utf8_lossy(name),
                name[i]
            )
        })
}

/// Why a correlation key of `len` bytes cannot travel.
fn key_length_problem(len: usize) -> Option<String> {
    if len == 0 {
        Some(format!(
            "correlation key length is 0; it must be 1 to {MAX_CORRELATION_KEY_LEN} bytes \
             (no key: leave the flag off)"
        ))
    } else if len > MAX_CORRELATION_KEY_LEN {
        Some(format!(
            "correlation key length {len} is over the limit of {MAX_CORRELATION_KEY_LEN} bytes"
        ))
    } else {
        None
    }
}

// ---------------------------------------------------------------- test help

/// Every field of a wave but its channel, as plain values: for tests, which
/// build waves with any id, origin or clock and compare waves field by field.
///
/// Not part of the supported API.
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq)]
pub struct Parts {
    /// The wave id as a number.
    pub id: u128,
    /// Unix ns of emission, 0 if not emitted.
    pub emitted_at_ns: u64,
    /// Emitter instance id, 0 if unknown.
    pub origin: u64,
    /// Amplitude as last measured.
    pub amplitude: f64,
    /// Amplitude at emission (`a0`).
    pub source_amplitude: f64,
    /// Phase in radians.
    pub phase: f64,
    /// Hop count.
    pub hops: u16,
    /// Source name.
    pub source: Option<String>,
    /// Time decay per second.
    pub decay_per_s: f64,
    /// Unix ns the decay clock restarted, 0 = at emission.
    pub amplified_at_ns: u64,
    /// Correlation key as set (not defaulted to the channel).
    pub correlation_key: Option<String>,
    /// Reply channel.
    pub reply_to: Option<String>,
    /// Diffracts ([`FLAG_DIFFRACT`]).
    pub diffracting: bool,
    /// Reflects on failure ([`FLAG_REFLECT`]).
    pub reflect_on_failure: bool,
    /// For a reflection: why, and the channel it was emitted on.
    pub reflection: Option<(ReflectionReason, String)>,
    /// The trace context.
    pub trace: Option<TraceContext>,
    /// Payload bytes.
    pub payload: Bytes,
}

impl Default for Parts {
    /// The fields of `Wave::new(channel, ())`.
    fn default() -> Self {
        Self {
            id: 0,
            emitted_at_ns: 0,
            origin: 0,
            amplitude: 1.0,
            source_amplitude: 1.0,
            phase: 0.0,
            hops: 0,
            source: None,
            decay_per_s: 0.0,
            amplified_at_ns: 0,
            correlation_key: None,
            reply_to: None,
            diffracting: false,
            reflect_on_failure: false,
            reflection: None,
            trace: None,
            payload: Bytes::new(),
        }
    }
}

impl Parts {
    /// The fields of `wave`.
    pub fn of(wave: &Wave) -> Self {
        let extras = wave.extras.as_deref();
        Self {
            id: wave.id.as_u128(),
            emitted_at_ns: wave.emitted_at_ns,
            origin: wave.origin,
            amplitude: wave.amplitude.value(),
            source_amplitude: wave.source_amplitude.value(),
            phase: wave.phase.radians(),
            hops: wave.hops,
            source: wave.source.as_ref().map(ToString::to_string),
            decay_per_s: extras.map_or(0.0, |e| e.decay_per_s),
            amplified_at_ns: extras.map_or(0, |e| e.amplified_at_ns),
            correlation_key: extras
                .and_then(|e| e.correlation_key.as_ref())
                .map(ToString::to_string),
            reply_to: extras
                .and_then(|e| e.reply_to.as_ref())
                .map(|c| c.as_str().to_string()),
            diffracting: wave.flags & DIFFRACTS != 0,
            reflect_on_failure: wave.flags & REFLECTS != 0,
            reflection: extras
                .and_then(|e| e.reflection.as_deref())
                .map(|r| (r.reason.clone(), r.channel.as_str().to_string())),
            trace: extras.and_then(|e| e.trace),
            payload: wave.payload.clone(),
        }
    }

    /// A wave on `channel` with these fields, checked exactly as [`decode`]
    /// checks them.
    pub fn into_wave(self, channel: Channel) -> Result<Wave, WireError> {
        let decay = (self.decay_per_s.to_bits() != 0 || self.amplified_at_ns != 0)
            .then_some((self.decay_per_s, self.amplified_at_ns));
        if self.source.as_deref() == Some("") {
            return Err(invalid("source name is empty".to_string()));
        }
        let mut flags = 0;
        if self.diffracting {
            flags |= FLAG_DIFFRACT;
        }
        if self.reflect_on_failure {
            flags |= FLAG_REFLECT;
        }
        Raw {
            id: self.id,
            emitted_at_ns: self.emitted_at_ns,
            origin: self.origin,
            amplitude: self.amplitude,
            source_amplitude: self.source_amplitude,
            phase: self.phase,
            hops: self.hops,
            flags,
            source: self.source.as_deref().map_or(&[][..], str::as_bytes),
            decay,
            key: self.correlation_key.as_deref().map(str::as_bytes),
            reply_to: self.reply_to.as_deref().map(str::as_bytes),
            reflection: self.reflection.as_ref().map(|(reason, channel)| {
                (
                    reason.code(),
                    reason.message().unwrap_or("").as_bytes(),
                    channel.as_bytes(),
                )
            }),
            trace: None,
        }
        .build(channel, self.payload, None)
        .map(|mut wave| {
            wave.set_trace_context(self.trace);
            wave
        })
    }

    /// Whether every field equals `other`'s, floats compared bit for bit.
    pub fn same_as(&self, other: &Parts) -> bool {
        self.id == other.id
            && self.emitted_at_ns == other.emitted_at_ns
            && self.origin == other.origin
            && self.amplitude.to_bits() == other.amplitude.to_bits()
            && self.source_amplitude.to_bits() == other.source_amplitude.to_bits()
            && self.phase.to_bits() == other.phase.to_bits()
            && self.hops == other.hops
            && self.source == other.source
            && self.decay_per_s.to_bits() == other.decay_per_s.to_bits()
            && self.amplified_at_ns == other.amplified_at_ns
            && self.correlation_key == other.correlation_key
            && self.reply_to == other.reply_to
            && self.diffracting == other.diffracting
            && self.reflect_on_failure == other.reflect_on_failure
            && self.reflection == other.reflection
            && self.trace == other.trace
            && self.payload == other.payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The layout tests below are version 1's; version 2 has its own after
    // them.
    fn encode(wave: &Wave) -> Bytes {
        encode_as(WireVersion::V1, wave)
    }

    fn encoded_len(wave: &Wave) -> usize {
        encoded_len_as(WireVersion::V1, wave)
    }

    fn kind(body: &[u8]) -> WireErrorKind {
        decode(
            Channel::new("a"),
            Bytes::copy_from_slice(body),
            &Limits::default(),
        )
        .expect_err("decoded")
        .kind()
    }

    fn message(body: &[u8]) -> String {
        decode(
            Channel::new("a"),
            Bytes::copy_from_slice(body),
            &Limits::default(),
        )
        .expect_err("decoded")
        .to_string()
    }

    fn full() -> Wave {
        Parts {
            id: 0x0194_a8df_647b_0000_1234_0000_0000_0042,
            emitted_at_ns: 1_738_000_000_123_456_789,
            origin: 7,
            amplitude: 0.5,
            source_amplitude: 0.7,
            phase: std::f64::consts::PI,
            hops: 2,
            source: Some("shop".into()),
            decay_per_s: 0.25,
            amplified_at_ns: 1_738_000_001_000_000_000,
            correlation_key: Some("order-42".into()),
            reply_to: Some("_reply.shop.1".into()),
            payload: Bytes::from_static(br#"{"order_id":42}"#),
            ..Parts::default()
        }
        .into_wave(Channel::new("orders.cancelled"))
        .unwrap()
    }

    /// Offsets in the envelope of `full()`.
    const AT_DECAY: usize = HEADER_LEN + 4;
    const AT_KEY_LEN: usize = AT_DECAY + 16;
    const AT_REPLY_LEN: usize = AT_KEY_LEN + 2 + 8;

    fn full_body() -> Vec<u8> {
        encode(&full()).to_vec()
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let wave = full();
        let body = encode(&wave);
        assert_eq!(body.len(), encoded_len(&wave));
        assert_eq!(body[0], MAGIC);
        assert_eq!(body[1], VERSION);
        assert_eq!(
            u16::from_le_bytes([body[2], body[3]]),
            FLAG_DECAY | FLAG_CORRELATION_KEY | FLAG_REPLY_TO
        );
        let back = decode(
            Channel::new("orders.cancelled"),
            body.clone(),
            &Limits::default(),
        )
        .unwrap();
        assert!(Parts::of(&back).same_as(&Parts::of(&wave)));
        assert_eq!(back.channel().as_str(), "orders.cancelled");
        assert_eq!(
            back.payload_bytes().as_ptr(),
            body[body.len() - back.payload_bytes().len()..].as_ptr()
        );
        assert!(check(&wave).is_ok());
    }

    #[test]
    fn minimal_wave_is_the_header() {
        let body = encode(&Wave::new("a", ()));
        assert_eq!(body.len(), HEADER_LEN);
        let back = decode(Channel::new("a"), body, &Limits::default()).unwrap();
        assert!(back.extras.is_none());
        assert_eq!(back.correlation_key(), "a");
    }

    #[test]
    fn oversized() {
        let body = full_body();
        let limits = Limits {
            max_body_bytes: body.len() - 1,
        };
        let err = decode(Channel::new("a"), Bytes::from(body.clone()), &limits).unwrap_err();
        assert_eq!(err.kind(), WireErrorKind::Oversized);
        assert!(err.to_string().contains("limit is"), "{err}");
        let limits = Limits {
            max_body_bytes: body.len(),
        };
        assert!(decode(Channel::new("a"), Bytes::from(body), &limits).is_ok());
        assert_eq!(Limits::default().max_body_bytes, 1_048_576);
    }

    #[test]
    fn bad_magic() {
        let mut body = full_body();
        body[0] = b'{';
        assert_eq!(kind(&body), WireErrorKind::BadMagic);
        assert!(message(&body).contains("0x7b"), "{}", message(&body));
        assert_eq!(kind(b"x"), WireErrorKind::BadMagic);
    }

    #[test]
    fn unsupported_version() {
        let mut body = full_body();
        for version in [0, 3, FRAME, 255] {
            body[1] = version;
            assert_eq!(kind(&body), WireErrorKind::UnsupportedVersion);
            // A version is reported as such however short the body.
            assert_eq!(kind(&body[..2]), WireErrorKind::UnsupportedVersion);
        }
        assert!(message(&body).contains("version 255"));
    }

    #[test]
    fn unknown_flags() {
        for bit in (8..16).filter(|&bit| 1u16 << bit != FLAG_SEALED) {
            let mut body = encode(&Wave::new("a", ())).to_vec();
            body[2..4].copy_from_slice(&(1u16 << bit).to_le_bytes());
            assert_eq!(kind(&body), WireErrorKind::UnknownFlags, "bit {bit}");
        }
    }

    #[test]
    fn the_sealed_flag_round_trips_and_leaves_the_payload_as_it_is() {
        let sealed = Wave::new("a", "opaque").sealed_with(Bytes::from_static(b"nonce+ciphertext"));
        let body = encode(&sealed);
        assert_ne!(u16::from_le_bytes([body[2], body[3]]) & FLAG_SEALED, 0);
        let back = decode(Channel::new("a"), body, &Limits::default()).unwrap();
        assert!(back.is_sealed());
        assert_eq!(&back.payload_bytes()[..], b"nonce+ciphertext");
        let plain = decode(
            Channel::new("a"),
            encode(&Wave::new("a", "x")),
            &Limits::default(),
        )
        .unwrap();
        assert!(!plain.is_sealed());
    }

    #[test]
    fn truncated() {
        let body = full_body();
        // Every cut inside the sections is truncated; the payload may be cut
        // anywhere (it is the rest of the body).
        let payload_start = body.len() - full().payload_bytes().len();
        for cut in 0..payload_start {
            assert_eq!(kind(&body[..cut]), WireErrorKind::Truncated, "cut {cut}");
        }
        for cut in payload_start..=body.len() {
            let back = decode(
                Channel::new("a"),
                Bytes::copy_from_slice(&body[..cut]),
                &Limits::default(),
            )
            .unwrap();
            assert_eq!(back.payload_bytes().len(), cut - payload_start);
        }
        assert!(message(&body[..10]).contains("shorter than the 63-byte header"));
        assert!(message(&body[..HEADER_LEN + 2]).contains("source name needs 4 bytes"));
    }

    #[test]
    fn invalid_fields() {
        let set = |at: usize, bytes: &[u8]| {
            let mut body = full_body();
            body[at..at + bytes.len()].copy_from_slice(bytes);
            body
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                set(36, &1.5f64.to_le_bytes()),
                "amplitude 1.5 is outside [0, 1]",
            ),
            (
                set(36, &f64::NAN.to_le_bytes()),
                "amplitude NaN is outside [0, 1]",
            ),
            (
                set(44, &(-0.5f64).to_le_bytes()),
                "source amplitude -0.5 is outside [0, 1]",
            ),
            (
                set(52, &std::f64::consts::TAU.to_le_bytes()),
                "phase 6.283185307179586 is outside [0, 2π)",
            ),
            (
                set(52, &(-1.0f64).to_le_bytes()),
                "phase -1 is outside [0, 2π)",
            ),
            (
                set(52, &f64::INFINITY.to_le_bytes()),
                "phase inf is outside",
            ),
            (
                set(AT_SOURCE_LEN, &[65]),
                "source name length 65 is over the limit of 64",
            ),
            (
                set(HEADER_LEN + 1, b" "),
                "source name \"s op\" has byte 0x20 at 1",
            ),
            (
                set(HEADER_LEN, &[0xff]),
                "source name \"\u{fffd}hop\" has byte 0xff at 0",
            ),
            (
                set(AT_DECAY, &(-1.0f64).to_le_bytes()),
                "decay_per_s -1 is invalid",
            ),
            (
                set(AT_DECAY, &f64::NAN.to_le_bytes()),
                "decay_per_s NaN is invalid",
            ),
            (set(AT_KEY_LEN, &[0, 0]), "correlation key length is 0"),
            (
                set(AT_KEY_LEN, &257u16.to_le_bytes()),
                "correlation key length 257 is over the limit of 256",
            ),
            (
                set(AT_KEY_LEN + 2, &[0xc3]),
                "correlation key is not valid UTF-8",
            ),
            (set(AT_REPLY_LEN, &[0, 0]), "reply channel: "),
            (
                set(AT_REPLY_LEN, &300u16.to_le_bytes()),
                "reply channel length 300 is over the limit",
            ),
            (set(AT_REPLY_LEN + 2 + 7, b"*"), "reply channel: "),
            (
                set(AT_REPLY_LEN + 2, &[0xff]),
                "reply channel is not valid UTF-8",
            ),
        ];
        for (body, expected) in cases {
            let err = decode(Channel::new("a"), Bytes::from(body), &Limits::default())
                .expect_err(expected);
            assert_eq!(err.kind(), WireErrorKind::InvalidField, "{err}");
            assert!(
                err.to_string().contains(expected),
                "{err} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn keys_the_wire_cannot_carry_are_refused_by_the_builder() {
        for key in [String::new(), "é".repeat(200)] {
            assert!(Wave::builder("a").correlation_key(&key).build().is_err());
        }
        let longest = "k".repeat(MAX_CORRELATION_KEY_LEN);
        let wave = Wave::builder("a")
            .correlation_key(&longest)
            .build()
            .unwrap();
        assert!(check(&wave).is_ok());
        let back = decode(Channel::new("a"), encode(&wave), &Limits::default()).unwrap();
        assert_eq!(back.correlation_key(), longest);
    }

    #[test]
    fn flags_and_reflections_travel() {
        let wave = Wave::builder("alerts.disk")
            .diffracting(true)
            .reflect_on_failure(true)
            .build()
            .unwrap();
        let body = encode(&wave);
        assert_eq!(body.len(), HEADER_LEN, "bits 3 and 4 have no section");
        assert_eq!(
            u16::from_le_bytes([body[2], body[3]]),
            FLAG_DIFFRACT | FLAG_REFLECT
        );
        let back = decode(Channel::new("alerts.disk"), body, &Limits::default()).unwrap();
        assert!(back.is_diffracting() && back.reflects_on_failure());

        let reason = ReflectionReason::HandlerError("boom".into());
        let reflected = full().into_reflection(reason.clone(), Channel::new("orders.cancelled"));
        assert!(check(&reflected).is_ok());
        let body = encode(&reflected);
        assert_eq!(body.len(), encoded_len(&reflected));
        assert_eq!(
            u16::from_le_bytes([body[2], body[3]]),
            FLAG_CORRELATION_KEY | FLAG_REFLECTED
        );
        // Decoded on the subject it travelled on: its source's reflection
        // channel; the medium puts the channel it was emitted on back.
        let subject = Channel::new("_reflect.0000000000000007");
        let mut back = decode(subject, body, &Limits::default()).unwrap();
        assert_eq!(back.channel().as_str(), "_reflect.0000000000000007");
        assert_eq!(back.reflection(), Some(&reason));
        back.restore_reflected_channel();
        assert_eq!(back.channel().as_str(), "orders.cancelled");
        assert!(Parts::of(&back).same_as(&Parts::of(&reflected)));
        assert_eq!(back.phase(), Phase::ASSERT, "full() is in phase π");
    }

    #[test]
    fn bad_reflection_sections() {
        let reason = ReflectionReason::Refused("no".into());
        let reflected = full().into_reflection(reason, Channel::new("a.b"));
        // Header, source "shop", key "order-42": the section starts at 77
        // (code), then the message length, "no", the channel length, "a.b".
        let at = HEADER_LEN + 4 + 2 + 8;
        let set = |offset: usize, bytes: &[u8]| {
            let mut body = encode(&reflected).to_vec();
            assert_eq!(body[at], 3);
            body[offset..offset + bytes.len()].copy_from_slice(bytes);
            body
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (set(at, &[0]), "reflection reason 0 carries no message, but"),
            (set(at, &[7]), "reflection reason 7 is unknown"),
            (
                set(at + 3, &[0xff]),
                "reflection message is not valid UTF-8",
            ),
            (
                set(at + 1, &2000u16.to_le_bytes()),
                "reflection message length 2000 is over the limit of 1024",
            ),
            (set(at + 7, b"*"), "reflected channel: "),
            (
                set(at + 5, &300u16.to_le_bytes()),
                "reflected channel length 300 is over the limit",
            ),
        ];
        for (body, expected) in cases {
            let err = decode(Channel::new("a"), Bytes::from(body), &Limits::default())
                .expect_err(expected);
            assert_eq!(err.kind(), WireErrorKind::InvalidField, "{err}");
            assert!(
                err.to_string().contains(expected),
                "{err} lacks {expected:?}"
            );
        }
        let body = encode(&reflected);
        assert_eq!(kind(&body[..at + 4]), WireErrorKind::Truncated);

        // A message the envelope cannot carry: `check` says so, `encode`
        // cuts it at a character boundary.
        let long = ReflectionReason::Refused("é".repeat(600));
        let reflected = full().into_reflection(long, Channel::new("a.b"));
        assert!(check(&reflected).is_err());
        let back = decode(Channel::new("a"), encode(&reflected), &Limits::default()).unwrap();
        assert_eq!(
            back.reflection().and_then(|r| r.message()).map(str::len),
            Some(1024)
        );
    }

    #[test]
    fn parts_are_checked_like_decode() {
        let bad = Parts {
            amplitude: 2.0,
            ..Parts::default()
        };
        assert_eq!(
            bad.into_wave(Channel::new("a")).unwrap_err().kind(),
            WireErrorKind::InvalidField
        );
        let bad = Parts {
            source: Some(String::new()),
            ..Parts::default()
        };
        assert!(bad.into_wave(Channel::new("a")).is_err());
        let wave = Parts::default().into_wave(Channel::new("a")).unwrap();
        assert_eq!(encode(&wave), encode(&Wave::new("a", ())));
    }

    // ------------------------------------------------------------ version 2

    fn v2(wave: &Wave) -> Bytes {
        encode_as(WireVersion::V2, wave)
    }

    /// A fresh wave as an Aether emitter stamps it: the id's node is the
    /// origin's high half, `emitted_at` inside the id's millisecond.
    fn fresh(source: &str, payload: &'static [u8]) -> Wave {
        let origin = 0x5eed_2a4b_0000_0007u64;
        let millis = 1_738_000_000_123u64;
        Parts {
            id: (u128::from(millis) << 80) | (u128::from(origin >> 32) << 48) | 42,
            emitted_at_ns: millis * 1_000_000 + 456_789,
            origin,
            source: Some(source.into()),
            payload: Bytes::from_static(payload),
            ..Parts::default()
        }
        .into_wave(Channel::new("orders.created"))
        .unwrap()
    }

    fn decoded(body: Bytes) -> Wave {
        decode(Channel::new("orders.created"), body, &Limits::default()).unwrap()
    }

    #[test]
    fn version_2_writes_the_common_wave_in_28_bytes_before_its_source() {
        let wave = fresh("shop", b"hello");
        let body = v2(&wave);
        assert_eq!(body.len(), V2_COMMON_HEADER_LEN + 4 + 5);
        assert_eq!(body.len(), encoded_len_as(WireVersion::V2, &wave));
        assert_eq!(&body[..3], &[MAGIC, VERSION_2, 0]);
        assert_eq!(
            encode_as(WireVersion::V1, &wave).len() - body.len(),
            HEADER_LEN - V2_COMMON_HEADER_LEN
        );
        assert_eq!(Parts::of(&decoded(body)), Parts::of(&wave));
        // Wave::new: no id, no time; 26 bytes.
        assert_eq!(v2(&Wave::new("a", ())).len(), 26);
    }

    #[test]
    fn version_2_carries_every_field_and_says_what_it_left_out() {
        for wave in [full(), fresh("shop", b""), Wave::new("a", ())] {
            let body = v2(&wave);
            assert_eq!(body.len(), encoded_len_as(WireVersion::V2, &wave));
            let back = decode(wave.channel().clone(), body, &Limits::default()).unwrap();
            assert_eq!(Parts::of(&back), Parts::of(&wave));
        }
        // full(): amplitude 0.5, a0 0.7, phase π, id node 0x1234 (not the
        // origin's); emitted in its id's millisecond.
        let body = v2(&full());
        let mut reader = Reader { body: &body, at: 2 };
        let flags = reader.varint(3, "flags").unwrap();
        for flag in [
            FLAG_AMPLITUDE,
            FLAG_SOURCE_AMPLITUDE,
            FLAG_PHASE,
            FLAG_ID_NODE,
        ] {
            assert_ne!(flags & flag, 0, "{flag:#x}");
        }
        assert_eq!(flags & FLAG_EMITTED_AT, 0);
        let mut late = Parts::of(&full());
        late.emitted_at_ns += 5_000_000;
        let late = late.into_wave(Channel::new("a")).unwrap();
        let body = v2(&late);
        let mut reader = Reader { body: &body, at: 2 };
        assert_ne!(reader.varint(3, "flags").unwrap() & FLAG_EMITTED_AT, 0);
        assert_eq!(Parts::of(&decoded(body)), Parts::of(&late));
        // A reader takes a default written out all the same.
        let mut long = vec![MAGIC, VERSION_2];
        put_varint(&mut long, FLAG_AMPLITUDE | FLAG_PHASE);
        long.extend_from_slice(&[0; 12 + 8]); // id, origin
        long.extend_from_slice(&[0, 0]); // emitted_at, hops
        long.extend_from_slice(&1.0f64.to_le_bytes());
        long.extend_from_slice(&0.0f64.to_le_bytes());
        long.push(0); // no source
        let back = decoded(Bytes::from(long));
        assert_eq!(Parts::of(&back), Parts::of(&Wave::new("a", ())));
    }

    #[test]
    fn version_2_refuses_bad_varints_and_ranges() {
        let base = v2(&Wave::new("a", ())).to_vec();
        // Flags: cut, too long, unknown bits.
        assert_eq!(kind(&base[..2]), WireErrorKind::Truncated);
        let mut long = base.clone();
        long.splice(2..3, [0x80, 0x80, 0x80, 0x00]);
        assert_eq!(kind(&long), WireErrorKind::InvalidField);
        let mut unknown = vec![MAGIC, VERSION_2];
        put_varint(&mut unknown, 1 << 15);
        assert_eq!(kind(&unknown), WireErrorKind::UnknownFlags);
        // emitted_at 10^6 ns past its millisecond; hops 65,536.
        let at_emitted = 3 + 12 + 8;
        let mut past = base[..at_emitted].to_vec();
        put_varint(&mut past, 1_000_000);
        past.extend_from_slice(&base[at_emitted + 1..]);
        assert!(message(&past).contains("999999"), "{}", message(&past));
        let mut hops = base[..at_emitted + 1].to_vec();
        put_varint(&mut hops, 65_536);
        hops.extend_from_slice(&base[at_emitted + 2..]);
        assert!(message(&hops).contains("65535"), "{}", message(&hops));
        // Cut anywhere in the fixed part: truncated, never a panic.
        let full = v2(&full());
        for end in 2..40 {
            assert_eq!(kind(&full[..end]), WireErrorKind::Truncated, "cut at {end}");
        }
    }

    #[test]
    fn version_2_signatures_verify_and_catch_changes() {
        let wave = full();
        let body = encode_signed_as(WireVersion::V2, &wave, "aether.orders.cancelled", b"key");
        assert_eq!(
            verify("aether.orders.cancelled", &body, b"key"),
            Signature::Valid
        );
        assert_eq!(
            verify("aether.orders.other", &body, b"key"),
            Signature::Invalid
        );
        let mut changed = body.to_vec();
        changed[10] ^= 1;
        assert_eq!(
            verify("aether.orders.cancelled", &changed, b"key"),
            Signature::Invalid
        );
        assert_eq!(verify("x", &v2(&wave), b"key"), Signature::Unsigned);
        let back = decode(Channel::new("orders.cancelled"), body, &Limits::default()).unwrap();
        assert_eq!(Parts::of(&back), Parts::of(&wave));
    }

    #[test]
    fn frames_hold_envelopes_of_both_versions_and_are_checked_whole() {
        let one = v2(&fresh("shop", b"1"));
        let two = encode_as(WireVersion::V1, &full());
        let frame = encode_frame(&[one.clone(), two.clone()]);
        assert!(is_frame(&frame));
        let envelopes = frame_envelopes(&frame, &Limits::default()).unwrap();
        assert_eq!(envelopes, vec![one.clone(), two]);
        // decode refuses a frame as one envelope.
        assert_eq!(kind(&frame), WireErrorKind::UnsupportedVersion);
        let bad = |body: Vec<u8>| {
            frame_envelopes(&Bytes::from(body), &Limits::default())
                .unwrap_err()
                .kind()
        };
        // Count 0; more than the bytes hold; an empty envelope; cut inside
        // one; bytes after the last.
        assert_eq!(bad(vec![MAGIC, FRAME, 0]), WireErrorKind::BadFrame);
        let mut many = frame.to_vec();
        many[2] = 0x7F;
        assert_eq!(bad(many), WireErrorKind::BadFrame);
        assert_eq!(bad(vec![MAGIC, FRAME, 1, 0, 0xAE]), WireErrorKind::BadFrame);
        assert_eq!(
            bad(frame[..frame.len() - 1].to_vec()),
            WireErrorKind::BadFrame
        );
        let mut after = frame.to_vec();
        after.push(0);
        assert_eq!(bad(after), WireErrorKind::BadFrame);
        assert_eq!(bad(vec![MAGIC, FRAME]), WireErrorKind::BadFrame);
        let small = Limits { max_body_bytes: 10 };
        assert_eq!(
            frame_envelopes(&frame, &small).unwrap_err().kind(),
            WireErrorKind::Oversized
        );
        // Any cut of a frame is refused, never a panic.
        for end in 0..frame.len() {
            assert!(frame_envelopes(&frame.slice(..end), &Limits::default()).is_err());
        }
    }

    /// The one-piece read of version 2's fixed part agrees with the
    /// field-by-field one wherever it answers, on any bytes.
    fn same_fixed(body: &[u8]) {
        let Some((fast, fast_flags, fast_end)) = fixed_v2_fast(body) else {
            return;
        };
        let mut reader = Reader { body, at: 2 };
        let (slow, slow_flags) = fixed_v2(&mut reader).expect("the fast path took it");
        assert_eq!((fast_flags, fast_end), (slow_flags, reader.at));
        assert_eq!(
            (
                fast.id,
                fast.emitted_at_ns,
                fast.origin,
                fast.hops,
                fast.source_len
            ),
            (
                slow.id,
                slow.emitted_at_ns,
                slow.origin,
                slow.hops,
                slow.source_len
            )
        );
        for (a, b) in [
            (fast.amplitude, slow.amplitude),
            (fast.source_amplitude, slow.source_amplitude),
            (fast.phase, slow.phase),
        ] {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]
        #[test]
        fn the_fast_fixed_part_reads_as_the_careful_one(
            flags in 0u32..(1 << 15),
            rest in proptest::collection::vec(proptest::prelude::any::<u8>(), 60..120),
        ) {
            // Known flags (an unknown one is the careful path's to refuse).
            let mut body = vec![MAGIC, VERSION_2];
            put_varint(&mut body, flags & KNOWN_FLAGS_V2);
            body.extend(rest);
            same_fixed(&body);
        }
    }

    #[test]
    fn the_fast_fixed_part_reads_every_vector_shape() {
        for wave in [
            full(),
            fresh(
                "shop",
                b"0123456789012345678901234567890123456789012345678901234567890123",
            ),
            Wave::new("a", vec![7u8; 80]),
        ] {
            let body = v2(&wave);
            assert!(fixed_v2_fast(&body).is_some());
            same_fixed(&body);
            let back = decode(wave.channel().clone(), body, &Limits::default()).unwrap();
            assert_eq!(Parts::of(&back), Parts::of(&wave));
        }
        // A cached source name is the same name, and a new one replaces it.
        let mut cache = SourceCache::default();
        for source in ["shop", "shop", "till"] {
            let wave = fresh(source, b"x");
            let body = v2(&wave);
            let back = decode_cached(
                wave.channel().clone(),
                &body,
                0..body.len(),
                &Limits::default(),
                &mut cache,
            )
            .unwrap();
            assert_eq!(back.source(), Some(source));
        }
    }
}
