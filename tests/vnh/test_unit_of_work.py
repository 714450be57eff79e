from __future__ import annotations

import httpx
from fastapi import FastAPI

from dispatch.models import Organization
from kernel.http import SessionDep
from kernel.runtime import Runtime
from vnh.app import create_app


async def test_a_failed_commit_is_an_error_response_not_a_success(runtime: Runtime) -> None:
    """The session commits after the endpoint returned: a failure there must still reach the caller."""
    app: FastAPI = create_app(runtime, background=False)

    @app.post("/test/commit-fails", status_code=201)
    async def commit_fails(session: SessionDep) -> dict[str, str]:
        session.add(Organization(name="x", region_code="not-a-code"))  # violates a CHECK only at flush
        return {"status": "created"}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://vnh.test") as client:
        response = await client.post("/test/commit-fails")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
