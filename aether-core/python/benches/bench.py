"""The Python package beside its peers, in one run (BENCHMARKS.md, "From
Python"): ratios, medians over alternating rounds.

    python aether-core/python/benches/bench.py            # starts its own nats-server
    AETHER_BENCH_REDIS=127.0.0.1:6379 python ...          # adds redis-py pub/sub

1. emit: waves of 128-byte payloads from Python, `Vibrator.emit` beside
   nats-py's `publish` (+ flush), same nats-server, alternating rounds.
2. change latency: a map write in one process seen by `on_change` in
   another (p50, p99), beside a nats-py KV put seen by a KV watch, and a
   redis-py publish seen by a subscriber; one write at a time, then
   (Aether and Redis) at a steady 1,000 writes a second, the writer
   sleeping until each write's time.
3. map writes per second from Python, in memory and with the ledger.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Callable, Dict, List, Tuple

import aether

PAYLOAD = {"pad": "x" * 116}  # 128 bytes of JSON
ROUNDS = int(os.environ.get("AETHER_BENCH_ROUNDS", "7"))
COUNT = int(os.environ.get("AETHER_BENCH_COUNT", "200000"))
LATENCY_SAMPLES = int(os.environ.get("AETHER_BENCH_SAMPLES", "300"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_nats(jetstream: bool) -> Tuple["subprocess.Popen[bytes]", str, str]:
    port = free_port()
    store = tempfile.mkdtemp(prefix="aether-bench-")
    binary = os.environ.get("NATS_SERVER_BIN") or shutil.which("nats-server") or "/usr/sbin/nats-server"
    args = [binary, "-a", "127.0.0.1", "-p", str(port)]
    if jetstream:
        args += ["-js", "-sd", store]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.02)
    return server, f"nats://127.0.0.1:{port}", store


def emit_rate_aether(url: str) -> float:
    bus = aether.connect(url)
    v = bus.vibrator("bench")
    started = time.perf_counter()
    for _ in range(COUNT):
        v.emit("bench.emit", PAYLOAD)
    bus.drain(30)
    return COUNT / (time.perf_counter() - started)


def emit_rate_nats_py(url: str) -> float:
    import nats  # type: ignore[import-not-found]

    body = json.dumps(PAYLOAD).encode()

    async def run() -> float:
        nc = await nats.connect(url)
        started = time.perf_counter()
        for _ in range(COUNT):
            await nc.publish("bench.emit", body)
        await nc.flush()
        took = time.perf_counter() - started
        await nc.close()
        return COUNT / took

    return asyncio.run(run())


def percentile(samples: List[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


WATCHER = r"""
import aether, sys, time
bus = aether.connect(sys.argv[1])
m = bus.map("bench", node="watcher")
@m.on_change()
def seen(change):
    print(f"{change.key} {time.time_ns()}", flush=True)
print("ready", flush=True)
time.sleep(3600)
"""


RATE = 1000.0


def paced(n: int, started: float, rate: "float | None") -> None:
    """Sleeps until write `n`'s time at `rate` writes a second (none
    without a rate)."""
    if rate is not None:
        wait = started + n / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)


def arrivals(stdout: "IO[str]", count: int) -> "Callable[[], List[Tuple[str, int]]]":
    """Reads `count` lines `<key> <ns>` from a reader process as they come
    (in a thread: a full pipe would hold the reader back); the returned
    call waits for them."""
    lines: List[Tuple[str, int]] = []

    def read() -> None:
        while len(lines) < count:
            key, at = stdout.readline().split()
            lines.append((key, int(at)))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()

    def wait() -> List[Tuple[str, int]]:
        thread.join(timeout=30)
        return lines

    return wait


def latency_aether(url: str, rate: "float | None" = None) -> List[float]:
    watcher = subprocess.Popen([sys.executable, "-c", WATCHER, url], stdout=subprocess.PIPE, text=True)
    assert watcher.stdout is not None
    assert watcher.stdout.readline().strip() == "ready"
    bus = aether.connect(url)
    m = bus.map("bench", node="writer")
    time.sleep(1.0)
    samples = []
    started = time.perf_counter()
    if rate is None:
        for n in range(LATENCY_SAMPLES):
            sent = time.time_ns()
            m[f"k{n}"] = n
            key, at = watcher.stdout.readline().split()
            assert key == f"k{n}"
            samples.append((int(at) - sent) / 1e6)
    else:
        seen = arrivals(watcher.stdout, LATENCY_SAMPLES)
        times: Dict[str, int] = {}
        for n in range(LATENCY_SAMPLES):
            paced(n, started, rate)
            times[f"k{n}"] = time.time_ns()
            m[f"k{n}"] = n
        samples = [(at - times[key]) / 1e6 for key, at in seen()]
    watcher.kill()
    m.close()
    bus.close()
    return samples


def latency_nats_kv(url: str) -> List[float]:
    import nats  # type: ignore[import-not-found]

    async def run() -> List[float]:
        nc = await nats.connect(url)
        js = nc.jetstream()
        kv = await js.create_key_value(bucket="bench")
        watch = await kv.watchall()
        # The initial marker.
        await watch.updates(timeout=5)
        samples = []
        for n in range(LATENCY_SAMPLES):
            sent = time.time_ns()
            await kv.put(f"k{n}", str(n).encode())
            while True:
                entry = await watch.updates(timeout=5)
                if entry is not None and entry.key == f"k{n}":
                    break
            samples.append((time.time_ns() - sent) / 1e6)
        await nc.close()
        return samples

    return asyncio.run(run())


def latency_redis(addr: str, rate: "float | None" = None) -> List[float]:
    import redis  # type: ignore[import-not-found]

    host, port = addr.split(":")
    r = redis.Redis(host=host, port=int(port))
    sub = r.pubsub()
    sub.subscribe("aether-bench")
    sub.get_message(timeout=1)
    if rate is not None:
        sub.close()
        return latency_redis_paced(r, rate)
    samples = []
    for n in range(LATENCY_SAMPLES):
        sent = time.time_ns()
        r.publish("aether-bench", str(n))
        while True:
            message = sub.get_message(timeout=5)
            if message is not None and message["type"] == "message":
                break
        samples.append((time.time_ns() - sent) / 1e6)
    sub.close()
    return samples


SUBSCRIBER = r"""
import redis, sys, time
host, port = sys.argv[1].split(":")
sub = redis.Redis(host=host, port=int(port)).pubsub()
sub.subscribe("aether-bench-paced")
sub.get_message(timeout=1)
print("ready", flush=True)
for message in sub.listen():
    if message["type"] == "message":
        print(f"{message['data'].decode()} {time.time_ns()}", flush=True)
"""


def latency_redis_paced(r: "object", rate: float) -> List[float]:
    """A redis-py publish at `rate` a second seen by a subscriber in
    another process, as `latency_aether` measures a map's."""
    kwargs = r.connection_pool.connection_kwargs  # type: ignore[attr-defined]
    addr = f"{kwargs['host']}:{kwargs['port']}"
    reader = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, addr], stdout=subprocess.PIPE, text=True)
    assert reader.stdout is not None
    assert reader.stdout.readline().strip() == "ready"
    seen = arrivals(reader.stdout, LATENCY_SAMPLES)
    sent: Dict[str, int] = {}
    started = time.perf_counter()
    for n in range(LATENCY_SAMPLES):
        paced(n, started, rate)
        sent[str(n)] = time.time_ns()
        r.publish("aether-bench-paced", str(n))  # type: ignore[attr-defined]
    samples = [(at - sent[key]) / 1e6 for key, at in seen()]
    reader.kill()
    return samples


def map_writes(dir: "str | None") -> float:
    bus = aether.connect()
    m = bus.map("writes", dir=dir)
    n = 20000
    started = time.perf_counter()
    for i in range(n):
        m[f"k{i % 1000}"] = i
    took = time.perf_counter() - started
    m.close()
    bus.close()
    return n / took


def alternate(a: Callable[[], float], b: Callable[[], float]) -> Tuple[List[float], List[float]]:
    xs, ys = [], []
    for _ in range(ROUNDS):
        xs.append(a())
        ys.append(b())
    return xs, ys


def main() -> None:
    server, url, store = start_nats(jetstream=True)
    try:
        ours, theirs = alternate(lambda: emit_rate_aether(url), lambda: emit_rate_nats_py(url))
        ratios = [a / b for a, b in zip(ours, theirs)]
        print(f"emit, {COUNT} waves of 128 bytes, {ROUNDS} alternating rounds")
        print(f"  aether Vibrator.emit   {statistics.median(ours):>10,.0f} waves/s")
        print(f"  nats-py publish        {statistics.median(theirs):>10,.0f} msgs/s")
        print(f"  ratio                  {statistics.median(ratios):.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f})")
        print(f"change seen in another process, {LATENCY_SAMPLES} writes one at a time, ms")
        rows = [("aether map on_change", latency_aether(url)), ("nats-py KV watch", latency_nats_kv(url))]
        redis_addr = os.environ.get("AETHER_BENCH_REDIS")
        if redis_addr:
            rows.append(("redis-py pub/sub", latency_redis(redis_addr)))
        rows.append(("aether at 1,000/s", latency_aether(url, RATE)))
        if redis_addr:
            rows.append(("redis-py at 1,000/s", latency_redis(redis_addr, RATE)))
        for name, samples in rows:
            print(f"  {name:<22} p50 {percentile(samples, 0.5):6.3f}  p99 {percentile(samples, 0.99):6.3f}")
        memory = statistics.median(map_writes(None) for _ in range(3))
        ledger_dir = tempfile.mkdtemp(prefix="aether-bench-ledger-")
        ledger = statistics.median(map_writes(os.path.join(ledger_dir, str(i))) for i in range(3))
        shutil.rmtree(ledger_dir, ignore_errors=True)
        print("map writes from Python, one at a time")
        print(f"  in memory              {memory:>10,.0f} writes/s")
        print(f"  with the ledger        {ledger:>10,.0f} writes/s")
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    main()
