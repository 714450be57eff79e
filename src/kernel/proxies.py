"""The caller's network address, believing `X-Forwarded-For` only from the configured reverse proxies.

`VNH_HTTP__TRUSTED_PROXIES` lists addresses, networks (CIDR) or host names (a compose service such as `caddy`,
resolved at most once a minute). The peer of the connection is the client unless it is one of them; then the
header is read from the right, skipping trusted hops, and the first address not trusted is the client (a client can
put anything at the left of the header, never at its right). Every per-address use (the login limit, lock-out per
source, confirmation sources, audit) reads the ASGI scope's `client`, which `TrustedProxyMiddleware` (outermost)
has already set to that address; uvicorn's own proxy-header rewriting is off.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from kernel.runtime import Runtime

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVE_EVERY_S = 60.0
RESOLVE_TIMEOUT_S = 1.0


def _address(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # a dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d: match them against IPv4 networks
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass
class TrustedProxies:
    networks: list[IPNetwork]
    hostnames: list[str]
    _resolved: dict[str, list[IPAddress]] = field(default_factory=dict)
    _resolved_at: float = float("-inf")

    @classmethod
    def parse(cls, entries: list[str]) -> TrustedProxies:
        networks: list[IPNetwork] = []
        hostnames: list[str] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                hostnames.append(entry.strip())
        return cls(networks, hostnames)

    async def _refresh(self) -> None:
        if not self.hostnames or time.monotonic() - self._resolved_at < RESOLVE_EVERY_S:
            return
        self._resolved_at = time.monotonic()
        loop = asyncio.get_running_loop()
        for name in self.hostnames:
            # a failed lookup keeps the name's last addresses: forgetting the proxy would make every client look
            # like the proxy (one shared login limit and lock-out) until the next refresh
            with contextlib.suppress(OSError, TimeoutError):
                infos = await asyncio.wait_for(loop.getaddrinfo(name, None, type=socket.SOCK_STREAM),
                                               RESOLVE_TIMEOUT_S)
                found = [a for a in (_address(str(info[4][0])) for info in infos) if a is not None]
                if found:
                    self._resolved[name] = found

    async def trusts(self, address: IPAddress) -> bool:
        if any(address in network for network in self.networks):
            return True
        await self._refresh()
        return any(address in addresses for addresses in self._resolved.values())


_cache: dict[tuple[str, ...], TrustedProxies] = {}


def trusted_proxies(runtime: Runtime) -> TrustedProxies:
    entries = tuple(runtime.settings.http.trusted_proxies)
    if entries not in _cache:
        _cache[entries] = TrustedProxies.parse(list(entries))
    return _cache[entries]


async def resolve_client(scope: Scope, proxies: TrustedProxies) -> str | None:
    """The address of whoever sent the request (see the module's docstring), from an ASGI scope."""
    peer = scope.get("client")
    if not peer or not peer[0]:
        return None
    hop = _address(str(peer[0]))
    if hop is None or not await proxies.trusts(hop):
        return str(peer[0])
    forwarded = b",".join(v for k, v in scope.get("headers") or [] if k == b"x-forwarded-for").decode("latin-1")
    hops = [h for h in (part.strip() for part in forwarded.split(",")) if h]
    client = str(hop)
    for text in reversed(hops):
        address = _address(text)
        if address is None:  # garbage where an address should be: stop at the last hop we could read
            break
        client = str(address)
        if not await proxies.trusts(address):
            break
    return client


class TrustedProxyMiddleware:
    """Replaces the ASGI scope's `client` with the resolved client address before anything reads it, so the login
    limit, the lock-out, confirmation sources and the audit rows all see the same address. Outermost."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope.get("client"):
            proxies = trusted_proxies(self.runtime)
            if proxies.networks or proxies.hostnames:
                address = await resolve_client(scope, proxies)
                if address is not None and address != scope["client"][0]:
                    scope = {**scope, "client": (address, 0)}
        await self.app(scope, receive, send)


def client_address(request: Request) -> str:
    """The caller's address, as `TrustedProxyMiddleware` resolved it."""
    return request.client.host if request.client else "unknown"
