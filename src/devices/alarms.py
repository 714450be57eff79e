"""Alarms: raised by devices, rules, supervision or a person's SOS; acknowledged and resolved by dispatchers.

One open alarm per (elder, type) — per device for `device_offline` — is kept by the unique index
`uq_alarms_one_open` and an `INSERT … ON CONFLICT DO UPDATE`: two SOS messages milliseconds apart, in two
instances, make one alarm with count 2, never two alarms (no check-then-insert). A critical alarm creates an urgent
`emergency_response` order at once, through `orders.service.create_order`, which offers it to the K nearest on-duty
caregivers. Lifecycle: open → acknowledged (a person) → resolved with an outcome; an elder's cancel within the
device's window marks the alarm and keeps it open for a call-back.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from prometheus_client import Counter
from sqlalchemy import bindparam, literal_column, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningInsert

from devices.models import Alarm
from kernel.audit import Actor, SystemActor, record_audit
from kernel.authz import Access
from kernel.errors import DomainError, InvalidState, NotFound
from kernel.ids import parse_id
from kernel.outbox import emit
from kernel.pagination import keyset, page_of
from kernel.runtime import Runtime
from orders.models import Elder, Order
from orders.service import EMERGENCY, HOTLINE_CALLBACK, Intake, cancel_order, create_order

log = logging.getLogger("vnh.devices.alarms")

AlarmType = Literal["sos", "fall", "heart_rate", "spo2", "geofence", "low_battery", "device_offline", "data_lost"]
Source = Literal["device", "app", "hotline", "system"]
SEVERITY: dict[str, str] = {"sos": "critical", "fall": "critical", "heart_rate": "warning", "spo2": "warning",
                            "geofence": "warning", "device_offline": "warning", "low_battery": "info",
                            "data_lost": "warning"}
PER_DEVICE = frozenset({"device_offline", "data_lost"})  # one open alarm per device, not per elder
ESCALATING = frozenset({"critical", "warning"})
DEVICES = SystemActor("devices")

RAISED = Counter("vnh_alarms_raised_total", "Alarms raised", ["type", "severity"])
REPEATED = Counter("vnh_alarm_repeats_total", "Repeats folded into an open alarm", ["type"])


@dataclass(frozen=True)
class Trigger:
    elder_id: uuid.UUID
    region_code: str
    type: AlarmType
    source: Source
    received_at: datetime  # when the message reached vnh: response times count from here
    device_id: str | None = None
    source_event_id: str | None = None
    device_ts: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)
    home: tuple[float, float] | None = None  # the elder's home cell (lat, lon) when the caller already read it


def position(alarm: Alarm) -> tuple[float | None, float | None]:
    """Where the alarm is (WGS-84): the triggering event's position if it carried one, else the elder's home cell, as
    `raise_alarm` recorded them in `details["position"]`; the event's `lat`/`lon` for alarms raised before that."""
    details = alarm.details or {}
    where = details.get("position") or details
    lat, lon = where.get("lat"), where.get("lon")
    if isinstance(lat, int | float) and isinstance(lon, int | float):
        return float(lat), float(lon)
    return None, None


async def positions(session: AsyncSession, rows: list[Alarm]) -> dict[uuid.UUID, tuple[float | None, float | None]]:
    """`position` of each alarm; alarms that recorded none fall back to their elder's home cell (one query)."""
    out = {alarm.id: position(alarm) for alarm in rows}
    missing = {alarm.elder_id for alarm in rows if out[alarm.id][0] is None}
    if missing:
        homes = {r.id: (r.coarse_lat, r.coarse_lon) for r in (await session.execute(
            select(Elder.id, Elder.coarse_lat, Elder.coarse_lon).where(Elder.id.in_(missing)))).all()}
        for alarm in rows:
            if out[alarm.id][0] is None and alarm.elder_id in homes:
                out[alarm.id] = homes[alarm.elder_id]
    return out


def payload(alarm: Alarm) -> dict[str, Any]:
    lat, lon = position(alarm)
    return {"alarm_id": str(alarm.id), "elder_id": str(alarm.elder_id), "region_code": alarm.region_code,
            "device_id": alarm.device_id, "type": alarm.type, "severity": alarm.severity, "status": alarm.status,
            "count": alarm.count, "order_id": str(alarm.order_id) if alarm.order_id else None,
            "escalation_level": alarm.escalation_level, "lat": lat, "lon": lon}


def _emit(session: AsyncSession, rt: Runtime, alarm: Alarm, verb: str) -> None:
    emit(session, rt.clock, f"devices.alarm.{verb}", str(alarm.id), payload(alarm))


_RAISED_COLUMNS = ("id", "elder_id", "device_id", "region_code", "type", "severity", "status", "open_key", "source",
                   "source_event_id", "details", "count", "raised_at", "received_at", "device_ts", "last_at",
                   "escalation_level", "next_escalation_at")


def _open_statement(count_repeats: bool, *, add_missed: bool = False) -> ReturningInsert[Alarm, bool]:
    """INSERT … ON CONFLICT on the one-open-alarm index, answering the row and whether it is new; built once (the
    statement costs more CPU to construct than to run, and an SOS should not pay for that)."""
    table = Alarm.__table__
    insert = pg_insert(Alarm).values({name: bindparam(name) for name in _RAISED_COLUMNS})
    # the partial index's predicate as a literal: PostgreSQL cannot match a bound parameter to it
    elements, where = [table.c.type, table.c.open_key], text("status <> 'resolved'")
    if count_repeats:
        repeat: dict[str, Any] = {"count": table.c.count + 1, "last_at": insert.excluded.last_at}
        if add_missed:  # data_lost: the open alarm sums the events lost in every gap seen since it was raised
            repeat["details"] = text(
                "jsonb_set(alarms.details, '{missed}', to_jsonb(COALESCE((alarms.details->>'missed')::numeric, 0) "
                "+ COALESCE((excluded.details->>'missed')::numeric, 0)))")
        statement = insert.on_conflict_do_update(index_elements=elements, index_where=where, set_=repeat)
    else:
        statement = insert.on_conflict_do_nothing(index_elements=elements, index_where=where)
    return statement.returning(Alarm, literal_column("(xmax = 0)").label("created"))


_OPEN_OR_COUNT = _open_statement(count_repeats=True)
_OPEN_ONCE = _open_statement(count_repeats=False)  # device_offline: supervision asks again and again
_OPEN_OR_ADD_MISSED = _open_statement(count_repeats=True, add_missed=True)  # data_lost: each gap counts, and adds
# one emergency response per elder at a time: a fall right after an SOS joins the order already out
_EMERGENCY_UNDER_WAY = select(Order.id).where(
    Order.elder_id == bindparam("elder_id"), Order.service_code == EMERGENCY,
    Order.status.not_in(("completed", "confirmed", "cancelled"))).limit(1)


async def raise_alarm(session: AsyncSession, rt: Runtime, trigger: Trigger, *, actor: Actor = DEVICES
                      ) -> tuple[Alarm, bool]:
    """Open an alarm, or count a repeat into the open one of the same (elder, type). Answers (alarm, created).

    `device_offline` repeats are not counted (supervision checks again and again: one alarm, not one per check);
    a `data_lost` repeat (another `seq` gap of the same device) counts and adds its `details.missed`."""
    now = rt.clock.now()
    severity = SEVERITY[trigger.type]
    open_key = trigger.device_id if trigger.type in PER_DEVICE and trigger.device_id else str(trigger.elder_id)
    escalate_at = trigger.received_at + rt.settings.devices.escalate_after if severity in ESCALATING else None
    details = {**trigger.details, "position": await _trigger_position(session, trigger)}
    statement = (_OPEN_ONCE if trigger.type == "device_offline"
                 else _OPEN_OR_ADD_MISSED if trigger.type == "data_lost" else _OPEN_OR_COUNT)
    row: Any = (await session.execute(statement, {
        "id": uuid.uuid4(), "elder_id": trigger.elder_id, "device_id": trigger.device_id,
        "region_code": trigger.region_code, "type": trigger.type, "severity": severity, "status": "open",
        "open_key": open_key, "source": trigger.source, "source_event_id": trigger.source_event_id,
        "details": details, "count": 1, "raised_at": now, "received_at": trigger.received_at,
        "device_ts": trigger.device_ts, "last_at": now, "escalation_level": 0, "next_escalation_at": escalate_at,
    }, execution_options={"populate_existing": True})).first()
    if row is None:  # device_offline already open
        existing = await session.scalar(select(Alarm).where(
            Alarm.type == trigger.type, Alarm.open_key == open_key, Alarm.status != "resolved"))
        assert existing is not None
        return existing, False
    alarm, created = row
    if not created:
        REPEATED.labels(trigger.type).inc()
        _emit(session, rt, alarm, "repeated")  # re-notifies the dispatcher's console
        return alarm, False
    RAISED.labels(trigger.type, severity).inc()
    await record_audit(session, rt.clock, actor, "alarm.raise", "alarm", alarm.id, {
        "type": alarm.type, "severity": severity, "elder_id": str(alarm.elder_id), "device_id": alarm.device_id,
        "source": trigger.source}, region_code=alarm.region_code)
    if severity == "critical":
        alarm.order_id = await session.scalar(_EMERGENCY_UNDER_WAY, {"elder_id": alarm.elder_id})
        if alarm.order_id is None:
            channel: Literal["device", "app", "hotline"] = "device" if trigger.source in ("device", "system") \
                else trigger.source  # type: ignore[assignment]
            alarm.order_id = await _order_for(session, rt, alarm, actor, EMERGENCY, "urgent", channel,
                                              f"{alarm.type} alarm {alarm.id}")
    _emit(session, rt, alarm, "raised")
    return alarm, True


async def _trigger_position(session: AsyncSession, trigger: Trigger) -> dict[str, Any] | None:
    """The event's position (already WGS-84, protocol.py converts GCJ-02/BD-09) or else the elder's home cell: the
    alarm's details and outbox events are stored in clear, so they never carry the exact home (orders.home); the
    responder gets the door with the emergency order's accepted offer."""
    lat, lon = trigger.details.get("lat"), trigger.details.get("lon")
    if isinstance(lat, int | float) and isinstance(lon, int | float):
        return {"lat": float(lat), "lon": float(lon), "from": "event"}
    if trigger.home is not None:
        return {"lat": trigger.home[0], "lon": trigger.home[1], "from": "home"}
    home = (await session.execute(select(Elder.coarse_lat, Elder.coarse_lon)
                                  .where(Elder.id == trigger.elder_id))).first()
    return None if home is None else {"lat": home.coarse_lat, "lon": home.coarse_lon, "from": "home"}


async def _order_for(session: AsyncSession, rt: Runtime, alarm: Alarm, actor: Actor, service_code: str,
                     priority: Literal["normal", "urgent"], channel: Literal["device", "app", "hotline"],
                     notes: str) -> uuid.UUID | None:
    """An order for the alarm's elder; if intake refuses (elder no longer active …) the alarm stays for the
    dispatcher, with the reason noted, and the ingest goes on."""
    try:
        async with session.begin_nested():
            order, _new = await create_order(session, rt, actor, Intake(
                elder_id=alarm.elder_id, service_code=service_code, window="asap", priority=priority,
                channel=channel, notes=notes))
            return order.id
    except DomainError as exc:
        log.warning("alarm %s: no %s order (%s)", alarm.id, service_code, exc.code)
        alarm.details = {**alarm.details, f"{service_code}_refused": exc.code}
        return None


async def order_for_call(session: AsyncSession, rt: Runtime, elder_id: uuid.UUID, service_code: str | None,
                         device_id: str, button: str) -> uuid.UUID | None:
    """A call button: a normal order for the mapped service, else (or if that is refused) a hotline call-back,
    which goes to the dispatcher queue and is never offered to caregivers."""
    actor = SystemActor(f"device:{device_id}")
    for code in ([service_code] if service_code else []) + [HOTLINE_CALLBACK]:
        try:
            async with session.begin_nested():
                order, _new = await create_order(session, rt, actor, Intake(
                    elder_id=elder_id, service_code=code, window="asap", priority="normal", channel="device",
                    notes=f"call button {button} of {device_id}"))
                return order.id
        except DomainError as exc:
            log.warning("call button %s of %s: %s order refused (%s)", button, device_id, code, exc.code)
    return None


async def cancel_by_elder(session: AsyncSession, rt: Runtime, elder_id: uuid.UUID, alarm_type: str,
                          device_id: str, cancelled_event_id: str) -> Alarm | None:
    """The elder cancelled an SOS or fall within the device's window: the alarm is kept (marked, still open), the
    emergency order is called off while nobody has set out, and a call-back goes to the hotline queue."""
    alarm = await session.scalar(select(Alarm).where(
        Alarm.elder_id == elder_id, Alarm.type == alarm_type, Alarm.status != "resolved").with_for_update())
    if alarm is None:
        log.warning("cancel of %s %s by %s: no open alarm", alarm_type, cancelled_event_id, device_id)
        return None
    if alarm.cancelled_by_elder_at is not None:
        return alarm
    alarm.cancelled_by_elder_at = rt.clock.now()
    alarm.details = {**alarm.details, "cancelled_event_id": cancelled_event_id}
    actor = SystemActor(f"device:{device_id}")
    if alarm.order_id is not None:
        try:
            async with session.begin_nested():
                await cancel_order(session, rt, Access.system(f"device:{device_id}"), str(alarm.order_id),
                                   "the elder cancelled the alarm on the device")
        except DomainError as exc:  # already en route or further: the responder goes on
            log.info("alarm %s cancelled by the elder; order %s goes on (%s)", alarm.id, alarm.order_id, exc.code)
    alarm.callback_order_id = await _order_for(session, rt, alarm, actor, HOTLINE_CALLBACK, "normal", "device",
                                               f"call back: the elder cancelled {alarm.type} alarm {alarm.id}")
    await record_audit(session, rt.clock, actor, "alarm.cancel_by_elder", "alarm", alarm.id,
                       {"event_id": cancelled_event_id, "callback_order_id": str(alarm.callback_order_id)})
    _emit(session, rt, alarm, "cancelled")
    return alarm


# --- people: list, acknowledge, resolve --------------------------------------------------------------------------

async def visible_alarm(session: AsyncSession, access: Access, alarm_id: str, *, for_update: bool = False) -> Alarm:
    query = select(Alarm).where(Alarm.id == parse_id(alarm_id, "alarm"))
    if for_update:
        query = query.with_for_update()
    alarm = await session.scalar(query)
    if alarm is None:
        raise NotFound("alarm not found")
    access.ensure(what="alarm", region_code=alarm.region_code, elder_id=alarm.elder_id)
    return alarm


async def acknowledge(session: AsyncSession, rt: Runtime, access: Access, alarm_id: str) -> Alarm:
    """A person received the alarm: escalation stops, the device is told (alarm_ack) to stop its tone."""
    from devices import commands

    alarm = await visible_alarm(session, access, alarm_id, for_update=True)
    if alarm.status != "open":
        raise InvalidState(f"the alarm is {alarm.status}", details={"status": alarm.status})
    now = rt.clock.now()
    alarm.status, alarm.acknowledged_at, alarm.acknowledged_by = "acknowledged", now, access.actor_id
    alarm.next_escalation_at = None
    await record_audit(session, rt.clock, access, "alarm.acknowledge", "alarm", alarm.id, {
        "seconds_from_received": round((now - alarm.received_at).total_seconds(), 3)})
    _emit(session, rt, alarm, "acknowledged")
    if alarm.device_id is not None:
        await commands.queue_command(session, rt, alarm.device_id, "alarm_ack", {"alarm_id": str(alarm.id)},
                                     cause=f"alarm_ack:{alarm.id}")
    return alarm


async def resolve(session: AsyncSession, rt: Runtime, access: Access, alarm_id: str, outcome: str,
                  notes: str | None) -> Alarm:
    alarm = await visible_alarm(session, access, alarm_id, for_update=True)
    if alarm.status != "acknowledged":
        raise InvalidState(f"the alarm is {alarm.status}; acknowledge it first" if alarm.status == "open"
                           else f"the alarm is {alarm.status}", details={"status": alarm.status})
    alarm.status, alarm.resolved_at, alarm.resolved_by = "resolved", rt.clock.now(), access.actor_id
    alarm.outcome, alarm.notes = outcome, notes
    await record_audit(session, rt.clock, access, "alarm.resolve", "alarm", alarm.id, {"outcome": outcome})
    _emit(session, rt, alarm, "resolved")
    return alarm


async def resolve_by_system(session: AsyncSession, rt: Runtime, alarm: Alarm, notes: str) -> None:
    """A condition that cleared itself (a device back online): resolved without a person's acknowledgement."""
    alarm.status, alarm.resolved_at, alarm.resolved_by = "resolved", rt.clock.now(), DEVICES.actor_id
    alarm.outcome, alarm.notes, alarm.next_escalation_at = "other", notes, None
    await record_audit(session, rt.clock, DEVICES, "alarm.resolve", "alarm", alarm.id, {"outcome": "other",
                                                                                         "notes": notes})
    _emit(session, rt, alarm, "resolved")


async def list_alarms(session: AsyncSession, access: Access, *, status: str | None, elder_id: str | None,
                      type_: str | None, cursor: str | None, limit: int) -> tuple[list[Alarm], str | None]:
    query = select(Alarm)
    if access.scope == "own" and access.principal.role == "elder":
        query = query.where(Alarm.elder_id.in_([uuid.UUID(e) for e in access.principal.elder_ids]))
    else:
        query = query.where(access.region_clause(Alarm.region_code))
    if status:
        query = query.where(Alarm.status == status)
    if elder_id:
        query = query.where(Alarm.elder_id == parse_id(elder_id, "elder"))
    if type_:
        from devices.repository import query_text

        query = query.where(Alarm.type == query_text(type_, "type"))
    rows = list((await session.scalars(keyset(query, Alarm.raised_at, Alarm.id, cursor, limit))).all())
    return page_of(rows, limit, lambda r: (r.raised_at, r.id))
