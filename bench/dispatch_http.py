"""Orders created and matched per second, end to end over HTTP, with PostgreSQL and Redis (issue 3, "Benchmark").

    .venv/bin/python bench/dispatch_http.py [--seconds 20] [--concurrency 16] [--caregivers 500] [--elders 200]

A real `vnh serve` (subprocess, one uvicorn worker, its background workers running) on a scratch database and a
unique Redis prefix, MQTT at MQTT_URL. The world, seeded before the server starts: 5 organisations of 东胜区 (150602)
and 500 caregivers around the real town centres (COPY; valid encrypted phone numbers), on duty with positions in
Redis (`dispatch.live`); 200 elders through `orders.elders.create_elder` (the demo generator); a dispatcher of the
region created with `kernel.auth.create_user`, logged in over HTTP (`POST /v1/auth/token`).

Load: `concurrency` client tasks (httpx.AsyncClient, keep-alive) each posting `POST /v1/orders` (asap, normal
priority, a random elder and service, a fresh `Idempotency-Key`) back to back for `seconds`. Each 201 is an order
validated, priced, quota-checked, recorded with its audit row and outbox event, and matched (`find_candidates`)
and offered to its best caregiver, all in the request. Baseline in the same run, same client and concurrency:
`GET /healthz` (no database) for a third of the time before the orders. At the end the database is asked how many
orders exist and how many got an offer. Client and server share this machine's two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg
import httpx
from common import (
    ROOT,
    Progress,
    bench_settings,
    copy_organisations_and_caregivers,
    drop_redis_keys,
    machine_note,
    owner_dsn,
    plan_organisations,
    region,
    scratch_database,
    settings_env,
    summary_ms,
    synthetic_caregivers,
    table,
)

from dispatch import live
from kernel.audit import SystemActor
from kernel.auth import create_user
from kernel.authz import Access
from kernel.runtime import Runtime
from orders.elders import create_elder
from vnh.demo import plan_demo

SEED = 4242
REGION = "150602"
SERVICES = {"meal_assist": 20, "daily_care": 18, "cleaning": 12, "companionship": 9, "welfare_visit": 9,
            "health_check": 8, "walking_assist": 4, "medical_escort": 4, "bathing": 4, "respite_care": 3}
PASSWORD = "Bench-dispatch-2026"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def seed(rt: Runtime, dbname: str, n_caregivers: int, n_elders: int, progress: Progress) -> list[str]:
    rng = random.Random(SEED)
    reg = region(REGION)
    orgs = plan_organisations(rng, reg, 5)
    force = synthetic_caregivers(rng, orgs, n_caregivers, rt.cipher)
    await copy_organisations_and_caregivers(owner_dsn(dbname), orgs, force)
    now = rt.clock.now()
    for start in range(0, len(force), 50):
        await asyncio.gather(*(_on_duty(rt, c.id, c.position, now) for c in force[start:start + 50]))
    plan = plan_demo(reg.code, seed=SEED, today=now.astimezone(rt.settings.tz).date())
    elder_ids = []
    async with rt.database.unit_of_work() as s:
        for p in plan.elders[:n_elders]:
            elder_ids.append(str((await create_elder(s, rt.clock, rt.cipher, Access.system("bench"), p.data)).id))
        await create_user(s, rt.clock, SystemActor("bench"), username="bench-dispatcher", password=PASSWORD,
                          role="dispatcher", region_code=reg.code)
    progress(f"seeded {len(orgs)} organisations, {len(force)} caregivers on duty, {len(elder_ids)} elders, "
             "a dispatcher")
    return elder_ids


async def _on_duty(rt: Runtime, caregiver_id: uuid.UUID, position: tuple[float, float], now: Any) -> None:
    await live.set_duty(rt, caregiver_id, True)
    await live.set_position(rt, caregiver_id, position[0], position[1], now)


async def wait_ready(base: str, server: asyncio.subprocess.Process, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient(base_url=base, timeout=2) as client:
        while time.monotonic() < deadline:
            if server.returncode is not None:
                raise RuntimeError(f"vnh serve exited with {server.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                r = await client.get("/readyz")
                if r.status_code == 200:
                    return
            await asyncio.sleep(0.25)
    raise RuntimeError("vnh serve did not become ready")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    user, system = cpu_split(pid)
    return user + system


def cpu_split(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / os.sysconf("SC_CLK_TCK"), int(fields[12]) / os.sysconf("SC_CLK_TCK")


async def drive(client: httpx.AsyncClient, seconds: float, concurrency: int, request: Any, server_pid: int
                ) -> tuple[list[float], dict[str, int], float, float, float]:
    """`concurrency` tasks sending `request(client)` back to back for `seconds`: latencies of 2xx, errors, wall
    time, and the CPU seconds the server and this client process spent meanwhile."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            try:
                r = await request(client)
                ok, key = r.is_success, f"HTTP {r.status_code}"
                if not ok:
                    key += f" {r.text[:120]}"
            except httpx.HTTPError as exc:
                ok, key = False, type(exc).__name__
            if ok:
                latencies.append(time.perf_counter() - t)
            else:
                errors[key] = errors.get(key, 0) + 1

    t0, server0, client0 = time.perf_counter(), cpu_seconds(server_pid), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (latencies, errors, time.perf_counter() - t0, cpu_seconds(server_pid) - server0,
            time.process_time() - client0)


async def run(args: argparse.Namespace, progress: Progress) -> None:
    async with scratch_database("http", progress) as dbname:
        with tempfile.TemporaryDirectory() as tmp:
            settings = bench_settings(dbname, Path(tmp))
            rt = Runtime.build(settings)
            server: asyncio.subprocess.Process | None = None
            log_path = Path(tmp) / "serve.log"
            try:
                elder_ids = await seed(rt, dbname, args.caregivers, args.elders, progress)
                port = free_port()
                env = {**os.environ, **settings_env(settings)}
                env.pop("VNH_DATABASE_OWNER_URL", None)
                with log_path.open("wb") as log:
                    server = await asyncio.create_subprocess_exec(
                        str(ROOT / ".venv" / "bin" / "vnh"), "serve", "--port", str(port),
                        cwd=ROOT, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT)
                base = f"http://127.0.0.1:{port}"
                await wait_ready(base, server)
                progress(f"vnh serve (pid {server.pid}) ready on {base}")
                figures = await load(base, server.pid, elder_ids, args, progress)
                counts = await count_offers(dbname)
                report(args, figures, counts)
            except BaseException:
                if log_path.exists():
                    print("--- tail of vnh serve's log ---\n" + "\n".join(log_path.read_text().splitlines()[-30:]))
                raise
            finally:
                if server is not None and server.returncode is None:
                    server.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(server.wait(), 20)
                    except TimeoutError:
                        server.kill()
                        await server.wait()
                    progress(f"vnh serve stopped ({server.returncode})")
                await rt.close()
                progress(f"deleted {await drop_redis_keys(settings.redis_prefix)} Redis keys under "
                         f"{settings.redis_prefix}")


async def load(base: str, server_pid: int, elder_ids: list[str], args: argparse.Namespace, progress: Progress
               ) -> dict[str, Any]:
    rng = random.Random(SEED + 1)
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        r = await client.post("/v1/auth/token", json={"username": "bench-dispatcher", "password": PASSWORD})
        r.raise_for_status()
        client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

        async def healthz(c: httpx.AsyncClient) -> httpx.Response:
            return await c.get("/healthz")

        async def order(c: httpx.AsyncClient) -> httpx.Response:
            body = {"elder_id": rng.choice(elder_ids), "window": "asap", "priority": "normal", "channel": "hotline",
                    "service_code": rng.choices(list(SERVICES), weights=list(SERVICES.values()))[0]}
            return await c.post("/v1/orders", json=body, headers={"Idempotency-Key": str(uuid.uuid4())})

        await drive(client, 1.0, args.concurrency, healthz, server_pid)  # warm the connections
        health_seconds = max(3.0, args.seconds / 3)
        progress(f"baseline: GET /healthz at concurrency {args.concurrency} for {health_seconds:.0f} s")
        h = await drive(client, health_seconds, args.concurrency, healthz, server_pid)
        progress(f"load: POST /v1/orders at concurrency {args.concurrency} for {args.seconds:.0f} s")
        before = cpu_split(server_pid)
        o = await drive(client, args.seconds, args.concurrency, order, server_pid)
        after = cpu_split(server_pid)
    return {"healthz": h, "orders": o, "orders_kernel_share": (after[1] - before[1]) /
            max(1e-9, after[0] + after[1] - before[0] - before[1])}


async def count_offers(dbname: str) -> dict[str, Any]:
    conn = await asyncpg.connect(owner_dsn(dbname))
    try:
        orders = await conn.fetchval("select count(*) from orders")
        offered = await conn.fetchval("select count(distinct order_id) from offers")
        statuses = dict(await conn.fetch("select status, count(*) from orders group by status order by 2 desc"))
        one_pending = await conn.fetchval(
            "select count(*) from (select order_id from offers where status = 'pending' group by order_id "
            "having count(*) = 1) x")
    finally:
        await conn.close()
    return {"orders": orders, "offered": offered, "statuses": statuses, "one_pending": one_pending}


def report(args: argparse.Namespace, figures: dict[str, Any], counts: dict[str, Any]) -> None:
    print()
    print(f"Orders created + matched over HTTP, concurrency {args.concurrency} ({machine_note()})")
    print(f"vnh serve (1 uvicorn worker) + PostgreSQL + Redis; {args.caregivers} caregivers on duty, "
          f"{args.elders} elders in 东胜区; client on the same machine")
    rows = []
    rates = {}
    for label, key in (("GET /healthz (baseline)", "healthz"), ("POST /v1/orders (asap)", "orders")):
        latencies, errors, wall, server_cpu, client_cpu = figures[key]
        s = summary_ms(latencies)
        rates[key] = len(latencies) / wall
        done = max(1, len(latencies) + sum(errors.values()))
        rows.append((label, len(latencies), round(wall, 1), rates[key], s["p50"], s["p99"], s["max"],
                     sum(errors.values()), server_cpu / done * 1e3, client_cpu / done * 1e3))
    print(table(["request", "ok", "seconds", "req/s", "p50 ms", "p99 ms", "max ms", "errors", "server CPU ms/req",
                 "client CPU ms/req"], rows))
    cpu = {k: figures[k][3] / max(1, len(figures[k][0]) + sum(figures[k][1].values()))
           for k in ("healthz", "orders")}
    print(f"orders/s = {rates['orders'] / rates['healthz']:.3f} x the /healthz rate "
          f"(1 order costs {rates['healthz'] / rates['orders']:.1f} /healthz requests of wall time); "
          f"server CPU per order = {cpu['orders'] / cpu['healthz']:.0f} x per /healthz")
    print(f"one server process could create at most ~{1 / cpu['orders']:.0f} orders/s on a core of its own "
          f"(1 / server CPU per order; {100 * figures['orders_kernel_share']:.0f}% of that CPU is kernel time)")
    h_client = figures["healthz"][4] / max(1, len(figures["healthz"][0]))
    if h_client > cpu["healthz"]:
        print(f"/healthz is bound by the client here ({h_client * 1e3:.2f} ms of client CPU per request against "
              f"{cpu['healthz'] * 1e3:.2f} ms of server CPU): the wall-time ratio flatters the orders")
    for key in ("healthz", "orders"):
        for what, n in figures[key][1].items():
            print(f"  {key} error x{n}: {what}")
    created = len(figures["orders"][0])
    print(f"database: {counts['orders']} orders ({created} answered 201), {counts['offered']} with an offer, "
          f"{counts['one_pending']} with exactly one pending offer; statuses {counts['statuses']}")
    print("every order got an offer" if counts["offered"] == counts["orders"] == created else
          "NOT every order got an offer (see the statuses)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--caregivers", type=int, default=500)
    parser.add_argument("--elders", type=int, default=200)
    args = parser.parse_args()
    progress = Progress()
    asyncio.run(run(args, progress))
    progress("done")


if __name__ == "__main__":
    main()
