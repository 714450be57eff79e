"""Second factor: TOTP (RFC 6238, pyotp) and single-use recovery codes. Pure functions; the account's secret is
sealed with the personal-data cipher and the recovery codes are stored as argon2 hashes (kernel/auth.py)."""

from __future__ import annotations

import secrets
from datetime import datetime

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pyotp.exceptions import OTPVerificationError

ISSUER = "vnh"
TOTP_CONTEXT = "users.totp_secret"
RECOVERY_CODES = 10
_hasher = PasswordHasher()


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, username: str) -> str:
    """The `otpauth://` URI an authenticator app reads (usually from a QR code)."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)


def totp_step(secret: str, code: str, at: datetime) -> int | None:
    """The 30-second time step (RFC 6238 counter) whose code `code` is: the step at `at`, or the one before or after
    (clock drift, RFC 6238 §5.2); None when it is none of them. The caller accepts a step only once (`kernel.auth`
    stores the last one accepted per user), so a code cannot be replayed."""
    code = code.strip().replace(" ", "")
    if len(code) != 6 or not code.isascii() or not code.isdigit():
        return None
    try:
        return pyotp.TOTP(secret).verify_and_get_timecode(code, for_time=at, valid_window=1)
    except OTPVerificationError:
        return None


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
