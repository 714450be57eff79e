"""`X-Forwarded-For` is believed only from the configured proxies (kernel/proxies.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from kernel.clock import ManualClock
from kernel.proxies import resolve_client, trusted_proxies
from kernel.runtime import Runtime


async def _client(runtime: Runtime, peer: str, *forwarded: str) -> str | None:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers, "client": (peer, 40000),
             "query_string": b""}
    return await resolve_client(scope, trusted_proxies(runtime))


@pytest.fixture
def trusting(runtime: Runtime) -> Iterator[list[str]]:
    saved = runtime.settings.http.trusted_proxies
    runtime.settings.http.trusted_proxies = ["10.0.0.0/24", "192.0.2.7", "localhost"]
    try:
        yield runtime.settings.http.trusted_proxies
    finally:
        runtime.settings.http.trusted_proxies = saved


async def test_the_header_of_an_untrusted_peer_is_ignored(runtime: Runtime) -> None:
    assert runtime.settings.http.trusted_proxies == []  # the default trusts nobody
    assert await _client(runtime, "203.0.113.9", "1.2.3.4") == "203.0.113.9"
    assert await _client(runtime, "127.0.0.1", "1.2.3.4") == "127.0.0.1"


async def test_a_trusted_proxy_names_the_client_and_a_client_cannot_prepend_itself(
        runtime: Runtime, trusting: list[str]) -> None:
    assert await _client(runtime, "10.0.0.5", "198.51.100.1") == "198.51.100.1"
    # the client wrote "1.2.3.4" itself; the proxy appended the address it saw
    assert await _client(runtime, "10.0.0.5", "1.2.3.4, 198.51.100.1") == "198.51.100.1"
    # two trusted hops (an address, a network), several headers
    assert await _client(runtime, "192.0.2.7", "1.2.3.4", "198.51.100.1, 10.0.0.9") \
        == "198.51.100.1"
    # a host name is resolved: localhost is trusted
    assert await _client(runtime, "127.0.0.1", "198.51.100.2") == "198.51.100.2"
    # garbage stops the walk at the last address read
    assert await _client(runtime, "10.0.0.5", "<script>, 10.0.0.8") == "10.0.0.8"
    assert await _client(runtime, "10.0.0.5") == "10.0.0.5"


async def test_a_trusted_proxy_gives_each_client_its_own_login_limit(client: httpx.AsyncClient, runtime: Runtime,
                                                                    trusting: list[str]) -> None:
    assert isinstance(runtime.clock, ManualClock)
    runtime.clock.set(runtime.clock.now().replace(second=0))
    # the in-process client connects from 127.0.0.1, which `localhost` trusts here
    codes = [(await client.post("/v1/auth/token", json={"username": f"u{i}", "password": "x-12345678"},
                                headers={"X-Forwarded-For": f"198.51.100.{i}"})).status_code for i in range(25)]
    assert codes == [401] * 25


async def test_vnh_serve_ignores_a_forged_header(served: tuple[Runtime, str]) -> None:
    """End to end through uvicorn: with no trusted proxy, a caller rotating `X-Forwarded-For` still gets 20
    attempts a minute (before, uvicorn believed the header from 127.0.0.1)."""
    _rt, base = served
    if time.time() % 60 > 50:  # the limit's window is the wall-clock minute: start the burst inside one
        await asyncio.sleep(60 - time.time() % 60)
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        # sent together: the limit counts each before its (slow) password check, so all land in one minute
        answers = await asyncio.gather(*(
            client.post("/v1/auth/token", json={"username": f"u{i}", "password": "x-12345678"},
                        headers={"X-Forwarded-For": f"198.51.100.{i}"}) for i in range(25)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [401] * 20 + [429] * 5, codes


async def test_a_failed_lookup_keeps_the_proxys_last_addresses() -> None:
    """A DNS hiccup must not forget the proxy: every client would then look like the proxy itself (one shared login
    limit and lock-out) until the next refresh."""
    import ipaddress

    from kernel.proxies import TrustedProxies

    proxies = TrustedProxies.parse(["proxy.invalid"])  # .invalid never resolves (RFC 2606)
    proxy = ipaddress.ip_address("192.0.2.10")
    proxies._resolved["proxy.invalid"] = [proxy]  # what the last good lookup found
    assert await proxies.trusts(proxy)  # this call refreshes (never refreshed before) and the lookup fails
    assert proxies._resolved_at != float("-inf")
    assert await proxies.trusts(proxy)


async def test_an_ipv4_mapped_peer_matches_an_ipv4_proxy_network(runtime: Runtime, trusting: list[str]) -> None:
    """A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d."""
    assert await _client(runtime, "::ffff:10.0.0.5", "203.0.113.9") == "203.0.113.9"
