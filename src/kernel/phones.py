"""Mainland China phone numbers, normalised to E.164 with the `phonenumbers` package.

`normalise_mobile` accepts only CN mobiles (accounts, elders, caregivers: SMS and call-backs go there);
`normalise_contact_phone` also accepts a CN fixed line with its area code (an emergency contact's home phone).
Input may carry spaces, hyphens, dots, brackets, a `+86`/`0086`/`86` prefix and full-width characters;
letters, extensions, short codes (110, 10086), service numbers (400/800) and non-CN numbers are refused.
Messages never contain the number.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, PhoneNumberFormat, PhoneNumberType

from kernel.errors import Unprocessable

PhoneKind = Literal["mobile", "fixed_line"]

_ALLOWED = re.compile(r"\(?\+?[0-9(][0-9 ().\-]{5,30}")
_MOBILE_TYPES = frozenset({PhoneNumberType.MOBILE})
_CONTACT_TYPES = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE, PhoneNumberType.FIXED_LINE_OR_MOBILE})


class InvalidPhone(Unprocessable):
    """A phone number refused (422, code `invalid_phone`)."""

    def __init__(self, message: str = "not a valid mainland China phone number") -> None:
        super().__init__(message, code="invalid_phone")


def _parse_cn(value: str, allowed: frozenset[int], what: str) -> PhoneNumber:
    if not isinstance(value, str):
        raise InvalidPhone(f"{what} must be a string")
    text = unicodedata.normalize("NFKC", value).strip()
    if _ALLOWED.fullmatch(text) is None:
        raise InvalidPhone(f"{what} may contain only digits, spaces, hyphens and a leading +")
    try:
        number = phonenumbers.parse(text, "CN")
    except NumberParseException:
        raise InvalidPhone(f"{what} is not a phone number") from None
    if number.extension:
        raise InvalidPhone(f"{what} must not have an extension")
    if number.country_code != 86 or phonenumbers.region_code_for_number(number) != "CN":
        raise InvalidPhone(f"{what} must be a mainland China number")
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone(f"{what} is not a valid number")
    if phonenumbers.number_type(number) not in allowed:
        kind = "a mobile" if allowed == _MOBILE_TYPES else "a mobile or landline"
        raise InvalidPhone(f"{what} must be {kind} number")
    return number


def normalise_mobile(value: str) -> str:
    """A mainland China mobile number in E.164 (`+8613912345678`), or `InvalidPhone`."""
    number = _parse_cn(value, _MOBILE_TYPES, "phone number")
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def normalise_contact_phone(value: str) -> str:
    """A mainland China mobile or fixed-line number (with area code) in E.164, or `InvalidPhone`.

    `010-12345678` → `+861012345678`; a landline without its area code is refused.
    """
    number = _parse_cn(value, _CONTACT_TYPES, "phone number")
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def phone_kind(e164: str) -> PhoneKind:
    """Whether a normalised CN number is a mobile or a fixed line (`InvalidPhone` otherwise)."""
    number = _parse_cn(e164, _CONTACT_TYPES, "phone number")
    return "mobile" if phonenumbers.number_type(number) == PhoneNumberType.MOBILE else "fixed_line"


def _mask_digits(digits: str) -> str:
    return f"{digits[:3]}****{digits[-4:]}" if len(digits) >= 8 else "****"


def mask_phone(e164: str) -> str:
    """Masked display form: mobile `139****5678`, landline `010****5678` (area code kept), else 3 + 4 digits.

    Never raises and never returns the whole number: what cannot be parsed is masked by its digits.
    """
    try:
        number = phonenumbers.parse(e164, "CN")
    except NumberParseException:
        return _mask_digits("".join(ch for ch in e164 if ch.isdigit()))
    national = phonenumbers.national_significant_number(number)
    if number.country_code == 86 and phonenumbers.is_valid_number(number):
        if phonenumbers.number_type(number) == PhoneNumberType.MOBILE:
            return _mask_digits(national)
        area = phonenumbers.length_of_geographical_area_code(number)
        if area > 0 and len(national) - area >= 5:
            return f"0{national[:area]}****{national[-4:]}"
    return _mask_digits(national)
