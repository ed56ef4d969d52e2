"""Waves from Python, in one process: emit, resonate, receive, request and
reply, groups, statistics; blocking and asyncio."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import aether


def test_a_wave_goes_from_one_vibrator_to_another(bus: aether.Bus) -> None:
    shop = bus.vibrator("py-shop")
    stock = bus.vibrator("py-stock").resonate("orders.*")
    wave_id = shop.emit("orders.created", {"order_id": 1, "items": ["a", "b"]}, amplitude=0.8, phase=math.pi, key="o-1")
    wave = stock.receive(timeout=5)
    assert wave is not None
    assert wave.channel == "orders.created"
    assert wave.payload == {"order_id": 1, "items": ["a", "b"]}
    assert wave.source == "py-shop"
    assert wave.key == "o-1"
    assert wave.id == wave_id
    assert abs(wave.amplitude - 0.8) < 1e-9
    assert abs(wave.phase - math.pi) < 1e-9
    # Bytes go as they are; what is not JSON comes back as bytes.
    shop.emit("orders.raw", b"\x00\xffraw")
    raw = stock.receive(timeout=5)
    assert raw is not None and raw.payload == b"\x00\xffraw" and raw.data == b"\x00\xffraw"
    # Nothing more: a bounded receive gives None.
    assert stock.receive(timeout=0.05) is None
    assert stock.stats()["delivered"] == 2
    assert shop.stats()["emitted"] == 2


def test_iteration_and_groups(bus: aether.Bus) -> None:
    shop = bus.vibrator("shop")
    members = [bus.vibrator(f"worker-{i}").resonate("jobs.>", group="workers") for i in range(2)]
    for n in range(10):
        shop.emit("jobs.run.now", n)
    taken = []
    for member in members:
        while True:
            wave = member.receive(timeout=0.2)
            if wave is None:
                break
            taken.append(wave.payload)
    # Each job to one member of the group.
    assert sorted(taken) == list(range(10))
    # `for wave in vibrator` ends when the bus closes.
    listener = bus.vibrator("listener").resonate("news")
    shop.emit("news", "first")
    seen = []
    closer = threading.Timer(0.3, bus.close)
    closer.start()
    for wave in listener:
        seen.append(wave.payload)
    assert seen == ["first"]


def test_request_and_reply_across_threads(bus: aether.Bus) -> None:
    server = bus.vibrator("quote").resonate("billing.quote")

    def answer() -> None:
        wave = server.receive(timeout=5)
        assert wave is not None and wave.is_request
        server.reply(wave, {"total": wave.payload["qty"] * 3})

    thread = threading.Thread(target=answer)
    thread.start()
    client = bus.vibrator("client")
    reply = client.request("billing.quote", {"qty": 4}, timeout=5)
    thread.join()
    assert reply.payload == {"total": 12}
    with pytest.raises(aether.NoResponders):
        client.request("nobody.here", {}, timeout=1)


def test_bad_input_is_refused_and_nothing_is_sent(bus: aether.Bus) -> None:
    shop = bus.vibrator("shop")
    ear = bus.vibrator("ear").resonate(">")
    with pytest.raises(aether.InvalidChannel):
        shop.emit("orders.*", 1)
    with pytest.raises(aether.InvalidChannel):
        shop.emit("", 1)
    with pytest.raises(aether.InvalidValue):
        shop.emit("orders.x", {1, 2})
    with pytest.raises(aether.InvalidValue):
        shop.emit("orders.x", {"t": float("nan")})
    with pytest.raises(aether.InvalidValue):
        shop.emit("orders.x", object())
    with pytest.raises(aether.InvalidValue):
        shop.emit("orders.x", 1, amplitude=2.0)
    with pytest.raises(aether.InvalidValue):
        ear.receive(timeout=-1)
    with pytest.raises(aether.InvalidName):
        bus.vibrator("bad name!")
    with pytest.raises(aether.InvalidChannel):
        ear.resonate("a..b")
    assert ear.receive(timeout=0.1) is None
    assert isinstance(aether.InvalidChannel("x"), aether.Error)
    # The bus goes on.
    shop.emit("orders.ok", 1)
    wave = ear.receive(timeout=5)
    assert wave is not None and wave.payload == 1


def test_asyncio_receive_emit_and_request() -> None:
    async def main() -> None:
        bus = await aether.connect_async()
        shop = bus.vibrator("shop")
        ear = bus.vibrator("ear").resonate("orders.*")
        await shop.emit_async("orders.created", {"n": 1})
        wave = await asyncio.wait_for(ear.receive_async(), 5)
        assert wave is not None and wave.payload == {"n": 1}
        # A cancelled receive loses no wave.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ear.receive_async(), 0.05)
        await shop.emit_async("orders.created", {"n": 2})
        await asyncio.sleep(0.1)
        wave = await asyncio.wait_for(ear.receive_async(), 5)
        assert wave is not None and wave.payload == {"n": 2}
        # async for, ended by closing the bus.
        await shop.emit_async("orders.created", {"n": 3})
        asyncio.get_running_loop().call_later(0.2, bus.close)
        seen = [w.payload async for w in ear]
        assert seen == [{"n": 3}]
        # A blocking call in the loop is refused, not stalled.
        with pytest.raises(aether.BlockingInEventLoop):
            shop.emit("orders.created", 1)
        with pytest.raises(aether.BlockingInEventLoop):
            aether.connect()

    asyncio.run(main())


def test_ctrl_c_interrupts_a_blocking_receive() -> None:
    script = (
        "import aether, sys\n"
        "v = aether.connect().vibrator('w').resonate('x')\n"
        "print('ready', flush=True)\n"
        "try:\n"
        "    v.receive()\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
        "    sys.exit(3)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    started = time.monotonic()
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=5) == 3
    assert child.stdout.read().strip() == "interrupted"
    assert time.monotonic() - started < 2


def test_values_arrive_as_json_would_carry_them(bus: aether.Bus) -> None:
    import json
    import random

    shop = bus.vibrator("shop")
    ear = bus.vibrator("ear").resonate("values")
    fixed = [
        None, True, False, 0, -1, 2**63 - 1, 2**64 - 1, -(2**63), 1.5, -0.0, 1e300, 5e-324,
        "", "é\u2028\"\\\n\t\x00", "🜁", [], {}, [1, [2, [3]]], (1, "a"), {"k": {"n": [None, 1.25]}},
    ]
    rng = random.Random(7)

    def value(depth: int = 0) -> object:
        kind = rng.randrange(7 if depth < 4 else 4)
        if kind == 0:
            return rng.randrange(-(2**40), 2**40)
        if kind == 1:
            return rng.uniform(-1e6, 1e6)
        if kind == 2:
            return "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(8)))
        if kind == 3:
            return rng.choice([None, True, False])
        if kind == 4:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        if kind == 5:
            return tuple(value(depth + 1) for _ in range(rng.randrange(4)))
        return {f"k{i}": value(depth + 1) for i in range(rng.randrange(4))}

    for sent in fixed + [value() for _ in range(300)]:
        shop.emit("values", sent)
        wave = ear.receive(timeout=5)
        assert wave is not None
        assert wave.payload == json.loads(json.dumps(sent)), sent
    # Past 64 bits, and keys that are not strings: as the general path says.
    with pytest.raises(aether.InvalidValue):
        shop.emit("values", {"deep": [[[[[]]]]] * 1, "x": [[]] * 2, "big": 2**70})
    deep: object = 1
    for _ in range(200):
        deep = [deep]
    with pytest.raises(aether.InvalidValue):
        shop.emit("values", deep)


def test_buffers_go_as_their_bytes_and_weak_waves_are_counted(bus: aether.Bus) -> None:
    shop = bus.vibrator("shop")
    ear = bus.vibrator("ear").resonate("buf.>")
    shop.emit("buf.view", memoryview(b"abc"))
    shop.emit("buf.array", bytearray(b"def"))
    got = [ear.receive(timeout=5) for _ in range(2)]
    assert [w.payload for w in got if w is not None] == [b"abc", b"def"]
    # A wave emitted at amplitude 0 expires at once: emitted, dropped by
    # its reason, not published, at the vibrator and the bus alike.
    shop.emit("buf.weak", 1, amplitude=0.0)
    mine = shop.stats()
    assert mine["emitted"] == 3 and mine["published"] == 2, mine
    assert mine["dropped"].get("expired") == 1, mine
    assert bus.stats()["dropped"].get("expired") == 1
    assert ear.receive(timeout=0.2) is None


def test_a_forked_child_is_told_to_connect_itself(bus: aether.Bus) -> None:
    import os

    shop = bus.vibrator("shop")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: every call refuses, none hangs
        try:
            shop.emit("fork.x", 1)
            os.write(write, b"emitted")
        except aether.Error as error:
            os.write(write, str(error).encode())
        os._exit(0)
    os.close(write)
    said = os.read(read, 1000).decode()
    os.waitpid(pid, 0)
    assert "forked" in said and "connect in the child" in said, said
    shop.emit("fork.parent", 1)  # the parent goes on
