"""Mosquitto dynamic-security configuration for vnh's devices (`vnh devices export-mosquitto-acl`).

Mosquitto 2.0's dynsec plugin checks passwords as PBKDF2-HMAC-SHA512 (101 iterations, 12-byte salt, base64 in its
JSON file). vnh derives that entry from the device token at registration — the only moment it holds the plaintext
(`devices.registry.register_device` → `password_entry`) — and keeps it beside the token's HMAC. The export writes a
complete `dynamic-security.json`: the entries of an existing file (the `admin` client made by `mosquitto_ctrl dynsec
init`, the `vnh-service` account of `deploy/mosquitto/dynsec-setup.sh`) merged with one role and one client per
device, since 2.0's ACLs have no `%u` substitution (deploy/mosquitto/README.md). Revoked devices are exported
disabled. A device registered before this column existed has no entry and is listed as skipped.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from devices.protocol import topic_for

ITERATIONS = 101  # what mosquitto_ctrl and the dynsec plugin use
SERVICE_ROLE = "vnh-service"


def password_entry(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> dict[str, Any]:
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
            "iterations": iterations}


def password_matches(entry: dict[str, Any], password: str) -> bool:
    salt = base64.b64decode(entry["salt"])
    expected = password_entry(password, salt=salt, iterations=int(entry["iterations"]))["password"]
    return secrets.compare_digest(expected, entry["password"])


@dataclass(frozen=True)
class DeviceAccount:
    device_id: str
    active: bool
    password: dict[str, Any] | None  # the dynsec entry derived at registration


def device_role(device_id: str) -> dict[str, Any]:
    acls = [{"acltype": "publishClientSend", "topic": topic_for(device_id, kind), "allow": True}
            for kind in ("events", "telemetry", "status")]
    acls.append({"acltype": "subscribeLiteral", "topic": topic_for(device_id, "commands"), "allow": True})
    return {"rolename": f"vnh-device-{device_id}", "acls": acls}


def service_role() -> dict[str, Any]:
    """The same as deploy/mosquitto/dynsec-setup.sh makes."""
    acls: list[dict[str, Any]] = []
    for kind in ("events", "telemetry", "status"):
        acls.append({"acltype": "subscribePattern", "topic": f"$share/+/vnh/v1/devices/+/{kind}", "allow": True})
        acls.append({"acltype": "subscribePattern", "topic": f"vnh/v1/devices/+/{kind}", "allow": True})
    acls.append({"acltype": "publishClientSend", "topic": "vnh/v1/devices/+/commands", "allow": True})
    return {"rolename": SERVICE_ROLE, "acls": acls}


def dynsec_config(devices: Iterable[DeviceAccount], *, base: dict[str, Any] | None = None,
                  service_username: str | None = None, service_password: str | None = None
                  ) -> tuple[dict[str, Any], list[str]]:
    """A dynamic-security file: `base` (kept as it is) plus vnh's service role and the devices. Answers the
    config and the device ids that could not be exported (no password entry)."""
    config: dict[str, Any] = {"clients": [], "groups": [], "roles": [], **(base or {})}
    config.setdefault("defaultACLAccess", {"publishClientSend": False, "publishClientReceive": True,
                                           "subscribe": False, "unsubscribe": True})
    config["defaultACLAccess"].update(publishClientSend=False, subscribe=False)
    ours = {SERVICE_ROLE}
    skipped: list[str] = []
    device_clients, device_roles = [], []
    for device in devices:
        if device.password is None:
            skipped.append(device.device_id)
            continue
        role = device_role(device.device_id)
        ours.add(role["rolename"])
        device_roles.append(role)
        device_clients.append({
            "username": device.device_id, "clientid": device.device_id, "textName": "vnh device",
            **device.password, "roles": [{"rolename": role["rolename"]}],
            **({} if device.active else {"disabled": True}),
        })
    usernames = {c["username"] for c in device_clients}
    if service_username:
        usernames.add(service_username)
    config["roles"] = [r for r in config["roles"] if r.get("rolename") not in ours] + [service_role(), *device_roles]
    config["clients"] = [c for c in config["clients"] if c.get("username") not in usernames]
    if service_username and service_password:
        config["clients"].append({"username": service_username, "textName": "vnh service",
                                  **password_entry(service_password), "roles": [{"rolename": SERVICE_ROLE}]})
    config["clients"] += device_clients
    return config, skipped
