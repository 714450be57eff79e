"""The interface orders and dispatch call: reserve at intake, release, capture, exclude, contracts."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import select, text

from billing import service as billing
from billing.models import Capture, Entitlement, Exclusion, Program, Reservation
from billing.rules import month_of
from kernel.clock import ManualClock
from kernel.errors import InvalidState
from kernel.outbox import OutboxEvent
from kernel.runtime import Runtime
from tests.billing.support import Order, assert_ledger_sound, create_contract, create_program, visit_of
from tests.db_errors import refused
from tests.factories import HANGGIN, create_elder, create_organization


async def _entitlement(runtime: Runtime, elder_id: object, program_id: object, month: date = date(2026, 3, 1)
                       ) -> Entitlement:
    async with runtime.database.unit_of_work() as s:
        found = await s.scalar(select(Entitlement).where(Entitlement.elder_id == elder_id,
                                                         Entitlement.program_id == program_id,
                                                         Entitlement.month == month))
        assert found is not None
        return found


async def _program(runtime: Runtime, program_id: object) -> Program:
    async with runtime.database.unit_of_work() as s:
        found = await s.scalar(select(Program).where(Program.id == program_id)
                               .execution_options(populate_existing=True))
        assert found is not None
        return found


async def test_reservation_splits_the_price_with_the_copay_rounded_up(runtime: Runtime) -> None:
    elder = await create_elder(runtime)
    program = await create_program(runtime, rules=[{"category": "dibao", "monthly_quota_fen": 20_000,
                                                    "copay_percent": 15}])
    order = Order(elder.id, price_fen=4501)
    async with runtime.database.unit_of_work() as s:
        quote = await billing.quote_and_reserve(s, runtime.clock, order)
    assert (quote.price_fen, quote.copay_fen, quote.quota_fen) == (4501, 676, 3825)  # ceil(675.15) = 676
    assert quote.program_id == program.id
    entitlement = await _entitlement(runtime, elder.id, program.id)
    assert (entitlement.quota_fen, entitlement.reserved_fen, entitlement.used_fen) == (20_000, 3825, 0)
    assert (await _program(runtime, program.id)).reserved_fen == 3825
    async with runtime.database.unit_of_work() as s:
        events = (await s.scalars(select(OutboxEvent.event_type).where(
            OutboxEvent.aggregate_id == str(order.id)))).all()
        assert "billing.reservation.created" in events
        await assert_ledger_sound(s)


async def test_a_second_quote_for_the_same_order_answers_the_first_and_reserves_nothing_more(
        runtime: Runtime) -> None:
    elder = await create_elder(runtime)
    program = await create_program(runtime)
    order = Order(elder.id, price_fen=4500)
    async with runtime.database.unit_of_work() as s:
        first = await billing.quote_and_reserve(s, runtime.clock, order)
    async with runtime.database.unit_of_work() as s:
        again = await billing.quote_and_reserve(s, runtime.clock, order)
    assert first == again
    assert (await _entitlement(runtime, elder.id, program.id)).reserved_fen == first.quota_fen == 4050


async def test_the_quota_part_is_capped_by_the_remaining_entitlement_and_the_rest_is_copay(runtime: Runtime) -> None:
    elder = await create_elder(runtime)
    await create_program(runtime, rules=[{"category": "dibao", "monthly_quota_fen": 5_000, "copay_percent": 10}])
    async with runtime.database.unit_of_work() as s:
        first = await billing.quote_and_reserve(s, runtime.clock, Order(elder.id, price_fen=4500))
        second = await billing.quote_and_reserve(s, runtime.clock, Order(elder.id, price_fen=4500))
        third = await billing.quote_and_reserve(s, runtime.clock, Order(elder.id, price_fen=4500))
        await assert_ledger_sound(s)
    assert (first.quota_fen, first.copay_fen) == (4050, 450)
    assert (second.quota_fen, second.copay_fen) == (950, 3550)
    assert (third.quota_fen, third.copay_fen, third.program_id) == (0, 4500, None)


async def test_the_quota_part_is_capped_by_the_remaining_budget(runtime: Runtime) -> None:
    rich, poor = await create_elder(runtime), await create_elder(runtime)
    program = await create_program(runtime, budget_fen=6_000)
    async with runtime.database.unit_of_work() as s:
        first = await billing.quote_and_reserve(s, runtime.clock, Order(rich.id, price_fen=4500))
        second = await billing.quote_and_reserve(s, runtime.clock, Order(poor.id, price_fen=4500))
        await assert_ledger_sound(s)
    assert first.quota_fen == 4050
    assert (second.quota_fen, second.copay_fen) == (1950, 2550)
    assert (await _program(runtime, program.id)).reserved_fen == 6_000


async def test_orders_draw_on_the_programme_ending_first_then_the_next(runtime: Runtime) -> None:
    elder = await create_elder(runtime)
    late = await create_program(runtime, name="全年项目", period_end="2026-12-31")
    early = await create_program(runtime, name="一季度项目", period_end="2026-03-31",
                                 rules=[{"category": "dibao", "monthly_quota_fen": 4_050, "copay_percent": 10}])
    async with runtime.database.unit_of_work() as s:
        first = await billing.quote_and_reserve(s, runtime.clock, Order(elder.id, price_fen=4500))
        second = await billing.quote_and_reserve(s, runtime.clock, Order(elder.id, price_fen=4500))
    assert (first.program_id, first.quota_fen) == (early.id, 4050)
    assert (second.program_id, second.quota_fen) == (late.id, 4050)


async def test_no_quota_for_an_uncovered_service_region_or_ineligible_elder(runtime: Runtime) -> None:
    eligible = await create_elder(runtime)
    ineligible = await create_elder(runtime, categories=["gaoling"])
    elsewhere = await create_elder(runtime, region_code="150602")
    await create_program(runtime)
    async with runtime.database.unit_of_work() as s:
        uncovered = await billing.quote_and_reserve(s, runtime.clock,
                                                    Order(eligible.id, price_fen=8000, service_code="bathing"))
        not_eligible = await billing.quote_and_reserve(s, runtime.clock, Order(ineligible.id, price_fen=4500))
        other_region = await billing.quote_and_reserve(s, runtime.clock,
                                                       Order(elsewhere.id, price_fen=4500, region_code="150602"))
        free = await billing.quote_and_reserve(s, runtime.clock, Order(eligible.id, price_fen=0))
    for quote in (uncovered, not_eligible, other_region, free):
        assert quote.quota_fen == 0 and quote.program_id is None
        assert quote.copay_fen == quote.price_fen


async def test_the_highest_quota_rule_wins_among_matching_rules(runtime: Runtime) -> None:
    elder = await create_elder(runtime, categories=["dibao", "gaoling"], assessment_level=3)
    program = await create_program(runtime, rules=[
        {"category": "dibao", "monthly_quota_fen": 20_000, "copay_percent": 10},
        {"assessment_level_min": 3, "monthly_quota_fen": 40_000, "copay_percent": 20},
        {"min_age": 90, "monthly_quota_fen": 90_000, "copay_percent": 0},  # 82 years old: does not match
        {"assessment_level_min": 2, "monthly_quota_fen": 40_000, "copay_percent": 5},  # same quota, lower co-pay
    ])
    async with runtime.database.unit_of_work() as s:
        quote = await billing.quote_and_reserve(s, runtime.clock, Order(elder.id, price_fen=10_000))
    assert (quote.quota_fen, quote.copay_fen) == (9_500, 500)
    entitlement = await _entitlement(runtime, elder.id, program.id)
    assert (entitlement.quota_fen, entitlement.copay_percent, entitlement.rule_position) == (40_000, 5, 3)


async def test_release_gives_the_quota_back_once(runtime: Runtime) -> None:
    elder = await create_elder(runtime)
    program = await create_program(runtime)
    order = Order(elder.id, price_fen=4500)
    async with runtime.database.unit_of_work() as s:
        await billing.quote_and_reserve(s, runtime.clock, order)
        await billing.release(s, runtime.clock, order)
        await billing.release(s, runtime.clock, order)
        await assert_ledger_sound(s)
    assert (await _entitlement(runtime, elder.id, program.id)).reserved_fen == 0
    assert (await _program(runtime, program.id)).reserved_fen == 0


async def test_capture_for_less_returns_the_rest_and_more_becomes_copay(runtime: Runtime) -> None:
    elder = await create_elder(runtime)
    org = await create_organization(runtime)
    program = await create_program(runtime)
    shorter, longer = Order(elder.id, price_fen=9000), Order(elder.id, price_fen=4500)
    async with runtime.database.unit_of_work() as s:
        await billing.quote_and_reserve(s, runtime.clock, shorter)  # 8100 reserved
        await billing.quote_and_reserve(s, runtime.clock, longer)  # 4050 reserved
        await billing.capture(s, runtime.clock, visit_of(shorter, org, actual_price_fen=4500))
        await billing.capture(s, runtime.clock, visit_of(longer, org, actual_price_fen=6750))
        await billing.capture(s, runtime.clock, visit_of(longer, org, actual_price_fen=6750))  # again: nothing
        captures = {c.order_id: c for c in (await s.scalars(select(Capture))).all()}
        await assert_ledger_sound(s)
    assert (captures[shorter.id].quota_fen, captures[shorter.id].copay_fen) == (4050, 450)
    assert (captures[longer.id].quota_fen, captures[longer.id].copay_fen) == (4050, 2700)
    entitlement = await _entitlement(runtime, elder.id, program.id)
    assert (entitlement.reserved_fen, entitlement.used_fen) == (0, 8100)
    assert (await _program(runtime, program.id)).used_fen == 8100


async def test_an_exclusion_frees_the_quota_and_a_later_approval_draws_it_again(runtime: Runtime) -> None:
    elder = await create_elder(runtime)
    org = await create_organization(runtime)
    program = await create_program(runtime)
    order = Order(elder.id, price_fen=4500)
    visit = visit_of(order, org)
    async with runtime.database.unit_of_work() as s:
        await billing.quote_and_reserve(s, runtime.clock, order)
        await billing.exclude(s, runtime.clock, visit, "unresolved: far_check_in")
        await billing.exclude(s, runtime.clock, visit, "unresolved: far_check_in")
        held = await _entitlement_in(s, elder.id)
        await billing.capture(s, runtime.clock, visit)
        with pytest.raises(InvalidState):
            await billing.exclude(s, runtime.clock, visit, "rejected: far_check_in: 地址不符")
        await assert_ledger_sound(s)
        exclusions = (await s.scalars(select(Exclusion))).all()
        reservation = await s.get(Reservation, order.id)
    assert held == (0, 0)
    assert [e.reason for e in exclusions] == ["unresolved: far_check_in"]
    assert reservation is not None and reservation.status == "captured"
    entitlement = await _entitlement(runtime, elder.id, program.id)
    assert (entitlement.reserved_fen, entitlement.used_fen) == (0, 4050)


async def _entitlement_in(s: object, elder_id: object) -> tuple[int, int]:
    from sqlalchemy.ext.asyncio import AsyncSession

    assert isinstance(s, AsyncSession)
    row = (await s.execute(select(Entitlement.reserved_fen, Entitlement.used_fen)
                           .where(Entitlement.elder_id == elder_id))).one()
    return row[0], row[1]


async def test_a_visit_without_a_reservation_is_recorded_as_copay_in_its_local_month(runtime: Runtime) -> None:
    elder = await create_elder(runtime)
    org = await create_organization(runtime)
    order = Order(elder.id, price_fen=4500)
    visit = visit_of(order, org, checked_out_at=datetime(2026, 3, 31, 16, 30, tzinfo=UTC))
    async with runtime.database.unit_of_work() as s:
        await billing.capture(s, runtime.clock, visit)
        capture = await s.scalar(select(Capture).where(Capture.visit_id == visit.id))
    assert capture is not None
    assert (capture.quota_fen, capture.copay_fen, capture.program_id) == (0, 4500, None)
    assert capture.service_month == date(2026, 4, 1)


async def test_an_order_at_the_end_of_march_utc_draws_on_april_in_shanghai(runtime: Runtime) -> None:
    assert month_of(datetime(2026, 3, 31, 16, 30, tzinfo=UTC)) == date(2026, 4, 1)
    assert month_of(datetime(2026, 3, 31, 15, 59, tzinfo=UTC)) == date(2026, 3, 1)
    elder = await create_elder(runtime)
    program = await create_program(runtime, rules=[{"category": "dibao", "monthly_quota_fen": 4_050,
                                                    "copay_percent": 10}])
    march = Order(elder.id, price_fen=4500, service_month=month_of(datetime(2026, 3, 31, 15, 59, tzinfo=UTC)))
    april = Order(elder.id, price_fen=4500, service_month=month_of(datetime(2026, 3, 31, 16, 30, tzinfo=UTC)))
    async with runtime.database.unit_of_work() as s:
        in_march = await billing.quote_and_reserve(s, runtime.clock, march)
        in_april = await billing.quote_and_reserve(s, runtime.clock, april)
    assert in_march.quota_fen == in_april.quota_fen == 4050  # each month has its own quota
    assert (await _entitlement(runtime, elder.id, program.id, date(2026, 4, 1))).reserved_fen == 4050


async def test_a_deceased_elder_gets_no_quota_from_the_next_local_day(runtime: Runtime) -> None:
    elder = await create_elder(runtime)
    await create_program(runtime)
    clock = runtime.clock
    assert isinstance(clock, ManualClock)
    clock.set(datetime(2026, 3, 10, 15, 0, tzinfo=UTC))  # 23:00 in Shanghai on the 10th
    async with runtime.database.unit_of_work() as s:
        await s.execute(text("UPDATE elders SET status = 'deceased', status_changed_at = :at WHERE id = :id"),
                        {"at": clock.now(), "id": elder.id})
    async with runtime.database.unit_of_work() as s:
        same_day = await billing.quote_and_reserve(s, clock, Order(elder.id, price_fen=4500))
    clock.advance(timedelta(hours=1, minutes=30))  # 00:30 on the 11th in Shanghai
    async with runtime.database.unit_of_work() as s:
        next_day = await billing.quote_and_reserve(s, clock, Order(elder.id, price_fen=4500))
        next_month = await billing.quote_and_reserve(
            s, clock, Order(elder.id, price_fen=4500, service_month=date(2026, 4, 1)))
    assert same_day.quota_fen == 4050
    assert next_day.quota_fen == next_month.quota_fen == 0


async def test_contracted_organisations_match_region_service_date_and_programme(runtime: Runtime) -> None:
    program = await create_program(runtime)
    contracted = await create_organization(runtime, name="锡尼镇服务中心")
    city_wide = await create_organization(runtime, name="鄂尔多斯市服务公司", region_code="150602")
    self_pay = await create_organization(runtime, name="东胜区家政公司", region_code="150602")
    await create_contract(runtime, contracted, program)
    await create_contract(runtime, city_wide, program, service_codes=["meal_assist"])
    await create_contract(runtime, self_pay, None, region_codes=["150600"], valid_to="2026-06-30")  # the city
    async with runtime.database.unit_of_work() as s:
        quota = await billing.contracted_organizations(s, region_code=HANGGIN, service_code="daily_care",
                                                       on=date(2026, 3, 2), program_id=program.id)
        meals = await billing.contracted_organizations(s, region_code=HANGGIN, service_code="meal_assist",
                                                       on=date(2026, 3, 2), program_id=program.id)
        own = await billing.contracted_organizations(s, region_code=HANGGIN, service_code="daily_care",
                                                     on=date(2026, 3, 2), program_id=None)
        expired = await billing.contracted_organizations(s, region_code=HANGGIN, service_code="daily_care",
                                                         on=date(2026, 7, 1), program_id=None)
    assert quota == {contracted.id}
    assert meals == {city_wide.id}
    assert own == {self_pay.id}
    assert expired == set()


async def test_the_database_refuses_an_overdraft_an_unbalanced_posting_and_edits_to_the_ledger(
        runtime: Runtime) -> None:
    elder = await create_elder(runtime)
    program = await create_program(runtime)
    async with runtime.database.unit_of_work() as s:
        await billing.quote_and_reserve(s, runtime.clock, Order(elder.id, price_fen=4500))
    entitlement = await _entitlement(runtime, elder.id, program.id)
    check, insert_only = asyncpg.CheckViolationError, asyncpg.RaiseError
    for sql, params, kind, rule in [
        ("UPDATE entitlements SET reserved_fen = quota_fen + 1 WHERE id = :id", {"id": entitlement.id}, check,
         {"constraint": "ck_entitlements_quota_not_overdrawn"}),
        ("UPDATE programs SET used_fen = budget_fen WHERE id = :id", {"id": program.id}, check,
         {"constraint": "ck_programs_budget_not_overdrawn"}),
        ("UPDATE ledger_entries SET amount_fen = amount_fen + 1", {}, insert_only,
         {"trigger": "vnh_billing_insert_only", "message": r"^ledger_entries is insert-only \(UPDATE refused\)$"}),
        ("DELETE FROM ledger_postings", {}, insert_only,
         {"trigger": "vnh_billing_insert_only", "message": r"^ledger_postings is insert-only \(DELETE refused\)$"}),
    ]:
        with refused(kind, **rule):
            async with runtime.database.unit_of_work() as s:
                await s.execute(text(sql), params)
    with refused(check, trigger="vnh_ledger_balanced", message=r"^ledger posting \d+ does not balance$"):
        async with runtime.database.unit_of_work() as s:
            await s.execute(text("INSERT INTO ledger_postings (key, kind, program_id, posted_at) "
                                 "VALUES ('x', 'reserve', :id, now())"), {"id": program.id})
            await s.execute(text(
                "INSERT INTO ledger_entries (posting_id, account, account_id, amount_fen) "
                "SELECT id, 'program_available', program_id, 5 FROM ledger_postings WHERE key = 'x'"))
    async with runtime.database.unit_of_work() as s:
        await assert_ledger_sound(s)


async def test_verify_finds_a_balance_that_disagrees_with_its_entries(runtime: Runtime) -> None:
    from billing.verify import verify_ledger

    elder = await create_elder(runtime)
    program = await create_program(runtime)
    async with runtime.database.unit_of_work() as s:
        await billing.quote_and_reserve(s, runtime.clock, Order(elder.id, price_fen=4500))
        await s.execute(text("UPDATE entitlements SET reserved_fen = reserved_fen + 1 WHERE program_id = :p"),
                        {"p": program.id})
        verdict = await verify_ledger(s)
    assert not verdict.ok
    assert any(p.startswith("account balance differs") for p in verdict.problems)
    assert any(p.startswith("entitlement differs from its reservations") for p in verdict.problems)


async def test_a_visit_as_the_orders_model_spells_it_is_billed_too(runtime: Runtime) -> None:
    """orders' Visit row names its check-out `check_out_at` and may carry no price yet."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class VisitRow:
        id: uuid.UUID
        order_id: uuid.UUID
        organization_id: uuid.UUID
        caregiver_id: uuid.UUID
        elder_id: uuid.UUID
        service_code: str
        actual_price_fen: int | None
        check_out_at: datetime | None

    elder = await create_elder(runtime)
    org = await create_organization(runtime)
    await create_program(runtime)
    order = Order(elder.id, price_fen=4500, service_month=date(2026, 4, 1))
    row = VisitRow(uuid.uuid4(), order.id, org.id, uuid.uuid4(), elder.id, "daily_care", None,
                   datetime(2026, 4, 2, 3, tzinfo=UTC))
    async with runtime.database.unit_of_work() as s:
        await billing.quote_and_reserve(s, runtime.clock, order)
        await billing.capture(s, runtime.clock, row)  # type: ignore[arg-type]
        capture = await s.scalar(select(Capture).where(Capture.visit_id == row.id))
    assert capture is not None
    assert (capture.price_fen, capture.quota_fen, capture.served_at) == (4500, 4050, row.check_out_at)



async def test_contracted_programs_of_a_new_organisation_become_contracts_in_its_region(runtime: Runtime) -> None:
    from kernel.errors import Unprocessable
    from tests.conftest import admin_access

    program = await create_program(runtime)
    org = await create_organization(runtime)
    async with runtime.database.unit_of_work() as s:
        ids = await billing.contract_new_organization(s, runtime.clock, admin_access(), organization_id=org.id,
                                                      region_code=org.region_code, program_ids=[str(program.id)])
        assert len(ids) == 1
        served = await billing.contracted_organizations(s, region_code=HANGGIN, service_code="cleaning",
                                                        on=date(2026, 12, 31), program_id=program.id)
        assert served == {org.id}
    with pytest.raises(Unprocessable) as refused:
        async with runtime.database.unit_of_work() as s:
            await billing.contract_new_organization(s, runtime.clock, admin_access(), organization_id=org.id,
                                                    region_code=org.region_code,
                                                    program_ids=[str(program.id), "p-1"])
    assert refused.value.code == "unknown_program" and refused.value.details == {"program_ids": ["p-1"]}


async def test_a_one_fen_order_whose_copay_is_the_whole_price_holds_no_programme(runtime: Runtime) -> None:
    """A split with nothing for the quota (1 fen, the 10 % co-pay rounded up to 1 fen) reserves nothing and names no
    programme: the order is not counted against a programme it draws nothing from."""
    elder = await create_elder(runtime)
    program = await create_program(runtime)
    order = Order(elder.id, price_fen=1)
    async with runtime.database.unit_of_work() as s:
        quote = await billing.quote_and_reserve(s, runtime.clock, order)
        await assert_ledger_sound(s)
        reservation = await s.get(Reservation, order.id)
        postings = await s.scalar(text("select count(*) from ledger_postings where order_id = :o"), {"o": order.id})
    assert (quote.price_fen, quote.quota_fen, quote.copay_fen, quote.program_id) == (1, 0, 1, None)
    assert reservation is not None and reservation.program_id is None and reservation.quota_fen == 0
    assert postings == 0
    assert (await _program(runtime, program.id)).reserved_fen == 0
