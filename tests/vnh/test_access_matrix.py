"""Walk every route of the app for every role and check it against the one matrix (kernel/authz.py)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from kernel.authz import MATRIX, PUBLIC_PATHS, ROLES, Principal
from kernel.runtime import Runtime
from vnh.app import create_app


def _permission_of(dependant: Dependant) -> list[str]:
    found = []
    for dep in dependant.dependencies:
        permission = getattr(dep.call, "permission", None)
        if permission is not None:
            found.append(permission)
        found += _permission_of(dep)
    return found


def _flat_routes(app: FastAPI) -> list[Any]:
    """FastAPI ≥ 0.16x keeps included routers nested; `iter_route_contexts` flattens them."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:
        return list(app.routes)
    return [context.original_route for context in iter_route_contexts(app.routes)]


def _routes(runtime: Runtime) -> list[tuple[APIRoute, str | None]]:
    app = create_app(runtime, background=False)
    out = []
    for route in _flat_routes(app):
        if isinstance(route, APIRoute):
            permissions = _permission_of(route.dependant)
            assert len(permissions) <= 1, f"{route.path} applies several permissions: {permissions}"
            out.append((route, permissions[0] if permissions else None))
    return out


def test_every_route_is_public_or_names_a_permission_of_the_matrix(runtime: Runtime) -> None:
    routes = _routes(runtime)
    assert len(routes) > 15
    for route, permission in routes:
        if permission is None:
            assert route.path in PUBLIC_PATHS, f"{sorted(route.methods)} {route.path} has no authorize(...) entry"
        else:
            assert permission in MATRIX, f"{route.path} uses {permission!r}, which the matrix does not list"
            assert route.path not in PUBLIC_PATHS


# Server-sent event streams: tested end to end in tests/console and tests/dispatch, not here.
ENDLESS = {"/v1/console/stream", "/v1/caregivers/me/stream"}


def _principal(role: str, user_id: str) -> Principal:
    return Principal(user_id=user_id, username=f"walker-{role}", role=role,  # type: ignore[arg-type]
                     organization_id=str(uuid.uuid4()), region_code="150625",
                     elder_ids=frozenset({str(uuid.uuid4())}), caregiver_id=str(uuid.uuid4()))


async def _walker_logins(runtime: Runtime) -> dict[str, str]:
    """A real login per role: every request checks that the token's user exists and is active."""
    from kernel.audit import SystemActor
    from kernel.auth import create_user
    from tests.conftest import TEST_PASSWORD
    from tests.factories import create_organization

    org = await create_organization(runtime)
    scope: dict[str, dict[str, Any]] = {
        "org_admin": {"organization_id": org.id}, "caregiver": {"caregiver_id": uuid.uuid4()},
        "elder": {"elder_ids": [uuid.uuid4()]}, "dispatcher": {"region_code": "150625"},
        "auditor": {"region_code": "150625"}, "finance": {"region_code": "150625"},
    }
    ids = {}
    async with runtime.database.unit_of_work() as s:
        for role in ROLES:
            user = await create_user(s, runtime.clock, SystemActor("test"), username=f"walker-{role}",
                                     password=TEST_PASSWORD, role=role, **scope.get(role, {}))
            ids[role] = str(user.id)
    return ids


async def test_each_role_gets_exactly_what_the_matrix_grants(client: httpx.AsyncClient, runtime: Runtime) -> None:
    checked = 0
    users = await _walker_logins(runtime)
    for route, permission in _routes(runtime):
        if permission is None:
            continue
        path = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), route.path)
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            for role in ROLES:
                if route.path in ENDLESS and role in MATRIX[permission]:
                    continue  # an open stream never ends under the in-process transport; its 403s are checked
                headers = {"Authorization": f"Bearer {runtime.tokens.issue(_principal(role, users[role]))}"}
                body: dict[str, Any] | None = {} if method in ("POST", "PUT", "PATCH") else None
                response = await client.request(method, path, headers=headers, json=body)
                allowed = role in MATRIX[permission]
                assert response.status_code < 500, (method, path, role, response.text)
                if allowed:
                    assert response.status_code != 403, (method, path, role, response.text)
                else:
                    assert response.status_code == 403, (method, path, role, response.status_code)
                    assert response.json()["error"]["code"] == "forbidden"
                checked += 1
        anonymous = await client.request(sorted(route.methods)[0], path)
        assert anonymous.status_code == 401, (path, anonymous.status_code)
    assert checked > 50
    print(f"access matrix: {checked} route x method x role requests checked, every route also refused anonymously")


def test_the_published_matrix_is_the_enforced_one() -> None:
    from pathlib import Path

    from kernel.authz import matrix_markdown

    published = Path(__file__).parents[2] / "docs" / "access-matrix.md"
    assert published.read_text(encoding="utf-8") == matrix_markdown(), \
        "regenerate it: .venv/bin/python -m kernel.authz > docs/access-matrix.md"
