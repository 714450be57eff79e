"""What every spreadsheet export (CSV, XLSX) does to its cells: formula-injection neutralising, and the integrity
digest of its canonical content. Pure; every writer of an export in src/ goes through `inert` and `ContentDigest`.

Formula injection (OWASP "CSV injection"): a text cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return
(or their full-width forms, which Chinese input methods type and some spreadsheet programmes accept) is prefixed
with a single quote, so a name such as `=HYPERLINK("http://…"&A1,"点我")` stays text. Numbers are never touched:
a negative amount is a number, not a formula.

Canonical content, the thing the SHA-256 digest covers: every row of every table of the export (CSV: its one
table; XLSX: every sheet but the digest sheet, in order) except the digest row itself, each row serialised as one
line of compact JSON `[table, [cell, …]]` followed by `\\n`, UTF-8. A cell is text: empty for None, decimal digits
for an integer or a whole float (`45.0` is `45`: XLSX keeps no difference), Python's shortest round-trip form for
other floats (`121.5`), the text itself otherwise with line breaks normalised to `\\n`; trailing empty cells of a
row are dropped (a spreadsheet reader pads rows to the sheet's width). Formatting (fonts, widths, number formats)
is not content. The CSV table is named `csv`; sheets by their names. So the digest written into the file can be
checked by reading the file back (`verify_csv`, `verify_xlsx`), and the same digest is sent in the HTTP header and
kept in the audit record of the export.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import IO, Any

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "＝", "＋", "－", "＠")

DIGEST_ALGORITHM = "SHA-256"
CSV_DIGEST_LABEL = "完整性校验 SHA-256"  # first cell of a CSV export's last row; the digest is the second
XLSX_DIGEST_SHEET = "完整性校验"  # the last sheet of an XLSX export; the digest is in B2
CSV_TABLE = "csv"
HEADER = "X-Content-SHA256"  # the HTTP header that carries the digest of an export's canonical content

_HEX = re.compile(r"^[0-9a-f]{64}$")
# characters XML 1.0 cannot carry; openpyxl refuses them (a 500 if an elder's name held one)
_ILLEGAL_XML = re.compile(r"[\000-\010\013\014\016-\037]")


def inert_text(value: str) -> str:
    """A text cell no spreadsheet programme will read as a formula."""
    return "'" + value if value.startswith(FORMULA_TRIGGERS) else value


def inert(value: Any) -> Any:
    """The cell as an export writes it: text neutralised, numbers and empty cells as they are."""
    return inert_text(value) if isinstance(value, str) else value


def xlsx_text(value: Any) -> Any:
    """`inert`, and without the control characters an XLSX file cannot hold."""
    return inert(_ILLEGAL_XML.sub("", value)) if isinstance(value, str) else value


def canonical_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):  # a whole number reads back from XLSX as an int: `90.0` and `90` are one number
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value).replace("\r\n", "\n").replace("\r", "\n")


def canonical_row(table: str, row: Sequence[Any]) -> bytes:
    cells = [canonical_cell(v) for v in row]
    while cells and cells[-1] == "":
        cells.pop()
    return (json.dumps([table, cells], ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


class ContentDigest:
    """SHA-256 of an export's canonical content, fed row by row as the rows are written."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add(self, table: str, row: Sequence[Any]) -> None:
        self._hash.update(canonical_row(table, row))

    def add_all(self, table: str, rows: Iterable[Sequence[Any]]) -> None:
        for row in rows:
            self.add(table, row)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def xlsx_digest_rows(digest: str) -> list[list[str]]:
    """The rows of the XLSX digest sheet: the digest sits in B2."""
    return [["算法", DIGEST_ALGORITHM], ["校验值", digest],
            ["范围", "本工作簿其余各工作表全部单元格的规范化内容（见 vnh billing verify-export）"]]


@dataclass(frozen=True)
class Verdict:
    intact: bool
    recorded: str | None  # the digest the file carries
    computed: str | None  # the digest of its content now
    message: str


def _verdict(recorded: str | None, digest: ContentDigest, where: str) -> Verdict:
    if recorded is None or not _HEX.match(recorded):
        return Verdict(False, recorded, None, f"no SHA-256 digest found ({where}): not an intact vnh export")
    computed = digest.hexdigest()
    if computed != recorded:
        return Verdict(False, recorded, computed,
                       f"ALTERED: the content's SHA-256 is {computed}, the file records {recorded}")
    return Verdict(True, recorded, computed, f"intact: SHA-256 {computed}")


def verify_csv(data: bytes) -> Verdict:
    """Check a CSV export against the digest in its last row."""
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    while rows and not any(rows[-1]):
        rows.pop()
    last = rows[-1] if rows else []
    recorded = last[1] if len(last) >= 2 and last[0] == CSV_DIGEST_LABEL else None
    digest = ContentDigest()
    digest.add_all(CSV_TABLE, rows[:-1])
    return _verdict(recorded, digest, f"the last row should start with {CSV_DIGEST_LABEL!r}")


def verify_xlsx(source: IO[bytes]) -> Verdict:
    """Check an XLSX export against the digest on its last sheet."""
    from openpyxl import load_workbook

    book = load_workbook(source, read_only=True, data_only=False)
    try:
        names = book.sheetnames
        recorded = None
        if names and names[-1] == XLSX_DIGEST_SHEET:
            value = book[XLSX_DIGEST_SHEET]["B2"].value
            recorded = value if isinstance(value, str) else None
        digest = ContentDigest()
        for name in names[:-1] if recorded is not None else names:
            digest.add_all(name, book[name].iter_rows(values_only=True))
    finally:
        book.close()
    return _verdict(recorded, digest, f"the last sheet should be {XLSX_DIGEST_SHEET!r}")


def verify_export(data: bytes) -> Verdict:
    """Check an export file of either format (an XLSX file is a zip archive)."""
    if data.startswith(b"PK\x03\x04"):
        return verify_xlsx(io.BytesIO(data))
    return verify_csv(data)
