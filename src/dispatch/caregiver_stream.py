"""The caregiver app's live stream: the committed events that concern one caregiver, as server-sent events.

Which caregiver an event concerns is dispatch's knowledge, carried in the outbox payload as `caregiver_id`: an
offer event names the caregiver the offer was made to, an order event the assigned caregiver, a visit event the
visit's caregiver (kernel/events.py). The stream selects by it in SQL (index `ix_outbox_caregiver_seq`), so a
replay after `Last-Event-ID` reads this caregiver's events only, never the whole outbox; the plumbing (ids, Redis
wake-ups, keep-alives) is the console's, `kernel.event_stream`.

Each event goes out as the caregiver may see it: a new offer as `GET /v1/caregivers/me/offers` shows it (the elder's
name and address masked), later offer changes, orders and visits by ids, status and service. Never another
caregiver's offers, never the elder's record.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, literal_column, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch import schemas
from dispatch.models import Offer
from kernel.event_stream import PAGE, FeedEvent, follow, latest_seq
from kernel.outbox import OutboxEvent
from kernel.runtime import Runtime
from orders.elders import ElderProfile, matching_profile
from orders.models import Order

KINDS = ("dispatch.offer.", "orders.order.", "orders.visit.")
READY = "stream.ready"


def concerning(caregiver_id: uuid.UUID) -> ColumnElement[bool]:
    """The outbox rows that concern this caregiver and that its app is shown."""
    # the expression of `ix_outbox_caregiver_seq`, spelled as the index is (a bound key would not match it)
    caregiver_of: ColumnElement[str] = literal_column("(outbox.payload ->> 'caregiver_id')")
    return and_(caregiver_of == str(caregiver_id), or_(*(OutboxEvent.event_type.startswith(k) for k in KINDS)))


def masked_offer(offer: Offer, order: Order, elder: ElderProfile | None, status: str) -> schemas.OfferOut:
    """An offer as the caregiver sees it before accepting (the offer list's view)."""
    return schemas.OfferOut(
        id=str(offer.id), order_id=str(order.id), status=status,
        kind=offer.kind, expires_at=offer.expires_at, service_code=order.service_code, priority=order.priority,
        distance_m=offer.distance_m, window_start=order.window_start, window_end=order.window_end,
        elder=schemas.OfferElder(name=elder.name_masked if elder else "",
                                 address=elder.address_masked if elder else ""),
    )


async def _new_offers(session: AsyncSession, rows: Sequence[OutboxEvent]) -> dict[str, schemas.OfferOut]:
    ids = [uuid.UUID(r.payload["offer_id"]) for r in rows if r.event_type == "dispatch.offer.created"]
    if not ids:
        return {}
    found = (await session.execute(select(Offer, Order).join(Order, Order.id == Offer.order_id)
                                   .where(Offer.id.in_(ids)))).all()
    profiles = {eid: await matching_profile(session, eid) for eid in {order.elder_id for _, order in found}}
    return {str(offer.id): masked_offer(offer, order, profiles.get(order.elder_id), "pending")
            for offer, order in found}


def _shape(row: OutboxEvent, new_offers: dict[str, schemas.OfferOut]) -> dict[str, Any]:
    p = row.payload
    head = {"type": row.event_type, "occurred_at": row.occurred_at.isoformat()}
    if row.event_type.startswith("dispatch.offer."):
        out = {**head, "offer_id": p["offer_id"], "order_id": p["order_id"], "status": p["status"],
               "kind": p["kind"], "expires_at": p["expires_at"], "reason": p.get("reason")}
        view = new_offers.get(p["offer_id"])
        if view is not None:
            out["offer"] = view.model_dump(mode="json")
        return out
    if row.event_type.startswith("orders.order."):
        return {**head, "order_id": p["order_id"], "status": p["status"], "previous_status": p["previous_status"],
                "priority": p["priority"], "service_code": p["service_code"]}
    return {**head, "visit_id": p["visit_id"], "order_id": p["order_id"], "status": p["status"],
            "flags": p.get("flags", [])}


async def events_after(rt: Runtime, caregiver_id: uuid.UUID, after: int) -> list[FeedEvent]:
    """This caregiver's events after `after` (a `stream_seq`), in stream order, as its app sees them."""
    async with rt.database.unit_of_work() as session:
        rows = (await session.scalars(
            select(OutboxEvent).where(OutboxEvent.stream_seq > after, concerning(caregiver_id))
            .order_by(OutboxEvent.stream_seq).limit(PAGE))).all()
        new_offers = await _new_offers(session, rows)
    out = []
    for row in rows:
        assert row.stream_seq is not None
        out.append(FeedEvent(row.stream_seq, row.event_type, _shape(row, new_offers)))
    return out


async def follow_caregiver(rt: Runtime, caregiver_id: uuid.UUID, last_event_id: str | None
                           ) -> AsyncIterator[FeedEvent | None]:
    """The caregiver's events after `last_event_id`, forever (None: a keep-alive). A first connection (no id)
    starts with `stream.ready` whose id is the stream's position: the app reads its offers list after it, and a
    reconnect resumes from there, so nothing made in between is missed."""
    if not last_event_id:
        start = await latest_seq(rt)
        yield FeedEvent(start, READY, {"type": READY, "last_event_id": start})
        last_event_id = str(start)
    mine = str(caregiver_id)
    async for event in follow(rt, lambda after: events_after(rt, caregiver_id, after), last_event_id,
                              concerns=lambda event_type, payload: payload.get("caregiver_id") == mine
                              and event_type.startswith(KINDS)):
        yield event
