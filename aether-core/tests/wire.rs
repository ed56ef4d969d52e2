//! The wave envelope (`aether_core::wire`): the test vectors of
//! `tests/vectors/wire/`, byte for byte in both directions, a real emitted
//! wave, and property tests: arbitrary valid waves round trip; arbitrary and
//! mutated bodies never panic the decoder, and whatever it accepts is in range.

use std::{
    f64::consts::{PI, TAU},
    path::{Path, PathBuf},
    process::Command,
};

use aether_core::{
    Aether, Channel, ReflectionReason, TraceContext, Vibrator, Wave, WaveId,
    wire::{self, HEADER_LEN, Limits, Parts, Signature, WireErrorKind, WireVersion},
};
use bytes::Bytes;
use proptest::{prelude::*, sample::Index};
use serde_json::Value;

// ------------------------------------------------------------ test vectors

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/wire")
}

fn vectors_json() -> Value {
    let path = vectors_dir().join("vectors.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).expect("vectors.json is JSON")
}

fn bin(name: &str) -> Vec<u8> {
    let path = vectors_dir().join(format!("{name}.bin"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn hex(text: &str) -> Vec<u8> {
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            assert_eq!(pair.len(), 2, "odd hex {text:?}");
            u8::from_str_radix(std::str::from_utf8(pair).expect("hex"), 16).expect("hex")
        })
        .collect()
}

fn string(case: &Value, key: &str) -> String {
    case[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} of {case}"))
        .to_string()
}

fn opt_string(case: &Value, key: &str) -> Option<String> {
    case[key].as_str().map(str::to_string)
}

fn u64_of(case: &Value, key: &str) -> u64 {
    string(case, key).parse().expect(key)
}

/// Floats are strings, parsed by Rust's correctly rounding parser (as by
/// Python's `float`), so both sides get the same bits.
fn f64_of(case: &Value, key: &str) -> f64 {
    string(case, key).parse().expect(key)
}

/// A reflection reason by its name in vectors.json.
fn reason_named(name: &str, message: &str) -> ReflectionReason {
    match name {
        "NoResonator" => ReflectionReason::NoResonator,
        "Expired" => ReflectionReason::Expired,
        "PropagationLimit" => ReflectionReason::PropagationLimit,
        "Refused" => ReflectionReason::Refused(message.to_string()),
        "HandlerError" => ReflectionReason::HandlerError(message.to_string()),
        other => panic!("unknown reflection reason {other:?} in vectors.json"),
    }
}

/// The fields a vector describes (`diffracting`, `reflect_on_failure` and
/// `reflection` may be left out: false, false, null).
fn parts_of(case: &Value) -> Parts {
    let (decay_per_s, amplified_at_ns) = match &case["decay"] {
        Value::Null => (0.0, 0),
        decay => (
            f64_of(decay, "decay_per_s"),
            u64_of(decay, "amplified_at_ns"),
        ),
    };
    let payload = match case.get("payload_hex") {
        Some(h) => hex(h.as_str().expect("payload_hex")),
        None => string(case, "payload_utf8").into_bytes(),
    };
    Parts {
        id: u128::from_str_radix(&string(case, "id"), 16).expect("id"),
        emitted_at_ns: u64_of(case, "emitted_at_ns"),
        origin: u64_of(case, "origin"),
        amplitude: f64_of(case, "amplitude"),
        source_amplitude: f64_of(case, "source_amplitude"),
        phase: f64_of(case, "phase"),
        hops: u16::try_from(case["hops"].as_u64().expect("hops")).expect("hops"),
        source: opt_string(case, "source"),
        decay_per_s,
        amplified_at_ns,
        correlation_key: opt_string(case, "correlation_key"),
        reply_to: opt_string(case, "reply_to"),
        diffracting: case["diffracting"].as_bool().unwrap_or(false),
        reflect_on_failure: case["reflect_on_failure"].as_bool().unwrap_or(false),
        reflection: match &case["reflection"] {
            Value::Null => None,
            r => Some((
                reason_named(&string(r, "reason"), r["message"].as_str().unwrap_or("")),
                string(r, "channel"),
            )),
        },
        trace: opt_string(case, "trace").map(|t| t.parse().expect("trace")),
        payload: Bytes::from(payload),
    }
}

fn kind_named(name: &str) -> WireErrorKind {
    match name {
        "BadMagic" => WireErrorKind::BadMagic,
        "UnsupportedVersion" => WireErrorKind::UnsupportedVersion,
        "UnknownFlags" => WireErrorKind::UnknownFlags,
        "Truncated" => WireErrorKind::Truncated,
        "Oversized" => WireErrorKind::Oversized,
        "InvalidField" => WireErrorKind::InvalidField,
        "BadFrame" => WireErrorKind::BadFrame,
        other => panic!("unknown error kind {other:?} in vectors.json"),
    }
}

/// The envelope version a vector is written in (`"version"`, 1 if absent).
fn version_of(case: &Value) -> WireVersion {
    match case["version"].as_u64() {
        None | Some(1) => WireVersion::V1,
        Some(2) => WireVersion::V2,
        Some(other) => panic!("version {other} in {case}"),
    }
}

fn good_cases() -> Vec<Value> {
    vectors_json()["vectors"]
        .as_array()
        .expect("vectors")
        .clone()
}

fn bad_cases() -> Vec<Value> {
    vectors_json()["bad"].as_array().expect("bad").clone()
}

#[test]
fn vectors_decode_to_their_fields() {
    let cases = good_cases();
    assert!(cases.len() >= 4);
    for case in &cases {
        let name = string(case, "name");
        let channel = string(case, "channel");
        let body = Bytes::from(bin(&name));
        let wave = wire::decode(Channel::new(&channel), body.clone(), &Limits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = parts_of(case);
        let got = Parts::of(&wave);
        assert!(
            got.same_as(&expected),
            "{name}: decoded {got:#?}, vectors.json says {expected:#?}"
        );
        // The same through the public getters.
        assert_eq!(wave.channel().as_str(), channel, "{name}");
        assert_eq!(wave.id().as_u128(), expected.id, "{name}");
        assert_eq!(wave.amplitude().value(), expected.amplitude, "{name}");
        assert_eq!(
            wave.source_amplitude().value(),
            expected.source_amplitude,
            "{name}"
        );
        assert_eq!(wave.phase().radians(), expected.phase, "{name}");
        assert_eq!(wave.propagation_count(), u32::from(expected.hops), "{name}");
        assert_eq!(wave.source(), expected.source.as_deref(), "{name}");
        assert_eq!(wave.decay_per_s(), expected.decay_per_s, "{name}");
        assert_eq!(
            wave.correlation_key(),
            expected.correlation_key.as_deref().unwrap_or(&channel),
            "{name}"
        );
        assert_eq!(
            wave.reply_to().map(Channel::as_str),
            expected.reply_to.as_deref(),
            "{name}"
        );
        assert_eq!(
            wave.emitted_at(),
            (expected.emitted_at_ns != 0)
                .then(|| std::time::UNIX_EPOCH
                    + std::time::Duration::from_nanos(expected.emitted_at_ns)),
            "{name}"
        );
        assert_eq!(wave.payload_bytes(), &expected.payload, "{name}");
        assert_eq!(wave.is_diffracting(), expected.diffracting, "{name}");
        assert_eq!(
            wave.reflects_on_failure(),
            expected.reflect_on_failure,
            "{name}"
        );
        assert_eq!(
            wave.reflection(),
            expected.reflection.as_ref().map(|(reason, _)| reason),
            "{name}"
        );
        assert_eq!(wave.trace_context(), expected.trace, "{name}");
        // A signed vector's signature checks with its key and subject only.
        let signed = signing_of(case);
        match &signed {
            Some((subject, key)) => {
                assert_eq!(
                    wire::verify(subject, &body, key),
                    Signature::Valid,
                    "{name}"
                );
                assert_eq!(
                    wire::verify("aether.orders.cancelled", &body, key),
                    Signature::Invalid,
                    "{name}"
                );
                assert_eq!(
                    wire::verify(subject, &body, b"another key"),
                    Signature::Invalid,
                    "{name}"
                );
            }
            None => assert_eq!(wire::verify("any", &body, b"k"), Signature::Unsigned),
        }
        // The payload is the tail of the body (before a signature), not a
        // copy.
        if !wave.payload_bytes().is_empty() {
            let end = body.len() - signed.map_or(0, |_| wire::SIGNATURE_LEN);
            let start = end - wave.payload_bytes().len();
            assert_eq!(
                wave.payload_bytes().as_ptr(),
                body[start..].as_ptr(),
                "{name}"
            );
        }
    }
}

#[test]
fn vectors_encode_to_their_bytes() {
    for case in good_cases() {
        let name = string(&case, "name");
        let wave = parts_of(&case)
            .into_wave(Channel::new(string(&case, "channel")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(wire::check(&wave).is_ok(), "{name}");
        let version = version_of(&case);
        let body = match signing_of(&case) {
            Some((subject, key)) => wire::encode_signed_as(version, &wave, &subject, &key),
            None => wire::encode_as(version, &wave),
        };
        let expected = bin(&name);
        assert_eq!(
            body.as_ref(),
            expected.as_slice(),
            "{name}: encoded {}, {name}.bin holds {}",
            hex_string(&body),
            hex_string(&expected)
        );
        // `encoded_len` is the unsigned length.
        let signature = signing_of(&case).map_or(0, |_| wire::SIGNATURE_LEN);
        assert_eq!(
            wire::encoded_len_as(version, &wave) + signature,
            expected.len(),
            "{name}"
        );
    }
}

/// The subject and key a signed vector is signed for.
fn signing_of(case: &Value) -> Option<(String, Vec<u8>)> {
    let signed = case.get("signed")?;
    Some((string(signed, "subject"), hex(&string(signed, "key_hex"))))
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_minimal_vector_is_a_new_wave() {
    assert_eq!(
        wire::encode_as(WireVersion::V1, &Wave::new("a", ())).as_ref(),
        bin("minimal").as_slice()
    );
    assert_eq!(bin("minimal").len(), HEADER_LEN);
    // Version 2, the default: 26 bytes.
    assert_eq!(
        wire::encode(&Wave::new("a", ())).as_ref(),
        bin("v2_minimal").as_slice()
    );
    assert_eq!(bin("v2_minimal").len(), 26);
}

#[test]
fn bad_vectors_fail_with_their_kind() {
    let cases = bad_cases();
    let kinds: std::collections::HashSet<_> = cases
        .iter()
        .map(|case| kind_named(&string(case, "error")))
        .collect();
    assert_eq!(kinds.len(), 6, "every error kind has a bad vector");
    for case in &cases {
        let name = string(case, "name");
        // The file is its base vector mutated as vectors.json says.
        let mut expected = bin(&string(case, "base"));
        for patch in case["patch"].as_array().into_iter().flatten() {
            let at = usize::try_from(patch["at"].as_u64().expect("at")).expect("at");
            let data = hex(patch["hex"].as_str().expect("hex"));
            expected[at..at + data.len()].copy_from_slice(&data);
        }
        if let Some(len) = case["truncate_to"].as_u64() {
            expected.truncate(usize::try_from(len).expect("truncate_to"));
        }
        if let Some(h) = case["append_hex"].as_str() {
            expected.extend(hex(h));
        }
        let body = bin(&name);
        assert_eq!(body, expected, "{name}.bin is not its base mutated");

        let err = wire::decode(Channel::new("a"), Bytes::from(body), &limits_of(case))
            .expect_err(&format!("{name} decoded"));
        fails_as(case, &err);
    }
}

/// `err` is the kind and holds the message a bad vector `case` says.
fn fails_as(case: &Value, err: &wire::WireError) {
    let name = string(case, "name");
    assert_eq!(
        err.kind(),
        kind_named(&string(case, "error")),
        "{name}: {err}"
    );
    let contains = string(case, "message_contains");
    assert!(
        err.to_string().contains(&contains),
        "{name}: {err:?} lacks {contains:?}"
    );
}

/// The limits a bad vector is decoded with (`max_body_bytes` if it says,
/// else the default).
fn limits_of(case: &Value) -> Limits {
    Limits {
        max_body_bytes: case["max_body_bytes"]
            .as_u64()
            .map_or(Limits::default().max_body_bytes, |n| {
                usize::try_from(n).expect("max_body_bytes")
            }),
    }
}

/// Where several checks apply to one body, the decoder reports the first in
/// the order of ARCHITECTURE.md ("Wire format", "Checks, in order"): each
/// such vector, by step, with the kind and message it fails with.
#[test]
fn the_first_check_in_order_wins() {
    use WireErrorKind::{
        BadMagic, InvalidField, Oversized, Truncated, UnknownFlags, UnsupportedVersion,
    };
    let cases: &[(&str, WireErrorKind, &str)] = &[
        // 1. The size, whatever the bytes.
        ("oversized_bad_magic", Oversized, "the limit is 64"),
        // 2. The magic byte: missing, then wrong however short the body.
        ("empty", Truncated, "magic byte needs 1 bytes"),
        ("bad_magic_short", BadMagic, "first byte is 0x7b"),
        ("bad_magic_version_2", BadMagic, "first byte is 0x00"),
        // 3. The version: missing, then wrong whatever follows.
        ("magic_only", Truncated, "version needs 1 bytes at offset 1"),
        ("version_3_short", UnsupportedVersion, "envelope version 3"),
        (
            "version_3_unknown_flags",
            UnsupportedVersion,
            "envelope version 3",
        ),
        // 4. The flags: cut, then unknown bits however short the body.
        ("flags_cut", Truncated, "flags needs 2 bytes at offset 2"),
        ("unknown_flag_short", UnknownFlags, "unknown bits 0x0100"),
        // 5. The header's length, before any of its values.
        (
            "truncated_header_bad_amplitude",
            Truncated,
            "shorter than the 63-byte header",
        ),
        // 6. The source name: its length limit, then its bytes.
        (
            "source_too_long_short",
            InvalidField,
            "source name length 65 is over the limit of 64",
        ),
        (
            "truncated_source_bad_char",
            Truncated,
            "source name needs 4 bytes at offset 63",
        ),
        // 7. The sections: each length limit before the bytes it announces,
        // every section framed before any value is checked.
        (
            "truncated_key_bad_decay",
            Truncated,
            "correlation key needs 8 bytes at offset 97",
        ),
        (
            "key_empty_short",
            InvalidField,
            "correlation key length is 0",
        ),
        (
            "key_too_long_short",
            InvalidField,
            "correlation key length 257 is over the limit of 256",
        ),
        (
            "reply_too_long_short",
            InvalidField,
            "reply channel length 300 is over the limit of 256",
        ),
        (
            "reflection_message_too_long_short",
            InvalidField,
            "reflection message length 2000 is over the limit of 1024",
        ),
        (
            "reflected_channel_too_long_short",
            InvalidField,
            "reflected channel length 300 is over the limit of 256",
        ),
        (
            "truncated_reflection_unknown_reason",
            Truncated,
            "reflection message needs 12 bytes at offset 80",
        ),
        (
            "truncated_trace_zero_trace_id",
            Truncated,
            "trace section needs 25 bytes at offset 68",
        ),
        // 8. The signature's room, before any value.
        (
            "truncated_signature_bad_amplitude",
            Truncated,
            "signature needs 32 bytes",
        ),
        // 9. The values, in a fixed order, after every length limit.
        (
            "key_too_long_amplitude_nan",
            InvalidField,
            "correlation key length 257 is over the limit of 256",
        ),
        (
            "amplitude_and_phase_bad",
            InvalidField,
            "amplitude 1.5 is outside [0, 1]",
        ),
        (
            "source_bad_char_decay_negative",
            InvalidField,
            "has byte 0x20 at 1",
        ),
    ];
    let bad = bad_cases();
    for &(name, kind, contains) in cases {
        let case = bad
            .iter()
            .find(|case| case["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in vectors.json"));
        assert_eq!(
            kind_named(&string(case, "error")),
            kind,
            "{name} in vectors.json"
        );
        let err = wire::decode(Channel::new("a"), Bytes::from(bin(name)), &limits_of(case))
            .expect_err(name);
        assert_eq!(err.kind(), kind, "{name}: {err}");
        assert!(
            err.to_string().contains(contains),
            "{name}: {err} lacks {contains:?}"
        );
    }
}

fn good_case(name: &str) -> Value {
    good_cases()
        .into_iter()
        .find(|case| case["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in vectors.json"))
}

/// The id is 16 bytes: the Unix millisecond of emission (48 bits), a
/// random number per process (32), a sequence (48). `emitted` and `full`
/// are laid out so; the decoder takes any id, 0 included.
#[test]
fn the_id_begins_with_the_emission_millisecond() {
    for name in ["emitted", "full"] {
        let case = good_case(name);
        let ms = u64_of(&case, "emitted_at_ns") / 1_000_000;
        let body = bin(name);
        assert_eq!(body[4..10], ms.to_be_bytes()[2..], "{name}");
        let wave = wire::decode(Channel::new("a"), Bytes::from(body), &Limits::default()).unwrap();
        assert_eq!(wave.id().timestamp_ms(), ms, "{name}");
    }
    // A client that makes no ids sends 0.
    let case = good_case("foreign");
    let wave = wire::decode(
        Channel::new(string(&case, "channel")),
        Bytes::from(bin("foreign")),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(wave.id(), WaveId::NIL);
    assert_eq!(wave.origin(), 0);
    assert_ne!(wave.emitted_at(), None);
}

/// An emission stamps the id and `emitted_at` from one clock reading; a
/// fresh wave (no hop, no decay) carries its amplitude equal to `a0`, bit
/// for bit, and is not measured again on the way.
#[tokio::test]
async fn a_fresh_emission_has_amplitude_a0_and_a_timed_id() {
    let aether = Aether::default();
    let mut listener = Vibrator::create("listener", &aether).await.unwrap();
    listener.resonate_on("orders.*").await.unwrap();
    let shop = Vibrator::create("shop", &aether).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let wave = Wave::builder("orders.created")
            .amplitude(0.8)
            .build()
            .unwrap();
        shop.emit(wave).await.unwrap();
        let wave = listener.receive().await.unwrap();
        let body = wire::encode_as(WireVersion::V1, &wave);
        assert_eq!(body[36..44], 0.8f64.to_le_bytes(), "amplitude");
        assert_eq!(body[44..52], 0.8f64.to_le_bytes(), "a0");
        let emitted_at_ns = Parts::of(&wave).emitted_at_ns;
        assert_ne!(emitted_at_ns, 0);
        assert_eq!(wave.id().timestamp_ms(), emitted_at_ns / 1_000_000);
        assert_eq!(
            body[4..10],
            (emitted_at_ns / 1_000_000).to_be_bytes()[2..],
            "the id's first 6 bytes"
        );
        ids.push(body[4..20].to_vec());
    }
    // One process: the same random bytes 6 to 9, a later sequence.
    assert_eq!(ids[0][6..10], ids[1][6..10]);
    assert!(ids[0][10..] < ids[1][10..]);
}

/// A JSON payload is UTF-8 JSON text; the envelope carries any payload as
/// opaque bytes.
#[test]
fn json_payloads_are_utf8_json_text() {
    let wave = Wave::builder("a")
        .json(&serde_json::json!({"note": "café ☕"}))
        .build()
        .unwrap();
    assert_eq!(
        wave.payload_bytes().as_ref(),
        "{\"note\":\"café ☕\"}".as_bytes()
    );
    let case = good_case("foreign");
    let foreign = wire::decode(
        Channel::new("orders.created"),
        Bytes::from(bin("foreign")),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(
        foreign.payload_bytes().as_ref(),
        string(&case, "payload_utf8").as_bytes()
    );
    assert_eq!(foreign.payload()["note"], "café ☕");
    // Not UTF-8 JSON text: a byte order mark, UTF-16, or bytes that are
    // not JSON. They travel as they are; `json` fails and `payload` is null.
    let utf16: Vec<u8> = "{\"a\":1}"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    for payload in [
        b"\xef\xbb\xbf{\"a\":1}".to_vec(),
        utf16,
        vec![0xde, 0xad, 0xbe, 0xef],
    ] {
        let wave = Wave::new("a", payload.clone());
        let back =
            wire::decode(Channel::new("a"), wire::encode(&wave), &Limits::default()).unwrap();
        assert_eq!(back.payload_bytes().as_ref(), payload.as_slice());
        assert!(back.json::<serde_json::Value>().is_err(), "{payload:?}");
        assert_eq!(back.payload(), serde_json::Value::Null);
    }
}

/// A reflection travels on `_reflect.<source name>.<origin as 16 lowercase
/// hex digits>`, the reflection channel of the source and origin it names.
#[test]
fn the_reflected_vector_is_on_its_sources_reflection_channel() {
    let case = good_case("reflected");
    let channel = format!(
        "_reflect.{}.{:016x}",
        string(&case, "source"),
        u64_of(&case, "origin")
    );
    assert_eq!(channel, "_reflect.shop.000000000000004d");
    assert_eq!(string(&case, "channel"), channel);
}

#[test]
fn every_bin_file_is_described() {
    let json = vectors_json();
    let mut named: Vec<String> = json["vectors"]
        .as_array()
        .into_iter()
        .chain(json["bad"].as_array())
        .chain(json["frames"].as_array())
        .chain(json["bad_frames"].as_array())
        .flatten()
        .map(|case| string(case, "name"))
        .collect();
    named.sort();
    let mut files: Vec<String> = std::fs::read_dir(vectors_dir())
        .expect("vectors dir")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".bin").map(str::to_string)
        })
        .collect();
    files.sort();
    assert_eq!(files, named);
}

/// The independent Python encoder writes the same bytes as the committed
/// files (skipped when `python3` is not installed).
#[test]
fn python_encoder_agrees() {
    let script = vectors_dir().join("make_vectors.py");
    match Command::new("python3").arg(&script).arg("--check").output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("note: python3 not found, make_vectors.py --check skipped");
        }
        Err(e) => panic!("running python3: {e}"),
        Ok(out) => assert!(
            out.status.success(),
            "make_vectors.py --check failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn the_wave_carries_the_channel_given() {
    let body = Bytes::from(bin("full"));
    let wave = wire::decode(Channel::new("hop.7f3a9c"), body, &Limits::default()).unwrap();
    assert_eq!(wave.channel().as_str(), "hop.7f3a9c");
    assert_eq!(wave.correlation_key(), "order-42");
}

/// A wave stamped by a real emission (id, source, origin, clock) and then
/// relayed travels exactly.
#[tokio::test]
async fn an_emitted_wave_round_trips() {
    let aether = Aether::default();
    let mut listener = Vibrator::create("listener", &aether).await.unwrap();
    listener.resonate_on("orders.*").await.unwrap();
    let shop = Vibrator::create("shop.eu-1", &aether).await.unwrap();
    let wave = Wave::builder("orders.created")
        .amplitude(0.9)
        .phase(PI)
        .decay_per_s(0.01)
        .correlation_key("order-1")
        .reply_to("_reply.shop.1")
        .json(&serde_json::json!({"order_id": 1}))
        .build()
        .unwrap();
    shop.emit(wave).await.unwrap();
    let mut wave = listener.receive().await.unwrap();
    wave.propagate();
    assert!(wire::check(&wave).is_ok());
    let body = wire::encode(&wave);
    let back = wire::decode(wave.channel().clone(), body, &Limits::default()).unwrap();
    assert!(Parts::of(&back).same_as(&Parts::of(&wave)));
    assert_eq!(back.source(), Some("shop.eu-1"));
    assert_ne!(Parts::of(&back).origin, 0);
    assert_eq!(back.id(), wave.id());
    assert_eq!(back.payload()["order_id"], 1);
}

// ------------------------------------------------------------ properties

fn amplitude() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(1.0), 0.0..=1.0f64]
}

fn reflection() -> impl Strategy<Value = (ReflectionReason, String)> {
    let reason = prop_oneof![
        Just(ReflectionReason::NoResonator),
        Just(ReflectionReason::Expired),
        Just(ReflectionReason::PropagationLimit),
        prop::collection::vec(any::<char>(), 0..=256)
            .prop_map(|c| ReflectionReason::Refused(String::from_iter(c))),
        prop::collection::vec(any::<char>(), 0..=64)
            .prop_map(|c| ReflectionReason::HandlerError(String::from_iter(c))),
    ];
    (reason, channel_name())
}

fn phase() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(PI),
        Just(f64::from_bits(TAU.to_bits() - 1)),
        0.0..TAU
    ]
}

/// A strategy from a regex, compiled once (a `&str` strategy compiles its
/// regex again for every case).
fn regex(pattern: &str) -> impl Strategy<Value = String> + use<> {
    proptest::string::string_regex(pattern).expect("regex")
}

fn channel_name() -> impl Strategy<Value = String> {
    prop::collection::vec(regex("[A-Za-z0-9_-]{1,8}"), 1..5).prop_map(|tokens| tokens.join("."))
}

/// Any wave the wire carries, with any id, clock, origin and hop count.
fn valid_parts() -> impl Strategy<Value = Parts> {
    let numbers = (
        any::<u128>(),
        any::<u64>(),
        any::<u64>(),
        amplitude(),
        amplitude(),
        phase(),
        any::<u16>(),
    );
    let sections = (
        prop::option::of(regex("[A-Za-z0-9_.-]{1,64}")),
        prop_oneof![
            Just((0.0, 0)),
            (0.0..1e6f64, any::<u64>()),
            (Just(0.0), any::<u64>())
        ],
        // At most 64 characters of at most 4 bytes: at most 256 bytes.
        prop::option::of(prop::collection::vec(any::<char>(), 1..=64).prop_map(String::from_iter)),
        prop::option::of(channel_name()),
        prop::collection::vec(any::<u8>(), 0..96),
    );
    let bounce = (
        any::<bool>(),
        any::<bool>(),
        prop::option::weighted(0.2, reflection()),
        prop::option::weighted(0.3, trace()),
    );
    (numbers, sections, bounce).prop_map(
        |(
            (id, emitted_at_ns, origin, amplitude, source_amplitude, phase, hops),
            (source, (decay_per_s, amplified_at_ns), correlation_key, reply_to, payload),
            (diffracting, reflect_on_failure, reflection, trace),
        )| Parts {
            id,
            emitted_at_ns,
            origin,
            amplitude,
            source_amplitude,
            phase,
            hops,
            source,
            decay_per_s,
            amplified_at_ns,
            correlation_key,
            reply_to,
            diffracting,
            reflect_on_failure,
            reflection,
            trace,
            payload: Bytes::from(payload),
        },
    )
}

fn trace() -> impl Strategy<Value = TraceContext> {
    (any::<[u8; 16]>(), any::<[u8; 8]>(), any::<u8>())
        .prop_filter_map("zero ids are invalid", |(trace, span, flags)| {
            TraceContext::new(trace, span, flags).ok()
        })
}

/// Whatever the decoder accepts is a wave whose every field is in range, and
/// that travels again unchanged.
fn assert_in_range(wave: &Wave, channel: &str, body_len: usize) {
    let parts = Parts::of(wave);
    assert_eq!(wave.channel().as_str(), channel);
    assert!((0.0..=1.0).contains(&parts.amplitude), "{parts:?}");
    assert!((0.0..=1.0).contains(&parts.source_amplitude), "{parts:?}");
    assert!((0.0..TAU).contains(&parts.phase), "{parts:?}");
    assert!(
        parts.decay_per_s.is_finite() && parts.decay_per_s >= 0.0,
        "{parts:?}"
    );
    if let Some(source) = &parts.source {
        assert!((1..=64).contains(&source.len()), "{parts:?}");
        assert!(
            source
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)),
            "{parts:?}"
        );
    }
    if let Some(key) = &parts.correlation_key {
        assert!((1..=256).contains(&key.len()), "{parts:?}");
    }
    if let Some(reply_to) = wave.reply_to() {
        assert!(reply_to.validate_concrete().is_ok(), "{parts:?}");
    }
    if let Some((reason, channel)) = &parts.reflection {
        assert!(reason.message().map_or(0, str::len) <= wire::MAX_REFLECTION_MESSAGE_LEN);
        assert!(
            Channel::new(channel).validate_concrete().is_ok(),
            "{parts:?}"
        );
    }
    // The smallest fixed part: version 2's, 26 bytes.
    assert!(parts.payload.len() <= body_len - 26);
    assert!(wire::check(wave).is_ok());
    let again = wire::decode(
        wave.channel().clone(),
        wire::encode(wave),
        &Limits::default(),
    )
    .expect("a decoded wave encodes to a valid envelope");
    assert!(Parts::of(&again).same_as(&parts));
}

/// Something done to a valid envelope.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Truncate(Index),
    Append(Vec<u8>),
    /// Rewrites the source length byte, the key length or the reply length
    /// (when present) with any value.
    Length(u8, u16),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set(at, byte)),
        2 => any::<Index>().prop_map(Mutation::Truncate),
        1 => prop::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
        3 => (0..3u8, any::<u16>()).prop_map(|(which, value)| Mutation::Length(which, value)),
    ]
}

/// Offsets of the source length byte and, when present, of the key and reply
/// length fields, in the envelope of `parts`.
fn length_fields(parts: &Parts) -> (usize, Option<usize>, Option<usize>) {
    let source_len = parts.source.as_ref().map_or(0, String::len);
    let has_decay = parts.decay_per_s.to_bits() != 0 || parts.amplified_at_ns != 0;
    let mut at = HEADER_LEN + source_len + if has_decay { 16 } else { 0 };
    let key = parts.correlation_key.as_ref().map(|key| {
        let field = at;
        at += 2 + key.len();
        field
    });
    let reply = parts.reply_to.as_ref().map(|_| at);
    (HEADER_LEN - 1, key, reply)
}

fn apply(body: &mut Vec<u8>, mutation: &Mutation, fields: (usize, Option<usize>, Option<usize>)) {
    match mutation {
        Mutation::Flip(at, mask) if !body.is_empty() => {
            let i = at.index(body.len());
            body[i] ^= mask;
        }
        Mutation::Set(at, byte) if !body.is_empty() => {
            let i = at.index(body.len());
            body[i] = *byte;
        }
        Mutation::Truncate(at) => {
            let len = at.index(body.len() + 1);
            body.truncate(len);
        }
        Mutation::Append(bytes) => body.extend_from_slice(bytes),
        Mutation::Length(0, value) if body.len() > fields.0 => {
            body[fields.0] = *value as u8;
        }
        Mutation::Length(which, value) => {
            let field = if *which == 1 { fields.1 } else { fields.2 };
            if let Some(at) = field.filter(|at| at + 2 <= body.len()) {
                body[at..at + 2].copy_from_slice(&value.to_le_bytes());
            }
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Every valid wave travels exactly: each field, bit for bit, and the
    /// payload is not copied on the way in.
    #[test]
    fn valid_waves_round_trip(parts in valid_parts(), channel in channel_name()) {
        let wave = parts.clone().into_wave(Channel::new(&channel)).expect("valid parts");
        prop_assert!(wire::check(&wave).is_ok());
        let body = wire::encode(&wave);
        prop_assert_eq!(body.len(), wire::encoded_len(&wave));
        let back = wire::decode(Channel::new(&channel), body.clone(), &Limits::default())
            .expect("decodes");
        prop_assert!(Parts::of(&back).same_as(&parts), "{:?} != {:?}", Parts::of(&back), parts);
        prop_assert_eq!(back.channel().as_str(), channel.as_str());
        prop_assert_eq!(back.correlation_key(), wave.correlation_key());
        prop_assert_eq!(back.reply_to().map(Channel::as_str), wave.reply_to().map(Channel::as_str));
        prop_assert_eq!(back.emitted_at(), wave.emitted_at());
        if !back.payload_bytes().is_empty() {
            let start = body.len() - back.payload_bytes().len();
            prop_assert_eq!(back.payload_bytes().as_ptr(), body[start..].as_ptr());
        }
    }

    /// A signed wave decodes to the same fields and verifies with its key
    /// and subject only; changing any one byte of the body makes it fail to
    /// verify (or to decode), never pass.
    #[test]
    fn signed_waves_verify_and_any_change_is_caught(
        parts in valid_parts(),
        channel in channel_name(),
        key in prop::collection::vec(any::<u8>(), 16..64),
        at in any::<Index>(),
        mask in 1..=255u8,
    ) {
        let wave = parts.clone().into_wave(Channel::new(&channel)).expect("valid parts");
        let subject = format!("aether.{channel}");
        let body = wire::encode_signed(&wave, &subject, &key);
        prop_assert_eq!(body.len(), wire::encoded_len(&wave) + wire::SIGNATURE_LEN);
        prop_assert_eq!(wire::verify(&subject, &body, &key), Signature::Valid);
        prop_assert_eq!(wire::verify(&format!("{subject}.x"), &body, &key), Signature::Invalid);
        let back = wire::decode(Channel::new(&channel), body.clone(), &Limits::default())
            .expect("decodes");
        prop_assert!(Parts::of(&back).same_as(&parts));
        let mut changed = body.to_vec();
        let i = at.index(changed.len());
        changed[i] ^= mask;
        prop_assert_ne!(wire::verify(&subject, &changed, &key), Signature::Valid);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(50_000))]

    /// Any bytes at all, and bytes that start like an envelope (so that the
    /// decoder reads past the magic, version and flags): never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..128),
            (0..64u8, prop::collection::vec(any::<u8>(), 0..200)).prop_map(|(flags, rest)| {
                let mut body = vec![wire::MAGIC, wire::VERSION, flags, 0];
                body.extend(rest);
                body
            }),
            (any::<u8>(), prop::collection::vec(any::<u8>(), 0..200)).prop_map(|(flags, rest)| {
                let mut body = vec![wire::MAGIC, wire::VERSION_2, flags & 0x7F];
                body.extend(rest);
                body
            }),
        ]
    ) {
        let len = body.len();
        if let Ok(wave) = wire::decode(Channel::new("a.b"), Bytes::from(body), &Limits::default()) {
            assert_in_range(&wave, "a.b", len);
        }
    }

    /// Valid envelopes with bytes flipped or set, cut anywhere, extended, or
    /// with a length field rewritten: never a panic; an error, or a wave in
    /// range.
    #[test]
    fn mutated_envelopes_never_panic(
        parts in valid_parts(),
        mutations in prop::collection::vec(mutation(), 1..4),
        small_limit in prop::option::weighted(0.05, 0..400usize),
        v2 in any::<bool>(),
    ) {
        let fields = length_fields(&parts);
        let wave = parts.into_wave(Channel::new("a.b")).expect("valid parts");
        // The length fields' offsets are version 1's; in version 2 the same
        // rewrites land elsewhere, which is one more mutation.
        let version = if v2 { WireVersion::V2 } else { WireVersion::V1 };
        let mut body = wire::encode_as(version, &wave).to_vec();
        for mutation in &mutations {
            apply(&mut body, mutation, fields);
        }
        let limits = small_limit.map_or_else(Limits::default, |max_body_bytes| Limits { max_body_bytes });
        let len = body.len();
        match wire::decode(Channel::new("a.b"), Bytes::from(body), &limits) {
            Ok(wave) => {
                prop_assert!(len <= limits.max_body_bytes);
                assert_in_range(&wave, "a.b", len);
            }
            Err(err) => prop_assert!(!err.to_string().is_empty()),
        }
    }
}

proptest! {
    // Each case is a frame of up to 20 envelopes (about 10), packed,
    // unpacked and mutated: 10,000 frames hold about twice the envelopes
    // of the 50,000 cases above.
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// Frames of valid envelopes (either version) unpack to exactly those
    /// envelopes; any cut or byte change is refused or unpacks to envelopes
    /// that are slices of the frame: never a panic.
    #[test]
    fn frames_round_trip_and_mutated_frames_never_panic(
        waves in prop::collection::vec((valid_parts(), any::<bool>()), 1..20),
        cut in any::<Index>(),
        flip in prop::option::of((any::<Index>(), any::<u8>())),
    ) {
        let envelopes: Vec<Bytes> = waves
            .into_iter()
            .map(|(parts, v2)| {
                let wave = parts.into_wave(Channel::new("a.b")).expect("valid parts");
                let version = if v2 { WireVersion::V2 } else { WireVersion::V1 };
                wire::encode_as(version, &wave)
            })
            .collect();
        let frame = wire::encode_frame(&envelopes);
        let back = wire::frame_envelopes(&frame, &Limits::default()).expect("a frame");
        prop_assert_eq!(&back, &envelopes);
        for envelope in back {
            prop_assert!(wire::decode(Channel::new("a.b"), envelope, &Limits::default()).is_ok());
        }
        let mut body = frame.to_vec();
        if let Some((at, byte)) = flip {
            let at = at.index(body.len());
            body[at] = byte;
        }
        body.truncate(cut.index(body.len() + 1));
        let body = Bytes::from(body);
        if let Ok(parts) = wire::frame_envelopes(&body, &Limits::default()) {
            let total: usize = parts.iter().map(Bytes::len).sum();
            prop_assert!(total < body.len());
            for envelope in parts {
                let _ = wire::decode(Channel::new("a.b"), envelope, &Limits::default());
            }
        }
    }
}

/// The frame vectors: each good frame unpacks to its envelopes (the named
/// vectors' files), and packs again to the same bytes; each bad one fails
/// with its kind and message.
#[test]
fn frame_vectors_unpack_and_bad_ones_are_refused_whole() {
    let json = vectors_json();
    let frames = json["frames"].as_array().expect("frames");
    assert!(frames.len() >= 3);
    for frame in frames {
        let name = string(frame, "name");
        let repeat = frame["repeat"].as_u64().unwrap_or(1) as usize;
        let named: Vec<Bytes> = frame["envelopes"]
            .as_array()
            .expect("envelopes")
            .iter()
            .map(|n| Bytes::from(bin(n.as_str().expect("a name"))))
            .collect();
        let expected: Vec<Bytes> = std::iter::repeat_n(named, repeat).flatten().collect();
        let body = Bytes::from(bin(&name));
        let envelopes = wire::frame_envelopes(&body, &Limits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(envelopes, expected, "{name}");
        assert_eq!(wire::encode_frame(&expected), body, "{name}");
        for envelope in envelopes {
            wire::decode(Channel::new("a"), envelope, &Limits::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    for case in json["bad_frames"].as_array().expect("bad_frames") {
        let name = string(case, "name");
        let err =
            wire::frame_envelopes(&Bytes::from(bin(&name)), &limits_of(case)).expect_err(&name);
        fails_as(case, &err);
    }
}
