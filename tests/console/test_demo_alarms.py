"""The demo's device alarms (src/vnh/demo_activity.py): raised through the real ingest, one of each severity when
the region has none, nothing more while they are open."""

from __future__ import annotations

import random

from sqlalchemy import select

from devices.models import Alarm, Device
from kernel.runtime import Runtime
from tests.factories import HANGGIN, XINI_TOWN, create_elder, offset, register_device
from vnh.demo_activity import keep_alarms_coming, keep_devices_alive


async def test_the_demo_raises_one_alarm_of_each_severity_through_the_devices_path(runtime: Runtime) -> None:
    homes = {}
    for north in (0, 900, 1800):
        home = (offset(*XINI_TOWN, north_m=north)[0], XINI_TOWN[1])
        elder = await create_elder(runtime, lat=home[0], lon=home[1])
        homes[elder.id] = home
        await register_device(runtime, elder, kind="wristband")
        await register_device(runtime, elder)
    rng = random.Random(3)
    assert await keep_alarms_coming(runtime, HANGGIN, rng, first=True) == 3
    async with runtime.database.unit_of_work() as s:
        raised = list((await s.scalars(select(Alarm).where(Alarm.elder_id.in_(homes)))).all())
        kinds = {a.type: a for a in raised}
        assert {a.severity for a in raised} == {"critical", "warning", "info"}
        assert set(kinds) == {"fall", "heart_rate", "low_battery"}
        assert all(a.source == "device" and a.device_id and a.status == "open" for a in raised)
        assert len({a.elder_id for a in raised}) == 3  # each on a different elder
        fall = kinds["fall"]
        assert fall.order_id is not None  # a critical alarm sends out an emergency response
        position = fall.details["position"]
        assert position["from"] == "event" and (position["lat"], position["lon"]) != homes[fall.elder_id]
        assert kinds["heart_rate"].details["bpm"] > 110
        devices = {d.device_id: d for d in (await s.scalars(select(Device).where(
            Device.device_id.in_([a.device_id for a in raised])))).all()}
        assert devices[str(kinds["low_battery"].device_id)].battery is not None
        assert devices[str(kinds["low_battery"].device_id)].battery < 15
    # the region has alarms now: the start does not add more
    assert await keep_alarms_coming(runtime, HANGGIN, rng, first=True) == 0
    # the devices that spoke keep reporting (supervision would call them offline otherwise)
    assert await keep_devices_alive(runtime, HANGGIN) >= 3
