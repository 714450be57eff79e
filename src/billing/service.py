"""Billing's interface to the other domains (decisions §1). Until the billing issue lands, it answers the neutral
value: no quota, the whole price is co-pay, nothing to capture or release. Callers already call it in the
transaction that creates, completes or cancels an order, so the real ledger plugs in without touching them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from kernel.clock import Clock


class PricedOrder(Protocol):
    @property
    def id(self) -> uuid.UUID: ...
    @property
    def elder_id(self) -> uuid.UUID: ...
    @property
    def price_fen(self) -> int: ...


class CompletedVisit(Protocol):
    @property
    def id(self) -> uuid.UUID: ...
    @property
    def order_id(self) -> uuid.UUID: ...


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


async def capture(session: AsyncSession, clock: Clock, visit: CompletedVisit) -> None:
    """Capture the reserved quota for a verified visit (neutral: nothing was reserved)."""
    del session, clock, visit


async def release(session: AsyncSession, clock: Clock, order: PricedOrder) -> None:
    """Release an order's reservation on cancellation or failure (neutral: nothing was reserved)."""
    del session, clock, order
