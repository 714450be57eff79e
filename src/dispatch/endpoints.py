from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from sqlalchemy import select
from sse_starlette import EventSourceResponse

from dispatch import caregiver_stream, live, offers, registry, schemas
from dispatch.candidates import find_candidates
from dispatch.models import Caregiver, Offer, Organization
from kernel.audit import record_audit
from kernel.authz import Access
from kernel.errors import InvalidState, NotFound
from kernel.event_stream import event_source
from kernel.fields import GeoPoint
from kernel.http import CipherDep, ClockDep, RuntimeDep, SessionDep, authorize
from kernel.pagination import Page
from orders.elders import ElderProfile, VisitContact, contact_for_visit, matching_profile
from orders.models import Order
from orders.schemas import AssignRequest
from orders.service import visible_order
from orders.visits import busy_caregivers

router = APIRouter(tags=["registry"])
# Fixed paths such as /v1/caregivers/positions and /v1/caregivers/me/…: included before `router`, whose
# /v1/caregivers/{caregiver_id} would otherwise capture them.
live_router = APIRouter(tags=["dispatch"])

CreateOrganization = Annotated[Access, Depends(authorize("organizations.create"))]
ReadOrganizations = Annotated[Access, Depends(authorize("organizations.read"))]
CreateCaregiver = Annotated[Access, Depends(authorize("caregivers.create"))]
UpdateCaregiver = Annotated[Access, Depends(authorize("caregivers.update"))]
ReadCaregivers = Annotated[Access, Depends(authorize("caregivers.read"))]


def _org(org: Organization) -> schemas.Organization:
    return schemas.Organization(id=str(org.id), name=org.name, region_code=org.region_code,
                                created_at=org.created_at.isoformat())


@router.post("/v1/organizations", response_model=schemas.Organization, status_code=201)
async def create_organization(data: schemas.OrganizationCreate, session: SessionDep, clock: ClockDep,
                              access: CreateOrganization) -> schemas.Organization:
    org = await registry.create_organization(session, clock, access, data)
    await session.refresh(org)
    return _org(org)


@router.get("/v1/organizations", response_model=Page[schemas.Organization])
async def list_organizations(session: SessionDep, access: ReadOrganizations) -> Page[schemas.Organization]:
    return Page(items=[_org(o) for o in await registry.list_organizations(session, access)])


@router.get("/v1/organizations/{organization_id}", response_model=schemas.Organization)
async def get_organization(organization_id: str, session: SessionDep, access: ReadOrganizations
                           ) -> schemas.Organization:
    return _org(await registry.get_organization(session, access, organization_id))


@router.post("/v1/caregivers", response_model=schemas.Caregiver, status_code=201)
async def create_caregiver(data: schemas.CaregiverCreate, session: SessionDep, clock: ClockDep, cipher: CipherDep,
                           access: CreateCaregiver) -> schemas.Caregiver:
    caregiver, user = await registry.create_caregiver(session, clock, cipher, access, data)
    await session.refresh(caregiver)
    return registry.to_schema(caregiver, user.id)


@router.get("/v1/caregivers", response_model=Page[schemas.Caregiver])
async def list_caregivers(session: SessionDep, access: ReadCaregivers,
                          organization_id: Annotated[str | None, Query()] = None) -> Page[schemas.Caregiver]:
    rows = await registry.list_caregivers(session, access, organization_id)
    return Page(items=await registry.caregiver_schemas(session, list(rows)))


@router.get("/v1/caregivers/{caregiver_id}", response_model=schemas.Caregiver)
async def get_caregiver(caregiver_id: str, session: SessionDep, access: ReadCaregivers) -> schemas.Caregiver:
    caregiver = await registry.get_caregiver(session, access, caregiver_id)
    return (await registry.caregiver_schemas(session, [caregiver]))[0]


@router.patch("/v1/caregivers/{caregiver_id}", response_model=schemas.Caregiver)
async def update_caregiver(caregiver_id: str, data: schemas.CaregiverUpdate, session: SessionDep, clock: ClockDep,
                           cipher: CipherDep, access: UpdateCaregiver) -> schemas.Caregiver:
    caregiver = await registry.update_caregiver(session, clock, cipher, access, caregiver_id, data)
    await session.refresh(caregiver)
    return (await registry.caregiver_schemas(session, [caregiver]))[0]


# --- the caregiver app --------------------------------------------------------------------------------------

CaregiverSelf = Annotated[Access, Depends(authorize("caregivers.self"))]
RespondToOffers = Annotated[Access, Depends(authorize("offers.respond"))]
ReadPositions = Annotated[Access, Depends(authorize("caregivers.positions"))]


def _me(access: Access) -> uuid.UUID:
    if access.principal.caregiver_id is None:
        raise NotFound("caregiver not found")
    return uuid.UUID(access.principal.caregiver_id)


@live_router.put("/v1/caregivers/me/duty", response_model=schemas.Duty)
async def set_duty(data: schemas.DutyUpdate, session: SessionDep, runtime: RuntimeDep,
                   access: CaregiverSelf) -> schemas.Duty:
    caregiver = await registry.get_caregiver(session, access, str(_me(access)))
    if caregiver.on_duty != data.on_duty:
        caregiver.on_duty = data.on_duty
        caregiver.duty_changed_at = runtime.clock.now()
        await record_audit(session, runtime.clock, access, "caregiver.duty", "caregiver", caregiver.id,
                           {"on_duty": data.on_duty})
        if not data.on_duty:
            await offers.withdraw_all_pending_of_caregiver(session, runtime, caregiver.id)
    await session.flush()
    await live.set_duty(runtime, caregiver.id, data.on_duty)
    return schemas.Duty(caregiver_id=str(caregiver.id), on_duty=caregiver.on_duty)


@live_router.put("/v1/caregivers/me/location", status_code=204)
async def set_location(data: GeoPoint, session: SessionDep, runtime: RuntimeDep, access: CaregiverSelf) -> None:
    """Phones may report GCJ-02 or BD-09 (`crs`); stored as WGS-84 with its time, in Redis only."""
    caregiver = await registry.get_caregiver(session, access, str(_me(access)))
    if not caregiver.on_duty:
        raise InvalidState("go on duty before sharing a position", code="off_duty")
    lat, lon = data.to_wgs84()
    await live.set_position(runtime, caregiver.id, lat, lon, runtime.clock.now())


def _offer_out(offer: Offer, order: Order, elder: ElderProfile | None,
               contact: VisitContact | None = None) -> schemas.OfferOut:
    accepted = offer.status == "accepted"
    if contact is not None:
        who = schemas.OfferElder(name=contact.name, address=contact.address, phone=contact.phone,
                                 lat=contact.lat, lon=contact.lon)
    else:
        who = schemas.OfferElder(name=elder.name_masked if elder else "", address=elder.address_masked if elder else "")
    return schemas.OfferOut(
        id=str(offer.id), order_id=str(order.id), status=offer.status,
        kind=offer.kind, expires_at=offer.expires_at, service_code=order.service_code, priority=order.priority,
        distance_m=offer.distance_m, window_start=order.window_start, window_end=order.window_end,
        elder=who,
        visit_id=str(order.visit_id) if accepted and order.visit_id else None,
    )


@live_router.get("/v1/caregivers/me/offers", response_model=Page[schemas.OfferOut])
async def my_offers(session: SessionDep, access: RespondToOffers,
                    include_closed: Annotated[bool, Query()] = False) -> Page[schemas.OfferOut]:
    rows = await offers.offers_for_caregiver(session, _me(access), include_closed=include_closed)
    profiles = {eid: await matching_profile(session, eid) for eid in {o.elder_id for _, o in rows}}
    return Page(items=[_offer_out(offer, order, profiles.get(order.elder_id)) for offer, order in rows])


StreamOwnEvents = Annotated[Access, Depends(authorize("caregivers.stream"))]


@live_router.get("/v1/caregivers/me/stream", response_class=EventSourceResponse)
async def my_stream(request: Request, session: SessionDep, runtime: RuntimeDep, access: StreamOwnEvents,
                    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None
                    ) -> EventSourceResponse:
    """The caller's own offers (urgent ones with their expiry), their withdrawal, expiry or loss to another
    caregiver, and the changes of its orders and visits (assignment, reassignment, cancellation), as they commit;
    Bearer token or session cookie. `id:` is the event's `stream_seq`: reconnecting with `Last-Event-ID` replays
    what was missed. A first connection starts with `stream.ready` (read the offer list after it)."""
    caregiver = await registry.get_caregiver(session, access, str(_me(access)))
    return event_source(request, caregiver_stream.follow_caregiver(runtime, caregiver.id, last_event_id))


@live_router.post("/v1/offers/{offer_id}/accept", response_model=schemas.OfferOut)
async def accept_offer(offer_id: str, session: SessionDep, runtime: RuntimeDep,
                       access: RespondToOffers) -> schemas.OfferOut:
    """The accepted offer carries the elder's full name, address and phone for the visit (an audited read)."""
    offer = await offers.accept_offer(session, runtime, access, offer_id)
    order = await session.get(Order, offer.order_id)
    assert order is not None
    contact = await contact_for_visit(session, runtime.clock, runtime.cipher, access, order.elder_id)
    return _offer_out(offer, order, None, contact)


@live_router.post("/v1/offers/{offer_id}/decline", response_model=schemas.OfferOut)
async def decline_offer(offer_id: str, data: schemas.DeclineRequest, session: SessionDep, runtime: RuntimeDep,
                        access: RespondToOffers) -> schemas.OfferOut:
    offer = await offers.decline_offer(session, runtime, access, offer_id, data.reason)
    order = await session.get(Order, offer.order_id)
    assert order is not None
    return _offer_out(offer, order, await matching_profile(session, order.elder_id))


@live_router.get("/v1/caregivers/positions", response_model=Page[schemas.PositionOut])
async def positions(session: SessionDep, runtime: RuntimeDep, access: ReadPositions) -> Page[schemas.PositionOut]:
    """On-duty caregivers in scope, with their position's age and whether they are busy now."""
    query = select(Caregiver, Organization.region_code).join(Organization).where(
        Caregiver.on_duty, Caregiver.active, access.region_clause(Organization.region_code))
    rows = (await session.execute(query)).all()
    ids = [cg.id for cg, _ in rows]
    where = await live.positions(runtime, ids)
    now = runtime.clock.now()
    busy = await busy_caregivers(session, ids, now, now + timedelta(minutes=1))
    max_age = runtime.settings.dispatch.position_max_age.total_seconds()
    items = []
    for cg, _region in rows:
        p = where.get(cg.id)
        age = (now - p.at).total_seconds() if p else None
        items.append(schemas.PositionOut(
            caregiver_id=str(cg.id), organization_id=str(cg.organization_id), name=cg.name,
            lat=p.lat if p else None, lon=p.lon if p else None, position_at=p.at if p else None,
            age_s=round(age, 1) if age is not None else None, stale=age is None or age > max_age,
            busy=cg.id in busy))
    return Page(items=items)


# --- dispatcher views and overrides -----------------------------------------------------------------------------

ReadCandidates = Annotated[Access, Depends(authorize("orders.candidates"))]
AssignOrders = Annotated[Access, Depends(authorize("orders.assign"))]


@live_router.get("/v1/orders/{order_id}/candidates", response_model=schemas.Candidates)
async def candidates(order_id: str, session: SessionDep, runtime: RuntimeDep, access: ReadCandidates,
                     limit: Annotated[int, Query(ge=1, le=100)] = 20) -> schemas.Candidates:
    """The matcher's ranked candidates with the parts of each score (for a dispatcher's choice)."""
    order = await visible_order(session, access, order_id)
    ranked = await find_candidates(session, runtime, order)
    return schemas.Candidates(order_id=str(order.id), considered=ranked.considered, items=[
        schemas.CandidateOut(
            caregiver_id=str(s.candidate.caregiver_id), organization_id=str(s.candidate.organization_id),
            score=s.score, distance_m=round(s.candidate.distance_m, 1), reasons=s.reasons,
            rating=s.candidate.rating, visits_today=s.candidate.visits_today,
            served_before=s.candidate.served_before)
        for s in ranked.ranked[:limit]
    ])


@live_router.post("/v1/orders/{order_id}/assign", response_model=schemas.OfferOut, status_code=201)
async def assign(order_id: str, data: AssignRequest, session: SessionDep, runtime: RuntimeDep,
                 access: AssignOrders) -> schemas.OfferOut:
    """A dispatcher's assignment: an offer to the chosen caregiver with a longer expiry."""
    order = await visible_order(session, access, order_id, for_update=True)
    offer = await offers.assign_manually(session, runtime, access, order, data.caregiver_id)
    return _offer_out(offer, order, await matching_profile(session, order.elder_id))
