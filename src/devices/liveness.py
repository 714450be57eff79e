"""Heartbeat supervision: a device silent for `offline_after_intervals` × its interval raises one `device_offline`
alarm (the unique open alarm per device; later checks find it open and add nothing). Any event from the device,
or its `{"online": true}`, resolves it.

The interval of a device is its own (`devices.heartbeat_s`), else its elder's monitoring setting, else the service
default. Devices never seen since registration are not supervised (a button still in its box is not offline).
Times come from the injected clock, so tests move a `ManualClock` past the interval instead of sleeping.
"""

from __future__ import annotations

from sqlalchemy import text

from devices import alarms
from kernel.runtime import Runtime


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
