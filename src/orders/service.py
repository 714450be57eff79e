"""Order intake and the order's life: one `create_order` for HTTP, MQTT and alarms alike; every status change
through `apply_event`, which enforces the state machine and records who did what when."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select, text, true
from sqlalchemy.ext.asyncio import AsyncSession

from billing import service as billing
from kernel.audit import Actor, record_audit
from kernel.authz import Access
from kernel.errors import Conflict, InvalidState, NotFound, PermissionDenied, Unprocessable
from kernel.ids import parse_id
from kernel.outbox import emit
from kernel.pagination import keyset, page_of
from kernel.runtime import Runtime
from orders import schemas
from orders.models import Elder, IdempotencyRecord, Order, OrderEvent, ServiceType
from orders.pricing import price_fen, service_month
from orders.state import HOTLINE_CALLBACK_REASON, transition

ASAP_WINDOW = timedelta(hours=2)
MAX_LEAD = timedelta(days=90)
MAX_WINDOW = timedelta(hours=12)
PAST_SLACK = timedelta(minutes=10)
EMERGENCY = "emergency_response"
HOTLINE_CALLBACK = "hotline_callback"



@dataclass(frozen=True)
class Intake:
    """An order request as every channel hands it in (HTTP body, device event, alarm)."""

    elder_id: uuid.UUID
    service_code: str
    window: schemas.Window | Literal["asap"]
    priority: Literal["normal", "urgent"]
    channel: Literal["app", "hotline", "device", "caregiver"]
    notes: str | None = None

    def fingerprint(self) -> str:
        body = {
            "elder_id": str(self.elder_id), "service_code": self.service_code, "priority": self.priority,
            "channel": self.channel, "notes": self.notes,
            "window": self.window if isinstance(self.window, str) else self.window.model_dump(mode="json"),
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


async def apply_event(session: AsyncSession, rt: Runtime, order: Order, event: str, actor: str,
                      reason: str | None = None, *, caregiver_id: uuid.UUID | None = None) -> None:
    """Move an order through the state machine (409 `invalid_state` if not allowed), with history and event."""
    previous = order.status
    order.status = transition(order.status, event)
    order.updated_at = rt.clock.now()
    session.add(OrderEvent(order_id=order.id, status=order.status, event=event, at=rt.clock.now(), actor=actor,
                           reason=reason))
    if previous != order.status or event == "offer":
        emit(session, rt.clock, f"orders.order.{order.status}", str(order.id), {
            "order_id": str(order.id), "elder_id": str(order.elder_id), "region_code": order.region_code,
            "status": order.status, "previous_status": previous, "priority": order.priority,
            "service_code": order.service_code,
            "caregiver_id": str(caregiver_id or order.assigned_caregiver_id or "") or None,
        })


def _window(rt: Runtime, intake: Intake, minutes: int) -> tuple[datetime, datetime, bool]:
    now = rt.clock.now()
    if intake.window == "asap" or intake.window.start is None:
        if intake.window != "asap" and intake.window.end is not None:
            raise Unprocessable("a window with an end needs a start", code="invalid_window")
        return now, now + max(ASAP_WINDOW, timedelta(minutes=minutes)), True
    start = intake.window.start
    end = intake.window.end or start + timedelta(minutes=minutes)
    if start < now - PAST_SLACK:
        raise Unprocessable("the window starts in the past", code="invalid_window")
    if start > now + MAX_LEAD:
        raise Unprocessable("the window starts more than 90 days ahead", code="invalid_window")
    if end <= start:
        raise Unprocessable("the window ends before it starts", code="invalid_window")
    if end - start > MAX_WINDOW:
        raise Unprocessable("a window may last at most 12 hours", code="invalid_window")
    return start, end, False


async def create_order(session: AsyncSession, rt: Runtime, actor: Actor, intake: Intake, *,
                       idempotency_key: str | None = None) -> tuple[Order, bool]:
    """Validate, price, reserve quota, record, and start dispatch. Answers the order and whether it is new.

    The same `idempotency_key` from the same caller with the same body answers the first order; with a different
    body it is 409 `idempotency_conflict`. Concurrent requests with one key are serialised by an advisory lock.
    """
    now = rt.clock.now()
    fingerprint = intake.fingerprint() if idempotency_key is not None else ""
    if idempotency_key is not None:
        if not 1 <= len(idempotency_key) <= 200:
            raise Unprocessable("Idempotency-Key must be 1-200 characters", code="invalid_idempotency_key")
        await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(
            f"{actor.actor_id}\n{idempotency_key}", 0))))
        existing = await session.get(IdempotencyRecord, (actor.actor_id, idempotency_key))
        if existing is not None:
            if existing.request_hash != fingerprint:
                raise Conflict("this Idempotency-Key was used with a different request", code="idempotency_conflict")
            order = await session.get(Order, existing.order_id)
            assert order is not None
            return order, False

    elder = await session.get(Elder, intake.elder_id)
    if elder is None:
        raise NotFound("elder not found")
    if elder.status != "active":
        raise Unprocessable(f"the elder is {elder.status}", code="elder_inactive")
    service = await session.get(ServiceType, intake.service_code)
    if service is None or not service.active:
        raise Unprocessable(f"unknown service {intake.service_code!r}", code="unknown_service")
    priority = "urgent" if service.code == EMERGENCY else intake.priority
    minutes = service.default_duration_min
    start, end, asap = _window(rt, intake, minutes)
    scheduled = not asap and start > now + rt.settings.dispatch.batch_horizon and priority == "normal" \
        and service.code != HOTLINE_CALLBACK
    order = Order(
        id=uuid.uuid4(), elder_id=elder.id, service_code=service.code, region_code=elder.region_code,
        status="created", priority=priority, channel=intake.channel, asap=asap, window_start=start,
        window_end=end, scheduled=scheduled, planned_minutes=minutes, notes=intake.notes,
        price_fen=price_fen(service.unit, service.price_fen, minutes), quota_fen=0, copay_fen=0,
        service_month=service_month(now if asap else start, rt.settings.tz), created_by=actor.actor_id,
        created_at=now, updated_at=now,
    )
    order.copay_fen = order.price_fen
    session.add(order)
    await session.flush()  # rows that name the order (its events, offers, the quota ledger) go in after it
    if service.code != EMERGENCY:  # emergencies are free and never draw quota (decisions §3)
        quote = await billing.quote_and_reserve(session, rt.clock, order)
        order.quota_fen, order.copay_fen, order.program_id = quote.quota_fen, quote.copay_fen, quote.program_id
    session.add(OrderEvent(order_id=order.id, status="created", event="create", at=now, actor=actor.actor_id))
    emit(session, rt.clock, "orders.order.created", str(order.id), {
        "order_id": str(order.id), "elder_id": str(order.elder_id), "region_code": order.region_code,
        "status": "created", "previous_status": None, "priority": order.priority,
        "service_code": order.service_code,
    })
    if idempotency_key is not None:
        session.add(IdempotencyRecord(actor=actor.actor_id, key=idempotency_key, request_hash=fingerprint,
                                      order_id=order.id, created_at=now))
    await record_audit(session, rt.clock, actor, "order.create", "order", order.id, {
        "elder_id": str(elder.id), "service_code": service.code, "priority": priority, "channel": intake.channel,
        "price_fen": order.price_fen, "quota_fen": order.quota_fen, "scheduled": scheduled,
    }, region_code=order.region_code)

    from dispatch import offers  # dispatch calls back into orders for transitions: import at use

    if service.code == HOTLINE_CALLBACK:
        await apply_event(session, rt, order, "to_dispatcher", "system:dispatch", HOTLINE_CALLBACK_REASON)
    elif not scheduled:
        await offers.dispatch_order(session, rt, order, new=True)
    return order, True


async def load_order(session: AsyncSession, order_id: uuid.UUID | str, *, for_update: bool = False) -> Order:
    oid = order_id if isinstance(order_id, uuid.UUID) else parse_id(order_id, "order")
    query = select(Order).where(Order.id == oid)
    if for_update:
        query = query.with_for_update()
    order = await session.scalar(query)
    if order is None:
        raise NotFound("order not found")
    return order


async def visible_order(session: AsyncSession, access: Access, order_id: str, *, for_update: bool = False) -> Order:
    """The order if the caller may see it (its region, its elders, the assigned caregiver's own); 404 otherwise."""
    order = await load_order(session, order_id, for_update=for_update)
    if access.scope == "organization":
        from dispatch.registry import organization_of_caregiver

        org = await organization_of_caregiver(session, order.assigned_caregiver_id)
        access.ensure(what="order", organization_id=org)
    else:
        access.ensure(what="order", region_code=order.region_code, elder_id=order.elder_id,
                      caregiver_id=order.assigned_caregiver_id)
    return order


async def history(session: AsyncSession, order_id: uuid.UUID) -> list[OrderEvent]:
    return list((await session.scalars(
        select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.id))).all())


async def cancel_order(session: AsyncSession, rt: Runtime, access: Access, order_id: str, reason: str) -> Order:
    """Allowed until the caregiver sets off (en_route); releases the quota reservation and pending offers."""
    order = await visible_order(session, access, order_id, for_update=True)
    await apply_event(session, rt, order, "cancel", access.actor_id, reason)
    from dispatch import offers
    from orders import visits

    await offers.withdraw_pending(session, rt, order.id, "order cancelled")
    await visits.withdraw_live_visit(session, rt, order, "order cancelled")
    await billing.release(session, rt.clock, order)
    await record_audit(session, rt.clock, access, "order.cancel", "order", order.id, {"reason": reason})
    return order


async def list_orders(session: AsyncSession, access: Access, *, status: str | None, elder_id: str | None,
                      from_: datetime | None, to: datetime | None, cursor: str | None, limit: int
                      ) -> tuple[list[Order], str | None]:
    query = select(Order)
    if access.scope == "own" and access.principal.role == "elder":
        query = query.where(Order.elder_id.in_([uuid.UUID(e) for e in access.principal.elder_ids]))
    elif access.scope == "own":
        cg = access.principal.caregiver_id
        query = query.where(Order.assigned_caregiver_id == (uuid.UUID(cg) if cg else None))
    elif access.scope == "organization":
        from dispatch.registry import caregivers_of_organization

        org = access.principal.organization_id
        query = query.where(Order.assigned_caregiver_id.in_(
            caregivers_of_organization(uuid.UUID(org)) if org else select(text("NULL::uuid"))))
    else:
        query = query.where(access.region_clause(Order.region_code))
    if status:
        query = query.where(Order.status == status)
    if elder_id:
        query = query.where(Order.elder_id == parse_id(elder_id, "elder"))
    if from_:
        query = query.where(Order.window_start >= from_)
    if to:
        query = query.where(Order.window_start < to)
    rows = list((await session.scalars(keyset(query, Order.created_at, Order.id, cursor, limit))).all())
    return page_of(rows, limit, lambda r: (r.created_at, r.id))


async def dispatcher_queue(session: AsyncSession, access: Access, *, region_code: str | None, cursor: str | None,
                           limit: int) -> tuple[list[tuple[Order, str | None, datetime]], str | None]:
    """Orders waiting for a dispatcher (`unfulfilled`) in the caller's region, newest first, each with the
    reason and time of its latest move to the queue."""
    queued = (select(OrderEvent.reason, OrderEvent.at)
              .where(OrderEvent.order_id == Order.id, OrderEvent.event == "to_dispatcher")
              .order_by(OrderEvent.id.desc()).limit(1).lateral())
    query = (select(Order, queued.c.reason, queued.c.at).join(queued, true())
             .where(Order.status == "unfulfilled", access.region_clause(Order.region_code)))
    if region_code:
        query = query.where(Order.region_code == region_code)
    rows = [(o, reason, at) for o, reason, at in (await session.execute(
        keyset(query, Order.created_at, Order.id, cursor, limit))).all()]
    return page_of(rows, limit, lambda r: (r[0].created_at, r[0].id))


def check_priority_allowed(access: Access, priority: str) -> None:
    """`urgent` is for staff; elder and family apps raise an SOS instead (decisions §3)."""
    if priority == "urgent" and access.principal.role in ("elder", "caregiver"):
        raise PermissionDenied("urgent orders are for staff; use SOS", code="priority_not_allowed")


def to_list_item(order: Order) -> schemas.OrderListItem:
    return schemas.OrderListItem(**_order_fields(order))


def to_schema(order: Order, events: list[OrderEvent] | None = None) -> schemas.Order:
    return schemas.Order(
        **_order_fields(order),
        history=[schemas.HistoryEntry(status=e.status, event=e.event, at=e.at, actor=e.actor, reason=e.reason)
                 for e in events or []],
    )


def _order_fields(order: Order) -> dict[str, Any]:
    return dict(
        id=str(order.id), elder_id=str(order.elder_id), service_code=order.service_code,
        region_code=order.region_code, status=order.status, priority=order.priority,
        channel=order.channel, window=None if order.asap else schemas.Window(start=order.window_start,
                                                                               end=order.window_end),
        asap=order.asap, scheduled=order.scheduled, planned_minutes=order.planned_minutes, notes=order.notes,
        price_fen=order.price_fen, quota_fen=order.quota_fen, copay_fen=order.copay_fen,
        program_id=str(order.program_id) if order.program_id else None,
        assigned_caregiver_id=str(order.assigned_caregiver_id) if order.assigned_caregiver_id else None,
        visit_id=str(order.visit_id) if order.visit_id else None, created_at=order.created_at,
    )


__all__ = [
    "Intake",
    "InvalidState",
    "apply_event",
    "cancel_order",
    "create_order",
    "dispatcher_queue",
    "history",
    "list_orders",
    "load_order",
    "to_list_item",
    "to_schema",
    "visible_order",
]


async def lapse_unserved_orders(rt: Runtime, *, limit: int = 200) -> int:
    """Orders whose window ended while nobody had taken them are cancelled by the system and their quota released
    (decisions §3); each in a transaction of its own."""
    async with rt.database.unit_of_work() as session:
        due = list((await session.scalars(select(Order.id).where(
            Order.status.in_(("created", "dispatching", "offered", "unfulfilled")),
            Order.window_end <= rt.clock.now()).limit(limit))).all())
    from dispatch import offers

    for order_id in due:
        async with rt.database.unit_of_work() as session:
            order = await load_order(session, order_id, for_update=True)
            if order.status not in ("created", "dispatching", "offered", "unfulfilled") \
                    or order.window_end > rt.clock.now():
                continue
            await offers.withdraw_pending(session, rt, order.id, "window passed")
            await apply_event(session, rt, order, "cancel", "system:orders", "window passed unserved")
            await billing.release(session, rt.clock, order)
    return len(due)


async def needing_action(session: AsyncSession, access: Access, *, limit: int = 300
                         ) -> list[tuple[Order, float, float, str]]:
    """Orders a dispatcher should look at: in the queue, being dispatched or offered, newest urgent first, with the
    elder's home cell (~1 km, for the console's map: never the exact point) and masked name."""
    rows = await session.execute(
        select(Order, Elder.coarse_lat, Elder.coarse_lon, Elder.name).join(Elder, Elder.id == Order.elder_id)
        .where(Order.status.in_(("unfulfilled", "dispatching", "offered")), access.region_clause(Order.region_code))
        .order_by((Order.priority == "urgent").desc(), (Order.status == "unfulfilled").desc(), Order.created_at)
        .limit(limit))
    from kernel.personal_data import mask_name

    return [(o, lat, lon, mask_name(name)) for o, lat, lon, name in rows.all()]
