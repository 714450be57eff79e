"""Chinese resident identity numbers (GB 11643-1999: 18 characters, the last may be `X`).

Built on python-stdnum's `stdnum.cn.ric` for the check digit (ISO 7064 MOD 11-2), compaction and the birth
date, and on its GB/T 2260 table (through `kernel.regions`) for the first six digits, but not on its
`is_valid` verdict: that rejects a county code created after the birth year, and an ID keeps the code of
first registration for life (elders of 杭锦旗 hold 152726… numbers from before 2001, later registrants
150625…). Here the first six digits may be a code of any period in the table.

Messages never contain the number or any part of it. `ResidentId`'s repr leaves the number out.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from stdnum.cn import ric
from stdnum.exceptions import ValidationError as StdnumValidationError

from kernel.errors import Unprocessable
from kernel.regions import is_county_code

Gender = Literal["male", "female"]
ResidentIdErrorCode = Literal["invalid_id_number", "invalid_id_birth_date", "unknown_id_region", "id_number_mismatch"]

_SHANGHAI = ZoneInfo("Asia/Shanghai")
#: Birth dates before this are taken for a typo, not an elder.
EARLIEST_BIRTH_DATE = date(1850, 1, 1)
_DIGITS = frozenset("0123456789")


class InvalidResidentId(Unprocessable):
    """A resident ID number refused (422), with one of the `ResidentIdErrorCode` codes."""

    def __init__(self, code: ResidentIdErrorCode, message: str, *, details: dict[str, object] | None = None) -> None:
        super().__init__(message, code=code, details=details)


@dataclass(frozen=True, slots=True)
class ResidentId:
    """A parsed, valid resident ID; `number` is normalised (upper-case `X`) and left out of the repr."""

    number: str = field(repr=False)
    birth_date: date
    gender: Gender
    region_code: str

    @property
    def masked(self) -> str:
        return mask_resident_id(self.number)


def _compact(value: str) -> str:
    return ric.compact(unicodedata.normalize("NFKC", value))


def _today() -> date:
    return datetime.now(_SHANGHAI).date()


def parse_resident_id(value: str, *, today: date | None = None) -> ResidentId:
    """Validate and parse an 18-character resident ID number.

    Checks, in order: shape and check digit (`invalid_id_number`), birth date a real date between 1850 and
    `today` (default: today in Asia/Shanghai) (`invalid_id_birth_date`), first six digits a GB/T 2260 code
    of any period (`unknown_id_region`). Surrounding whitespace, full-width digits and `x` are accepted.
    """
    if not isinstance(value, str):
        raise InvalidResidentId("invalid_id_number", "ID number must be a string")
    number = _compact(value)
    if len(number) != 18:
        raise InvalidResidentId("invalid_id_number", "ID number must have 18 characters")
    if not set(number[:17]) <= _DIGITS or not (number[17] in _DIGITS or number[17] == "X"):
        raise InvalidResidentId("invalid_id_number", "ID number must be 17 digits and a final digit or X")
    if ric.calc_check_digit(number) != number[17]:
        raise InvalidResidentId("invalid_id_number", "ID number check digit is wrong")
    try:
        birth_date: date = ric.get_birth_date(number)
    except StdnumValidationError:
        raise InvalidResidentId("invalid_id_birth_date", "ID number has no valid birth date") from None
    if birth_date < EARLIEST_BIRTH_DATE or birth_date > (today or _today()):
        raise InvalidResidentId("invalid_id_birth_date", "ID number birth date is out of range")
    region_code = number[:6]
    if not is_county_code(region_code):
        raise InvalidResidentId("unknown_id_region", "ID number region code is not a known GB/T 2260 code")
    gender: Gender = "male" if int(number[16]) % 2 == 1 else "female"
    return ResidentId(number=number, birth_date=birth_date, gender=gender, region_code=region_code)


def check_matches_record(rid: ResidentId, birth_date: date, gender: Gender) -> None:
    """Raise `id_number_mismatch` naming the record field(s) the ID number disagrees with."""
    fields = []
    if rid.birth_date != birth_date:
        fields.append("birth_date")
    if rid.gender != gender:
        fields.append("gender")
    if fields:
        raise InvalidResidentId(
            "id_number_mismatch",
            f"ID number does not match the record's {' and '.join(fields)}",
            details={"fields": fields},
        )


def mask_resident_id(number: str) -> str:
    """First 6 + `********` + last 4, e.g. `150625********1234`. Raises ValueError unless 18 characters."""
    compact = _compact(number)
    if len(compact) != 18:
        raise ValueError("not an 18-character ID number")
    return f"{compact[:6]}********{compact[-4:]}"
