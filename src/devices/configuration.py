"""Per-device and per-elder settings: call-button mapping and monitoring (safe ranges, safe zone, heartbeat)."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devices import geofence, schemas
from devices.models import Device, ElderMonitoring
from devices.registry import load_device
from kernel.audit import record_audit
from kernel.authz import Access
from kernel.clock import Clock
from kernel.errors import Unprocessable
from kernel.runtime import Runtime
from orders.elders import load_elder
from orders.models import ServiceType
from orders.service import EMERGENCY

BUTTON = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


async def map_buttons(session: AsyncSession, clock: Clock, access: Access, device_id: str,
                      mapping: dict[str, str]) -> Device:
    device = await load_device(session, access, device_id, for_update=True)
    bad = [b for b in mapping if not BUTTON.match(b)]
    if bad:
        raise Unprocessable(f"button codes are 1-32 letters, digits, '_', '.', '-': {bad[0]!r}",
                            code="invalid_button")
    codes = set(mapping.values())
    known = set((await session.scalars(select(ServiceType.code).where(ServiceType.code.in_(codes),
                                                                       ServiceType.active))).all())
    unknown = sorted(codes - known)
    if unknown:
        raise Unprocessable(f"unknown service {unknown[0]!r}", code="unknown_service")
    if EMERGENCY in codes:
        raise Unprocessable("emergencies are the SOS button's: map a service", code="unknown_service")
    device.buttons = dict(sorted(mapping.items()))
    await record_audit(session, clock, access, "device.buttons", "device", device.device_id,
                       {"buttons": device.buttons})
    return device


async def get_monitoring(session: AsyncSession, access: Access, elder_id: str) -> ElderMonitoring | None:
    elder = await load_elder(session, access, elder_id)
    return await session.get(ElderMonitoring, elder.id)


async def put_monitoring(session: AsyncSession, rt: Runtime, access: Access, elder_id: str,
                         data: schemas.Monitoring) -> ElderMonitoring:
    """Replace an elder's monitoring settings; the elder's devices get the new heartbeat and safe zone as a
    `config` command."""
    from devices import commands

    elder = await load_elder(session, access, elder_id, for_update=True)
    zone = geofence.normalise(data.safe_zone.model_dump()) if data.safe_zone else None
    if zone is not None and zone["type"] == "polygon":
        problem = geofence.polygon_problem(zone["points"])
        if problem:
            raise Unprocessable(problem, code="invalid_safe_zone")
    now = rt.clock.now()
    settings = await session.get(ElderMonitoring, elder.id, with_for_update=True)
    if settings is None:
        settings = ElderMonitoring(elder_id=elder.id)
        session.add(settings)
    hr, spo2 = data.heart_rate, data.spo2
    settings.heart_rate_min, settings.heart_rate_max = (hr.min, hr.max) if hr else (None, None)
    settings.heart_rate_for_s = hr.for_s if hr else 0
    settings.spo2_min, settings.spo2_for_s = (spo2.min, spo2.for_s) if spo2 else (None, 0)
    settings.safe_zone, settings.heartbeat_s = zone, data.heartbeat_s
    settings.updated_at, settings.updated_by = now, access.actor_id
    await session.flush()
    await record_audit(session, rt.clock, access, "elder.monitoring", "elder", elder.id, {
        "heart_rate": bool(hr), "spo2": bool(spo2), "safe_zone": zone["type"] if zone else None,
        "heartbeat_s": data.heartbeat_s})
    device_ids = (await session.scalars(select(Device.device_id).where(
        Device.elder_id == elder.id, Device.status == "active"))).all()
    for device_id in device_ids:
        await commands.queue_command(session, rt, device_id, "config", {
            "heartbeat_s": data.heartbeat_s or rt.settings.devices.heartbeat_s, "safe_zone": zone},
            cause=f"config:{device_id}:{now.isoformat()}")
    return settings


def monitoring_schema(settings: ElderMonitoring | None) -> schemas.Monitoring:
    if settings is None:
        return schemas.Monitoring()
    zone = settings.safe_zone
    safe_zone: schemas.CircleZone | schemas.PolygonZone | None = None
    if zone and zone["type"] == "circle":
        safe_zone = schemas.CircleZone(type="circle", center=schemas.Point(**zone["center"]),
                                       radius_m=zone["radius_m"], for_s=zone.get("for_s", 0))
    elif zone:
        safe_zone = schemas.PolygonZone(type="polygon", points=[schemas.Point(lat=p[0], lon=p[1])
                                                                for p in zone["points"]],
                                        for_s=zone.get("for_s", 0))
    heart_rate = None
    if settings.heart_rate_min is not None or settings.heart_rate_max is not None:
        heart_rate = schemas.HeartRateRange(min=settings.heart_rate_min, max=settings.heart_rate_max,
                                            for_s=settings.heart_rate_for_s)
    spo2 = schemas.Spo2Range(min=settings.spo2_min, for_s=settings.spo2_for_s) if settings.spo2_min else None
    return schemas.Monitoring(heart_rate=heart_rate, spo2=spo2, safe_zone=safe_zone,
                              heartbeat_s=settings.heartbeat_s)
