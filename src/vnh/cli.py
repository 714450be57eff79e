"""The `vnh` command: serve, migrate, create-user, audit verify.

Every command takes `--data-dir`; with a URL unset it attaches to the embedded servers a running `vnh serve` started
for that data directory, or starts them itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import getpass
import json
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from kernel.audit import SystemActor, verify_chain
from kernel.auth import create_user
from kernel.authz import ROLES
from kernel.db import redact_url
from kernel.errors import DomainError
from kernel.logs import configure_logging
from kernel.migrate import migrate, pending_heads
from kernel.mqtt_probe import parse_mqtt_url
from kernel.personal_data import FieldCipher
from kernel.runtime import Runtime
from kernel.settings import Settings, ensure_secrets
from vnh.embedded import EmbeddedServers

log = logging.getLogger("vnh.cli")
DEFAULT_HTTP_PORT = 8000


def _settings(data_dir: Path | None) -> Settings:
    return Settings(data_dir=data_dir) if data_dir is not None else Settings()


@asynccontextmanager
async def prepared(data_dir: Path | None, *, mqtt: bool, migrate_schema: Literal["always", "auto"] = "auto"
                   ) -> AsyncIterator[tuple[Settings, dict[str, Any] | None]]:
    """Settings with every URL filled (embedded servers started or attached for the unset ones), secrets loaded,
    the schema migrated ("auto": when owner credentials are at hand — the embedded server or
    VNH_DATABASE_OWNER_URL — and otherwise checked to be current). Stops on exit whatever embedded server this
    process started."""
    settings = _settings(data_dir)
    wanted = {
        "database": settings.database_url is None,
        "redis": settings.redis_url is None,
        "mqtt": mqtt and settings.mqtt_url is None,
    }
    embedded: EmbeddedServers | None = None
    described: dict[str, Any] | None = None
    if any(wanted.values()):
        embedded = EmbeddedServers(settings.data_dir, **wanted)
        endpoints = await asyncio.to_thread(embedded.start)
        for kind, endpoint in endpoints.items():
            setattr(settings, f"{kind}_url", endpoint.url)
        described = {
            kind: {"url": redact_url(e.url) if kind == "database" else e.url, "started_here": e.started_here}
            for kind, e in endpoints.items()
        }
    try:
        ensure_secrets(settings)
        if migrate_schema == "always" or wanted["database"] or settings.database_owner_url:
            await migrate(settings.owner_url, settings.database.app_role, tls=settings.tls,
                          cipher=FieldCipher.from_settings(settings))
        else:
            # Only the app role's URL: it may not migrate (deploy/ keeps owner credentials to the migrate job).
            pending = await pending_heads(settings.app_url, tls=settings.tls)
            if pending:
                raise SystemExit(f"the database schema is behind ({', '.join(sorted(pending))} pending): run "
                                 "`vnh migrate` with VNH_DATABASE_OWNER_URL, or set it for serve")
        yield settings, described
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


def _free_port(host: str, preferred: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, preferred))
            return preferred
        except OSError:
            sock.bind((host, 0))
            return int(sock.getsockname()[1])


def _server_class() -> type[Any]:
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT after its own shutdown, which would kill the process before the embedded
        servers are stopped; here a signal only asks the server to exit and `serve` cleans up."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.handle_exit, sig, None)
            try:
                yield
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    return GracefulServer


async def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    _Server = _server_class()

    from vnh.app import create_app

    async with prepared(args.data_dir, mqtt=True) as (settings, embedded):
        runtime = Runtime.build(settings)
        runtime.embedded = embedded
        try:
            if args.demo:
                from vnh.demo import seed_demo

                summary = await seed_demo(runtime, progress=lambda msg: log.info("demo: %s", msg))
                log.info("demo banner %s: %d organisations, %d caregivers, %d elders, %d devices; logins %s "
                         "(password %s)", summary.region_code, summary.organisations, summary.caregivers,
                         summary.elders, summary.devices, ", ".join(summary.logins[:6]), summary.password)
            port = args.port if args.port is not None else _free_port(args.host, DEFAULT_HTTP_PORT)
            if args.port is None and port != DEFAULT_HTTP_PORT:
                log.info("port %d is taken; serving on %d", DEFAULT_HTTP_PORT, port)
            config = uvicorn.Config(create_app(runtime), host=args.host, port=port, log_config=None,
                                    lifespan="on", server_header=False,
                                    # X-Forwarded-For is read by kernel.proxies, from VNH_HTTP__TRUSTED_PROXIES only
                                    proxy_headers=False)
            server = _Server(config)
            log.info("vnh serving on http://%s:%d (database %s, redis %s, mqtt %s)", args.host, port,
                     redact_url(settings.app_url), settings.redis_url,
                     parse_mqtt_url(settings.mqtt_url).display if settings.mqtt_url else "-")
            print(f"vnh ready: http://{args.host}:{port}/readyz   console: http://{args.host}:{port}/console   "
                  f"API: http://{args.host}:{port}/docs", flush=True)
            stop_demo = asyncio.Event()
            demo_task = None
            if args.demo:
                from vnh.demo_activity import keep_alive

                demo_task = asyncio.create_task(keep_alive(runtime, summary.region_code, stop_demo))
            # Everything built so far lives as long as the process: keep it out of the collector's full passes,
            # whose pauses otherwise set matching's tail latency (bench/README.md).
            gc.collect()
            gc.freeze()
            await server.serve()
            stop_demo.set()
            if demo_task is not None:
                await demo_task
        finally:
            await runtime.close()


async def _migrate(args: argparse.Namespace) -> None:
    async with prepared(args.data_dir, mqtt=False, migrate_schema="always") as (settings, _):
        print(f"migrated {redact_url(settings.owner_url)}; app role {settings.database.app_role}")


async def _create_user(args: argparse.Namespace) -> None:
    password = args.password
    if password is None:
        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    async with prepared(args.data_dir, mqtt=False) as (settings, _):
        runtime = Runtime.build(settings)
        try:
            async with runtime.database.unit_of_work() as session:
                user = await create_user(session, runtime.clock, SystemActor("cli"), username=args.username,
                                         password=password, role=args.role, region_code=args.region_code)
            print(f"created {user.role} {user.username} ({user.id})")
        finally:
            await runtime.close()


async def _audit_verify(args: argparse.Namespace) -> int:
    async with prepared(args.data_dir, mqtt=False) as (settings, _):
        runtime = Runtime.build(settings)
        try:
            async with runtime.database.unit_of_work() as session:
                verdict = await verify_chain(session, runtime.chain, witnessed=runtime.witnesses.newest())
        finally:
            await runtime.close()
    print(f"intact={verdict.intact} checked={verdict.checked} unsealed={verdict.unsealed}"
          + (f" first_broken_id={verdict.first_broken_id} ({verdict.reason})" if not verdict.intact else ""))
    if verdict.truncated:
        witnessed, found = verdict.witnessed_head, verdict.found_head
        print(f"truncated=true witnessed_head={json.dumps(witnessed.as_dict() if witnessed else None)} "
              f"found_head={json.dumps(found.as_dict() if found else None)}")
    return 0 if verdict.intact else 1


async def _dispatch_batch(args: argparse.Namespace) -> None:
    from dispatch.batch import assign_batch

    async with prepared(args.data_dir, mqtt=False) as (settings, _):
        runtime = Runtime.build(settings)
        try:
            async with runtime.database.unit_of_work() as session:
                report = await assign_batch(session, runtime, region_code=args.region_code)
        finally:
            await runtime.close()
    print(f"batch: {report.orders} scheduled orders in {report.slots} slots; {report.offered} offered, "
          f"{report.without_candidate} without a candidate")


async def _billing(args: argparse.Namespace) -> int:
    from billing import commands

    async with prepared(args.data_dir, mqtt=False) as (settings, _):
        runtime = Runtime.build(settings)
        try:
            if args.billing_command == "settle":
                return await commands.settle(runtime, args.month)
            if args.billing_command == "verify-export":
                return await commands.verify_export_issued(runtime, args.file)
            return await commands.verify(runtime)
        finally:
            await runtime.close()


async def _devices(args: argparse.Namespace) -> int:
    from devices import cli as devices_cli

    ingest = args.command == "devices" and args.devices_command == "ingest"
    async with prepared(args.data_dir, mqtt=args.command == "simulate" or ingest) as (settings, _):
        runtime = Runtime.build(settings)
        try:
            return await devices_cli.run(runtime, args)
        finally:
            await runtime.close()


async def _crypto_rotate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from devices.registry import ENCRYPTED_COLUMNS as DEVICE_COLUMNS
    from dispatch.registry import ENCRYPTED_COLUMNS as CAREGIVER_COLUMNS
    from kernel.auth import ENCRYPTED_COLUMNS as USER_COLUMNS
    from kernel.key_rotation import EncryptedColumn, rotate
    from orders.elders import ENCRYPTED_COLUMNS as ELDER_COLUMNS

    async with prepared(args.data_dir, mqtt=False) as (settings, _):
        runtime = Runtime.build(settings)
        try:
            with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=Console(stderr=True)) as progress:
                tasks: dict[str, TaskID] = {}

                def on_start(column: EncryptedColumn, stale: int) -> None:
                    tasks[column.name] = progress.add_task(column.name, total=stale)

                def on_batch(column: EncryptedColumn, rows: int) -> None:
                    progress.update(tasks[column.name], advance=rows)

                report = await rotate(runtime.database, runtime.clock, runtime.cipher,
                                      (*ELDER_COLUMNS, *CAREGIVER_COLUMNS, *DEVICE_COLUMNS, *USER_COLUMNS),
                                      batch=args.batch, on_start=on_start, on_batch=on_batch)
        finally:
            await runtime.close()
    for name, rewritten in report.rewritten.items():
        print(f"{name}: rewritten={rewritten} remaining={report.remaining[name]}")
    print(f"key={report.key} complete={report.complete}"
          + ("" if report.complete else " (rows locked by live requests were skipped: run again)"))
    return 0 if report.complete else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vnh", description="vnh: virtual nursing home service dispatch")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=None,
                        help="where embedded servers keep their data (default ./.vnh or VNH_DATA_DIR)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", parents=[common], help="run the HTTP API and background workers")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help=f"default {DEFAULT_HTTP_PORT}, or a free one if taken")
    serve.add_argument("--demo", action="store_true", help="seed a demo banner on first start")

    sub.add_parser("migrate", parents=[common], help="create the app role, migrate the schema, grant privileges")

    user = sub.add_parser("create-user", parents=[common], help="create a login (e.g. the first admin)")
    user.add_argument("--username", required=True)
    user.add_argument("--role", required=True, choices=[r for r in ROLES if r not in ("caregiver", "elder")])
    user.add_argument("--region-code", default=None, help="dispatcher, auditor, finance: their region")
    user.add_argument("--password", default=None, help="default: prompt, or one line from stdin")

    dispatch = sub.add_parser("dispatch", help="dispatch tools")
    dispatch_sub = dispatch.add_subparsers(dest="dispatch_command", required=True)
    batch = dispatch_sub.add_parser("batch", parents=[common], help="offer open scheduled orders now (min-cost)")
    batch.add_argument("--region-code", default=None)

    billing = sub.add_parser("billing", help="billing tools")
    billing_sub = billing.add_subparsers(dest="billing_command", required=True)
    settle = billing_sub.add_parser("settle", parents=[common], help="draft every statement of a month")
    settle.add_argument("--month", required=True, help="YYYY-MM (Asia/Shanghai)")
    billing_sub.add_parser("verify", parents=[common], help="prove ledger balances and that nothing is overdrawn")
    verify_export = billing_sub.add_parser(
        "verify-export", parents=[common],
        help="check a settlement export (CSV or XLSX) against its SHA-256: exit 0 intact, 1 altered")
    verify_export.add_argument("file", type=Path)
    verify_export.add_argument("--audit", action="store_true",
                               help="also require the digest in the audit log of vnh's exports (needs the database)")

    from devices.cli import add_parsers as add_device_parsers

    add_device_parsers(sub, common)  # devices export-mosquitto-acl, devices ingest, simulate devices

    crypto = sub.add_parser("crypto", help="personal-data encryption tools")
    crypto_sub = crypto.add_subparsers(dest="crypto_command", required=True)
    rotate = crypto_sub.add_parser("rotate", parents=[common],
                                   help="re-encrypt personal data under VNH_CRYPTO__ACTIVE_KEY (resumable)")
    rotate.add_argument("--batch", type=int, default=500, help="rows per committed batch")

    audit = sub.add_parser("audit", help="audit log tools")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    audit_sub.add_parser("verify", parents=[common], help="check the hash chain of the audit log")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        if args.command == "serve":
            asyncio.run(_serve(args))
        elif args.command == "migrate":
            asyncio.run(_migrate(args))
        elif args.command == "create-user":
            asyncio.run(_create_user(args))
        elif args.command == "dispatch":
            asyncio.run(_dispatch_batch(args))
        elif args.command == "audit":
            return asyncio.run(_audit_verify(args))
        elif args.command == "crypto":
            return asyncio.run(_crypto_rotate(args))
        elif args.command == "billing" and args.billing_command == "verify-export" and not args.audit:
            from billing.commands import verify_export_file

            return verify_export_file(args.file)  # the file alone: no servers needed
        elif args.command == "billing":
            return asyncio.run(_billing(args))
        elif args.command in ("devices", "simulate"):
            return asyncio.run(_devices(args))
    except DomainError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
