"""Alembic environment: async engine, the owner URL, every domain's models on one metadata."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from kernel.db import asyncpg_url, engine_url_and_args
from vnh.models import metadata

config = context.config
target_metadata = metadata


def _url() -> str:
    url = config.attributes.get("url")
    if url is None:
        from kernel.settings import Settings

        url = Settings().owner_url
    return asyncpg_url(str(url))


def _engine() -> AsyncEngine:
    """The owner's engine, over TLS when the URL asks for it (kernel/tls.py; the CA from the URL or VNH_TLS__*)."""
    from kernel.settings import Settings

    url, connect_args = engine_url_and_args(_url(), Settings().tls)
    return create_async_engine(url, connect_args=connect_args)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: object) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)  # type: ignore[arg-type]
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = _engine()
    async with engine.connect() as conn:
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
elif config.attributes.get("connection") is not None:
    _run(config.attributes["connection"])  # `vnh migrate` hands its own (sync-wrapped) connection in
else:
    asyncio.run(run_migrations_online())
