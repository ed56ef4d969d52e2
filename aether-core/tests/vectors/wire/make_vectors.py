#!/usr/bin/env python3
"""Writes the wave envelope test vectors (NAME.bin) from vectors.json.

An encoder of the Aether wave envelope, versions 1 and 2, and of batch
frames, written from the tables in docs/guide/wire.md ("Wire format",
"Version 2: the compact envelope", "Batch frames") and independent of the
Rust code: it shows that a client in another language can produce
envelopes. Python 3, standard library only.

    python3 make_vectors.py           # (re)writes every NAME.bin
    python3 make_vectors.py --check   # compares them with the files; exit 1 if any differs

Either way, `first_error` (a decoder's checks, written from the numbered
"Checks, in order" list of version 1 and the check order of version 2) must
find no error in a good vector and, in a bad one, the error kind
vectors.json expects; `first_frame_error` (the checks of
`wire::frame_envelopes`) does the same for the frames.

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
VERSION_2 = 2
# The second byte of a batch frame, where an envelope has its version.
FRAME = 0xFB
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
# Version 2 only: which of the compact header's optional fields are there.
FLAG_AMPLITUDE = 1 << 10
FLAG_SOURCE_AMPLITUDE = 1 << 11
FLAG_PHASE = 1 << 12
FLAG_ID_NODE = 1 << 13
FLAG_EMITTED_AT = 1 << 14
KNOWN_FLAGS_V2 = (
    KNOWN_FLAGS
    | FLAG_AMPLITUDE
    | FLAG_SOURCE_AMPLITUDE
    | FLAG_PHASE
    | FLAG_ID_NODE
    | FLAG_EMITTED_AT
)
# Varints are unsigned LEB128 of at most 3 bytes.
MAX_VARINT_LEN = 3
NS_PER_MS = 1_000_000
MAX_HOPS = 0xFFFF
MAX_FRAME_COUNT = 0xFFFF
MAX_SOURCE_LEN = 64
MAX_KEY_LEN = 256
MAX_CHANNEL_LEN = 256
MAX_REFLECTION_MESSAGE_LEN = 1024
DEFAULT_MAX_BODY_BYTES = 1048576
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


def bits(value):
    """The f64's bits, to compare floats bit for bit (so -0.0 != +0.0)."""
    return struct.pack("<d", value)


def varint(value):
    """`value` as the shortest unsigned LEB128, at most 3 bytes."""
    assert 0 <= value < 1 << (7 * MAX_VARINT_LEN), value
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def concrete_channel(name):
    """Checks a channel is valid and has no wildcards (Channel::validate_concrete)."""
    assert 0 < len(name.encode()) <= MAX_CHANNEL_LEN, name
    tokens = name.split(".")
    assert len(tokens) <= 16, name
    for token in tokens:
        assert token and set(token) <= TOKEN_ALPHABET, name
    return name


def encode(case):
    """The envelope of the wave described by `case`, as bytes.

    `case["version"]` (1 when left out) says which layout: version 1's
    63-byte header, or version 2's compact one.
    """
    version = case.get("version", VERSION)
    assert version in (VERSION, VERSION_2), case["name"]
    amplitude = f64(case["amplitude"])
    source_amplitude = f64(case["source_amplitude"])
    phase = f64(case["phase"])
    assert 0.0 <= amplitude <= 1.0 and 0.0 <= source_amplitude <= 1.0
    assert 0.0 <= phase < 2 * math.pi
    hops = case["hops"]
    assert 0 <= hops <= MAX_HOPS

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
        trace_version, trace_id, span_id, trace_flags = trace.split("-")
        assert trace_version == "00" and len(trace_id) == 32 and len(span_id) == 16
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
    emitted_at_ns = u64(case["emitted_at_ns"])
    origin = u64(case["origin"])
    if version == VERSION:
        header = (
            struct.pack("<BBH", MAGIC, VERSION, flags)
            + wave_id.to_bytes(16, "big")
            + struct.pack(
                "<QQdddHB",
                emitted_at_ns,
                origin,
                amplitude,
                source_amplitude,
                phase,
                hops,
                len(source),
            )
        )
        assert len(header) == HEADER_LEN
    else:
        header = compact_header(
            flags, wave_id, emitted_at_ns, origin, amplitude, source_amplitude, phase, hops
        ) + bytes([len(source)])
    body = header + source + sections + payload
    if signed is not None:
        # HMAC-SHA256 of the subject's length (u16 LE), the subject, and the
        # body so far, appended.
        subject = signed["subject"].encode("ascii")
        message = struct.pack("<H", len(subject)) + subject + body
        body += hmac.new(bytes.fromhex(signed["key_hex"]), message, hashlib.sha256).digest()
    return body


def compact_header(flags, wave_id, emitted_at_ns, origin, amplitude, source_amplitude, phase, hops):
    """Version 2's fields from the magic byte to the hops (the source name
    length and all after are version 1's)."""
    id_bytes = wave_id.to_bytes(16, "big")
    id_time = int.from_bytes(id_bytes[0:6], "big")
    id_sequence = int.from_bytes(id_bytes[10:16], "big")
    id_node = id_bytes[6:10]
    # Each is set when the field differs from what it is without the flag.
    if bits(amplitude) != bits(1.0):
        flags |= FLAG_AMPLITUDE
    if bits(source_amplitude) != bits(amplitude):
        flags |= FLAG_SOURCE_AMPLITUDE
    if bits(phase) != bits(0.0):
        flags |= FLAG_PHASE
    if id_node != (origin >> 32).to_bytes(4, "big"):
        flags |= FLAG_ID_NODE
    if emitted_at_ns // NS_PER_MS != id_time:
        flags |= FLAG_EMITTED_AT
    header = (
        bytes([MAGIC, VERSION_2])
        + varint(flags)
        + id_time.to_bytes(6, "little")
        + id_sequence.to_bytes(6, "little")
        + struct.pack("<Q", origin)
    )
    if flags & FLAG_EMITTED_AT:
        header += struct.pack("<Q", emitted_at_ns)
    else:
        past_ms = emitted_at_ns - id_time * NS_PER_MS
        assert 0 <= past_ms < NS_PER_MS
        header += varint(past_ms)
    header += varint(hops)
    if flags & FLAG_AMPLITUDE:
        header += struct.pack("<d", amplitude)
    if flags & FLAG_SOURCE_AMPLITUDE:
        header += struct.pack("<d", source_amplitude)
    if flags & FLAG_PHASE:
        header += struct.pack("<d", phase)
    if flags & FLAG_ID_NODE:
        header += id_node
    return header


def encode_frame(envelopes):
    """A batch frame of `envelopes` (bytes each), in order."""
    assert 1 <= len(envelopes) <= MAX_FRAME_COUNT
    body = bytes([MAGIC, FRAME]) + varint(len(envelopes))
    for envelope in envelopes:
        assert len(envelope) >= 1
        body += varint(len(envelope)) + envelope
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


class Cut(Exception):
    """The body ends inside a field: `Truncated`."""


class Refused(Exception):
    """A field is refused as soon as it is read; `kind` says how."""

    def __init__(self, kind):
        super().__init__(kind)
        self.kind = kind


class Reader:
    """Reads `body` front to back; a read past its end raises Cut."""

    def __init__(self, body, at=0):
        self.body = body
        self.at = at

    def left(self):
        return len(self.body) - self.at

    def take(self, count):
        if count > self.left():
            raise Cut
        self.at += count
        return self.body[self.at - count : self.at]

    def u16(self):
        return struct.unpack("<H", self.take(2))[0]

    def u64(self):
        return struct.unpack("<Q", self.take(8))[0]

    def f64(self):
        return struct.unpack("<d", self.take(8))[0]

    def varint(self, too_long):
        """An unsigned LEB128 of at most 3 bytes (a longer-than-needed one
        within 3 is accepted): Cut if the body ends inside it, Refused with
        `too_long` if its third byte says more follow."""
        value = 0
        for i in range(MAX_VARINT_LEN):
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                return value
        raise Refused(too_long)


def v1_header(body):
    """Version 1, steps 4 and 5: the flags, then the 63-byte header."""
    n = len(body)
    if n < 4:
        return "Truncated"
    (flags,) = struct.unpack_from("<H", body, 2)
    if flags & ~KNOWN_FLAGS:
        return "UnknownFlags"
    if n < HEADER_LEN:
        return "Truncated"
    amplitude, source_amplitude, phase = struct.unpack_from("<ddd", body, 36)
    return flags, amplitude, source_amplitude, phase, HEADER_LEN - 1


def v2_header(body):
    """Version 2: the flags (cut, then longer than 3 bytes, then unknown
    bits), then each field of the compact header in order, each Truncated if
    the body ends inside it and the emitted_at and hops varints refused as
    soon as they are read."""
    read = Reader(body, 2)
    try:
        flags = read.varint("InvalidField")
        if flags & ~KNOWN_FLAGS_V2:
            return "UnknownFlags"
        id_time = int.from_bytes(read.take(6), "little")
        read.take(6)  # id sequence
        read.u64()  # origin
        if flags & FLAG_EMITTED_AT:
            read.u64()
        else:
            past_ms = read.varint("InvalidField")
            if past_ms >= NS_PER_MS or id_time * NS_PER_MS + past_ms >= 1 << 64:
                return "InvalidField"
        hops = read.varint("InvalidField")
        if hops > MAX_HOPS:
            return "InvalidField"
        amplitude = read.f64() if flags & FLAG_AMPLITUDE else 1.0
        source_amplitude = read.f64() if flags & FLAG_SOURCE_AMPLITUDE else amplitude
        phase = read.f64() if flags & FLAG_PHASE else 0.0
        if flags & FLAG_ID_NODE:
            read.take(4)
        if read.left() < 1:  # the source name length
            return "Truncated"
    except Cut:
        return "Truncated"
    except Refused as refused:
        return refused.kind
    return flags, amplitude, source_amplitude, phase, read.at


def first_error(body, max_body_bytes=DEFAULT_MAX_BODY_BYTES):
    """The kind of the first error a decoder reports for `body`, or None.

    The order of docs/guide/wire.md ("Checks, in order"): size, magic, version,
    then the version's header (v1: flags, then the 63-byte header; v2: the
    flags, then each field of the compact header), then every length and
    section front to back (a length is compared with its limit before the
    bytes it announces are looked for), then the values.
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
    if body[1] == VERSION:
        header = v1_header(body)
    elif body[1] == VERSION_2:
        header = v2_header(body)
    else:
        # Another version, or a batch frame (0xFB): not an envelope decode reads.
        return "UnsupportedVersion"
    if isinstance(header, str):
        return header
    flags, amplitude, source_amplitude, phase, at = header

    # Steps 6 to 9 of version 1, from the source name length byte on.
    read = Reader(body, at)
    source_len = read.take(1)[0]
    if source_len > MAX_SOURCE_LEN:
        return "InvalidField"

    sections = {}
    try:
        sections["source"] = read.take(source_len)
        if flags & FLAG_DECAY:
            sections["decay"] = struct.unpack("<dQ", read.take(16))[0]
        if flags & FLAG_CORRELATION_KEY:
            key_len = read.u16()
            if not 1 <= key_len <= MAX_KEY_LEN:
                return "InvalidField"
            sections["key"] = read.take(key_len)
        if flags & FLAG_REPLY_TO:
            reply_len = read.u16()
            if reply_len > MAX_CHANNEL_LEN:
                return "InvalidField"
            sections["reply"] = read.take(reply_len)
        if flags & FLAG_REFLECTED:
            code = read.take(1)[0]
            message_len = read.u16()
            if message_len > MAX_REFLECTION_MESSAGE_LEN:
                return "InvalidField"
            message = read.take(message_len)
            channel_len = read.u16()
            if channel_len > MAX_CHANNEL_LEN:
                return "InvalidField"
            sections["reflection"] = (code, message, read.take(channel_len))
        if flags & FLAG_TRACE:
            sections["trace"] = read.take(25)
    except Cut:
        return "Truncated"
    if flags & FLAG_SIGNED and read.left() < 32:
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


def read_frame(body, max_body_bytes=DEFAULT_MAX_BODY_BYTES):
    """(error kind or None, the envelopes): a batch frame checked whole, as
    `wire::frame_envelopes` does, before any envelope is given."""
    if len(body) > max_body_bytes:
        return "Oversized", []
    if len(body) < 2 or body[0] != MAGIC or body[1] != FRAME:
        return "BadFrame", []
    read = Reader(body, 2)
    envelopes = []
    try:
        count = read.varint("BadFrame")
        # Each envelope takes at least 2 bytes: its length and one byte.
        if not 1 <= count <= MAX_FRAME_COUNT or count > read.left() // 2:
            return "BadFrame", []
        for _ in range(count):
            length = read.varint("BadFrame")
            if length == 0:
                return "BadFrame", []
            envelopes.append(read.take(length))
    except (Cut, Refused):
        return "BadFrame", []
    if read.left():
        return "BadFrame", []
    return None, envelopes


def first_frame_error(body, max_body_bytes=DEFAULT_MAX_BODY_BYTES):
    """The kind of the error `wire::frame_envelopes` reports for `body`, or None."""
    return read_frame(body, max_body_bytes)[0]


def load():
    with open(os.path.join(HERE, "vectors.json"), encoding="utf-8") as f:
        return json.load(f)


def order_problems(doc, vectors):
    """Good vectors that `first_error` refuses, bad ones it reads otherwise;
    the same of frames with `first_frame_error`."""
    problems = []
    for case in doc["vectors"]:
        error = first_error(vectors[case["name"]])
        if error is not None:
            problems.append(f"{case['name']}: first_error says {error}, a good vector")
    for case in doc["bad"]:
        error = first_error(vectors[case["name"]], case.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES))
        if error != case["error"]:
            problems.append(f"{case['name']}: first_error says {error}, vectors.json {case['error']}")
    for case in doc.get("frames", []):
        name = case["name"]
        error, envelopes = read_frame(vectors[name])
        if error is not None:
            problems.append(f"{name}: first_frame_error says {error}, a good frame")
        elif envelopes != [vectors[e] for e in envelopes_of(case)]:
            problems.append(f"{name}: its envelopes are not those it names")
        # decode refuses a frame: its second byte is no envelope version.
        error = first_error(vectors[name])
        if error != "UnsupportedVersion":
            problems.append(f"{name}: first_error says {error} of a frame, not UnsupportedVersion")
    for case in doc.get("bad_frames", []):
        assert case["error"] in ("BadFrame", "Oversized"), case["name"]
        error = first_frame_error(
            vectors[case["name"]], case.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)
        )
        if error != case["error"]:
            problems.append(f"{case['name']}: first_frame_error says {error}, vectors.json {case['error']}")
    return problems


def envelopes_of(frame):
    """The vector names of a frame's envelopes, in order: `envelopes`,
    `repeat` times (1 if left out)."""
    return frame["envelopes"] * frame.get("repeat", 1)


def all_vectors(doc):
    """Every NAME.bin: the good and bad vectors, then the good and bad frames."""
    out = {}
    for case in doc["vectors"]:
        assert case["name"] not in out, case["name"]
        out[case["name"]] = encode(case)
    good = set(out)
    for case in doc["bad"]:
        assert case["name"] not in out, case["name"]
        assert case["base"] in good, case["name"]
        out[case["name"]] = mutate(out[case["base"]], case)
    frames = set()
    for case in doc.get("frames", []):
        assert case["name"] not in out, case["name"]
        names = envelopes_of(case)
        assert all(name in good for name in names), case["name"]
        out[case["name"]] = encode_frame([out[name] for name in names])
        frames.add(case["name"])
    for case in doc.get("bad_frames", []):
        assert case["name"] not in out, case["name"]
        assert case["base"] in frames, case["name"]
        out[case["name"]] = mutate(out[case["base"]], case)
    return out


def main(argv):
    check = "--check" in argv[1:]
    doc = load()
    vectors = all_vectors(doc)
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
    problems += order_problems(doc, vectors)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not check:
        print(f"wrote {len(vectors)} vectors to {HERE}")
    elif not problems:
        print(f"{len(vectors)} vectors match")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
