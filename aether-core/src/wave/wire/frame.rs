//! Batch frames: several envelopes in one NATS message, and the check of a
//! wave that is to go on the wire.

#[allow(clippy::wildcard_imports)]
use super::*;

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

/// How many waves `body` says it carries: a batch frame's count (not
/// checked: a hint, the frame is checked when it is read), 1 for anything
/// else.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) fn waves_in(body: &[u8]) -> usize {
    if !is_frame(body) {
        return 1;
    }
    let mut reader = Reader { body, at: 2 };
    reader
        .varint(3, "frame count")
        .map_or(1, |count| (count as usize).clamp(1, MAX_FRAME_WAVES))
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
pub(super) fn flags_of(body: &[u8]) -> Option<u32> {
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
