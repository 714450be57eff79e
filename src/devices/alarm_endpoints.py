"""Alarms over HTTP (dispatchers): list, acknowledge, resolve; an SOS from an app or the hotline."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy.ext.asyncio import AsyncSession

from devices import alarms, configuration, schemas
from devices.models import Alarm
from kernel.authz import Access, may
from kernel.http import RuntimeDep, SessionDep, authorize
from orders.elders import load_elder

router = APIRouter(tags=["alarms"])

ReadAlarms = Annotated[Access, Depends(authorize("alarms.read"))]
RespondAlarms = Annotated[Access, Depends(authorize("alarms.respond"))]
RaiseSos = Annotated[Access, Depends(authorize("elders.sos"))]
ConfigureMonitoring = Annotated[Access, Depends(authorize("elders.monitoring"))]


def to_schema(alarm: Alarm, where: tuple[float | None, float | None] | None = None) -> schemas.Alarm:
    lat, lon = where or alarms.position(alarm)
    return schemas.Alarm(
        id=str(alarm.id), elder_id=str(alarm.elder_id), device_id=alarm.device_id, region_code=alarm.region_code,
        type=alarm.type, severity=alarm.severity, status=alarm.status, source=alarm.source,
        count=alarm.count, raised_at=alarm.raised_at, received_at=alarm.received_at, device_ts=alarm.device_ts,
        last_at=alarm.last_at, acknowledged_at=alarm.acknowledged_at, acknowledged_by=alarm.acknowledged_by,
        resolved_at=alarm.resolved_at, outcome=alarm.outcome, notes=alarm.notes,
        cancelled_by_elder_at=alarm.cancelled_by_elder_at,
        order_id=str(alarm.order_id) if alarm.order_id else None,
        callback_order_id=str(alarm.callback_order_id) if alarm.callback_order_id else None,
        escalation_level=alarm.escalation_level, lat=lat, lon=lon, details=dict(alarm.details or {}),
    )


def shown(access: Access, alarm: schemas.Alarm) -> schemas.Alarm:
    """Health data (readings, positions) only for roles holding `health.read`; others get it withheld."""
    if may(access.principal, "health.read"):
        return alarm
    return alarm.model_copy(update={"details": None, "lat": None, "lon": None, "redacted": True})


async def located(session: AsyncSession, alarm: Alarm) -> schemas.Alarm:
    return to_schema(alarm, (await alarms.positions(session, [alarm]))[alarm.id])


@router.get("/v1/alarms", response_model=schemas.Page)
async def list_alarms(session: SessionDep, access: ReadAlarms, status: schemas.AlarmStatus | None = None,
                      elder_id: str | None = None, type_: Annotated[str | None, Query(alias="type")] = None,
                      cursor: str | None = None, limit: int = 100) -> schemas.Page:
    """Alarms in the caller's region, newest first (`?status=open` for the console's queue)."""
    rows, next_cursor = await alarms.list_alarms(session, access, status=status, elder_id=elder_id, type_=type_,
                                                 cursor=cursor, limit=limit)
    where = await alarms.positions(session, rows)
    return schemas.Page(items=[shown(access, to_schema(a, where[a.id])) for a in rows], next_cursor=next_cursor)


@router.get("/v1/alarms/{alarm_id}", response_model=schemas.Alarm)
async def get_alarm(alarm_id: str, session: SessionDep, access: ReadAlarms) -> schemas.Alarm:
    return shown(access, await located(session, await alarms.visible_alarm(session, access, alarm_id)))


@router.post("/v1/alarms/{alarm_id}/ack", response_model=schemas.Alarm)
async def acknowledge_alarm(alarm_id: str, session: SessionDep, runtime: RuntimeDep,
                            access: RespondAlarms) -> schemas.Alarm:
    """A person received the alarm: escalation stops; the device stops its alarm tone (`alarm_ack`)."""
    return shown(access, await located(session, await alarms.acknowledge(session, runtime, access, alarm_id)))


@router.post("/v1/alarms/{alarm_id}/resolve", response_model=schemas.Alarm)
async def resolve_alarm(alarm_id: str, data: schemas.AlarmResolve, session: SessionDep, runtime: RuntimeDep,
                        access: RespondAlarms) -> schemas.Alarm:
    resolved = await alarms.resolve(session, runtime, access, alarm_id, data.outcome, data.notes)
    return shown(access, await located(session, resolved))


@router.post("/v1/elders/{elder_id}/sos", response_model=schemas.Alarm, status_code=201)
async def raise_sos(elder_id: str, session: SessionDep, runtime: RuntimeDep, access: RaiseSos,
                    data: schemas.SosRequest | None = None) -> schemas.Alarm:
    """The same as a device SOS: a critical alarm and an urgent emergency order offered to the nearest
    caregivers. A repeat while the alarm is open counts into it (answered with the same alarm)."""
    elder = await load_elder(session, access, elder_id)
    source: alarms.Source = "app" if access.principal.role == "elder" else "hotline"
    details = {"notes": data.notes} if data and data.notes else {}
    alarm, _created = await alarms.raise_alarm(session, runtime, alarms.Trigger(
        elder_id=elder.id, region_code=elder.region_code, type="sos", source=source,
        received_at=runtime.clock.now(), details=details), actor=access)
    return shown(access, to_schema(alarm))


@router.put("/v1/elders/{elder_id}/monitoring", response_model=schemas.Monitoring)
async def put_monitoring(elder_id: str, data: schemas.Monitoring, session: SessionDep, runtime: RuntimeDep,
                         access: ConfigureMonitoring) -> schemas.Monitoring:
    """Safe ranges (with how long a reading may stay outside before a warning alarm), the safe zone (circle or
    polygon; leaving it raises a warning) and the supervision interval of the elder's devices. Replaces the
    whole setting; the devices get it as a `config` command."""
    return configuration.monitoring_schema(
        await configuration.put_monitoring(session, runtime, access, elder_id, data))


@router.get("/v1/elders/{elder_id}/monitoring", response_model=schemas.Monitoring)
async def get_monitoring(elder_id: str, session: SessionDep, access: ConfigureMonitoring) -> schemas.Monitoring:
    return configuration.monitoring_schema(await configuration.get_monitoring(session, access, elder_id))
