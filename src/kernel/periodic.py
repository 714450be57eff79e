"""One loop for periodic background work: run a step every so often until stopped, a failure logged and retried."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("vnh.periodic")


async def every(name: str, interval: float, stop: asyncio.Event, step: Callable[[], Awaitable[object]]) -> None:
    """Run `step` every `interval` seconds until `stop` is set; a failure is logged and retried on the next tick.
    Stopping interrupts the wait at once, never a running step."""
    while not stop.is_set():
        try:
            await step()
        except Exception:
            log.exception("%s failed; retrying", name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
