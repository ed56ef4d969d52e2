//! Reading an envelope, either version: framing the body into a `Raw` of
//! borrowed slices, then `Raw::build`, which checks every value and makes
//! the wave. Never panics, whatever the bytes.

#[allow(clippy::wildcard_imports)]
use super::*;

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
    pub(super) last: Option<SmolStr>,
}

/// [`decode`] of the envelope at `range` of `whole` (a message, or a batch
/// frame), reusing the source name `cache` holds when it is the same. The
/// payload is a slice of `whole`.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) fn decode_cached(
    channel: Channel,
    whole: &Bytes,
    range: std::ops::Range<usize>,
    limits: &Limits,
    cache: &mut SourceCache,
) -> Result<Wave, WireError> {
    decode_with(channel, whole, range, limits, Some(cache))
}

pub(super) fn decode_with(
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
pub(super) struct Fixed {
    pub(super) id: u128,
    pub(super) emitted_at_ns: u64,
    pub(super) origin: u64,
    pub(super) amplitude: f64,
    pub(super) source_amplitude: f64,
    pub(super) phase: f64,
    pub(super) hops: u16,
    pub(super) source_len: usize,
}

/// Version 1's flags and fixed header, after the version byte; the reader
/// is left after the source name length.
pub(super) fn fixed_v1(reader: &mut Reader<'_>, len: usize) -> Result<(Fixed, u16), WireError> {
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
pub(super) const V2_MAX_FIXED: usize = 2 + 3 + 12 + 8 + 8 + 3 + 8 + 8 + 8 + 4 + 1;

/// Version 2's fixed part read in one piece from a body long enough for
/// any fixed part, and with every value in range; `None` otherwise (then
/// [`fixed_v2`] reads it field by field and says what is wrong). Returns
/// where the source name starts.
#[inline]
pub(super) fn fixed_v2_fast(body: &[u8]) -> Option<(Fixed, u16, usize)> {
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
/// field (docs/guide/wire.md); the reader is left after the source name
/// length. The flags keep their version-1 bits for the sections.
pub(super) fn fixed_v2(reader: &mut Reader<'_>) -> Result<(Fixed, u16), WireError> {
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
pub(super) fn field<const N: usize>(header: &[u8; HEADER_LEN], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&header[at..at + N]);
    out
}

/// Writes `bytes` into `header` at `at`, [`field`]'s inverse.
#[inline(always)]
pub(super) fn put_field<const N: usize>(header: &mut [u8; HEADER_LEN], at: usize, bytes: [u8; N]) {
    header[at..at + N].copy_from_slice(&bytes);
}

/// A cursor over the body whose reads are all bounds-checked.
pub(super) struct Reader<'a> {
    pub(super) body: &'a [u8],
    pub(super) at: usize,
}

impl<'a> Reader<'a> {
    /// The next `n` bytes, or `Truncated` naming `field`.
    #[inline]
    pub(super) fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], WireError> {
        let bytes = self
            .at
            .checked_add(n)
            .and_then(|end| self.body.get(self.at..end));
        match bytes {
            Some(bytes) => {
                self.at += n;
                Ok(bytes)
            }
            None => Err(self.truncated(n, field)),
        }
    }

    /// `Truncated`: `field` needs `n` bytes the body does not have. Kept
    /// out of line, so that each read stays a bounds check.
    #[cold]
    #[inline(never)]
    fn truncated(&self, n: usize, field: &str) -> WireError {
        WireError::new(
            WireErrorKind::Truncated,
            format!(
                "{field} needs {n} bytes at offset {}, but the body ends at {}",
                self.at,
                self.body.len()
            ),
        )
    }

    /// The first `N` bytes of the body, whatever was read already, as an
    /// array reference (`Truncated` naming `field` if the body is shorter).
    pub(super) fn array_ref<const N: usize>(&self, field: &str) -> Result<&'a [u8; N], WireError> {
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
    pub(super) fn varint(&mut self, max_bytes: usize, field: &str) -> Result<u32, WireError> {
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
    #[inline]
    pub(super) fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], WireError> {
        let bytes = self.take(N, field)?;
        <[u8; N]>::try_from(bytes).map_err(|_| {
            WireError::new(WireErrorKind::Truncated, format!("{field} needs {N} bytes"))
        })
    }
}

/// The fields of an envelope, framed but not yet checked.
pub(super) struct Raw<'a> {
    pub(super) id: u128,
    pub(super) emitted_at_ns: u64,
    pub(super) origin: u64,
    pub(super) amplitude: f64,
    pub(super) source_amplitude: f64,
    pub(super) phase: f64,
    pub(super) hops: u16,
    /// The envelope's flags (the bits without a section matter here).
    pub(super) flags: u16,
    /// Empty: no source.
    pub(super) source: &'a [u8],
    pub(super) decay: Option<(f64, u64)>,
    pub(super) key: Option<&'a [u8]>,
    pub(super) reply_to: Option<&'a [u8]>,
    /// Reason code, message, channel.
    pub(super) reflection: Option<(u8, &'a [u8], &'a [u8])>,
    /// The trace section's [`TRACE_LEN`] bytes.
    pub(super) trace: Option<&'a [u8]>,
}

impl Raw<'_> {
    /// Checks every value and makes the wave; the one place the rules of a
    /// decoded wave are written.
    pub(super) fn build(
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
pub(super) fn reflection_of(
    code: u8,
    message: &[u8],
    channel: &[u8],
) -> Result<Reflection, WireError> {
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
pub(super) fn trace_of(bytes: &[u8]) -> Result<TraceContext, WireError> {
    let mut reader = Reader { body: bytes, at: 0 };
    let trace_id = reader.array::<16>("trace id")?;
    let span_id = reader.array::<8>("span id")?;
    let [flags] = reader.array::<1>("trace flags")?;
    TraceContext::new(trace_id, span_id, flags).map_err(|e| invalid(e.to_string()))
}

/// Why a reflection message of `len` bytes cannot travel.
pub(super) fn message_length_problem(len: usize) -> String {
    format!(
        "reflection message length {len} is over the limit of {MAX_REFLECTION_MESSAGE_LEN} bytes"
    )
}

pub(super) fn invalid(message: String) -> WireError {
    WireError::new(WireErrorKind::InvalidField, message)
}

pub(super) fn unit_amplitude(field: &str, value: f64) -> Result<Amplitude, WireError> {
    Amplitude::new(value).map_err(|_| invalid(format!("{field} {value} is outside [0, 1]")))
}

/// Why `name` is not a source name (`A-Z a-z 0-9 _ - .`, 1 to 64 bytes).
pub(super) fn source_problem(name: &[u8]) -> Option<String> {
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
pub(super) fn key_length_problem(len: usize) -> Option<String> {
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
