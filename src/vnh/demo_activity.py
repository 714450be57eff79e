"""Keeps the demo banner alive while `vnh serve --demo` runs: caregivers on duty moving around their home bases
(phones report positions every minute), a handful of open orders, and now and then an alarm from an elder's device
for the console to show. Everything goes through the real services (duty and positions through `dispatch.live`,
orders through `orders.service`, device events through `devices.ingest.ingest_batch`, the handler behind MQTT and
`POST /v1/devices/{id}/events`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select

from devices.configuration import put_monitoring
from devices.ingest import Inbound, ingest_batch
from devices.models import Alarm, Device, ElderMonitoring
from devices.schemas import HeartRateRange, Monitoring
from dispatch import live
from dispatch.models import Caregiver, Organization
from kernel.audit import SystemActor
from kernel.authz import Access
from kernel.runtime import Runtime
from orders.models import Elder, Order
from orders.service import Intake, create_order

log = logging.getLogger("vnh.demo")
ON_DUTY_SHARE = 0.7
OPEN_ORDERS = 6
MOVE_EVERY_S = 60.0
SERVICES = ("meal_assist", "daily_care", "cleaning", "walking_assist", "companionship", "home_nursing", "bathing")
ALARM_EVERY_S = 20 * 60.0  # on average one new device alarm in the region this often
MAX_OPEN_ALARMS = 6  # not resolved; beyond this the demo waits for the dispatcher
DemoAlarm = Literal["fall", "sos", "heart_rate", "low_battery"]
FIRST_ALARMS: tuple[DemoAlarm, ...] = ("fall", "heart_rate", "low_battery")  # one of each severity to start with
ALARM_WEIGHTS: dict[DemoAlarm, float] = {"low_battery": 0.35, "heart_rate": 0.35, "fall": 0.15, "sos": 0.15}
DEVICE_OF: dict[DemoAlarm, str | None] = {"fall": "wristband", "sos": "call_button", "heart_rate": "wristband",
                                          "low_battery": None}


@dataclass
class Activity:
    on_duty: int = 0
    orders_created: int = 0
    alarms_raised: int = 0


def _near(rng: random.Random, lat: float, lon: float, max_m: float) -> tuple[float, float]:
    distance, bearing = rng.uniform(0, max_m), rng.uniform(0, 2 * math.pi)
    return (lat + distance * math.cos(bearing) / 111_320,
            lon + distance * math.sin(bearing) / (111_320 * math.cos(math.radians(lat))))


async def _caregivers(rt: Runtime, region_code: str) -> list[Caregiver]:
    async with rt.database.unit_of_work() as session:
        return list((await session.scalars(
            select(Caregiver).join(Organization).where(Organization.region_code == region_code, Caregiver.active,
                                                       Caregiver.home_lat.is_not(None)).order_by(Caregiver.id))).all())


async def start_shift(rt: Runtime, region_code: str, rng: random.Random) -> int:
    """Put most caregivers of the region on duty (the rest stay off), at a position near their home base."""
    caregivers = await _caregivers(rt, region_code)
    chosen = [c for c in caregivers if rng.random() < ON_DUTY_SHARE]
    async with rt.database.unit_of_work() as session:
        for cg in chosen:
            row = await session.get(Caregiver, cg.id)
            assert row is not None
            row.on_duty, row.duty_changed_at = True, rt.clock.now()
    for cg in chosen:
        assert cg.home_lat is not None and cg.home_lon is not None
        await live.set_duty(rt, cg.id, True)
        await live.set_position(rt, cg.id, *_near(rng, cg.home_lat, cg.home_lon, 1500), rt.clock.now())
    return len(chosen)


async def keep_orders_open(rt: Runtime, region_code: str, rng: random.Random) -> int:
    """Create hotline orders until the region has a few open ones (offered, or in the dispatcher's queue)."""
    async with rt.database.unit_of_work() as session:
        open_now = int(await session.scalar(select(func.count()).select_from(Order).where(
            Order.region_code == region_code, Order.status.in_(("offered", "unfulfilled", "dispatching")))) or 0)
        elders = list((await session.scalars(select(Elder.id).where(
            Elder.region_code == region_code, Elder.status == "active").order_by(Elder.id))).all())
    created = 0
    for _ in range(max(0, OPEN_ORDERS - open_now)):
        if not elders:
            break
        async with rt.database.unit_of_work() as session:
            await create_order(session, rt, SystemActor("demo"), Intake(
                elder_id=rng.choice(elders), service_code=rng.choice(SERVICES), window="asap",
                priority="normal", channel="hotline", notes="演示订单"))
        created += 1
    return created


def _rfc3339(when: datetime) -> str:
    return when.isoformat(timespec="seconds")


async def _send(rt: Runtime, device_id: str, events: list[dict[str, Any]]) -> None:
    """Events as the device would post them (`POST /v1/devices/{id}/events`), through the one ingest handler."""
    async with rt.database.unit_of_work() as session:
        now = rt.clock.now()
        await ingest_batch(session, rt, [
            Inbound(device_id=device_id, kind="events", payload=json.dumps(event, ensure_ascii=False).encode(),
                    received_at=now, channel="http") for event in events])


def _event(kind: str, when: datetime, **fields: Any) -> dict[str, Any]:
    return {"event_id": f"demo-{uuid.uuid4().hex[:16]}", "type": kind, "ts": _rfc3339(when), **fields}


async def open_alarms(rt: Runtime, region_code: str) -> int:
    async with rt.database.unit_of_work() as session:
        return int(await session.scalar(select(func.count()).select_from(Alarm).where(
            Alarm.region_code == region_code, Alarm.status != "resolved")) or 0)


async def raise_device_alarm(rt: Runtime, region_code: str, rng: random.Random, kind: DemoAlarm) -> str | None:
    """An elder's device reports what raises an alarm of this kind: a wristband detects a fall outdoors (with its
    position), a call button's SOS at home, a heart rate above the range the family set (two readings a minute
    apart, the range's duration), a battery running low. Answers the device id, or None when no elder of the
    region without an open alarm has such a device."""
    kind_of_device = DEVICE_OF[kind]
    async with rt.database.unit_of_work() as session:
        busy = select(Alarm.elder_id).where(Alarm.status != "resolved")
        query = (select(Device.device_id, Device.elder_id, Elder.coarse_lat, Elder.coarse_lon)
                 .join(Elder, Elder.id == Device.elder_id)
                 .where(Elder.region_code == region_code, Elder.status == "active", Device.status == "active",
                        Device.elder_id.not_in(busy))
                 .order_by(Device.device_id).limit(400))
        if kind_of_device is not None:
            query = query.where(Device.kind == kind_of_device)
        candidates = (await session.execute(query)).all()
    if not candidates:
        return None
    device_id, elder_id, home_lat, home_lon = rng.choice(candidates)
    now = rt.clock.now()
    battery = rng.randint(35, 95)
    if kind == "fall":
        lat, lon = _near(rng, home_lat, home_lon, 600)  # out for a walk, around the home cell (the home is sealed)
        await _send(rt, device_id, [_event("fall", now, lat=round(lat, 6), lon=round(lon, 6), battery=battery,
                                           value={"confidence": round(rng.uniform(0.82, 0.97), 2)})])
    elif kind == "sos":
        await _send(rt, device_id, [_event("sos", now, battery=battery)])
    elif kind == "heart_rate":
        async with rt.database.unit_of_work() as session:
            if await session.get(ElderMonitoring, elder_id) is None:  # the family sets a range first
                await put_monitoring(session, rt, Access.system("demo"), str(elder_id), Monitoring(
                    heart_rate=HeartRateRange(min=50, max=110, for_s=60)))
        high = rng.randint(118, 135)
        await _send(rt, device_id, [
            _event("heart_rate", now - timedelta(seconds=70), value={"bpm": high - rng.randint(0, 5)},
                   battery=battery),
            _event("heart_rate", now, value={"bpm": high}, battery=battery)])
    else:
        await _send(rt, device_id, [_event("heartbeat", now, battery=rng.randint(5, 12))])
    return str(device_id)


async def keep_devices_alive(rt: Runtime, region_code: str) -> int:
    """A heartbeat from each device of the region that has reported before: a device the demo made speak once and
    then left silent would be reported offline by supervision a few minutes later."""
    async with rt.database.unit_of_work() as session:
        device_ids = list((await session.scalars(select(Device.device_id).join(Elder, Elder.id == Device.elder_id)
                                                 .where(Elder.region_code == region_code, Device.status == "active",
                                                        Device.last_seen_at.is_not(None))
                                                 .order_by(Device.device_id).limit(200))).all())
    now = rt.clock.now()
    for device_id in device_ids:
        await _send(rt, device_id, [_event("heartbeat", now)])
    return len(device_ids)


async def keep_alarms_coming(rt: Runtime, region_code: str, rng: random.Random, *, first: bool = False) -> int:
    """At the start, when the region has no alarm, one of each severity; afterwards now and then one more (about
    every ALARM_EVERY_S), while fewer than MAX_OPEN_ALARMS wait for the dispatcher."""
    open_now = await open_alarms(rt, region_code)
    if first:
        kinds: list[DemoAlarm] = list(FIRST_ALARMS) if open_now == 0 else []
    elif open_now < MAX_OPEN_ALARMS and rng.random() < MOVE_EVERY_S / ALARM_EVERY_S:
        kinds = rng.choices(list(ALARM_WEIGHTS), weights=list(ALARM_WEIGHTS.values()))
    else:
        kinds = []
    raised = 0
    for kind in kinds:
        device_id = await raise_device_alarm(rt, region_code, rng, kind)
        if device_id is not None:
            log.info("demo: %s reported by device %s", kind, device_id)
            raised += 1
    return raised


async def keep_alive(rt: Runtime, region_code: str, stop: asyncio.Event, *, seed: int = 11) -> None:
    rng = random.Random(seed)
    try:
        activity = Activity(on_duty=await start_shift(rt, region_code, rng),
                            orders_created=await keep_orders_open(rt, region_code, rng))
        await keep_devices_alive(rt, region_code)  # before supervision finds them silent after a restart
        activity.alarms_raised = await keep_alarms_coming(rt, region_code, rng, first=True)
        log.info("demo: %d caregivers on duty, %d orders opened, %d device alarms raised", activity.on_duty,
                 activity.orders_created, activity.alarms_raised)
    except Exception:
        log.exception("demo activity could not start")
        return
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), MOVE_EVERY_S)
        if stop.is_set():
            return
        try:
            on_duty = await live.on_duty_ids(rt)
            for cg in await _caregivers(rt, region_code):
                if cg.id in on_duty and cg.home_lat is not None and cg.home_lon is not None:
                    await live.set_position(rt, cg.id, *_near(rng, cg.home_lat, cg.home_lon, 1500), rt.clock.now())
        except Exception:
            log.exception("demo positions not updated")
        try:
            await keep_devices_alive(rt, region_code)
            activity.alarms_raised += await keep_alarms_coming(rt, region_code, rng)
        except Exception:
            log.exception("demo device activity failed")
