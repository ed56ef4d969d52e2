"""Signatures and sealed channels from Python, with the programs' settings
files: a script with the keys of a settings folder is heard by the command
line with the same folder; one without them is refused (forged), and
cannot read a sealed payload."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import aether
from conftest import NatsServer, eventually, program

SETTINGS = """
[aether.security]
signing_keys = { py-shop = "a-signing-key-of-32-bytes-long!!" }
require_signatures = true

[[aether.security.encryption]]
channels = ["secret.>"]
key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
"""


def test_signed_and_sealed_waves_from_python(nats: NatsServer, tmp_path: Path) -> None:
    (tmp_path / "default.toml").write_text(SETTINGS)
    listener = subprocess.Popen(
        [program("aether"), "--nats", nats.url, "--config-dir", str(tmp_path), "listen", ">", "--json", "--count", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert listener.stderr is not None
    eventually(lambda: "listening" in listener.stderr.readline())
    keyed = aether.connect(nats.url, config_dir=str(tmp_path))
    bare = aether.connect(nats.url)
    # Without the key: a wave in py-shop's name is forged, and a sealed
    # payload cannot be read.
    snoop = bare.vibrator("snoop").resonate("secret.>")
    bare.vibrator("py-shop").emit("open.note", {"forged": True})
    time.sleep(0.3)
    shop = keyed.vibrator("py-shop")
    shop.emit("secret.plan", {"v": 1})
    shop.emit("open.note", {"signed": True})
    out, err = listener.communicate(timeout=20)
    waves = [json.loads(line) for line in out.splitlines()]
    assert [(w["channel"], w["payload"]) for w in waves] == [
        ("secret.plan", {"v": 1}),
        ("open.note", {"signed": True}),
    ], err
    assert snoop.receive(timeout=1) is None
    eventually(lambda: max(snoop.stats()["dropped"]["undecryptable"], bare.stats()["dropped"]["undecryptable"]) == 1)
    keyed.close()
    bare.close()
