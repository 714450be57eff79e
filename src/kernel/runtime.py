"""What a running instance holds: settings, database, Redis, clock, ciphers. Built once, shared by HTTP and jobs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from kernel.audit import ChainHasher
from kernel.audit_witness import Witnesses
from kernel.auth import TokenService
from kernel.clock import Clock, SystemClock
from kernel.db import Database, create_engine
from kernel.personal_data import FieldCipher
from kernel.settings import Settings
from kernel.tls import redis_options

ReadinessCheck = Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class Runtime:
    settings: Settings
    database: Database
    redis: Redis
    clock: Clock
    cipher: FieldCipher
    tokens: TokenService
    chain: ChainHasher
    witnesses: Witnesses  # where the sealer reports the audit chain's head, outside the database
    # name → coroutine answering {"ok": bool, "url": ...}; the MQTT gateway registers its own
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)
    # where the embedded servers run, when `vnh serve` started them (shown by /readyz)
    embedded: dict[str, Any] | None = None

    @classmethod
    def build(cls, settings: Settings, *, clock: Clock | None = None, database: Database | None = None) -> Runtime:
        clock = clock or SystemClock()
        if settings.auth.jwt_secret is None:
            raise RuntimeError("VNH_AUTH__JWT_SECRET is not configured")
        if settings.redis_url is None:
            raise RuntimeError("no Redis URL: start the embedded servers or set REDIS_URL")
        db = database or Database(
            create_engine(
                settings.app_url,
                role=settings.database.app_role,
                pool_size=settings.database.pool_size,
                max_overflow=settings.database.max_overflow,
                statement_timeout_ms=settings.database.statement_timeout_ms,
                tls=settings.tls,
            )
        )
        return cls(
            settings=settings,
            database=db,
            redis=Redis.from_url(settings.redis_url, decode_responses=False,
                                 **redis_options(settings.redis_url, settings.tls)),
            clock=clock,
            cipher=FieldCipher.from_settings(settings),
            tokens=TokenService(settings.auth.jwt_secret.get_secret_value(), settings.auth.token_ttl, clock),
            chain=ChainHasher.from_settings(settings),
            witnesses=Witnesses.from_settings(settings),
        )

    def redis_key(self, *parts: str) -> str:
        return self.settings.redis_prefix + ":".join(parts)

    async def close(self) -> None:
        await self.redis.aclose()
        await self.database.dispose()
