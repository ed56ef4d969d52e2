"""Home automation on one shared map: a sensor writes the living room's
temperature, the lights react to it, a PC flips a flag.

    python home.py                        # all three in this process, 5 s
    python home.py --nats nats://pi:4222 sensor    # one role per terminal
    python home.py --nats nats://pi:4222 lights
    python home.py --nats nats://pi:4222 pc
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from typing import List, Optional

import aether


def sensor(bus: aether.Bus, stop: threading.Event) -> None:
    home = bus.map("home", node="sensor-living")
    temp = 22.0
    while not stop.is_set():
        temp = round(temp + random.uniform(-0.5, 1.0), 1)
        home["living.temp"] = temp
        print(f"sensor: living.temp = {temp}", flush=True)
        stop.wait(1.0)


def lights(bus: aether.Bus, stop: threading.Event) -> None:
    home = bus.map("home", node="lights")

    @home.on_change("living.*")
    def react(change: aether.Change) -> None:
        if change.key != "living.temp" or change.new is None:
            return
        on = bool(change.new > 23.0) and not home.get("away", False)
        if home.get("lights.living") != on:
            home["lights.living"] = on
            print(f"lights: living room {'on' if on else 'off'} ({change.new} from {change.writer})", flush=True)

    stop.wait()
    home.close()


def pc(bus: aether.Bus, stop: threading.Event) -> None:
    home = bus.map("home", node="pc")
    while not stop.is_set():
        away = not home.get("away", False)
        home["away"] = away
        print(f"pc: away = {away}", flush=True)
        stop.wait(2.0)


ROLES = {"sensor": sensor, "lights": lights, "pc": pc}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", nargs="?", choices=[*ROLES, "all"], default="all")
    parser.add_argument("--nats", help="a NATS server (default: this process only)")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to run (0: until Ctrl-C)")
    args = parser.parse_args(argv)
    bus = aether.connect(args.nats)
    stop = threading.Event()
    roles = list(ROLES) if args.role == "all" else [args.role]
    threads = [threading.Thread(target=ROLES[r], args=(bus, stop), daemon=True) for r in roles]
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
