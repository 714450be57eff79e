"""Prices from the catalogue: per visit, or per hour rounded up to whole half hours (decisions §3). Pure."""

from __future__ import annotations

import math
from datetime import date, datetime
from zoneinfo import ZoneInfo


def half_hours(minutes: int) -> int:
    return max(1, math.ceil(minutes / 30))


def price_fen(unit: str, unit_price_fen: int, minutes: int) -> int:
    if unit == "visit":
        return unit_price_fen
    if unit == "hour":
        return math.ceil(unit_price_fen * half_hours(minutes) / 2)
    raise ValueError(f"unknown unit {unit!r}")


def service_month(at: datetime, tz: ZoneInfo) -> date:
    """First day of the month `at` falls in, in local time (an order at 2026-03-31T16:30Z is April's)."""
    local = at.astimezone(tz)
    return date(local.year, local.month, 1)
