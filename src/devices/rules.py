"""Alarm rules over telemetry: heart rate and SpO2 outside the elder's safe range for the configured duration
(warning), leaving the safe zone (warning), low battery (info).

Each rule keeps a small state per elder (`device_rule_watch`): since when the readings are out, and whether this
streak already raised its alarm — so a streak raises one alarm, and coming back in range arms the rule again.
Durations are measured on the devices' own `ts` (when the reading was taken), not on arrival; a reading older than
the newest one seen is not allowed to break or start a streak. `step` is the pure core.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from devices import alarms, geofence
from devices.models import ElderMonitoring, RuleWatch
from kernel.runtime import Runtime

if TYPE_CHECKING:
    from devices.ingest import NewEvent


@dataclass(frozen=True)
class Watch:
    out_since: datetime | None
    last_ts: datetime
    alarmed: bool


def step(watch: Watch | None, out: bool, ts: datetime, for_s: float) -> tuple[Watch, bool]:
    """The rule's state after a reading taken at `ts`, and whether it raises its alarm now."""
    if watch is not None and ts < watch.last_ts:
        return watch, False  # late reading: neither starts nor breaks the streak
    if not out:
        return Watch(out_since=None, last_ts=ts, alarmed=False), False
    since = watch.out_since if watch is not None and watch.out_since is not None else ts
    alarmed = watch.alarmed if watch is not None else False
    fire = not alarmed and (ts - since).total_seconds() >= for_s
    return Watch(out_since=since, last_ts=ts, alarmed=alarmed or fire), fire


@dataclass(frozen=True)
class Check:
    """One reading against one rule: which alarm, whether it is out, the duration it needs, what to report."""

    rule: str
    alarm_type: alarms.AlarmType
    out: bool
    for_s: float
    details: dict[str, Any]


def checks_for(event_type: str, value: dict[str, Any] | None, lat: float | None, lon: float | None,
               battery: int | None, device_id: str, settings: ElderMonitoring | None, low_battery: int
               ) -> list[Check]:
    out: list[Check] = []
    if settings is not None and event_type == "heart_rate" and value is not None:
        bpm = value["bpm"]
        low, high = settings.heart_rate_min, settings.heart_rate_max
        if low is not None or high is not None:
            outside = (low is not None and bpm < low) or (high is not None and bpm > high)
            out.append(Check("heart_rate", "heart_rate", outside, settings.heart_rate_for_s,
                             {"bpm": bpm, "min": low, "max": high}))
    if settings is not None and event_type == "spo2" and value is not None and settings.spo2_min is not None:
        percent = value["percent"]
        out.append(Check("spo2", "spo2", percent < settings.spo2_min, settings.spo2_for_s,
                         {"percent": percent, "min": settings.spo2_min}))
    zone = settings.safe_zone if settings is not None else None
    if zone and event_type == "location" and lat is not None and lon is not None:
        out.append(Check("geofence", "geofence", not geofence.contains(zone, lat, lon), zone.get("for_s", 0),
                         {"lat": lat, "lon": lon, "zone": zone["type"]}))
    if battery is not None:
        out.append(Check(f"battery:{device_id}"[:80], "low_battery", battery < low_battery, 0,
                         {"battery": battery, "threshold": low_battery}))
    return out


def _state(watch: Watch | None) -> tuple[datetime | None, bool]:
    return (None, False) if watch is None else (watch.out_since, watch.alarmed)


async def evaluate(session: AsyncSession, rt: Runtime, events: Sequence[NewEvent]) -> None:
    """Apply the rules to a batch's new events: one query for settings, one for states, one upsert."""
    vitals = [e for e in events if e.event.type in ("heart_rate", "spo2", "location")]
    # battery: an info alarm without a duration, so only each device's newest reading of the batch matters
    newest_battery: dict[str, NewEvent] = {}
    for item in events:
        if item.event.battery is not None:
            seen = newest_battery.get(item.device.device_id)
            if seen is None or item.event.ts >= seen.event.ts:
                newest_battery[item.device.device_id] = item
    if not vitals and not newest_battery:
        return
    settings: dict[uuid.UUID, ElderMonitoring] = {}
    if vitals:
        settings = {m.elder_id: m for m in (await session.scalars(select(ElderMonitoring).where(
            ElderMonitoring.elder_id.in_({e.device.elder_id for e in vitals})))).all()}
    threshold = rt.settings.devices.low_battery_percent
    planned: list[tuple[NewEvent, Check]] = []
    for item in sorted([e for e in vitals if e.device.elder_id in settings], key=lambda e: e.event.ts):
        ev = item.event
        for check in checks_for(ev.type, ev.value, ev.lat, ev.lon, None, item.device.device_id,
                                settings.get(item.device.elder_id), threshold):
            planned.append((item, check))
    for item in newest_battery.values():
        # a good reading of a device whose watch is not in a low streak changes nothing: no state to read
        planned += [(item, check) for check in checks_for("battery", None, None, None, item.event.battery,
                                                          item.device.device_id, None, threshold)
                    if check.out or item.device.battery_out]
    if not planned:
        return
    keys = {(item.device.elder_id, check.rule) for item, check in planned}
    watches: dict[tuple[uuid.UUID, str], Watch] = {
        (w.elder_id, w.rule): Watch(w.out_since, w.last_ts, w.alarmed)
        for w in (await session.scalars(select(RuleWatch).where(
            tuple_(RuleWatch.elder_id, RuleWatch.rule).in_(sorted(keys, key=str))).with_for_update())).all()}
    changed: dict[tuple[uuid.UUID, str], Watch] = {}
    for item, check in planned:
        key = (item.device.elder_id, check.rule)
        current = changed.get(key, watches.get(key))
        after, fire = step(current, check.out, item.event.ts, check.for_s)
        if _state(after) != _state(current) or key in changed:  # in range and staying there writes nothing
            changed[key] = after
        if fire:
            since = after.out_since or item.event.ts
            await alarms.raise_alarm(session, rt, alarms.Trigger(
                elder_id=item.device.elder_id, region_code=item.device.region_code, type=check.alarm_type,
                source="device", received_at=item.received_at, device_id=item.device.device_id,
                source_event_id=item.event.event_id, device_ts=item.event.ts,
                details={**check.details, "out_since": since.isoformat()}, home=item.device.home))
    if changed:
        rows = [{"elder_id": elder_id, "rule": rule, "out_since": w.out_since, "last_ts": w.last_ts,
                 "alarmed": w.alarmed} for (elder_id, rule), w in changed.items()]
        statement = pg_insert(RuleWatch).values(rows)
        await session.execute(statement.on_conflict_do_update(
            index_elements=[RuleWatch.elder_id, RuleWatch.rule],
            set_={"out_since": statement.excluded.out_since, "last_ts": statement.excluded.last_ts,
                  "alarmed": statement.excluded.alarmed}))

