"""Heartbeat supervision: a device silent for longer than `offline_after_intervals` (3) × its interval raises one
`device_offline` alarm (the unique open alarm per device; later checks find it open and add nothing). Any event from
the device, or its `{"online": true}`, resolves it.

Why 3 and "longer than": with two heartbeats lost in a row the third arrives exactly 3 intervals after the last one
seen, so it never alarms; a third loss (a real outage) alarms just after 3 intervals. A fixed-period checker would
fire anywhere up to one period late (at 10 s for a 10 s heartbeat: up to 4×), so `supervise` sleeps until the next
device is due (`next_offline_due`), at most `supervision_interval_s`: each alarm comes within a few tens of
milliseconds of 3× the interval, inside its ±10 % window for any interval.

The interval of a device is its own (`devices.heartbeat_s`), else its elder's monitoring setting, else the service
default. Devices never seen since registration are not supervised (a button still in its box is not offline).
Times come from the injected clock, so tests move a `ManualClock` past the interval instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from sqlalchemy import text

from devices import alarms
from kernel.runtime import Runtime

log = logging.getLogger("vnh.devices.liveness")

_NEXT_DUE = text(
    "SELECT min(d.last_seen_at + make_interval(secs => "
    "           COALESCE(d.heartbeat_s, m.heartbeat_s, :default_s) * CAST(:factor AS float8))) "
    "FROM devices d LEFT JOIN elder_monitoring m ON m.elder_id = d.elder_id "
    "WHERE d.status = 'active' AND d.last_seen_at IS NOT NULL "
    "  AND NOT EXISTS (SELECT 1 FROM alarms a WHERE a.type = 'device_offline' AND a.open_key = d.device_id "
    "                  AND a.status <> 'resolved')")


async def raise_offline_alarms(rt: Runtime, *, limit: int = 500) -> int:
    """One pass; answers how many devices were newly found silent."""
    now = rt.clock.now()
    settings = rt.settings.devices
    async with rt.database.unit_of_work() as session:
        silent = (await session.execute(text(
            "SELECT d.device_id, d.elder_id, e.region_code, d.last_seen_at, "
            "       COALESCE(d.heartbeat_s, m.heartbeat_s, :default_s) AS interval_s "
            "FROM devices d JOIN elders e ON e.id = d.elder_id "
            "LEFT JOIN elder_monitoring m ON m.elder_id = d.elder_id "
            "WHERE d.status = 'active' AND d.last_seen_at IS NOT NULL "
            "  AND d.last_seen_at < CAST(:now AS timestamptz) - make_interval(secs => "
            "      COALESCE(d.heartbeat_s, m.heartbeat_s, :default_s) * CAST(:factor AS float8)) "
            "  AND NOT EXISTS (SELECT 1 FROM alarms a WHERE a.type = 'device_offline' AND a.open_key = d.device_id "
            "                  AND a.status <> 'resolved') "
            "ORDER BY d.last_seen_at LIMIT :limit"),
            {"now": now, "default_s": settings.heartbeat_s, "factor": settings.offline_after_intervals,
             "limit": limit})).all()
        raised = 0
        for row in silent:
            _alarm, created = await alarms.raise_alarm(session, rt, alarms.Trigger(
                elder_id=row.elder_id, region_code=row.region_code, type="device_offline", source="system",
                received_at=now, device_id=row.device_id,
                details={"last_seen_at": row.last_seen_at.isoformat(), "interval_s": row.interval_s,
                         "silent_s": round((now - row.last_seen_at).total_seconds())}))
            raised += created
    return raised


async def next_offline_due(rt: Runtime) -> datetime | None:
    """When the next supervised device without an open offline alarm becomes silent for too long, if it hears
    nothing more (its deadline; the alarm is raised just after it)."""
    settings = rt.settings.devices
    async with rt.database.unit_of_work() as session:
        due: datetime | None = await session.scalar(_NEXT_DUE, {
            "default_s": settings.heartbeat_s, "factor": settings.offline_after_intervals})
    return due


SETTLE_S = 0.02  # wake this long after a deadline: the rule is "older than", so the deadline itself is not yet due


async def supervise(rt: Runtime, stop: asyncio.Event) -> None:
    """Raise offline alarms, then sleep until the next device is due (at most `supervision_interval_s`, at least
    SETTLE_S) — the checker's period adapts to the smallest interval in use instead of being fixed."""
    longest = rt.settings.devices.supervision_interval_s
    while not stop.is_set():
        wait = longest
        try:
            await raise_offline_alarms(rt)
            due = await next_offline_due(rt)
            if due is not None:
                wait = min(longest, max(SETTLE_S, (due - rt.clock.now()).total_seconds() + SETTLE_S))
        except Exception:
            log.exception("device supervision failed; retrying")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)
