"""Alarm response times for supervisors: how fast a person acknowledged, against the telecare answer targets.

Measured from `received_at` (the message reached vnh) to `acknowledged_at` (a dispatcher acknowledged), as
decisions §5 says; the device's own clock lag (`received_at - device_ts`) is reported beside it, never mixed in.

For each threshold T (60 s and 180 s) every alarm is exactly one of: hit (acknowledged within T), late
(acknowledged after T), missed (not acknowledged and older than T: it counts against the share, it is not pending)
or pending (not acknowledged and younger than T: its outcome is not known yet). "Within T" is hits over hits, late and
missed; pending alarms are left out of it and reported beside it, so a report taken mid-shift neither counts fresh
alarms as failures nor hides the old unanswered ones. A target is met (True) or failed (False) only when no pending
alarm could change the verdict; otherwise it is None.

Targets (design.md §4): 98.5% within 60 s (BS/EN practice); 97.5% within 60 s and 99% within 180 s (UK TSA code).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Float, case, cast, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from devices.models import Alarm
from kernel.authz import Access, region_filter

LOCAL_TZ = "Asia/Shanghai"


@dataclass(frozen=True)
class Target:
    name: str
    within_s: int
    share_pct: float


TARGETS = (
    Target("bs_en_60s", 60, 98.5),
    Target("tsa_60s", 60, 97.5),
    Target("tsa_180s", 180, 99.0),
)


@dataclass(frozen=True)
class ResponseTimes:
    """Figures for one group of alarms (all of them, one region, one day or one type)."""

    key: str | None
    count: int  # alarms received in the period
    acknowledged: int
    unacknowledged: int
    p50_s: float | None  # seconds from received to acknowledged, over acknowledged alarms
    p90_s: float | None
    p99_s: float | None
    max_s: float | None
    within_60s_pct: float | None  # of alarms whose 60 s outcome is known
    within_180s_pct: float | None
    pending_60s: int  # unacknowledged alarms younger than 60 s: not yet counted either way
    pending_180s: int
    missed_60s: int  # unacknowledged alarms older than 60 s: counted against the 60 s share
    missed_180s: int
    device_lag_p50_s: float | None  # received_at - device ts, for alarms a device raised
    device_lag_p99_s: float | None
    targets: dict[str, bool | None] = field(default_factory=dict)  # None while nothing is known


@dataclass(frozen=True)
class ResponseReport:
    start: datetime
    end: datetime
    overall: ResponseTimes
    by_region: list[ResponseTimes]
    by_day: list[ResponseTimes]  # Asia/Shanghai calendar days
    by_type: list[ResponseTimes]


def _seconds(later: Any, earlier: Any) -> ColumnElement[float]:
    return cast(func.extract("epoch", later - earlier), Float)


def _pct(numerator: ColumnElement[Any], denominator: ColumnElement[Any]) -> ColumnElement[float]:
    return case((denominator > 0, cast(numerator, Float) * 100.0 / denominator), else_=None)


def _measures(now: datetime) -> list[ColumnElement[Any]]:
    to_ack = _seconds(Alarm.acknowledged_at, Alarm.received_at)
    lag = _seconds(Alarm.received_at, Alarm.device_ts)
    acked = Alarm.acknowledged_at.is_not(None)
    age = _seconds(literal(now), Alarm.received_at)

    def within(limit: int) -> list[ColumnElement[Any]]:
        hit = func.count().filter(acked, to_ack <= limit)
        known = func.count().filter(acked | (age >= limit))
        return [_pct(hit, known).label(f"within{limit}"), hit.label(f"hit{limit}"), known.label(f"known{limit}"),
                func.count().filter(~acked, age < limit).label(f"pending{limit}"),
                func.count().filter(~acked, age >= limit).label(f"missed{limit}")]

    return [
        func.count().label("count"),
        func.count().filter(acked).label("acknowledged"),
        func.percentile_cont(0.5).within_group(to_ack).label("p50"),
        func.percentile_cont(0.9).within_group(to_ack).label("p90"),
        func.percentile_cont(0.99).within_group(to_ack).label("p99"),
        func.max(to_ack).label("max"),
        *within(60),
        *within(180),
        func.percentile_cont(0.5).within_group(lag).label("lag50"),
        func.percentile_cont(0.99).within_group(lag).label("lag99"),
    ]


def target_met(hits: int, known: int, pending: int, *, share_pct: float) -> bool | None:
    """Whether `share_pct` of the alarms were acknowledged in time: decided only when every pending alarm, hit or
    missed, would leave the verdict as it is (None when nothing is known or the pending ones could tip it)."""
    total = known + pending
    if total == 0:
        return None
    worst = hits * 100.0 / total >= share_pct  # every pending alarm missed
    best = (hits + pending) * 100.0 / total >= share_pct  # every pending alarm answered in time
    return worst if worst == best else None


def _row(key: str | None, r: Any) -> ResponseTimes:
    def rounded(value: float | None, digits: int = 1) -> float | None:
        return None if value is None else round(float(value), digits)

    outcomes = {60: (r.hit60, r.known60, r.pending60), 180: (r.hit180, r.known180, r.pending180)}
    targets = {t.name: target_met(*outcomes[t.within_s], share_pct=t.share_pct) for t in TARGETS}
    return ResponseTimes(
        key=key, count=r.count, acknowledged=r.acknowledged, unacknowledged=r.count - r.acknowledged,
        p50_s=rounded(r.p50), p90_s=rounded(r.p90), p99_s=rounded(r.p99), max_s=rounded(r.max),
        within_60s_pct=rounded(r.within60, 2), within_180s_pct=rounded(r.within180, 2), pending_60s=r.pending60,
        pending_180s=r.pending180, missed_60s=r.missed60, missed_180s=r.missed180,
        device_lag_p50_s=rounded(r.lag50), device_lag_p99_s=rounded(r.lag99), targets=targets)


async def summarize(session: AsyncSession, access: Access, *, region_code: str | None, start: datetime,
                    end: datetime, now: datetime | None = None, alarm_type: str | None = None) -> ResponseTimes:
    """The overall figures for alarms received in [start, end) in the caller's scope (and `region_code`)."""
    query = _scoped(select(*_measures(now or end)), access, region_code, start, end, alarm_type)
    return _row(None, (await session.execute(query)).one())


async def report(session: AsyncSession, access: Access, *, region_code: str | None, start: datetime, end: datetime,
                 now: datetime, alarm_type: str | None = None) -> ResponseReport:
    """Overall figures and the same figures per region, per local day and per alarm type."""
    measures = _measures(now)
    overall = await summarize(session, access, region_code=region_code, start=start, end=end, now=now,
                              alarm_type=alarm_type)
    groups: dict[str, list[ResponseTimes]] = {}
    day = func.to_char(func.timezone(LOCAL_TZ, Alarm.received_at), "YYYY-MM-DD")
    for name, key in (("region", Alarm.region_code), ("day", day), ("type", Alarm.type)):
        query = _scoped(select(key.label("key"), *measures), access, region_code, start, end, alarm_type)
        rows = (await session.execute(query.group_by(key).order_by(key))).all()
        groups[name] = [_row(str(r.key), r) for r in rows]
    return ResponseReport(start=start, end=end, overall=overall, by_region=groups["region"],
                          by_day=groups["day"], by_type=groups["type"])


def _scoped(query: Any, access: Access, region_code: str | None, start: datetime, end: datetime,
            alarm_type: str | None) -> Any:
    query = query.select_from(Alarm).where(access.region_clause(Alarm.region_code), Alarm.received_at >= start,
                                           Alarm.received_at < end)
    if region_code:
        query = query.where(region_filter(region_code, Alarm.region_code))
    if alarm_type:
        query = query.where(Alarm.type == alarm_type)
    return query
