"""The dispatcher console's live feed: committed domain events as server-sent events, filtered to the caller's
region (the stream plumbing — ids, replay after `Last-Event-ID`, wake-ups, keep-alives — is `kernel.event_stream`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import select

from kernel.authz import Access
from kernel.event_stream import PAGE, FeedEvent, encode, latest_seq
from kernel.event_stream import follow as follow_stream
from kernel.outbox import OutboxEvent
from kernel.runtime import Runtime

__all__ = ["FeedEvent", "encode", "events_after", "follow", "latest_seq", "visible"]

PREFIXES = ("orders.order.", "orders.visit.", "dispatch.offer.", "devices.alarm.", "devices.device.")


def visible(access: Access, event_type: str, payload: dict[str, Any]) -> bool:
    if not event_type.startswith(PREFIXES):
        return False
    region = payload.get("region_code")
    if region is None:
        return access.scope == "all"
    return access.covers(region_code=region)


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


def follow(rt: Runtime, access: Access, last_event_id: str | None) -> AsyncIterator[FeedEvent | None]:
    """The console's events after `last_event_id` (or from now), forever; None now and then as a keep-alive."""
    return follow_stream(rt, lambda after: events_after(rt, access, after), last_event_id,
                         concerns=lambda event_type, payload: visible(access, event_type, payload))
