"""Who is in the ingest's share group, and who has gone quiet.

Mosquitto keeps handing a shared-subscription message to a member whose persistent session is offline (decisions
§5): a dead instance's share waits in the broker until that client id returns. The broker does not say so, so every
connected gateway writes a heartbeat — its client id and the wall-clock time — into one Redis hash per share group,
and reads the hash back: a member not seen for `missing_after_s` is reported in `/readyz`
(`mqtt_ingest.members_missing`) and in the metrics `vnh_mqtt_ingest_member_missing{client_id}` (1: its share
is waiting) and `vnh_mqtt_ingest_member_age_seconds{client_id}`. A member stays listed until it is retired
(`forget`, after its session was ended with `gateway.end_session`): a graceful stop also leaves its share queued.

Wall-clock time, not the service's injected clock: this is about processes being alive, not about domain time.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from prometheus_client import Gauge

from kernel.runtime import Runtime

MEMBER_AGE = Gauge("vnh_mqtt_ingest_member_age_seconds",
                   "Seconds since each ingest member of the share group last reported itself connected",
                   ["client_id"])
MEMBER_MISSING = Gauge("vnh_mqtt_ingest_member_missing",
                       "1 when an ingest member has not been seen recently: its share of the messages waits in the "
                       "broker", ["client_id"])

HEARTBEAT_S = 5.0
MISSING_AFTER_S = 15.0


@dataclass(frozen=True)
class Member:
    client_id: str
    age_s: float
    missing: bool


def members_key(rt: Runtime, share_group: str) -> str:
    return rt.redis_key("mqtt", "ingest-members", share_group)


async def beat(rt: Runtime, share_group: str, client_id: str) -> None:
    await rt.redis.hset(members_key(rt, share_group), client_id, f"{time.time():.3f}")


async def forget(rt: Runtime, share_group: str, client_id: str) -> None:
    """Retire a member (after its session was ended): it is no longer expected."""
    await rt.redis.hdel(members_key(rt, share_group), client_id)
    for gauge in (MEMBER_AGE, MEMBER_MISSING):
        with contextlib.suppress(KeyError):
            gauge.remove(client_id)


async def members(rt: Runtime, share_group: str, *, missing_after_s: float = MISSING_AFTER_S) -> list[Member]:
    """Every member of the group with the seconds since it was last seen, and whether that is too long; the
    gauges are set from the same answer."""
    raw = await rt.redis.hgetall(members_key(rt, share_group))
    now = time.time()
    out = []
    for key, value in raw.items():
        client_id = key.decode() if isinstance(key, bytes) else str(key)
        age = max(0.0, now - float(value.decode() if isinstance(value, bytes) else value))
        out.append(Member(client_id, age, age > missing_after_s))
    out.sort(key=lambda m: m.client_id)
    for member in out:
        MEMBER_AGE.labels(member.client_id).set(round(member.age_s, 3))
        MEMBER_MISSING.labels(member.client_id).set(1 if member.missing else 0)
    return out
