"""Downlink commands: `notify` when an order is accepted (an outbox consumer), `alarm_ack`, delivery over MQTT with
the device's `command_ack` recorded, waiting while a device is away, expiry."""

from __future__ import annotations

import asyncio
import contextlib
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
    sender_task: asyncio.Task[None] | None = None
    elder = await create_elder(rt)
    device_id, token = await register_device(rt, elder)
    device = DeviceClient(broker.address, device_id, token, on_command=acknowledge_commands)
    try:
        async with rt.database.unit_of_work() as s:
            await commands.queue_command(s, rt, device_id, "notify", {"text": "护理员已接单", "tts": True},
                                         cause="test:away")
        assert await workers.sender.send_once() == 0  # a whole pass of the sender: nothing for a device never seen
        assert [c.status for c in await commands_of(rt, device_id)] == ["queued"]
        sender_task = asyncio.create_task(workers.sender.run(stop))
        await asyncio.to_thread(device.connect)  # reports {"online": true}: the gateway wakes the sender
        await eventually(lambda: _status(rt, device_id, "acknowledged"), what="delivered on return")
        assert device.commands[0]["text"] == "护理员已接单"
    finally:
        stop.set()
        if sender_task is not None:
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


async def test_a_device_that_never_reports_online_gets_its_commands_once_it_sends_an_event(
        committed_runtime: Runtime, machine_mqtt: str, gateways: GatewayFactory) -> None:
    """Devices behind a gateway (and many others) never publish `{"online": true}`: an event over MQTT proves the
    device is connected, and what is queued for it goes out."""
    from devices.tasks import DeviceWorkers

    rt = committed_runtime
    broker = Broker(machine_mqtt, shared=True)
    workers = DeviceWorkers(rt, gateway=await gateways(broker))
    assert workers.sender is not None
    stop = asyncio.Event()
    sender_task = asyncio.create_task(workers.sender.run(stop))
    elder = await create_elder(rt)
    device_id, token = await register_device(rt, elder)
    device = DeviceClient(broker.address, device_id, token, on_command=acknowledge_commands)
    try:
        async with rt.database.unit_of_work() as s:
            await commands.queue_command(s, rt, device_id, "notify", {"text": "护理员已接单", "tts": True},
                                         cause="test:no-status")
        await asyncio.to_thread(device.connect, report_online=False)  # no status, ever
        await asyncio.to_thread(device.send, "heartbeat")
        await eventually(lambda: _status(rt, device_id, "acknowledged"), what="delivered after the event")
        assert [c["type"] for c in device.commands] == ["notify"]
        assert await _online(rt, device_id)()
    finally:
        stop.set()
        await sender_task
        await asyncio.to_thread(device.close, report_offline=False)


async def test_a_command_goes_out_once_across_a_restart_whose_retained_status_replay_changes_nothing(
        committed_runtime: Runtime, machine_mqtt: str, gateways: GatewayFactory) -> None:
    """Issue 13 item 19 against the machine's Mosquitto: alarm_ack sent, the service's gateway goes away and comes
    back with the same client id; on re-subscribing, the broker replays every retained `{"online": true}`. A device
    already online is not coming back: nothing is sent again until its resend is due."""
    from devices.tasks import DeviceWorkers

    rt = committed_runtime
    assert isinstance(rt.clock, ManualClock)
    broker = Broker(machine_mqtt, shared=True)
    first = await gateways(broker)
    client_id = first.client_id
    sender = CommandSender(rt, first)
    first.on_online = sender.online
    elder = await create_elder(rt)
    device_id, token = await register_device(rt, elder)
    device = DeviceClient(broker.address, device_id, token)  # a device that has not answered yet: no command_ack
    marker_id, marker_token = await register_device(rt, elder)
    marker = DeviceClient(broker.address, marker_id, marker_token)
    try:
        await asyncio.to_thread(device.connect)
        await eventually(_online(rt, device_id), what="device online")
        async with rt.database.unit_of_work() as s:
            command_id = await commands.queue_command(s, rt, device_id, "alarm_ack", {"alarm_id": "a-19"},
                                                      cause="test:restart")
        assert await sender.send_once() == 1
        await eventually(lambda: _received(device, "alarm_ack", 1), what="alarm_ack delivered")

        await first.stop(drain_timeout=0.5)  # the service goes away; the device stays connected (and online)
        second = await gateways(broker, client_id=client_id)  # ... and returns: the broker replays retained status
        workers = DeviceWorkers(rt, gateway=second)
        assert workers.sender is not None
        restarted = workers.sender
        # barrier: a status published after the re-subscription is applied after the replayed ones (one queue)
        await asyncio.to_thread(marker.connect)
        await eventually(_online(rt, marker_id), what="marker device online")
        assert await restarted.send_once() == 0  # the replay woke nothing
        # barrier for the device: a later command arrives after any duplicate would have
        async with rt.database.unit_of_work() as s:
            await commands.queue_command(s, rt, device_id, "notify", {"text": "护理员已出发", "tts": True},
                                         cause="test:restart-barrier")
        assert await restarted.send_once() == 1
        await eventually(lambda: _received(device, "notify", 1), what="the barrier command delivered")
        assert [c["type"] for c in device.commands] == ["alarm_ack", "notify"]
        [ack] = [c for c in await commands_of(rt, device_id) if c.type == "alarm_ack"]
        assert ack.send_count == 1 and str(ack.id) == str(command_id)
        # the resend, when due, still happens: once per resend period
        rt.clock.advance(rt.settings.devices.command_resend_after + timedelta(seconds=1))
        assert await restarted.send_once() == 2  # both unacknowledged commands are re-sent once
        await eventually(lambda: _received(device, "alarm_ack", 2), what="the due resend")
    finally:
        for client in (device, marker):
            await asyncio.to_thread(client.clear_retained_status)
            await asyncio.to_thread(client.close, report_offline=False)


async def _received(device: DeviceClient, kind: str, times: int) -> bool:
    return sum(1 for c in device.commands if c.get("type") == kind) >= times


async def test_an_early_delivery_picks_queued_commands_not_sent_ones_whose_resend_is_not_due(
        runtime: Runtime) -> None:
    elder = await create_elder(runtime)
    device_id, _ = await register_device(runtime, elder)
    async with runtime.database.unit_of_work() as s:
        sent = await commands.queue_command(s, runtime, device_id, "alarm_ack", {"alarm_id": "a"}, cause="t:sent")
        queued = await commands.queue_command(s, runtime, device_id, "notify", {"text": "x", "tts": False},
                                              cause="t:queued")
        command = await s.get(DeviceCommand, sent)
        assert command is not None
        command.status, command.sent_at, command.send_count = "sent", runtime.clock.now(), 1
    async with runtime.database.unit_of_work() as s:
        due = await commands.due_commands(s, runtime, device_ids=[device_id])
        assert [c.id for c in due] == [queued]
    assert isinstance(runtime.clock, ManualClock)
    runtime.clock.advance(runtime.settings.devices.command_resend_after + timedelta(seconds=1))
    async with runtime.database.unit_of_work() as s:
        due = await commands.due_commands(s, runtime, device_ids=[device_id])
        assert {c.id for c in due} == {sent, queued}


class Killed(BaseException):
    """The process dying (kill -9) at a chosen point: nothing after it runs, no handler catches it."""


class DiesAfterPublishing:
    """The real gateway's publish (the broker has acknowledged, the device gets the command), then the process
    dies before anything else runs: the window between the broker's PUBACK and the commit of `sent`."""

    def __init__(self, gateway: commands.Downlink) -> None:
        self.gateway = gateway

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        await self.gateway.publish(topic, payload, qos=qos, timeout=timeout)
        raise Killed


async def test_a_crash_right_after_the_broker_took_a_command_does_not_send_it_again(
        committed_runtime: Runtime, machine_mqtt: str, gateways: GatewayFactory) -> None:
    rt = committed_runtime
    broker = Broker(machine_mqtt, shared=True)
    gateway = await gateways(broker)
    elder = await create_elder(rt)
    device_id, token = await register_device(rt, elder)
    device = DeviceClient(broker.address, device_id, token)
    try:
        await asyncio.to_thread(device.connect)
        await eventually(_online(rt, device_id), what="device online")
        async with rt.database.unit_of_work() as s:
            await commands.queue_command(s, rt, device_id, "alarm_ack", {"alarm_id": "a-kill"}, cause="test:kill")
        with contextlib.suppress(Killed):
            await commands.send_due(rt, DiesAfterPublishing(gateway))
        await eventually(lambda: _received(device, "alarm_ack", 1), what="delivered before the crash")
        assert await CommandSender(rt, gateway).send_once() == 0  # the restarted service: not due again
        [command] = await commands_of(rt, device_id)
        assert (command.status, command.send_count) == ("sent", 1)
    finally:
        await asyncio.to_thread(device.clear_retained_status)
        await asyncio.to_thread(device.close, report_offline=False)
