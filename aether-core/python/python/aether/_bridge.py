"""Resolves the asyncio futures of the package's Rust runtime, in the event loop."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional


def resolve(
    future: "asyncio.Future[Any]",
    ok: bool,
    value: Any,
    keep: Optional[Callable[[Any], None]],
) -> None:
    """Sets `future`'s result (or exception); when it was cancelled meanwhile,
    a result that must not be lost goes to `keep`."""
    if future.done():
        if ok and keep is not None:
            keep(value)
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
