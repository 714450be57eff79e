"""Liveness, readiness (each dependency named with where it is, no secrets) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kernel.db import redact_url
from kernel.errors import Unauthenticated
from kernel.http import RuntimeDep
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


@router.get("/readyz")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    checks = await readiness(runtime)
    ready = all(c["ok"] for c in checks.values())
    body: dict[str, Any] = {"status": "ready" if ready else "not_ready", "checks": checks}
    embedded = getattr(runtime, "embedded", None)
    if embedded:
        body["embedded"] = embedded
    return JSONResponse(status_code=200 if ready else 503, content=body)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, runtime: RuntimeDep) -> Response:
    token = runtime.settings.metrics_token
    if token is not None:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            raise Unauthenticated("metrics token required", code="metrics_token_required")
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
