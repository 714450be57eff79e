"""What the platform does with a newly stored event (the protocol's right-hand column) and with a status report.

Called by the ingest inside the batch's transaction, for events seen for the first time only (a duplicate does
nothing). Domain refusals (an elder no longer active, a visit already confirmed) are logged and leave the event
stored; they never fail the batch.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from devices import alarms, commands
from devices.models import Alarm, Device
from devices.protocol import StatusReport
from kernel.audit import SystemActor
from kernel.errors import DomainError
from kernel.outbox import emit
from kernel.runtime import Runtime
from orders.models import Visit

if TYPE_CHECKING:
    from devices.ingest import DeviceState, NewEvent

log = logging.getLogger("vnh.devices.reactions")

CONFIRM_WITHIN = timedelta(hours=48)  # a confirm press without a visit id confirms a visit checked out this recently


async def apply_status(session: AsyncSession, rt: Runtime, device: DeviceState, status: StatusReport,
                       received_at: object) -> bool:
    """The retained status topic and the last will: `online` follows the newest report; answers whether it changed.

    Only a change counts: the broker replays every retained `{"online": true}` when the gateway subscribes again (a
    restart, a reconnect), and a device already online is not coming back. Coming online clears the device's
    offline alarm and sends what is queued for it (the gateway, after commit)."""
    changed = await session.scalar(
        update(Device).where(Device.device_id == device.device_id, Device.online.is_not(status.online))
        .values(online=status.online, status_at=received_at,
                **({"last_seen_at": received_at} if status.online else {}))
        .returning(Device.device_id))
    if changed is None:
        return False
    _emit_status(session, rt, device, status.online)
    if status.online:
        await clear_offline_alarm(session, rt, device.device_id)
    return True


def _emit_status(session: AsyncSession, rt: Runtime, device: DeviceState, online: bool) -> None:
    emit(session, rt.clock, f"devices.device.{'online' if online else 'offline'}", device.device_id, {
        "device_id": device.device_id, "elder_id": str(device.elder_id), "region_code": device.region_code,
        "online": online})


def announce_online(session: AsyncSession, rt: Runtime, device: DeviceState) -> None:
    """A device vnh held offline sent an event over MQTT (the ingest set `online`): said like a status report."""
    _emit_status(session, rt, device, True)


async def clear_offline_alarm(session: AsyncSession, rt: Runtime, device_id: str) -> None:
    alarm = await session.scalar(select(Alarm).where(
        Alarm.type == "device_offline", Alarm.open_key == device_id, Alarm.status != "resolved").with_for_update())
    if alarm is not None:
        await alarms.resolve_by_system(session, rt, alarm, "the device reported again")


async def _clear_offline_alarms(session: AsyncSession, rt: Runtime, device_ids: set[str]) -> None:
    """Any event proves the device is back: its device_offline alarm (if any) is resolved. One query a batch."""
    open_alarms = (await session.scalars(select(Alarm).where(
        Alarm.type == "device_offline", Alarm.status != "resolved", Alarm.open_key.in_(sorted(device_ids)))
        .with_for_update())).all()
    for alarm in open_alarms:
        await alarms.resolve_by_system(session, rt, alarm, "the device reported again")


async def react(session: AsyncSession, rt: Runtime, events: Sequence[NewEvent]) -> None:
    """Hand each new event to what its type asks for, in arrival order."""
    from devices import rules

    returned = {item.device.device_id for item in events if item.device.offline_alarm}
    if returned:
        await _clear_offline_alarms(session, rt, returned)
    await _data_lost(session, rt, events)
    for item in events:
        kind = item.event.type
        if kind in ("sos", "fall"):
            await _critical(session, rt, item)
        elif kind == "call":
            await _call(session, rt, item)
        elif kind == "cancel":
            await _cancel(session, rt, item)
        elif kind == "confirm":
            await _confirm(session, rt, item)
        elif kind == "command_ack":
            value = item.event.value or {}
            await commands.record_ack(session, rt, item.device.device_id, str(value.get("command_id")))
    await rules.evaluate(session, rt, events)


async def _data_lost(session: AsyncSession, rt: Runtime, events: Sequence[NewEvent]) -> None:
    """`seq` gaps seen in this batch: events the device numbered that never reached vnh (lost in the broker, or on
    the way). One `data_lost` alarm per device and batch, counted into the device's open one (with the sum of
    events missed); the console hears of it through the outbox like any alarm."""
    seen: dict[str, NewEvent] = {}
    for item in events:
        if item.device.gaps:
            seen.setdefault(item.device.device_id, item)
    for item in seen.values():
        device = item.device
        missed = sum(gap for _seq, gap in device.gaps)
        await alarms.raise_alarm(session, rt, alarms.Trigger(
            elder_id=device.elder_id, region_code=device.region_code, type="data_lost", source="system",
            received_at=item.received_at, device_id=device.device_id, home=device.home,
            details={"missed": missed, "gaps": [{"before_seq": seq, "missed": gap} for seq, gap in device.gaps[:20]],
                     "seq_missed_total": device.seq_missed}))


async def _critical(session: AsyncSession, rt: Runtime, item: NewEvent) -> None:
    event = item.event
    details = {"confidence": event.value.get("confidence")} if event.value and "confidence" in event.value else {}
    if event.lat is not None:
        details.update(lat=event.lat, lon=event.lon)
    await alarms.raise_alarm(session, rt, alarms.Trigger(
        elder_id=item.device.elder_id, region_code=item.device.region_code, type=event.type,  # type: ignore[arg-type]
        source="device", received_at=item.received_at, device_id=item.device.device_id,
        source_event_id=event.event_id, device_ts=event.ts, details=details, home=item.device.home))


async def _call(session: AsyncSession, rt: Runtime, item: NewEvent) -> None:
    button = str((item.event.value or {}).get("button"))
    service = item.device.buttons.get(button)
    await alarms.order_for_call(session, rt, item.device.elder_id, service, item.device.device_id, button)


async def _cancel(session: AsyncSession, rt: Runtime, item: NewEvent) -> None:
    cancelled = str((item.event.value or {}).get("event_id"))
    kind = await session.scalar(text(
        "SELECT type FROM device_events WHERE device_id = :d AND event_id = :e AND type IN ('sos', 'fall') "
        "ORDER BY received_at DESC LIMIT 1"), {"d": item.device.device_id, "e": cancelled})
    if kind is None:
        log.warning("device %s cancelled %r, which is no SOS or fall of it", item.device.device_id, cancelled)
        return
    await alarms.cancel_by_elder(session, rt, item.device.elder_id, kind, item.device.device_id, cancelled)


async def _confirm(session: AsyncSession, rt: Runtime, item: NewEvent) -> None:
    from orders import visits

    visit_id = (item.event.value or {}).get("visit_id")
    query = select(Visit).where(Visit.elder_id == item.device.elder_id, Visit.status == "completed",
                                Visit.confirmed_at.is_(None))
    if visit_id:
        try:
            query = query.where(Visit.id == uuid.UUID(str(visit_id)))
        except ValueError:
            log.warning("device %s confirmed %r, which is no visit id", item.device.device_id, visit_id)
            return
    else:
        query = query.where(Visit.check_out_at >= rt.clock.now() - CONFIRM_WITHIN)
    visit = await session.scalar(query.order_by(Visit.check_out_at.desc()).limit(1).with_for_update())
    if visit is None:
        log.info("device %s pressed confirm with no visit to confirm", item.device.device_id)
        return
    try:
        async with session.begin_nested():
            await visits.confirm(session, rt, SystemActor(f"device:{item.device.device_id}"), visit, None, None,
                                 "device")
    except DomainError as exc:
        log.info("device %s: visit %s not confirmed (%s)", item.device.device_id, visit.id, exc.code)
