"""What billing tests share: orders and visits as the interface sees them, and programme factories."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billing import programs, schemas
from billing.models import Contract, Program
from billing.verify import verify_ledger
from dispatch.models import Organization
from kernel.runtime import Runtime
from tests.conftest import admin_access
from tests.factories import HANGGIN


@dataclass(frozen=True)
class Order:
    """A priced order as orders hands it to billing (satisfies `billing.service.PricedOrder`)."""

    elder_id: uuid.UUID
    price_fen: int
    service_month: date = date(2026, 3, 1)
    service_code: str = "daily_care"
    region_code: str = HANGGIN
    id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass(frozen=True)
class Visit:
    """A finished visit as orders hands it to billing (satisfies `billing.service.FinishedVisit`)."""

    order_id: uuid.UUID
    organization_id: uuid.UUID
    elder_id: uuid.UUID
    actual_price_fen: int
    service_code: str = "daily_care"
    checked_out_at: datetime | None = None
    caregiver_id: uuid.UUID = field(default_factory=uuid.uuid4)
    id: uuid.UUID = field(default_factory=uuid.uuid4)


def visit_of(order: Order, organization: Organization | uuid.UUID, actual_price_fen: int | None = None,
             checked_out_at: datetime | None = None) -> Visit:
    """The order's visit: the same ids every time it is asked for (one visit per order)."""
    org_id = organization if isinstance(organization, uuid.UUID) else organization.id
    return Visit(order_id=order.id, organization_id=org_id, elder_id=order.elder_id,
                 actual_price_fen=order.price_fen if actual_price_fen is None else actual_price_fen,
                 service_code=order.service_code, checked_out_at=checked_out_at,
                 caregiver_id=uuid.uuid5(order.id, "caregiver"), id=uuid.uuid5(order.id, "visit"))


def program_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": "杭锦旗2026年居家养老政府购买服务",
        "region_code": HANGGIN,
        "period_start": "2026-01-01",
        "period_end": "2026-12-31",
        "budget_fen": 10_000_000,
        "covered_services": ["daily_care", "meal_assist", "cleaning"],
        "rules": [{"category": "dibao", "monthly_quota_fen": 20_000, "copay_percent": 10}],
    }
    payload.update(overrides)
    return payload


async def create_program(rt: Runtime, **overrides: Any) -> Program:
    async with rt.database.unit_of_work() as s:
        return await programs.create_program(s, rt.clock, admin_access(),
                                             schemas.ProgramCreate.model_validate(program_payload(**overrides)))


async def create_contract(rt: Runtime, organization: Organization, program: Program | None,
                          **overrides: Any) -> Contract:
    body: dict[str, Any] = {
        "organization_id": str(organization.id), "program_id": str(program.id) if program else None,
        "region_codes": [HANGGIN], "service_codes": ["daily_care"], "valid_from": "2026-01-01",
        "valid_to": "2026-12-31",
    }
    body.update(overrides)
    async with rt.database.unit_of_work() as s:
        return await programs.create_contract(s, rt.clock, admin_access(), schemas.ContractCreate.model_validate(body))


async def assert_ledger_sound(session: AsyncSession) -> None:
    verdict = await verify_ledger(session)
    assert verdict.ok, verdict.summary()
