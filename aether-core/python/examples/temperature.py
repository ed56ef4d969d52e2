"""Temperature monitoring on node-owned state: each sensor node updates its
own reading every few seconds; a monitor lists the nodes it hears and reads
each one's temperature.

    python temperature.py                       # three sensors and a monitor here, 6 s
    python temperature.py --nats nats://pi:4222 sensor kitchen
    python temperature.py --nats nats://pi:4222 sensor bedroom
    python temperature.py --nats nats://pi:4222 monitor
    python temperature.py --lan sensor kitchen  # on a Pi running `aether node`
    python temperature.py --lan monitor

The monitor lists the sensors, not the keepers that hold the map for
others on a LAN bus (`aether node` runs one a node): `node.peers()` leaves
them out, `node.keepers()` names them.
"""

from __future__ import annotations

import argparse
import functools
import random
import threading
import time
from typing import Callable, List, Optional

import aether

MAP = "sensors"


def sensor(bus: aether.Bus, name: str, stop: threading.Event, every: float) -> None:
    node = bus.node_state(MAP, f"sensor_{name}")
    temp = random.uniform(18.0, 24.0)
    while not stop.is_set():
        temp += random.uniform(-0.3, 0.3)
        node.update("temperature", round(temp, 1))
        node.update("updated", time.time())
        stop.wait(every)
    node.close()


def monitor(bus: aether.Bus, stop: threading.Event, every: float) -> None:
    node = bus.node_state(MAP, "monitor")
    while not stop.wait(every):
        readings = {peer: node.read(peer, "temperature") for peer in sorted(node.peers())}
        shown = ", ".join(f"{peer}: {temp}" for peer, temp in readings.items() if temp is not None)
        print(f"monitor: {len(readings)} nodes: {shown}", flush=True)
    node.close()


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", nargs="?", choices=["sensor", "monitor", "all"], default="all")
    parser.add_argument("name", nargs="?", default="kitchen", help="the sensor's name")
    parser.add_argument("--nats", help="a NATS server (default: this process only)")
    parser.add_argument("--lan", action="store_true", help="this machine's `aether node` (aether.discover)")
    parser.add_argument("--seconds", type=float, default=6.0, help="how long to run (0: until Ctrl-C)")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between readings")
    args = parser.parse_args(argv)
    bus = aether.discover() if args.lan else aether.connect(args.nats)
    stop = threading.Event()
    jobs: List[Callable[[], None]] = []
    if args.role in ("sensor", "all"):
        names = ["kitchen", "bedroom", "garage"] if args.role == "all" else [args.name]
        jobs += [functools.partial(sensor, bus, name, stop, args.every) for name in names]
    if args.role in ("monitor", "all"):
        jobs.append(functools.partial(monitor, bus, stop, args.every))
    threads = [threading.Thread(target=job, daemon=True) for job in jobs]
    for thread in threads:
        thread.start()
    try:
        if args.seconds > 0:
            time.sleep(args.seconds)
        else:
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    stop.set()
    for thread in threads:
        thread.join(timeout=5)
    bus.drain()


if __name__ == "__main__":
    main()
