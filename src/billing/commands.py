"""`vnh billing settle --month YYYY-MM`, `vnh billing verify` and `vnh billing verify-export FILE` (wired into
`vnh.cli`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import select

from billing.export import yuan
from billing.models import Settlement
from billing.rules import parse_month
from billing.settlement import settle_month
from billing.verify import verify_ledger
from kernel.audit import AuditEntry
from kernel.authz import Access
from kernel.exports import verify_export
from kernel.runtime import Runtime


async def settle(runtime: Runtime, month_text: str, *, console: Console | None = None) -> int:
    """Draft (or refresh) every statement of the month with a progress bar; answers the exit status."""
    console = console or Console(stderr=True)
    try:
        month = parse_month(month_text)
    except ValueError:
        console.print("[red]--month must be YYYY-MM[/red]")
        return 2
    totals = {"statements": 0, "lines": 0, "exclusions": 0, "quota_fen": 0}
    with Progress(TextColumn("[bold]settling {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[lines]} lines"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(month_text, total=None, lines=0)

        def on_pair(count: int) -> None:
            progress.update(task, total=count)

        def on_statement(statement: Settlement) -> None:
            totals["statements"] += 1
            totals["lines"] += statement.line_count + statement.adjustment_count
            totals["exclusions"] += statement.exclusion_count
            totals["quota_fen"] += statement.quota_fen
            progress.update(task, advance=1, lines=totals["lines"])

        result = await settle_month(runtime.database, runtime.clock, Access.system("billing-settle"), month,
                                    on_pair=on_pair, on_statement=on_statement)
    print(f"month={month_text} statements={totals['statements']} lines={totals['lines']} "
          f"exclusions={totals['exclusions']} quota={yuan(totals['quota_fen'])} "
          f"skipped_approved={len(result.skipped_approved)}")
    return 0


async def verify(runtime: Runtime) -> int:
    async with runtime.database.unit_of_work() as session:
        verdict = await verify_ledger(session)
    print(verdict.summary())
    return 0 if verdict.ok else 1


def _check_export_file(path: Path) -> tuple[int, str | None]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror or exc}")
        return 2, None
    try:
        verdict = verify_export(data)
    except Exception as exc:  # a damaged zip, text that is not UTF-8: altered, said plainly, not a traceback
        print(f"{path}: ALTERED or not an export: cannot read it ({type(exc).__name__}: {exc})")
        return 1, None
    print(f"{path}: {verdict.message}")
    return (0, verdict.recorded) if verdict.intact else (1, None)


def verify_export_file(path: Path) -> int:
    """Check a settlement export (CSV or XLSX) against the SHA-256 it carries: 0 intact; 1 altered, damaged or
    without a digest; 2 the file cannot be opened. Needs no database: the file alone is checked (`--audit` also
    compares the digest with the audit records of vnh's exports)."""
    return _check_export_file(path)[0]


async def verify_export_issued(runtime: Runtime, path: Path) -> int:
    """`verify-export --audit`: the file is intact and its digest is the one vnh recorded when it issued the export
    (a reader who edits a cell and writes a new digest into the file passes the file check, not this one)."""
    status, digest = await asyncio.to_thread(_check_export_file, path)
    if status != 0:
        return status
    async with runtime.database.unit_of_work() as session:
        issued = await session.scalar(select(AuditEntry).where(
            AuditEntry.action == "settlement.export", AuditEntry.outcome == "success",
            AuditEntry.summary["content_sha256"].astext == digest).order_by(AuditEntry.id).limit(1))
    if issued is None:
        print(f"{path}: NOT ISSUED: no export with SHA-256 {digest} in the audit log (the digest was written by "
              "someone else)")
        return 1
    print(f"{path}: issued by vnh: settlement {issued.entity_id} exported by {issued.actor_id} at "
          f"{issued.at.isoformat()} (audit record {issued.id})")
    return 0
