"""Shared plumbing of the benchmarks: scratch database and Redis prefix, settings with throw-away secrets, a
synthetic caregiver force around real town centres, fast COPY insertion, percentiles and tables.

Not a package (`bench/` has no __init__): the scripts put this directory on sys.path themselves.
"""

from __future__ import annotations

import base64
import gc
import json
import math
import os
import random
import secrets
import statistics
import sys
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # the editable install already provides it; harmless otherwise
    sys.path.insert(0, str(ROOT / "src"))

import asyncpg  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from redis.asyncio import Redis  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from dispatch.registry import PHONE_CONTEXT  # noqa: E402
from kernel.db import asyncpg_url  # noqa: E402
from kernel.migrate import migrate  # noqa: E402
from kernel.personal_data import FieldCipher  # noqa: E402
from kernel.phones import InvalidPhone, mask_phone, normalise_mobile  # noqa: E402
from kernel.settings import AuditSettings, AuthSettings, CryptoSettings, Settings  # noqa: E402
from vnh.demo import Region, Town, load_region  # noqa: E402

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
MQTT_URL = os.environ.get("MQTT_URL", "mqtt://127.0.0.1:1883")
KM_PER_DEGREE = 111.32


# --- progress and figures ---------------------------------------------------------------------------------------

class Progress:
    """`progress("message")` prints the message with the seconds since the start of the run."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f}s] {message}", flush=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean of durations given in seconds, in milliseconds."""
    return {"n": len(values), "p50": percentile(values, 50) * 1e3, "p90": percentile(values, 90) * 1e3,
            "p99": percentile(values, 99) * 1e3, "max": max(values) * 1e3, "mean": statistics.fmean(values) * 1e3}


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table, numbers right-aligned."""
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.1f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    def width(s: str) -> int:  # CJK characters take two columns in a terminal
        return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)

    def pad(s: str, w: int, right: bool) -> str:
        fill = " " * (w - width(s))
        return fill + s if right else s + fill

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(width(h), *(width(r[i]) for r in text)) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], int | float) for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(pad(v, w, num) for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in text)])


def machine_note() -> str:
    import platform

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, {platform.machine()}, "
            f"Python {platform.python_version()}, load average {load}")


class GcPauses:
    """Time the garbage collector spends, from `gc.callbacks`: in total and per generation-2 collection."""

    def __init__(self) -> None:
        self.total = 0.0
        self.gen2: list[float] = []
        self.gen2_spans: list[tuple[float, float]] = []  # (start, end) in perf_counter seconds
        self._start = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
            return
        pause = time.perf_counter() - self._start
        self.total += pause
        if info["generation"] == 2:
            self.gen2.append(pause)
            self.gen2_spans.append((self._start, self._start + pause))

    def close(self) -> None:
        gc.callbacks.remove(self._callback)


# --- scratch database, settings, Redis prefix -------------------------------------------------------------------

def _dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(asyncpg_url(url)).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def database_url(name: str) -> str:
    """DATABASE_URL pointed at another database of the same server (the service's own URL form)."""
    return make_url(DATABASE_URL).set(database=name).render_as_string(hide_password=False)


def owner_dsn(name: str) -> str:
    """A plain asyncpg DSN of the scratch database for the owner account (COPY, admin queries)."""
    return _dsn(DATABASE_URL, name)


@asynccontextmanager
async def scratch_database(tag: str, progress: Progress) -> AsyncIterator[str]:
    """A freshly migrated database `vnh_bench_<tag>_<random>` on DATABASE_URL's server, dropped afterwards."""
    name = f"vnh_bench_{tag}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(_dsn(DATABASE_URL))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        progress(f"scratch database {name}: migrating")
        await migrate(database_url(name), "vnh_app")
        yield name
    finally:
        admin = await asyncpg.connect(_dsn(DATABASE_URL))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        progress(f"scratch database {name} dropped")


def _key() -> SecretStr:
    return SecretStr(base64.b64encode(secrets.token_bytes(32)).decode())


def bench_settings(database: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a run: the scratch database, a unique Redis prefix, fresh secrets (nothing written to disk)."""
    return Settings(
        database_url=database_url(database), redis_url=REDIS_URL, mqtt_url=MQTT_URL, data_dir=data_dir,
        environment="test", redis_prefix=f"vnhbench:{uuid.uuid4().hex[:12]}:",
        auth=AuthSettings(jwt_secret=_key()),
        crypto=CryptoSettings(keys={"k1": _key()}, active_key="k1", blind_index_key=_key()),
        audit=AuditSettings(key=_key()), **overrides,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings as environment variables, for a `vnh serve` subprocess."""
    assert settings.auth.jwt_secret and settings.crypto.blind_index_key and settings.audit.key
    assert settings.database_url and settings.redis_url and settings.mqtt_url
    return {
        "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url, "MQTT_URL": settings.mqtt_url,
        "VNH_DATA_DIR": str(settings.data_dir), "VNH_ENVIRONMENT": settings.environment,
        "VNH_REDIS_PREFIX": settings.redis_prefix,
        "VNH_AUTH__JWT_SECRET": settings.auth.jwt_secret.get_secret_value(),
        "VNH_CRYPTO__KEYS": json.dumps({k: v.get_secret_value() for k, v in settings.crypto.keys.items()}),
        "VNH_CRYPTO__ACTIVE_KEY": settings.crypto.active_key or "k1",
        "VNH_CRYPTO__BLIND_INDEX_KEY": settings.crypto.blind_index_key.get_secret_value(),
        "VNH_AUDIT__KEY": settings.audit.key.get_secret_value(),
    }


async def drop_redis_keys(prefix: str) -> int:
    """Delete the run's keys (with a client of its own, so a broken pool cannot keep them)."""
    assert prefix.startswith("vnhbench:") and len(prefix) > len("vnhbench:")
    redis = Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in redis.scan_iter(match=prefix + "*", count=1000)]
        for start in range(0, len(keys), 1000):
            await redis.delete(*keys[start:start + 1000])
        return len(keys)
    finally:
        await redis.aclose()


# --- a synthetic caregiver force around real towns --------------------------------------------------------------

def offset(rng: random.Random, lat: float, lon: float, max_km: float) -> tuple[float, float]:
    """A point uniformly distributed in the disc of `max_km` around (lat, lon) (flat earth: fine at city scale)."""
    distance = math.sqrt(rng.uniform(0, max_km**2))
    bearing = rng.uniform(0, 2 * math.pi)
    return (round(lat + distance * math.cos(bearing) / KM_PER_DEGREE, 6),
            round(lon + distance * math.sin(bearing) / (KM_PER_DEGREE * math.cos(math.radians(lat))), 6))


_SURNAMES = "王王王李李李张张张刘刘陈陈杨杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董程曹袁邓许傅沈曾彭吕苏卢蒋蔡贾"
_GIVEN = {"female": ("丽", "娟", "敏", "静", "艳", "霞", "红梅", "晓燕", "丽娟", "海燕", "春燕", "秀娟", "慧",
                     "雪梅", "美玲", "其其格", "乌云", "斯琴", "萨仁"),
          "male": ("伟", "强", "磊", "军", "勇", "涛", "斌", "鹏", "志刚", "海军", "建军", "晓东", "巴特尔", "朝鲁")}
_MOBILE_PREFIXES = ("139", "138", "137", "136", "135", "150", "151", "152", "157", "158", "159", "187", "188", "182",
                    "183", "130", "131", "132", "155", "156", "185", "186", "133", "153", "180", "189", "177", "199")
# certificate levels as the demo draws them (share in %); skills as the catalogue names them
CERTIFICATES = (("none", 18), ("junior", 36), ("intermediate", 28), ("senior", 14), ("medical", 4))
EVERYDAY_SKILLS = ("personal_care", "cleaning", "meal", "companionship", "visiting", "escort", "bathing")
CAREGIVER_COLUMNS = ("id", "organization_id", "name", "phone_enc", "phone_bidx", "phone_masked", "gender",
                     "languages", "skills", "certificate_level", "home_lat", "home_lon", "shifts", "active", "on_duty",
                     "duty_changed_at", "rating_sum", "rating_count")


@dataclass(frozen=True)
class Org:
    id: uuid.UUID
    name: str
    region_code: str
    towns: tuple[Town, ...]


@dataclass(frozen=True)
class SyntheticCaregiver:
    id: uuid.UUID
    organization_id: uuid.UUID
    home: tuple[float, float]
    position: tuple[float, float]  # where the on-duty caregiver is now
    row: tuple[Any, ...]  # in CAREGIVER_COLUMNS order


def region(code: str) -> Region:
    return load_region(code)


def plan_organisations(rng: random.Random, reg: Region, count: int, *, foreign: int = 0,
                       foreign_region: str = "150603") -> list[Org]:
    """`count` organisations of the region, each based in one to three towns; `foreign` more registered in a
    neighbouring region (no service-area contract: the matcher must leave their caregivers out)."""
    orgs = []
    for i in range(count + foreign):
        towns = tuple(rng.sample(reg.towns, k=min(len(reg.towns), rng.choice((1, 1, 2, 3)))))
        code = reg.code if i < count else foreign_region
        orgs.append(Org(uuid.uuid4(), f"{reg.name}{towns[0].name}第{i + 1}居家养老服务站", code, towns))
    return orgs


def _skills_for(rng: random.Random, level: str) -> list[str]:
    skills = set(rng.sample(EVERYDAY_SKILLS, rng.randint(2, 3)))
    if level == "medical":
        skills = {"nursing"} | set(rng.sample(("rehab", "escort", "personal_care"), rng.randint(1, 2)))
    elif level == "senior" and rng.random() < 0.6:
        skills = {"rehab"} | set(rng.sample(EVERYDAY_SKILLS, rng.randint(1, 2)))
    elif level in ("junior", "intermediate") and rng.random() < 0.2:
        skills.add("nursing")
    return sorted(skills)


def _shifts(rng: random.Random) -> str:
    if rng.random() < 0.7:
        days, start, end = (1, 2, 3, 4, 5), "08:00:00", "17:00:00"
    else:
        days, start, end = (1, 2, 3, 4, 5, 6, 7), "07:00:00", "21:00:00"
    return json.dumps([{"weekday": d, "start": start, "end": end} for d in days])


def synthetic_caregivers(rng: random.Random, orgs: Sequence[Org], count: int, cipher: FieldCipher, *,
                         minority_language: str | None = "mn", on_duty: bool = True,
                         home_km: float = 3.0, roam_km: float = 1.5) -> list[SyntheticCaregiver]:
    """`count` caregivers spread over the organisations (uneven sizes), living within `home_km` of one of their
    organisation's towns and, when on duty, somewhere within `roam_km` of home. Valid, unique mobile numbers,
    encrypted and blind-indexed with the run's keys, as the registry stores them."""
    weights = [rng.uniform(0.5, 1.5) for _ in orgs]
    phones: set[str] = set()
    now = datetime.now(UTC)
    out = []
    for _ in range(count):
        org = rng.choices(orgs, weights=weights)[0]
        town = org.towns[0] if len(org.towns) == 1 or rng.random() < 0.6 else rng.choice(org.towns[1:])
        home = offset(rng, town.lat, town.lon, home_km)
        position = offset(rng, home[0], home[1], roam_km)
        while True:
            try:
                phone = normalise_mobile(rng.choice(_MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}")
            except InvalidPhone:
                continue
            if phone not in phones:
                phones.add(phone)
                break
        protected = cipher.protect(phone, context=PHONE_CONTEXT, masked=mask_phone(phone))
        gender = "female" if rng.random() < 0.8 else "male"
        level = rng.choices([c for c, _ in CERTIFICATES], weights=[w for _, w in CERTIFICATES])[0]
        languages = ["zh", minority_language] if minority_language and rng.random() < 0.1 else ["zh"]
        rated = rng.random() < 0.7
        count_r = rng.randint(1, 40) if rated else 0
        rating_sum = round(count_r * rng.uniform(3.3, 5.0)) if rated else 0
        cid = uuid.uuid4()
        row = (cid, org.id, rng.choice(_SURNAMES) + rng.choice(_GIVEN[gender]), protected.ciphertext,
               protected.blind_index, protected.masked, gender, languages, _skills_for(rng, level), level,
               home[0], home[1], _shifts(rng), True, on_duty, now if on_duty else None, rating_sum, count_r)
        out.append(SyntheticCaregiver(cid, org.id, home, position, row))
    return out


async def copy_organisations_and_caregivers(dsn: str, orgs: Sequence[Org],
                                            caregivers: Sequence[SyntheticCaregiver]) -> None:
    """Bulk insert with COPY (the schema's constraints and foreign keys still apply)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "organizations", columns=("id", "name", "region_code"),
                records=[(o.id, o.name, o.region_code) for o in orgs])
            await conn.copy_records_to_table("caregivers", columns=CAREGIVER_COLUMNS,
                                             records=[c.row for c in caregivers])
        await conn.execute("ANALYZE organizations; ANALYZE caregivers")
    finally:
        await conn.close()
