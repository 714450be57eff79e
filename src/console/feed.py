"""The dispatcher console's live feed: committed domain events as server-sent events.

Event ids are the outbox `stream_seq` the relay assigns in the order it sees commits, so a browser that reconnects
with `Last-Event-ID` gets everything after it replayed from PostgreSQL. The Redis stream the relay writes to is
only the wake-up call: the events themselves always come from PostgreSQL, filtered to the caller's region.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from kernel.authz import Access
from kernel.outbox import OutboxEvent
from kernel.runtime import Runtime

PREFIXES = ("orders.order.", "orders.visit.", "dispatch.offer.", "devices.alarm.", "devices.device.")
# Two relays may commit their batches out of order; re-reading a short margin and skipping ids already sent
# closes that gap.
MARGIN = 50
PAGE = 500
# The relay writes to the Redis stream before its transaction commits, so a wake-up can come before the rows are
# visible: the follower never waits longer than this before looking at PostgreSQL again.
WAIT_MS = 1_000
KEEP_ALIVE_EVERY = 15  # idle waits between keep-alives


@dataclass(frozen=True)
class FeedEvent:
    id: int
    type: str
    data: dict[str, Any]


def visible(access: Access, event_type: str, payload: dict[str, Any]) -> bool:
    if not event_type.startswith(PREFIXES):
        return False
    region = payload.get("region_code")
    if region is None:
        return access.scope == "all"
    return access.covers(region_code=region)


async def latest_seq(rt: Runtime) -> int:
    async with rt.database.unit_of_work() as session:
        return int(await session.scalar(select(func.coalesce(func.max(OutboxEvent.stream_seq), 0))) or 0)


async def events_after(rt: Runtime, access: Access, after: int) -> list[FeedEvent]:
    async with rt.database.unit_of_work() as session:
        rows = (await session.scalars(
            select(OutboxEvent).where(OutboxEvent.stream_seq > after).order_by(OutboxEvent.stream_seq).limit(PAGE)
        )).all()
    out = []
    for row in rows:
        assert row.stream_seq is not None
        if visible(access, row.event_type, row.payload):
            out.append(FeedEvent(row.stream_seq, row.event_type, {
                "type": row.event_type, "aggregate_id": row.aggregate_id, "occurred_at": row.occurred_at.isoformat(),
                **row.payload}))
        else:
            out.append(FeedEvent(row.stream_seq, "", {}))  # advances the cursor, sends nothing
    return out


async def follow(rt: Runtime, access: Access, last_event_id: str | None) -> AsyncIterator[FeedEvent | None]:
    """Events after `last_event_id` (or from now), forever; None now and then as a keep-alive."""
    try:
        last = int(last_event_id) if last_event_id else await latest_seq(rt)
    except ValueError:
        last = await latest_seq(rt)
    floor = last  # the client has everything up to here; the margin is only for commits seen out of order later
    sent: deque[int] = deque(maxlen=4 * MARGIN)
    stream = rt.redis_key(rt.settings.outbox.stream_key)
    # redis-py types stream replies as unions of every shape; these calls answer [(id, fields), …]
    newest: Any = await rt.redis.xrevrange(stream, count=1)
    redis_id: bytes = newest[0][0] if newest else b"0-0"
    idle = 0
    while True:
        for event in await events_after(rt, access, max(0, last - MARGIN)):
            last = max(last, event.id)
            if event.id <= floor or event.id in sent:
                continue
            sent.append(event.id)
            if event.type:
                yield event
        woke: Any = await rt.redis.xread({stream: redis_id}, count=PAGE, block=WAIT_MS)
        if woke:
            redis_id = woke[0][1][-1][0]
            idle = 0
        else:
            idle += 1
            if idle >= KEEP_ALIVE_EVERY:
                idle = 0
                yield None


def encode(event: FeedEvent) -> str:
    return json.dumps(event.data, ensure_ascii=False, separators=(",", ":"))
