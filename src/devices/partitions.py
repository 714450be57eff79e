"""Upkeep of the event tables: monthly partitions ahead of time, the DEFAULT partition watched, old keys pruned.

Months come from the service's clock, not the database's: the current month and two ahead always exist, so rows
never land in DEFAULT in normal operation (PostgreSQL refuses a new partition for a month that already has rows in
DEFAULT; the SQL function moves such rows first, see alembic/versions/0004_devices.py). Anything in DEFAULT is
reported (log and gauge) — it means a clock far off or upkeep that did not run.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta

from prometheus_client import Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from kernel.runtime import Runtime

log = logging.getLogger("vnh.devices.partitions")

DEFAULT_ROWS = Gauge("vnh_device_events_default_partition_rows",
                     "Rows in device_events_default: should be 0 (a month partition was missing)")
MONTHS_AHEAD = 2


def months_from(moment: datetime, count: int) -> list[date]:
    first = date(moment.year, moment.month, 1)
    out = []
    for step in range(count + 1):
        month = first.month - 1 + step
        out.append(date(first.year + month // 12, month % 12 + 1, 1))
    return out


async def ensure_partitions(session: AsyncSession, now: datetime, ahead: int = MONTHS_AHEAD) -> list[str]:
    """Create the partitions of `now`'s month and `ahead` more; answers the tables created."""
    created = []
    for month in months_from(now, ahead):
        if await session.scalar(text("SELECT vnh_device_events_partition(:m)"), {"m": month}):
            created.append(f"device_events_{month:%Y_%m}")
    return created


async def default_partition_rows(session: AsyncSession) -> int:
    return int(await session.scalar(text("SELECT count(*) FROM device_events_default")) or 0)


async def prune_event_keys(session: AsyncSession, now: datetime, retention: timedelta, limit: int = 50_000) -> int:
    """Drop deduplication keys older than the retention (30 days; a redelivery that late is not expected), at
    most `limit` per call so one call never holds a long lock."""
    result = await session.execute(text(
        "DELETE FROM device_event_keys WHERE ctid IN (SELECT ctid FROM device_event_keys "
        "WHERE received_at < :cutoff LIMIT :limit)"), {"cutoff": now - retention, "limit": limit})
    return int(getattr(result, "rowcount", 0) or 0)


async def upkeep_once(rt: Runtime) -> dict[str, int]:
    """Partitions ahead, the DEFAULT watch and key pruning; run by the workers every hour and at start."""
    now = rt.clock.now()
    async with rt.database.unit_of_work() as session:
        created = await ensure_partitions(session, now)
    async with rt.database.unit_of_work() as session:
        rows = await default_partition_rows(session)
        pruned = await prune_event_keys(session, now, rt.settings.devices.dedup_retention)
    DEFAULT_ROWS.set(rows)
    if created:
        log.info("created event partitions %s", ", ".join(created))
    if rows:
        log.error("%d device events sit in device_events_default: a month partition was missing", rows)
    return {"created": len(created), "default_rows": rows, "pruned_keys": pruned}
