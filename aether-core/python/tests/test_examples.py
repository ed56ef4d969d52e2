"""The examples run, embedded in one process and across processes over
NATS, and they and the package pass mypy --strict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import NatsServer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(*args: str, timeout: float = 60) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_home_runs_embedded() -> None:
    out = run_example("home.py", "--seconds", "4")
    assert "sensor: living.temp =" in out
    assert "pc: away = True" in out
    # The lights heard the sensor through the map.
    assert "lights: living room" in out, out


def test_temperature_runs_embedded() -> None:
    out = run_example("temperature.py", "--seconds", "3", "--every", "0.5")
    assert "monitor: 3 nodes: sensor_bedroom:" in out, out


def test_temperature_across_processes(nats: NatsServer) -> None:
    sensors = [
        subprocess.Popen(
            [sys.executable, str(EXAMPLES / "temperature.py"), "--nats", nats.url, "sensor", name, "--seconds", "8", "--every", "0.5"],
            stdout=subprocess.DEVNULL,
        )
        for name in ("kitchen", "bedroom")
    ]
    out = run_example("temperature.py", "--nats", nats.url, "monitor", "--seconds", "5", "--every", "1")
    for sensor in sensors:
        assert sensor.wait(timeout=30) == 0
    assert "monitor: 2 nodes: sensor_bedroom:" in out and "sensor_kitchen:" in out, out


def test_examples_type_check() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", str(EXAMPLES), str(EXAMPLES.parent / "python" / "aether")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
