"""Offers: the one-by-one loop, the urgent broadcast, a dispatcher's assignment, accept/decline/expiry.

Locks are always taken order row first, then offer rows, on every path (accept, decline, expiry, cancel), so the
paths cannot deadlock; the order row lock serialises concurrent accepts across processes, and the partial unique
index `uq_offers_one_accept` makes "exactly one accept wins" hold even if a path forgot the lock.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch.candidates import find_candidates
from dispatch.models import Caregiver, Offer
from kernel.audit import record_audit
from kernel.authz import Access
from kernel.errors import Conflict, InvalidState, NotFound, Unprocessable
from kernel.ids import parse_id
from kernel.outbox import emit
from kernel.runtime import Runtime
from orders import visits
from orders.models import Order
from orders.service import apply_event, load_order
from orders.state import NOBODY_IN_REACH, NOBODY_LEFT, OPEN_FOR_ASSIGNMENT, manual_offer_ended
from supervision.service import refuse_blacklisted

SYSTEM = "system:dispatch"


def _emit(session: AsyncSession, rt: Runtime, offer: Offer, verb: str) -> None:
    # a withdrawal's reason is the system's ("another caregiver accepted"); a decline's is the caregiver's own
    # free text and stays out of events
    emit(session, rt.clock, f"dispatch.offer.{verb}", str(offer.id), {
        "offer_id": str(offer.id), "order_id": str(offer.order_id), "caregiver_id": str(offer.caregiver_id),
        "status": offer.status, "kind": offer.kind, "expires_at": offer.expires_at.isoformat(),
        "reason": offer.reason if verb == "withdrawn" else None,
    })


def _timeout(rt: Runtime, kind: str) -> timedelta:
    s = rt.settings.dispatch
    return {"loop": s.offer_timeout, "urgent": s.urgent_offer_timeout, "manual": s.manual_offer_timeout,
            "batch": s.batch_offer_timeout}[kind]


async def _offered_before(session: AsyncSession, order_id: uuid.UUID) -> set[uuid.UUID]:
    return set((await session.scalars(select(Offer.caregiver_id).where(Offer.order_id == order_id))).all())


async def make_offer(session: AsyncSession, rt: Runtime, order: Order, caregiver_id: uuid.UUID, kind: str, *,
                     distance_m: float | None = None, score: float | None = None) -> Offer:
    now = rt.clock.now()
    offer = Offer(id=uuid.uuid4(), order_id=order.id, caregiver_id=caregiver_id, kind=kind, status="pending",
                  created_at=now, expires_at=now + _timeout(rt, kind), distance_m=distance_m, score=score)
    session.add(offer)
    _emit(session, rt, offer, "created")
    return offer


async def dispatch_order(session: AsyncSession, rt: Runtime, order: Order, *,
                         exclude: set[uuid.UUID] | frozenset[uuid.UUID] = frozenset(), new: bool = False
                         ) -> list[Offer]:
    """Offer the order to the best candidate not tried yet (urgent: the K best at once); nobody left → the
    dispatcher's queue (`unfulfilled`). `new`: the order was created in this transaction, so it has no offers."""
    if order.status in ("created", "unfulfilled"):
        await apply_event(session, rt, order, "dispatch", SYSTEM)
    # an order dispatched by its own intake was never offered: nobody to leave out, and a query saved
    tried = set(exclude) if new else await _offered_before(session, order.id) | set(exclude)
    with session.no_autoflush:  # its reads need none of the pending rows: they go in with one flush below
        ranked = await find_candidates(session, rt, order, exclude=tried)
    count = rt.settings.dispatch.urgent_k if order.priority == "urgent" else 1
    best = ranked.ranked[:count]
    if not best:
        await apply_event(session, rt, order, "to_dispatcher", SYSTEM, NOBODY_LEFT if tried else NOBODY_IN_REACH)
        return []
    kind = "urgent" if order.priority == "urgent" else "loop"
    made = [await make_offer(session, rt, order, s.candidate.caregiver_id, kind,
                             distance_m=round(s.candidate.distance_m, 1), score=s.score) for s in best]
    await apply_event(session, rt, order, "offer", SYSTEM)
    await session.flush()
    return made


async def _pending_of(session: AsyncSession, order_id: uuid.UUID) -> list[Offer]:
    return list((await session.scalars(select(Offer).where(
        Offer.order_id == order_id, Offer.status == "pending").with_for_update())).all())


async def withdraw_pending(session: AsyncSession, rt: Runtime, order_id: uuid.UUID, reason: str) -> int:
    offers = await _pending_of(session, order_id)
    for offer in offers:
        offer.status, offer.responded_at, offer.reason = "withdrawn", rt.clock.now(), reason
        _emit(session, rt, offer, "withdrawn")
    return len(offers)


async def release_accepted(session: AsyncSession, rt: Runtime, order_id: uuid.UUID, reason: str) -> None:
    """The order's visit was withdrawn before check-in (the caregiver gave it back, a dispatcher reassigned it, the
    order was cancelled): its accepted offer no longer holds the order, so the next accept may win the unique
    "one accepted offer per order" index. No event: `orders.visit.withdrawn` already tells the caregiver."""
    for offer in (await session.scalars(select(Offer).where(
            Offer.order_id == order_id, Offer.status == "accepted").with_for_update())).all():
        offer.status, offer.reason = "withdrawn", reason[:500]


async def _locked(session: AsyncSession, offer_id: uuid.UUID) -> tuple[Order, Offer]:
    """Order row, then offer row: the one lock order of this module."""
    order_id = await session.scalar(select(Offer.order_id).where(Offer.id == offer_id))
    if order_id is None:
        raise NotFound("offer not found")
    order = await load_order(session, order_id, for_update=True)
    offer = await session.scalar(select(Offer).where(Offer.id == offer_id).with_for_update())
    assert offer is not None
    return order, offer


async def _after_no(session: AsyncSession, rt: Runtime, order: Order, offer: Offer) -> None:
    """What follows a decline or an expiry once no offer of the order is pending any more."""
    if await session.scalar(select(Offer.id).where(Offer.order_id == order.id, Offer.status == "pending")):
        return  # other urgent offers are still out
    if order.status != "offered":
        return
    if offer.kind == "manual":
        await apply_event(session, rt, order, "to_dispatcher", SYSTEM, manual_offer_ended(offer.status))
    elif offer.kind == "batch":
        await apply_event(session, rt, order, "await_batch", SYSTEM, f"batch offer {offer.status}")
    else:
        await apply_event(session, rt, order, "redispatch", SYSTEM, f"offer {offer.status}")
        await dispatch_order(session, rt, order)


async def accept_offer(session: AsyncSession, rt: Runtime, access: Access, offer_id: str) -> Offer:
    order, offer = await _locked(session, parse_id(offer_id, "offer"))
    access.ensure(what="offer", caregiver_id=offer.caregiver_id)
    now = rt.clock.now()
    if offer.status != "pending":
        raise InvalidState(f"the offer is {offer.status}", code="offer_not_pending", details={"status": offer.status})
    if offer.expires_at <= now:
        raise InvalidState("the offer has expired", code="offer_not_pending", details={"status": "expired"})
    caregiver = await session.get(Caregiver, offer.caregiver_id)
    assert caregiver is not None
    # blacklisted after the offer went out (matching filtered it before): the offer may not be taken
    await refuse_blacklisted(session, caregiver_id=caregiver.id, organization_id=caregiver.organization_id, at=now)
    offer.status, offer.responded_at = "accepted", now
    try:
        await session.flush()
    except IntegrityError as exc:  # the unique index: another accept already won
        raise InvalidState("another caregiver accepted first", code="offer_not_pending") from exc
    for other in await _pending_of(session, order.id):
        other.status, other.responded_at, other.reason = "withdrawn", now, "another caregiver accepted"
        _emit(session, rt, other, "withdrawn")
    await visits.create_visit(session, rt, order, caregiver.id, caregiver.organization_id)
    await apply_event(session, rt, order, "accept", access.actor_id, caregiver_id=caregiver.id)
    _emit(session, rt, offer, "accepted")
    await record_audit(session, rt.clock, access, "offer.accept", "offer", offer.id, {"order_id": str(order.id)})
    return offer


async def decline_offer(session: AsyncSession, rt: Runtime, access: Access, offer_id: str, reason: str) -> Offer:
    order, offer = await _locked(session, parse_id(offer_id, "offer"))
    access.ensure(what="offer", caregiver_id=offer.caregiver_id)
    if offer.status != "pending":
        raise InvalidState(f"the offer is {offer.status}", code="offer_not_pending", details={"status": offer.status})
    offer.status, offer.responded_at, offer.reason = "declined", rt.clock.now(), reason
    _emit(session, rt, offer, "declined")
    await record_audit(session, rt.clock, access, "offer.decline", "offer", offer.id,
                       {"order_id": str(order.id), "reason": reason})
    await session.flush()
    await _after_no(session, rt, order, offer)
    return offer


async def expire_due_offers(rt: Runtime, *, limit: int = 200) -> int:
    """Expire pending offers past their time (by the injected clock) and move their orders on; each order in a
    transaction of its own so one failure does not hold the others."""
    async with rt.database.unit_of_work() as session:
        due = list((await session.scalars(select(Offer.id).where(
            Offer.status == "pending", Offer.expires_at <= rt.clock.now()).order_by(Offer.expires_at)
            .limit(limit))).all())
    expired = 0
    for offer_id in due:
        async with rt.database.unit_of_work() as session:
            order, offer = await _locked(session, offer_id)
            if offer.status != "pending" or offer.expires_at > rt.clock.now():
                continue
            offer.status, offer.responded_at = "expired", rt.clock.now()
            _emit(session, rt, offer, "expired")
            await session.flush()
            await _after_no(session, rt, order, offer)
            expired += 1
    return expired


async def assign_manually(session: AsyncSession, rt: Runtime, access: Access, order: Order,
                          caregiver_id: str) -> Offer:
    """A dispatcher's choice: an offer with a longer expiry; its decline returns the order to the dispatcher.
    Allowed while the order is open or assigned (reassignment until the caregiver sets off)."""
    caregiver = await session.get(Caregiver, parse_id(caregiver_id, "caregiver"))
    if caregiver is None or not caregiver.active:
        raise NotFound("caregiver not found")
    await refuse_blacklisted(session, caregiver_id=caregiver.id, organization_id=caregiver.organization_id,
                             at=rt.clock.now())
    if order.status == "assigned":
        await visits.withdraw_live_visit(session, rt, order, "reassigned by dispatcher")
        await apply_event(session, rt, order, "withdraw", access.actor_id, "reassigned by dispatcher")
    elif order.status not in OPEN_FOR_ASSIGNMENT:
        raise InvalidState(f"cannot assign an order that is {order.status}")
    await withdraw_pending(session, rt, order.id, "dispatcher assigned another caregiver")
    if await session.scalar(select(Offer.id).where(Offer.order_id == order.id, Offer.caregiver_id == caregiver.id,
                                                   Offer.status == "pending")):
        raise Conflict("this caregiver already has a pending offer for the order")
    offer = await make_offer(session, rt, order, caregiver.id, "manual")
    await apply_event(session, rt, order, "offer", access.actor_id, "dispatcher assignment")
    await record_audit(session, rt.clock, access, "order.assign", "order", order.id,
                       {"caregiver_id": str(caregiver.id), "offer_id": str(offer.id)})
    await session.flush()
    return offer


async def offers_for_caregiver(session: AsyncSession, caregiver_id: uuid.UUID, *, include_closed: bool = False
                               ) -> list[tuple[Offer, Order]]:
    query = select(Offer, Order).join(Order, Order.id == Offer.order_id).where(Offer.caregiver_id == caregiver_id)
    if not include_closed:
        query = query.where(Offer.status.in_(("pending", "accepted")))
    return [(o, r) for o, r in (await session.execute(query.order_by(Offer.created_at.desc()).limit(100))).all()]


async def batch_offer(session: AsyncSession, rt: Runtime, order: Order, caregiver_id: uuid.UUID,
                      distance_m: float, score: float) -> Offer:
    if order.status != "created" or not order.scheduled:
        raise Unprocessable("only scheduled orders waiting for the batch are batch-offered")
    offer = await make_offer(session, rt, order, caregiver_id, "batch", distance_m=distance_m, score=score)
    await apply_event(session, rt, order, "offer", SYSTEM, "batch assignment")
    return offer


async def withdraw_all_pending_of_caregiver(session: AsyncSession, rt: Runtime, caregiver_id: uuid.UUID) -> int:
    """Going off duty withdraws the caregiver's pending loop and urgent offers; their orders move on."""
    ids = list((await session.scalars(select(Offer.id).where(
        Offer.caregiver_id == caregiver_id, Offer.status == "pending", Offer.kind.in_(("loop", "urgent"))))).all())
    for offer_id in ids:
        order, offer = await _locked(session, offer_id)
        if offer.status == "pending":
            offer.status, offer.responded_at, offer.reason = "withdrawn", rt.clock.now(), "caregiver went off duty"
            _emit(session, rt, offer, "withdrawn")
            await session.flush()
            await _after_no(session, rt, order, offer)
    return len(ids)


async def pending_expiry(session: AsyncSession, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, datetime]:
    """The soonest expiry of each order's pending offers (the console shows offers timing out)."""
    if not order_ids:
        return {}
    rows = await session.execute(select(Offer.order_id, func.min(Offer.expires_at)).where(
        Offer.order_id.in_(order_ids), Offer.status == "pending").group_by(Offer.order_id))
    return {oid: at for oid, at in rows.all()}
