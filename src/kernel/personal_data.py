"""Personal data at rest (PIPL): ciphertext with a key-id prefix, an HMAC blind index, a stored masked form.

A protected field is stored in three columns: `<name>_enc` (ciphertext, never plaintext), `<name>_bidx` (HMAC of the
normalised value: equality look-ups and uniqueness without decrypting) and `<name>_masked` (what lists show).
Ciphertext is bound to its column (`context` is the AEAD associated data), so a value copied into another column
does not decrypt. The cipher is AES-256-GCM or SM4-GCM (商用密码), chosen in settings and recorded per value, so
switching the setting never strands old data.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kernel.settings import Settings

CipherName = Literal["aes-gcm", "sm4-gcm"]
_NONCE = 12
_TAG = 16


class UndecryptableValue(Exception):
    """A stored value that no configured key opens: a missing key after rotation, or tampering."""


@dataclass(frozen=True)
class ProtectedValue:
    ciphertext: str
    blind_index: str
    masked: str


def _derive(master: bytes, cipher: CipherName) -> bytes:
    length = 32 if cipher == "aes-gcm" else 16
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=f"vnh-field-{cipher}".encode()).derive(
        master
    )


class FieldCipher:
    def __init__(self, *, cipher: CipherName, keys: dict[str, bytes], active_key: str, blind_index_key: bytes) -> None:
        if active_key not in keys:
            raise ValueError(f"active key {active_key!r} is not among the configured keys")
        if ":" in "".join(keys):
            raise ValueError("key ids may not contain ':'")
        self._cipher: CipherName = cipher
        self._keys = keys
        self._active = active_key
        self._bidx_key = blind_index_key
        # HKDF per call would cost more than the encryption itself (device telemetry seals every event)
        self._derived: dict[tuple[str, str], bytes] = {}

    def _key(self, key_id: str, cipher: CipherName) -> bytes:
        derived = self._derived.get((key_id, cipher))
        if derived is None:
            derived = self._derived[(key_id, cipher)] = _derive(self._keys[key_id], cipher)
        return derived

    @classmethod
    def from_settings(cls, settings: Settings) -> FieldCipher:
        crypto = settings.crypto
        if not crypto.keys or crypto.blind_index_key is None:
            raise RuntimeError(
                "field encryption keys are not configured (VNH_CRYPTO__KEYS, VNH_CRYPTO__BLIND_INDEX_KEY)"
            )
        keys = {kid: base64.b64decode(secret.get_secret_value()) for kid, secret in crypto.keys.items()}
        active = crypto.active_key or next(iter(keys))
        return cls(
            cipher=crypto.cipher,
            keys=keys,
            active_key=active,
            blind_index_key=base64.b64decode(crypto.blind_index_key.get_secret_value()),
        )

    @property
    def active_key(self) -> str:
        return self._active

    def encrypt(self, plaintext: str, *, context: str) -> str:
        key = self._key(self._active, self._cipher)
        nonce = os.urandom(_NONCE)
        data = plaintext.encode()
        aad = context.encode()
        if self._cipher == "aes-gcm":
            sealed = AESGCM(key).encrypt(nonce, data, aad)
        else:
            encryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
            encryptor.authenticate_additional_data(aad)
            sealed = encryptor.update(data) + encryptor.finalize() + encryptor.tag
        return f"{self._active}:{self._cipher}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, *, context: str) -> str:
        try:
            key_id, cipher, body = token.split(":", 2)
            raw = base64.b64decode(body)
        except ValueError as exc:
            raise UndecryptableValue("malformed ciphertext") from exc
        if key_id not in self._keys:
            raise UndecryptableValue(f"key {key_id!r} is not configured")
        if cipher not in ("aes-gcm", "sm4-gcm"):
            raise UndecryptableValue(f"unknown cipher {cipher!r}")
        key = self._key(key_id, cipher)  # type: ignore[arg-type]
        nonce, sealed = raw[:_NONCE], raw[_NONCE:]
        aad = context.encode()
        try:
            if cipher == "aes-gcm":
                return AESGCM(key).decrypt(nonce, sealed, aad).decode()
            decryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce, sealed[-_TAG:])).decryptor()
            decryptor.authenticate_additional_data(aad)
            return (decryptor.update(sealed[:-_TAG]) + decryptor.finalize()).decode()
        except Exception as exc:  # InvalidTag and friends: never leak which
            raise UndecryptableValue("ciphertext does not authenticate") from exc

    def key_id_of(self, token: str) -> str:
        return token.split(":", 1)[0]

    @property
    def current_prefix(self) -> str:
        """What every ciphertext written now starts with: the active key id and the cipher."""
        return f"{self._active}:{self._cipher}:"

    def reencrypt(self, token: str, *, context: str) -> str:
        """The same plaintext under the active key and cipher (key rotation); authenticates the old one first."""
        return self.encrypt(self.decrypt(token, context=context), context=context)

    def blind_index(self, normalised: str, *, context: str) -> str:
        """Deterministic HMAC-SHA256 of the normalised value, separated per field so two fields never collide."""
        mac = hmac.new(self._bidx_key, f"{context}\x00{normalised}".encode(), hashlib.sha256)
        return mac.hexdigest()

    def protect(self, normalised: str, *, context: str, masked: str) -> ProtectedValue:
        return ProtectedValue(
            ciphertext=self.encrypt(normalised, context=context),
            blind_index=self.blind_index(normalised, context=context),
            masked=masked,
        )


_COUNTY = re.compile(r"(?<!自治)[旗县区]")  # 杭锦旗, 海淀区; not the 区 of 自治区
_CITY = re.compile(r"市")  # county-level cities (赤水市, 伊宁市) end at their last 市


def mask_address(address: str, keep: int = 6) -> str:
    """County level only (内蒙古自治区鄂尔多斯市杭锦旗****): enough to know the area, not the door."""
    address = address.strip()
    head = address[:30]
    county = _COUNTY.search(head, 2)
    if county is not None:
        return address[: county.end()] + "****"
    cities = [m.end() for m in _CITY.finditer(head)]
    if cities:
        return address[: cities[-1]] + "****"
    return (address[:keep] if len(address) > keep else address[:2]) + "****"


def mask_name(name: str) -> str:
    """张三丰 → 张**: the family name is enough for a caregiver's offer list."""
    name = name.strip()
    return name[:1] + "*" * max(1, len(name) - 1) if name else name
