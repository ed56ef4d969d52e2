"""Fixtures: a nats-server of the test's own on a free loopback port, and
the workspace's programs (built by cargo before pytest runs)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator, List

import pytest

import aether

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    def __init__(self, jetstream: bool = False, max_payload: "int | None" = None) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="aether-py-nats-")
        self.jetstream = jetstream
        self.max_payload = max_payload
        self.process: "subprocess.Popen[bytes] | None" = None
        self.start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = os.environ.get("NATS_SERVER_BIN") or shutil.which("nats-server") or "/usr/sbin/nats-server"
        args = [binary, "-a", "127.0.0.1", "-p", str(self.port)]
        if self.jetstream:
            args += ["-js", "-sd", self.dir]
        if self.max_payload is not None:
            config = Path(self.dir) / "server.conf"
            config.write_text(f"max_payload: {self.max_payload}\n")
            args += ["-c", str(config)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"nats-server did not start on {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def nats() -> Iterator[NatsServer]:
    server = NatsServer()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def nats_js() -> Iterator[NatsServer]:
    server = NatsServer(jetstream=True)
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


def program(name: str) -> str:
    """A workspace program, from AETHER_BIN_DIR (set by .ci/test) or the
    build cache."""
    for base in [os.environ.get("AETHER_BIN_DIR"), os.environ.get("CARGO_TARGET_DIR"), str(REPO / "target")]:
        if not base:
            continue
        # A relative folder is the repository's (where cargo and pytest run),
        # whatever the working directory of the test that asks.
        for candidate in [REPO / base / name, REPO / base / "debug" / name]:
            if candidate.is_file():
                return str(candidate)
    raise AssertionError(
        f"{name} is not built: cargo build the workspace first, or name its folder in AETHER_BIN_DIR"
    )


def eventually(check, timeout: float = 10.0, every: float = 0.02):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {check}")
        time.sleep(every)


@pytest.fixture
def bus() -> Iterator[aether.Bus]:
    b = aether.connect()
    yield b
    b.close()


def run(args: List[str], **kwargs):  # type: ignore[no-untyped-def]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, **kwargs)


class Proxy:
    """A TCP proxy on loopback whose links can be cut (and new ones
    refused) and healed: a partition between a client and its server."""

    def __init__(self, upstream_port: int) -> None:
        import threading

        self.upstream = upstream_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.port = int(self.listener.getsockname()[1])
        self.open = True
        self.links: List[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self.upstream))
            with self.lock:
                self.links += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.close()
            except OSError:
                pass

    def cut(self) -> None:
        self.open = False
        with self.lock:
            for s in self.links:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.links.clear()

    def heal(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()
