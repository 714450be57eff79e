from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from kernel.authz import Access
from kernel.fields import CountyCode
from kernel.http import CipherDep, ClockDep, SessionDep, authorize
from kernel.pagination import Page
from orders import elders, schemas
from orders.models import ServiceType

router = APIRouter(tags=["registry"])

CreateElder = Annotated[Access, Depends(authorize("elders.create"))]
UpdateElder = Annotated[Access, Depends(authorize("elders.update"))]
ReadElders = Annotated[Access, Depends(authorize("elders.read"))]
RevealElder = Annotated[Access, Depends(authorize("elders.reveal"))]
ReadServices = Annotated[Access, Depends(authorize("services.read"))]


@router.post("/v1/elders", response_model=schemas.Elder, status_code=201)
async def create_elder(data: schemas.ElderCreate, session: SessionDep, clock: ClockDep, cipher: CipherDep,
                       access: CreateElder) -> schemas.Elder:
    elder = await elders.create_elder(session, clock, cipher, access, data)
    await session.refresh(elder)
    return elders.to_schema(elder)


@router.get("/v1/elders", response_model=Page[schemas.Elder])
async def list_elders(session: SessionDep, clock: ClockDep, access: ReadElders,
                      region_code: Annotated[CountyCode | None, Query()] = None,
                      status: Annotated[Literal["active", "deceased", "moved"] | None, Query()] = None,
                      cursor: Annotated[str | None, Query(max_length=200)] = None,
                      limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Page[schemas.Elder]:
    rows, next_cursor = await elders.list_elders(session, clock, access, region_code=region_code, status=status,
                                                 cursor=cursor, limit=limit)
    return Page(items=[elders.to_schema(e) for e in rows], next_cursor=next_cursor)


@router.get("/v1/elders/{elder_id}", response_model=schemas.Elder)
async def get_elder(elder_id: str, session: SessionDep, clock: ClockDep, access: ReadElders) -> schemas.Elder:
    return elders.to_schema(await elders.read_elder(session, clock, access, elder_id))


@router.patch("/v1/elders/{elder_id}", response_model=schemas.Elder)
async def update_elder(elder_id: str, data: schemas.ElderUpdate, session: SessionDep, clock: ClockDep,
                       cipher: CipherDep, access: UpdateElder) -> schemas.Elder:
    elder = await elders.update_elder(session, clock, cipher, access, elder_id, data)
    await session.refresh(elder)
    return elders.to_schema(elder)


@router.post("/v1/elders/{elder_id}/reveal", response_model=schemas.Revealed)
async def reveal_personal_data(elder_id: str, data: schemas.RevealRequest, session: SessionDep, clock: ClockDep,
                               cipher: CipherDep, access: RevealElder) -> schemas.Revealed:
    """Unmask personal numbers for a stated reason (a call-back, a home visit); the reveal is audited."""
    return await elders.reveal(session, clock, cipher, access, elder_id, data)


@router.get("/v1/services", response_model=Page[schemas.Service])
async def service_catalogue(session: SessionDep, access: ReadServices) -> Page[schemas.Service]:
    """The whole catalogue in one page (a few dozen entries), in the list shape every list has."""
    del access
    rows = (await session.scalars(select(ServiceType).where(ServiceType.active).order_by(ServiceType.code))).all()
    return Page(items=[schemas.Service.model_validate(r, from_attributes=True) for r in rows], next_cursor=None)
