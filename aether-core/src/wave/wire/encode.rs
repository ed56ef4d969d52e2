//! Writing a wave's envelope, either version: its sections, the fixed
//! fields, the tail, and signing.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The variable sections of a wave as they go on the wire.
pub(super) struct Sections<'a> {
    pub(super) source: &'a [u8],
    /// [`FLAG_DIFFRACT`] and [`FLAG_REFLECT`], which have no section.
    pub(super) bare_flags: u16,
    pub(super) decay: Option<(f64, u64)>,
    pub(super) key: Option<&'a [u8]>,
    pub(super) reply_to: Option<&'a [u8]>,
    /// Reason code, message, channel.
    pub(super) reflection: Option<(u8, &'a [u8], &'a [u8])>,
    pub(super) trace: Option<TraceContext>,
    /// A signature follows the payload.
    pub(super) signed: bool,
}

impl<'a> Sections<'a> {
    pub(super) fn of(wave: &'a Wave) -> Self {
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

    pub(super) fn flags(&self) -> u16 {
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
    pub(super) fn flags_v2(&self, wave: &Wave) -> u32 {
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

    /// The envelope's layout in `version`: version 2's fixed part is
    /// written already (its length is what it took), and the whole length.
    pub(super) fn layout(&self, version: WireVersion, wave: &Wave) -> Layout {
        let tail = self.tail_len(wave.payload.len());
        match version {
            WireVersion::V1 => Layout {
                fixed: FixedBuf::default(),
                len: HEADER_LEN + tail,
            },
            WireVersion::V2 => {
                let fixed = fixed_part_v2(wave, self);
                let len = fixed.len + tail;
                Layout { fixed, len }
            }
        }
    }

    /// The length of what follows the source name length byte.
    pub(super) fn tail_len(&self, payload_len: usize) -> usize {
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
pub(super) fn truncate_at_char_boundary(s: &str, max: usize) -> &str {
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
pub(super) fn id_of(millis: u64, node: u32, sequence: u64) -> u128 {
    (u128::from(millis & 0xFFFF_FFFF_FFFF) << 80)
        | (u128::from(node) << 48)
        | u128::from(sequence & 0xFFFF_FFFF_FFFF)
}

/// A u48, little-endian.
pub(super) fn u48_le(bytes: [u8; 6]) -> u64 {
    let mut wide = [0u8; 8];
    wide[..6].copy_from_slice(&bytes);
    u64::from_le_bytes(wide)
}

/// The wave id's Unix milliseconds (its bytes 0 to 5).
pub(super) fn id_millis(id: u128) -> u64 {
    (id >> 80) as u64
}

/// The wave id's random bytes 6 to 9.
pub(super) fn id_node(id: u128) -> u32 {
    (id >> 48) as u32
}

/// The wave id's sequence (its bytes 10 to 15).
pub(super) fn id_sequence(id: u128) -> u64 {
    (id as u64) & 0xFFFF_FFFF_FFFF
}

/// The bytes of `value` as a LEB128 varint.
pub(super) fn varint_len(value: u32) -> usize {
    match value {
        0..=0x7F => 1,
        0x80..=0x3FFF => 2,
        0x4000..=0x1F_FFFF => 3,
        0x20_0000..=0xFFF_FFFF => 4,
        _ => 5,
    }
}

/// Writes `value` as a LEB128 varint.
pub(super) fn put_varint(out: &mut impl Sink, value: u32) {
    let (bytes, n) = varint_bytes(value);
    out.put(&bytes[..n]);
}

/// `value` as a LEB128 varint: five bytes, of which the first `n` count.
#[inline(always)]
fn varint_bytes(mut value: u32) -> ([u8; 5], usize) {
    let mut bytes = [0u8; 5];
    let mut n = 0;
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            bytes[n] = byte;
            n += 1;
            return (bytes, n);
        }
        bytes[n] = byte | 0x80;
        n += 1;
    }
}

/// The length in bytes of `encode(wave)` (version 2).
pub fn encoded_len(wave: &Wave) -> usize {
    encoded_len_as(WireVersion::V2, wave)
}

/// The length in bytes of `encode_as(version, wave)`.
pub fn encoded_len_as(version: WireVersion, wave: &Wave) -> usize {
    let sections = Sections::of(wave);
    sections.layout(version, wave).len
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
    let layout = sections.layout(version, wave);
    let mut out = Vec::with_capacity(layout.len);
    write(version, wave, &sections, &layout, &mut out);
    debug_assert_eq!(out.len(), layout.len);
    debug_assert_eq!(out.capacity(), layout.len);
    Bytes::from(out)
}

/// Like [`encode`], but into a per-thread arena of 64 KiB blocks: no
/// allocation per wave, and the envelope's clones (the connection keeps one)
/// are reference counts. For the hot emit path of a medium.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) fn encode_pooled(version: WireVersion, wave: &Wave) -> Bytes {
    thread_local! {
        static ARENA: std::cell::RefCell<bytes::BytesMut> =
            std::cell::RefCell::new(bytes::BytesMut::new());
    }
    const BLOCK: usize = 64 * 1024;
    let sections = Sections::of(wave);
    let layout = sections.layout(version, wave);
    if layout.len > BLOCK / 4 {
        return encode_as(version, wave);
    }
    ARENA.with_borrow_mut(|arena| {
        if arena.capacity() < layout.len {
            *arena = bytes::BytesMut::with_capacity(BLOCK);
        }
        write(version, wave, &sections, &layout, arena);
        debug_assert_eq!(arena.len(), layout.len);
        arena.split().freeze()
    })
}

/// A wave's envelope about to be written into a batch frame, its layout
/// worked out once: version 2's fixed part is written here already (its
/// length is what it took), the rest when the frame has room.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) struct Framed<'a> {
    pub(super) wave: &'a Wave,
    pub(super) sections: Sections<'a>,
    pub(super) version: WireVersion,
    pub(super) layout: Layout,
}

impl<'a> Framed<'a> {
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn of(version: WireVersion, wave: &'a Wave) -> Self {
        let sections = Sections::of(wave);
        let layout = sections.layout(version, wave);
        Self {
            wave,
            sections,
            version,
            layout,
        }
    }

    /// The bytes it takes in a frame: its length varint, then itself.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn entry_len(&self) -> usize {
        varint_len(self.layout.len as u32) + self.layout.len
    }

    /// Appends it to `out`: its length as a varint, then the envelope,
    /// written in place (no envelope of its own first).
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn write_into(&self, out: &mut bytes::BytesMut) {
        out.reserve(self.entry_len());
        put_varint(out, self.layout.len as u32);
        write(self.version, self.wave, &self.sections, &self.layout, out);
    }
}

/// Appends an envelope already written to `out`, after its length as a
/// varint.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) fn put_framed(out: &mut bytes::BytesMut, envelope: &[u8]) {
    out.reserve(3 + envelope.len());
    put_varint(out, envelope.len() as u32);
    out.put(envelope);
}

/// The bytes of `value` as a LEB128 varint, for a batch frame's writer.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) fn framed_len_len(value: usize) -> usize {
    varint_len(value as u32)
}

/// Where [`write`] puts bytes: a `Vec` or an arena.
pub(super) trait Sink {
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

/// Writes the envelope of `wave` in `version`, laid out by `sections` and
/// `layout`, into `out`.
pub(super) fn write(
    version: WireVersion,
    wave: &Wave,
    sections: &Sections<'_>,
    layout: &Layout,
    out: &mut impl Sink,
) {
    match version {
        WireVersion::V1 => write_fixed_v1(wave, sections, out),
        WireVersion::V2 => out.put(layout.fixed.as_slice()),
    }
    write_tail(wave, sections, out);
}

/// An envelope's layout ([`Sections::layout`]).
pub(super) struct Layout {
    /// Version 2's fixed part, up to and including the source name length
    /// (empty in version 1, whose header is written in place).
    pub(super) fixed: FixedBuf,
    /// The whole envelope's length.
    pub(super) len: usize,
}

/// Version 2's fixed part, up to and including the source name length,
/// written into a buffer of its own.
pub(super) fn fixed_part_v2(wave: &Wave, sections: &Sections<'_>) -> FixedBuf {
    let flags = sections.flags_v2(wave);
    let id = wave.id.as_u128();
    // At most 2 + 3 + 12 + 8 + 8 + 3 + 8 + 8 + 8 + 4 + 1 = 73 bytes.
    // Each field is put at its fixed size (no copy of a length known only
    // at run time: those cost a call each).
    let mut fixed = FixedBuf::default();
    fixed.push([MAGIC, VERSION_2]);
    fixed.push_varint(flags);
    fixed.push(low6(id_millis(id)));
    fixed.push(low6(id_sequence(id)));
    fixed.push(wave.origin.to_le_bytes());
    if flags & FLAG_EMITTED_AT != 0 {
        fixed.push(wave.emitted_at_ns.to_le_bytes());
    } else {
        // Under 10^6: the nanoseconds past the id's millisecond.
        fixed.push_varint((wave.emitted_at_ns - id_millis(id) * 1_000_000) as u32);
    }
    fixed.push_varint(u32::from(wave.hops));
    if flags & FLAG_AMPLITUDE != 0 {
        fixed.push(wave.amplitude.value().to_le_bytes());
    }
    if flags & FLAG_SOURCE_AMPLITUDE != 0 {
        fixed.push(wave.source_amplitude.value().to_le_bytes());
    }
    if flags & FLAG_PHASE != 0 {
        fixed.push(wave.phase.radians().to_le_bytes());
    }
    if flags & FLAG_ID_NODE != 0 {
        fixed.push(id_node(id).to_be_bytes());
    }
    fixed.push([sections.source.len() as u8]);
    fixed
}

/// The six low bytes of `value`, little-endian.
fn low6(value: u64) -> [u8; 6] {
    let b = value.to_le_bytes();
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

/// A stack buffer for version 2's fixed part.
pub(super) struct FixedBuf {
    pub(super) bytes: [u8; 80],
    pub(super) len: usize,
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
    pub(super) fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Appends `N` bytes.
    #[inline(always)]
    fn push<const N: usize>(&mut self, bytes: [u8; N]) {
        self.bytes[self.len..self.len + N].copy_from_slice(&bytes);
        self.len += N;
    }

    /// Appends `value` as a LEB128 varint: all five bytes are copied (a
    /// copy of a fixed size), the length moves by those that count. The
    /// varints come before the fixed part's last 24 bytes, so the five
    /// always fit.
    #[inline(always)]
    fn push_varint(&mut self, value: u32) {
        let (bytes, n) = varint_bytes(value);
        self.bytes[self.len..self.len + 5].copy_from_slice(&bytes);
        self.len += n;
    }
}

/// Version 1's fixed header.
pub(super) fn write_fixed_v1(wave: &Wave, sections: &Sections<'_>, out: &mut impl Sink) {
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
pub(super) fn write_tail(wave: &Wave, sections: &Sections<'_>, out: &mut impl Sink) {
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
    let layout = sections.layout(version, wave);
    let mut out = Vec::with_capacity(layout.len);
    write(version, wave, &sections, &layout, &mut out);
    let signature = signature_of(subject, &out, key);
    out.extend_from_slice(&signature);
    debug_assert_eq!(out.len(), layout.len);
    Bytes::from(out)
}

/// The HMAC-SHA256 of `subject` and `signed` with `key`.
pub(super) fn signature_of(subject: &str, signed: &[u8], key: &[u8]) -> [u8; SIGNATURE_LEN] {
    mac_of(subject, signed, key).finalize().into_bytes().into()
}

/// The HMAC-SHA256 state over `subject` (its length as u16 LE, then its
/// bytes) and `signed`, keyed with `key`.
pub(super) fn mac_of(subject: &str, signed: &[u8], key: &[u8]) -> Hmac<Sha256> {
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
