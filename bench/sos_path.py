"""One SOS through the ingest in process, without the broker: where an emergency's time goes (issue 4).

    .venv/bin/python bench/sos_path.py [--sos 300] [--caregivers 20] [--profile]

The world of `devices_ingest.py` (elders with a call button each around 锡尼镇, 20 caregivers on duty nearby), in a
scratch database. Each SOS is one `ingest_batch` of one inbound message in its own unit of work, committed: the
alarm, the urgent emergency order with its state events, offers to the 3 nearest caregivers, outbox and audit rows,
exactly what the MQTT gateway's urgent queue runs. Timed per SOS: wall and this process's CPU, the number of SQL
statements sent (a `before_cursor_execute` listener), and as the in-run baseline a `SELECT 1` on a session of the
same engine. `--profile` also prints the twelve functions with most cumulative time (cProfile, a separate pass).

Start-up objects are frozen out of the collector's full passes (`gc.freeze()`), as `vnh serve` and
`vnh devices ingest` do.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import pstats
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Progress, bench_settings, drop_redis_keys, machine_note, scratch_database, summary_ms, table
from devices_ingest import seed
from sqlalchemy import event, text

from devices.ingest import Inbound, ingest_batch
from kernel.runtime import Runtime


def sos_inbound(device_id: str) -> Inbound:
    now = datetime.now(UTC)
    body = {"event_id": f"sos-{uuid.uuid4().hex[:12]}", "type": "sos", "ts": now.isoformat(timespec="milliseconds"),
            "seq": 1, "battery": 80}
    return Inbound(device_id=device_id, kind="events", payload=json.dumps(body).encode(), received_at=now)


async def one_sos(rt: Runtime, device_id: str) -> None:
    async with rt.database.unit_of_work() as session:
        outcomes = await ingest_batch(session, rt, [sos_inbound(device_id)])
    assert outcomes[0].accepted and not outcomes[0].accepted[0].duplicate, outcomes


async def baseline(rt: Runtime) -> None:
    async with rt.database.unit_of_work() as session:
        await session.execute(text("SELECT 1"))


async def main(args: argparse.Namespace) -> int:
    progress = Progress()
    print(machine_note(), flush=True)
    statements = [0]
    async with scratch_database("sos", progress) as database:
        data_dir = Path(tempfile.mkdtemp(prefix="vnh-bench-sos-"))
        settings = bench_settings(database, data_dir)
        rt = Runtime.build(settings)

        def count(*_args: Any) -> None:
            statements[0] += 1

        event.listen(rt.database.engine.sync_engine, "before_cursor_execute", count)
        try:
            _telemetry, buttons = await seed(rt, 0, args.sos * (2 if args.profile else 1) + 5, args.caregivers,
                                             progress)
            warm, timed, profiled = buttons[:5], buttons[5:5 + args.sos], buttons[5 + args.sos:]
            for device_id, _token in warm:  # caches, prepared statements, the first GEOSEARCH
                await one_sos(rt, device_id)
            gc.collect()
            gc.freeze()
            rows: dict[str, list[tuple[float, float, int]]] = {"sos": [], "base": []}
            for index, (device_id, _token) in enumerate(timed):
                for name, call in (("base", baseline(rt)), ("sos", one_sos(rt, device_id))):
                    before = statements[0]
                    wall, cpu = time.perf_counter(), time.process_time()
                    await call
                    rows[name].append((time.perf_counter() - wall, time.process_time() - cpu,
                                       statements[0] - before))
                if (index + 1) % 100 == 0:
                    progress(f"{index + 1} SOS of {len(timed)}")
            profile_text = ""
            if args.profile:
                profiler = cProfile.Profile()
                profiler.enable()
                for device_id, _token in profiled:
                    await one_sos(rt, device_id)
                profiler.disable()
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
                profile_text = out.getvalue()
        finally:
            await rt.close()
            await drop_redis_keys(settings.redis_prefix)
            shutil.rmtree(data_dir, ignore_errors=True)
    table_rows = []
    figures: dict[str, Any] = {}
    for name, label in (("base", "SELECT 1 in a unit of work (baseline)"),
                        ("sos", "one SOS: ingest_batch + commit")):
        wall = summary_ms([r[0] for r in rows[name]])
        cpu = summary_ms([r[1] for r in rows[name]])
        n_statements = sum(r[2] for r in rows[name]) / len(rows[name])
        figures[name] = {"wall": wall, "cpu": cpu, "statements": n_statements}
        table_rows.append([label, str(wall["n"]), f"{wall['p50']:.2f}", f"{wall['p90']:.2f}", f"{wall['p99']:.2f}",
                           f"{wall['max']:.2f}", f"{cpu['p50']:.2f}", f"{n_statements:.1f}"])
    print()
    print(table(["what (ms; CPU = this process)", "n", "p50", "p90", "p99", "max", "CPU p50", "statements"],
                table_rows))
    ratio = figures["sos"]["wall"]["p50"] / figures["base"]["wall"]["p50"]
    print(f"\none SOS (p50) = {ratio:.0f} x the baseline; its CPU p50 {figures['sos']['cpu']['p50']:.1f} ms of "
          f"{figures['sos']['wall']['p50']:.1f} ms wall")
    if profile_text:
        print("\n" + "\n".join(profile_text.splitlines()[:60]))
    print("\n" + json.dumps(figures))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sos", type=int, default=300)
    parser.add_argument("--caregivers", type=int, default=20)
    parser.add_argument("--profile", action="store_true")
    raise SystemExit(asyncio.run(main(parser.parse_args())))
