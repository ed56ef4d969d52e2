"""Replicated maps from Python, in one process: the dict protocol, changes
and handlers, node-owned state, ledgers, and what is refused."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import List

import pytest

import aether
from conftest import eventually


def test_a_map_is_a_dict_that_replicas_share(bus: aether.Bus) -> None:
    home = bus.map("home", node="pi-01")
    pc = bus.map("home", node="pc")
    home["living.temp"] = 24.5
    home["lights"] = {"kitchen": True, "hall": [1, 2, None]}
    stamp = home.set("flag", "on")
    assert stamp and stamp != home.set("flag", "on"), "each write its own stamp"
    eventually(lambda: len(pc) == 3)
    assert pc["living.temp"] == 24.5
    assert pc["lights"] == {"kitchen": True, "hall": [1, 2, None]}
    assert "flag" in pc and "nothing" not in pc
    assert pc.get("nothing", 7) == 7
    assert sorted(pc) == ["flag", "lights", "living.temp"]
    assert sorted(pc.keys()) == sorted(k for k, _ in pc.items())
    assert dict(pc.items())["flag"] == "on"
    with pytest.raises(KeyError):
        pc["nothing"]
    del pc["flag"]
    eventually(lambda: "flag" not in home)
    with pytest.raises(KeyError):
        del pc["flag"]
    eventually(lambda: pc.peers() == ["pi-01"] and home.peers() == ["pc"])
    assert home.stats()["keys"] == 2


def test_handlers_hear_changes_and_may_write(bus: aether.Bus) -> None:
    home = bus.map("home", node="pi-01")
    pc = bus.map("home", node="pc")
    heard: List[aether.Change] = []

    @home.on_change("living.*")
    def lights(change: aether.Change) -> None:
        heard.append(change)
        # A handler that writes to the map does not deadlock.
        home["lights.living"] = change.new is not None and change.new > 25

    pc["living.temp"] = 26.0
    eventually(lambda: home.get("lights.living") is True)
    pc["kitchen.temp"] = 30.0  # not living.*: not heard
    pc["living.temp"] = 20.0
    eventually(lambda: home.get("lights.living") is False)
    del pc["living.temp"]
    eventually(lambda: len(heard) == 3)
    first, second, third = heard
    assert (first.key, first.old, first.new, first.writer) == ("living.temp", None, 26.0, "pc")
    assert (second.old, second.new) == (26.0, 20.0)
    assert third.deleted and third.new is None and third.old == 20.0
    assert first.stamp and first.stamp < second.stamp < third.stamp or first.stamp != second.stamp


def test_a_handler_that_raises_is_counted_and_goes_on(bus: aether.Bus) -> None:
    home = bus.map("home")
    seen: List[str] = []

    @home.on_change()
    def fragile(change: aether.Change) -> None:
        seen.append(change.key)
        if change.key == "bad":
            raise ValueError("boom")

    home["bad"] = 1
    home["good"] = 2
    eventually(lambda: seen == ["bad", "good"])
    assert home.handler_errors == 1
    home.close()
    with pytest.raises(aether.Closed):
        home["after"] = 1


def test_watch_blocking_bounded_and_async(bus: aether.Bus) -> None:
    home = bus.map("home")
    watch = home.watch("a.*")
    home["a.x"] = 1
    change = watch.next(timeout=5)
    assert change is not None and change.key == "a.x"
    assert watch.next(timeout=0.05) is None

    async def main() -> None:
        w = home.watch(">")
        await home.set_async("b", 2)
        got = await asyncio.wait_for(w.__anext__(), 5)
        assert got.key == "b" and got.new == 2
        # A cancelled wait loses no change.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(w.__anext__(), 0.05)
        await home.set_async("c", 3)
        await asyncio.sleep(0.1)
        got = await asyncio.wait_for(w.__anext__(), 5)
        assert got.key == "c"
        w.close()
        with pytest.raises(StopAsyncIteration):
            await w.__anext__()

    asyncio.run(main())


def test_node_state_each_node_writes_its_own(bus: aether.Bus) -> None:
    kitchen = bus.node_state("sensors", "sensor_kitchen")
    monitor = bus.node_state("sensors", "monitor")
    kitchen.update("temperature", "72.5")
    eventually(lambda: monitor.read("sensor_kitchen", "temperature") == "72.5")
    assert monitor.read("sensor_kitchen", "humidity", "n/a") == "n/a"
    eventually(lambda: monitor.peers() == ["sensor_kitchen"])
    # Another node's key is refused.
    with pytest.raises(aether.NotOwner):
        monitor.map["node/sensor_kitchen/temperature"] = "0"
    kitchen.remove("temperature")
    eventually(lambda: monitor.read("sensor_kitchen", "temperature") is None)


def test_presence_values_reach_the_others_and_go_with_them(bus: aether.Bus) -> None:
    kitchen = bus.map("home", node="kitchen")
    monitor = bus.map("home", node="monitor")
    kitchen.set_presence("status", {"name": "kitchen", "busy": True})
    seen = [{"node": "kitchen", "slot": "status", "value": {"name": "kitchen", "busy": True}}]
    eventually(lambda: monitor.presences() == seen)
    assert kitchen.presences() == [] and len(monitor) == 0
    with pytest.raises(aether.InvalidName):
        kitchen.set_presence("bad slot", 1)
    with pytest.raises(aether.TooLarge):
        kitchen.set_presence("status", "v" * 5000)
    with pytest.raises(aether.InvalidValue):
        kitchen.set_presence("status", {1, 2})
    kitchen.clear_presence("status")
    eventually(lambda: monitor.presences() == [])
    kitchen.set_presence("status", "back")
    eventually(lambda: len(monitor.presences()) == 1)
    kitchen.close()
    eventually(lambda: monitor.presences() == [])


def test_bad_values_are_refused_and_the_map_goes_on(bus: aether.Bus) -> None:
    home = bus.map("home")
    with pytest.raises(aether.InvalidValue):
        home["x"] = {1, 2}
    with pytest.raises(aether.InvalidValue):
        home["x"] = float("inf")
    with pytest.raises(aether.TooLarge):
        home["x"] = "v" * 40000
    with pytest.raises(aether.InvalidValue):
        home[""] = 1
    with pytest.raises(aether.InvalidName):
        bus.map("bad name")
    assert len(home) == 0
    home["x"] = 1
    assert home["x"] == 1


def test_a_ledger_keeps_the_map_across_a_restart(tmp_path: Path) -> None:
    first = aether.connect()
    home = first.map("home", node="pi", dir=str(tmp_path))
    home["kept"] = {"v": 1}
    home.close()
    first.close()
    assert (tmp_path / "home").is_dir()
    second = aether.connect()
    again = second.map("home", node="pi", dir=str(tmp_path))
    assert again["kept"] == {"v": 1}
    second.close()


def test_a_ledger_that_cannot_be_opened_raises_ledger_failed(tmp_path: Path) -> None:
    # The map's folder is taken by a file: its ledger cannot be made.
    (tmp_path / "home").write_text("not a folder")
    bus = aether.connect()
    with pytest.raises(aether.LedgerFailed):
        bus.map("home", node="pi", dir=str(tmp_path))
    assert issubclass(aether.StampOutOfRange, aether.Error)
    bus.close()


def test_every_map_error_kind_raises_an_exception_of_its_own() -> None:
    # By the core's names; a kind mapped to nothing shows as the base Error.
    assert aether.STATE_ERRORS["not_sent"] is aether.NotSent
    assert aether.STATE_ERRORS["ledger"] is aether.LedgerFailed
    assert aether.STATE_ERRORS["stamp"] is aether.StampOutOfRange
    for name, exception in aether.STATE_ERRORS.items():
        assert issubclass(exception, aether.Error), name
        assert exception is not aether.Error, f"{name} raises the base Error"


def test_closing_ends_watches_and_refuses_new_ones(bus: aether.Bus) -> None:
    home = bus.map("home")
    watch = home.watch()
    seen: List[object] = []
    ended = threading.Event()

    def follow() -> None:
        for change in watch:
            seen.append(change)
        ended.set()

    threading.Thread(target=follow, daemon=True).start()
    home["a"] = 1
    eventually(lambda: len(seen) == 1)
    home.close()
    assert ended.wait(5), "the watch ended with the map"
    with pytest.raises(aether.Closed):
        home.watch()
    with pytest.raises(aether.Closed):
        home.on_change()(print)
    # Closing the bus ends the watches of its maps too.
    other = bus.map("other")
    w = other.watch()
    done = threading.Event()
    threading.Thread(target=lambda: (list(w), done.set()), daemon=True).start()
    bus.close()
    assert done.wait(5), "the watch ended with the bus"


def test_on_change_takes_a_function(bus: aether.Bus) -> None:
    home = bus.map("home")
    with pytest.raises(TypeError):
        home.on_change()(5)  # type: ignore[type-var]


def test_text_that_is_not_unicode_is_an_invalid_value(bus: aether.Bus) -> None:
    home = bus.map("home")
    shop = bus.vibrator("shop")
    bad = "a\udcffb"
    for attempt in (
        lambda: home.__setitem__(bad, 1),
        lambda: home[bad],
        lambda: home.get(bad),
        lambda: home.delete(bad),
        lambda: bus.vibrator(bad),
        lambda: bus.map(bad),
        lambda: shop.emit(bad, 1),
        lambda: shop.emit("ok", 1, key=bad),
        lambda: shop.resonate(bad),
    ):
        with pytest.raises(aether.InvalidValue):
            attempt()
    assert bad not in home
    home["fine"] = 1
    assert home["fine"] == 1


def test_flush_waits_for_another_replica_and_raises_not_held_alone(bus: aether.Bus) -> None:
    home = bus.map("held", node="script")
    assert home.flush(timeout=0.1) == {"writes": 0, "by": [], "keepers": 0}
    home["hall.light"] = "on"
    started = time.monotonic()
    with pytest.raises(aether.NotHeld, match="aether node"):
        home.flush(timeout=0.3)
    assert time.monotonic() - started >= 0.3
    other = bus.map("held", node="pc")
    assert home.flush(timeout=5.0) == {"writes": 1, "by": ["pc"], "keepers": 0}
    assert other["hall.light"] == "on"
    with pytest.raises(aether.NotHeld):
        home["hall.fan"] = "off"
        home.flush(timeout=0.3, keepers=1)
    with pytest.raises(aether.InvalidValue):
        home.flush(timeout=-1)
    for bad in ({"replicas": 0}, {"replicas": -1}, {"keepers": -1}):
        with pytest.raises(ValueError):
            home.flush(timeout=0.1, **bad)
    # Held by "pc", no keeper: a flush that asks for one sends it again.
    with pytest.raises(aether.NotHeld, match="1 replica"):
        home.flush(timeout=0.3, keepers=1)


def test_a_map_opened_acked_waits_on_every_write(bus: aether.Bus) -> None:
    alone = bus.map("acked", node="script", acked=0.3)
    with pytest.raises(aether.NotHeld):
        alone["k"] = 1
    assert alone["k"] == 1, "kept here all the same"
    pc = bus.map("acked", node="pc")
    alone["k"] = 2
    assert pc["k"] == 2
    del alone["k"]

    async def main() -> None:
        await alone.set_async("j", 3)
        # Held already (the write waited for it): none waiting, held by pc.
        assert await alone.flush_async(timeout=1.0) == {"writes": 0, "by": ["pc"], "keepers": 0}

    asyncio.run(main())
