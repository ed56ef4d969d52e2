"""Python beside the Rust programs over a real nats-server of the test's
own: one map between a Python replica and the `aether` command line, orders
answered by `aether-service-beta`, a writer killed with SIGKILL, and a bus
restart under a live subscription."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

import aether
from conftest import NatsServer, eventually, program, run


def test_a_python_replica_and_a_rust_replica_converge(nats: NatsServer) -> None:
    bus = aether.connect(nats.url, name="py-home")
    assert bus.medium == "nats"
    home = bus.map("home", node="py")
    heard: List[aether.Change] = []
    home.on_change()(heard.append)
    home["living.temp"] = 24.5
    cli = program("aether")
    got = run([cli, "--nats", nats.url, "state", "get", "home", "living.temp"])
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == 24.5
    done = run([cli, "--nats", nats.url, "state", "set", "home", "lights", '{"on": true}'])
    assert done.returncode == 0, done.stderr
    eventually(lambda: home.get("lights") == {"on": True})
    eventually(lambda: any(c.key == "lights" and c.writer != "py" for c in heard))
    # Concurrent writes to one key from both sides end the same everywhere.
    for n in range(20):
        home["race"] = f"py-{n}"
    run([cli, "--nats", nats.url, "state", "set", "home", "race", '"cli"'])
    listed = eventually(
        lambda: (
            lambda out: out.returncode == 0 and json.loads(out.stdout).get("race") == home.get("race") and out
        )(run([cli, "--nats", nats.url, "state", "list", "home", "--json"]))
    )
    assert listed
    bus.close()


def test_python_places_orders_that_beta_answers(nats: NatsServer, tmp_path: Path) -> None:
    (tmp_path / "default.toml").write_text("")
    beta = subprocess.Popen(
        [program("aether-service-beta"), "--nats", nats.url, "--config-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert beta.stdout is not None
        assert "resonating" in beta.stdout.readline()
        bus = aether.connect(nats.url)
        shop = bus.vibrator("py-shop").resonate("inventory.*")
        for n in range(5):
            shop.emit("orders.created", {"order_id": f"py-{n}", "item": "gadget", "qty": 1}, key=f"py-{n}")
        answers = {}
        while len(answers) < 5:
            wave = shop.receive(timeout=10)
            assert wave is not None, answers
            answers[wave.key] = wave.channel
        # Beta holds 3 gadgets: three reserved, then insufficient.
        assert sorted(answers.values()) == ["inventory.insufficient"] * 2 + ["inventory.reserved"] * 3
        bus.close()
    finally:
        beta.send_signal(signal.SIGTERM)
        beta.wait(timeout=20)


def test_a_writer_killed_with_sigkill_keeps_what_it_wrote(tmp_path: Path) -> None:
    script = (
        "import aether, sys\n"
        f"home = aether.connect().map('home', node='pi', dir={str(tmp_path)!r})\n"
        "n = 0\n"
        "while True:\n"
        "    home[f'k{n}'] = n\n"
        "    print(n, flush=True)\n"
        "    n += 1\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    last = -1
    while last < 200:
        last = int(writer.stdout.readline())
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    bus = aether.connect()
    home = bus.map("home", node="pi", dir=str(tmp_path))
    # Every write it said was done is there.
    missing = [n for n in range(last + 1) if home.get(f"k{n}") != n]
    assert missing == []
    bus.close()


def test_a_subscription_lives_through_a_server_restart(nats: NatsServer) -> None:
    bus = aether.connect(nats.url)
    ear = bus.vibrator("ear").resonate("news")
    mouth = bus.vibrator("mouth")
    mouth.emit("news", 1)
    first = ear.receive(timeout=5)
    assert first is not None and first.payload == 1
    nats.stop()
    eventually(lambda: bus.state == "disconnected")
    nats.start()
    eventually(lambda: bus.state == "connected", timeout=15)
    # Resubscribed: a wave emitted once both are back arrives.
    def delivered() -> bool:
        mouth.emit("news", 2)
        wave = ear.receive(timeout=0.5)
        return wave is not None and wave.payload == 2

    eventually(delivered, timeout=15)
    bus.close()


def test_writes_the_bus_will_not_take_raise_not_sent_and_arrive_later(nats: NatsServer, tmp_path: Path) -> None:
    # A small outbox: with the server down, the map's changes stop leaving.
    (tmp_path / "default.toml").write_text("[aether.nats]\noutbox_capacity = 16\n")
    bus = aether.connect(nats.url, config_dir=str(tmp_path))
    other = aether.connect(nats.url)
    home = bus.map("down", node="writer")
    seen = other.map("down", node="reader")
    home["first"] = 1
    eventually(lambda: seen.get("first") == 1)
    nats.stop()
    eventually(lambda: bus.state == "disconnected")
    refused = 0
    for n in range(300):
        try:
            home[f"k{n}"] = n
        except aether.NotSent:
            refused += 1
        time.sleep(0.001)
    assert refused > 0
    assert home.stats()["unsent"] > 0
    assert len(home) == 301, "every write is kept here"
    nats.start()
    eventually(lambda: len(seen) == 301, timeout=30)
    assert dict(seen.items()) == dict(home.items())
    bus.close()
    other.close()


def test_a_partitioned_python_replica_converges_with_a_rust_one(nats: NatsServer) -> None:
    from conftest import Proxy

    proxy = Proxy(nats.port)
    cli = program("aether")
    # A Rust replica that stays: the command line watching the map.
    watcher = subprocess.Popen(
        [cli, "--nats", nats.url, "state", "watch", "home"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        bus = aether.connect(proxy.url, name="py-part")
        home = bus.map("home", node="py")
        home["before"] = 1
        eventually(lambda: json.loads(run([cli, "--nats", nats.url, "state", "get", "home", "before"]).stdout or "null") == 1)
        proxy.cut()
        eventually(lambda: bus.state == "disconnected")
        # Both sides write while apart, one key on both.
        for n in range(50):
            home[f"py.{n}"] = n
        home["both"] = "python"
        assert run([cli, "--nats", nats.url, "state", "set", "home", "rust.1", "1"]).returncode == 0
        assert run([cli, "--nats", nats.url, "state", "set", "home", "both", '"rust"']).returncode == 0
        proxy.heal()
        eventually(lambda: bus.state == "connected", timeout=15)

        def converged() -> bool:
            listed = run([cli, "--nats", nats.url, "state", "list", "home", "--json"])
            if listed.returncode != 0:
                return False
            theirs = json.loads(listed.stdout)
            return bool(theirs == dict(home.items()) and len(theirs) == 53)

        eventually(converged, timeout=20, every=0.5)
        assert home["rust.1"] == 1 and home["both"] in ("python", "rust")
        bus.close()
    finally:
        watcher.kill()
        watcher.wait()
        proxy.close()


def test_presence_says_who_joins_and_leaves(nats: NatsServer) -> None:
    here = aether.connect(nats.url, name="here")
    home = here.map("home", node="here")
    events = home.presence()
    there = aether.connect(nats.url, name="there")
    there_home = there.map("home", node="there")  # held: a map dropped leaves
    joined = events.next(timeout=10)
    assert joined is not None and tuple(joined) == ("joined", "there")
    assert eventually(lambda: "there" in home.peers())
    there.close()
    del there_home
    left = events.next(timeout=10)
    assert left is not None and tuple(left) == ("left", "there")
    assert "there" not in home.peers()
    here.close()


def test_a_wave_over_the_largest_message_is_too_large(nats: NatsServer) -> None:
    bus = aether.connect(nats.url)
    ear = bus.vibrator("ear").resonate("big.>")
    mouth = bus.vibrator("mouth")
    with pytest.raises(aether.TooLarge, match="max_wave_bytes"):
        mouth.emit("big.one", b"x" * 2_000_000)
    # Nothing was sent, and the bus goes on.
    mouth.emit("big.two", b"y" * 100_000)
    wave = ear.receive(timeout=5)
    assert wave is not None and wave.channel == "big.two" and len(wave.payload) == 100_000
    bus.close()


RECEIVER = r"""
import aether, json, sys
bus = aether.connect(sys.argv[1])
ear = bus.vibrator("ear", queue_capacity=100_000).resonate("tail.>")
print("ready", flush=True)
got = []
while True:
    wave = ear.receive(timeout=3)
    if wave is None:
        break
    got.append(wave.payload)
print(json.dumps(got), flush=True)
"""

EMITTER = r"""
import asyncio, aether, sys
async def main():
    bus = await aether.connect_async(sys.argv[1])
    mouth = bus.vibrator("mouth")
    # Gathered together: they leave in the order of the calls.
    await asyncio.gather(*(mouth.emit_async("tail.n", n) for n in range(500)))
    for n in range(500, 1000):
        await mouth.emit_async("tail.n", n)
    # No drain, no close: the bus is dropped and the interpreter exits.
asyncio.run(main())
"""


def test_what_a_script_emitted_last_leaves_before_it_exits(nats: NatsServer) -> None:
    receiver = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, nats.url], stdout=subprocess.PIPE, text=True
    )
    assert receiver.stdout is not None
    assert receiver.stdout.readline().strip() == "ready"
    emitter = subprocess.run([sys.executable, "-c", EMITTER, nats.url], timeout=60)
    assert emitter.returncode == 0
    got = json.loads(receiver.stdout.readline())
    receiver.wait(timeout=30)
    assert got == list(range(1000))


def test_the_servers_own_max_payload_bounds_a_wave() -> None:
    server = NatsServer(max_payload=8192)
    try:
        bus = aether.connect(server.url)
        ear = bus.vibrator("ear", queue_capacity=200_000).resonate("small.>")
        mouth = bus.vibrator("mouth")
        with pytest.raises(aether.TooLarge, match="max_payload"):
            mouth.emit("small.big", b"x" * 9000)
        # A fast stream of small waves: frames stay under the server's limit.
        for n in range(20_000):
            mouth.emit("small.n", n)
        got = [ear.receive(timeout=5) for _ in range(20_000)]
        assert [w.payload for w in got if w is not None] == list(range(20_000))
        stats = bus.stats()
        assert stats["dropped"] == {} or sum(stats["dropped"].values()) == 0, stats
        # The refused wave was emitted, not published.
        mine = mouth.stats()
        assert mine["published"] == 20_000, mine
        bus.close()
    finally:
        server.stop()


def test_a_script_that_exits_without_closing_leaves_at_once(nats: NatsServer) -> None:
    bus = aether.connect(nats.url)
    home = bus.map("home", node="watcher")
    script = (
        "import sys, time, aether\n"
        f"home = aether.connect({nats.url!r}).map('home', node='script')\n"
        "deadline = time.monotonic() + 20\n"
        "while 'watcher' not in home.peers() and time.monotonic() < deadline:\n"
        "    time.sleep(0.02)\n"
        "home['hall.light'] = 'on'\n"
        "while home.get('go') is None and time.monotonic() < deadline:\n"
        "    time.sleep(0.02)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    try:
        eventually(lambda: "script" in home.peers() and home.get("hall.light") == "on", 20)
        home["go"] = True
        assert child.wait(timeout=30) == 0, child.stderr.read() if child.stderr else ""
        exited = time.monotonic()
        eventually(lambda: "script" not in home.peers(), 5, 0.005)
        # The presence timeout is 3 s: the goodbye said at exit, not it.
        assert time.monotonic() - exited < 1.0
    finally:
        child.kill()
        bus.close()


def test_values_a_script_could_not_write_are_refused_counted_and_the_map_goes_on(nats: NatsServer) -> None:
    bus = aether.connect(nats.url)
    home = bus.map("home", node="reader")
    heard: List[aether.Change] = []
    home.on_change()(heard.append)
    cli = program("aether")
    deep = "[" * 200 + "]" * 200
    bad = {
        "nan": "NaN",
        "inf": "1e999",
        "surrogate": '"\\ud800"',
        "digits": "7" * 5000,
        "deep": deep,
        "bom": '\ufeff{"a": 1}',
    }
    # Beside them, what a script may read: JSON, and bytes that are not JSON.
    good = {"json": ('{"on": true}', {"on": True}), "raw": ("v4", b"v4")}
    for key, (text, _) in good.items():
        done = run([cli, "--nats", nats.url, "state", "set", "home", key, text, "--no-wait"])
        assert done.returncode == 0, done.stderr
    for n, (key, text) in enumerate(bad.items(), start=1):
        done = run([cli, "--nats", nats.url, "state", "set", "home", key, text, "--no-wait"])
        assert done.returncode == 0, done.stderr
        eventually(lambda: home.stats()["refused"]["malformed"] >= n)
        assert key not in home and home.get(key) is None
    for key, (_, value) in good.items():
        eventually(lambda: home.get(key) == value)
    # It goes on: a later write arrives, and every value it holds prints
    # and can be written back.
    done = run([cli, "--nats", nats.url, "state", "set", "home", "after", "1", "--no-wait"])
    assert done.returncode == 0, done.stderr
    eventually(lambda: home.get("after") == 1)
    for key, value in home.items():
        json.dumps(value if not isinstance(value, bytes) else value.decode())
        if not isinstance(value, bytes):
            home[key] = value
    assert {change.key for change in heard}.isdisjoint(bad)
    assert home.handler_errors == 0
    bus.close()
