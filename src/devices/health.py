"""Vital signs and positions of stored device events, encrypted at rest (design §5, PIPL: health data and location
tracks are sensitive).

An event's `value`, `lat` and `lon` are sealed together into `device_events.health_enc` with the personal-data
cipher (`kernel.personal_data.FieldCipher`: AES-256-GCM or SM4-GCM per settings, key id in the prefix, the context
below as associated data); the plaintext columns stay NULL. Rows stored before this (migration 0007) still carry
them in plaintext and are read as they are. Decrypted only on read for roles holding `health.read`; the rules and
reactions work on the message in hand, never on stored rows.
"""

from __future__ import annotations

import json
from typing import Any

from kernel.personal_data import FieldCipher

CONTEXT = "devices.event_health"

Health = tuple[dict[str, Any] | None, float | None, float | None]  # value, lat, lon


def seal(cipher: FieldCipher, value: dict[str, Any] | None, lat: float | None, lon: float | None) -> str | None:
    if value is None and lat is None and lon is None:
        return None
    body = json.dumps({"value": value, "lat": lat, "lon": lon}, ensure_ascii=False, separators=(",", ":"))
    return cipher.encrypt(body, context=CONTEXT)


def unseal(cipher: FieldCipher, sealed: str | None, value: dict[str, Any] | None, lat: float | None,
           lon: float | None) -> Health:
    """The event's health fields: from `health_enc` when sealed, else the (older, plaintext) columns."""
    if sealed is None:
        return value, lat, lon
    opened = json.loads(cipher.decrypt(sealed, context=CONTEXT))
    return opened["value"], opened["lat"], opened["lon"]
