"""The broker's address (MQTT_URL) and a readiness probe: a real MQTT 3.1.1 CONNECT/CONNACK exchange, then DISCONNECT,
over TLS for `mqtts://` (the CA and client certificate of kernel/tls.py, the host name verified)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
import struct
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from kernel.settings import TlsSettings
from kernel.tls import client_context

# a mqtts:// URL's own certificates (Python's ssl names), over VNH_TLS__*
_TLS_QUERY = ("cafile", "certfile", "keyfile")


@dataclass(frozen=True)
class MqttAddress:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def ssl_context(self) -> ssl.SSLContext | None:
        """For `mqtts://`: the broker verified against the CA (the system's trust store when none is configured) and
        its certificate's name against `host`; the client certificate when one is configured. None for `mqtt://`."""
        if not self.tls:
            return None
        return client_context(ca_file=self.ca_file, cert_file=self.cert_file, key_file=self.key_file)

    @property
    def display(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_mqtt_url(url: str, tls_settings: TlsSettings | None = None) -> MqttAddress:
    """`mqtt://user:password@host:1883` or `mqtts://user:password@host:8883[?cafile=…&certfile=…&keyfile=…]`; a TLS
    file the URL does not name comes from `tls_settings` (VNH_TLS__CA_FILE, …)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"MQTT_URL must be mqtt://host:port or mqtts://host:port, got scheme {parts.scheme!r}")
    tls = parts.scheme in ("mqtts", "ssl")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - set(_TLS_QUERY)
    if unknown:
        raise ValueError(f"MQTT_URL takes only {', '.join(_TLS_QUERY)} in its query, got {', '.join(sorted(unknown))}")
    if query and not tls:
        raise ValueError("MQTT_URL names TLS files but is not mqtts://")

    def tls_file(name: str, configured: object) -> str | None:
        return query.get(name) or (str(configured) if tls and configured else None)

    return MqttAddress(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ca_file=tls_file("cafile", tls_settings.ca_file if tls_settings else None),
        cert_file=tls_file("certfile", tls_settings.cert_file if tls_settings else None),
        key_file=tls_file("keyfile", tls_settings.key_file if tls_settings else None),
    )


def _utf8(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("!H", len(raw)) + raw


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


async def probe_broker(address: MqttAddress, *, username: str | None = None, password: str | None = None,
                       timeout: float = 3.0) -> None:  # noqa: ASYNC109  (per-step socket timeouts)
    """Raise if the broker does not accept an MQTT connection within `timeout` seconds."""
    user = username or address.username
    secret = password or address.password
    flags = 0x02  # clean session
    payload = _utf8(f"vnh-probe-{secrets.token_hex(4)}")
    if user:
        flags |= 0x80
        payload += _utf8(user)
        if secret:
            flags |= 0x40
            payload += _utf8(secret)
    variable = _utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", 10)
    body = variable + payload
    packet = bytes([0x10]) + _remaining_length(len(body)) + body
    context = address.ssl_context()
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(address.host, address.port, ssl=context), timeout)
    try:
        writer.write(packet)
        await writer.drain()
        connack = await asyncio.wait_for(reader.readexactly(4), timeout)
        if connack[0] != 0x20:
            raise ConnectionError(f"unexpected MQTT answer {connack[0]:#x}")
        if connack[3] != 0:
            raise ConnectionError(f"broker refused the connection (CONNACK code {connack[3]})")
        writer.write(b"\xe0\x00")  # DISCONNECT
        await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
