"""Second factor: TOTP (RFC 6238, pyotp) and single-use recovery codes. Pure functions; the account's secret is
sealed with the personal-data cipher and the recovery codes are stored as argon2 hashes (kernel/auth.py)."""

from __future__ import annotations

import secrets
from datetime import datetime

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ISSUER = "vnh"
TOTP_CONTEXT = "users.totp_secret"
RECOVERY_CODES = 10
_hasher = PasswordHasher()


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, username: str) -> str:
    """The `otpauth://` URI an authenticator app reads (usually from a QR code)."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)


def totp_matches(secret: str, code: str, at: datetime) -> bool:
    """The code of the 30-second step at `at`, or of the step before or after (clock drift, RFC 6238 §5.2)."""
    code = code.strip().replace(" ", "")
    return len(code) == 6 and code.isdigit() and pyotp.TOTP(secret).verify(code, for_time=at, valid_window=1)


def new_recovery_codes() -> tuple[list[str], list[str]]:
    """Ten codes shown once, and their hashes to store."""
    codes = [f"{secrets.token_hex(4)}-{secrets.token_hex(4)}" for _ in range(RECOVERY_CODES)]
    return codes, [_hasher.hash(code) for code in codes]


def consume_recovery_code(hashes: list[str], code: str) -> list[str] | None:
    """The hashes left once `code` is used, or None when it is none of them."""
    code = code.strip().lower()
    for i, stored in enumerate(hashes):
        try:
            if _hasher.verify(stored, code):
                return hashes[:i] + hashes[i + 1:]
        except (VerificationError, InvalidHashError):
            continue
    return None
