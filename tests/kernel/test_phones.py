from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.errors import Unprocessable
from kernel.phones import InvalidPhone, mask_phone, normalise_contact_phone, normalise_mobile, phone_kind


@pytest.mark.parametrize(
    "value",
    [
        "13912345678",
        "+86 139 1234 5678",
        "+8613912345678",
        "139-1234-5678",
        "008613912345678",
        "(+86) 139 1234 5678",
        " 139 1234 5678 ",
        "１３９１２３４５６７８",  # full-width, as Chinese input methods type it
        "+86-139-1234-5678",
    ],
)
def test_mobile_forms(value: str) -> None:
    assert normalise_mobile(value) == "+8613912345678"
    assert normalise_contact_phone(value) == "+8613912345678"


@pytest.mark.parametrize("value", ["19912345678", "16612345678", "15012345678", "18612345678"])
def test_other_mobile_ranges(value: str) -> None:
    assert normalise_mobile(value) == "+86" + value


@pytest.mark.parametrize(
    "value",
    [
        "010-12345678",  # Beijing landline
        "0477-8123456",  # Ordos landline
        "+86 10 1234 5678",
        "12345678",  # landline without area code
        "+1 650 253 0000",  # US
        "+852 9123 4567",  # Hong Kong mobile: not mainland
        "+886 912 345 678",  # Taiwan
        "1391234567",  # 10 digits
        "139123456789",  # 12 digits
        "10012345678",  # no such mobile prefix
        "110",
        "10086",
        "400-812-3123",
        "139ABCD5678",
        "13912345678 ext. 12",
        "13912345678#12",
        "",
        "   ",
        "+",
    ],
)
def test_mobile_rejects(value: str) -> None:
    with pytest.raises(InvalidPhone) as info:
        normalise_mobile(value)
    assert info.value.code == "invalid_phone"
    assert isinstance(info.value, Unprocessable)
    assert info.value.status == 422
    digits = "".join(c for c in value if c.isdigit())
    if len(digits) >= 7:
        assert digits not in info.value.message


def test_not_a_string() -> None:
    with pytest.raises(InvalidPhone):
        normalise_mobile(13912345678)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "e164"),
    [
        ("010-12345678", "+861012345678"),
        ("01012345678", "+861012345678"),
        ("+86 10 1234 5678", "+861012345678"),
        ("0477-8123456", "+864778123456"),
        ("(0477) 812 3456", "+864778123456"),
        ("021 6123 4567", "+862161234567"),
    ],
)
def test_contact_accepts_landlines(value: str, e164: str) -> None:
    assert normalise_contact_phone(value) == e164
    assert phone_kind(e164) == "fixed_line"


@pytest.mark.parametrize(
    "value", ["12345678", "+1 650 253 0000", "+852 9123 4567", "400-812-3123", "110", "10086", "0101234"]
)
def test_contact_rejects(value: str) -> None:
    with pytest.raises(InvalidPhone):
        normalise_contact_phone(value)


def test_phone_kind() -> None:
    assert phone_kind("+8613912345678") == "mobile"
    assert phone_kind("+861012345678") == "fixed_line"


@pytest.mark.parametrize(
    ("e164", "masked"),
    [
        ("+8613912345678", "139****5678"),
        ("+861012345678", "010****5678"),
        ("+864778123456", "0477****3456"),
        ("+16502530000", "650****0000"),
        ("garbage", "****"),
        ("+86123", "****"),
    ],
)
def test_mask_phone(e164: str, masked: str) -> None:
    assert mask_phone(e164) == masked


mobiles = st.builds(
    lambda prefix, rest: prefix + rest,
    st.sampled_from(["130", "135", "139", "150", "158", "177", "186", "189", "199"]),
    st.text(alphabet="0123456789", min_size=8, max_size=8),
)
separators = st.sampled_from(["", " ", "-", "."])


@given(mobiles, separators, st.sampled_from(["", "+86", "+86 ", "0086", "86"]))
def test_any_formatting_of_a_mobile_normalises_the_same(number: str, sep: str, prefix: str) -> None:
    written = prefix + sep.join([number[:3], number[3:7], number[7:]])
    e164 = normalise_mobile(written)
    assert e164 == "+86" + number
    assert normalise_mobile(e164) == e164  # idempotent
    assert mask_phone(e164) == number[:3] + "****" + number[-4:]
