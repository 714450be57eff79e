"""Prices from the catalogue: per visit, or per hour rounded up to whole half hours (decisions §3). Pure."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo


def half_hours(minutes: int) -> int:
    """Started half hours: 1–30 minutes is one, 31–60 two; no service time is none (it bills nothing)."""
    if minutes < 0:
        raise ValueError("minutes must not be negative")
    return -(-minutes // 30)


def price_fen(unit: str, unit_price_fen: int, minutes: int) -> int:
    if unit == "visit":
        return unit_price_fen
    if unit == "hour":
        return -(-unit_price_fen * half_hours(minutes) // 2)  # integer ceil: no float rounding of large fen
    raise ValueError(f"unknown unit {unit!r}")


def service_month(at: datetime, tz: ZoneInfo) -> date:
    """First day of the month `at` falls in, in local time (an order at 2026-03-31T16:30Z is April's)."""
    local = at.astimezone(tz)
    return date(local.year, local.month, 1)
