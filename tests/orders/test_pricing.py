"""Prices of delivered service: per visit, or per started half hour; no service time bills nothing (issue 13 #11)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orders.pricing import half_hours, price_fen


def _started_half_hours(minutes: int) -> int:
    """Brute force: the fewest whole half hours that cover the minutes."""
    units = 0
    while units * 30 < minutes:
        units += 1
    return units


def test_no_service_time_bills_nothing() -> None:
    assert half_hours(0) == 0
    assert price_fen("hour", 4500, 0) == 0


@given(minutes=st.integers(min_value=0, max_value=24 * 60), unit_price=st.integers(min_value=0, max_value=10**9))
def test_hourly_prices_are_started_half_hours_at_half_the_hourly_price(minutes: int, unit_price: int) -> None:
    units = _started_half_hours(minutes)
    assert half_hours(minutes) == units
    price = price_fen("hour", unit_price, minutes)
    assert 2 * price in (unit_price * units, unit_price * units + 1)  # half a fen rounds up, never down
    assert (price == 0) == (minutes == 0 or unit_price == 0)
    assert price <= price_fen("hour", unit_price, minutes + 1)


@given(minutes=st.integers(min_value=0, max_value=24 * 60), unit_price=st.integers(min_value=0, max_value=10**9))
def test_per_visit_prices_do_not_depend_on_time(minutes: int, unit_price: int) -> None:
    assert price_fen("visit", unit_price, minutes) == unit_price
