"""Monthly statements: lines, adjustments, exclusions with reasons, totals, approval, exports read back."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime

import asyncpg
import pytest
from openpyxl import load_workbook
from sqlalchemy import select, text

from billing import service as billing
from billing import settlement
from billing.export import HEADERS, csv_export, statement_header, xlsx_export
from billing.models import Program, Settlement, SettlementLine
from dispatch.models import Organization
from kernel.clock import ManualClock
from kernel.errors import InvalidState
from kernel.runtime import Runtime
from orders.models import Elder
from tests.billing.support import Order, create_contract, create_program, visit_of
from tests.conftest import admin_access
from tests.db_errors import refused
from tests.factories import create_elder, create_organization

MARCH, APRIL = date(2026, 3, 1), date(2026, 4, 1)


async def _served(rt: Runtime, elder: Elder, org: Organization, *, price: int, at: datetime,
                  service_month: date = MARCH, actual: int | None = None, exclude: str | None = None) -> Order:
    """An order reserved, then captured (or excluded) at `at`."""
    clock = rt.clock
    assert isinstance(clock, ManualClock)
    clock.set(at)
    order = Order(elder.id, price_fen=price, service_month=service_month)
    async with rt.database.unit_of_work() as s:
        await billing.quote_and_reserve(s, clock, order)
        visit = visit_of(order, org, actual_price_fen=actual, checked_out_at=at)
        if exclude:
            await billing.exclude(s, clock, visit, exclude)
        else:
            await billing.capture(s, clock, visit)
    return order


async def _draft(rt: Runtime, program: Program, org: Organization, month: date) -> Settlement:
    async with rt.database.unit_of_work() as s:
        drafted, _ = await settlement.draft_settlement(s, rt.clock, admin_access(), program_id=str(program.id),
                                                       organization_id=str(org.id), month=month)
        return drafted


async def _lines(rt: Runtime, statement: Settlement) -> list[SettlementLine]:
    async with rt.database.unit_of_work() as s:
        return list((await s.scalars(select(SettlementLine).where(SettlementLine.settlement_id == statement.id)
                                     .order_by(SettlementLine.id))).all())


@pytest.fixture
async def world(runtime: Runtime) -> tuple[Program, Organization, Elder]:
    program = await create_program(runtime)
    org = await create_organization(runtime)
    await create_contract(runtime, org, program)
    return program, org, await create_elder(runtime)


async def test_a_statement_lists_captures_adjustments_and_exclusions_with_totals(
        runtime: Runtime, world: tuple[Program, Organization, Elder]) -> None:
    program, org, elder = world
    other_org = await create_organization(runtime, name="另一家服务中心")
    await _served(runtime, elder, org, price=4500, at=datetime(2026, 3, 3, 2, tzinfo=UTC))
    await _served(runtime, elder, org, price=9000, actual=4500, at=datetime(2026, 3, 5, 2, tzinfo=UTC))
    await _served(runtime, elder, org, price=1500, service_month=date(2026, 2, 1),
                  at=datetime(2026, 3, 6, 2, tzinfo=UTC))  # a February visit resolved in March
    await _served(runtime, elder, org, price=4500, at=datetime(2026, 3, 7, 2, tzinfo=UTC),
                  exclude="outcome: elder_absent")
    await _served(runtime, elder, other_org, price=4500, at=datetime(2026, 3, 8, 2, tzinfo=UTC))
    statement = await _draft(runtime, program, org, MARCH)
    assert statement.status == "draft"
    assert (statement.line_count, statement.adjustment_count, statement.exclusion_count) == (2, 1, 1)
    assert (statement.price_fen, statement.quota_fen, statement.copay_fen) == (10_500, 9_450, 1_050)
    lines = await _lines(runtime, statement)
    assert [line.kind for line in lines] == ["adjustment", "capture", "capture", "exclusion"]
    assert lines[0].service_month == date(2026, 2, 1)
    assert lines[-1].reason == "outcome: elder_absent"


async def test_a_visit_billed_after_midnight_in_shanghai_belongs_to_the_next_statement(
        runtime: Runtime, world: tuple[Program, Organization, Elder]) -> None:
    program, org, elder = world
    await _served(runtime, elder, org, price=4500, at=datetime(2026, 3, 31, 15, 59, tzinfo=UTC))
    await _served(runtime, elder, org, price=4500, service_month=APRIL, at=datetime(2026, 3, 31, 16, 30, tzinfo=UTC))
    march = await _draft(runtime, program, org, MARCH)
    april = await _draft(runtime, program, org, APRIL)
    assert (march.line_count, april.line_count) == (1, 1)
    assert [x.service_month for x in await _lines(runtime, april)] == [APRIL]


async def test_an_approved_statement_never_changes_and_later_items_go_to_a_later_month(
        runtime: Runtime, world: tuple[Program, Organization, Elder]) -> None:
    program, org, elder = world
    await _served(runtime, elder, org, price=4500, at=datetime(2026, 3, 3, 2, tzinfo=UTC))
    draft = await _draft(runtime, program, org, MARCH)
    async with runtime.database.unit_of_work() as s:
        approved = await settlement.approve_settlement(s, runtime.clock, admin_access(), str(draft.id))
    assert approved.status == "approved" and approved.approved_at is not None
    with pytest.raises(InvalidState):
        await _draft(runtime, program, org, MARCH)
    with pytest.raises(InvalidState):
        async with runtime.database.unit_of_work() as s:
            await settlement.approve_settlement(s, runtime.clock, admin_access(), str(draft.id))
    line_id = (await _lines(runtime, draft))[0].id
    closed = f"settlement {draft.id} is approved and cannot change"
    lines_closed = f"settlement {draft.id} is approved or missing: its lines cannot change"
    for sql, trigger, message in (
            ("UPDATE settlements SET quota_fen = 0 WHERE id = :sid", "vnh_settlement_closed", closed),
            ("UPDATE settlements SET status = 'draft', approved_at = NULL WHERE id = :sid", "vnh_settlement_closed",
             closed),
            ("DELETE FROM settlements WHERE id = :sid", "vnh_settlement_closed", closed),
            ("UPDATE settlement_lines SET quota_fen = 0 WHERE settlement_id = :sid", "vnh_settlement_lines_closed",
             lines_closed),
            ("DELETE FROM settlement_lines WHERE settlement_id = :sid", "vnh_settlement_lines_closed", lines_closed),
            # a line every CHECK accepts (an adjustment with a source of its own): only the closed statement refuses
            ("INSERT INTO settlement_lines (settlement_id, kind, capture_id, visit_id, order_id, elder_id, "
             "caregiver_id, service_code, service_month, price_fen, quota_fen, copay_fen) "
             "SELECT settlement_id, 'adjustment', capture_id + 1000, visit_id, order_id, elder_id, caregiver_id, "
             "service_code, service_month, 0, 0, 0 FROM settlement_lines WHERE id = :line",
             "vnh_settlement_lines_closed", lines_closed)):
        with refused(asyncpg.RaiseError, trigger=trigger, message=re.escape(message)):
            async with runtime.database.unit_of_work() as s:
                await s.execute(text(sql), {"sid": draft.id, "line": line_id})
    # a March visit captured after approval: an adjusting line of April, the March statement untouched
    await _served(runtime, elder, org, price=1500, at=datetime(2026, 4, 2, 2, tzinfo=UTC))
    april = await _draft(runtime, program, org, APRIL)
    assert (april.line_count, april.adjustment_count) == (0, 1)
    async with runtime.database.unit_of_work() as s:
        again = await settlement.get_settlement(s, admin_access(), str(draft.id))
    assert (again.line_count, again.quota_fen) == (1, 4050)


async def test_refreshing_a_draft_takes_new_items_and_the_latest_word_on_each_visit(
        runtime: Runtime, world: tuple[Program, Organization, Elder]) -> None:
    program, org, elder = world
    held = await _served(runtime, elder, org, price=4500, at=datetime(2026, 3, 3, 2, tzinfo=UTC),
                         exclude="unresolved: far_check_in")
    rejected = await _served(runtime, elder, org, price=4500, at=datetime(2026, 3, 4, 2, tzinfo=UTC),
                             exclude="unresolved: too_short")
    first = await _draft(runtime, program, org, MARCH)
    assert (first.line_count, first.exclusion_count) == (0, 2)
    async with runtime.database.unit_of_work() as s:
        # the dispatcher approves the first flag and rejects the second
        await billing.capture(s, runtime.clock, visit_of(held, org))
        await billing.exclude(s, runtime.clock, visit_of(rejected, org), "rejected: too_short: 仅服务12分钟")
        await billing.release(s, runtime.clock, rejected)
    refreshed = await _draft(runtime, program, org, MARCH)
    assert refreshed.id == first.id
    lines = await _lines(runtime, refreshed)
    assert [(x.kind, x.order_id) for x in lines] == [("capture", held.id), ("exclusion", rejected.id)]
    assert lines[1].reason == "rejected: too_short: 仅服务12分钟"


async def test_settle_month_drafts_every_pair_and_skips_approved_ones(
        runtime: Runtime, world: tuple[Program, Organization, Elder]) -> None:
    _, org, elder = world
    other_org = await create_organization(runtime, name="另一家服务中心")
    await _served(runtime, elder, org, price=4500, at=datetime(2026, 3, 3, 2, tzinfo=UTC))
    await _served(runtime, elder, other_org, price=4500, at=datetime(2026, 3, 4, 2, tzinfo=UTC))
    seen: list[int] = []
    result = await settlement.settle_month(runtime.database, runtime.clock, admin_access(), MARCH,
                                           on_pair=seen.append)
    assert seen == [2]
    assert sorted(s.organization_id for s in result.drafted) == sorted([org.id, other_org.id])
    async with runtime.database.unit_of_work() as s:
        await settlement.approve_settlement(s, runtime.clock, admin_access(), str(result.drafted[0].id))
    await _served(runtime, elder, org, price=1500, at=datetime(2026, 3, 20, 2, tzinfo=UTC))
    await _served(runtime, elder, other_org, price=1500, at=datetime(2026, 3, 20, 3, tzinfo=UTC))
    again = await settlement.settle_month(runtime.database, runtime.clock, admin_access(), MARCH)
    assert len(again.drafted) == 1 and len(again.skipped_approved) == 1


async def test_exports_read_back_with_chinese_headers_and_amounts_in_yuan(
        runtime: Runtime, world: tuple[Program, Organization, Elder]) -> None:
    program, org, elder = world
    for day in range(3, 8):
        await _served(runtime, elder, org, price=1500, at=datetime(2026, 3, day, 2, tzinfo=UTC))
    await _served(runtime, elder, org, price=4501, at=datetime(2026, 3, 9, 2, tzinfo=UTC),
                  exclude="rejected: far_check_in: 距离老人住址3公里")
    statement = await _draft(runtime, program, org, MARCH)
    async with runtime.database.unit_of_work() as s:
        header = await statement_header(s, statement)
    built = await csv_export(runtime.database, header)
    with built.file:
        raw = built.file.read()
    assert raw.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert rows[0] == list(HEADERS)
    assert rows[0][:3] == ["序号", "结算单号", "购买服务项目"]
    body, totals, digest = rows[1:-2], rows[-2], rows[-1]
    assert digest == ["完整性校验 SHA-256", built.content_sha256]
    assert len(body) == 6
    assert body[0][5] == "正常结算" and body[0][9] == elder.name and "*" in body[0][10]
    assert body[0][11] == "生活照料" and body[0][12] == "2026-03-03 10:00"
    assert (body[0][13], body[0][14], body[0][15]) == ("15.00", "13.50", "1.50")
    assert body[-1][5] == "剔除（不予结算）"
    assert body[-1][16] == "审核不通过：签到位置偏离老人住址：距离老人住址3公里"
    assert totals[0] == "合计" and (totals[13], totals[14], totals[15]) == ("75.00", "67.50", "7.50")

    target = (await xlsx_export(runtime.database, header)).file
    try:
        book = load_workbook(target, read_only=True)
        assert book.sheetnames == ["结算汇总", "结算明细", "完整性校验"]
        summary = {r[0]: r[1] for r in book["结算汇总"].iter_rows(min_row=2, values_only=True)}
        assert summary["结算笔数"] == 5 and summary["政府补贴合计（元）"] == pytest.approx(67.5)
        detail = list(book["结算明细"].iter_rows(values_only=True))
        assert list(detail[0]) == list(HEADERS)
        assert len(detail) == 1 + 6 + 1
        assert detail[1][13:16] == (15.0, 13.5, 1.5)
        assert detail[-1][0] == "合计" and detail[-1][14] == pytest.approx(67.5)
    finally:
        target.close()


async def test_lines_need_a_draft_statement_and_a_statement_with_lines_stays(
        runtime: Runtime, world: tuple[Program, Organization, Elder]) -> None:
    program, org, elder = world
    await _served(runtime, elder, org, price=4500, at=datetime(2026, 3, 3, 2, tzinfo=UTC))
    draft = await _draft(runtime, program, org, MARCH)
    with refused(asyncpg.ForeignKeyViolationError, trigger="vnh_settlement_closed",
                 message=re.escape(f"settlement {draft.id} has lines")):
        async with runtime.database.unit_of_work() as s:
            await s.execute(text("DELETE FROM settlements WHERE id = :sid"), {"sid": draft.id})
    with refused(asyncpg.RaiseError, trigger="vnh_settlement_lines_closed",
                 message=r"settlement [0-9a-f-]{36} is approved or missing: its lines cannot change"):
        async with runtime.database.unit_of_work() as s:
            await s.execute(text(
                "INSERT INTO settlement_lines (settlement_id, kind, capture_id, visit_id, order_id, elder_id, "
                "caregiver_id, service_code, service_month, price_fen, quota_fen, copay_fen) "
                "SELECT gen_random_uuid(), kind, capture_id + 1000, visit_id, order_id, elder_id, caregiver_id, "
                "service_code, service_month, 0, 0, 0 FROM settlement_lines WHERE settlement_id = :sid"),
                {"sid": draft.id})


async def test_the_cli_settles_a_month_with_a_progress_bar_and_verifies_the_ledger(
        runtime: Runtime, world: tuple[Program, Organization, Elder], capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    from billing import commands

    _, org, elder = world
    await _served(runtime, elder, org, price=4500, at=datetime(2026, 3, 3, 2, tzinfo=UTC))
    bar = io.StringIO()
    assert await commands.settle(runtime, "2026-03", console=Console(file=bar, force_terminal=True)) == 0
    assert "settling" in bar.getvalue()
    assert "month=2026-03 statements=1 lines=1 exclusions=0 quota=40.50" in capsys.readouterr().out
    assert await commands.settle(runtime, "March", console=Console(file=io.StringIO())) == 2
    assert await commands.verify(runtime) == 0
    assert capsys.readouterr().out.startswith("ok=True")

