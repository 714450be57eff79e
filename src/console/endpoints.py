"""The dispatcher console: the page (`/console`), its first picture (`/v1/console/snapshot`) and its live feed
(`/v1/console/stream`, server-sent events authenticated by the session cookie, since EventSource sends no headers)."""

from __future__ import annotations

from datetime import datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sse_starlette import EventSourceResponse

from console import feed
from devices.models import Alarm
from dispatch.offers import pending_expiry
from kernel.authz import Access
from kernel.event_stream import event_source
from kernel.http import RuntimeDep, SessionDep, authorize
from orders.service import needing_action
from supervision.response_times import summarize

STATIC = Path(__file__).with_name("static")
router = APIRouter(tags=["console"])
ViewConsole = Annotated[Access, Depends(authorize("console.view"))]


@router.get("/console", include_in_schema=False)
async def console_page() -> FileResponse:
    """The page shell is public; everything it shows comes through authenticated calls."""
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache", "Content-Security-Policy":
                                 "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                 "connect-src 'self'; media-src 'self' data:; frame-ancestors 'none'"})


class OrderCard(BaseModel):
    id: str
    elder_id: str
    elder_name: str
    lat: float
    lon: float
    service_code: str
    priority: str
    status: str
    created_at: datetime
    offer_expires_at: datetime | None


class Snapshot(BaseModel):
    now: datetime
    last_event_id: int
    orders: list[OrderCard]
    counters: dict[str, Any]


class AlarmCounters(BaseModel):
    open_alarms: int  # open (not yet acknowledged) alarms in the caller's region
    since: datetime  # the start of today, Asia/Shanghai
    alarms_today: int  # received since then
    acknowledged_today: int
    ack_p50_s: float | None  # median seconds from received to acknowledged, over today's acknowledged alarms


async def alarm_counters(session: AsyncSession, access: Access, now: datetime, tz: tzinfo) -> AlarmCounters:
    """The console's alarm counters: what is open now, and how fast alarms received today (the local calendar day)
    were acknowledged — the supervisors' figure (`supervision.response_times`), in the dispatcher's region."""
    start = datetime.combine(now.astimezone(tz).date(), time(0), tzinfo=tz)
    opened = await session.scalar(select(func.count()).select_from(Alarm).where(
        access.region_clause(Alarm.region_code), Alarm.status == "open"))
    today = await summarize(session, access, region_code=None, start=start, end=now + timedelta(seconds=1), now=now)
    return AlarmCounters(open_alarms=int(opened or 0), since=start, alarms_today=today.count,
                         acknowledged_today=today.acknowledged, ack_p50_s=today.p50_s)


@router.get("/v1/console/counters", response_model=AlarmCounters)
async def counters(session: SessionDep, runtime: RuntimeDep, access: ViewConsole) -> AlarmCounters:
    """The alarm counters alone: the console refreshes them when an alarm is raised, acknowledged or resolved."""
    return await alarm_counters(session, access, runtime.clock.now(), runtime.settings.tz)


@router.get("/v1/console/snapshot", response_model=Snapshot)
async def snapshot(session: SessionDep, runtime: RuntimeDep, access: ViewConsole) -> Snapshot:
    """What the console shows when it (re)connects; the stream carries changes after `last_event_id`."""
    last = await feed.latest_seq(runtime)
    rows = await needing_action(session, access)
    expiry = await pending_expiry(session, [o.id for o, *_ in rows])
    cards = [OrderCard(id=str(o.id), elder_id=str(o.elder_id), elder_name=name, lat=lat, lon=lon,
                       service_code=o.service_code, priority=o.priority, status=o.status, created_at=o.created_at,
                       offer_expires_at=expiry.get(o.id)) for o, lat, lon, name in rows]
    alarm_figures = await alarm_counters(session, access, runtime.clock.now(), runtime.settings.tz)
    counters = {"unfulfilled": sum(c.status == "unfulfilled" for c in cards),
                "offered": sum(c.status == "offered" for c in cards), **alarm_figures.model_dump(mode="json")}
    return Snapshot(now=runtime.clock.now(), last_event_id=last, orders=cards, counters=counters)


@router.get("/v1/console/stream", response_class=EventSourceResponse)
async def stream(request: Request, runtime: RuntimeDep, access: ViewConsole,
                 last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None) -> EventSourceResponse:
    """Changes to orders, offers, visits and alarms in the caller's region, as they commit. `id:` is the event's
    `stream_seq`; reconnecting with `Last-Event-ID` replays what was missed."""
    return event_source(request, feed.follow(runtime, access, last_event_id))
