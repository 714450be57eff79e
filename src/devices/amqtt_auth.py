"""Device authentication and topic ACL for the embedded amqtt broker (a plugin: `vnh.embedded_broker.serve`).

amqtt takes over a client id's session before it asks the auth plugins (`Broker._initialize_client_session`: a
clean-session CONNECT deletes the existing session, a persistent one overwrites its will and credentials, and a
second connection takes over the first) — so anyone knowing a device id could knock the device off or rewrite its
last will with a wrong password. This plugin therefore refuses early: it wraps the CONNECT parsing
(`BrokerProtocolHandler.init_from_connect`) and answers CONNACK 5 "not authorized" and closes before amqtt looks
at sessions at all. Admitted sessions are never marked anonymous (amqtt drops anonymous sessions on disconnect and
queues nothing for them; see `vnh.embedded_broker.OpenAccessPlugin`).

Checks: the service account (`vnh-service` with the configured or derived password, any client id); a device
(username = client id = device id, password = its token, HMAC-compared against `devices.token_hash`, active only).
Topics: `devices.broker_access.allows`; a device publishing on another device's topic is refused and
dead-lettered (`topic_mismatch`). Revocation cuts a connected device off: a sweep every few seconds disconnects
devices that are no longer active.

Configuration (the plugin's config dict): either `database_url` + `blind_index_key` (+ `service_username`,
`service_password`), or `data_dir`: a vnh data directory, whose settings, `secrets.json` and `run/servers.json` are
read when the first client connects — the embedded default. A data directory vnh has not initialised (no
`secrets.json`: the bare embedded servers of a test, the first second of a first start) is served openly, since
no device can hold a token before vnh issued one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from amqtt.contexts import Action as AmqttAction
from amqtt.errors import MQTTError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session
from sqlalchemy import select

from devices.broker_access import Identity, allows, claimed_device
from devices.credentials import SERVICE_USERNAME, check_device_token, service_credentials_match
from devices.ingest import Inbound, dead_letter_row, store_dead_letters
from devices.models import Device
from devices.protocol import Rejection
from kernel.db import Database, create_engine
from kernel.personal_data import FieldCipher

log = logging.getLogger("vnh.devices.amqtt_auth")

PLUGIN_PATH = "devices.amqtt_auth.DeviceAuthPlugin"
_ACTIONS = {AmqttAction.PUBLISH: "publish", AmqttAction.SUBSCRIBE: "subscribe", AmqttAction.RECEIVE: "receive"}


@dataclass
class Backend:
    """What the checks need, once resolved: the database and the token hasher; None means open access."""

    database: Database
    cipher: FieldCipher
    service_username: str | None
    service_password: str | None


def _cipher_for(blind_index_key: bytes) -> FieldCipher:
    # only the blind index (the token HMAC) is used; the encryption key is a throwaway
    return FieldCipher(cipher="aes-gcm", keys={"unused": bytes(32)}, active_key="unused",
                       blind_index_key=blind_index_key)


def _from_data_dir(data_dir: Path) -> Backend | None:
    from kernel.settings import Settings, ensure_secrets

    if not (data_dir / "secrets.json").exists():
        return None
    settings = ensure_secrets(Settings(data_dir=data_dir))
    url = settings.database_url
    if url is None:
        try:
            url = json.loads((data_dir / "run" / "servers.json").read_text())["database"]["url"]
        except (OSError, KeyError, ValueError):
            return None
    assert settings.crypto.blind_index_key is not None
    engine = create_engine(str(url), role=settings.database.app_role, pool_size=2, max_overflow=2,
                           application_name="vnh-embedded-broker", tls=settings.tls)
    return Backend(Database(engine), FieldCipher.from_settings(settings), settings.mqtt.username,
                   settings.mqtt.password.get_secret_value() if settings.mqtt.password else None)


class DeviceAuthPlugin(BaseAuthPlugin, BaseTopicPlugin):  # type: ignore[misc]  # amqtt ships no type information
    @dataclass
    class Config:
        database_url: str | None = None
        blind_index_key: str | None = None  # base64, as VNH_CRYPTO__BLIND_INDEX_KEY
        service_username: str | None = None
        service_password: str | None = None
        app_role: str = "vnh_app"
        data_dir: str | None = None
        sweep_interval_s: float = 5.0

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._backend: Backend | None = None
        self._resolved = False
        self._lock = asyncio.Lock()
        self._sweeper: asyncio.Task[None] | None = None
        self._admitted: dict[tuple[str, str | None, str | None], tuple[float, Identity]] = {}
        _install_early_refusal()

    # --- configuration ---------------------------------------------------------------------------------------

    async def backend(self) -> Backend | None:
        async with self._lock:
            if self._resolved:
                return self._backend
            cfg = self.config
            if cfg.database_url and cfg.blind_index_key:
                engine = create_engine(cfg.database_url, role=cfg.app_role, pool_size=2, max_overflow=2,
                                       application_name="vnh-embedded-broker")
                self._backend = Backend(Database(engine), _cipher_for(base64.b64decode(cfg.blind_index_key)),
                                        cfg.service_username, cfg.service_password)
                self._resolved = True
            elif cfg.data_dir:
                self._backend = await asyncio.to_thread(_from_data_dir, Path(cfg.data_dir))
                self._resolved = self._backend is not None  # an uninitialised data dir is looked at again
            else:
                self._resolved = True  # nothing configured: open access, said loudly
                log.warning("device auth plugin without database_url/blind_index_key or data_dir: open access")
            return self._backend

    # --- authentication -----------------------------------------------------------------------------------------

    async def identify(self, session: Session) -> Identity | None:
        """Who this CONNECT is, or None to refuse it."""
        key = (str(session.client_id), session.username, session.password)
        cached = self._admitted.get(key)
        if cached is not None and time.monotonic() - cached[0] < 10.0:
            return cached[1]
        backend = await self.backend()
        if backend is None:
            return Identity.service()  # open access (uninitialised data directory)
        identity = await self._check(backend, session)
        if identity is not None:
            self._admitted[key] = (time.monotonic(), identity)
            if len(self._admitted) > 10_000:
                self._admitted.clear()
        return identity

    async def _check(self, backend: Backend, session: Session) -> Identity | None:
        username, password = session.username, session.password
        if username is None or password is None:
            return None
        if username == (backend.service_username or SERVICE_USERNAME):
            ok = service_credentials_match(username, password, backend.service_username, backend.service_password,
                                           backend.cipher)
            return Identity.service() if ok else None
        if session.client_id != username:  # the protocol binds the client id to the device id
            return None
        async with backend.database.unit_of_work() as db:
            check = await check_device_token(db, backend.cipher, username, password)
        return Identity.device(username) if check.verdict == "ok" else None

    async def authenticate(self, *, session: Session) -> bool | None:
        return await self.identify(session) is not None

    # --- topics -----------------------------------------------------------------------------------------------

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: AmqttAction | None = None) -> bool | None:
        if session is None or topic is None or action is None:
            return False
        identity = await self.identify(session)
        if identity is None:
            return False
        if await self.backend() is None:
            return True
        allowed = allows(identity, _ACTIONS[action], topic)  # type: ignore[arg-type]
        if not allowed and action == AmqttAction.PUBLISH and identity.kind == "device":
            await self._dead_letter(identity, topic)
        return allowed

    async def _dead_letter(self, identity: Identity, topic: str) -> None:
        backend = await self.backend()
        if backend is None:
            return
        claimed = claimed_device(topic)
        message = Inbound(device_id=claimed or "", kind="events", payload=b"", channel="mqtt",
                          received_at=datetime.now(UTC), topic=topic[:300])
        rejection = Rejection("topic_mismatch", f"device {identity.device_id} published on {topic}"[:500])
        try:
            async with backend.database.unit_of_work() as db:
                await store_dead_letters(db, [dead_letter_row(message, rejection, None)])
        except Exception:
            log.exception("could not dead-letter a refused publish of %s", identity.device_id)

    # --- revocation ---------------------------------------------------------------------------------------------

    async def on_broker_post_start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="vnh-device-sweep")

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval_s)
            try:
                await self.sweep()
            except Exception:
                log.exception("revocation sweep failed")

    async def sweep(self) -> int:
        """Disconnect connected devices that are no longer active (revoked); answers how many."""
        backend = await self.backend()
        if backend is None:
            return 0
        broker = self.context._broker_instance
        connected = {cid: pair for cid, pair in list(broker._sessions.items())
                     if pair[0].transitions.is_connected() and pair[0].username == cid}
        if not connected:
            return 0
        async with backend.database.unit_of_work() as db:
            active = set((await db.scalars(select(Device.device_id).where(
                Device.device_id.in_(list(connected)), Device.status == "active"))).all())
        cut = 0
        for client_id, (_session, handler) in connected.items():
            if client_id in active:
                continue
            log.info("device %s is no longer active: disconnecting it", client_id)
            self._admitted = {k: v for k, v in self._admitted.items() if k[0] != client_id}
            with contextlib.suppress(Exception):
                await handler.handle_connection_closed()
            cut += 1
        return cut

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._backend is not None:
            await self._backend.database.dispose()


def _plugin_of(plugins_manager: Any) -> DeviceAuthPlugin | None:
    for plugin in getattr(plugins_manager, "_auth_plugins", []):
        if isinstance(plugin, DeviceAuthPlugin):
            return plugin
    return None


_installed = False


def _install_early_refusal() -> None:
    """Refuse before amqtt looks at the client id's session (see the module docstring)."""
    global _installed
    if _installed:
        return
    original = BrokerProtocolHandler.init_from_connect.__func__

    async def init_from_connect(cls: Any, reader: Any, writer: Any, plugins_manager: Any, loop: Any = None
                                ) -> tuple[Any, Session]:
        handler, session = await original(cls, reader, writer, plugins_manager, loop)
        plugin = _plugin_of(plugins_manager)
        if plugin is not None and await plugin.identify(session) is None:
            log.info("refused client %r (user %r) before any session was touched", session.client_id,
                     session.username)
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise MQTTError(f"client {session.client_id!r} not authorized")
        return handler, session

    BrokerProtocolHandler.init_from_connect = classmethod(init_from_connect)
    _installed = True


def embedded_plugins(mqtt_data_dir: Path) -> dict[str, dict[str, Any]]:
    """The plugin configuration of the embedded broker of a vnh data directory (`DATA/mqtt` → `DATA`)."""
    return {PLUGIN_PATH: {"data_dir": str(mqtt_data_dir.resolve().parent)}}
