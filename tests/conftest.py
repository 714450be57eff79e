"""The real-database test harness.

Servers: `DATABASE_URL`, `REDIS_URL`, `MQTT_URL` when set (CI points them at the machine's PostgreSQL, Redis and
Mosquitto and sets CI=true, which makes a missing one an error, never a silent fallback); otherwise the embedded
servers are started for the session in a temporary directory, so a fresh machine with only Python runs the suite.

Databases: one template database per session, migrated once with `vnh migrate`'s code; a working database cloned
from it where each test runs inside an outer transaction that is rolled back (`runtime`, `session`, `client`);
tests that need real commits from several connections get a fresh clone of their own (`committed_runtime`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from kernel.audit import SystemActor
from kernel.auth import create_user
from kernel.authz import Access, Principal, Role, grant
from kernel.clock import ManualClock
from kernel.db import Database, asyncpg_url, create_engine
from kernel.migrate import migrate
from kernel.runtime import Runtime
from kernel.settings import AuditSettings, AuthSettings, CryptoSettings, MqttSettings, Settings
from vnh.app import create_app

pytest_plugins = ["tests.world"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TEST_PASSWORD = "test-Password-2026"


def _key() -> SecretStr:
    return SecretStr(base64.b64encode(secrets.token_bytes(32)).decode())


@pytest.fixture(scope="session")
def server_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    urls = {"database": os.environ.get("DATABASE_URL"), "redis": os.environ.get("REDIS_URL"),
            "mqtt": os.environ.get("MQTT_URL")}
    missing = [k for k, v in urls.items() if not v]
    if missing and IN_CI:
        pytest.exit(f"CI=true but {', '.join(k.upper() + '_URL' for k in missing)} unset: refusing to fall back to "
                    "embedded servers", returncode=3)
    embedded = None
    if missing:
        from vnh.embedded import EmbeddedServers

        embedded = EmbeddedServers(tmp_path_factory.mktemp("embedded"), **{k: k in missing for k in urls})
        for kind, endpoint in embedded.start().items():
            urls[kind] = endpoint.url
    yield {k: v for k, v in urls.items() if v}
    if embedded is not None:
        embedded.stop()


def _admin_dsn(database_url: str, dbname: str | None = None) -> str:
    url = make_url(asyncpg_url(database_url)).set(drivername="postgresql")
    if dbname is not None:
        url = url.set(database=dbname)
    return url.render_as_string(hide_password=False)


async def _admin(database_url: str, sql: str) -> None:
    conn = await asyncpg.connect(_admin_dsn(database_url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _db_url(database_url: str, name: str) -> str:
    return make_url(asyncpg_url(database_url)).set(database=name).render_as_string(hide_password=False)


async def _drop_orphans(base: str) -> None:
    """Databases left by test runs that died (their pid is gone) would pile up on a developer's server."""
    conn = await asyncpg.connect(_admin_dsn(base))
    try:
        names = [r[0] for r in await conn.fetch(r"SELECT datname FROM pg_database WHERE datname ~ '^vnh_(tpl|t)_\d+_'")]
    finally:
        await conn.close()
    for name in names:
        pid = int(name.split("_")[2])
        if pid != os.getpid() and not psutil.pid_exists(pid):
            await _admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
async def template_database(server_urls: dict[str, str]) -> AsyncIterator[str]:
    """A database migrated once per session; tests clone it (CREATE DATABASE … TEMPLATE is fast)."""
    base = server_urls["database"]
    await _drop_orphans(base)
    name = f"vnh_tpl_{os.getpid()}_{secrets.token_hex(3)}"
    await _admin(base, f'CREATE DATABASE "{name}"')
    await migrate(_db_url(base, name), "vnh_app")
    yield name
    await _admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _clone(base: str, template: str) -> str:
    name = f"vnh_t_{os.getpid()}_{secrets.token_hex(4)}"
    await _admin(base, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return name


def make_settings(server_urls: dict[str, str], database: str, data_dir: Path) -> Settings:
    tag = uuid.uuid4().hex[:10]
    return Settings(
        database_url=_db_url(server_urls["database"], database),
        redis_url=server_urls["redis"],
        mqtt_url=server_urls.get("mqtt"),
        # a served instance's ingest gets a client id and share group of its own (decisions §5): two test runs on
        # one broker must neither take over each other's session nor split each other's messages
        mqtt=MqttSettings(client_id=f"vnh-t{tag}", share_group=f"t{tag}",
                          # the suite's own embedded amqtt broker (no MQTT_URL) has no shared subscriptions
                          shared_subscription=bool(os.environ.get("MQTT_URL"))),
        data_dir=data_dir,
        environment="test",
        redis_prefix=f"vnhtest:{uuid.uuid4().hex[:12]}:",
        # tests move the manual clock hours ahead between one dispatcher's requests: no idle timeout here, and
        # admins log in with their password alone (tests/kernel/test_auth_*.py check both with the defaults)
        auth=AuthSettings(jwt_secret=_key(), idle_timeout=timedelta(days=365), mfa_roles=[]),
        crypto=CryptoSettings(keys={"k1": _key()}, active_key="k1", blind_index_key=_key()),
        audit=AuditSettings(key=_key()),
    )


@pytest.fixture(scope="session")
async def working_database(server_urls: dict[str, str], template_database: str) -> AsyncIterator[str]:
    name = await _clone(server_urls["database"], template_database)
    yield name
    await _admin(server_urls["database"], f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def base_settings(server_urls: dict[str, str], working_database: str,
                  tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(server_urls, working_database, tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
async def app_engine(base_settings: Settings) -> AsyncIterator[Any]:
    engine = create_engine(base_settings.app_url, role="vnh_app", pool_size=2)
    yield engine
    await engine.dispose()


class RolledBackDatabase(Database):
    """Every unit of work inside the test's outer transaction: commits become savepoint releases."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.engine = connection.engine
        self.connection = connection
        self.sessionmaker = async_sessionmaker(bind=connection, expire_on_commit=False,
                                               join_transaction_mode="create_savepoint")

    async def ping(self) -> None:
        await self.connection.exec_driver_sql("select 1")

    async def dispose(self) -> None:
        return None


async def _flush_redis(runtime: Runtime) -> None:
    keys = [k async for k in runtime.redis.scan_iter(match=runtime.settings.redis_prefix + "*", count=500)]
    if keys:
        await runtime.redis.delete(*keys)


@pytest.fixture(autouse=True)
def _fresh_module_caches() -> Iterator[None]:
    """Module-level caches live for the process: a service changed in one test's rolled-back transaction must not
    be served to the next test from memory."""
    from dispatch.candidates import clear_cache

    clear_cache()
    yield
    clear_cache()


@pytest.fixture
async def runtime(app_engine: Any, base_settings: Settings, tmp_path: Path) -> AsyncIterator[Runtime]:
    """A runtime whose database work is rolled back after the test; a manual clock."""
    async with app_engine.connect() as conn:
        outer = await conn.begin()
        # the audit witness is per test too: a head sealed in a rolled-back test must not outlive it
        # a deep copy: a test that changes a nested setting (rt.settings.push.webhook_url = …) changes its own
        audit = base_settings.audit.model_copy(deep=True, update={"witness_file": tmp_path / "audit-witness.jsonl"})
        settings = base_settings.model_copy(deep=True, update={"redis_prefix": f"vnhtest:{uuid.uuid4().hex[:12]}:",
                                                               "audit": audit})
        rt = Runtime.build(settings, clock=ManualClock(), database=RolledBackDatabase(conn))
        try:
            yield rt
        finally:
            await _flush_redis(rt)
            await rt.close()
            await outer.rollback()


@pytest.fixture
async def session(runtime: Runtime) -> AsyncIterator[AsyncSession]:
    async with runtime.database.unit_of_work() as s:
        yield s


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime, background=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://vnh.test") as c:
        yield c


@pytest.fixture
async def committed_runtime(server_urls: dict[str, str], template_database: str,
                            tmp_path: Path) -> AsyncIterator[Runtime]:
    """A runtime on a fresh clone of the template whose transactions really commit (concurrency, workers)."""
    name = await _clone(server_urls["database"], template_database)
    rt = Runtime.build(make_settings(server_urls, name, tmp_path), clock=ManualClock())
    try:
        yield rt
    finally:
        await _flush_redis(rt)
        await rt.close()
        await _admin(server_urls["database"], f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process (a worker, `vnh serve`) the same settings and secrets."""
    assert settings.auth.jwt_secret and settings.crypto.blind_index_key and settings.audit.key
    env = {k: v for k, v in os.environ.items() if not k.startswith("VNH_")}
    env.update({
        "DATABASE_URL": settings.app_url, "REDIS_URL": settings.redis_url or "", "MQTT_URL": settings.mqtt_url or "",
        "VNH_REDIS_PREFIX": settings.redis_prefix,
        "VNH_MQTT__CLIENT_ID": settings.mqtt.client_id, "VNH_MQTT__SHARE_GROUP": settings.mqtt.share_group,
        "VNH_MQTT__SHARED_SUBSCRIPTION": str(settings.mqtt.shared_subscription).lower(),
        "VNH_AUTH__JWT_SECRET": settings.auth.jwt_secret.get_secret_value(),
        "VNH_AUTH__IDLE_TIMEOUT": f"PT{int(settings.auth.idle_timeout.total_seconds())}S",
        "VNH_AUTH__MFA_ROLES": json.dumps(settings.auth.mfa_roles),
        "VNH_AUTH__STREAM_RECHECK": f"PT{settings.auth.stream_recheck.total_seconds():g}S",
        "VNH_CRYPTO__KEYS": json.dumps({k: v.get_secret_value() for k, v in settings.crypto.keys.items()}),
        "VNH_CRYPTO__ACTIVE_KEY": settings.crypto.active_key or "k1",
        "VNH_CRYPTO__BLIND_INDEX_KEY": settings.crypto.blind_index_key.get_secret_value(),
        "VNH_AUDIT__KEY": settings.audit.key.get_secret_value(),
        "VNH_DATA_DIR": str(settings.data_dir),
        "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).parents[1] / "src"),
                                                  os.environ.get("PYTHONPATH", "")) if p),
    })
    if not env["MQTT_URL"]:
        del env["MQTT_URL"]
    if settings.push.webhook_url:
        env["VNH_PUSH__WEBHOOK_URL"] = settings.push.webhook_url
        if settings.push.webhook_secret:
            env["VNH_PUSH__WEBHOOK_SECRET"] = settings.push.webhook_secret.get_secret_value()
    return env


def admin_access() -> Access:
    return grant(Principal(user_id=str(uuid.uuid4()), username="test-admin", role="admin"), "users.create")


async def login_headers(rt: Runtime, role: Role, **scope: Any) -> dict[str, str]:
    """Create a user of `role` with the given scope (organization_id, region_code, elder_ids, caregiver_id) and
    answer the Authorization header of a token for it."""
    async with rt.database.unit_of_work() as s:
        user = await create_user(s, rt.clock, SystemActor("test"), username=f"{role}-{uuid.uuid4().hex[:8]}",
                                 password=TEST_PASSWORD, role=role, **scope)
        principal = user.principal()
    return {"Authorization": f"Bearer {rt.tokens.issue(principal)}"}


@pytest.fixture
async def admin_headers(runtime: Runtime) -> dict[str, str]:
    return await login_headers(runtime, "admin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def served(committed_runtime: Runtime, tmp_path: Path) -> AsyncIterator[tuple[Runtime, str]]:
    """`vnh serve` on the committed test database, with the test runtime's clock set to now (the server's)."""
    assert isinstance(committed_runtime.clock, ManualClock)
    committed_runtime.clock.set(datetime.now(UTC))
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vnh.cli", "serve", "--port", str(port), env=settings_env(committed_runtime.settings),
        stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            for _ in range(120):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.5)
        yield committed_runtime, base
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 60)
        log.close()
        if committed_runtime.settings.mqtt_url:  # its ingest's persistent session would keep queueing messages
            from devices.gateway import MqttGateway, end_session

            login = MqttGateway(committed_runtime)
            with contextlib.suppress(OSError):
                await end_session(login.address, login.client_id, login.username, login.password)
