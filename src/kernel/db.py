"""Database access: the declarative base, the engine (running as the non-superuser app role) and the unit of work.

One `AsyncSession` per request, MQTT message batch or job, committed in one place: `Database.unit_of_work()`.
Services only flush.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import MetaData, event, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TIMESTAMP

from kernel.settings import TlsSettings
from kernel.tls import postgres_connect_args

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012  (SQLAlchemy reads this class attribute)
        datetime: TIMESTAMP(timezone=True),
        dict[str, Any]: JSONB,
        list[Any]: JSONB,
    }


def new_id() -> uuid.UUID:
    return uuid.uuid4()


def asyncpg_url(url: str) -> str:
    """Accept `postgresql://` or `postgres://` URLs too (what people paste) and use the asyncpg driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def redact_url(url: str) -> str:
    """A URL fit for logs and /readyz: no password."""
    return make_url(url).render_as_string(hide_password=True)


def engine_url_and_args(url: str, tls: TlsSettings | None = None) -> tuple[URL, dict[str, Any]]:
    """The asyncpg URL without its TLS query, and the connect arguments carrying it (`ssl`: kernel/tls.py)."""
    return postgres_connect_args(asyncpg_url(url), tls)


def create_engine(url: str, *, role: str | None, pool_size: int = 10, max_overflow: int = 10,
                  statement_timeout_ms: int = 30_000, application_name: str = "vnh",
                  tls: TlsSettings | None = None) -> AsyncEngine:
    """An engine whose every connection works as `role` (SET ROLE), in UTC, with a statement timeout, over TLS when
    the URL asks for it (`sslmode=verify-full`, with the CA from the URL or `tls`).

    The service connects with whatever `DATABASE_URL` names (possibly a superuser on a developer's machine) but acts
    as `vnh_app`, which may only INSERT and SELECT audit rows: privileges, not code, keep the audit log append-only.
    """
    engine_url, connect_args = engine_url_and_args(url, tls)
    engine = create_async_engine(
        engine_url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        connect_args={
            **connect_args,
            "server_settings": {
                "timezone": "UTC",
                "application_name": application_name,
                "statement_timeout": str(statement_timeout_ms),
            },
        },
    )
    if role:
        quoted = '"' + role.replace('"', '""') + '"'

        @event.listens_for(engine.sync_engine, "connect")
        def _act_as_app_role(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.run_async(lambda conn: conn.execute(f"SET ROLE {quoted}"))

    return engine


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncSession]:
        """The one place a transaction commits: on leaving the block without an exception."""
        async with self.sessionmaker() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("select 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
