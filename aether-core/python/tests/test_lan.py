"""A bus on the LAN from Python: scripts find this machine's `aether node`
with no URL, share a map over TLS, and with a settings folder seal and sign
with keys derived from the bus's secret; a script with another secret is
turned away. The node listens on loopback only and announces nothing (the
namespace test in aether-core/cli/tests/lan.rs covers finding nodes on a
LAN)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List

import pytest

import aether
from conftest import REPO, eventually, program

SEALED_AND_SIGNED = """
[aether.security]
require_signatures = true

[[aether.security.encryption]]
channels = ["home.secret.>"]
"""


class Node:
    def __init__(self, tmp: Path, bus: str) -> None:
        self.secret = tmp / "secret"
        subprocess.run([program("aether"), "node", "--new-secret", str(self.secret)], check=True, capture_output=True)
        self.tmp = tmp
        self.bus = bus
        self.start()

    def start(self) -> None:
        tmp, bus = self.tmp, self.bus
        env = dict(os.environ)
        if os.environ.get("NATS_SERVER_BIN"):
            env["AETHER_NATS_SERVER"] = os.environ["NATS_SERVER_BIN"]
        self.process = subprocess.Popen(
            [
                program("aether"),
                "--bus",
                bus,
                "--secret-file",
                str(self.secret),
                "node",
                "--listen",
                "127.0.0.1",
                "--no-scout",
                "--data",
                str(tmp / "data"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.said: List[str] = []
        assert self.process.stderr is not None
        stderr = self.process.stderr

        def read() -> None:
            for line in stderr:
                self.said.append(line)

        threading.Thread(target=read, daemon=True).start()
        eventually(lambda: any("programs connect to" in line for line in self.said) or self.process.poll() is not None, 20)
        assert self.process.poll() is None, "".join(self.said)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    monkeypatch.setenv("AETHER_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("AETHER_SECRET_FILE", raising=False)
    n = Node(tmp_path, f"py{os.getpid()}")
    monkeypatch.setenv("AETHER_BUS", f"py{os.getpid()}")
    yield n
    n.stop()


def test_scripts_find_the_node_and_share_a_map(node: Node) -> None:
    with aether.discover() as one, aether.discover() as two:
        home = one.map("home")
        seen = two.map("home")
        home["living.temp"] = 24.5
        eventually(lambda: seen.get("living.temp") == 24.5)
        assert one.state == "connected"


def test_a_value_a_script_wrote_outlives_it_and_a_restart_of_the_node(node: Node) -> None:
    write = (
        "import aether\n"
        "with aether.discover() as bus:\n"
        "    home = bus.map('home', node='script')\n"
        "    home['hall.light'] = 'on'\n"
        "    print(home.flush(timeout=5.0, keepers=1)['keepers'])\n"
    )
    done = subprocess.run([sys.executable, "-c", write], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1", "the node's keeper held it"
    node.stop()
    node.start()
    # The node's keeper opens what it kept once the server listens.
    eventually(lambda: any("keeping maps" in line for line in node.said), 20)
    with aether.discover() as bus:
        assert bus.map("home")["hall.light"] == "on"


def test_sealed_and_signed_with_keys_from_the_secret(node: Node, tmp_path: Path) -> None:
    folder = tmp_path / "settings"
    folder.mkdir()
    (folder / "default.toml").write_text(SEALED_AND_SIGNED)
    keyed = aether.discover(config_dir=str(folder))
    other = aether.discover(config_dir=str(folder))
    bare = aether.discover()
    hears = other.vibrator("hears").resonate("home.>")
    snoop = bare.vibrator("snoop").resonate("home.secret.>")
    time.sleep(0.3)
    # A script holding the secret but not the settings: its waves are not
    # signed, so they are refused as forged where signatures are asked
    # for; it cannot read the sealed channel.
    bare.vibrator("pi").emit("home.note", {"from": "bare"})
    time.sleep(0.3)
    keyed.vibrator("pi").emit("home.secret.code", {"door": 1234})
    keyed.vibrator("pi").emit("home.note", {"from": "keyed"})
    got = [hears.receive(timeout=5), hears.receive(timeout=5)]
    assert [(w.channel, w.payload) for w in got if w is not None] == [
        ("home.secret.code", {"door": 1234}),
        ("home.note", {"from": "keyed"}),
    ]
    assert hears.receive(timeout=0.3) is None
    eventually(lambda: other.stats()["dropped"]["forged"] >= 1)
    assert snoop.receive(timeout=0.5) is None
    eventually(lambda: bare.stats()["dropped"]["undecryptable"] == 1)
    for bus in (keyed, other, bare):
        bus.close()


def test_a_program_joins_with_lan_and_answers_a_script(node: Node, tmp_path: Path) -> None:
    (tmp_path / "default.toml").write_text("")
    beta = subprocess.Popen(
        [program("aether-service-beta"), "--lan", "--config-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert beta.stdout is not None
        line = beta.stdout.readline()
        assert "connected, resonating" in line, line + (beta.stderr.read() if beta.poll() is not None and beta.stderr else "")
        with aether.discover() as bus:
            shop = bus.vibrator("py-shop").resonate("inventory.*")
            for n in range(4):
                shop.emit("orders.created", {"order_id": f"lan-{n}", "item": "gadget", "qty": 1}, key=f"lan-{n}")
            answers = {}
            while len(answers) < 4:
                wave = shop.receive(timeout=10)
                assert wave is not None, answers
                answers[wave.key] = wave.channel
            assert sorted(answers.values()) == ["inventory.insufficient"] + ["inventory.reserved"] * 3
    finally:
        beta.send_signal(signal.SIGTERM)
        beta.wait(timeout=20)


def test_a_program_with_lan_and_no_node_says_what_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AETHER_RUNTIME_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("AETHER_BUS", "nobody-here")
    monkeypatch.delenv("AETHER_SECRET_FILE", raising=False)
    (tmp_path / "default.toml").write_text("")
    out = subprocess.run(
        [program("aether-service-beta"), "--lan", "--config-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert out.returncode == 1
    assert "aether node --bus nobody-here" in out.stderr, out.stderr


def test_another_secret_is_turned_away(node: Node, tmp_path: Path) -> None:
    other = tmp_path / "other-secret"
    subprocess.run([program("aether"), "node", "--new-secret", str(other)], check=True, capture_output=True)
    started = time.monotonic()
    with pytest.raises(aether.ConnectionError) as refused:
        aether.discover(secret_file=str(other))
    assert "not signed by a trusted authority" in str(refused.value)
    assert time.monotonic() - started < 10


def test_the_lan_guides_example_runs(node: Node, tmp_path: Path) -> None:
    from test_docs import blocks
    from conftest import REPO

    code = "\n".join(blocks(REPO / "docs/guide/lan.md"))
    assert "aether.discover()" in code
    done = subprocess.run(
        [sys.executable, "-c", code + "\nimport time; time.sleep(0.3)\n"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, f"{code}\n{done.stderr}"


def test_no_node_says_what_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AETHER_RUNTIME_DIR", str(tmp_path / "empty"))
    monkeypatch.delenv("AETHER_SECRET_FILE", raising=False)
    started = time.monotonic()
    with pytest.raises(aether.ConnectionError) as none:
        aether.discover("nobody-here", wait=0.5)
    assert "aether node --bus nobody-here" in str(none.value)
    assert 'waited 500ms for this machine\'s node of bus "nobody-here" to appear' in str(none.value)
    assert 0.5 <= time.monotonic() - started < 5


def test_a_script_started_before_its_node_waits_for_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # At boot a script and its node start together: discover waits for the
    # node's record, not only for an answer from the LAN.
    monkeypatch.setenv("AETHER_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("AETHER_SECRET_FILE", raising=False)
    bus = f"py{os.getpid()}boot"
    monkeypatch.setenv("AETHER_BUS", bus)
    script = (
        "import aether\n"
        "with aether.discover(wait=30) as bus:\n"
        "    home = bus.map('home', node='early')\n"
        "    home['booted'] = True\n"
        "    print(bus.state, home.flush(timeout=10.0, keepers=1)['keepers'])\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    node = None
    try:
        time.sleep(1.0)
        assert child.poll() is None, child.communicate()[1]
        node = Node(tmp_path, bus)
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        assert out.split() == ["connected", "1"]
    finally:
        child.kill()
        if node is not None:
            node.stop()


def test_peers_leave_the_nodes_keepers_out(node: Node) -> None:
    # The node keeps every map: its keeper is a replica of the sensors'
    # map too, told apart from the sensors.
    with aether.discover() as bus:
        monitor = bus.node_state("sensors", "monitor")
        kitchen = bus.node_state("sensors", "sensor_kitchen")
        kitchen.update("temperature", 21.5)
        eventually(lambda: len(monitor.keepers()) == 1 and monitor.peers() == ["sensor_kitchen"], 20)
        keeper = monitor.keepers()[0]
        assert sorted(monitor.peers(keepers=True)) == sorted(["sensor_kitchen", keeper])
        assert monitor.map.keepers() == [keeper]
        assert monitor.map.peers() == ["sensor_kitchen"]
        assert monitor.read(keeper, "temperature") is None
        # A map opened after the keeper knows it is one too.
        later = bus.map("sensors", node="later")
        eventually(lambda: later.keepers() == [keeper] and "monitor" in later.peers(), 20)
        assert keeper not in later.peers()


def test_the_temperature_example_lists_sensors_not_keepers(node: Node) -> None:
    example = REPO / "aether-core/python/examples/temperature.py"
    # (The node just started says it is settling: the example's maps wait
    # for it up to 4 s before they open.)
    done = subprocess.run(
        [sys.executable, str(example), "--lan", "--seconds", "8", "--every", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("monitor: 3 nodes: sensor_bedroom:"), done.stdout
