"""Concurrent reservations on real connections that really commit: one hot elder, one tight budget."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from billing import service as billing
from billing.models import Entitlement, Program
from billing.service import Quote
from kernel.runtime import Runtime
from tests.billing.support import Order, assert_ledger_sound, create_program
from tests.factories import create_elder


async def _reserve(rt: Runtime, order: Order) -> Quote:
    async with rt.database.unit_of_work() as session:
        return await billing.quote_and_reserve(session, rt.clock, order)


async def test_simultaneous_orders_of_one_elder_never_overdraw_the_entitlement(committed_runtime: Runtime) -> None:
    rt = committed_runtime
    elder = await create_elder(rt)
    program = await create_program(rt, rules=[{"category": "dibao", "monthly_quota_fen": 20_000,
                                               "copay_percent": 10}])
    orders = [Order(elder.id, price_fen=4500) for _ in range(16)]
    quotes = await asyncio.gather(*(_reserve(rt, o) for o in orders))
    # 4 × 4050 = 16200 in full, one gets the 3800 left, the rest pay everything themselves
    assert sorted(q.quota_fen for q in quotes) == [0] * 11 + [3800] + [4050] * 4
    assert all(q.quota_fen + q.copay_fen == 4500 for q in quotes)
    async with rt.database.unit_of_work() as s:
        entitlement = await s.scalar(select(Entitlement).where(Entitlement.elder_id == elder.id))
        assert entitlement is not None
        assert (entitlement.reserved_fen, entitlement.quota_fen) == (20_000, 20_000)
        assert (await s.scalar(select(Program.reserved_fen).where(Program.id == program.id))) == 20_000
        await assert_ledger_sound(s)


async def test_simultaneous_orders_of_many_elders_never_overdraw_the_budget(committed_runtime: Runtime) -> None:
    rt = committed_runtime
    elders = [await create_elder(rt) for _ in range(12)]
    program = await create_program(rt, budget_fen=30_000)
    quotes = await asyncio.gather(*(_reserve(rt, Order(e.id, price_fen=4500)) for e in elders))
    assert sum(q.quota_fen for q in quotes) == 30_000  # 7 × 4050 + 1650
    assert sorted(q.quota_fen for q in quotes)[-8:] == [1650] + [4050] * 7
    async with rt.database.unit_of_work() as s:
        assert (await s.scalar(select(Program.reserved_fen).where(Program.id == program.id))) == 30_000
        await assert_ledger_sound(s)
