"""`vnh migrate`: the app role, the schema (Alembic, as the owner) and the app role's privileges, idempotently."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from kernel.audit import AUDIT_TABLES
from kernel.db import engine_url_and_args
from kernel.settings import TlsSettings

log = logging.getLogger("vnh.migrate")


def alembic_dir() -> Path:
    """`alembic/` at the repository root (editable installs and the container image both have it)."""
    for candidate in (Path(__file__).resolve().parents[2] / "alembic", Path.cwd() / "alembic"):
        if (candidate / "env.py").exists():
            return candidate
    raise RuntimeError("cannot find the alembic/ directory; run from the repository root")


def alembic_config() -> Config:
    directory = alembic_dir()
    cfg = Config(str(directory.parent / "alembic.ini")) if (directory.parent / "alembic.ini").exists() else Config()
    cfg.set_main_option("script_location", str(directory))
    return cfg


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def ensure_role(conn: Connection, role: str) -> None:
    # Several test workers may migrate at once: creating a role that appeared meanwhile is not an error.
    statement = f"""DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {_literal(role)}) THEN
                CREATE ROLE {_quote(role)} NOLOGIN;
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END $$"""  # noqa: S608  (identifiers quoted by _quote/_literal)
    conn.execute(text(statement))
    superuser = conn.scalar(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
    if not superuser:  # the owner must be able to SET ROLE to it (a superuser always can)
        conn.execute(text(f"GRANT {_quote(role)} TO current_user"))


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def apply_grants(conn: Connection, role: str) -> None:
    """Least privilege for the service: data tables read/write, audit tables insert/select only, no DDL."""
    r = _quote(role)
    conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {r}"))
    conn.execute(text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {r}"))
    conn.execute(text(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {r}"))
    for table in AUDIT_TABLES:
        conn.execute(text(f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM {r}"))
    conn.execute(text(f"REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM {r}"))


def _upgrade(conn: Connection, role: str, revision: str, cipher: Any) -> None:
    ensure_role(conn, role)
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    if cipher is not None:  # revisions that seal existing data (0010) need the field keys, which live in settings
        cfg.attributes["field_cipher"] = cipher
    command.upgrade(cfg, revision)
    apply_grants(conn, role)


async def migrate(owner_url: str, role: str, revision: str = "heads", *, tls: TlsSettings | None = None,
                  cipher: Any = None) -> None:
    """`cipher`: the service's FieldCipher, for revisions that encrypt data already stored."""
    engine_url, connect_args = engine_url_and_args(owner_url, tls)
    engine = create_async_engine(engine_url, poolclass=NullPool, connect_args=connect_args)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_upgrade, role, revision, cipher)
            await conn.commit()
    finally:
        await engine.dispose()
    log.info("database migrated to %s; app role %s granted", revision, role)


async def pending_heads(url: str, *, tls: TlsSettings | None = None) -> set[str]:
    """Heads of the migration scripts the database has not reached (empty: the schema is current)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    engine_url, connect_args = engine_url_and_args(url, tls)
    engine = create_async_engine(engine_url, poolclass=NullPool, connect_args=connect_args)
    try:
        async with engine.connect() as conn:
            current = await conn.run_sync(lambda c: set(MigrationContext.configure(c).get_current_heads()))
    finally:
        await engine.dispose()
    return set(script.get_heads()) - current
