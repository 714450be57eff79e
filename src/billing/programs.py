"""Programmes (政府购买服务项目) and contracts: who pays for what, where, and which organisations serve it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing import ledger, repository, schemas
from billing.models import Contract, Program, ProgramRule
from dispatch.models import Organization
from kernel.audit import record_audit
from kernel.authz import Access
from kernel.clock import Clock
from kernel.errors import NotFound, PermissionDenied, Unprocessable
from kernel.ids import parse_id
from kernel.outbox import emit
from kernel.pagination import keyset, page_of
from kernel.regions import scope_covers
from orders.models import ServiceType


async def _check_services(session: AsyncSession, codes: Sequence[str]) -> list[str]:
    wanted = sorted(set(codes))
    known = set((await session.scalars(select(ServiceType.code).where(ServiceType.code.in_(wanted)))).all())
    unknown = [c for c in wanted if c not in known]
    if unknown:
        raise Unprocessable("unknown service codes", code="unknown_service", details={"service_codes": unknown})
    return wanted


def _in_scope(access: Access, region_code: str) -> None:
    if not access.covers(region_code=region_code):
        raise PermissionDenied("the region is outside your scope", code="out_of_scope",
                               details={"region_code": region_code})


async def create_program(session: AsyncSession, clock: Clock, access: Access,
                         data: schemas.ProgramCreate) -> Program:
    """A programme with its rules; its budget is funded in the ledger at once (`fund` posting)."""
    _in_scope(access, data.region_code)
    program = Program(
        id=uuid.uuid4(), name=data.name.strip(), region_code=data.region_code, period_start=data.period_start,
        period_end=data.period_end, budget_fen=data.budget_fen, reserved_fen=0, used_fen=0,
        covered_services=await _check_services(session, data.covered_services), created_by=access.actor_id,
    )
    session.add(program)
    await session.flush()
    session.add_all([
        ProgramRule(program_id=program.id, position=i, category=r.category,
                    assessment_level_min=r.assessment_level_min, min_age=r.min_age,
                    monthly_quota_fen=r.monthly_quota_fen, copay_percent=r.copay_percent)
        for i, r in enumerate(data.rules)
    ])
    await session.flush()
    await repository.post(session, ledger.fund(program.id, program.budget_fen), clock.now())
    await record_audit(session, clock, access, "program.create", "program", program.id,
                       {"region_code": program.region_code, "budget_fen": program.budget_fen,
                        "period": [program.period_start.isoformat(), program.period_end.isoformat()],
                        "covered_services": program.covered_services, "rules": len(data.rules)})
    emit(session, clock, "billing.program.created", str(program.id),
         {"program_id": str(program.id), "region_code": program.region_code})
    return program


async def get_program(session: AsyncSession, access: Access, program_id: str) -> Program:
    program = await session.scalar(select(Program).where(Program.id == parse_id(program_id, "programme"))
                                   .execution_options(populate_existing=True))
    if program is None:
        raise NotFound("programme not found")
    access.ensure(what="programme", region_code=program.region_code)
    return program


async def list_programs(session: AsyncSession, access: Access, *, cursor: str | None, limit: int
                        ) -> tuple[list[Program], str | None]:
    query = select(Program).where(access.region_clause(Program.region_code))
    rows = list((await session.scalars(keyset(query, Program.created_at, Program.id, cursor, limit))).all())
    return page_of(rows, limit, lambda r: (r.created_at, r.id))


async def to_schema(session: AsyncSession, program: Program) -> schemas.Program:
    rules = (await repository.program_rules(session, [program.id]))[program.id]
    return schemas.Program(
        id=str(program.id), name=program.name, region_code=program.region_code, period_start=program.period_start,
        period_end=program.period_end, budget_fen=program.budget_fen, reserved_fen=program.reserved_fen,
        used_fen=program.used_fen, remaining_fen=program.budget_fen - program.reserved_fen - program.used_fen,
        covered_services=list(program.covered_services),
        rules=[schemas.ProgramRule.model_validate(
            {"category": r.category, "assessment_level_min": r.assessment_level_min, "min_age": r.min_age,
             "monthly_quota_fen": r.monthly_quota_fen, "copay_percent": r.copay_percent}) for r in rules],
        created_at=program.created_at.isoformat(),
    )


async def _program_for_contract(session: AsyncSession, access: Access, program_id: str) -> Program:
    try:
        return await get_program(session, access, program_id)
    except NotFound:
        raise Unprocessable("unknown programme id", code="unknown_program",
                            details={"program_ids": [program_id]}) from None


async def create_contract(session: AsyncSession, clock: Clock, access: Access,
                          data: schemas.ContractCreate) -> Contract:
    """A contract of an organisation with a programme (or none: a self-pay service area). The contract's regions
    must lie in the caller's scope and, for a programme, in the programme's region."""
    org = await session.get(Organization, parse_id(data.organization_id, "organization"))
    if org is None:
        raise Unprocessable("unknown organisation id", code="unknown_organization")
    program = await _program_for_contract(session, access, data.program_id) if data.program_id else None
    regions = sorted(set(data.region_codes))
    for code in regions:
        _in_scope(access, code)
        if program is not None and not scope_covers(program.region_code, code):
            raise Unprocessable("a contract region lies outside the programme's region",
                                code="region_outside_program", details={"region_code": code})
    services = await _check_services(session, data.service_codes)
    if program is not None:
        uncovered = sorted(set(services) - set(program.covered_services))
        if uncovered:
            raise Unprocessable("the programme does not cover these services", code="service_not_covered",
                                details={"service_codes": uncovered})
    contract = Contract(id=uuid.uuid4(), organization_id=org.id, program_id=program.id if program else None,
                        region_codes=regions, service_codes=services, valid_from=data.valid_from,
                        valid_to=data.valid_to, created_by=access.actor_id)
    session.add(contract)
    await session.flush()
    await record_audit(session, clock, access, "contract.create", "contract", contract.id,
                       {"organization_id": str(org.id), "program_id": data.program_id, "region_codes": regions,
                        "service_codes": services,
                        "validity": [data.valid_from.isoformat(), data.valid_to.isoformat()]})
    emit(session, clock, "billing.contract.created", str(contract.id),
         {"contract_id": str(contract.id), "organization_id": str(org.id), "program_id": data.program_id})
    return contract


async def contract_programs(session: AsyncSession, clock: Clock, access: Access, *, organization_id: uuid.UUID,
                            region_code: str, program_ids: Sequence[str]) -> list[Contract]:
    """`contracted_programs` on organisation creation (decisions §2): for each programme a contract in the
    organisation's region, for the services the programme covers, valid for its whole period. Unknown or
    out-of-scope programme ids are one 422 `unknown_program` listing them all."""
    programs: list[Program] = []
    unknown: list[str] = []
    for pid in dict.fromkeys(program_ids):
        try:
            programs.append(await get_program(session, access, pid))
        except NotFound:
            unknown.append(pid)
    if unknown:
        raise Unprocessable("unknown programme ids", code="unknown_program", details={"program_ids": unknown})
    return [
        await create_contract(session, clock, access, schemas.ContractCreate(
            organization_id=str(organization_id), program_id=str(p.id), region_codes=[region_code],
            service_codes=list(p.covered_services), valid_from=p.period_start, valid_to=p.period_end))
        for p in programs
    ]


async def list_contracts(session: AsyncSession, access: Access, *, organization_id: str | None,
                         program_id: str | None) -> list[Contract]:
    query = select(Contract, Organization.region_code).join(Organization,
                                                            Organization.id == Contract.organization_id)
    if organization_id:
        query = query.where(Contract.organization_id == parse_id(organization_id, "organization"))
    if program_id:
        query = query.where(Contract.program_id == parse_id(program_id, "programme"))
    rows = (await session.execute(query.order_by(Contract.created_at, Contract.id))).all()
    return [c for c, region in rows
            if access.covers(organization_id=c.organization_id, region_code=region)
            or any(access.covers(region_code=code) for code in c.region_codes)]


def contract_schema(contract: Contract) -> schemas.Contract:
    return schemas.Contract(
        id=str(contract.id), organization_id=str(contract.organization_id),
        program_id=str(contract.program_id) if contract.program_id else None,
        region_codes=list(contract.region_codes), service_codes=list(contract.service_codes),
        valid_from=contract.valid_from, valid_to=contract.valid_to, created_at=contract.created_at.isoformat(),
    )
