"""Waiting on a condition with a deadline: the one way tests wait (never a sleep as proof that something happened).

A negative ("X did not happen") is asserted against a positive control that arrives later: make X possible, then
cause a control that must be processed after it, wait for the control with `eventually`, and only then assert X
did not happen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psutil

if TYPE_CHECKING:
    from kernel.runtime import Runtime

POLL_S = 0.05


async def eventually(check: Callable[[], Awaitable[Any]], *, timeout: float = 15.0,  # noqa: ASYNC109
                     what: str = "condition") -> Any:
    """Poll `check` until it answers something truthy and answer that; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout} s (last: {last!r})")
        await asyncio.sleep(POLL_S)  # paces the polling only


async def blocked_in_redis(rt: Runtime, command: str = "xread") -> bool:
    """Whether a connection of this process is blocked in `command` on the runtime's Redis (CLIENT LIST: flag `b`):
    a follower that is waiting for a wake-up, not one that has yet to start."""
    port = urlsplit(rt.settings.redis_url or "").port or 6379
    ours = {f"{c.laddr.ip}:{c.laddr.port}" for c in psutil.Process().net_connections(kind="tcp")
            if c.raddr and c.raddr.port == port}
    clients = await rt.redis.client_list()
    return any(c.get("addr") in ours and c.get("cmd") == command and "b" in c.get("flags", "") for c in clients)
