from __future__ import annotations

import httpx

from kernel.runtime import Runtime
from tests.conftest import TEST_PASSWORD, login_headers


async def test_healthz_answers_while_the_process_runs(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_names_each_dependency_without_secrets_to_an_admin(client: httpx.AsyncClient,
                                                                          admin_headers: dict[str, str]) -> None:
    response = await client.get("/readyz", headers=admin_headers)
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ready"
    assert {"database", "redis"} <= set(body["checks"])
    for check in body["checks"].values():
        assert check["ok"] is True
        assert "password" not in check["url"]


async def test_readyz_tells_anyone_else_the_status_only(client: httpx.AsyncClient, runtime: Runtime) -> None:
    from pydantic import SecretStr

    dispatcher = await login_headers(runtime, "dispatcher", region_code="150625")
    for headers in ({}, dispatcher, {"Authorization": "Bearer not-a-token"}):
        response = await client.get("/readyz", headers=headers)
        assert response.status_code == 200
        assert response.json() == {"status": "ready"}, headers
    runtime.settings.metrics_token = SecretStr("scrape-me")
    try:
        assert (await client.get("/readyz", headers={"Authorization": "Bearer wrong"})).json() == {"status": "ready"}
        scraper = await client.get("/readyz", headers={"Authorization": "Bearer scrape-me"})
        assert {"database", "redis"} <= set(scraper.json()["checks"])
    finally:
        runtime.settings.metrics_token = None


async def test_login_issues_a_token_that_authorises(client: httpx.AsyncClient, runtime: Runtime) -> None:
    headers = await login_headers(runtime, "admin")
    me = await client.get("/v1/auth/me", headers=headers)
    assert me.status_code == 200
    username = me.json()["username"]
    token = await client.post("/v1/auth/token", json={"username": username, "password": TEST_PASSWORD})
    assert token.status_code == 200, token.text
    assert token.json()["role"] == "admin"
    again = await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token.json()['access_token']}"})
    assert again.json()["username"] == username


async def test_wrong_password_and_unknown_user_get_the_same_answer(client: httpx.AsyncClient,
                                                                    runtime: Runtime) -> None:
    headers = await login_headers(runtime, "admin")
    username = (await client.get("/v1/auth/me", headers=headers)).json()["username"]
    wrong = await client.post("/v1/auth/token", json={"username": username, "password": "nope-12345678"})
    unknown = await client.post("/v1/auth/token", json={"username": "nobody-here", "password": "nope-12345678"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["error"]["code"] == "invalid_credentials"


async def test_five_failures_lock_the_account_for_thirty_minutes(client: httpx.AsyncClient,
                                                                  runtime: Runtime) -> None:
    from kernel.clock import ManualClock

    headers = await login_headers(runtime, "admin")
    username = (await client.get("/v1/auth/me", headers=headers)).json()["username"]
    for _ in range(5):
        await client.post("/v1/auth/token", json={"username": username, "password": "wrong-pass-123"})
    locked = await client.post("/v1/auth/token", json={"username": username, "password": TEST_PASSWORD})
    assert locked.status_code == 401
    assert isinstance(runtime.clock, ManualClock)
    runtime.clock.advance(31 * 60)
    unlocked = await client.post("/v1/auth/token", json={"username": username, "password": TEST_PASSWORD})
    assert unlocked.status_code == 200


async def test_missing_and_garbage_tokens_are_401_with_the_error_body(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/auth/me")
    garbage = await client.get("/v1/auth/me", headers={"Authorization": "Bearer abc.def.ghi"})
    assert missing.status_code == garbage.status_code == 401
    assert missing.json()["error"]["code"] == "unauthenticated"
    assert garbage.json()["error"]["code"] == "invalid_token"


async def test_expired_token_is_refused(client: httpx.AsyncClient, runtime: Runtime) -> None:
    from kernel.clock import ManualClock

    headers = await login_headers(runtime, "admin")
    assert isinstance(runtime.clock, ManualClock)
    runtime.clock.advance(runtime.tokens.ttl.total_seconds() + 1)
    response = await client.get("/v1/auth/me", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_expired"


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert len((await client.get("/healthz")).headers["x-request-id"]) == 32


async def test_metrics_are_exposed_and_guarded_by_the_token_when_one_is_set(client: httpx.AsyncClient,
                                                                          runtime: Runtime) -> None:
    from pydantic import SecretStr

    await client.get("/healthz")
    open_metrics = await client.get("/metrics")
    assert open_metrics.status_code == 200
    assert 'vnh_http_requests_total{method="GET",route="/healthz",status="200"}' in open_metrics.text
    runtime.settings.metrics_token = SecretStr("scrape-me")
    try:
        assert (await client.get("/metrics")).status_code == 401
        with_token = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert with_token.status_code == 200
    finally:
        runtime.settings.metrics_token = None


async def test_text_postgresql_cannot_store_is_a_422_not_a_500(client: httpx.AsyncClient,
                                                               admin_headers: dict[str, str]) -> None:
    for raw in (b'{"name": "a\\u0000b", "region_code": "150625"}',
                b'{"name": "\\ud83d lone", "region_code": "150625"}',
                b'{"name": "lone \\ude00", "region_code": "150625"}'):
        response = await client.post("/v1/organizations", content=raw,
                                     headers={**admin_headers, "content-type": "application/json"})
        assert response.status_code == 422, raw
        assert response.json()["error"]["code"] == "invalid_text"
    emoji = await client.post("/v1/organizations", content=b'{"name": "\\ud83d\\ude00 \\u5e78\\u798f", '
                                                          b'"region_code": "150625"}',
                              headers={**admin_headers, "content-type": "application/json"})
    assert emoji.status_code == 201, emoji.text
    assert (await client.get("/v1/visits/exceptions?flag=%00", headers=admin_headers)).status_code == 422
    huge = await client.post("/v1/organizations", content=b"x" * 1_000_001,
                             headers={**admin_headers, "content-type": "application/json"})
    assert huge.status_code == 413


async def test_one_address_gets_twenty_login_attempts_a_minute(client: httpx.AsyncClient, runtime: Runtime) -> None:
    from kernel.clock import ManualClock

    assert isinstance(runtime.clock, ManualClock)
    runtime.clock.set(runtime.clock.now().replace(second=0))
    codes = [(await client.post("/v1/auth/token", json={"username": f"u{i}", "password": "x-12345678"})).status_code
             for i in range(21)]
    assert codes[:20] == [401] * 20 and codes[20] == 429
    runtime.clock.advance(61)
    assert (await client.post("/v1/auth/token", json={"username": "u", "password": "x-12345678"})).status_code == 401


async def test_readyz_answers_an_admin_not_ready_while_redis_is_away(client: httpx.AsyncClient, runtime: Runtime,
                                                                      admin_headers: dict[str, str]) -> None:
    """The admin check needs Redis (sessions); with Redis away it must not turn the readiness answer into a 500."""
    from redis.asyncio import Redis

    working = runtime.redis
    runtime.redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)  # nothing listens there
    try:
        response = await client.get("/readyz", headers=admin_headers)
    finally:
        await runtime.redis.aclose()
        runtime.redis = working
    assert response.status_code == 503, response.text
    assert response.json() == {"status": "not_ready"}


async def test_a_limited_token_still_reaches_its_endpoint_under_a_path_prefix(runtime: Runtime) -> None:
    """Behind a proxy that mounts the service under a prefix (`root_path`), a password-change-only token is judged
    by the route's path, not the prefixed one: it reaches the password endpoint and nothing else."""
    import uuid

    from kernel.audit import SystemActor
    from kernel.auth import create_user
    from vnh.app import create_app

    async with runtime.database.unit_of_work() as s:
        user = await create_user(s, runtime.clock, SystemActor("test"), username=f"d-{uuid.uuid4().hex[:8]}",
                                 password=TEST_PASSWORD, role="dispatcher", region_code="150625")
        principal = user.principal()
    headers = {"Authorization": f"Bearer {runtime.tokens.issue(principal, limited_to='password')}"}
    transport = httpx.ASGITransport(app=create_app(runtime, background=False), root_path="/vnh")
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as prefixed:
        elsewhere = await prefixed.get("/vnh/v1/orders", headers=headers)
        assert elsewhere.status_code == 403 and elsewhere.json()["error"]["code"] == "password_change_required"
        change = await prefixed.post("/vnh/v1/auth/password", headers=headers,
                                     json={"current": "not-the-password-1A", "new": "Another-Pass-2027"})
        assert change.status_code != 403, change.text
        assert change.json()["error"]["code"] != "password_change_required"
