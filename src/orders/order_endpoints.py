"""Orders and visits over HTTP: intake, reads, cancellation; the caregiver's visit steps; confirmations and the
dispatcher's exception queue."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from kernel.authz import Access
from kernel.errors import NotFound
from kernel.fields import AwareTime, CountyCode, Crs, Latitude, Longitude
from kernel.http import RuntimeDep, SessionDep, authorize
from kernel.ids import parse_id
from kernel.pagination import Page
from kernel.proxies import client_address
from kernel.runtime import Runtime
from orders import elders, schemas, service, visits
from orders.models import Order, Visit, VisitFlag
from orders.state import queue_reason

router = APIRouter(tags=["orders"])
VisitFlagName = Literal["far_check_in", "too_short", "overlap", "no_confirmation", "impossible_travel"]

CreateOrders = Annotated[Access, Depends(authorize("orders.create"))]
ReadOrders = Annotated[Access, Depends(authorize("orders.read"))]
ReadQueue = Annotated[Access, Depends(authorize("orders.queue.read"))]
CancelOrders = Annotated[Access, Depends(authorize("orders.cancel"))]
WorkVisits = Annotated[Access, Depends(authorize("visits.work"))]
ReadVisits = Annotated[Access, Depends(authorize("visits.read"))]
ConfirmVisits = Annotated[Access, Depends(authorize("visits.confirm"))]
ReadExceptions = Annotated[Access, Depends(authorize("visits.exceptions.read"))]
ResolveExceptions = Annotated[Access, Depends(authorize("visits.exceptions.resolve"))]


@router.post("/v1/orders", response_model=schemas.Order, status_code=201)
async def create_order(data: schemas.OrderCreate, session: SessionDep, runtime: RuntimeDep, access: CreateOrders,
                       response: Response,
                       idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None
                       ) -> schemas.Order:
    """Same `Idempotency-Key` and body: the same order (200); same key, other body: 409 `idempotency_conflict`."""
    service.check_priority_allowed(access, data.priority)
    elder_id = parse_id(data.elder_id, "elder")
    channel = data.channel
    if access.principal.role == "caregiver":
        # a caregiver orders on behalf of an elder it has served, ever (decisions §2), and says so in the channel
        cg = parse_id(access.principal.caregiver_id or "", "caregiver")
        if cg not in await visits.previous_caregivers(session, elder_id):
            raise NotFound("elder not found")
        channel = "caregiver"
    else:
        from orders.elders import load_elder

        await load_elder(session, access, data.elder_id)
    intake = service.Intake(elder_id=elder_id, service_code=data.service_code, window=data.window,
                            priority=data.priority, channel=channel, notes=data.notes)
    order, created = await service.create_order(session, runtime, access, intake, idempotency_key=idempotency_key)
    if not created:
        response.status_code = 200
    return service.to_schema(order, await service.history(session, order.id))


@router.get("/v1/orders", response_model=Page[schemas.OrderListItem])
async def list_orders(session: SessionDep, access: ReadOrders,
                      status: Annotated[str | None, Query(max_length=12)] = None,
                      elder_id: Annotated[str | None, Query(max_length=40)] = None,
                      from_: Annotated[AwareTime | None, Query(alias="from")] = None,
                      to: Annotated[AwareTime | None, Query()] = None,
                      cursor: Annotated[str | None, Query(max_length=200)] = None,
                      limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Page[schemas.OrderListItem]:
    """List items leave out `history`: `GET /v1/orders/{id}` has it."""
    rows, next_cursor = await service.list_orders(session, access, status=status, elder_id=elder_id, from_=from_,
                                                  to=to, cursor=cursor, limit=limit)
    return Page(items=[service.to_list_item(o) for o in rows], next_cursor=next_cursor)


@router.get("/v1/dispatch/queue", response_model=Page[schemas.QueueItem])
async def dispatcher_queue(session: SessionDep, access: ReadQueue,
                           region_code: Annotated[CountyCode | None, Query()] = None,
                           cursor: Annotated[str | None, Query(max_length=200)] = None,
                           limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Page[schemas.QueueItem]:
    """The dispatcher's queue: `unfulfilled` orders of the caller's region, newest first, each with why it waits
    (`reason`) and since when (`queued_at`)."""
    rows, next_cursor = await service.dispatcher_queue(session, access, region_code=region_code, cursor=cursor,
                                                       limit=limit)
    return Page(items=[schemas.QueueItem(order=service.to_list_item(o), reason=queue_reason(detail), detail=detail,
                                         queued_at=at) for o, detail, at in rows], next_cursor=next_cursor)


@router.get("/v1/orders/{order_id}", response_model=schemas.Order)
async def get_order(order_id: str, session: SessionDep, access: ReadOrders) -> schemas.Order:
    order = await service.visible_order(session, access, order_id)
    return service.to_schema(order, await service.history(session, order.id))


@router.post("/v1/orders/{order_id}/cancel", response_model=schemas.Order)
async def cancel_order(order_id: str, data: schemas.CancelRequest, session: SessionDep, runtime: RuntimeDep,
                       access: CancelOrders) -> schemas.Order:
    order = await service.cancel_order(session, runtime, access, order_id, data.reason)
    return service.to_schema(order, await service.history(session, order.id))


# --- visits -----------------------------------------------------------------------------------------------------

class VisitOut(BaseModel):
    id: str
    order_id: str
    caregiver_id: str
    elder_id: str
    service_code: str
    status: str
    window_start: datetime
    window_end: datetime
    departed_at: datetime | None
    check_in_at: datetime | None
    check_in_distance_m: float | None
    check_out_at: datetime | None
    duration_min: int | None
    tasks_done: list[str]
    outcome: str | None
    confirmed_at: datetime | None
    rating: int | None
    flags: list[str]
    open_flags: list[str]
    billing: str
    elder_home: schemas.HomePoint | None = Field(
        default=None, description="the elder's exact home, only to the visit's caregiver while the visit is active "
                                  "(assigned, en route, in service); staff use the reveal endpoint")


class CheckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lat: Latitude
    lon: Longitude
    crs: Crs = "wgs84"


class CheckOut(CheckIn):
    tasks_done: list[str] = Field(default_factory=list, max_length=50)
    notes: str | None = Field(default=None, max_length=2000)
    outcome: Literal["completed", "elder_absent", "aborted"] = "completed"


class Confirmation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rating: int | None = Field(default=None, ge=1, le=5)
    comment: str | None = Field(default=None, max_length=1000)


class Withdrawal(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500)


class FlagResolution(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["approved", "rejected"]
    reason: str = Field(min_length=2, max_length=500)


def _visit_out(visit: Visit, flags: list[VisitFlag]) -> VisitOut:
    return VisitOut(
        id=str(visit.id), order_id=str(visit.order_id), caregiver_id=str(visit.caregiver_id),
        elder_id=str(visit.elder_id), service_code=visit.service_code, status=visit.status,
        window_start=visit.window_start, window_end=visit.window_end, departed_at=visit.departed_at,
        check_in_at=visit.check_in_at, check_in_distance_m=visit.check_in_distance_m,
        check_out_at=visit.check_out_at, duration_min=visit.duration_min, tasks_done=visit.tasks_done,
        outcome=visit.outcome, confirmed_at=visit.confirmed_at, rating=visit.rating,
        flags=sorted(f.flag for f in flags), open_flags=sorted(f.flag for f in flags if f.decision is None),
        billing=visit.billing,
    )


ACTIVE_VISIT = ("assigned", "en_route", "in_service")


async def _out(session: SessionDep, visit: Visit, runtime: Runtime | None = None,
               access: Access | None = None) -> VisitOut:
    """The visit; with `runtime` and `access`, the exact home too if the caller is its caregiver and it is active."""
    await session.flush()
    out = _visit_out(visit, (await visits.flags_of(session, [visit.id]))[visit.id])
    if runtime is not None and access is not None and access.role == "caregiver" \
            and access.principal.caregiver_id == str(visit.caregiver_id) and visit.status in ACTIVE_VISIT:
        lat, lon = await elders.home_for_visit(session, runtime.clock, runtime.cipher, access, visit.elder_id,
                                               visit.id)
        out.elder_home = schemas.HomePoint(lat=lat, lon=lon)
    return out


@router.get("/v1/caregivers/me/visits", response_model=Page[VisitOut])
async def my_visits(session: SessionDep, access: WorkVisits,
                    status: Annotated[str | None, Query(max_length=12)] = None) -> Page[VisitOut]:
    cg = parse_id(access.principal.caregiver_id or "", "caregiver")
    query = select(Visit).where(Visit.caregiver_id == cg)
    if status:
        query = query.where(Visit.status == status)
    rows = list((await session.scalars(query.order_by(Visit.window_start.desc()).limit(200))).all())
    flags = await visits.flags_of(session, [v.id for v in rows])
    return Page(items=[_visit_out(v, flags[v.id]) for v in rows])


@router.get("/v1/visits/exceptions", response_model=Page[VisitOut])
async def exception_queue(session: SessionDep, access: ReadExceptions,
                          region_code: Annotated[str | None, Query(max_length=12)] = None,
                          flag: Annotated[VisitFlagName | None, Query()] = None) -> Page[VisitOut]:
    """Visits with an unresolved flag in the caller's region, oldest first."""
    query = (select(Visit).join(Order, Order.id == Visit.order_id)
             .where(access.region_clause(Order.region_code),
                    select(VisitFlag.visit_id).where(VisitFlag.visit_id == Visit.id, VisitFlag.decision.is_(None),
                                                     *( [VisitFlag.flag == flag] if flag else [])).exists()))
    if region_code:
        query = query.where(Order.region_code == region_code)
    rows = list((await session.scalars(query.order_by(Visit.check_in_at).limit(500))).all())
    flags = await visits.flags_of(session, [v.id for v in rows])
    return Page(items=[_visit_out(v, flags[v.id]) for v in rows])


@router.get("/v1/visits/{visit_id}", response_model=VisitOut)
async def get_visit(visit_id: str, session: SessionDep, runtime: RuntimeDep, access: ReadVisits) -> VisitOut:
    return await _out(session, await visits.own_visit(session, access, visit_id, for_update=False), runtime, access)


@router.post("/v1/visits/{visit_id}/depart", response_model=VisitOut)
async def depart(visit_id: str, session: SessionDep, runtime: RuntimeDep, access: WorkVisits) -> VisitOut:
    return await _out(session, await visits.depart(session, runtime, access, visit_id), runtime, access)


@router.post("/v1/visits/{visit_id}/check-in", response_model=VisitOut)
async def check_in(visit_id: str, data: CheckIn, session: SessionDep, runtime: RuntimeDep,
                   access: WorkVisits) -> VisitOut:
    return await _out(session, await visits.check_in(session, runtime, access, visit_id, data.lat, data.lon, data.crs),
                      runtime, access)


@router.post("/v1/visits/{visit_id}/check-out", response_model=VisitOut)
async def check_out(visit_id: str, data: CheckOut, session: SessionDep, runtime: RuntimeDep,
                    access: WorkVisits) -> VisitOut:
    visit = await visits.check_out(session, runtime, access, visit_id, data.lat, data.lon, data.crs,
                                   visits.check_tasks(data.tasks_done), data.notes, data.outcome)
    return await _out(session, visit)


@router.post("/v1/visits/{visit_id}/withdraw", response_model=VisitOut)
async def withdraw(visit_id: str, data: Withdrawal, session: SessionDep, runtime: RuntimeDep,
                   access: WorkVisits) -> VisitOut:
    return await _out(session, await visits.withdraw(session, runtime, access, visit_id, data.reason))


@router.post("/v1/visits/{visit_id}/confirm", response_model=VisitOut)
async def confirm(visit_id: str, data: Confirmation, session: SessionDep, runtime: RuntimeDep,
                  access: ConfirmVisits, request: Request,
                  client_device: Annotated[str | None, Header(
                      alias="X-Client-Device", max_length=64, pattern=r"^[A-Za-z0-9._:-]+$",
                      description="the app installation's id; the anomaly check groups confirmations by it")] = None,
                  ) -> VisitOut:
    """The elder or family app confirms and rates; a dispatcher records a hotline call-back's confirmation."""
    visit = await visits.own_visit(session, access, visit_id)
    via: Literal["app", "hotline"] = "app" if access.principal.role == "elder" else "hotline"
    if via == "hotline":
        source = access.actor_id
    elif client_device:
        source = f"app:{client_device}"
    else:  # no installation id: the network address and client, keyed so no raw address is stored
        seen = f"{client_address(request)}|{request.headers.get('user-agent', '')}"
        source = "net:" + runtime.cipher.blind_index(seen, context="confirmation_source")[:32]
    return await _out(session, await visits.confirm(session, runtime, access, visit, data.rating, data.comment, via,
                                                    source))


@router.post("/v1/visits/{visit_id}/flags/{flag}/resolve", response_model=VisitOut)
async def resolve_flag(visit_id: str, flag: VisitFlagName, data: FlagResolution, session: SessionDep,
                       runtime: RuntimeDep, access: ResolveExceptions) -> VisitOut:
    await visits.resolve_flag(session, runtime, access, visit_id, flag, data.decision, data.reason)
    return await _out(session, await visits.own_visit(session, access, visit_id, for_update=False))
