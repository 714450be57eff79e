"""Downlink commands (`vnh/v1/devices/{id}/commands`, QoS 1): a queue in PostgreSQL with status, sent by the gateway.

queued → sent (published; the broker acknowledged) → acknowledged (the device's `command_ack`), or expired after
`devices.command_ttl`. Commands are queued in the transaction that causes them (an alarm acknowledged) or by an
outbox consumer (an order accepted), idempotently by their `cause`; the sender publishes after commit, re-sends
what is unacknowledged when the device reports `{"online": true}` and after `command_resend_after`.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from prometheus_client import Counter
from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from devices.models import DeviceCommand
from devices.protocol import topic_for
from kernel.outbox import emit
from kernel.runtime import Runtime

log = logging.getLogger("vnh.devices.commands")

CommandType = Literal["notify", "alarm_ack", "config"]
SENT = Counter("vnh_device_commands_sent_total", "Downlink commands published", ["type"])


class Downlink(Protocol):
    async def publish(self, topic: str, payload: bytes, *, qos: int = 1,
                      timeout: float = 10.0) -> None: ...  # noqa: ASYNC109


async def queue_command(session: AsyncSession, rt: Runtime, device_id: str, kind: CommandType,
                        fields: dict[str, Any], *, cause: str) -> uuid.UUID | None:
    """Queue a command for a device; answers its id, or None when this cause already queued one."""
    now = rt.clock.now()
    command_id = uuid.uuid4()
    inserted = await session.scalar(pg_insert(DeviceCommand).values(
        id=command_id, device_id=device_id, type=kind, body=fields, status="queued", cause=cause[:120],
        created_at=now, expires_at=now + rt.settings.devices.command_ttl, send_count=0,
    ).on_conflict_do_nothing(index_elements=[DeviceCommand.cause]).returning(DeviceCommand.id))
    if inserted is None:
        return None
    emit(session, rt.clock, "devices.command.queued", str(command_id),
         {"command_id": str(command_id), "device_id": device_id, "type": kind, "status": "queued"})
    return command_id


def message_of(command: DeviceCommand) -> bytes:
    return json.dumps({"command_id": str(command.id), "type": command.type, **command.body},
                      ensure_ascii=False).encode()


async def record_ack(session: AsyncSession, rt: Runtime, device_id: str, command_id: str) -> bool:
    """The device executed a command (`command_ack`); answers whether it was one of its open commands."""
    try:
        cid = uuid.UUID(command_id)
    except ValueError:
        log.warning("device %s acknowledged %r, which is no command id", device_id, command_id)
        return False
    command = await session.scalar(select(DeviceCommand).where(
        DeviceCommand.id == cid, DeviceCommand.device_id == device_id).with_for_update())
    if command is None or command.status == "acknowledged":
        return command is not None
    command.status, command.acknowledged_at = "acknowledged", rt.clock.now()
    emit(session, rt.clock, "devices.command.acknowledged", str(command.id),
         {"command_id": str(command.id), "device_id": device_id, "type": command.type, "status": "acknowledged"})
    return True


async def expire_commands(session: AsyncSession, rt: Runtime) -> int:
    expired = (await session.execute(update(DeviceCommand).where(
        DeviceCommand.status.in_(("queued", "sent")), DeviceCommand.expires_at <= rt.clock.now(),
    ).values(status="expired").returning(DeviceCommand.id, DeviceCommand.device_id, DeviceCommand.type))).all()
    for command_id, device_id, kind in expired:
        emit(session, rt.clock, "devices.command.expired", str(command_id),
             {"command_id": str(command_id), "device_id": device_id, "type": kind, "status": "expired"})
    return len(expired)


async def due_commands(session: AsyncSession, rt: Runtime, *, limit: int = 200,
                       device_ids: list[str] | None = None) -> list[DeviceCommand]:
    """Commands to publish now, locked: queued ones, and sent ones unacknowledged for longer than
    `command_resend_after` — of online devices, or of `device_ids` (which just came online: an early delivery, which
    never re-sends a command whose resend is not due, so each goes out once per (device, command id) until then)."""
    from devices.models import Device

    now = rt.clock.now()
    resend_before = now - rt.settings.devices.command_resend_after
    query = select(DeviceCommand).join(Device, Device.device_id == DeviceCommand.device_id).where(
        DeviceCommand.expires_at > now, Device.status == "active")
    query = query.where(DeviceCommand.device_id.in_(device_ids) if device_ids is not None else Device.online, or_(
        DeviceCommand.status == "queued", (DeviceCommand.status == "sent") & (DeviceCommand.sent_at < resend_before)))
    query = query.order_by(DeviceCommand.created_at).limit(limit).with_for_update(of=DeviceCommand,
                                                                                   skip_locked=True)
    return list((await session.scalars(query)).all())


@dataclass(frozen=True, slots=True)
class _Claim:
    id: uuid.UUID
    device_id: str
    type: str
    message: bytes
    status: str  # before the claim, to put back if the publish fails
    sent_at: datetime | None
    send_count: int


async def send_due(rt: Runtime, downlink: Downlink, *, device_ids: list[str] | None = None) -> int:
    """Publish due commands (QoS 1, waiting for the broker's acknowledgement).

    The commands are marked sent and committed *before* they are published: a crash (kill -9) after a publish can
    then never send the same command again before its resend is due — at worst a claimed command that was not yet
    published waits `command_resend_after`. A publish that fails puts its command (and those after it) back."""
    now = rt.clock.now()
    async with rt.database.unit_of_work() as session:
        due = await due_commands(session, rt, device_ids=device_ids)
        claims = [_Claim(c.id, c.device_id, c.type, message_of(c), c.status, c.sent_at, c.send_count) for c in due]
        for command in due:
            command.status, command.sent_at, command.send_count = "sent", now, command.send_count + 1
    sent = 0
    for index, claim in enumerate(claims):
        try:
            await downlink.publish(topic_for(claim.device_id, "commands"), claim.message)
        except (ConnectionError, TimeoutError) as exc:
            log.warning("command %s to %s not sent (%s); it stays queued", claim.id, claim.device_id, exc)
            await _unclaim(rt, claims[index:], now)
            break
        SENT.labels(claim.type).inc()
        sent += 1
    return sent


async def _unclaim(rt: Runtime, claims: list[_Claim], claimed_at: datetime) -> None:
    async with rt.database.unit_of_work() as session:
        for claim in claims:  # only if nothing happened to it since (a command_ack, another claim)
            await session.execute(update(DeviceCommand).where(
                DeviceCommand.id == claim.id, DeviceCommand.status == "sent",
                DeviceCommand.sent_at == claimed_at, DeviceCommand.send_count == claim.send_count + 1,
            ).values(status=claim.status, sent_at=claim.sent_at, send_count=claim.send_count))
