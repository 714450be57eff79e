"""SOS and fall → a critical alarm and an urgent order offered to the nearest caregivers; call buttons; the elder's
cancel; one open alarm per (elder, type) even under concurrency; acknowledge and resolve; SOS from the apps."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from devices import alarms
from devices.ingest import Inbound, ingest_batch
from devices.models import Alarm, DeviceCommand
from kernel.runtime import Runtime
from orders.models import Elder, Order
from tests.conftest import login_headers
from tests.factories import (
    HANGGIN,
    XINI_TOWN,
    create_caregiver,
    create_elder,
    create_organization,
    offset,
    on_duty,
    register_device,
)

TS = "2026-03-02T09:00:00+08:00"


class Scene:
    def __init__(self, rt: Runtime, client: httpx.AsyncClient, elder: Elder, device_id: str, token: str,
                 dispatcher: dict[str, str]) -> None:
        self.rt, self.client, self.elder, self.device_id, self.token = rt, client, elder, device_id, token
        self.dispatcher = dispatcher
        self._n = 0

    async def send(self, kind: str, value: dict[str, Any] | None = None, event_id: str | None = None
                   ) -> dict[str, Any]:
        self._n += 1
        body: dict[str, Any] = {"event_id": event_id or f"{kind}-{self._n}", "type": kind, "ts": TS}
        if value is not None:
            body["value"] = value
        response = await self.client.post(f"/v1/devices/{self.device_id}/events", json=body,
                                          headers={"Authorization": f"Bearer {self.token}"})
        assert response.status_code == 202, response.text
        return body

    async def alarms(self, **query: str) -> list[dict[str, Any]]:
        response = await self.client.get("/v1/alarms", params=query, headers=self.dispatcher)
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    async def order(self, order_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/orders/{order_id}", headers=self.dispatcher)
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest.fixture
async def scene(runtime: Runtime, client: httpx.AsyncClient) -> Scene:
    elder = await create_elder(runtime, lat=XINI_TOWN[0], lon=XINI_TOWN[1])
    device_id, token = await register_device(runtime, elder)
    organization = await create_organization(runtime)
    for metres in (300, 800, 1500, 2500, 4000):
        caregiver = await create_caregiver(runtime, organization)
        await on_duty(runtime, caregiver, *offset(*XINI_TOWN, north_m=metres))
    dispatcher = await login_headers(runtime, "dispatcher", region_code=HANGGIN)
    return Scene(runtime, client, elder, device_id, token, dispatcher)


async def offers_of(rt: Runtime, order_id: str) -> list[tuple[str, float]]:
    async with rt.database.unit_of_work() as s:
        rows = await s.execute(text("select status, distance_m from offers where order_id = :o order by distance_m"),
                               {"o": order_id})
        return [(r[0], r[1]) for r in rows]


async def test_a_device_sos_raises_a_critical_alarm_and_an_urgent_order_to_the_three_nearest(scene: Scene) -> None:
    await scene.send("sos")
    [alarm] = await scene.alarms(status="open")
    assert alarm["type"] == "sos" and alarm["severity"] == "critical" and alarm["device_id"] == scene.device_id
    assert alarm["count"] == 1 and alarm["source"] == "device" and alarm["order_id"]
    order = await scene.order(alarm["order_id"])
    assert order["service_code"] == "emergency_response" and order["priority"] == "urgent"
    assert order["status"] == "offered" and order["channel"] == "device" and order["price_fen"] == 0
    offers = await offers_of(scene.rt, alarm["order_id"])
    assert [status for status, _d in offers] == ["pending"] * 3
    assert max(d for _s, d in offers) < 2000  # the three nearest of five


async def test_repeats_count_into_the_open_alarm_and_a_fall_joins_the_emergency_already_out(scene: Scene) -> None:
    await scene.send("sos")
    await scene.send("sos")  # another press: another event id, the same alarm
    await scene.send("fall", {"confidence": 0.9})
    found = {a["type"]: a for a in await scene.alarms()}
    assert found["sos"]["count"] == 2 and found["fall"]["count"] == 1
    assert found["sos"]["order_id"] == found["fall"]["order_id"]
    async with scene.rt.database.unit_of_work() as s:
        orders = await s.scalar(select(text("count(*)")).select_from(Order).where(Order.elder_id == scene.elder.id))
    assert orders == 1


async def test_two_sos_at_once_in_two_transactions_make_one_alarm(committed_runtime: Runtime) -> None:
    rt = committed_runtime
    elder = await create_elder(rt)
    device_a, _ = await register_device(rt, elder)
    device_b, _ = await register_device(rt, elder, kind="wristband")
    # both transactions are open (each has run a statement) before either stores its SOS
    both_open = asyncio.Barrier(2)

    async def press(device_id: str) -> None:
        async with rt.database.unit_of_work() as session:
            await session.execute(text("select 1"))
            await asyncio.wait_for(both_open.wait(), 30)
            await ingest_batch(session, rt, [Inbound(device_id=device_id, kind="events", received_at=rt.clock.now(),
                                                     payload=f'{{"event_id": "s-{device_id}", "type": "sos", '
                                                             f'"ts": "{TS}"}}'.encode())])

    tasks = [asyncio.create_task(press(d)) for d in (device_a, device_b)]
    await asyncio.gather(*tasks)
    async with rt.database.unit_of_work() as s:
        rows = (await s.scalars(select(Alarm).where(Alarm.elder_id == elder.id))).all()
        orders = await s.scalar(select(text("count(*)")).select_from(Order).where(Order.elder_id == elder.id))
    assert len(rows) == 1 and rows[0].count == 2 and orders == 1


async def test_a_call_button_orders_its_mapped_service_and_otherwise_a_hotline_call_back(
        scene: Scene, admin_headers: dict[str, str]) -> None:
    mapped = await scene.client.put(f"/v1/devices/{scene.device_id}/buttons", json={"1": "meal_assist"},
                                    headers=scene.dispatcher)
    assert mapped.status_code == 200 and mapped.json() == {"1": "meal_assist"}
    refused = await scene.client.put(f"/v1/devices/{scene.device_id}/buttons", json={"1": "teleportation"},
                                     headers=scene.dispatcher)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "unknown_service"
    await scene.send("call", {"button": "1"})
    await scene.send("call", {"button": "2"})
    async with scene.rt.database.unit_of_work() as s:
        orders = {o.service_code: o for o in (await s.scalars(select(Order).where(
            Order.elder_id == scene.elder.id))).all()}
    assert set(orders) == {"meal_assist", "hotline_callback"}
    assert orders["meal_assist"].priority == "normal" and orders["meal_assist"].channel == "device"
    assert orders["hotline_callback"].status == "unfulfilled"  # the dispatcher's queue, never offered
    assert await scene.alarms() == []


async def test_the_elders_cancel_keeps_the_alarm_calls_off_the_order_and_queues_a_call_back(scene: Scene) -> None:
    sos = await scene.send("sos")
    await scene.send("cancel", {"event_id": sos["event_id"]})
    [alarm] = await scene.alarms()
    assert alarm["status"] == "open" and alarm["cancelled_by_elder_at"] is not None
    assert (await scene.order(alarm["order_id"]))["status"] == "cancelled"
    callback = await scene.order(alarm["callback_order_id"])
    assert callback["service_code"] == "hotline_callback" and callback["status"] == "unfulfilled"
    assert {s for s, _d in await offers_of(scene.rt, alarm["order_id"])} == {"withdrawn"}


async def test_acknowledge_then_resolve_and_the_device_is_told(scene: Scene) -> None:
    await scene.send("fall")
    [alarm] = await scene.alarms(status="open")
    url = f"/v1/alarms/{alarm['id']}"
    early = await scene.client.post(f"{url}/resolve", json={"outcome": "assisted"}, headers=scene.dispatcher)
    assert early.status_code == 409 and early.json()["error"]["code"] == "invalid_state"
    acked = await scene.client.post(f"{url}/ack", headers=scene.dispatcher)
    assert acked.status_code == 200 and acked.json()["status"] == "acknowledged"
    assert acked.json()["acknowledged_at"] is not None and acked.json()["acknowledged_by"].startswith("user:")
    assert (await scene.client.post(f"{url}/ack", headers=scene.dispatcher)).status_code == 409
    async with scene.rt.database.unit_of_work() as s:
        command = await s.scalar(select(DeviceCommand).where(DeviceCommand.device_id == scene.device_id))
    assert command is not None and command.type == "alarm_ack" and command.body == {"alarm_id": alarm["id"]}
    assert command.status == "queued"
    resolved = await scene.client.post(f"{url}/resolve", json={"outcome": "false_alarm", "notes": "pressed by a cat"},
                                       headers=scene.dispatcher)
    assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
    assert resolved.json()["outcome"] == "false_alarm"
    # resolved: the next fall is a new alarm
    await scene.send("fall")
    assert len(await scene.alarms(type="fall")) == 2


async def test_alarms_outside_the_region_are_not_found(scene: Scene) -> None:
    await scene.send("sos")
    [alarm] = await scene.alarms()
    elsewhere = await login_headers(scene.rt, "dispatcher", region_code="654002")
    assert (await scene.client.post(f"/v1/alarms/{alarm['id']}/ack", headers=elsewhere)).status_code == 404
    listed = await scene.client.get("/v1/alarms", headers=elsewhere)
    assert listed.json()["items"] == []


async def test_sos_from_the_family_app_and_the_hotline(scene: Scene) -> None:
    family = await login_headers(scene.rt, "elder", elder_ids=[scene.elder.id])
    first = await scene.client.post(f"/v1/elders/{scene.elder.id}/sos", json={}, headers=family)
    assert first.status_code == 201, first.text
    assert first.json()["source"] == "app" and first.json()["order_id"]
    again = await scene.client.post(f"/v1/elders/{scene.elder.id}/sos", json={"notes": "老人来电求助"},
                                    headers=scene.dispatcher)
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"] and again.json()["count"] == 2
    other = await create_elder(scene.rt)
    assert (await scene.client.post(f"/v1/elders/{other.id}/sos", headers=family)).status_code == 404
    order = await scene.order(first.json()["order_id"])
    assert order["channel"] == "app" and order["priority"] == "urgent"


async def test_an_alarm_for_an_elder_no_longer_active_stays_for_the_dispatcher(runtime: Runtime) -> None:
    elder = await create_elder(runtime)
    async with runtime.database.unit_of_work() as s:
        row = await s.get(Elder, elder.id)
        assert row is not None
        row.status = "deceased"
    async with runtime.database.unit_of_work() as s:
        alarm, created = await alarms.raise_alarm(s, runtime, alarms.Trigger(
            elder_id=elder.id, region_code=elder.region_code, type="sos", source="hotline",
            received_at=runtime.clock.now()))
    assert created and alarm.order_id is None and alarm.details["emergency_response_refused"] == "elder_inactive"
