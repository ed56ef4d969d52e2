"""Aether for Python: waves and replicated maps, in one process or over NATS.

    import aether

    bus = aether.connect()                      # in this process
    bus = aether.connect("nats://pi:4222")      # over NATS
    home = bus.map("home", node="pi-01")
    home["living.temp"] = 24.5

    @home.on_change("living.*")
    def changed(change):
        print(change.key, change.old, "->", change.new, "by", change.writer)

Every rule (stamps, last writer wins, tombstones, signatures, sealed
channels, limits) is the Rust core's. Each blocking call has an asyncio
form (`*_async`); a blocking call made inside a running event loop raises
`BlockingInEventLoop` instead of stalling the loop. The user guide's page
`docs/guide/python.md` says the rest.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import functools
import logging
import os
import threading
import weakref
from collections.abc import MutableMapping
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple, TypeVar

from . import _aether
from ._aether import (
    BlockingInEventLoop,
    Change,
    Closed,
    ConfigurationError,
    ConnectionError,
    Denied,
    Error,
    Full,
    InvalidChannel,
    InvalidName,
    InvalidValue,
    LedgerFailed,
    NoResponders,
    NotHeld,
    NotOwner,
    NotSent,
    RateLimited,
    STATE_ERRORS,
    StampOutOfRange,
    Timeout,
    TooLarge,
    Wave,
    __version__,
)

__all__ = [
    "BlockingInEventLoop",
    "Bus",
    "Change",
    "Closed",
    "ConfigurationError",
    "ConnectionError",
    "Denied",
    "Error",
    "Full",
    "InvalidChannel",
    "InvalidName",
    "InvalidValue",
    "LedgerFailed",
    "Map",
    "NoResponders",
    "NodeState",
    "NotHeld",
    "NotOwner",
    "NotSent",
    "RateLimited",
    "STATE_ERRORS",
    "StampOutOfRange",
    "Timeout",
    "TooLarge",
    "Vibrator",
    "Watch",
    "Wave",
    "__version__",
    "connect",
    "connect_async",
    "discover",
    "discover_async",
]

_log = logging.getLogger("aether")

# At exit, blocking calls end and handler threads stop before the
# interpreter goes: a thread it stopped while it waited in the core would
# abort the process. A bus is held here until it is closed, as a
# connection is (a script that drops its last reference to a bus without
# closing it still has what it emitted sent, at the latest at exit).
_buses: "set[Bus]" = set()
_watches: "weakref.WeakSet[Watch]" = weakref.WeakSet()


# A child forked after connecting has none of the runtime's threads: its
# calls raise aether.Error instead of hanging.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_aether._forked)

# How long, at the interpreter's exit, each open bus may take to send
# what was emitted.
_EXIT_DRAIN_S = 5.0


@atexit.register
def _at_exit() -> None:
    for watch in list(_watches):
        watch.close()
    # Each map still open says goodbye while its bus is up: the other
    # replicas see this script leave at once, not a presence timeout later.
    for bus in list(_buses):
        if not bus.closed:
            bus._leave_maps()
    # What was emitted leaves the process before the interpreter goes,
    # as `drain` does (bounded); then blocking calls end.
    for bus in list(_buses):
        if not bus.closed:
            try:
                bus._raw.drain(_EXIT_DRAIN_S)
            except Exception as error:  # the exit goes on; the loss is logged
                _log.warning("at exit, bus %s could not send everything: %s", bus.name, error)
    _aether._exiting(1.0)
    for bus in list(_buses):
        bus.close()

Handler = TypeVar("Handler", bound=Callable[[Change], Any])


# asyncio's own check for a running loop, without raising when there is
# none (it is called on every blocking call).
_running_loop = asyncio.events._get_running_loop


def _blocking(what: str, instead: Optional[str] = None) -> None:
    """Refuses a blocking call from a running event loop."""
    if _running_loop() is None:
        return
    raise BlockingInEventLoop(
        f"{what} blocks, and this thread runs an asyncio event loop: "
        f"{instead or f'await {what}_async(...)'} instead"
    )


F = TypeVar("F", bound=Callable[..., Any])


def _not_text(error: UnicodeEncodeError) -> InvalidValue:
    return InvalidValue(
        f"{error.object[:40]!r} is not text that can be sent: it holds a lone surrogate "
        f"at {error.start}"
    )


def _texts(method: F) -> F:
    """Names, channels and keys that are not valid Unicode raise
    InvalidValue, as other bad values do."""

    if asyncio.iscoroutinefunction(method):

        @functools.wraps(method)
        async def checked_async(*args: Any, **kwargs: Any) -> Any:
            try:
                return await method(*args, **kwargs)
            except UnicodeEncodeError as error:
                raise _not_text(error) from None

        return checked_async  # type: ignore[return-value]

    @functools.wraps(method)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except UnicodeEncodeError as error:
            raise _not_text(error) from None

    return checked  # type: ignore[return-value]


def connect(
    url: Optional[str] = None,
    *,
    name: Optional[str] = None,
    config_dir: Optional[str] = None,
    token: Optional[str] = None,
    user: Optional[str] = None,
    password: Optional[str] = None,
    creds: Optional[str] = None,
    tls_ca: Optional[str] = None,
    tls_cert: Optional[str] = None,
    tls_key: Optional[str] = None,
) -> "Bus":
    """A bus: in this process (no URL, or "embedded"), over the NATS servers
    of `url` ("nats://host:4222", several separated by commas), or over
    those of a settings folder's `[aether.nats] urls` (`config_dir`, with
    its `[aether]` section and `AETHER__*` variables under the arguments)."""
    _blocking("connect")
    return Bus(
        _aether.connect(
            url,
            name=name,
            config_dir=config_dir,
            token=token,
            user=user,
            password=password,
            creds=creds,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )
    )


async def connect_async(
    url: Optional[str] = None,
    *,
    name: Optional[str] = None,
    config_dir: Optional[str] = None,
    token: Optional[str] = None,
    user: Optional[str] = None,
    password: Optional[str] = None,
    creds: Optional[str] = None,
    tls_ca: Optional[str] = None,
    tls_cert: Optional[str] = None,
    tls_key: Optional[str] = None,
) -> "Bus":
    """`connect`, for asyncio."""
    raw = await _aether.connect(
        url,
        name=name,
        config_dir=config_dir,
        token=token,
        user=user,
        password=password,
        creds=creds,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
        async_=True,
    )
    return Bus(raw)


def discover(
    bus: Optional[str] = None,
    *,
    secret_file: Optional[str] = None,
    wait: float = 3.0,
    name: Optional[str] = None,
    config_dir: Optional[str] = None,
) -> "Bus":
    """Connects to a bus on the LAN that `aether node` runs: this
    machine's node of `bus` (default `AETHER_BUS`, else "aether"), waiting
    up to `wait` seconds for it to start (a script started with its node,
    at boot, runs before the node is up), or, given the bus's
    `secret_file` (default `AETHER_SECRET_FILE`), a node announced on the
    LAN within `wait` seconds, whichever comes first, over TLS checked
    against the bus's own authority. `config_dir` is a settings folder
    whose `[aether]` section applies too (sealed channels without a key of
    their own, and signatures asked for without keys, use keys derived from
    the secret). Raises `aether.ConnectionError` saying what it waited for
    and what to run when none is found."""
    _blocking("discover")
    return Bus(
        _aether.discover(
            bus, secret_file=secret_file, wait=wait, name=name, config_dir=config_dir
        )
    )


async def discover_async(
    bus: Optional[str] = None,
    *,
    secret_file: Optional[str] = None,
    wait: float = 3.0,
    name: Optional[str] = None,
    config_dir: Optional[str] = None,
) -> "Bus":
    """`discover`, for asyncio."""
    raw = await _aether.discover(
        bus,
        secret_file=secret_file,
        wait=wait,
        name=name,
        config_dir=config_dir,
        async_=True,
    )
    return Bus(raw)


class Bus:
    """An aether: the bus this script is on. `with aether.connect() as bus:`
    (and `async with`) drains it at the end, and so does the interpreter's
    exit for a bus still open: what was emitted leaves the process first."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        # Maps are dicts (unhashable): weak references in a list.
        self._maps: "List[weakref.ref[Map]]" = []
        _buses.add(self)

    @property
    def name(self) -> str:
        """Its instance name (`name=`)."""
        return str(self._raw.name)

    @property
    def medium(self) -> str:
        """`embedded` or `nats`."""
        return str(self._raw.medium)

    @property
    def state(self) -> str:
        """`embedded`, `connected`, `disconnected` or `closed`."""
        return str(self._raw.state)

    @property
    def closed(self) -> bool:
        return bool(self._raw.closed)

    @_texts
    def vibrator(
        self,
        name: str,
        *,
        noise_floor: Optional[float] = None,
        queue_capacity: Optional[int] = None,
    ) -> "Vibrator":
        """A vibrator named `name`: the source of the waves it emits."""
        return Vibrator(
            self._raw.vibrator(name, noise_floor=noise_floor, queue_capacity=queue_capacity)
        )

    @_texts
    def map(
        self,
        name: str,
        *,
        node: Optional[str] = None,
        dir: Optional[str] = None,
        acked: Optional[float] = None,
    ) -> "Map":
        """A replica of map `name`, once it has a live peer's state (up to
        `[aether.state] ready_timeout_ms`, 2 s); `node` names this replica
        (the writer of its changes), `dir` keeps it on disk in `dir/name`.
        With `acked` (seconds), every `set` and `delete` returns only once a
        keeper or another replica holds the write, and raises
        `aether.NotHeld` when none does in time (see `Map.flush`)."""
        _blocking("map")
        return self._track(Map(self._raw.map(name, node=node, dir=dir, acked=acked)))

    def _track(self, m: "Map") -> "Map":
        self._maps = [ref for ref in self._maps if ref() is not None]
        self._maps.append(weakref.ref(m))
        return m

    def _leave_maps(self) -> None:
        for ref in self._maps:
            m = ref()
            if m is not None:
                m._leave()

    def _end_watches(self) -> None:
        _buses.discard(self)
        for ref in self._maps:
            m = ref()
            if m is not None:
                m._end_watches()

    @_texts
    async def map_async(
        self,
        name: str,
        *,
        node: Optional[str] = None,
        dir: Optional[str] = None,
        acked: Optional[float] = None,
    ) -> "Map":
        """`map`, for asyncio."""
        return self._track(
            Map(await self._raw.map(name, node=node, dir=dir, acked=acked, async_=True))
        )

    @_texts
    def node_state(self, name: str, node: str, *, dir: Optional[str] = None) -> "NodeState":
        """Node `node`'s replica of the node-owned map `name`."""
        _blocking("node_state")
        state = NodeState(self._raw.node_state(name, node, dir=dir))
        self._track(state.map)
        return state

    def stats(self) -> Dict[str, Any]:
        """Waves emitted, delivered, dropped by reason; the connection."""
        return dict(self._raw.stats())

    def clock(self) -> Dict[str, Any]:
        """This machine's clock against the bus's time, which stamps follow:
        `offset_ms` (the bus's time is this clock plus it), `uncertainty_ms`,
        the time `sources` heard at the last measurement (0: none, this
        clock is used as it is), `measurements` made."""
        return dict(self._raw.clock())

    def drain(self, timeout: float = 5.0) -> None:
        """Waits up to `timeout` seconds until what was emitted left this
        process, then closes."""
        _blocking("drain")
        try:
            self._raw.drain(timeout)
        finally:
            self._end_watches()

    async def drain_async(self, timeout: float = 5.0) -> None:
        """`drain`, for asyncio."""
        try:
            await self._raw.drain(timeout, async_=True)
        finally:
            self._end_watches()

    def close(self) -> None:
        """Closes at once; what is still unsent is dropped, and counted.
        Its maps' watches and handlers end."""
        self._raw.close()
        self._end_watches()

    def __enter__(self) -> "Bus":
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.closed:
            self.drain()

    async def __aenter__(self) -> "Bus":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if not self.closed:
            await self.drain_async()

    def __repr__(self) -> str:
        return f"Bus(name={self.name!r}, medium={self.medium!r}, state={self.state!r})"


class Vibrator:
    """Emits waves, resonates on channel patterns, receives what they match.

    `for wave in vibrator:` receives until the bus closes; `async for` too.
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        # Waves taken for an asyncio receive that was cancelled: handed out
        # first, never lost.
        self._kept: Deque[Wave] = collections.deque()
        # The hot path: `emit` is the native method itself (it makes the
        # same checks as the method below, which documents and types it).
        setattr(self, "emit", raw.emit)

    @property
    def name(self) -> str:
        return str(self._raw.name)

    def emit(
        self,
        channel: str,
        payload: Any = None,
        *,
        amplitude: float = 1.0,
        phase: float = 0.0,
        key: Optional[str] = None,
    ) -> str:
        """Emits `payload` (any JSON value, or `bytes` as they are) on
        `channel`; returns the wave's id."""
        _blocking("emit")
        return str(self._raw.emit(channel, payload, amplitude=amplitude, phase=phase, key=key))

    async def emit_async(
        self,
        channel: str,
        payload: Any = None,
        *,
        amplitude: float = 1.0,
        phase: float = 0.0,
        key: Optional[str] = None,
    ) -> str:
        """`emit`, for asyncio."""
        return str(
            await self._raw.emit(
                channel, payload, amplitude=amplitude, phase=phase, key=key, async_=True
            )
        )

    @_texts
    def resonate(self, pattern: str, *, group: Optional[str] = None) -> "Vibrator":
        """Resonates on `pattern` (`*` one token, `>` the rest), alone or in
        `group` (each wave to one member); returns itself."""
        self._raw.resonate(pattern, group)
        return self

    @_texts
    def stop_resonating(self, pattern: str) -> None:
        self._raw.stop_resonating(pattern)

    def receive(self, timeout: Optional[float] = None) -> Optional[Wave]:
        """The next wave, waiting up to `timeout` seconds (None: until one
        comes); None when none came in time or the bus closed. Ctrl-C
        interrupts the wait."""
        _blocking("receive")
        if self._kept:
            return self._kept.popleft()
        try:
            return self._raw.receive(timeout)  # type: ignore[no-any-return]
        except Closed:
            return None  # the interpreter exits: as if the bus closed

    async def receive_async(self) -> Optional[Wave]:
        """The next wave; None when the bus closed. Cancelling it loses no
        wave."""
        if self._kept:
            return self._kept.popleft()
        wave = await self._raw._receive_async(self._keep)
        return wave  # type: ignore[no-any-return]

    def _keep(self, wave: Optional[Wave]) -> None:
        if wave is not None:
            self._kept.append(wave)

    def try_receive(self) -> Optional[Wave]:
        """A wave already queued, or None at once."""
        if self._kept:
            return self._kept.popleft()
        return self._raw.try_receive()  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[Wave]:
        return self

    def __next__(self) -> Wave:
        wave = self.receive()
        if wave is None:
            raise StopIteration
        return wave

    def __aiter__(self) -> "Vibrator":
        return self

    async def __anext__(self) -> Wave:
        wave = await self.receive_async()
        if wave is None:
            raise StopAsyncIteration
        return wave

    @_texts
    def request(
        self,
        channel: str,
        payload: Any = None,
        *,
        timeout: float = 5.0,
        key: Optional[str] = None,
    ) -> Wave:
        """Emits a request and waits for the first reply: `NoResponders`
        when nobody resonates on `channel`, `Timeout` when no reply came."""
        _blocking("request")
        return self._raw.request(channel, payload, timeout=timeout, key=key)  # type: ignore[no-any-return]

    @_texts
    async def request_async(
        self,
        channel: str,
        payload: Any = None,
        *,
        timeout: float = 5.0,
        key: Optional[str] = None,
    ) -> Wave:
        """`request`, for asyncio."""
        return await self._raw.request(channel, payload, timeout=timeout, key=key, async_=True)  # type: ignore[no-any-return]

    def reply(self, request: Wave, payload: Any = None) -> str:
        """Replies to `request` (a wave with `is_request`)."""
        _blocking("reply")
        return str(self._raw.reply(request, payload))

    async def reply_async(self, request: Wave, payload: Any = None) -> str:
        """`reply`, for asyncio."""
        return str(await self._raw.reply(request, payload, async_=True))

    def stats(self) -> Dict[str, Any]:
        """Emitted, delivered to it, dropped by reason."""
        return dict(self._raw.stats())

    def __repr__(self) -> str:
        return f"Vibrator({self.name!r})"


T = TypeVar("T")


class Watch:
    """Changes (or presence events) as they come: `for change in watch:`
    blocks, `async for` awaits, `next(timeout)` waits a bounded time;
    `close()` ends them."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._kept: Deque[Any] = collections.deque()
        _watches.add(self)

    def next(self, timeout: Optional[float] = None) -> Optional[Any]:
        """The next one, waiting up to `timeout` seconds; None when the time
        passed or the watch ended."""
        _blocking("next", "async for, or await watch.__anext__(),")
        if self._kept:
            return self._kept.popleft()
        try:
            _ended, item = self._raw._next(timeout)
        except Closed:
            return None  # the interpreter exits
        return item

    def __iter__(self) -> "Watch":
        return self

    def __next__(self) -> Any:
        if self._kept:
            return self._kept.popleft()
        try:
            ended, item = self._raw._next(None)
        except Closed:
            raise StopIteration from None  # the interpreter exits
        if ended:
            raise StopIteration
        return item

    def __aiter__(self) -> "Watch":
        return self

    async def __anext__(self) -> Any:
        if self._kept:
            return self._kept.popleft()
        ended, item = await self._raw._next_async(self._keep)
        if ended:
            raise StopAsyncIteration
        return item

    def _keep(self, result: Tuple[bool, Any]) -> None:
        if result[1] is not None:
            self._kept.append(result[1])

    def close(self) -> None:
        self._raw.close()


class Map(MutableMapping):  # type: ignore[type-arg]
    """A replica of a replicated map: a dict of JSON values that every
    replica shares, the last writer winning per key.

    Reads are local and immediate; a write returns once this replica holds
    it (and its ledger, with `dir`), and reaches the others in milliseconds.
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._closed = False
        self._watches: "weakref.WeakSet[Watch]" = weakref.WeakSet()
        self._handlers: List[Tuple[Watch, threading.Thread]] = []
        self.handler_errors = 0
        """Exceptions raised by `on_change` handlers (each logged)."""

    @property
    def name(self) -> str:
        return str(self._raw.name)

    @property
    def node(self) -> str:
        """This replica's name: the writer of its changes."""
        return str(self._raw.node)

    @_texts
    def __getitem__(self, key: str) -> Any:
        return self._raw[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self.delete(key)

    def __contains__(self, key: object) -> bool:
        try:
            return isinstance(key, str) and key in self._raw
        except UnicodeEncodeError:
            return False  # no such key can be stored

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw.keys())

    def __len__(self) -> int:
        return len(self._raw)

    @_texts
    def get(self, key: str, default: Any = None) -> Any:
        return self._raw.get(key, default)

    def keys(self) -> List[str]:  # type: ignore[override]
        """The keys now (a list: the map may change while one iterates)."""
        return list(self._raw.keys())

    def items(self) -> List[Tuple[str, Any]]:  # type: ignore[override]
        """`(key, value)` pairs now."""
        return list(self._raw.items())

    def values(self) -> List[Any]:  # type: ignore[override]
        return [value for _, value in self._raw.items()]

    @_texts
    def set(self, key: str, value: Any) -> str:
        """Sets `key` to `value` (any JSON value); returns the write's stamp."""
        _blocking("set")
        return str(self._raw.set(key, value))

    @_texts
    async def set_async(self, key: str, value: Any) -> str:
        return str(await self._raw.set(key, value, async_=True))

    @_texts
    def delete(self, key: str) -> str:
        """Deletes `key` (a tombstone every replica learns); returns its stamp."""
        _blocking("delete")
        return str(self._raw.delete(key))

    @_texts
    async def delete_async(self, key: str) -> str:
        return str(await self._raw.delete(key, async_=True))

    def flush(
        self, timeout: float = 5.0, *, replicas: int = 1, keepers: int = 0
    ) -> Dict[str, Any]:
        """Waits until `replicas` other replicas (`keepers` of them keepers,
        such as `aether node`) hold every write of this replica that none
        acknowledged yet, up to `timeout` seconds. Returns `{"writes": n,
        "by": [replica names], "keepers": k}`; raises `aether.NotHeld` when
        they do not in time (the writes stay here, and a later flush sends
        them again), and `aether.Full` when a replica's map is full."""
        _blocking("flush")
        return dict(self._raw.flush(timeout, replicas=replicas, keepers=keepers))

    async def flush_async(
        self, timeout: float = 5.0, *, replicas: int = 1, keepers: int = 0
    ) -> Dict[str, Any]:
        """`flush`, for asyncio."""
        return dict(
            await self._raw.flush(timeout, replicas=replicas, keepers=keepers, async_=True)
        )

    def _open(self) -> None:
        if self._closed:
            raise Closed(f"the map {self.name!r} was closed")

    @_texts
    def watch(self, pattern: str = ">") -> Watch:
        """Changes to the keys `pattern` matches (`>` every key, `*` one
        token, `living.*`), from now on; it ends when the map or its bus
        closes."""
        self._open()
        watch = Watch(self._raw.watch(pattern))
        self._watches.add(watch)
        return watch

    def presence(self) -> Watch:
        """`("joined" | "left", replica)` as replicas come and go."""
        self._open()
        watch = Watch(self._raw.presence())
        self._watches.add(watch)
        return watch

    def _end_watches(self) -> None:
        for watch in list(self._watches):
            watch.close()

    def on_change(self, pattern: str = ">") -> Callable[[Handler], Handler]:
        """Decorates a handler called with each `Change` to the keys
        `pattern` matches, from now on, in a thread of its own (one per
        handler, in the order the changes happen here). A handler may write
        to the map; one that raises is logged and counted in
        `handler_errors`, and goes on with the next change."""

        self._open()

        def register(handler: Handler) -> Handler:
            if not callable(handler):
                raise TypeError(f"on_change decorates a function, not {type(handler).__name__}")
            watch = self.watch(pattern)

            def run() -> None:
                try:
                    changes = iter(watch)
                    for change in changes:
                        try:
                            handler(change)
                        except Exception:
                            self.handler_errors += 1
                            _log.exception(
                                "on_change handler %s failed on %r",
                                getattr(handler, "__name__", handler),
                                change,
                            )
                except Closed:
                    pass  # the interpreter exits

            thread = threading.Thread(
                target=run,
                name=f"aether-{self.name}-{pattern}",
                daemon=True,
            )
            thread.start()
            self._handlers.append((watch, thread))
            return handler

        return register

    def peers(self, *, keepers: bool = False) -> List[str]:
        """The other replicas heard now, by name: the scripts and programs
        that have the map open. Keepers (`aether node` keeps every map of
        its bus, one replica a node) are left out unless `keepers=True`."""
        return list(self._raw.peers(keepers=keepers))

    def keepers(self) -> List[str]:
        """The keepers heard now: replicas that keep the map for others on
        their disk (`aether node`'s, named after their node)."""
        return list(self._raw.keepers())

    def set_presence(self, slot: str, value: Any) -> None:
        """Shows `value` (any JSON: a name, a status) in presence slot
        `slot` to every replica of the map while this one is open; never
        kept, never a key. `InvalidName` for a bad slot, `TooLarge` past
        4 KiB."""
        self._raw.set_presence(slot, value)

    def clear_presence(self, slot: str) -> None:
        """Clears presence slot `slot`, if it is set."""
        self._raw.clear_presence(slot)

    def presences(self) -> List[Dict[str, Any]]:
        """The other replicas' presence values, `{"node", "slot", "value"}`
        each, sorted by node and slot (the pages of a browser bridge among
        them: each a slot of the gateway's, named after the page)."""
        return list(self._raw.presences())

    def stats(self) -> Dict[str, Any]:
        """Keys, tombstones, changes applied, refused by reason (`malformed`
        counts values from other replicas that a script could not have
        written, such as NaN), peers."""
        return dict(self._raw.stats())

    def close(self) -> None:
        """Stops the handlers and watches, says goodbye to the peers and
        closes; writes, watches and handlers after it raise `Closed`."""
        self._closed = True
        self._end_watches()
        for _, thread in self._handlers:
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        self._handlers.clear()
        self._raw.close()

    def _leave(self) -> None:
        """At the interpreter's exit: says goodbye (bounded) unless closed."""
        if self._closed:
            return
        self._closed = True
        try:
            self._raw.close()
        except Exception as error:  # the exit goes on; the peers time it out
            _log.warning("at exit, map %s could not say goodbye: %s", self.name, error)

    def __repr__(self) -> str:
        return repr(self._raw)


class NodeState:
    """Node-owned state: this node writes only its own keys, reads any
    node's, and sees who is there (`peers()`)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.map = Map(raw.map)
        """The map underneath: node `n`'s `key` is `node/n/key`."""

    @property
    def node(self) -> str:
        return str(self._raw.node)

    @_texts
    def update(self, key: str, value: Any) -> str:
        """Sets this node's `key` to `value` (any JSON value)."""
        _blocking("update")
        return str(self._raw.update(key, value))

    @_texts
    async def update_async(self, key: str, value: Any) -> str:
        return str(await self._raw.update(key, value, async_=True))

    @_texts
    def remove(self, key: str) -> str:
        """Deletes this node's `key`."""
        _blocking("remove")
        return str(self._raw.remove(key))

    @_texts
    def read(self, node: str, key: str, default: Any = None) -> Any:
        """Node `node`'s `key`, or `default`."""
        return self._raw.read(node, key, default)

    def peers(self, *, keepers: bool = False) -> List[str]:
        """The other nodes heard now; keepers (`aether node`'s replicas,
        which write no node keys) only with `keepers=True`."""
        return list(self._raw.peers(keepers=keepers))

    def keepers(self) -> List[str]:
        """The keepers heard now."""
        return list(self._raw.keepers())

    def on_update(self) -> Callable[[Handler], Handler]:
        """Decorates a handler called with each `Change` of any node's keys
        (`change.key` is `node/<name>/<key>`), as `Map.on_change`."""
        return self.map.on_change(">")

    def close(self) -> None:
        self.map.close()
