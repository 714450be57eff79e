from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from devices import alarms
from kernel.audit import AuditEntry, verify_chain
from kernel.authz import Access, region_filter
from kernel.errors import Unprocessable
from kernel.fields import AwareTime, CountyCode
from kernel.http import RuntimeDep, SessionDep, authorize
from kernel.pagination import Page
from orders import visits
from supervision import anomalies, blacklist, inspections, response_times
from supervision.models import BlacklistEntry, Inspection, InspectionItem

router = APIRouter(tags=["supervision"])

ReadAudit = Annotated[Access, Depends(authorize("audit.read"))]
ReadResponseTimes = Annotated[Access, Depends(authorize("alarms.response_times"))]
VerifyAudit = Annotated[Access, Depends(authorize("audit.verify"))]


class AuditRecord(BaseModel):
    id: str
    at: datetime
    actor_id: str
    actor_role: str
    action: str
    entity: str
    entity_id: str | None
    summary: dict[str, Any]
    outcome: str
    request_id: str | None
    region_code: str | None
    source_ip: str | None = None  # the client address of the HTTP request (auditors see it: their job)
    user_agent: str | None = None


class ChainHeadReport(BaseModel):
    chain_seq: int
    audit_id: str
    hash: str
    count: int
    at: datetime | None = None


class ChainReport(BaseModel):
    intact: bool
    checked: int
    unsealed: int
    first_broken_id: str | None = None
    reason: str | None = None
    # the newest seal rows were deleted with their rows: the head a witness outside the database saw, and the
    # head the chain ends at now
    truncated: bool = False
    witnessed_head: ChainHeadReport | None = None
    found_head: ChainHeadReport | None = None


@router.get("/v1/audit/log", response_model=Page[AuditRecord])
async def audit_log(session: SessionDep, access: ReadAudit,
                    entity: Annotated[str | None, Query(max_length=60)] = None,
                    entity_id: Annotated[str | None, Query(max_length=100)] = None,
                    region_code: Annotated[CountyCode | None, Query()] = None,
                    from_: Annotated[AwareTime | None, Query(alias="from")] = None,
                    to: Annotated[AwareTime | None, Query()] = None,
                    cursor: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
                    limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Page[AuditRecord]:
    """Newest first, in the caller's region: each row carries the region of what it is about (resolved at insert);
    rows about no region (logins, refused requests, system work) are for the `all` scope only."""
    query = select(AuditEntry).where(access.region_clause(AuditEntry.region_code))
    if region_code:
        query = query.where(region_filter(region_code, AuditEntry.region_code))
    if entity:
        query = query.where(AuditEntry.entity == entity)
    if entity_id:
        query = query.where(AuditEntry.entity_id == entity_id)
    if from_:
        query = query.where(AuditEntry.at >= from_)
    if to:
        query = query.where(AuditEntry.at < to)
    if cursor is not None:
        query = query.where(AuditEntry.id < cursor)
    rows = list((await session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit + 1))).all())
    next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    items = [
        AuditRecord(id=str(r.id), at=r.at, actor_id=r.actor_id, actor_role=r.actor_role, action=r.action,
                    entity=r.entity, entity_id=r.entity_id, summary=r.summary, outcome=r.outcome,
                    request_id=r.request_id, region_code=r.region_code, source_ip=r.source_ip,
                    user_agent=r.user_agent)
        for r in rows[:limit]
    ]
    return Page(items=items, next_cursor=next_cursor)


@router.get("/v1/audit/log/verify", response_model=ChainReport)
async def verify_audit_log(session: SessionDep, runtime: RuntimeDep, access: VerifyAudit) -> ChainReport:
    del access
    verdict = await verify_chain(session, runtime.chain, witnessed=runtime.witnesses.newest())
    witnessed, found = verdict.witnessed_head, verdict.found_head
    return ChainReport(intact=verdict.intact, checked=verdict.checked, unsealed=verdict.unsealed,
                       first_broken_id=verdict.first_broken_id, reason=verdict.reason, truncated=verdict.truncated,
                       witnessed_head=ChainHeadReport.model_validate(witnessed.as_dict()) if witnessed else None,
                       found_head=ChainHeadReport.model_validate(found.as_dict()) if found else None)


# --- auditors' queries, inspections, blacklist ---------------------------------------------------------------

InspectionsWrite = Annotated[Access, Depends(authorize("inspections.write"))]
BlacklistRead = Annotated[Access, Depends(authorize("blacklist.read"))]
BlacklistWrite = Annotated[Access, Depends(authorize("blacklist.write"))]


class AuditedVisit(BaseModel):
    id: str
    order_id: str
    region_code: str
    organization_id: str
    caregiver_id: str
    elder_id: str
    service_code: str
    status: str
    window_start: datetime
    check_in_at: datetime | None
    check_in_distance_m: float | None
    check_out_at: datetime | None
    duration_min: int | None
    outcome: str | None
    confirmed_at: datetime | None
    rating: int | None
    billing: str
    flags: list[str]


@router.get("/v1/audit/visits", response_model=Page[AuditedVisit])
async def audit_visits(session: SessionDep, access: ReadAudit,
                       region_code: Annotated[CountyCode | None, Query()] = None,
                       organization_id: Annotated[uuid.UUID | None, Query()] = None,
                       caregiver_id: Annotated[uuid.UUID | None, Query()] = None,
                       elder_id: Annotated[uuid.UUID | None, Query()] = None,
                       from_: Annotated[AwareTime | None, Query(alias="from")] = None,
                       to: Annotated[AwareTime | None, Query()] = None,
                       flag: Annotated[Literal["far_check_in", "too_short", "overlap", "no_confirmation",
                                               "impossible_travel"] | None, Query()] = None,
                       cursor: Annotated[uuid.UUID | None, Query()] = None,
                       limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Page[AuditedVisit]:
    rows = await visits.search(session, access, region_code=region_code, organization_id=organization_id,
                               caregiver_id=caregiver_id, elder_id=elder_id, start=from_, end=to, flag=flag,
                               limit=limit + 1, after=cursor)
    flags = await visits.flags_of(session, [v.id for v, _ in rows[:limit]])
    items = [AuditedVisit(
        id=str(v.id), order_id=str(v.order_id), region_code=region, organization_id=str(v.organization_id),
        caregiver_id=str(v.caregiver_id), elder_id=str(v.elder_id), service_code=v.service_code, status=v.status,
        window_start=v.window_start, check_in_at=v.check_in_at, check_in_distance_m=v.check_in_distance_m,
        check_out_at=v.check_out_at, duration_min=v.duration_min, outcome=v.outcome, confirmed_at=v.confirmed_at,
        rating=v.rating, billing=v.billing, flags=sorted(f.flag for f in flags[v.id]),
    ) for v, region in rows[:limit]]
    return Page(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


class AnomalyOut(BaseModel):
    kind: str
    visit_id: str
    caregiver_id: str
    organization_id: str
    elder_id: str
    region_code: str
    at: datetime | None
    resolution: str | None
    details: dict[str, Any]


@router.get("/v1/audit/anomalies", response_model=Page[AnomalyOut])
async def audit_anomalies(session: SessionDep, runtime: RuntimeDep, access: ReadAudit,
                          from_: Annotated[AwareTime | None, Query(alias="from")] = None,
                          to: Annotated[AwareTime | None, Query()] = None) -> Page[AnomalyOut]:
    """Far check-ins, too-short and overlapping visits, impossible travel, missing confirmations, billing that nobody
    confirmed, and visits of many elders confirmed from one device or app installation (`shared_confirmation_source`),
    in the caller's region (default: the last 31 days)."""
    end = to or runtime.clock.now()
    start = from_ or end - timedelta(days=31)
    found = await anomalies.find(session, access, start, end,
                                 shared_source_elders=runtime.settings.visits.shared_source_elders)
    return Page(items=[AnomalyOut(**a.__dict__) for a in found])


class ResponseFigures(BaseModel):
    key: str | None = Field(description="the region code, local day (YYYY-MM-DD) or alarm type; null overall")
    count: int = Field(description="alarms received in the period")
    acknowledged: int
    unacknowledged: int
    p50_s: float | None = Field(description="seconds from received by vnh to acknowledged by a person")
    p90_s: float | None
    p99_s: float | None
    max_s: float | None
    within_60s_pct: float | None = Field(description="% acknowledged within 60 s, of alarms whose outcome is known")
    within_180s_pct: float | None
    pending_60s: int = Field(description="unacknowledged alarms younger than 60 s, counted neither way yet")
    pending_180s: int = Field(description="unacknowledged alarms younger than 180 s, counted neither way yet")
    missed_60s: int = Field(description="unacknowledged alarms older than 60 s: misses, in the 60 s share")
    missed_180s: int = Field(description="unacknowledged alarms older than 180 s: misses, in the 180 s share")
    device_lag_p50_s: float | None = Field(description="received_at minus the device's own ts")
    device_lag_p99_s: float | None
    targets: dict[str, bool | None] = Field(
        description="bs_en_60s: 98.5% within 60 s; tsa_60s: 97.5% within 60 s; tsa_180s: 99% within 180 s; null "
                    "while pending alarms could still change the verdict")


class ResponseTimesOut(BaseModel):
    start: datetime
    end: datetime
    overall: ResponseFigures
    by_region: list[ResponseFigures]
    by_day: list[ResponseFigures]
    by_type: list[ResponseFigures]


@router.get("/v1/audit/alarms/response-times", response_model=ResponseTimesOut)
async def alarm_response_times(session: SessionDep, runtime: RuntimeDep, access: ReadResponseTimes,
                               region_code: Annotated[CountyCode | None, Query()] = None,
                               from_: Annotated[AwareTime | None, Query(alias="from")] = None,
                               to: Annotated[AwareTime | None, Query()] = None,
                               type_: Annotated[alarms.AlarmType | None, Query(alias="type")] = None,
                               ) -> ResponseTimesOut:
    """Seconds from an alarm reaching vnh to a person acknowledging it (p50/p90/p99), the share answered within 60 s
    and 180 s against the telecare targets, overall and per region, local day and alarm type, in the caller's region
    (default: the last 31 days)."""
    now = runtime.clock.now()
    end = to or now
    start = from_ or end - timedelta(days=31)
    if start >= end:
        raise Unprocessable("`from` must be before `to`", code="invalid_period")
    if end - start > timedelta(days=366):
        raise Unprocessable("a period of at most 366 days", code="invalid_period")
    found = await response_times.report(session, access, region_code=region_code, start=start, end=end, now=now,
                                        alarm_type=type_)

    def out(r: response_times.ResponseTimes) -> ResponseFigures:
        return ResponseFigures(**r.__dict__)

    return ResponseTimesOut(start=start, end=end, overall=out(found.overall),
                            by_region=[out(r) for r in found.by_region], by_day=[out(r) for r in found.by_day],
                            by_type=[out(r) for r in found.by_type])


class InspectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    region_code: CountyCode
    month: str = Field(pattern=r"^(19|20)\d{2}-(0[1-9]|1[0-2])$")
    sample_size: int = Field(ge=1, le=1000, description="a maximum: a smaller population gives a smaller sample")
    seed: int | None = Field(default=None, ge=0, le=2**62)


class InspectionItemOut(BaseModel):
    visit_id: str
    position: int
    reached: bool | None
    confirmed: bool | None
    notes: str | None
    checked_at: datetime | None


class InspectionOut(BaseModel):
    id: str
    region_code: str
    month: str
    sample_size: int
    seed: int
    population: int
    created_at: datetime
    items: list[InspectionItemOut]


class InspectionResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    visit_id: str
    reached: bool
    confirmed: bool
    notes: str | None = Field(default=None, max_length=2000)


def _inspection_out(inspection: Inspection, items: list[InspectionItem]) -> InspectionOut:
    return InspectionOut(
        id=str(inspection.id), region_code=inspection.region_code, month=inspection.month.strftime("%Y-%m"),
        sample_size=inspection.sample_size, seed=inspection.seed, population=inspection.population,
        created_at=inspection.created_at,
        items=[InspectionItemOut(visit_id=str(i.visit_id), position=i.position, reached=i.reached,
                                 confirmed=i.confirmed, notes=i.notes, checked_at=i.checked_at) for i in items])


@router.post("/v1/audit/inspections", response_model=InspectionOut, status_code=201)
async def create_inspection(data: InspectionCreate, session: SessionDep, runtime: RuntimeDep,
                            access: InspectionsWrite) -> InspectionOut:
    """A reproducible random sample of the month's completed visits for call-back checks (双随机)."""
    year, month = (int(x) for x in data.month.split("-"))
    inspection, _ = await inspections.create_inspection(
        session, runtime, access, region_code=data.region_code, month=date(year, month, 1),
        sample_size=data.sample_size, seed=data.seed)
    await session.flush()
    return _inspection_out(*await inspections.load_inspection(session, access, str(inspection.id)))


@router.get("/v1/audit/inspections/{inspection_id}", response_model=InspectionOut)
async def get_inspection(inspection_id: str, session: SessionDep, access: ReadAudit) -> InspectionOut:
    return _inspection_out(*await inspections.load_inspection(session, access, inspection_id))


@router.post("/v1/audit/inspections/{inspection_id}/results", response_model=InspectionOut)
async def record_result(inspection_id: str, data: InspectionResult, session: SessionDep, runtime: RuntimeDep,
                        access: InspectionsWrite) -> InspectionOut:
    await inspections.record_result(session, runtime, access, inspection_id, data.visit_id, data.reached,
                                    data.confirmed, data.notes)
    await session.flush()
    return _inspection_out(*await inspections.load_inspection(session, access, inspection_id))


class BlacklistCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject_kind: Literal["organization", "caregiver"]
    subject_id: str
    reason: str = Field(min_length=2, max_length=1000)
    valid_from: AwareTime | None = None
    valid_to: AwareTime | None = None


class BlacklistLift(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=2, max_length=1000)


class BlacklistOut(BaseModel):
    id: str
    subject_kind: str
    subject_id: str
    reason: str
    valid_from: datetime
    valid_to: datetime | None
    created_by: str
    lifted_at: datetime | None
    lift_reason: str | None


def _entry_out(e: BlacklistEntry) -> BlacklistOut:
    return BlacklistOut(id=str(e.id), subject_kind=e.subject_kind, subject_id=str(e.subject_id), reason=e.reason,
                        valid_from=e.valid_from, valid_to=e.valid_to, created_by=e.created_by, lifted_at=e.lifted_at,
                        lift_reason=e.lift_reason)


@router.post("/v1/blacklist", response_model=BlacklistOut, status_code=201)
async def add_to_blacklist(data: BlacklistCreate, session: SessionDep, runtime: RuntimeDep,
                           access: BlacklistWrite) -> BlacklistOut:
    entry = await blacklist.add(session, runtime, access, kind=data.subject_kind, subject_id=data.subject_id,
                                reason=data.reason, valid_from=data.valid_from, valid_to=data.valid_to)
    return _entry_out(entry)


@router.get("/v1/blacklist", response_model=Page[BlacklistOut])
async def list_blacklist(session: SessionDep, access: BlacklistRead) -> Page[BlacklistOut]:
    del access
    return Page(items=[_entry_out(e) for e in await blacklist.entries(session)])


@router.post("/v1/blacklist/{entry_id}/lift", response_model=BlacklistOut)
async def lift_from_blacklist(entry_id: str, data: BlacklistLift, session: SessionDep, runtime: RuntimeDep,
                              access: BlacklistWrite) -> BlacklistOut:
    return _entry_out(await blacklist.lift(session, runtime, access, entry_id, data.reason))
