"""Live streams of committed domain events as server-sent events: the plumbing the console's feed and the caregiver
app's stream share.

Event ids are the outbox `stream_seq` the relay assigns in the order it sees commits, so a client that reconnects
with `Last-Event-ID` gets everything after it replayed from PostgreSQL. The Redis stream the relay writes to is only
the wake-up call: the events themselves always come from PostgreSQL, through a `Fetch` that says which of them the
caller may see (the console filters by region, the caregiver app by caregiver).
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request

from kernel.outbox import OutboxEvent
from kernel.runtime import Runtime
from kernel.sessions import still_held

# Two relays may commit their batches out of order; re-reading a short margin and skipping ids already sent
# closes that gap.
MARGIN = 50
PAGE = 500
# The relay writes to the Redis stream before its transaction commits, so a wake-up can come before the rows are
# visible: after a wake-up that announced events for this stream, the follower looks at PostgreSQL again every
# RECHECK_MS until they show (at most RECHECKS times); otherwise it never waits longer than WAIT_MS.
WAIT_MS = 1_000
RECHECK_MS = 50
RECHECKS = 20
KEEP_ALIVE_EVERY = 15  # idle waits between keep-alives
MAX_STREAM_SEQ = 2**63 - 1  # outbox.stream_seq is a bigint


@dataclass(frozen=True)
class FeedEvent:
    """One event of a stream; an empty `type` only advances the cursor (an event the caller may not see)."""

    id: int
    type: str
    data: dict[str, Any]


# The events with `stream_seq` greater than the argument, in `stream_seq` order, at most PAGE of them.
Fetch = Callable[[int], Awaitable[list[FeedEvent]]]
# Whether an event (type, payload) announced on the Redis stream is one that `Fetch` would return.
Concerns = Callable[[str, dict[str, Any]], bool]


def _announced(entries: Any, concerns: Concerns | None) -> int:
    """The highest `stream_seq` among the Redis stream entries that concern this stream (0: none)."""
    highest = 0
    for _id, fields in entries:
        try:
            seq = int(fields[b"seq"])
            if concerns is None or concerns(fields[b"type"].decode(), json.loads(fields[b"payload"])):
                highest = max(highest, seq)
        except (KeyError, ValueError, AttributeError):
            continue
    return highest


async def latest_seq(rt: Runtime) -> int:
    async with rt.database.unit_of_work() as session:
        return int(await session.scalar(select(func.coalesce(func.max(OutboxEvent.stream_seq), 0))) or 0)


def _stream_position(last_event_id: str | None) -> int | None:
    """`Last-Event-ID` as a `stream_seq` (a bigint), or None for anything else: a client may send any text."""
    if not last_event_id or not last_event_id.isascii() or not last_event_id.isdigit() or len(last_event_id) > 19:
        return None
    position = int(last_event_id)
    return position if position <= MAX_STREAM_SEQ else None


async def follow(rt: Runtime, fetch: Fetch, last_event_id: str | None, *, concerns: Concerns | None = None
                 ) -> AsyncIterator[FeedEvent | None]:
    """Events after `last_event_id` (or from now), forever; None now and then as a keep-alive. `concerns` tells
    which wake-ups announce events of this stream (default: all of them)."""
    last = _stream_position(last_event_id)
    if last is None:  # none, or not a position this stream could have sent: from now
        last = await latest_seq(rt)
    floor = last  # the client has everything up to here; the margin is only for commits seen out of order later
    sent: deque[int] = deque(maxlen=4 * MARGIN)
    stream = rt.redis_key(rt.settings.outbox.stream_key)
    # redis-py types stream replies as unions of every shape; these calls answer [(id, fields), …]
    newest: Any = await rt.redis.xrevrange(stream, count=1)
    redis_id: bytes = newest[0][0] if newest else b"0-0"
    idle = 0
    announced, rechecks = 0, 0  # the newest event a wake-up announced for this stream; quick looks left for it
    while True:
        for event in await fetch(max(0, last - MARGIN)):
            last = max(last, event.id)
            if event.id <= floor or event.id in sent:
                continue
            sent.append(event.id)
            if event.type:
                yield event
        awaiting_commit = announced > last and rechecks > 0
        woke: Any = await rt.redis.xread({stream: redis_id}, count=PAGE,
                                         block=RECHECK_MS if awaiting_commit else WAIT_MS)
        if woke:
            redis_id = woke[0][1][-1][0]
            idle = 0
            announced, rechecks = max(announced, _announced(woke[0][1], concerns)), RECHECKS
        elif awaiting_commit:
            rechecks -= 1
        else:
            idle += 1
            if idle >= KEEP_ALIVE_EVERY:
                idle = 0
                yield None


def encode(event: FeedEvent) -> str:
    return json.dumps(event.data, ensure_ascii=False, separators=(",", ":"))


def event_source(request: Request, events: AsyncIterator[FeedEvent | None]) -> EventSourceResponse:
    """The SSE response of a followed stream: `id:` is the event's `stream_seq`, `event:` its type, keep-alive
    comments while idle (proxies close silent connections), no buffering by a proxy in between. The stream ends
    once the token that opened it no longer holds (logged out, revoked, its user deactivated)."""

    runtime: Runtime = request.app.state.runtime
    claims = getattr(request.state, "token", None)
    recheck_s = runtime.settings.auth.stream_recheck.total_seconds()
    checked = time.monotonic()

    async def frames() -> AsyncIterator[ServerSentEvent]:
        nonlocal checked
        async for event in events:
            if await request.is_disconnected():
                return
            # a logout, revocation or deactivation ends an open stream too, within `auth.stream_recheck`
            if claims is not None and time.monotonic() - checked >= recheck_s:
                checked = time.monotonic()
                if not await still_held(runtime, claims):
                    return
            if event is None:
                yield ServerSentEvent(comment="keep-alive")
            else:
                yield ServerSentEvent(data=encode(event), id=str(event.id), event=event.type)

    return EventSourceResponse(frames(), ping=15, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                               send_timeout=30)
