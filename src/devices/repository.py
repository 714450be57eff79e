"""Read queries of the devices package: stored events and dead letters, newest first, keyset-paged."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devices import protocol
from devices.models import DeadLetter, StoredEvent
from kernel.authz import Access
from kernel.errors import Unprocessable
from kernel.pagination import keyset, page_of


def query_time(value: datetime | None, name: str) -> datetime | None:
    """A time from a query string, as PostgreSQL can compare it: with an offset, and within the years 1-9999 in UTC
    (`0001-01-01T00:00:00+08:00` is not); anything else is a 422 `invalid_time`, never a failed statement."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise Unprocessable(f"{name}: give a UTC offset, e.g. 2026-03-02T09:00:00+08:00", code="invalid_time",
                            details={"field": name})
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise Unprocessable(f"{name}: outside the years 1-9999 in UTC", code="invalid_time",
                            details={"field": name}) from exc


def query_text(value: str | None, name: str) -> str | None:
    if value is not None and protocol.CONTROL_OR_SURROGATE.search(value):
        raise Unprocessable(f"{name}: no control characters", code="invalid_parameter", details={"field": name})
    return value


async def device_events(session: AsyncSession, device_id: str, *, type_: str | None, from_: datetime | None,
                        to: datetime | None, cursor: str | None, limit: int) -> tuple[list[StoredEvent], str | None]:
    from_, to, type_ = query_time(from_, "from"), query_time(to, "to"), query_text(type_, "type")
    query = select(StoredEvent).where(StoredEvent.device_id == device_id)
    if type_:
        query = query.where(StoredEvent.type == type_)
    if from_:
        query = query.where(StoredEvent.received_at >= from_)
    if to:
        query = query.where(StoredEvent.received_at < to)
    rows = list((await session.scalars(keyset(query, StoredEvent.received_at, StoredEvent.id, cursor, limit))).all())
    return page_of(rows, limit, lambda r: (r.received_at, r.id))


async def dead_letters(session: AsyncSession, access: Access, *, from_: datetime | None, cursor: str | None,
                       limit: int) -> tuple[list[DeadLetter], str | None]:
    """Dead letters in the caller's scope: those of devices in its region (an unknown device has no region: admins
    see those)."""
    from_ = query_time(from_, "from")
    query = select(DeadLetter).where(access.region_clause(DeadLetter.region_code))
    if from_:
        query = query.where(DeadLetter.received_at >= from_)
    rows = list((await session.scalars(keyset(query, DeadLetter.received_at, DeadLetter.id, cursor, limit))).all())
    return page_of(rows, limit, lambda r: (r.received_at, r.id))
