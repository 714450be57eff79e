"""`vnh billing settle --month YYYY-MM` and `vnh billing verify` (wired into `vnh.cli`)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from billing.export import yuan
from billing.models import Settlement
from billing.rules import parse_month
from billing.settlement import settle_month
from billing.verify import verify_ledger
from kernel.authz import Access
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
