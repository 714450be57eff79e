"""A readiness probe for the MQTT broker: a real MQTT 3.1.1 CONNECT/CONNACK exchange, then DISCONNECT."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
import struct
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class MqttAddress:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    @property
    def display(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> MqttAddress:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"MQTT_URL must be mqtt://host:port or mqtts://host:port, got scheme {parts.scheme!r}")
    tls = parts.scheme in ("mqtts", "ssl")
    return MqttAddress(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
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
    context = ssl.create_default_context() if address.tls else None
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
