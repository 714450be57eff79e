"""Property tests: random sequences of reserve / release / capture / exclude for many elders against real
PostgreSQL, compared with a brute-force reference; the ledger always balances and nothing is ever overdrawn."""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from billing import ledger
from billing import service as billing
from billing.models import Entitlement, Program
from billing.verify import verify_ledger
from kernel.clock import ManualClock
from kernel.db import create_engine
from kernel.errors import InvalidState
from kernel.runtime import Runtime
from kernel.settings import Settings
from tests.billing.support import Order, create_program, visit_of
from tests.conftest import RolledBackDatabase
from tests.factories import create_elder, create_organization

ELDERS = 4
# drawing order: the programme ending first (B), then A
PROGRAMS = {
    "B": {"quota": 6_000, "copay": 20, "budget": 9_000, "period_end": "2026-06-30"},
    "A": {"quota": 10_000, "copay": 10, "budget": 25_000, "period_end": "2026-12-31"},
}

Op = tuple[Any, ...]
operations = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.integers(0, ELDERS - 1), st.integers(0, 12_000)),
        st.tuples(st.just("release"), st.integers(0, 50)),
        st.tuples(st.just("capture"), st.integers(0, 50), st.integers(0, 15_000)),
        st.tuples(st.just("exclude"), st.integers(0, 50)),
    ),
    min_size=1, max_size=30,
)


@dataclass
class RefOrder:
    order: Order
    program: str | None
    held: int
    status: str = "reserved"


@dataclass
class Reference:
    """The rules written the slow, obvious way."""

    ent: dict[tuple[int, str], list[int]] = field(default_factory=dict)  # (elder, programme) → [reserved, used]
    budget: dict[str, list[int]] = field(default_factory=lambda: {p: [0, 0] for p in PROGRAMS})

    def _room(self, elder: int, program: str) -> int:
        reserved, used = self.ent.setdefault((elder, program), [0, 0])
        terms = PROGRAMS[program]
        return min(terms["quota"] - reserved - used, terms["budget"] - sum(self.budget[program]))

    def reserve(self, elder: int, price: int) -> tuple[str | None, int]:
        for program, terms in PROGRAMS.items():
            wanted = price - ledger.copay_for(price, terms["copay"])
            grant = min(wanted, self._room(elder, program))
            if grant > 0:
                self.ent[(elder, program)][0] += grant
                self.budget[program][0] += grant
                return program, grant
        return None, 0

    def give_back(self, elder: int, ref: RefOrder) -> None:
        if ref.status == "reserved" and ref.program is not None:
            self.ent[(elder, ref.program)][0] -= ref.held
            self.budget[ref.program][0] -= ref.held

    def capture(self, elder: int, ref: RefOrder, actual: int) -> int:
        if ref.program is None:
            return 0
        wanted = actual - ledger.copay_for(actual, PROGRAMS[ref.program]["copay"])
        if ref.status == "reserved":
            captured = max(0, min(wanted, ref.held))
            held = ref.held
        else:
            captured = max(0, min(wanted, self._room(elder, ref.program)))
            held = 0
        for figures in (self.ent[(elder, ref.program)], self.budget[ref.program]):
            figures[0] -= held
            figures[1] += captured
        return captured


async def _scenario(base: Settings, ops: list[Op]) -> None:
    engine = create_engine(base.app_url, role="vnh_app", pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            outer = await conn.begin()
            rt = Runtime.build(base, clock=ManualClock(), database=RolledBackDatabase(conn))
            try:
                await _run(rt, ops)
            finally:
                await rt.redis.aclose()
                await outer.rollback()
    finally:
        await engine.dispose()


async def _run(rt: Runtime, ops: list[Op]) -> None:
    elders = [await create_elder(rt) for _ in range(ELDERS)]
    org = await create_organization(rt)
    programs = {
        name: await create_program(rt, name=f"项目{name}", budget_fen=t["budget"], period_end=t["period_end"],
                                   rules=[{"category": "dibao", "monthly_quota_fen": t["quota"],
                                           "copay_percent": t["copay"]}])
        for name, t in PROGRAMS.items()
    }
    names = {p.id: name for name, p in programs.items()}
    reference = Reference()
    orders: list[tuple[int, RefOrder]] = []
    for op in ops:
        async with rt.database.unit_of_work() as s:
            if op[0] == "reserve":
                _, elder, price = op
                order = Order(elders[elder].id, price_fen=price)
                quote = await billing.quote_and_reserve(s, rt.clock, order)
                expected_program, expected_quota = reference.reserve(elder, price)
                assert (quote.quota_fen, names.get(quote.program_id)) == (expected_quota, expected_program), op
                assert quote.quota_fen + quote.copay_fen == price and quote.copay_fen >= 0
                orders.append((elder, RefOrder(order, expected_program, expected_quota)))
                continue
            if not orders:
                continue
            elder, ref = orders[op[1] % len(orders)]
            visit = visit_of(ref.order, org, actual_price_fen=op[2] if op[0] == "capture" else None)
            if op[0] == "release":
                await billing.release(s, rt.clock, ref.order)
                reference.give_back(elder, ref)
                if ref.status == "reserved":
                    ref.status = "released"
            elif op[0] == "exclude":
                if ref.status == "captured":
                    try:
                        await billing.exclude(s, rt.clock, visit, "rejected: too_short")
                    except InvalidState:
                        pass
                    else:
                        raise AssertionError("excluding a captured visit must be refused")
                else:
                    await billing.exclude(s, rt.clock, visit, "rejected: too_short")
                    reference.give_back(elder, ref)
                    if ref.status == "reserved":
                        ref.status = "excluded"
            elif op[0] == "capture" and ref.status != "captured":
                await billing.capture(s, rt.clock, visit)
                reference.capture(elder, ref, op[2])
                ref.status = "captured"
        await _check(rt, elders, programs, reference)


async def _check(rt: Runtime, elders: list[Any], programs: dict[str, Program], reference: Reference) -> None:
    async with rt.database.unit_of_work() as s:
        verdict = await verify_ledger(s)
        assert verdict.ok, verdict.summary()
        for name, program in programs.items():
            row = (await s.execute(select(Program.reserved_fen, Program.used_fen)
                                   .where(Program.id == program.id))).one()
            assert list(row) == reference.budget[name]
            assert row[0] + row[1] <= PROGRAMS[name]["budget"]
        for i, elder in enumerate(elders):
            for name, program in programs.items():
                got = (await s.execute(select(Entitlement.reserved_fen, Entitlement.used_fen).where(
                    Entitlement.elder_id == elder.id, Entitlement.program_id == program.id))).one_or_none()
                assert list(got or (0, 0)) == reference.ent.get((i, name), [0, 0])


def _run_in_own_loop(base: Settings, ops: list[Op]) -> None:
    # a fresh event loop in a thread of its own: the test session's loop stays untouched
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _scenario(base, ops)).result()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=operations)
def test_random_sequences_match_the_reference_and_never_overdraw(base_settings: Settings, ops: list[Op]) -> None:
    _run_in_own_loop(base_settings, ops)
