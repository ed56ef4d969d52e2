"""Scripts on devices whose clocks are off (libfaketime's `faketime`), beside
a keeper whose clock is right: each follows the bus's time, writes, and reads
every other's writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import NatsServer, program, run

FAKETIME = shutil.which("faketime")

# Three devices: two hours behind, two hours ahead, a day behind (past the
# tombstone horizon of a day, where its own clock's writes would be refused
# as too old).
DEVICES = [("-2h", "behind", 1), ("+2h", "ahead", 2), ("-1d", "day", 3)]


def start_keeper(nats: NatsServer, directory: Path) -> subprocess.Popen:  # type: ignore[type-arg]
    """`aether keep` on this machine's clock (a time source), once it keeps."""
    keeper = subprocess.Popen(
        [program("aether"), "--nats", nats.url, "keep", "--dir", str(directory), "--name", "keeper"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert keeper.stderr is not None
    for _ in range(50):
        line = keeper.stderr.readline()
        if not line or "keeping maps" in line:
            break
    assert "keeping maps" in line, line
    return keeper


def on_device(offset: str, url: str, name: str, body: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    script = (
        "import aether, json\n"
        f"bus = aether.connect({url!r}, name={name!r})\n"
        f"clk = bus.map('clk', node={name!r}, acked=5.0)\n"
        f"{body}\n"
        "bus.close()\n"
    )
    assert FAKETIME is not None
    return run([FAKETIME, "-f", offset, sys.executable, "-c", script])


@pytest.mark.skipif(FAKETIME is None, reason="faketime is not installed (apt-get install faketime)")
def test_scripts_hours_apart_read_each_others_writes(nats: NatsServer, tmp_path: Path) -> None:
    keeper = start_keeper(nats, tmp_path)
    try:
        # Each writes its value, held by the keeper (acked), and says the
        # offset it follows.
        for offset, name, value in DEVICES:
            body = f"clk[{name!r}] = {value}\nprint(json.dumps(bus.clock()))"
            done = on_device(offset, nats.url, name, body)
            assert done.returncode == 0, f"{name}: {done.stderr}"
            clock = json.loads(done.stdout)
            assert clock["sources"] >= 1, clock
            # The keeper's clock is this machine's: the device's offset from
            # it is the opposite of its skew, within a second.
            skew = {"-2h": -7200.0, "+2h": 7200.0, "-1d": -86400.0}[offset]
            assert abs(clock["offset_ms"] / 1000.0 + skew) < 1.0, clock
            # The core's warning reaches the script through `logging`
            # (its last resort prints it on stderr).
            side = "behind" if skew < 0 else "ahead of"
            assert f"this machine's clock is {abs(skew):.3f} s {side} the bus's" in done.stderr, done.stderr
        # Each reads every one's write.
        want = {name: value for _, name, value in DEVICES}
        for offset, name, _ in DEVICES:
            got = on_device(offset, nats.url, name, "print(json.dumps(dict(clk.items())))")
            assert got.returncode == 0, f"{name}: {got.stderr}"
            assert json.loads(got.stdout) == want, f"{name} read {got.stdout}"
        # A later write, by the bus's clock, wins: the device two hours
        # ahead wrote first, the one a day behind after it.
        on_device("+2h", nats.url, "ahead", "clk['last'] = 'ahead'")
        on_device("-1d", nats.url, "day", "clk['last'] = 'day'")
        got = on_device("+0", nats.url, "reader", "print(json.dumps(clk['last']))")
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout) == "day"
    finally:
        keeper.terminate()
        keeper.wait(10)


# A script whose machine's clock is stepped an hour forward while it runs
# (NTP arriving late): it writes every 50 ms, each write held by the keeper
# (`acked`), before, across and after the step.
JUMPER = """
import aether, json, select, sys
bus = aether.connect(sys.argv[1], name="jumper")
clk = bus.map("clk", node="jumper", acked=5.0)
print(json.dumps(bus.clock()), flush=True)
for n in range(int(sys.argv[2])):
    clk["jumper"] = n
    if n == 20:
        print("stepping", flush=True)
        sys.stdin.readline()
    # (libfaketime's monotonic clock left alone fails time.sleep)
    select.select([], [], [], 0.05)
print(json.dumps(bus.clock()), flush=True)
bus.close()
"""


@pytest.mark.skipif(FAKETIME is None, reason="faketime is not installed (apt-get install faketime)")
def test_a_script_whose_clock_is_stepped_while_it_runs_keeps_the_bus_order(
    nats: NatsServer, tmp_path: Path
) -> None:
    keeper = start_keeper(nats, tmp_path / "keep")
    jumper = None
    try:
        rc = tmp_path / "faketime.rc"
        rc.write_text("+0\n")
        env = dict(
            os.environ,
            LD_PRELOAD="/usr/$LIB/faketime/libfaketime.so.1",
            FAKETIME_TIMESTAMP_FILE=str(rc),
            FAKETIME_NO_CACHE="1",
            # A step moves the wall clock alone, as NTP's does.
            FAKETIME_DONT_FAKE_MONOTONIC="1",
        )
        env.pop("FAKETIME", None)
        jumper = subprocess.Popen(
            [sys.executable, "-c", JUMPER, nats.url, "60"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert jumper.stdout is not None and jumper.stdin is not None
        before = json.loads(jumper.stdout.readline())
        assert before["sources"] >= 1 and abs(before["offset_ms"]) < 1000, before
        if jumper.stdout.readline().strip() != "stepping":
            jumper.kill()
            pytest.fail(f"the script ended before the step: {jumper.communicate()[1]}")
        rc.write_text("+1h\n")
        jumper.stdin.write("\n")
        jumper.stdin.flush()
        out, err = jumper.communicate(timeout=60)
        # Every write held, across the step: none stamped an hour ahead
        # (the keeper refuses those as from the future).
        assert jumper.returncode == 0, err
        after = json.loads(out.strip().splitlines()[-1])
        # It follows the bus: its clock is an hour ahead of it now.
        assert abs(after["offset_ms"] / 1000.0 + 3600.0) < 1.0, after
        # A write made later by the bus's clock, on a good clock, wins over
        # the stepped script's last.
        done = run(
            [sys.executable, "-c", "import aether\n"
             f"bus = aether.connect({nats.url!r}, name='later')\n"
             "clk = bus.map('clk', node='later', acked=5.0)\n"
             "clk['jumper'] = 'later'\n"
             "bus.close()\n"]
        )
        assert done.returncode == 0, done.stderr
        got = run(
            [sys.executable, "-c", "import aether, json\n"
             f"bus = aether.connect({nats.url!r}, name='reader')\n"
             "print(json.dumps(bus.map('clk', node='reader')['jumper']))\n"
             "bus.close()\n"]
        )
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout) == "later"
    finally:
        if jumper is not None and jumper.poll() is None:
            jumper.kill()
        keeper.terminate()
        keeper.wait(10)
