"""Downlink triggers and delivery: the `notify` that tells an elder a caregiver is coming, and the sender loop.

`order_assigned_consumer` is an outbox publisher (the relay hands it every batch of committed events): for each
`orders.order.assigned` it queues a `notify` command for each active device of the elder, in a transaction of its
own and idempotently (the command's cause is the outbox id and the device), so a relay that publishes a batch twice
queues nothing twice. Dispatch code is not touched: the event is the interface.

`CommandSender` publishes due commands through the gateway: woken when a command is queued (the relay sees
`devices.command.queued`) or a device reports `{"online": true}`, and every second for re-sends and expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devices import commands
from devices.models import Device
from kernel.outbox import OutboxEvent, Publisher
from kernel.runtime import Runtime
from orders.models import Order

log = logging.getLogger("vnh.devices.downlink")


async def notify_text(session: AsyncSession, rt: Runtime, order: Order, caregiver_id: uuid.UUID | None) -> str:
    """"护理员李娜已接单，预计8分钟到达" for asap orders; the visit's time for scheduled ones."""
    from dispatch.models import Caregiver, Offer

    caregiver = await session.get(Caregiver, caregiver_id) if caregiver_id else None
    who = f"护理员{caregiver.name}" if caregiver is not None else "护理员"
    if not order.asap:
        local = order.window_start.astimezone(rt.settings.tz)
        return f"{who}已接单，将于{local.month}月{local.day}日{local:%H:%M}上门服务"
    distance = await session.scalar(select(Offer.distance_m).where(
        Offer.order_id == order.id, Offer.caregiver_id == caregiver_id, Offer.status == "accepted"))
    if distance is None:
        return f"{who}已接单，正在赶来"
    minutes = max(1, math.ceil(distance / 1000 / rt.settings.devices.eta_speed_kmh * 60))
    return f"{who}已接单，预计{minutes}分钟到达"


async def queue_notify_for_assignment(rt: Runtime, event: OutboxEvent) -> int:
    order_id = uuid.UUID(event.payload["order_id"])
    caregiver = event.payload.get("caregiver_id")
    async with rt.database.unit_of_work() as session:
        order = await session.get(Order, order_id)
        if order is None:
            return 0
        device_ids = (await session.scalars(select(Device.device_id).where(
            Device.elder_id == order.elder_id, Device.status == "active").order_by(Device.device_id))).all()
        if not device_ids:
            return 0
        text = await notify_text(session, rt, order, uuid.UUID(caregiver) if caregiver else None)
        queued = 0
        for device_id in device_ids:
            queued += await commands.queue_command(session, rt, device_id, "notify", {"text": text, "tts": True},
                                                   cause=f"outbox:{event.id}:{device_id}") is not None
    return queued


def order_assigned_consumer(rt: Runtime, on_queued: asyncio.Event | None = None) -> Publisher:
    async def consume(events: Sequence[OutboxEvent]) -> None:
        for event in events:
            if event.event_type == "orders.order.assigned":
                await queue_notify_for_assignment(rt, event)
                if on_queued is not None:
                    on_queued.set()
            elif event.event_type == "devices.command.queued" and on_queued is not None:
                on_queued.set()

    return consume


class CommandSender:
    """Publishes due commands through the gateway; `wake()` to send at once, `online(ids)` after devices return."""

    def __init__(self, rt: Runtime, downlink: commands.Downlink) -> None:
        self.rt = rt
        self.downlink = downlink
        self.wakeup = asyncio.Event()
        self._returned: set[str] = set()

    def wake(self) -> None:
        self.wakeup.set()

    def online(self, device_ids: Sequence[str]) -> None:
        self._returned.update(device_ids)
        self.wakeup.set()

    async def send_once(self) -> int:
        sent = 0
        if self._returned:
            returned, self._returned = sorted(self._returned), set()
            sent += await commands.send_due(self.rt, self.downlink, device_ids=returned)
        sent += await commands.send_due(self.rt, self.downlink)
        async with self.rt.database.unit_of_work() as session:
            await commands.expire_commands(session, self.rt)
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.wakeup.clear()
            try:
                await self.send_once()
            except Exception:
                log.exception("command sender failed; retrying")
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wakeup.wait())]
            await asyncio.wait(waiters, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
