"""EMQX's HTTP authentication and authorization hooks (deploy/emqx/README.md): for large fleets on an EMQX cluster.

EMQX calls `POST /v1/broker/emqx/authenticate` on every CONNECT and `POST /v1/broker/emqx/authorize` on every
publish and subscribe it has not cached, with `Authorization: Bearer <VNH_DEVICES__BROKER_HOOK_SECRET>`. Both
answer 200 with `{"result": "allow" | "deny"}` (EMQX 5's contract); a publish on another device's topic is denied
and dead-lettered. Without a configured secret the hooks refuse to answer (403), so EMQX falls back to denying.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Literal

from fastapi import APIRouter, Header
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from devices.broker_access import Identity, allows, claimed_device
from devices.credentials import SERVICE_USERNAME, check_device_token, service_credentials_match
from devices.ingest import Inbound, dead_letter_row, store_dead_letters
from devices.models import Device
from devices.protocol import Rejection
from kernel.errors import PermissionDenied
from kernel.http import RuntimeDep, SessionDep
from kernel.runtime import Runtime

router = APIRouter(tags=["broker hooks"])


class AuthenticateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    username: str | None = Field(default=None, max_length=200)
    password: str | None = Field(default=None, max_length=500)
    clientid: str | None = Field(default=None, max_length=200)


class AuthorizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    username: str | None = Field(default=None, max_length=200)
    clientid: str | None = Field(default=None, max_length=200)
    topic: str = Field(max_length=500)
    action: Literal["publish", "subscribe"]


class HookAnswer(BaseModel):
    result: Literal["allow", "deny"]
    is_superuser: bool = False


def _check_secret(rt: Runtime, authorization: str | None) -> None:
    secret = rt.settings.devices.broker_hook_secret
    if secret is None:
        raise PermissionDenied("the broker hook is not configured (VNH_DEVICES__BROKER_HOOK_SECRET)",
                               code="broker_hook_disabled")
    expected = f"Bearer {secret.get_secret_value()}"
    if not authorization or not hmac.compare_digest(authorization.encode(), expected.encode()):
        raise PermissionDenied("wrong broker hook secret", code="broker_hook_refused")


def _service_username(rt: Runtime) -> str:
    return rt.settings.mqtt.username or SERVICE_USERNAME


@router.post("/v1/broker/emqx/authenticate", response_model=HookAnswer)
async def emqx_authenticate(data: AuthenticateRequest, session: SessionDep, runtime: RuntimeDep,
                            authorization: Annotated[str | None, Header()] = None) -> HookAnswer:
    """A device (username = client id = device id, password = its token) or the vnh service account."""
    _check_secret(runtime, authorization)
    if not data.username or data.password is None:
        return HookAnswer(result="deny")
    mqtt = runtime.settings.mqtt
    if data.username == _service_username(runtime):
        configured = mqtt.password.get_secret_value() if mqtt.password else None
        ok = service_credentials_match(data.username, data.password, mqtt.username, configured, runtime.cipher)
        return HookAnswer(result="allow" if ok else "deny")
    if data.clientid != data.username:
        return HookAnswer(result="deny")
    check = await check_device_token(session, runtime.cipher, data.username, data.password)
    return HookAnswer(result="allow" if check.verdict == "ok" else "deny")


@router.post("/v1/broker/emqx/authorize", response_model=HookAnswer)
async def emqx_authorize(data: AuthorizeRequest, session: SessionDep, runtime: RuntimeDep,
                         authorization: Annotated[str | None, Header()] = None) -> HookAnswer:
    """Topic ACL (`devices.broker_access`); a revoked device is denied everything."""
    _check_secret(runtime, authorization)
    if not data.username:
        return HookAnswer(result="deny")
    if data.username == _service_username(runtime):
        identity = Identity.service()
    else:
        status = await session.scalar(select(Device.status).where(Device.device_id == data.username))
        if status != "active" or data.clientid != data.username:
            return HookAnswer(result="deny")
        identity = Identity.device(data.username)
    if allows(identity, data.action, data.topic):
        return HookAnswer(result="allow")
    if identity.kind == "device" and data.action == "publish":
        message = Inbound(device_id=claimed_device(data.topic) or "", kind="events", payload=b"",
                          received_at=runtime.clock.now(), topic=data.topic[:300])
        await store_dead_letters(session, [dead_letter_row(
            message, Rejection("topic_mismatch", f"device {identity.device_id} published on {data.topic}"), None)])
    return HookAnswer(result="deny")
