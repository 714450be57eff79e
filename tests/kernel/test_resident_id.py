from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum.cn import ric

from kernel.errors import Unprocessable
from kernel.regions import county_codes
from kernel.resident_id import (
    InvalidResidentId,
    ResidentId,
    check_matches_record,
    mask_resident_id,
    parse_resident_id,
)

TODAY = date(2026, 3, 2)
COUNTIES = sorted(county_codes())


def with_check_digit(first17: str) -> str:
    assert len(first17) == 17
    return first17 + ric.calc_check_digit(first17 + "0")


def code_of(value: str, today: date | None = TODAY) -> str:
    with pytest.raises(InvalidResidentId) as info:
        parse_resident_id(value, today=today)
    return info.value.code


# --- known examples ---------------------------------------------------------------------------------------


def test_current_hangjin_code_accepted_for_an_elder_born_before_it_existed() -> None:
    # 150625 (杭锦旗) exists since 2001; stdnum's own verdict turns this 1950 elder away.
    number = with_check_digit("15062519500101123")
    assert number == "150625195001011234"
    assert not ric.is_valid(number)
    rid = parse_resident_id(number, today=TODAY)
    assert rid == ResidentId(number, date(1950, 1, 1), "male", "150625")


@pytest.mark.parametrize("region", ["152726", "152728"])
def test_pre_2001_ordos_codes_accepted(region: str) -> None:
    # 152726 is the old 杭锦旗 code, 152728 the old 伊金霍洛旗 code (both retired in 2001).
    rid = parse_resident_id(with_check_digit(region + "19380615002"), today=TODAY)
    assert rid.region_code == region
    assert rid.birth_date == date(1938, 6, 15)
    assert rid.gender == "female"


def test_code_created_after_birth_year_accepted() -> None:
    # 110118 密云区 only exists since 2015; a 1944 elder registered there keeps it.
    rid = parse_resident_id(with_check_digit("11011819440220001"), today=TODAY)
    assert rid.region_code == "110118"
    assert rid.gender == "male"


def test_normalises_lowercase_x_and_whitespace() -> None:
    first17 = next(
        f"15062519470312{n:03d}" for n in range(1000) if with_check_digit(f"15062519470312{n:03d}")[-1] == "X"
    )
    upper = with_check_digit(first17)
    assert upper.endswith("X")
    lower = upper[:-1] + "x"
    assert parse_resident_id(f"  {lower} ", today=TODAY).number == upper
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in lower)  # full-width digits and ｘ
    assert parse_resident_id(fullwidth, today=TODAY).number == upper


def test_gender_from_17th_digit() -> None:
    assert parse_resident_id(with_check_digit("15062519500101129"), today=TODAY).gender == "male"
    assert parse_resident_id(with_check_digit("15062519500101120"), today=TODAY).gender == "female"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "15062519500101123",  # 17 characters
        "1506251950010112344",  # 19
        "15062519500101123A",
        "X50625195001011234",
        "150625 95001011234",
        "15062519500101123X",  # wrong check digit (correct is 4)
        "150625195001011235",
    ],
)
def test_format_and_check_digit_errors(value: str) -> None:
    assert code_of(value) == "invalid_id_number"


def test_not_a_string() -> None:
    with pytest.raises(InvalidResidentId) as info:
        parse_resident_id(150625195001011234, today=TODAY)  # type: ignore[arg-type]
    assert info.value.code == "invalid_id_number"


@pytest.mark.parametrize(
    "first17",
    [
        "15062519500230123",  # 30 February
        "15062519501301123",  # month 13
        "15062500000101123",  # year 0
        "15062518491231123",  # before 1850
        "15062520260303123",  # tomorrow
    ],
)
def test_birth_date_errors(first17: str) -> None:
    assert code_of(with_check_digit(first17)) == "invalid_id_birth_date"


def test_birth_date_today_accepted_and_default_today_is_used() -> None:
    number = with_check_digit("15062520260302123")
    assert parse_resident_id(number, today=TODAY).birth_date == TODAY
    assert code_of(number, today=date(2026, 3, 1)) == "invalid_id_birth_date"
    assert parse_resident_id("150625195001011234").birth_date == date(1950, 1, 1)  # default: today in Shanghai
    assert code_of(with_check_digit("15062521990101123"), today=None) == "invalid_id_birth_date"


@pytest.mark.parametrize("region", ["999999", "150699", "830000", "000000"])
def test_unknown_region(region: str) -> None:
    assert code_of(with_check_digit(region + "19500101123")) == "unknown_id_region"


def test_error_is_a_422_domain_error_and_never_echoes_the_number() -> None:
    for number in ["150625195001011235", with_check_digit("15062519500230123"), with_check_digit("99999919500101123")]:
        with pytest.raises(InvalidResidentId) as info:
            parse_resident_id(number, today=TODAY)
        assert isinstance(info.value, Unprocessable)
        assert info.value.status == 422
        assert number not in info.value.message
        assert number[6:14] not in info.value.message
        assert number not in str(info.value)


def test_repr_leaves_number_out() -> None:
    rid = parse_resident_id("150625195001011234", today=TODAY)
    assert "150625195001011234" not in repr(rid)
    assert rid.masked == "150625********1234"


# --- matching the record ----------------------------------------------------------------------------------


def test_check_matches_record() -> None:
    rid = parse_resident_id("150625195001011234", today=TODAY)
    check_matches_record(rid, date(1950, 1, 1), "male")

    with pytest.raises(InvalidResidentId) as info:
        check_matches_record(rid, date(1950, 1, 2), "male")
    assert info.value.code == "id_number_mismatch"
    assert "birth_date" in info.value.message and "gender" not in info.value.message
    assert info.value.details == {"fields": ["birth_date"]}

    with pytest.raises(InvalidResidentId) as info:
        check_matches_record(rid, date(1950, 1, 1), "female")
    assert "gender" in info.value.message and "birth_date" not in info.value.message

    with pytest.raises(InvalidResidentId) as info:
        check_matches_record(rid, date(1951, 1, 1), "female")
    assert info.value.details == {"fields": ["birth_date", "gender"]}
    assert "150625" not in info.value.message and "1234" not in info.value.message


# --- masking ----------------------------------------------------------------------------------------------


def test_mask() -> None:
    assert mask_resident_id("150625195001011234") == "150625********1234"
    assert mask_resident_id("15062519470312001x") == "150625********001X"
    with pytest.raises(ValueError, match="18-character") as info:
        mask_resident_id("1506251950")
    assert "1506251950" not in str(info.value)


# --- properties -------------------------------------------------------------------------------------------

valid_numbers = st.builds(
    lambda region, born, seq: with_check_digit(f"{region}{born:%Y%m%d}{seq:03d}"),
    st.sampled_from(COUNTIES),
    st.dates(min_value=date(1850, 1, 1), max_value=TODAY),
    st.integers(min_value=0, max_value=999),
)


@given(valid_numbers)
def test_any_valid_number_parses(number: str) -> None:
    rid = parse_resident_id(number, today=TODAY)
    assert rid.number == number
    assert rid.region_code == number[:6]
    assert f"{rid.birth_date:%Y%m%d}" == number[6:14]
    assert rid.gender == ("male" if int(number[16]) % 2 else "female")
    check_matches_record(rid, rid.birth_date, rid.gender)


@given(valid_numbers, st.integers(min_value=0, max_value=17), st.sampled_from("0123456789X"))
def test_any_single_character_change_is_rejected(number: str, position: int, replacement: str) -> None:
    if number[position] == replacement:
        replacement = "0" if replacement != "0" else "1"
    changed = number[:position] + replacement + number[position + 1 :]
    assert code_of(changed) == "invalid_id_number"


@given(valid_numbers)
def test_mask_keeps_six_and_four(number: str) -> None:
    masked = mask_resident_id(number)
    assert masked == number[:6] + "*" * 8 + number[-4:]
    assert len(masked) == 18
    assert number[6:14] not in masked
