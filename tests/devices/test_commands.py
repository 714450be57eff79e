"""Downlink commands: `notify` when an order is accepted (an outbox consumer), `alarm_ack`, delivery over MQTT with
the device's `command_ack` recorded, waiting while a device is away, expiry."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from devices import commands
from devices.downlink import CommandSender, order_assigned_consumer
from devices.models import DeviceCommand
from devices.simulator import DeviceClient, acknowledge_commands
from kernel.clock import ManualClock
from kernel.outbox import OutboxEvent
from kernel.runtime import Runtime
from tests.conftest import login_headers
from tests.devices.conftest import Broker, GatewayFactory, eventually
from tests.factories import (
    HANGGIN,
    XINI_TOWN,
    caregiver_headers,
    create_caregiver,
    create_elder,
    create_organization,
    offset,
    on_duty,
    register_device,
)
from vnh.workers import build_relay


async def commands_of(rt: Runtime, device_id: str) -> list[DeviceCommand]:
    async with rt.database.unit_of_work() as s:
        return list((await s.scalars(select(DeviceCommand).where(DeviceCommand.device_id == device_id)
                                     .order_by(DeviceCommand.created_at))).all())


async def test_an_accepted_order_tells_the_elders_devices_who_comes_and_when(runtime: Runtime,
                                                                           client: httpx.AsyncClient) -> None:
    elder = await create_elder(runtime, lat=XINI_TOWN[0], lon=XINI_TOWN[1])
    button, _ = await register_device(runtime, elder)
    band, _ = await register_device(runtime, elder, kind="wristband")
    caregiver = await create_caregiver(runtime, await create_organization(runtime), name="李娜")
    await on_duty(runtime, caregiver, *offset(*XINI_TOWN, north_m=1200))
    dispatcher = await login_headers(runtime, "dispatcher", region_code=HANGGIN)
    order = await client.post("/v1/orders", json={"elder_id": str(elder.id), "service_code": "daily_care",
                                                  "channel": "hotline"}, headers=dispatcher)
    assert order.status_code == 201, order.text
    headers = await caregiver_headers(runtime, caregiver)
    [offer] = (await client.get("/v1/caregivers/me/offers", headers=headers)).json()["items"]
    assert (await client.post(f"/v1/offers/{offer['id']}/accept", headers=headers)).status_code == 200
    consumer = order_assigned_consumer(runtime)
    relay = build_relay(runtime, [consumer])
    while await relay.relay_once():
        pass
    for device_id in (button, band):
        [notify] = await commands_of(runtime, device_id)
        assert notify.type == "notify" and notify.status == "queued"
        assert notify.body == {"text": "护理员李娜已接单，预计4分钟到达", "tts": True}
    # the relay may hand the same events again (a crash before it marked them): nothing is queued twice
    async with runtime.database.unit_of_work() as s:
        events = list((await s.scalars(select(OutboxEvent).where(
            OutboxEvent.event_type == "orders.order.assigned"))).all())
    await consumer(events)
    assert len(await commands_of(runtime, button)) == 1


async def test_commands_reach_the_device_over_mqtt_and_its_ack_is_recorded(
        committed_runtime: Runtime, broker: Broker, gateways: GatewayFactory) -> None:
    rt = committed_runtime
    gateway = await gateways(broker)
    elder = await create_elder(rt)
    device_id, token = await register_device(rt, elder)
    device = DeviceClient(broker.address, device_id, token, on_command=acknowledge_commands)
    await asyncio.to_thread(device.connect)
    try:
        await eventually(_online(rt, device_id), what="device online")
        async with rt.database.unit_of_work() as s:
            command_id = await commands.queue_command(s, rt, device_id, "alarm_ack", {"alarm_id": "a-1"},
                                                      cause="test:ack")
        sender = CommandSender(rt, gateway)
        assert await sender.send_once() == 1
        await eventually(lambda: _status(rt, device_id, "acknowledged"), what="command_ack recorded")
        [received] = device.commands
        assert received == {"command_id": str(command_id), "type": "alarm_ack", "alarm_id": "a-1"}
    finally:
        await asyncio.to_thread(device.clear_retained_status)
        await asyncio.to_thread(device.close, report_offline=False)


def _online(rt: Runtime, device_id: str) -> Any:
    async def check() -> bool:
        async with rt.database.unit_of_work() as s:
            from devices.models import Device

            device = await s.get(Device, device_id)
            return bool(device and device.online)

    return check


async def _status(rt: Runtime, device_id: str, status: str) -> bool:
    return [c.status for c in await commands_of(rt, device_id)] == [status]


async def test_a_command_for_a_device_that_is_away_waits_and_goes_out_when_it_returns(
        committed_runtime: Runtime, machine_mqtt: str, gateways: GatewayFactory) -> None:
    from devices.tasks import DeviceWorkers

    rt = committed_runtime
    broker = Broker(machine_mqtt, shared=True)
    gateway = await gateways(broker)
    workers = DeviceWorkers(rt, gateway=gateway)
    assert workers.sender is not None
    stop = asyncio.Event()
    sender_task = asyncio.create_task(workers.sender.run(stop))
    elder = await create_elder(rt)
    device_id, token = await register_device(rt, elder)
    device = DeviceClient(broker.address, device_id, token, on_command=acknowledge_commands)
    try:
        async with rt.database.unit_of_work() as s:
            await commands.queue_command(s, rt, device_id, "notify", {"text": "护理员已接单", "tts": True},
                                         cause="test:away")
        workers.sender.wake()
        await asyncio.sleep(0.5)
        assert [c.status for c in await commands_of(rt, device_id)] == ["queued"]  # never seen online
        await asyncio.to_thread(device.connect)  # reports {"online": true}: the gateway wakes the sender
        await eventually(lambda: _status(rt, device_id, "acknowledged"), what="delivered on return")
        assert device.commands[0]["text"] == "护理员已接单"
    finally:
        stop.set()
        await sender_task
        await asyncio.to_thread(device.clear_retained_status)
        await asyncio.to_thread(device.close, report_offline=False)


async def test_unacknowledged_commands_expire(runtime: Runtime) -> None:
    elder = await create_elder(runtime)
    device_id, _ = await register_device(runtime, elder)
    async with runtime.database.unit_of_work() as s:
        await commands.queue_command(s, runtime, device_id, "notify", {"text": "x", "tts": False}, cause="t:exp")
    assert isinstance(runtime.clock, ManualClock)
    runtime.clock.advance(runtime.settings.devices.command_ttl + timedelta(seconds=1))
    async with runtime.database.unit_of_work() as s:
        assert await commands.expire_commands(s, runtime) == 1
    assert [c.status for c in await commands_of(runtime, device_id)] == ["expired"]
