//! The versioned binary envelope of a wave: the body of a NATS message.
//!
//! Laid out byte by byte in docs/guide/wire.md ("Wire format"), with the test
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

/// Offsets of the fixed fields (the table in docs/guide/wire.md), for the
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

mod decode;
mod encode;
mod frame;
mod parts;

#[allow(clippy::wildcard_imports)]
pub use self::{decode::*, encode::*, frame::*, parts::*};

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
