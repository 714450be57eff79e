"""Billing's interface to the other domains (decisions §1, §3, §4).

Orders calls these in its own transactions: `quote_and_reserve` when an order is created, `release` when it is
cancelled or its window passes unserved, `exclude` when a finished visit is not billable (an unresolved or rejected
flag, elder absent, aborted), `capture` when a visit becomes billable (verified completion, or a flag approved).
Dispatch calls `contracted_organizations` to know which organisations may serve an order.

Until the billing issue lands these answer the neutral value: no quota (the whole price is co-pay), nothing to
capture, release or exclude, no contracts (dispatch then uses organisations of the elder's own region only).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from kernel.clock import Clock


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
    def actual_price_fen(self) -> int:
        """Price of what was delivered: per visit, or per hour rounded up to 30 minutes (orders computes it)."""
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
    """Split the price into quota and co-pay and reserve the quota part (neutral: no programme pays)."""
    del session, clock
    return Quote(price_fen=order.price_fen, quota_fen=0, copay_fen=order.price_fen)


async def release(session: AsyncSession, clock: Clock, order: PricedOrder) -> None:
    """Release an order's reservation on cancellation or an unserved window (neutral: nothing was reserved)."""
    del session, clock, order


async def capture(session: AsyncSession, clock: Clock, visit: FinishedVisit) -> None:
    """Capture the reservation for a billable visit (neutral: nothing was reserved)."""
    del session, clock, visit


async def exclude(session: AsyncSession, clock: Clock, visit: FinishedVisit, reason: str) -> None:
    """Record that a finished visit is not billed, with the reason a statement shows (neutral: nothing)."""
    del session, clock, visit, reason


async def contracted_organizations(session: AsyncSession, *, region_code: str, service_code: str, on: date,
                                   program_id: uuid.UUID | None) -> set[uuid.UUID]:
    """Organisations with a contract valid `on` covering the region and service: of `program_id` when the order
    uses quota, or self-pay service-area contracts (program null) when `program_id` is None. An organisation's own
    region needs no contract for self-pay; dispatch adds those itself (neutral: no contracts)."""
    del session, region_code, service_code, on, program_id
    return set()
