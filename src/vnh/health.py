"""Liveness, readiness and Prometheus metrics.

`/readyz` answers anyone with the status alone (orchestrators and load balancers need no more); the checks, with
where each dependency runs (no secrets), go to an admin token or the metrics token only: addresses of the database,
Redis and the broker are a map for an attacker.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kernel.db import redact_url
from kernel.errors import Unauthenticated
from kernel.http import RuntimeDep, current_claims
from kernel.mqtt_probe import parse_mqtt_url, probe_broker
from kernel.runtime import Runtime

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _check(name: str, url: str, probe: Any) -> tuple[str, dict[str, Any]]:
    try:
        await asyncio.wait_for(probe(), 3.0)
        return name, {"ok": True, "url": url}
    except Exception as exc:
        return name, {"ok": False, "url": url, "error": f"{type(exc).__name__}: {exc}"[:300]}


async def readiness(runtime: Runtime) -> dict[str, dict[str, Any]]:
    settings = runtime.settings
    checks = [
        _check("database", redact_url(settings.app_url), runtime.database.ping),
        _check("redis", redact_url(settings.redis_url or ""), runtime.redis.ping),
    ]
    if settings.mqtt_url:
        address = parse_mqtt_url(settings.mqtt_url, settings.tls)
        password = settings.mqtt.password.get_secret_value() if settings.mqtt.password else None

        async def mqtt() -> None:
            await probe_broker(address, username=settings.mqtt.username, password=password)

        checks.append(_check("mqtt", address.display, mqtt))
    results = dict(await asyncio.gather(*checks))
    for name, extra in runtime.readiness.items():
        results[name] = await extra()
    return results


def _holds_metrics_token(request: Request, runtime: Runtime) -> bool:
    token = runtime.settings.metrics_token
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    return token is not None and hmac.compare_digest(given.encode(), token.get_secret_value().encode())


async def _may_see_details(request: Request, runtime: Runtime) -> bool:
    """The metrics token, or a valid admin token (or console cookie) whose user still holds it."""
    if _holds_metrics_token(request, runtime):
        return True
    try:
        claims = await current_claims(request, runtime)
    except Exception:  # a refused token, or Redis away: the readiness answer must not fail with it
        return False
    return claims.principal.role == "admin"


@router.get("/readyz")
async def readyz(request: Request, runtime: RuntimeDep) -> JSONResponse:
    checks = await readiness(runtime)
    ready = all(c["ok"] for c in checks.values())
    body: dict[str, Any] = {"status": "ready" if ready else "not_ready"}
    if await _may_see_details(request, runtime):
        body["checks"] = checks
        embedded = getattr(runtime, "embedded", None)
        if embedded:
            body["embedded"] = embedded
    return JSONResponse(status_code=200 if ready else 503, content=body)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, runtime: RuntimeDep) -> Response:
    if runtime.settings.metrics_token is not None and not _holds_metrics_token(request, runtime):
        raise Unauthenticated("metrics token required", code="metrics_token_required")
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
