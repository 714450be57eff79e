"""Live state of caregivers in Redis: who is on duty, where they are and how old that position is.

Positions live in a GEO set (`cg:pos`), their times in a hash (`cg:pos_at`, epoch seconds), duty in a set
(`cg:on_duty`); PostgreSQL keeps the duty flag too (the source of truth after a Redis loss: `restore_duty`).
A position older than `dispatch.position_max_age` is not trusted for matching.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch.models import Caregiver
from kernel.runtime import Runtime


@dataclass(frozen=True)
class Position:
    caregiver_id: uuid.UUID
    lat: float
    lon: float
    at: datetime
    distance_m: float | None = None


def _keys(rt: Runtime) -> tuple[str, str, str]:
    return rt.redis_key("cg", "pos"), rt.redis_key("cg", "pos_at"), rt.redis_key("cg", "on_duty")


async def set_duty(rt: Runtime, caregiver_id: uuid.UUID, on_duty: bool) -> None:
    pos, pos_at, duty = _keys(rt)
    member = str(caregiver_id)
    if on_duty:
        await rt.redis.sadd(duty, member)
    else:
        async with rt.redis.pipeline(transaction=True) as pipe:
            pipe.srem(duty, member)
            pipe.zrem(pos, member)
            pipe.hdel(pos_at, member)
            await pipe.execute()


async def set_position(rt: Runtime, caregiver_id: uuid.UUID, lat: float, lon: float, at: datetime) -> None:
    pos, pos_at, _ = _keys(rt)
    member = str(caregiver_id)
    async with rt.redis.pipeline(transaction=True) as pipe:
        pipe.geoadd(pos, (lon, lat, member))
        pipe.hset(pos_at, member, str(at.timestamp()))
        await pipe.execute()


async def on_duty_ids(rt: Runtime) -> set[uuid.UUID]:
    _, _, duty = _keys(rt)
    members: set[Any] = await rt.redis.smembers(duty)
    return {uuid.UUID(m.decode()) for m in members}


async def nearby(rt: Runtime, lat: float, lon: float, radius_m: float, limit: int) -> list[tuple[uuid.UUID, float]]:
    """(caregiver id, metres) of on-duty caregivers with a fresh position within `radius_m`, nearest first.

    The GEO set holds on-duty caregivers only (going off duty removes them) and `drop_stale_positions` keeps old
    positions out, so the COUNT-limited search is not crowded out by caregivers that would be filtered anyway."""
    pos, pos_at, duty = _keys(rt)
    # redis-py types GEOSEARCH's reply as a union; with WITHDIST it is [[member, dist], ...]
    found: list[Any] = await rt.redis.geosearch(pos, longitude=lon, latitude=lat, radius=radius_m, unit="m",
                                                sort="ASC", count=limit, withdist=True)
    if not found:
        return []
    members = [m for m, _d in found]
    async with rt.redis.pipeline(transaction=False) as pipe:
        pipe.hmget(pos_at, members)
        pipe.smismember(duty, members)
        stamps, duties = await pipe.execute()
    oldest = rt.clock.now().timestamp() - rt.settings.dispatch.position_max_age.total_seconds()
    return [(uuid.UUID(member.decode()), float(dist))
            for (member, dist), stamp, is_on in zip(found, stamps, duties, strict=True)
            if is_on and stamp is not None and float(stamp) >= oldest]


async def drop_stale_positions(rt: Runtime) -> int:
    """Remove positions older than the trusted age from the GEO set (their caregivers stay on duty; the next
    report brings them back)."""
    pos, pos_at, _ = _keys(rt)
    stamps: dict[Any, Any] = await rt.redis.hgetall(pos_at)
    oldest = rt.clock.now().timestamp() - rt.settings.dispatch.position_max_age.total_seconds()
    stale = [member for member, stamp in stamps.items() if float(stamp) < oldest]
    if stale:
        async with rt.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(pos, *stale)
            pipe.hdel(pos_at, *stale)
            await pipe.execute()
    return len(stale)


async def positions(rt: Runtime, ids: list[uuid.UUID]) -> dict[uuid.UUID, Position]:
    if not ids:
        return {}
    pos, pos_at, _ = _keys(rt)
    members = [str(i) for i in ids]
    async with rt.redis.pipeline(transaction=False) as pipe:
        pipe.geopos(pos, *members)
        pipe.hmget(pos_at, members)
        coords, stamps = await pipe.execute()
    out = {}
    for cid, coord, stamp in zip(ids, coords, stamps, strict=True):
        if coord is not None and stamp is not None:
            out[cid] = Position(cid, coord[1], coord[0], datetime.fromtimestamp(float(stamp), UTC))
    return out


async def restore_duty(session: AsyncSession, rt: Runtime) -> int:
    """Re-fill the duty set from PostgreSQL (after a Redis restart); positions come back with the next update."""
    ids = (await session.scalars(select(Caregiver.id).where(Caregiver.on_duty, Caregiver.active))).all()
    _, _, duty = _keys(rt)
    if ids:
        await rt.redis.sadd(duty, *[str(i) for i in ids])
    return len(ids)
