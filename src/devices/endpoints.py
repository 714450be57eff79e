from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from devices import configuration, health, registry, repository, schemas
from devices.alarm_endpoints import router as alarm_router
from devices.credentials import check_device_token
from devices.emqx import router as emqx_router
from devices.ingest import Inbound, dead_letter_row, ingest_batch, store_dead_letters
from devices.protocol import DEVICE_ID, Rejection
from kernel.audit import record_audit
from kernel.authz import Access, may
from kernel.errors import Unauthenticated
from kernel.http import CipherDep, ClockDep, RuntimeDep, SessionDep, authorize, error_body

router = APIRouter(tags=["devices"])

RegisterDevice = Annotated[Access, Depends(authorize("devices.register"))]
ReadDevices = Annotated[Access, Depends(authorize("devices.read"))]
RevokeDevice = Annotated[Access, Depends(authorize("devices.revoke"))]
ReadDeadLetters = Annotated[Access, Depends(authorize("devices.dead_letters"))]
ConfigureDevice = Annotated[Access, Depends(authorize("devices.configure"))]


@router.post("/v1/devices", response_model=schemas.DeviceRegistered, status_code=201)
async def register_device(data: schemas.DeviceCreate, session: SessionDep, clock: ClockDep, cipher: CipherDep,
                          runtime: RuntimeDep, access: RegisterDevice) -> schemas.DeviceRegistered:
    """The token in the answer is shown once: it is the device's MQTT password and HTTP bearer token. With a
    Mosquitto admin configured, the device is created on the running broker within seconds (dynsec)."""
    device, token = await registry.register_device(
        session, clock, cipher, access, data,
        keep_for_broker=bool(runtime.settings.devices.mosquitto_admin_username))
    return schemas.DeviceRegistered(device_id=device.device_id, kind=data.kind, elder_id=str(device.elder_id),
                                    token=token)


@router.get("/v1/devices/{device_id}", response_model=schemas.Device)
async def get_device(device_id: str, session: SessionDep, access: ReadDevices) -> schemas.Device:
    return registry.to_schema(await registry.load_device(session, access, device_id))


@router.post("/v1/devices/{device_id}/revoke", response_model=schemas.Device)
async def revoke_device(device_id: str, session: SessionDep, clock: ClockDep, access: RevokeDevice) -> schemas.Device:
    device = await registry.revoke_device(session, clock, access, device_id)
    await session.refresh(device)
    return registry.to_schema(device)


def _bearer(request: Request) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthenticated("expected 'Authorization: Bearer <device token>'", code="invalid_device_token")
    return value.strip()


@router.post(
    "/v1/devices/{device}/events", status_code=202, response_model=schemas.EventAccepted,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": schemas.EventIn.model_json_schema(ref_template="#/components/schemas/{model}")}}}},
    responses={401: {"description": "no or wrong device token, or the device is revoked"},
               403: {"description": "the token belongs to another device (dead-lettered)"},
               422: {"description": "not a valid protocol v1 event (dead-lettered with its reason)"}},
)
async def post_device_event(device: str, request: Request, session: SessionDep, runtime: RuntimeDep
                            ) -> JSONResponse:
    """The HTTP alternative to MQTT for devices and gateways: the same event object, the same handling.

    The device token is the bearer token. Answers 202 `{event_id, duplicate}`; a repeat of an event is accepted
    again as a duplicate and changes nothing."""
    token = _bearer(request)
    body = await request.body()
    received_at = runtime.clock.now()
    # an id no device can have (NUL, '/', too long …) is looked up as none: PostgreSQL text cannot even hold a NUL
    check = await check_device_token(session, runtime.cipher, device if DEVICE_ID.match(device) else "", token)
    if check.verdict == "other_device":
        message = Inbound(device_id=device, kind="events", payload=body, received_at=received_at, channel="http",
                          topic=f"POST /v1/devices/{device}/events")
        rejection = Rejection("topic_mismatch", f"device {check.device_id} posted as {device}")
        await store_dead_letters(session, [dead_letter_row(message, rejection, None)])
        return JSONResponse(status_code=403, content=error_body(
            "device_mismatch", "this token belongs to another device", {"reason": rejection.reason}))
    if check.verdict != "ok":
        raise Unauthenticated("unknown device, wrong token or revoked device", code="invalid_device_token")
    message = Inbound(device_id=device, kind="events", payload=body, received_at=received_at, channel="http")
    outcome = (await ingest_batch(session, runtime, [message]))[0]
    if outcome.rejected:
        rejection = outcome.rejected[0]
        return JSONResponse(status_code=422, content=error_body(
            "invalid_event", f"{rejection.reason}: {rejection.detail}",
            {"reason": rejection.reason, "detail": rejection.detail}))
    accepted = outcome.accepted[0]
    answer: dict[str, object] = {"event_id": accepted.event_id, "duplicate": accepted.duplicate}
    if outcome.notes and outcome.notes[0]:
        answer["note"] = outcome.notes[0]  # e.g. clock_skew: stored, but the device's clock is far off
    return JSONResponse(status_code=202, content=answer)


@router.get("/v1/devices/{device_id}/events", response_model=schemas.Page)
async def list_device_events(device_id: str, session: SessionDep, cipher: CipherDep, clock: ClockDep,
                             access: ReadDevices,
                             type_: Annotated[str | None, Query(alias="type")] = None,
                             from_: Annotated[datetime | None, Query(alias="from")] = None,
                             to: datetime | None = None, cursor: str | None = None, limit: int = 100
                             ) -> schemas.Page:
    """Stored events of a device, newest first, as received plus `received_at`. Vital signs and positions
    (`value`, `lat`, `lon`) only for roles holding `health.read`; for others they are null and `redacted` true."""
    device = await registry.load_device(session, access, device_id)
    rows, next_cursor = await repository.device_events(session, device.device_id, type_=type_, from_=from_, to=to,
                                                       cursor=cursor, limit=limit)
    allowed = may(access.principal, "health.read")  # vital signs and positions; others see them withheld
    items = []
    for r in rows:
        value, lat, lon = (health.unseal(cipher, r.health_enc, r.value, r.lat, r.lon) if allowed
                           else (None, None, None))
        items.append(schemas.StoredEvent(event_id=r.event_id, type=r.type, ts=r.ts, received_at=r.received_at,
                                         lat=lat, lon=lon, battery=r.battery, seq=r.seq, value=value,
                                         channel=r.channel, note=r.note, redacted=not allowed))
    shown = sum(1 for i in items if i.value is not None or i.lat is not None)
    if shown and access.role != "elder":  # staff reading an elder's vital signs or whereabouts: audited (design §5)
        await record_audit(session, clock, access, "device.events.read", "device", device.device_id,
                           {"elder_id": str(device.elder_id), "events_with_health_data": shown, "type": type_})
    return schemas.Page(items=items, next_cursor=next_cursor)


@router.get("/v1/dead-letters", response_model=schemas.Page)
async def list_dead_letters(session: SessionDep, access: ReadDeadLetters,
                            from_: Annotated[datetime | None, Query(alias="from")] = None,
                            cursor: str | None = None, limit: int = 100) -> schemas.Page:
    """Messages devices sent that vnh could not accept, with the reason, newest first."""
    rows, next_cursor = await repository.dead_letters(session, access, from_=from_, cursor=cursor, limit=limit)
    health = may(access.principal, "health.read")  # a rejected payload may still carry vitals or a position
    items = [schemas.DeadLetter(id=r.id, received_at=r.received_at, channel=r.channel, topic=r.topic,
                                device_id=r.device_id, reason=r.reason, detail=r.detail,
                                payload=r.payload if health else None, payload_size=r.payload_size,
                                redacted=not health) for r in rows]
    return schemas.Page(items=items, next_cursor=next_cursor)


@router.put("/v1/devices/{device_id}/buttons", response_model=schemas.ButtonMap)
async def map_buttons(device_id: str, data: schemas.ButtonMap, session: SessionDep, clock: ClockDep,
                      access: ConfigureDevice) -> schemas.ButtonMap:
    """Which service each call button orders for the device's elder (replaces the whole mapping)."""
    device = await configuration.map_buttons(session, clock, access, device_id, data.root)
    return schemas.ButtonMap(device.buttons)


router.include_router(alarm_router)
router.include_router(emqx_router)
