"""Billing: settle one month of 1,000,000 captured visits across 50 organisations; reservations per second for
one hot elder under contention.

    .venv/bin/python bench/billing_settlement.py [--visits 1000000] [--organizations 50] [--workers 8]

Against DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres) on a scratch database it creates,
migrates and drops.

1. Settlement. Synthetic elders, organisations and one programme are loaded, then the visits go into billing's own
   tables with COPY (`billing_captures`, 2 % of them an earlier month's visits billed late, i.e. adjustment lines,
   plus 1 exclusion per 50 visits in `billing_exclusions`). `billing.settlement.settle_month` then drafts the 50
   statements exactly as `vnh billing settle --month 2026-03` does, in a child process of its own so its peak memory
   is its own: wall time, peak RSS of that process (getrusage) and tracemalloc's peak of Python allocations. The
   PostgreSQL server's own memory is not counted (it works in its shared buffers and `work_mem`). Then the largest
   statement is exported as CSV and XLSX (streamed), timed.
   Goal (issue 5): under 60 s and under 500 MB.
2. Contention. `billing.service.quote_and_reserve` in its own committed transaction per order (as an order intake
   would run it, with its audit row and outbox event): one worker for one elder (no contention), N workers for one
   hot elder (all on the same entitlement row and programme row), N workers for N elders (same programme row only).
   Then N workers racing for a small quota: the sum reserved must equal the quota exactly, never more;
   `billing.verify` must find the ledger sound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg
from common import Progress, database_url, machine_note, owner_dsn, scratch_database, table
from sqlalchemy import text

from billing import programs, schemas, settlement
from billing import service as billing
from billing.export import csv_export, file_chunks, statement_header, xlsx_export
from billing.models import Settlement
from billing.rules import SERVICE_TZ
from billing.verify import verify_ledger
from kernel.authz import Access
from kernel.clock import ManualClock
from kernel.db import Database, create_engine

MONTH = date(2026, 3, 1)
REGION = "150625"
SERVICES = (("daily_care", 4500), ("meal_assist", 1500), ("cleaning", 8000), ("companionship", 3000))
ELDER_COLUMNS = ("id", "name", "id_number_enc", "id_number_bidx", "id_number_masked", "address_enc",
                 "address_masked", "emergency_contacts_masked", "gender", "birth_date", "lat", "lon", "region_code",
                 "categories", "assessment_level", "languages", "preferences", "status")
ENTITLEMENT_COLUMNS = ("id", "elder_id", "program_id", "month", "rule_position", "quota_fen", "copay_percent")
CAPTURE_COLUMNS = ("visit_id", "order_id", "elder_id", "program_id", "entitlement_id", "organization_id",
                   "caregiver_id", "service_code", "service_month", "served_at", "billable_at", "price_fen",
                   "quota_fen", "copay_fen")
EXCLUSION_COLUMNS = ("visit_id", "order_id", "elder_id", "program_id", "organization_id", "caregiver_id",
                     "service_code", "service_month", "served_at", "price_fen", "reason", "excluded_at")
CHUNK = 20_000
REASONS = ("outcome: elder_absent", "rejected: far_check_in: 签到距离3.2公里", "rejected: too_short: 仅服务9分钟",
           "unresolved: no_confirmation")


def _march_instant(rng: random.Random) -> datetime:
    start = datetime(2026, 3, 1, tzinfo=SERVICE_TZ)
    return (start + timedelta(seconds=rng.randrange(31 * 86400 - 3600))).astimezone(UTC)


def _elders(rng: random.Random, count: int) -> Iterator[tuple[Any, ...]]:
    for i in range(count):
        yield (uuid.uuid4(), f"老人{i:06d}", "k1:bench", f"{i:064x}", f"150625********{i % 10000:04d}", "k1:bench",
               "内蒙古鄂尔多斯市杭锦旗", "[]", rng.choice(("male", "female")),
               date(1930 + rng.randrange(30), rng.randint(1, 12), rng.randint(1, 28)), 39.85, 108.73, REGION,
               ["dibao"], rng.randint(0, 4), ["zh"], "{}", "active")


def _captures(rng: random.Random, count: int, program_id: uuid.UUID, elders: list[uuid.UUID],
              entitlements: dict[tuple[uuid.UUID, date], uuid.UUID], orgs: list[uuid.UUID]
              ) -> Iterator[list[tuple[Any, ...]]]:
    chunk: list[tuple[Any, ...]] = []
    for i in range(count):
        code, price = SERVICES[i % len(SERVICES)]
        copay = -(-price * 10 // 100)
        served = _march_instant(rng)
        late = i % 50 == 7  # a February visit resolved and billed in March: an adjustment line
        elder = elders[i % len(elders)]
        month = date(2026, 2, 1) if late else MONTH
        chunk.append((uuid.uuid4(), uuid.uuid4(), elder, program_id, entitlements[(elder, month)],
                      orgs[i % len(orgs)], uuid.uuid4(), code, month,
                      served - timedelta(days=30) if late else served, served + timedelta(minutes=30),
                      price, price - copay, copay))
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _exclusions(rng: random.Random, count: int, program_id: uuid.UUID, elders: list[uuid.UUID],
                orgs: list[uuid.UUID]) -> list[tuple[Any, ...]]:
    rows = []
    for i in range(count):
        code, price = SERVICES[i % len(SERVICES)]
        served = _march_instant(rng)
        rows.append((uuid.uuid4(), uuid.uuid4(), elders[i % len(elders)], program_id, orgs[i % len(orgs)],
                     uuid.uuid4(), code, MONTH, served, price, REASONS[i % len(REASONS)],
                     served + timedelta(hours=1)))
    return rows


async def load(name: str, visits: int, organizations: int, elders: int, progress: Progress) -> uuid.UUID:
    rng = random.Random(2026)
    database = Database(create_engine(database_url(name), role="vnh_app", pool_size=2))
    clock = ManualClock(datetime(2026, 3, 1, 1, tzinfo=UTC))
    async with database.unit_of_work() as session:
        program = await programs.create_program(session, clock, Access.system("bench"), schemas.ProgramCreate(
            name="杭锦旗2026年居家养老政府购买服务", region_code=REGION, period_start=date(2026, 1, 1),
            period_end=date(2026, 12, 31), budget_fen=10**13, covered_services=[c for c, _ in SERVICES],
            rules=[schemas.ProgramRule(category="dibao", monthly_quota_fen=60_000, copay_percent=10)]))
        program_id = program.id
    await database.dispose()
    conn = await asyncpg.connect(owner_dsn(name))
    try:
        org_ids = [uuid.uuid4() for _ in range(organizations)]
        await conn.copy_records_to_table("organizations", columns=("id", "name", "region_code"), records=[
            (o, f"杭锦旗第{i + 1}居家养老服务站", REGION) for i, o in enumerate(org_ids)])
        elder_rows = list(_elders(rng, elders))
        await conn.copy_records_to_table("elders", columns=ELDER_COLUMNS, records=elder_rows)
        elder_ids = [r[0] for r in elder_rows]
        del elder_rows
        # each elder's February and March entitlement (免申即享: materialised as intake would have)
        entitlements = {(e, m): uuid.uuid4() for e in elder_ids for m in (date(2026, 2, 1), MONTH)}
        await conn.copy_records_to_table("entitlements", columns=ENTITLEMENT_COLUMNS, records=[
            (eid, e, program_id, m, 0, 1_000_000, 10) for (e, m), eid in entitlements.items()])
        progress(f"{organizations} organisations, {elders:,} elders, {len(entitlements):,} entitlements, "
                 "1 programme loaded")
        started = time.perf_counter()
        copied = 0
        posting_id = 1000
        for chunk in _captures(rng, visits, program_id, elder_ids, entitlements, org_ids):
            await conn.copy_records_to_table("billing_captures", columns=CAPTURE_COLUMNS, records=chunk)
            # the ledger as capture would have posted it: used ← available, one balanced posting per visit
            postings, entries = [], []
            for row in chunk:
                posting_id += 1
                postings.append((posting_id, f"capture:{row[1]}", "capture", row[1], program_id, row[10]))
                entries.append((posting_id, "entitlement_used", row[4], row[12]))
                entries.append((posting_id, "program_available", program_id, -row[12]))
            await conn.copy_records_to_table("ledger_postings", records=postings, columns=(
                "id", "key", "kind", "order_id", "program_id", "posted_at"))
            await conn.copy_records_to_table("ledger_entries", records=entries, columns=(
                "posting_id", "account", "account_id", "amount_fen"))
            copied += len(chunk)
            if copied % 200_000 == 0:
                progress(f"  COPY billing_captures: {copied:,}")
        excluded = _exclusions(rng, visits // 50, program_id, elder_ids, org_ids)
        await conn.copy_records_to_table("billing_exclusions", columns=EXCLUSION_COLUMNS, records=excluded)
        elapsed = time.perf_counter() - started
        progress(f"{visits:,} captures with their ledger postings and {len(excluded):,} exclusions copied in "
                 f"{elapsed:.1f} s")
        # what the captures used, as the ledger would have moved it
        await conn.execute("""
            UPDATE entitlements e SET used_fen = c.used
              FROM (SELECT entitlement_id, sum(quota_fen) AS used FROM billing_captures GROUP BY 1) c
             WHERE c.entitlement_id = e.id""")
        await conn.execute("UPDATE programs p SET used_fen = (SELECT coalesce(sum(used_fen), 0) FROM entitlements "
                           "WHERE program_id = p.id)")
        await conn.execute("SELECT setval(pg_get_serial_sequence('ledger_postings', 'id'), $1)", posting_id)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return program_id


def settle_child(name: str) -> None:
    """The timed part, in a process of its own: `vnh billing settle --month 2026-03`'s work."""

    async def run() -> dict[str, Any]:
        database = Database(create_engine(database_url(name), role="vnh_app", pool_size=2,
                                          statement_timeout_ms=600_000))
        clock = ManualClock(datetime(2026, 4, 1, 2, tzinfo=UTC))
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        started = time.perf_counter()
        result = await settlement.settle_month(database, clock, Access.system("bench"), MONTH)
        elapsed = time.perf_counter() - started
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out: dict[str, Any] = {
            "seconds": elapsed, "statements": len(result.drafted),
            "lines": sum(s.line_count + s.adjustment_count for s in result.drafted),
            "adjustments": sum(s.adjustment_count for s in result.drafted),
            "exclusions": sum(s.exclusion_count for s in result.drafted),
            "quota_fen": sum(s.quota_fen for s in result.drafted),
            "traced_peak_mb": traced_peak / 2**20,
            "rss_before_mb": rss_before / 1024,
            "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        largest = max(result.drafted, key=lambda s: s.line_count + s.exclusion_count)
        out["export"] = await export(database, largest)
        await database.dispose()
        return out

    print(json.dumps(asyncio.run(run())))


async def export(database: Database, statement: Settlement) -> dict[str, Any]:
    async with database.unit_of_work() as session:
        header = await statement_header(session, statement)
    figures: dict[str, Any] = {"lines": statement.line_count + statement.adjustment_count + statement.exclusion_count}
    for fmt, build in (("csv", csv_export), ("xlsx", xlsx_export)):
        started = time.perf_counter()
        size = 0
        async for chunk in file_chunks((await build(database, header)).file):
            size += len(chunk)
        figures[fmt] = {"seconds": time.perf_counter() - started, "bytes": size}
    return figures


async def contention(name: str, workers: int, per_worker: int, progress: Progress) -> list[list[Any]]:
    database = Database(create_engine(database_url(name), role="vnh_app", pool_size=workers + 2))
    clock = ManualClock(datetime(2026, 3, 15, 2, tzinfo=UTC))
    conn = await asyncpg.connect(owner_dsn(name))
    try:
        elder_ids = [r["id"] for r in await conn.fetch("SELECT id FROM elders ORDER BY id LIMIT $1", workers + 1)]
    finally:
        await conn.close()
    async with database.unit_of_work() as session:
        roomy = await programs.create_program(session, clock, Access.system("bench"), schemas.ProgramCreate(
            name="热点测试项目", region_code=REGION, period_start=date(2026, 3, 1), period_end=date(2026, 3, 31),
            budget_fen=10**12, covered_services=["daily_care"],
            rules=[schemas.ProgramRule(category="dibao", monthly_quota_fen=10**9, copay_percent=10)]))
    del roomy

    async def worker(elder: uuid.UUID, count: int, latencies: list[float]) -> int:
        reserved = 0
        for _ in range(count):
            order = _Order(uuid.uuid4(), elder, "daily_care", REGION, 4500, MONTH)
            started = time.perf_counter()
            async with database.unit_of_work() as session:
                quote = await billing.quote_and_reserve(session, clock, order)
            latencies.append(time.perf_counter() - started)
            reserved += quote.quota_fen
        return reserved

    rows: list[list[Any]] = []
    # the same-run baseline: an empty unit of work (`select 1`, commit) on the same engine
    latencies_base: list[float] = []
    started = time.perf_counter()
    for _ in range(per_worker * workers):
        t0 = time.perf_counter()
        async with database.unit_of_work() as session:
            await session.execute(text("select 1"))
        latencies_base.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies_base)
    rows.append(["baseline: empty transaction", len(ordered), len(ordered) / elapsed, ordered[len(ordered) // 2] * 1e3,
                 ordered[int(len(ordered) * 0.99) - 1] * 1e3])
    for label, elders, n in (("1 worker, 1 elder", [elder_ids[0]], 1),
                             (f"{workers} workers, 1 hot elder", [elder_ids[0]] * workers, workers),
                             (f"{workers} workers, {workers} elders", elder_ids[1:workers + 1], workers)):
        latencies: list[float] = []
        count = per_worker * (workers if n == 1 else 1)
        started = time.perf_counter()
        await asyncio.gather(*(worker(e, count, latencies) for e in elders))
        elapsed = time.perf_counter() - started
        ordered = sorted(latencies)
        rows.append([label, len(latencies), len(latencies) / elapsed, ordered[len(ordered) // 2] * 1e3,
                     ordered[int(len(ordered) * 0.99) - 1] * 1e3])
        progress(f"  {label}: {len(latencies) / elapsed:,.0f} reservations/s")

    # the race for a small quota: never more than the quota, to the fen
    quota = 100_000
    async with database.unit_of_work() as session:
        tight = await programs.create_program(session, clock, Access.system("bench"), schemas.ProgramCreate(
            name="额度竞争测试项目", region_code=REGION, period_start=date(2026, 3, 1), period_end=date(2026, 3, 20),
            budget_fen=10**9, covered_services=["companionship"],
            rules=[schemas.ProgramRule(category="dibao", monthly_quota_fen=quota, copay_percent=10)]))
        tight_id = tight.id
    hot = elder_ids[-1]

    async def racer() -> int:
        total = 0
        for _ in range(10):
            order = _Order(uuid.uuid4(), hot, "companionship", REGION, 3000, MONTH)
            async with database.unit_of_work() as session:
                quote = await billing.quote_and_reserve(session, clock, order)
            total += quote.quota_fen if quote.program_id == tight_id else 0
        return total

    reserved = sum(await asyncio.gather(*(racer() for _ in range(workers))))
    async with database.unit_of_work() as session:
        verdict = await verify_ledger(session)
    progress(f"  race for a {quota:,} fen quota: {workers * 10} orders reserved {reserved:,} fen in total; "
             f"verify: {verdict.summary().splitlines()[0]}")
    assert reserved == quota, (reserved, quota)
    assert verdict.ok, verdict.summary()
    await database.dispose()
    return rows


async def verify(name: str) -> dict[str, Any]:
    database = Database(create_engine(database_url(name), role="vnh_app", pool_size=1,
                                      statement_timeout_ms=600_000))
    started = time.perf_counter()
    async with database.unit_of_work() as session:
        verdict = await verify_ledger(session)
    await database.dispose()
    if not verdict.ok:
        print(verdict.summary(), file=sys.stderr)
    return {"ok": verdict.ok, "seconds": time.perf_counter() - started, "entries": verdict.entries}


class _Order:
    """A priced order as orders hands it to billing."""

    def __init__(self, id: uuid.UUID, elder_id: uuid.UUID, service_code: str, region_code: str, price_fen: int,
                 service_month: date) -> None:
        self.id, self.elder_id, self.service_code = id, elder_id, service_code
        self.region_code, self.price_fen, self.service_month = region_code, price_fen, service_month


async def main(args: argparse.Namespace) -> None:
    progress = Progress()
    print(f"billing settlement benchmark — {machine_note()}")
    async with scratch_database("billing", progress) as name:
        await load(name, args.visits, args.organizations, args.elders, progress)
        verified = await verify(name)
        progress(f"vnh billing verify over the loaded ledger: ok={verified['ok']} in {verified['seconds']:.1f} s")
        progress(f"settling 2026-03 in a child process ({args.organizations} organisations × 1 programme)")
        child = await asyncio.create_subprocess_exec(sys.executable, __file__, "--settle-child", name,
                                                     stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await child.communicate()
        if child.returncode != 0:
            print(out.decode(), err.decode(), file=sys.stderr)
            raise SystemExit("settlement failed")
        figures = json.loads(out.decode().strip().splitlines()[-1])
        progress(f"settled: {figures['statements']} statements, {figures['lines']:,} lines in "
                 f"{figures['seconds']:.1f} s")
        progress(f"contention: {args.workers} workers, {args.per_worker} reservations each")
        rows = await contention(name, args.workers, args.per_worker, progress)

    print()
    print("Settlement of one month (issue 5 goal: under 60 s and under 500 MB)")
    print(table(["visits", "statements", "lines", "adjustments", "exclusions", "seconds", "lines/s",
                 "peak RSS MB", "tracemalloc peak MB"],
                [[args.visits, figures["statements"], figures["lines"], figures["adjustments"],
                  figures["exclusions"], figures["seconds"], figures["lines"] / figures["seconds"],
                  figures["rss_peak_mb"], figures["traced_peak_mb"]]]))
    print(f"(the settling process held {figures['rss_before_mb']:.0f} MB RSS before it started: interpreter and "
          f"libraries; PostgreSQL's memory is the server's, not counted)")
    print(f"vnh billing verify over {verified['entries']:,} ledger entries: ok={verified['ok']}, "
          f"{verified['seconds']:.1f} s")
    exp = figures["export"]
    print()
    print(f"Export of the largest statement ({exp['lines']:,} lines), streamed")
    print(table(["format", "seconds", "MB"], [[f, exp[f]["seconds"], exp[f]["bytes"] / 2**20]
                                              for f in ("csv", "xlsx")]))
    print()
    print("Reservations (quote_and_reserve, one committed transaction each, with its audit row and outbox event)")
    print(table(["run", "reservations", "per second", "p50 ms", "p99 ms"], rows))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--settle-child":
        settle_child(sys.argv[2])
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visits", type=int, default=1_000_000)
    parser.add_argument("--organizations", type=int, default=50)
    parser.add_argument("--elders", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--per-worker", type=int, default=150, help="reservations per worker in each run")
    asyncio.run(main(parser.parse_args()))
