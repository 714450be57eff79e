"""Who is entitled to what, and when: programme rules, service months and days in Asia/Shanghai. Pure, no I/O.

Decisions §3–4: a rule's conditions all apply (category, minimum assessment level, minimum age); among an elder's
matching rules in a programme the highest `monthly_quota_fen` wins, ties to the lowest `copay_percent` (then the
earlier rule). Months and days are local to Asia/Shanghai. An elder marked deceased or moved gets no entitlement
from the next local day: the months up to and including the day of the change keep theirs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

SERVICE_TZ = ZoneInfo("Asia/Shanghai")
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True)
class Rule:
    position: int
    monthly_quota_fen: int
    copay_percent: int
    category: str | None = None
    assessment_level_min: int | None = None
    min_age: int | None = None


@dataclass(frozen=True)
class ElderFacts:
    """What billing reads of an elder's record."""

    categories: tuple[str, ...]
    assessment_level: int
    birth_date: date
    region_code: str
    status: str = "active"
    status_changed_at: datetime | None = None


def local_date(at: datetime) -> date:
    return at.astimezone(SERVICE_TZ).date()


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(month: date) -> date:
    return date(month.year + (month.month == 12), month.month % 12 + 1, 1)


def month_of(at: datetime) -> date:
    """The service month (its first day) of an instant, in Asia/Shanghai."""
    return month_start(local_date(at))


def month_bounds(month: date) -> tuple[datetime, datetime]:
    """The month as a half-open UTC-comparable interval of aware datetimes in Asia/Shanghai."""
    start = datetime(month.year, month.month, 1, tzinfo=SERVICE_TZ)
    end_month = next_month(month)
    return start, datetime(end_month.year, end_month.month, 1, tzinfo=SERVICE_TZ)


def parse_month(value: str) -> date:
    """`YYYY-MM` → the month's first day; ValueError otherwise."""
    match = _MONTH.fullmatch(value.strip())
    if match is None or not 1900 <= int(match.group(1)) <= 2999:
        raise ValueError("month must be YYYY-MM (1900-01 to 2999-12)")
    return date(int(match.group(1)), int(match.group(2)), 1)


def format_month(month: date) -> str:
    return f"{month.year:04d}-{month.month:02d}"


def age_on(birth_date: date, day: date) -> int:
    """Completed years on `day` (someone born on 29 February turns a year older on 1 March in common years)."""
    years = day.year - birth_date.year
    if (day.month, day.day) < (birth_date.month, birth_date.day):
        years -= 1
    return years


def eligible_on(elder: ElderFacts, day: date) -> bool:
    """Whether the elder may draw on entitlements on a local day: active, or the day of the change at the latest."""
    if elder.status == "active":
        return True
    if elder.status_changed_at is None:
        return False
    return day <= local_date(elder.status_changed_at)


def eligible_in_month(elder: ElderFacts, month: date) -> bool:
    """Whether the elder holds entitlements in a month at all (active on at least its first day)."""
    return eligible_on(elder, month_start(month))


def rule_matches(rule: Rule, elder: ElderFacts, month: date) -> bool:
    """All of a rule's conditions hold; age is counted on the month's first day (eligible from the month after the
    birthday, or the birthday's month when it falls on the 1st)."""
    if rule.category is not None and rule.category not in elder.categories:
        return False
    if rule.assessment_level_min is not None and elder.assessment_level < rule.assessment_level_min:
        return False
    return rule.min_age is None or age_on(elder.birth_date, month_start(month)) >= rule.min_age


def best_rule(rules: Iterable[Rule], elder: ElderFacts, month: date) -> Rule | None:
    """The matching rule with the highest quota; ties to the lowest co-pay, then the earlier rule."""
    matching = [r for r in rules if rule_matches(r, elder, month)]
    if not matching:
        return None
    return min(matching, key=lambda r: (-r.monthly_quota_fen, r.copay_percent, r.position))


def period_covers_month(period_start: date, period_end: date, month: date) -> bool:
    """A programme period covers a service month when they overlap (a programme starting mid-month serves it)."""
    return period_start < next_month(month) and period_end >= month_start(month)

