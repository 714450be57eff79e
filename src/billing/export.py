"""Statement exports for the finance bureau: CSV (UTF-8 with BOM, so spreadsheet programmes in China open it
correctly) and XLSX (openpyxl's write-only mode), with Chinese column headers and amounts in 元. Text cells are made
inert (no formula injection) and each export carries the SHA-256 of its canonical content in its last row (CSV) or
sheet (XLSX), as `kernel.exports` defines them; `vnh billing verify-export FILE` checks it.

Lines are streamed from a server-side cursor in partitions (`yield_per`); nothing holds a whole statement in memory.
Both formats are written row by row to a temporary file (so the digest is known before the first byte
is sent, for the HTTP header and the audit record) and then streamed. Elders appear by name and masked ID
number only (never the full number, phone or address).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import re
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import IO, Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import Cell
from openpyxl.styles import Font
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.models import Program, Settlement, SettlementLine
from billing.rules import SERVICE_TZ, format_month
from dispatch.models import Organization
from kernel.db import Database
from kernel.exports import (
    CSV_DIGEST_LABEL,
    CSV_TABLE,
    XLSX_DIGEST_SHEET,
    ContentDigest,
    inert,
    xlsx_digest_rows,
    xlsx_text,
)
from orders.models import Elder, ServiceType

PARTITION = 2000
CHUNK = 64 * 1024

SUMMARY_SHEET = "结算汇总"
LINES_SHEET = "结算明细"
HEADERS = (
    "序号", "结算单号", "购买服务项目", "服务机构", "结算月份", "明细类型", "服务月份", "服务记录号", "工单号",
    "老人姓名", "身份证号（脱敏）", "服务项目", "服务完成时间", "服务金额（元）", "政府补贴金额（元）",
    "个人自付金额（元）", "剔除原因",
)
KIND_LABELS = {"capture": "正常结算", "adjustment": "补结算（以前月份）", "exclusion": "剔除（不予结算）"}
STATUS_LABELS = {"draft": "草稿（待审核）", "approved": "已审核（已关闭）"}
REASON_LABELS = {
    "unresolved": "异常待核实", "rejected": "审核不通过", "outcome": "服务结果",
    "far_check_in": "签到位置偏离老人住址", "too_short": "服务时长不足", "overlap": "服务时间重叠",
    "no_confirmation": "未获老人确认", "impossible_travel": "行程时间不合理", "elder_absent": "老人不在家",
    "aborted": "服务中止", "completed": "已完成",
    "caregiver_blacklisted": "服务人员列入失信黑名单", "organization_blacklisted": "服务机构列入失信黑名单",
}
_TOKEN = re.compile(r"[a-z_]+")
AMOUNT_COLUMNS = (13, 14, 15)  # zero-based positions of the amounts in HEADERS


def reason_label(reason: str | None) -> str:
    """Known codes in a reason (`rejected: far_check_in: 地址不符`) in Chinese, free text kept as it is."""
    if not reason:
        return ""
    return (_TOKEN.sub(lambda m: REASON_LABELS.get(m.group(0), m.group(0)), reason)
            .replace(": ", "：").replace(", ", "、"))


def yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def yuan_number(fen: int) -> float:
    """Fen as 元 for a spreadsheet cell (shown with two decimals)."""
    return float(Decimal(fen).scaleb(-2))


@dataclass(frozen=True)
class StatementHeader:
    id: uuid.UUID
    program_name: str
    organization_name: str
    month: str
    status: str
    line_count: int
    adjustment_count: int
    exclusion_count: int
    price_fen: int
    quota_fen: int
    copay_fen: int
    approved_at: datetime | None

    @property
    def file_stem(self) -> str:
        return f"settlement-{self.month}-{self.id}"


async def statement_header(session: AsyncSession, settlement: Settlement) -> StatementHeader:
    program_name = await session.scalar(select(Program.name).where(Program.id == settlement.program_id))
    org_name = await session.scalar(select(Organization.name).where(Organization.id == settlement.organization_id))
    return StatementHeader(
        id=settlement.id, program_name=program_name or "", organization_name=org_name or "",
        month=format_month(settlement.month), status=settlement.status, line_count=settlement.line_count,
        adjustment_count=settlement.adjustment_count, exclusion_count=settlement.exclusion_count,
        price_fen=settlement.price_fen, quota_fen=settlement.quota_fen, copay_fen=settlement.copay_fen,
        approved_at=settlement.approved_at,
    )


def _local(at: datetime | None) -> str:
    return at.astimezone(SERVICE_TZ).strftime("%Y-%m-%d %H:%M") if at else ""


async def export_rows(session: AsyncSession, header: StatementHeader) -> AsyncIterator[Sequence[list[Any]]]:
    """Partitions of export rows (amounts still in fen) read through a server-side cursor."""
    line = SettlementLine
    query = (
        select(line.kind, line.service_month, line.visit_id, line.order_id, Elder.name, Elder.id_number_masked,
               ServiceType.name, line.service_code, line.served_at, line.price_fen, line.quota_fen, line.copay_fen,
               line.reason)
        .outerjoin(Elder, Elder.id == line.elder_id)
        .outerjoin(ServiceType, ServiceType.code == line.service_code)
        .where(line.settlement_id == header.id)
        .order_by(line.id)
        .execution_options(yield_per=PARTITION)
    )
    result = await session.stream(query)
    number = 0
    async for partition in result.partitions():
        rows = []
        for r in partition:
            number += 1
            rows.append([
                number, str(header.id), header.program_name, header.organization_name, header.month,
                KIND_LABELS.get(r[0], r[0]), format_month(r[1]), str(r[2]), str(r[3]), r[4] or "", r[5] or "",
                r[6] or r[7], _local(r[8]), r[9], r[10], r[11], reason_label(r[12]),
            ])
        yield rows


def _totals_row(header: StatementHeader) -> list[Any]:
    row: list[Any] = [""] * len(HEADERS)
    row[0] = "合计"
    row[5] = f"结算{header.line_count}笔，补结算{header.adjustment_count}笔，剔除{header.exclusion_count}笔"
    row[13], row[14], row[15] = header.price_fen, header.quota_fen, header.copay_fen
    return row


@dataclass
class BuiltExport:
    """An export written to a temporary file (positioned at its start; the caller closes it) with its digests:
    `content_sha256` of its canonical content (`kernel.exports`; also inside the file), `file_sha256` of its bytes."""

    file: IO[bytes]
    content_sha256: str
    file_sha256: str
    size: int


def _csv_cells(row: Sequence[Any]) -> list[Any]:
    """Amounts in 元 (numbers, never neutralised: `-12.50` is a refund, not a formula); text made inert."""
    return [yuan(v) if i in AMOUNT_COLUMNS and isinstance(v, int) else inert(v) for i, v in enumerate(row)]


class _CsvWriter:
    """The statement as CSV: a header row, one row per line, a totals row, and the digest row."""

    def __init__(self) -> None:
        self.target = tempfile.TemporaryFile()  # noqa: SIM115  (handed to the caller, who closes it)
        self.digest = ContentDigest()
        self.target.write("\ufeff".encode())

    def append(self, rows: Sequence[Sequence[Any]]) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        for row in rows:
            cells = _csv_cells(row)
            self.digest.add(CSV_TABLE, cells)
            writer.writerow(cells)
        self.target.write(buffer.getvalue().encode("utf-8"))

    def finish(self, totals: Sequence[Any]) -> tuple[IO[bytes], str]:
        self.append([totals])
        content = self.digest.hexdigest()
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\r\n").writerow([CSV_DIGEST_LABEL, content])
        self.target.write(buffer.getvalue().encode("utf-8"))
        return self.target, content


async def _finished(target: IO[bytes], content: str) -> BuiltExport:
    def file_digest() -> tuple[str, int]:
        target.seek(0)
        digest = hashlib.file_digest(target, "sha256")  # type: ignore[arg-type]
        size = target.tell()
        target.seek(0)
        return digest.hexdigest(), size

    file_sha256, size = await asyncio.to_thread(file_digest)
    return BuiltExport(file=target, content_sha256=content, file_sha256=file_sha256, size=size)


async def csv_export(database: Database, header: StatementHeader) -> BuiltExport:
    """The statement as CSV (UTF-8 with BOM), in a temporary file with its digests."""
    writer = _CsvWriter()
    try:
        writer.append([HEADERS])
        async with database.unit_of_work() as session:
            async for rows in export_rows(session, header):
                await asyncio.to_thread(writer.append, rows)
        return await _finished(*await asyncio.to_thread(writer.finish, _totals_row(header)))
    except BaseException:
        writer.target.close()
        raise


class _XlsxWriter:
    """A write-only workbook: a summary sheet, then the lines; rows go to a temporary file as they come."""

    def __init__(self, header: StatementHeader) -> None:
        self.header = header
        self.book = Workbook(write_only=True)
        summary: Any = self.book.create_sheet(SUMMARY_SHEET)  # write-only sheets: the stubs lack column_dimensions
        bold = Font(bold=True)
        summary.column_dimensions["A"].width = 18
        summary.column_dimensions["B"].width = 48
        self.digest = ContentDigest()
        title = WriteOnlyCell(summary, value=xlsx_text(f"{header.program_name} {header.month} 服务结算单"))
        title.font = Font(bold=True, size=14)
        summary.append([title])
        self.digest.add(SUMMARY_SHEET, [title.value])
        rows: tuple[tuple[str, str | int | float], ...] = (
            ("结算单号", str(header.id)), ("购买服务项目", header.program_name),
            ("服务机构", header.organization_name), ("结算月份", header.month),
            ("状态", STATUS_LABELS.get(header.status, header.status)),
            ("结算笔数", header.line_count), ("补结算笔数", header.adjustment_count),
            ("剔除笔数", header.exclusion_count), ("服务金额合计（元）", yuan_number(header.price_fen)),
            ("政府补贴合计（元）", yuan_number(header.quota_fen)),
            ("个人自付合计（元）", yuan_number(header.copay_fen)),
            ("审核时间", _local(header.approved_at)),
        )
        for label, value in rows:
            cell = WriteOnlyCell(summary, value=label)
            cell.font = bold
            amount = WriteOnlyCell(summary, value=xlsx_text(value))
            if isinstance(value, float):
                amount.number_format = "#,##0.00"
            summary.append([cell, amount])
            self.digest.add(SUMMARY_SHEET, [cell.value, amount.value])
        self.sheet: Any = self.book.create_sheet(LINES_SHEET)
        for column, width in zip("ABCDEFGHIJKLMNOPQ", (7, 38, 24, 24, 10, 16, 10, 38, 38, 10, 20, 16, 18, 14, 16,
                                                       16, 36), strict=True):
            self.sheet.column_dimensions[column].width = width
        self.sheet.freeze_panes = "A2"
        self._append([self._bold(h) for h in HEADERS])

    def _bold(self, value: Any) -> Any:
        cell = WriteOnlyCell(self.sheet, value=value)
        cell.font = Font(bold=True)
        return cell

    def _row(self, row: Sequence[Any], bold: bool = False) -> list[Any]:
        out: list[Any] = []
        for i, value in enumerate(row):
            if i in AMOUNT_COLUMNS and isinstance(value, int):
                cell = WriteOnlyCell(self.sheet, value=yuan_number(value))
                cell.number_format = "#,##0.00"
                if bold:
                    cell.font = Font(bold=True)
                out.append(cell)
            else:
                out.append(self._bold(xlsx_text(value)) if bold else xlsx_text(value))
        return out

    def _append(self, cells: list[Any]) -> None:
        self.sheet.append(cells)
        self.digest.add(LINES_SHEET, [c.value if isinstance(c, Cell) else c for c in cells])

    def append(self, rows: Sequence[Sequence[Any]]) -> None:
        for row in rows:
            self._append(self._row(row))

    def finish(self) -> tuple[IO[bytes], str]:
        self._append(self._row(_totals_row(self.header), bold=True))
        content = self.digest.hexdigest()
        check: Any = self.book.create_sheet(XLSX_DIGEST_SHEET)
        check.column_dimensions["B"].width = 70
        for row in xlsx_digest_rows(content):
            check.append(row)
        target = tempfile.TemporaryFile()  # noqa: SIM115  (handed to the caller, who closes it)
        self.book.save(target)
        return target, content


async def xlsx_export(database: Database, header: StatementHeader) -> BuiltExport:
    """The statement as an XLSX workbook, in a temporary file with its digests."""
    writer = await asyncio.to_thread(_XlsxWriter, header)
    async with database.unit_of_work() as session:
        async for rows in export_rows(session, header):
            await asyncio.to_thread(writer.append, rows)
    return await _finished(*await asyncio.to_thread(writer.finish))


async def file_chunks(target: IO[bytes]) -> AsyncIterator[bytes]:
    """Stream a built export's file, closing it at the end."""
    try:
        while chunk := await asyncio.to_thread(target.read, CHUNK):
            yield chunk
    finally:
        target.close()
