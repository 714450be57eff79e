"""Billing's interface to the other domains (decisions §1, §3, §4).

Orders calls these in its own transactions: `quote_and_reserve` when an order is created, `release` when it is
cancelled or its window passes unserved, `exclude` when a finished visit is not billable (an unresolved or rejected
flag, elder absent, aborted), `capture` when a visit becomes billable (verified completion, or a flag approved).
Dispatch calls `contracted_organizations` to know which organisations may serve an order.

Everything billing needs of an order or a visit arrives here and is recorded in billing's own tables (it never
reads the orders' or visits' tables). Each call is idempotent: a second `quote_and_reserve` answers the first quote,
a second `release`, `capture` or `exclude` changes nothing, and every ledger posting is keyed by (order, kind).

An exclusion gives the reservation back to the entitlement and the budget (a rejected or absent visit must not hold
quota); if the visit is later approved, `capture` draws again what it can (the remaining entitlement and budget
permitting), and the rest is co-pay.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from billing import ledger, programs, repository
from billing.models import Capture, Exclusion, Reservation
from billing.rules import best_rule, eligible_in_month, eligible_on, local_date, month_of, month_start
from kernel.audit import SystemActor, record_audit
from kernel.authz import Access
from kernel.clock import Clock
from kernel.errors import InvalidState, Unprocessable
from kernel.outbox import emit
from supervision.service import refuse_blacklisted

BILLING = SystemActor("billing")


class PricedOrder(Protocol):
    """What billing needs of an order at intake and release."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def elder_id(self) -> uuid.UUID: ...
    @property
    def service_code(self) -> str: ...
    @property
    def region_code(self) -> str: ...
    @property
    def price_fen(self) -> int: ...
    @property
    def service_month(self) -> date:
        """First day of the order's service month in Asia/Shanghai (window start; creation time for `asap`)."""
        ...


class FinishedVisit(Protocol):
    """What billing needs of a visit when it is captured or excluded."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def order_id(self) -> uuid.UUID: ...
    @property
    def organization_id(self) -> uuid.UUID: ...
    @property
    def caregiver_id(self) -> uuid.UUID: ...
    @property
    def elder_id(self) -> uuid.UUID: ...
    @property
    def service_code(self) -> str: ...
    @property
    def actual_price_fen(self) -> int | None:
        """Price of what was delivered: per visit, or per hour rounded up to 30 minutes (orders computes it);
        None before check-out, when billing takes the reserved price."""
        ...
    @property
    def checked_out_at(self) -> datetime | None: ...


@dataclass(frozen=True)
class Quote:
    price_fen: int
    quota_fen: int
    copay_fen: int
    program_id: uuid.UUID | None = None


async def quote_and_reserve(session: AsyncSession, clock: Clock, order: PricedOrder) -> Quote:
    """Split the price into quota and co-pay and reserve the quota part, in the order's creating transaction.

    The first covering programme (region covers the order's, service covered, period overlapping the service month,
    elder eligible by its rules) with room pays; `copay = ceil(price × copay_percent / 100)` and the quota part is
    the rest, capped by the entitlement's remaining quota and the programme's remaining budget. No programme with
    room: everything is co-pay (`quota_fen = 0`, `program_id = None`).
    """
    if order.price_fen < 0:
        raise Unprocessable("price must not be negative", code="invalid_price")
    now = clock.now()
    month = month_start(order.service_month)
    reservation = await session.scalar(
        pg_insert(Reservation).values(
            order_id=order.id, elder_id=order.elder_id, program_id=None, entitlement_id=None,
            service_code=order.service_code, region_code=order.region_code, service_month=month,
            price_fen=order.price_fen, quota_fen=0, copay_fen=order.price_fen, copay_percent=100,
            status="reserved", reserved_at=now,
        ).on_conflict_do_nothing(index_elements=["order_id"]).returning(Reservation)
    )
    if reservation is None:  # quoted before (the insert waited for that transaction): the same answer again
        earlier = await _reservation(session, order.id, lock=True)
        assert earlier is not None
        return _quote(earlier)
    drawn = await _draw_quota(session, order, month, now)
    if drawn is not None:
        program_id, entitlement_id, copay_percent, split = drawn
        reservation.program_id, reservation.entitlement_id = program_id, entitlement_id
        reservation.copay_percent = copay_percent
        reservation.quota_fen, reservation.copay_fen = split.quota_fen, split.copay_fen
        await session.flush()
    await record_audit(session, clock, BILLING, "billing.reservation.create", "order", order.id,
                       {"program_id": _str(reservation.program_id), "price_fen": reservation.price_fen,
                        "quota_fen": reservation.quota_fen, "copay_fen": reservation.copay_fen,
                        "service_month": month.isoformat()})
    emit(session, clock, "billing.reservation.created", str(order.id),
         {"order_id": str(order.id), "elder_id": str(order.elder_id), "program_id": _str(reservation.program_id),
          "entitlement_id": _str(reservation.entitlement_id)})
    return _quote(reservation)


async def release(session: AsyncSession, clock: Clock, order: PricedOrder) -> None:
    """Release an order's reservation on cancellation or an unserved window (nothing if already closed)."""
    reservation = await _reservation(session, order.id, lock=True)
    if reservation is None or reservation.status != "reserved":
        return
    now = clock.now()
    released = reservation.quota_fen
    await _give_back(session, reservation, "release", now)
    reservation.status, reservation.closed_at = "released", now
    await session.flush()
    await record_audit(session, clock, BILLING, "billing.reservation.release", "order", order.id,
                       {"program_id": _str(reservation.program_id), "released_fen": released})
    emit(session, clock, "billing.reservation.released", str(order.id),
         {"order_id": str(order.id), "program_id": _str(reservation.program_id)})


async def capture(session: AsyncSession, clock: Clock, visit: FinishedVisit) -> None:
    """Capture the reservation for a billable visit, for the units actually delivered.

    The co-pay percent applies to the actual price; the quota part never exceeds the reservation (any excess is
    co-pay) and the unneeded rest of the reservation returns to the entitlement and the budget. A reservation
    released before (an exclusion later approved) draws again what still remains.
    """
    reservation = await _reservation(session, visit.order_id, lock=True)
    if await _captured(session, visit):
        return
    # no new billing for a blacklisted caregiver or organisation (409 `caregiver_blacklisted` /
    # `organization_blacklisted`); orders excludes the visit instead
    await refuse_blacklisted(session, caregiver_id=visit.caregiver_id, organization_id=visit.organization_id,
                             at=clock.now())
    price = _actual_price(visit, reservation)
    if price < 0:
        raise Unprocessable("price must not be negative", code="invalid_price")
    now = clock.now()
    served_at = _served_at(visit)
    split = ledger.Split(price, 0, price)
    program_id = entitlement_id = None
    service_month = month_of(served_at or now)
    if reservation is not None:
        service_month = reservation.service_month
        program_id, entitlement_id = reservation.program_id, reservation.entitlement_id
        if program_id is not None and entitlement_id is not None:
            held = reservation.quota_fen if reservation.status == "reserved" else 0
            entitlement = await repository.read_entitlement(session, entitlement_id, lock=True)
            program = await repository.read_program(session, program_id, lock=True)
            if held:
                split = ledger.capture_split(price, reservation.copay_percent, reserved_fen=held)
            else:
                split = ledger.capture_split(price, reservation.copay_percent, reserved_fen=0,
                                             entitlement_remaining=entitlement.remaining,
                                             budget_remaining=program.remaining)
            await repository.move_entitlement(session, entitlement_id, reserved=-held, used=split.quota_fen)
            await repository.move_program(session, program_id, reserved=-held, used=split.quota_fen)
            await repository.post(session, ledger.capture(visit.order_id, program_id, entitlement_id,
                                                          reserved_fen=held, captured_fen=split.quota_fen), now)
        reservation.status, reservation.closed_at = "captured", now
    session.add(Capture(
        visit_id=visit.id, order_id=visit.order_id, elder_id=visit.elder_id, program_id=program_id,
        entitlement_id=entitlement_id, organization_id=visit.organization_id,
        caregiver_id=visit.caregiver_id, service_code=visit.service_code, service_month=service_month,
        served_at=served_at, billable_at=now, price_fen=price, quota_fen=split.quota_fen,
        copay_fen=split.copay_fen,
    ))
    await session.flush()
    await record_audit(session, clock, BILLING, "billing.visit.capture", "visit", visit.id,
                       {"order_id": str(visit.order_id), "program_id": _str(program_id), "price_fen": price,
                        "quota_fen": split.quota_fen, "copay_fen": split.copay_fen})
    emit(session, clock, "billing.visit.captured", str(visit.id),
         {"visit_id": str(visit.id), "order_id": str(visit.order_id), "program_id": _str(program_id),
          "organization_id": str(visit.organization_id)})


async def exclude(session: AsyncSession, clock: Clock, visit: FinishedVisit, reason: str) -> None:
    """Record that a finished visit is not billed, with the reason a statement shows; its reservation goes back to
    the entitlement and the budget. The same reason twice records nothing new; a captured visit is 409."""
    reason = " ".join(reason.split())[:200] or "unspecified"
    reservation = await _reservation(session, visit.order_id, lock=True)
    if await _captured(session, visit):
        raise InvalidState("the visit is billed already; correct it with an adjusting entry", code="invalid_state")
    known = await session.scalar(select(Exclusion.id).where(Exclusion.visit_id == visit.id,
                                                            Exclusion.reason == reason))
    if known is not None:
        return
    now = clock.now()
    served_at = _served_at(visit)
    service_month = month_of(served_at or now)
    program_id = None
    if reservation is not None:
        service_month, program_id = reservation.service_month, reservation.program_id
        if reservation.status == "reserved":
            await _give_back(session, reservation, "exclude", now)
            reservation.status, reservation.closed_at = "excluded", now
    session.add(Exclusion(
        visit_id=visit.id, order_id=visit.order_id, elder_id=visit.elder_id, program_id=program_id,
        organization_id=visit.organization_id, caregiver_id=visit.caregiver_id, service_code=visit.service_code,
        service_month=service_month, served_at=served_at, price_fen=max(_actual_price(visit, reservation), 0),
        reason=reason, excluded_at=now,
    ))
    await session.flush()
    await record_audit(session, clock, BILLING, "billing.visit.exclude", "visit", visit.id,
                       {"order_id": str(visit.order_id), "program_id": _str(program_id), "reason": reason})
    emit(session, clock, "billing.visit.excluded", str(visit.id),
         {"visit_id": str(visit.id), "order_id": str(visit.order_id), "program_id": _str(program_id),
          "organization_id": str(visit.organization_id)})


async def contracted_organizations(session: AsyncSession, *, region_code: str, service_code: str, on: date,
                                   program_id: uuid.UUID | None) -> set[uuid.UUID]:
    """Organisations with a contract valid `on` covering the region and service: of `program_id` when the order
    uses quota, or self-pay service-area contracts (program null) when `program_id` is None. An organisation's own
    region needs no contract for self-pay; dispatch adds those itself."""
    return await repository.contracted_organization_ids(session, region_code=region_code, service_code=service_code,
                                                        on=on, program_id=program_id)


async def contract_new_organization(session: AsyncSession, clock: Clock, access: Access, *,
                                    organization_id: uuid.UUID, region_code: str,
                                    program_ids: Sequence[str]) -> list[uuid.UUID]:
    """`contracted_programs` of `POST /v1/organizations` (decisions §2): one contract per programme, in the
    organisation's region, for the services the programme covers, valid for its period; answers the contract ids.
    Unknown (or out-of-scope) programme ids: 422 `unknown_program` listing them, nothing created. Call it after the
    organisation row is flushed, in the same transaction."""
    contracts = await programs.contract_programs(session, clock, access, organization_id=organization_id,
                                        region_code=region_code, program_ids=program_ids)
    return [c.id for c in contracts]


def _str(value: uuid.UUID | None) -> str | None:
    return str(value) if value is not None else None


def _served_at(visit: FinishedVisit) -> datetime | None:
    """The protocol's `checked_out_at`. The orders `Visit` model names its column `check_out_at` and is passed in
    as it is (`type: ignore[arg-type]` in orders/visits.py), so billing accepts that spelling too until orders
    offers the protocol's name."""
    at: datetime | None = getattr(visit, "checked_out_at", None)
    return at if at is not None else getattr(visit, "check_out_at", None)


def _actual_price(visit: FinishedVisit, reservation: Reservation | None) -> int:
    """The delivered price; an unpriced visit (the orders model allows None) counts as the reserved price."""
    price: int | None = visit.actual_price_fen
    if price is None:
        return reservation.price_fen if reservation is not None else 0
    return price


def _quote(reservation: Reservation) -> Quote:
    return Quote(price_fen=reservation.price_fen, quota_fen=reservation.quota_fen, copay_fen=reservation.copay_fen,
                 program_id=reservation.program_id)


async def _reservation(session: AsyncSession, order_id: uuid.UUID, *, lock: bool) -> Reservation | None:
    query = select(Reservation).where(Reservation.order_id == order_id).execution_options(populate_existing=True)
    if lock:
        query = query.with_for_update(key_share=True)
    return await session.scalar(query)


async def _captured(session: AsyncSession, visit: FinishedVisit) -> bool:
    found = await session.scalar(select(Capture.id).where(
        (Capture.visit_id == visit.id) | (Capture.order_id == visit.order_id)).limit(1))
    return found is not None


async def _draw_quota(session: AsyncSession, order: PricedOrder, month: date, now: datetime
                      ) -> tuple[uuid.UUID, uuid.UUID, int, ledger.Split] | None:
    """Reserve from the first covering programme with room; None when none has any."""
    elder = await repository.elder_facts(session, order.elder_id)
    if elder is None or order.price_fen == 0:
        return None
    if not (eligible_on(elder, local_date(now)) and eligible_in_month(elder, month)):
        return None
    for terms in await repository.covering_programs(session, region_code=order.region_code, month=month,
                                                    service_code=order.service_code):
        rule = best_rule(terms.rules, elder, month)
        if rule is None or terms.budget_remaining <= 0:
            continue
        existing = await repository.entitlement_for(session, elder_id=order.elder_id, program_id=terms.id,
                                                    month=month)
        if existing is not None and existing.quota_fen - existing.reserved_fen - existing.used_fen <= 0:
            continue
        entitlement_id = existing.id if existing is not None else await repository.materialise_entitlement(
            session, elder_id=order.elder_id, program_id=terms.id, month=month, rule=rule)
        # Lock entitlement, then programme: the figures below cannot change until this transaction ends.
        entitlement = await repository.read_entitlement(session, entitlement_id, lock=True)
        program = await repository.read_program(session, terms.id, lock=True)
        split = ledger.split_price(order.price_fen, entitlement.copay_percent,
                                   entitlement_remaining=entitlement.remaining, budget_remaining=program.remaining)
        if split.quota_fen <= 0:
            continue
        await repository.move_entitlement(session, entitlement_id, reserved=split.quota_fen)
        await repository.move_program(session, terms.id, reserved=split.quota_fen)
        await repository.post(session, ledger.reserve(order.id, terms.id, entitlement_id, split.quota_fen), now)
        return terms.id, entitlement_id, entitlement.copay_percent, split
    return None


async def _give_back(session: AsyncSession, reservation: Reservation, kind: ledger.PostingKind, now: datetime
                     ) -> None:
    """Return a held reservation to its entitlement and programme (`release` or `exclude` posting)."""
    amount = reservation.quota_fen
    if amount <= 0 or reservation.program_id is None or reservation.entitlement_id is None:
        return
    assert kind in ("release", "exclude")
    await repository.read_entitlement(session, reservation.entitlement_id, lock=True)
    await repository.read_program(session, reservation.program_id, lock=True)
    await repository.move_entitlement(session, reservation.entitlement_id, reserved=-amount)
    await repository.move_program(session, reservation.program_id, reserved=-amount)
    await repository.post(session, ledger.release(reservation.order_id, reservation.program_id,
                                                  reservation.entitlement_id, amount,
                                                  kind="exclude" if kind == "exclude" else "release"), now)
