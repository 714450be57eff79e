"""An elder's home point: the exact WGS-84 position is personal data, the ~1 km cell is not.

The exact point undoes the address mask (a map pin is the door), so it is sealed like the address: `elders.home_enc`
holds `lat,lon` encrypted with the field cipher (context `elders.home`, rotated by `vnh crypto rotate`). What
staff lists, maps, alarms and outbox events carry is the cell: latitude and longitude rounded to 0.01° (about
1.1 km north–south, less east–west), kept in clear as `coarse_lat`/`coarse_lon` for search and pre-filtering.
Only the services that need the door (matching distances, check-in verification) and the people entitled to it (the
assigned caregiver during the visit, a reveal with a reason) open the sealed value.

A visit's check-in and check-out positions are taken at that door, so they are sealed the same way
(`visits.check_in_enc`, `visits.check_out_enc`).
"""

from __future__ import annotations

from kernel.personal_data import FieldCipher, UndecryptableValue

HOME_CONTEXT = "elders.home"
CHECK_IN_CONTEXT = "visits.check_in"
CHECK_OUT_CONTEXT = "visits.check_out"
CELL_DEGREES = 0.01


def coarse(lat: float, lon: float) -> tuple[float, float]:
    """The centre-ish of the 0.01° cell: enough for a county map, not for finding the house."""
    return round(lat, 2), round(lon, 2)


def seal_point(cipher: FieldCipher, lat: float, lon: float, *, context: str) -> str:
    # repr keeps every bit of the float: decrypting gives back the very point that was stored
    return cipher.encrypt(f"{lat!r},{lon!r}", context=context)


def open_point(cipher: FieldCipher, token: str, *, context: str) -> tuple[float, float]:
    plaintext = cipher.decrypt(token, context=context)
    try:
        lat, lon = (float(part) for part in plaintext.split(","))
    except ValueError as exc:
        raise UndecryptableValue("the sealed value is not a point") from exc
    return lat, lon


def seal_home(cipher: FieldCipher, lat: float, lon: float) -> str:
    return seal_point(cipher, lat, lon, context=HOME_CONTEXT)


def open_home(cipher: FieldCipher, token: str) -> tuple[float, float]:
    return open_point(cipher, token, context=HOME_CONTEXT)
