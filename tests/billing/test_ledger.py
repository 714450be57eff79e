"""The pure rules: price splits, postings and their balances, eligibility and months (no database)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from hypothesis import given
from hypothesis import strategies as st

from billing import ledger
from billing.rules import (
    ElderFacts,
    Rule,
    age_on,
    best_rule,
    eligible_in_month,
    eligible_on,
    month_bounds,
    month_of,
    parse_month,
    period_covers_month,
)

fen = st.integers(0, 10_000_000)
percent = st.integers(0, 100)


@given(price=fen, pct=percent)
def test_copay_is_the_percentage_rounded_up(price: int, pct: int) -> None:
    assert ledger.copay_for(price, pct) * 100 >= price * pct > (ledger.copay_for(price, pct) - 1) * 100


@given(price=fen, pct=percent, entitlement=st.integers(-100, 10**6), budget=st.integers(-100, 10**6))
def test_a_split_adds_up_and_never_takes_more_than_remains(price: int, pct: int, entitlement: int,
                                                          budget: int) -> None:
    split = ledger.split_price(price, pct, entitlement_remaining=entitlement, budget_remaining=budget)
    assert split.quota_fen + split.copay_fen == price
    assert 0 <= split.quota_fen <= max(0, min(entitlement, budget))
    assert split.copay_fen >= ledger.copay_for(price, pct)


@given(actual=fen, pct=percent, reserved=fen)
def test_a_capture_never_exceeds_its_reservation(actual: int, pct: int, reserved: int) -> None:
    split = ledger.capture_split(actual, pct, reserved_fen=reserved)
    assert 0 <= split.quota_fen <= reserved
    assert split.quota_fen + split.copay_fen == actual


movements = st.lists(st.tuples(st.sampled_from(["reserve", "release", "capture"]), st.integers(0, 5),
                               st.integers(0, 20_000)), max_size=60)


@given(moves=movements, quota=st.integers(0, 50_000), budget=st.integers(0, 80_000))
def test_postings_built_by_the_rules_balance_and_never_overdraw(moves: list[tuple[str, int, int]], quota: int,
                                                               budget: int) -> None:
    """A miniature service: entitlements of six elders in one programme, moved only through `ledger`."""
    program = uuid.uuid4()
    entitlements = [uuid.uuid4() for _ in range(6)]
    open_orders: list[tuple[uuid.UUID, uuid.UUID, int]] = []  # (order, entitlement, held)
    balances = ledger.apply({}, [ledger.fund(program, budget)])
    for kind, who, amount in moves:
        if kind == "reserve":
            ent = entitlements[who]
            room = (quota - balances.get(("entitlement_reserved", ent), 0)
                    - balances.get(("entitlement_used", ent), 0))
            split = ledger.split_price(amount, 10, entitlement_remaining=room,
                                       budget_remaining=balances.get(("program_available", program), 0))
            order = uuid.uuid4()
            posting = ledger.reserve(order, program, ent, split.quota_fen)
            open_orders.append((order, ent, split.quota_fen))
        elif open_orders:
            order, ent, held = open_orders.pop(amount % len(open_orders))
            if kind == "release":
                posting = ledger.release(order, program, ent, held)
            else:
                captured = ledger.capture_split(amount, 10, reserved_fen=held).quota_fen
                posting = ledger.capture(order, program, ent, reserved_fen=held, captured_fen=captured)
        else:
            continue
        assert posting.balanced
        balances = ledger.apply(balances, [posting])
        assert not ledger.overdrawn(balances)
        for ent in entitlements:
            used = balances.get(("entitlement_reserved", ent), 0) + balances.get(("entitlement_used", ent), 0)
            assert used <= quota
    assert sum(balances.values()) == 0
    assert sum(held for _, _, held in open_orders) == sum(
        balances.get(("entitlement_reserved", ent), 0) for ent in entitlements)


def test_the_month_of_an_instant_is_taken_in_shanghai() -> None:
    assert month_of(datetime(2026, 3, 31, 16, 30, tzinfo=UTC)) == date(2026, 4, 1)
    assert month_of(datetime(2026, 3, 31, 15, 59, 59, tzinfo=UTC)) == date(2026, 3, 1)
    assert month_of(datetime(2026, 12, 31, 16, 0, tzinfo=UTC)) == date(2027, 1, 1)
    start, end = month_bounds(date(2026, 4, 1))
    assert start.astimezone(UTC) == datetime(2026, 3, 31, 16, 0, tzinfo=UTC)
    assert end.astimezone(UTC) == datetime(2026, 4, 30, 16, 0, tzinfo=UTC)
    assert parse_month("2026-04") == date(2026, 4, 1)


def test_ages_count_completed_years_and_periods_overlap_months() -> None:
    assert age_on(date(1946, 4, 2), date(2026, 4, 1)) == 79
    assert age_on(date(1946, 4, 1), date(2026, 4, 1)) == 80
    assert age_on(date(1944, 2, 29), date(2026, 3, 1)) == 82
    assert period_covers_month(date(2026, 3, 15), date(2026, 12, 31), date(2026, 3, 1))
    assert not period_covers_month(date(2026, 4, 1), date(2026, 12, 31), date(2026, 3, 1))
    assert not period_covers_month(date(2025, 1, 1), date(2026, 2, 28), date(2026, 3, 1))


def test_the_highest_quota_wins_ties_to_the_lower_copay() -> None:
    elder = ElderFacts(categories=("dibao", "gaoling"), assessment_level=3, birth_date=date(1940, 5, 1),
                       region_code="150625")
    rules = [Rule(0, 20_000, 10, category="dibao"), Rule(1, 30_000, 20, assessment_level_min=3),
             Rule(2, 30_000, 5, min_age=80), Rule(3, 99_000, 0, category="tekun")]
    chosen = best_rule(rules, elder, date(2026, 3, 1))
    assert chosen is not None and chosen.position == 2
    assert best_rule([Rule(0, 1, 0, min_age=90)], elder, date(2026, 3, 1)) is None


def test_a_deceased_elder_keeps_the_day_of_the_change_and_nothing_after() -> None:
    changed = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)  # 23:00 on the 10th in Shanghai
    elder = ElderFacts(categories=("dibao",), assessment_level=0, birth_date=date(1940, 1, 1), region_code="150625",
                       status="deceased", status_changed_at=changed)
    assert eligible_on(elder, date(2026, 3, 10))
    assert not eligible_on(elder, date(2026, 3, 11))
    assert eligible_in_month(elder, date(2026, 3, 1))
    assert not eligible_in_month(elder, date(2026, 4, 1))
