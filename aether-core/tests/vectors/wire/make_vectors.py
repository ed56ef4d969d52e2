#!/usr/bin/env python3
"""Writes the wave envelope test vectors (NAME.bin) from vectors.json.

An encoder of the Aether wave envelope, version 1, written from the table in
ARCHITECTURE.md ("Wire format") and independent of the Rust code: it shows
that a client in another language can produce envelopes. Python 3, standard
library only.

    python3 make_vectors.py           # (re)writes every NAME.bin
    python3 make_vectors.py --check   # compares them with the files; exit 1 if any differs

Either way, `first_error` (a decoder's checks, written from the numbered
"Checks, in order" list of the same section) must find no error in a good
vector and, in a bad one, the error kind vectors.json expects.

The Rust test `aether-core/tests/wire.rs` decodes and encodes the same cases
and compares with the committed .bin files byte for byte.
"""

import hashlib
import hmac
import json
import math
import os
import struct
import sys

MAGIC = 0xAE
VERSION = 1
HEADER_LEN = 63
FLAG_DECAY = 1 << 0
FLAG_CORRELATION_KEY = 1 << 1
FLAG_REPLY_TO = 1 << 2
FLAG_DIFFRACT = 1 << 3
FLAG_REFLECT = 1 << 4
FLAG_REFLECTED = 1 << 5
FLAG_TRACE = 1 << 6
FLAG_SIGNED = 1 << 7
# The payload is sealed (nonce, ciphertext, tag): opaque to the envelope.
FLAG_SEALED = 1 << 9
KNOWN_FLAGS = 0xFF | FLAG_SEALED
MAX_SOURCE_LEN = 64
MAX_KEY_LEN = 256
MAX_CHANNEL_LEN = 256
MAX_REFLECTION_MESSAGE_LEN = 1024
# Reflection reason codes; only Refused and HandlerError carry a message.
REASONS = {
    "NoResonator": 0,
    "Expired": 1,
    "PropagationLimit": 2,
    "Refused": 3,
    "HandlerError": 4,
}
SOURCE_ALPHABET = set(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-."
)
TOKEN_ALPHABET = SOURCE_ALPHABET - {"."}

HERE = os.path.dirname(os.path.abspath(__file__))


def u64(text):
    value = int(text)
    assert 0 <= value < 1 << 64, text
    return value


def f64(text):
    value = float(text)
    assert not math.isnan(value), text
    return value


def concrete_channel(name):
    """Checks a channel is valid and has no wildcards (Channel::validate_concrete)."""
    assert 0 < len(name.encode()) <= MAX_CHANNEL_LEN, name
    tokens = name.split(".")
    assert len(tokens) <= 16, name
    for token in tokens:
        assert token and set(token) <= TOKEN_ALPHABET, name
    return name


def encode(case):
    """The envelope of the wave described by `case`, as bytes."""
    amplitude = f64(case["amplitude"])
    source_amplitude = f64(case["source_amplitude"])
    phase = f64(case["phase"])
    assert 0.0 <= amplitude <= 1.0 and 0.0 <= source_amplitude <= 1.0
    assert 0.0 <= phase < 2 * math.pi
    hops = case["hops"]
    assert 0 <= hops <= 0xFFFF

    source = (case["source"] or "").encode("ascii")
    assert len(source) <= MAX_SOURCE_LEN and set(source.decode()) <= SOURCE_ALPHABET

    flags = 0
    if case.get("diffracting", False):
        flags |= FLAG_DIFFRACT
    if case.get("reflect_on_failure", False):
        flags |= FLAG_REFLECT
    sections = b""
    decay = case["decay"]
    if decay is not None:
        decay_per_s = f64(decay["decay_per_s"])
        amplified_at_ns = u64(decay["amplified_at_ns"])
        assert math.isfinite(decay_per_s) and decay_per_s >= 0.0
        # Written only when it says something: both zero is no decay.
        if decay_per_s != 0.0 or math.copysign(1.0, decay_per_s) < 0 or amplified_at_ns != 0:
            flags |= FLAG_DECAY
            sections += struct.pack("<dQ", decay_per_s, amplified_at_ns)
    if case["correlation_key"] is not None:
        key = case["correlation_key"].encode("utf-8")
        assert 1 <= len(key) <= MAX_KEY_LEN
        flags |= FLAG_CORRELATION_KEY
        sections += struct.pack("<H", len(key)) + key
    if case["reply_to"] is not None:
        reply_to = concrete_channel(case["reply_to"]).encode("ascii")
        flags |= FLAG_REPLY_TO
        sections += struct.pack("<H", len(reply_to)) + reply_to
    reflection = case.get("reflection")
    if reflection is not None:
        code = REASONS[reflection["reason"]]
        message = reflection.get("message", "").encode("utf-8")
        assert code >= 3 or not message, "only Refused and HandlerError carry a message"
        assert len(message) <= MAX_REFLECTION_MESSAGE_LEN
        channel = concrete_channel(reflection["channel"]).encode("ascii")
        flags |= FLAG_REFLECTED
        sections += (
            struct.pack("<BH", code, len(message))
            + message
            + struct.pack("<H", len(channel))
            + channel
        )

    trace = case.get("trace")
    if trace is not None:
        # A W3C traceparent of version 00: the section is its three fields.
        version, trace_id, span_id, trace_flags = trace.split("-")
        assert version == "00" and len(trace_id) == 32 and len(span_id) == 16
        assert int(trace_id, 16) != 0 and int(span_id, 16) != 0
        flags |= FLAG_TRACE
        sections += bytes.fromhex(trace_id) + bytes.fromhex(span_id) + bytes.fromhex(trace_flags)
    signed = case.get("signed")
    if signed is not None:
        flags |= FLAG_SIGNED

    if "payload_hex" in case:
        payload = bytes.fromhex(case["payload_hex"])
    else:
        payload = case["payload_utf8"].encode("utf-8")

    wave_id = int(case["id"], 16)
    assert len(case["id"]) == 32 and 0 <= wave_id < 1 << 128
    header = (
        struct.pack("<BBH", MAGIC, VERSION, flags)
        + wave_id.to_bytes(16, "big")
        + struct.pack(
            "<QQdddHB",
            u64(case["emitted_at_ns"]),
            u64(case["origin"]),
            amplitude,
            source_amplitude,
            phase,
            hops,
            len(source),
        )
    )
    assert len(header) == HEADER_LEN
    body = header + source + sections + payload
    if signed is not None:
        # HMAC-SHA256 of the subject's length (u16 LE), the subject, and the
        # body so far, appended.
        subject = signed["subject"].encode("ascii")
        message = struct.pack("<H", len(subject)) + subject + body
        body += hmac.new(bytes.fromhex(signed["key_hex"]), message, hashlib.sha256).digest()
    return body


def mutate(base, case):
    """A bad vector: `base` patched, cut, then extended as `case` says."""
    body = bytearray(base)
    for patch in case.get("patch", []):
        data = bytes.fromhex(patch["hex"])
        at = patch["at"]
        assert at + len(data) <= len(body), case["name"]
        body[at : at + len(data)] = data
    if "truncate_to" in case:
        assert case["truncate_to"] <= len(body), case["name"]
        del body[case["truncate_to"] :]
    if "append_hex" in case:
        body += bytes.fromhex(case["append_hex"])
    return bytes(body)


def first_error(body, max_body_bytes=1048576):
    """The kind of the first error a v1 decoder reports for `body`, or None.

    The order of ARCHITECTURE.md ("Checks, in order"): size, magic, version,
    flags, header, then every length and section front to back (a length is
    compared with its limit before the bytes it announces are looked for),
    then the values.
    """
    n = len(body)
    if n > max_body_bytes:
        return "Oversized"
    if n < 1:
        return "Truncated"
    if body[0] != MAGIC:
        return "BadMagic"
    if n < 2:
        return "Truncated"
    if body[1] != VERSION:
        return "UnsupportedVersion"
    if n < 4:
        return "Truncated"
    (flags,) = struct.unpack_from("<H", body, 2)
    if flags & ~KNOWN_FLAGS:
        return "UnknownFlags"
    if n < HEADER_LEN:
        return "Truncated"
    amplitude, source_amplitude, phase = struct.unpack_from("<ddd", body, 36)
    source_len = body[62]
    if source_len > MAX_SOURCE_LEN:
        return "InvalidField"
    at = HEADER_LEN

    class Cut(Exception):
        pass

    def take(count):
        nonlocal at
        if at + count > n:
            raise Cut
        at += count
        return body[at - count : at]

    def length():
        return struct.unpack("<H", take(2))[0]

    sections = {}
    try:
        sections["source"] = take(source_len)
        if flags & FLAG_DECAY:
            sections["decay"] = struct.unpack("<dQ", take(16))[0]
        if flags & FLAG_CORRELATION_KEY:
            key_len = length()
            if not 1 <= key_len <= MAX_KEY_LEN:
                return "InvalidField"
            sections["key"] = take(key_len)
        if flags & FLAG_REPLY_TO:
            reply_len = length()
            if reply_len > MAX_CHANNEL_LEN:
                return "InvalidField"
            sections["reply"] = take(reply_len)
        if flags & FLAG_REFLECTED:
            code = take(1)[0]
            message_len = length()
            if message_len > MAX_REFLECTION_MESSAGE_LEN:
                return "InvalidField"
            message = take(message_len)
            channel_len = length()
            if channel_len > MAX_CHANNEL_LEN:
                return "InvalidField"
            sections["reflection"] = (code, message, take(channel_len))
        if flags & FLAG_TRACE:
            sections["trace"] = take(25)
    except Cut:
        return "Truncated"
    if flags & FLAG_SIGNED and n - at < 32:
        return "Truncated"

    def utf8(raw):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def channel_ok(raw):
        text = utf8(raw)
        try:
            return text is not None and concrete_channel(text) == text
        except AssertionError:
            return False

    # The values, in order; each failure is InvalidField.
    checks = [
        lambda: 0.0 <= amplitude <= 1.0,
        lambda: 0.0 <= source_amplitude <= 1.0,
        lambda: 0.0 <= phase < 2 * math.pi,
        lambda: set(sections["source"].decode("latin-1")) <= SOURCE_ALPHABET,
        lambda: "decay" not in sections
        or (math.isfinite(sections["decay"]) and sections["decay"] >= 0.0),
        lambda: "key" not in sections or utf8(sections["key"]) is not None,
        lambda: "reply" not in sections or channel_ok(sections["reply"]),
        lambda: "reflection" not in sections
        or (
            utf8(sections["reflection"][1]) is not None
            and (sections["reflection"][0] in (3, 4)
                 or (sections["reflection"][0] <= 2 and not sections["reflection"][1]))
            and channel_ok(sections["reflection"][2])
        ),
        lambda: "trace" not in sections
        or (any(sections["trace"][:16]) and any(sections["trace"][16:24])),
    ]
    for check in checks:
        if not check():
            return "InvalidField"
    return None


def order_problems():
    """Good vectors that `first_error` refuses, bad ones it reads otherwise."""
    with open(os.path.join(HERE, "vectors.json"), encoding="utf-8") as f:
        doc = json.load(f)
    vectors = all_vectors()
    problems = []
    for case in doc["vectors"]:
        error = first_error(vectors[case["name"]])
        if error is not None:
            problems.append(f"{case['name']}: first_error says {error}, a good vector")
    for case in doc["bad"]:
        error = first_error(vectors[case["name"]], case.get("max_body_bytes", 1048576))
        if error != case["error"]:
            problems.append(f"{case['name']}: first_error says {error}, vectors.json {case['error']}")
    return problems


def all_vectors():
    with open(os.path.join(HERE, "vectors.json"), encoding="utf-8") as f:
        doc = json.load(f)
    out = {}
    for case in doc["vectors"]:
        assert case["name"] not in out, case["name"]
        out[case["name"]] = encode(case)
    for case in doc["bad"]:
        assert case["name"] not in out, case["name"]
        out[case["name"]] = mutate(out[case["base"]], case)
    return out


def main(argv):
    check = "--check" in argv[1:]
    vectors = all_vectors()
    problems = []
    for name, body in vectors.items():
        path = os.path.join(HERE, name + ".bin")
        if check:
            try:
                with open(path, "rb") as f:
                    on_disk = f.read()
            except FileNotFoundError:
                problems.append(f"{name}.bin is missing")
                continue
            if on_disk != body:
                problems.append(
                    f"{name}.bin differs: file {on_disk.hex()}, encoder {body.hex()}"
                )
        else:
            with open(path, "wb") as f:
                f.write(body)
    stray = sorted(
        f for f in os.listdir(HERE) if f.endswith(".bin") and f[:-4] not in vectors
    )
    problems += [f"{f} is not described in vectors.json" for f in stray]
    problems += order_problems()
    for problem in problems:
        print(problem, file=sys.stderr)
    if not check:
        print(f"wrote {len(vectors)} vectors to {HERE}")
    elif not problems:
        print(f"{len(vectors)} vectors match")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
