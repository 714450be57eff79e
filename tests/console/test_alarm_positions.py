"""Where an alarm is, for the console map: the triggering event's position if it carried one (converted to WGS-84),
else the elder's home cell (~1 km: the exact home is sealed, orders.home) — in the alarm API and in the outbox payload
the console stream sends."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import select, update

from devices.models import Alarm
from kernel.geo import to_wgs84
from kernel.outbox import OutboxEvent
from kernel.runtime import Runtime
from orders.home import coarse
from tests.conftest import login_headers
from tests.factories import HANGGIN, XINI_TOWN, create_elder, offset, register_device


async def _raised_payloads(rt: Runtime) -> dict[str, dict[str, Any]]:
    async with rt.database.unit_of_work() as s:
        rows = (await s.scalars(select(OutboxEvent).where(OutboxEvent.event_type == "devices.alarm.raised"))).all()
    return {row.payload["alarm_id"]: row.payload for row in rows}


async def test_an_alarm_is_where_the_event_was_else_at_the_elders_home_cell(runtime: Runtime,
                                                                      client: httpx.AsyncClient) -> None:
    dispatcher = await login_headers(runtime, "dispatcher", region_code=HANGGIN)
    walker = await create_elder(runtime, lat=XINI_TOWN[0], lon=XINI_TOWN[1])
    device_id, token = await register_device(runtime, walker, device_id=f"t-pos-{uuid.uuid4().hex[:10]}")
    # the device geolocates through a Chinese map service: GCJ-02, which vnh converts
    gcj = offset(*XINI_TOWN, north_m=500, east_m=-300)
    sent = await client.post(f"/v1/devices/{device_id}/events", headers={"Authorization": f"Bearer {token}"}, json={
        "event_id": "sos-1", "type": "sos", "ts": "2026-03-02T09:00:00+08:00", "lat": gcj[0], "lon": gcj[1],
        "crs": "gcj02"})
    assert sent.status_code == 202, sent.text
    homebody = await create_elder(runtime, lat=XINI_TOWN[0] - 0.02, lon=XINI_TOWN[1] + 0.01)
    hotline = await client.post(f"/v1/elders/{homebody.id}/sos", headers=dispatcher)
    assert hotline.status_code == 201, hotline.text
    assert (hotline.json()["lat"], hotline.json()["lon"]) == coarse(XINI_TOWN[0] - 0.02, XINI_TOWN[1] + 0.01)

    listed = await client.get("/v1/alarms", params={"status": "open"}, headers=dispatcher)
    assert listed.status_code == 200, listed.text
    by_elder = {a["elder_id"]: a for a in listed.json()["items"]}
    wgs = to_wgs84(gcj[0], gcj[1], "gcj02")
    assert wgs != gcj  # the conversion moved the point (some hundred metres in China)
    device_alarm = by_elder[str(walker.id)]
    assert (device_alarm["lat"], device_alarm["lon"]) == (wgs[0], wgs[1])
    assert (by_elder[str(homebody.id)]["lat"], by_elder[str(homebody.id)]["lon"]) == coarse(
        XINI_TOWN[0] - 0.02, XINI_TOWN[1] + 0.01)

    payloads = await _raised_payloads(runtime)
    assert (payloads[device_alarm["id"]]["lat"], payloads[device_alarm["id"]]["lon"]) == (wgs[0], wgs[1])
    hotline_payload = payloads[hotline.json()["id"]]
    assert (hotline_payload["lat"], hotline_payload["lon"]) == coarse(XINI_TOWN[0] - 0.02, XINI_TOWN[1] + 0.01)

    # acknowledging answers the same position
    acked = await client.post(f"/v1/alarms/{device_alarm['id']}/ack", headers=dispatcher)
    assert acked.status_code == 200, acked.text
    assert (acked.json()["lat"], acked.json()["lon"]) == (wgs[0], wgs[1])


async def test_an_alarm_that_recorded_no_position_is_shown_at_the_elders_home_cell(runtime: Runtime,
                                                                             client: httpx.AsyncClient) -> None:
    """Alarms raised before positions were recorded (no `position` in their details) fall back to the home."""
    dispatcher = await login_headers(runtime, "dispatcher", region_code=HANGGIN)
    elder = await create_elder(runtime, lat=XINI_TOWN[0] + 0.03, lon=XINI_TOWN[1] - 0.01)
    raised = await client.post(f"/v1/elders/{elder.id}/sos", headers=dispatcher)
    assert raised.status_code == 201, raised.text
    async with runtime.database.unit_of_work() as s:
        await s.execute(update(Alarm).where(Alarm.id == uuid.UUID(raised.json()["id"])).values(details={}))
    got = await client.get(f"/v1/alarms/{raised.json()['id']}", headers=dispatcher)
    assert got.status_code == 200, got.text
    assert (got.json()["lat"], got.json()["lon"]) == coarse(XINI_TOWN[0] + 0.03, XINI_TOWN[1] - 0.01)
    listed = await client.get("/v1/alarms", params={"elder_id": str(elder.id)}, headers=dispatcher)
    [item] = listed.json()["items"]
    assert (item["lat"], item["lon"]) == coarse(XINI_TOWN[0] + 0.03, XINI_TOWN[1] - 0.01)


async def test_the_console_counts_open_alarms_and_todays_median_time_to_acknowledge_in_shanghai_time(
        runtime: Runtime, client: httpx.AsyncClient) -> None:
    """"Today" is the Asia/Shanghai calendar day: at 00:30 there (16:30 UTC the day before) an alarm of 23:50 the
    evening before is yesterday's, although it is the same UTC day."""
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    from kernel.clock import ManualClock

    clock = runtime.clock
    assert isinstance(clock, ManualClock)
    shanghai = ZoneInfo("Asia/Shanghai")
    clock.set(datetime(2026, 3, 1, 23, 50, tzinfo=shanghai))
    dispatcher = await login_headers(runtime, "dispatcher", region_code=HANGGIN)

    async def sos(ack_after_s: float | None) -> None:
        elder = await create_elder(runtime)
        raised = await client.post(f"/v1/elders/{elder.id}/sos", headers=dispatcher)
        assert raised.status_code == 201, raised.text
        if ack_after_s is not None:
            clock.advance(timedelta(seconds=ack_after_s))
            acked = await client.post(f"/v1/alarms/{raised.json()['id']}/ack", headers=dispatcher)
            assert acked.status_code == 200, acked.text

    await sos(20)  # yesterday evening
    clock.set(datetime(2026, 3, 2, 0, 10, tzinfo=shanghai))
    await sos(30)
    clock.set(datetime(2026, 3, 2, 0, 15, tzinfo=shanghai))
    await sos(50)
    clock.set(datetime(2026, 3, 2, 0, 20, tzinfo=shanghai))
    await sos(None)  # still open
    clock.set(datetime(2026, 3, 2, 0, 30, tzinfo=shanghai))

    snapshot = await client.get("/v1/console/snapshot", headers=dispatcher)
    assert snapshot.status_code == 200, snapshot.text
    counters = snapshot.json()["counters"]
    assert counters["open_alarms"] == 1
    assert (counters["alarms_today"], counters["acknowledged_today"], counters["ack_p50_s"]) == (3, 2, 40.0)
    assert datetime.fromisoformat(counters["since"]) == datetime(2026, 3, 2, tzinfo=shanghai)
    alone = await client.get("/v1/console/counters", headers=dispatcher)
    assert alone.status_code == 200 and {k: alone.json()[k] for k in counters if k in alone.json()} == {
        k: v for k, v in counters.items() if k in alone.json()}
    # another county's dispatcher sees none of it
    other = await login_headers(runtime, "dispatcher", region_code="150602")
    theirs = (await client.get("/v1/console/counters", headers=other)).json()
    assert (theirs["open_alarms"], theirs["alarms_today"], theirs["ack_p50_s"]) == (0, 0, None)
