"""Waiting on a condition with a deadline: the one way tests wait (never a sleep as proof that something happened).

A negative ("X did not happen") is asserted against a positive control that arrives later: make X possible, then
cause a control that must be processed after it, wait for the control with `eventually`, and only then assert X
did not happen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

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


def eventually_sync(check: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition") -> Any:
    """`eventually` for code outside an event loop (threads, child processes)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout} s (last: {last!r})")
        time.sleep(POLL_S)  # paces the polling only
