"""`POST /v1/users`: staff and elder/family logins. It lives in the composition root because an account's scope
names objects of several domains (an organisation, elders), checked through those domains' services."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict

from dispatch.registry import get_organization
from kernel.auth import create_user, delete_user, reset_second_factor, set_user_active, unlock_user
from kernel.auth_endpoints import UserCreate, UserOut
from kernel.authz import Access
from kernel.errors import NotFound, Unprocessable
from kernel.http import ClockDep, SessionDep, authorize
from orders.elders import load_elder

router = APIRouter(tags=["auth"])


@router.post("/v1/users", response_model=UserOut, status_code=201)
async def create_account(data: UserCreate, session: SessionDep, clock: ClockDep,
                         access: Annotated[Access, Depends(authorize("users.create"))]) -> UserOut:
    if data.role == "caregiver":
        raise Unprocessable("caregiver logins are created with POST /v1/caregivers", code="use_caregivers_endpoint")
    org_id = (await get_organization(session, access, data.organization_id)).id if data.organization_id else None
    elder_ids: list[uuid.UUID] = []
    for elder_id in data.elder_ids:
        try:
            elder_ids.append((await load_elder(session, access, elder_id)).id)
        except NotFound:
            raise NotFound(f"elder {elder_id} not found") from None
    user = await create_user(session, clock, access, username=data.username, password=data.password, role=data.role,
                             organization_id=org_id, region_code=data.region_code, elder_ids=elder_ids)
    return UserOut(id=str(user.id), username=user.username, role=data.role,
                   organization_id=str(org_id) if org_id else None, region_code=user.region_code,
                   elder_ids=[str(e) for e in elder_ids])


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    active: bool


class UserState(BaseModel):
    id: str
    username: str
    role: str
    active: bool


@router.patch("/v1/users/{user_id}", response_model=UserState)
async def update_account(user_id: str, data: UserUpdate, session: SessionDep, clock: ClockDep,
                         access: Annotated[Access, Depends(authorize("users.update"))]) -> UserState:
    """Deactivating an account refuses its tokens at once (kernel/sessions.py)."""
    user = await set_user_active(session, clock, access, user_id, data.active)
    return UserState(id=str(user.id), username=user.username, role=user.role, active=user.active)


@router.delete("/v1/users/{user_id}", status_code=204)
async def delete_account(user_id: str, session: SessionDep, clock: ClockDep,
                         access: Annotated[Access, Depends(authorize("users.delete"))]) -> Response:
    await delete_user(session, clock, access, user_id)
    return Response(status_code=204)


@router.post("/v1/users/{user_id}/unlock", response_model=UserState)
async def unlock_account(user_id: str, session: SessionDep, clock: ClockDep,
                         access: Annotated[Access, Depends(authorize("users.update"))]) -> UserState:
    """Lifts the account's lock-out, account-wide and for every address (audited as `user.unlock`)."""
    user = await unlock_user(session, clock, access, user_id)
    return UserState(id=str(user.id), username=user.username, role=user.role, active=user.active)


@router.delete("/v1/users/{user_id}/totp", status_code=204)
async def reset_account_second_factor(user_id: str, session: SessionDep, clock: ClockDep,
                                      access: Annotated[Access, Depends(authorize("users.update"))]) -> Response:
    """Removes the user's second factor (lost phone, or one bound by someone else) and ends every session of the
    user; the user enrols again (audited as `user.mfa_reset`)."""
    await reset_second_factor(session, clock, access, user_id)
    return Response(status_code=204)
