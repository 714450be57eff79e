"""Who may do what on the broker (pure): the one ACL every broker integration applies.

- The service (`vnh-service`, any client id): subscribes to every device's uplink topics, plainly or through
  `$share/<group>/`, receives them, publishes downlink commands.
- A device (username = client id = device id, password = its token): publishes only its own `events`, `telemetry`
  and `status`, subscribes to and receives only its own `commands` — nothing outside `vnh/v1/devices/{id}/`.

Used by the embedded amqtt plugin (`devices.amqtt_auth`) and the EMQX HTTP hook (`devices.emqx`); Mosquitto gets
the same rules as dynamic-security roles (`devices.mosquitto`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from devices.protocol import DEVICE_ID, TOPIC_PREFIX

Action = Literal["publish", "subscribe", "receive"]
UPLINK = ("events", "telemetry", "status")
_SHARE = re.compile(r"^\$share/[^/+#]+/(.+)$")


@dataclass(frozen=True)
class Identity:
    kind: Literal["service", "device"]
    device_id: str | None = None

    @classmethod
    def service(cls) -> Identity:
        return cls("service")

    @classmethod
    def device(cls, device_id: str) -> Identity:
        return cls("device", device_id)


def _device_topic(topic: str) -> tuple[str, str] | None:
    if not topic.startswith(TOPIC_PREFIX):
        return None
    parts = topic[len(TOPIC_PREFIX):].split("/")
    if len(parts) != 2:
        return None
    return parts[0], parts[1]


def allows(identity: Identity, action: Action, topic: str) -> bool:
    if identity.kind == "service":
        if action == "subscribe":
            shared = _SHARE.match(topic)
            parsed = _device_topic(shared.group(1) if shared else topic)
            return parsed is not None and parsed[0] == "+" and parsed[1] in UPLINK
        parsed = _device_topic(topic)
        if parsed is None or not DEVICE_ID.match(parsed[0]):
            return False
        return parsed[1] == "commands" if action == "publish" else parsed[1] in UPLINK
    parsed = _device_topic(topic)
    if parsed is None or parsed[0] != identity.device_id:
        return False
    if action == "publish":
        return parsed[1] in UPLINK
    return parsed[1] == "commands"


def claimed_device(topic: str) -> str | None:
    """The device a topic belongs to (for dead-lettering a publish on another device's topic)."""
    parsed = _device_topic(topic)
    return parsed[0] if parsed and DEVICE_ID.match(parsed[0]) else None
