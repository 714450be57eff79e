"""Billing's HTTP surface: programmes, contracts, entitlements, settlements and their exports."""

from __future__ import annotations

import base64
from datetime import date
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import StreamingResponse

from billing import entitlements, programs, schemas, settlement
from billing.export import csv_export, file_chunks, statement_header, xlsx_export
from billing.rules import parse_month
from kernel.audit import record_audit
from kernel.authz import Access
from kernel.errors import Unprocessable
from kernel.exports import HEADER as CONTENT_DIGEST_HEADER
from kernel.http import ClockDep, RuntimeDep, SessionDep, authorize
from kernel.pagination import Page

router = APIRouter(tags=["billing"])

CreatePrograms = Annotated[Access, Depends(authorize("programs.create"))]
ReadPrograms = Annotated[Access, Depends(authorize("programs.read"))]
CreateContracts = Annotated[Access, Depends(authorize("contracts.create"))]
ReadContracts = Annotated[Access, Depends(authorize("contracts.read"))]
ReadEntitlements = Annotated[Access, Depends(authorize("entitlements.read"))]
CreateSettlements = Annotated[Access, Depends(authorize("settlements.create"))]
ApproveSettlements = Annotated[Access, Depends(authorize("settlements.approve"))]
ReadSettlements = Annotated[Access, Depends(authorize("settlements.read"))]

MonthQuery = Annotated[str | None, Query(max_length=7, description="YYYY-MM (Asia/Shanghai)")]
IdQuery = Annotated[str | None, Query(max_length=64)]

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _month(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return parse_month(value)
    except ValueError:
        raise Unprocessable("month must be YYYY-MM", code="invalid_month") from None


@router.post("/v1/programs", response_model=schemas.Program, status_code=201)
async def create_program(data: schemas.ProgramCreate, session: SessionDep, clock: ClockDep,
                         access: CreatePrograms) -> schemas.Program:
    program = await programs.create_program(session, clock, access, data)
    await session.refresh(program)
    return await programs.to_schema(session, program)


@router.get("/v1/programs", response_model=Page[schemas.Program])
async def list_programs(session: SessionDep, access: ReadPrograms,
                        cursor: Annotated[str | None, Query(max_length=200)] = None,
                        limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Page[schemas.Program]:
    rows, next_cursor = await programs.list_programs(session, access, cursor=cursor, limit=limit)
    return Page(items=[await programs.to_schema(session, p) for p in rows], next_cursor=next_cursor)


@router.get("/v1/programs/{program_id}", response_model=schemas.Program)
async def get_program(program_id: str, session: SessionDep, access: ReadPrograms) -> schemas.Program:
    return await programs.to_schema(session, await programs.get_program(session, access, program_id))


@router.post("/v1/contracts", response_model=schemas.Contract, status_code=201)
async def create_contract(data: schemas.ContractCreate, session: SessionDep, clock: ClockDep,
                          access: CreateContracts) -> schemas.Contract:
    contract = await programs.create_contract(session, clock, access, data)
    await session.refresh(contract)
    return programs.contract_schema(contract)


@router.get("/v1/contracts", response_model=Page[schemas.Contract])
async def list_contracts(session: SessionDep, access: ReadContracts, organization_id: IdQuery = None,
                         program_id: IdQuery = None) -> Page[schemas.Contract]:
    rows = await programs.list_contracts(session, access, organization_id=organization_id, program_id=program_id)
    return Page(items=[programs.contract_schema(c) for c in rows])


@router.get("/v1/elders/{elder_id}/entitlements", response_model=Page[schemas.Entitlement])
async def elder_entitlements(elder_id: str, session: SessionDep, clock: ClockDep, access: ReadEntitlements,
                             month: MonthQuery = None) -> Page[schemas.Entitlement]:
    """The elder's entitlements of a month (default: the current one), one per programme, in drawing order."""
    return Page(items=await entitlements.read_entitlements(session, clock, access, elder_id, _month(month)))


@router.post("/v1/settlements", response_model=schemas.Settlement, status_code=201)
async def draft_settlement(data: schemas.SettlementCreate, session: SessionDep, clock: ClockDep,
                           access: CreateSettlements, response: Response) -> schemas.Settlement:
    """Draft the month's statement (201), or refresh the existing draft (200); an approved one is 409."""
    month = _month(data.month)
    assert month is not None
    drafted, created = await settlement.draft_settlement(session, clock, access, program_id=data.program_id,
                                                         organization_id=data.organization_id, month=month)
    if not created:
        response.status_code = 200
    lines, next_cursor = await settlement.lines_page(session, drafted, cursor=None, limit=100)
    return settlement.to_schema(drafted, lines, next_cursor)


@router.get("/v1/settlements", response_model=Page[schemas.Settlement])
async def list_settlements(session: SessionDep, access: ReadSettlements, month: MonthQuery = None,
                           program_id: IdQuery = None, organization_id: IdQuery = None,
                           status: Annotated[Literal["draft", "approved"] | None, Query()] = None
                           ) -> Page[schemas.Settlement]:
    rows = await settlement.list_settlements(session, access, month=_month(month), program_id=program_id,
                                             organization_id=organization_id, status=status)
    return Page(items=[settlement.to_schema(s) for s in rows])


@router.get("/v1/settlements/{settlement_id}", response_model=schemas.Settlement)
async def get_settlement(settlement_id: str, session: SessionDep, access: ReadSettlements,
                         cursor: Annotated[str | None, Query(max_length=40)] = None,
                         limit: Annotated[int, Query(ge=1, le=2000)] = 500) -> schemas.Settlement:
    """The statement with its totals and a page of lines (captures and adjustments) and exclusions with reasons;
    `next_cursor` pages on."""
    found = await settlement.get_settlement(session, access, settlement_id)
    lines, next_cursor = await settlement.lines_page(session, found, cursor=cursor, limit=limit)
    return settlement.to_schema(found, lines, next_cursor)


@router.post("/v1/settlements/{settlement_id}/approve", response_model=schemas.Settlement)
async def approve_settlement(settlement_id: str, session: SessionDep, clock: ClockDep,
                             access: ApproveSettlements) -> schemas.Settlement:
    """Closes the statement and answers it as `GET /v1/settlements/{id}` does: totals and the first page of lines."""
    approved = await settlement.approve_settlement(session, clock, access, settlement_id)
    lines, next_cursor = await settlement.lines_page(session, approved, cursor=None, limit=500)
    return settlement.to_schema(approved, lines, next_cursor)


@router.get("/v1/settlements/{settlement_id}/export")
async def export_settlement(settlement_id: str, session: SessionDep, clock: ClockDep, runtime: RuntimeDep,
                            access: ReadSettlements,
                            format: Annotated[Literal["csv", "xlsx"], Query()] = "csv") -> StreamingResponse:
    """The statement as CSV or XLSX with the column headers a finance bureau expects. The SHA-256 of its canonical
    content is in the file (last row / sheet), in `X-Content-SHA256` and in the audit record of the export;
    `Repr-Digest` (RFC 9530) covers the bytes sent."""
    found = await settlement.get_settlement(session, access, settlement_id)
    header = await statement_header(session, found)
    built = await (xlsx_export if format == "xlsx" else csv_export)(runtime.database, header)
    try:
        await record_audit(session, clock, access, "settlement.export", "settlement", found.id,
                           {"format": format, "lines": found.line_count + found.adjustment_count,
                            "exclusions": found.exclusion_count, "content_sha256": built.content_sha256,
                            "file_sha256": built.file_sha256})
    except BaseException:
        built.file.close()
        raise
    filename = f"{header.file_stem}.{format}"
    headers = {
        "Content-Disposition": f"attachment; filename=\"{filename}\"; filename*=UTF-8''{quote(filename)}",
        "Content-Length": str(built.size),
        CONTENT_DIGEST_HEADER: built.content_sha256,
        "Repr-Digest": f"sha-256=:{base64.b64encode(bytes.fromhex(built.file_sha256)).decode()}:",
    }
    media_type = XLSX if format == "xlsx" else "text/csv; charset=utf-8"
    return StreamingResponse(file_chunks(built.file), media_type=media_type, headers=headers)
