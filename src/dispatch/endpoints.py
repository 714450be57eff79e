from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from dispatch import registry, schemas
from dispatch.models import Organization
from kernel.authz import Access
from kernel.http import CipherDep, ClockDep, SessionDep, authorize
from kernel.pagination import Page

router = APIRouter(tags=["registry"])

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
    return Page(items=[registry.to_schema(c) for c in rows])


@router.get("/v1/caregivers/{caregiver_id}", response_model=schemas.Caregiver)
async def get_caregiver(caregiver_id: str, session: SessionDep, access: ReadCaregivers) -> schemas.Caregiver:
    return registry.to_schema(await registry.get_caregiver(session, access, caregiver_id))


@router.patch("/v1/caregivers/{caregiver_id}", response_model=schemas.Caregiver)
async def update_caregiver(caregiver_id: str, data: schemas.CaregiverUpdate, session: SessionDep, clock: ClockDep,
                           cipher: CipherDep, access: UpdateCaregiver) -> schemas.Caregiver:
    caregiver = await registry.update_caregiver(session, clock, cipher, access, caregiver_id, data)
    await session.refresh(caregiver)
    return registry.to_schema(caregiver)
