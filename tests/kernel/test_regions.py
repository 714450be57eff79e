from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.regions import (
    RegionName,
    county_codes,
    is_county_code,
    is_town_code,
    is_village_code,
    region_history,
    region_level,
    region_name,
    scope_covers,
)


def test_table_is_complete_and_of_all_periods() -> None:
    codes = county_codes()
    assert len(codes) > 6000
    assert all(len(c) == 6 and c.isdigit() for c in codes)
    # every province has its PP0000 entry
    assert {c[:2] for c in codes} == {c[:2] for c in codes if c.endswith("0000")}


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("150625", "杭锦旗"),  # since 2001
        ("152726", "杭锦旗"),  # until 2001 (伊克昭盟)
        ("152728", "伊金霍洛旗"),  # until 2001
        ("150600", "鄂尔多斯市"),
        ("150000", "内蒙古自治区"),
        ("110000", "北京市"),
        ("130130", "无极县"),
        ("130131", "平山县"),
        ("120110", "东丽区"),  # renamed: 东郊区 until 1991
        ("110103", "崇文区"),  # abolished 2010, still known
    ],
)
def test_known_codes(code: str, name: str) -> None:
    assert is_county_code(code)
    assert region_name(code) == name


def test_history() -> None:
    assert region_history("120110") == (RegionName("东郊区", None, 1991), RegionName("东丽区", 1992, None))
    assert region_history("152728") == (RegionName("伊金霍洛旗", None, 2001),)
    assert region_history("150625") == (RegionName("杭锦旗", 2001, None),)
    assert region_history("999999") == ()
    assert region_history("15062") == ()


@pytest.mark.parametrize("code", ["999999", "150699", "15062", "1506250", "15062a", "", " 150625", "１５０６２５"])
def test_not_county_codes(code: str) -> None:
    assert not is_county_code(code)
    assert region_name(code) is None


def test_town_and_village_codes() -> None:
    assert is_town_code("150625001")
    assert is_town_code("152726101")  # under a retired county code
    assert not is_town_code("150625000")
    assert not is_town_code("999999001")
    assert not is_town_code("15062500")
    assert not is_town_code("150625001001")
    assert is_village_code("150625001201")
    assert not is_village_code("150625001000")
    assert not is_village_code("150625000201")
    assert not is_village_code("999999001201")
    assert not is_village_code("150625001")
    assert region_name("150625001") is None


def test_levels() -> None:
    assert region_level("150000") == "province"
    assert region_level("150600") == "city"
    assert region_level("150625") == "county"
    assert region_level("130130") == "county"
    assert region_level("150625001") == "town"
    assert region_level("150625001201") == "village"
    assert region_level("1506250") is None


@pytest.mark.parametrize(
    ("scope", "region", "covers"),
    [
        ("130130", "130130", True),
        ("130130", "130131", False),  # never trim a single zero
        ("130130", "130100", False),
        ("130100", "130130", True),
        ("130100", "130131", True),
        ("130000", "130131", True),
        ("130000", "131000", True),
        ("130000", "140100", False),
        ("150600", "150625", True),
        ("150600", "152726", False),  # the old 杭锦旗 code lies in the old 伊克昭盟 (1527), not 1506
        ("150000", "152726", True),
        ("150625", "150625001", True),  # a county covers its towns and villages
        ("150625", "150625001201", True),
        ("150625", "150626001", False),
        ("150625001", "150625001", True),
        ("150625001", "150625001201", True),
        ("150625001", "150625002201", False),
        ("150625001", "150625", False),  # a town scope does not cover its county
        ("150625001201", "150625001201", True),
        ("150625001201", "150625001202", False),
        ("150625001201", "150625001", False),
        ("150000", "15", False),
        ("15", "150625", False),
        ("1500000", "150625", False),
        ("", "", False),
    ],
)
def test_scope_covers(scope: str, region: str, covers: bool) -> None:
    assert scope_covers(scope, region) is covers


# --- property: agrees with a reference written level by level ---------------------------------------------


def reference_covers(scope: str, region: str) -> bool:
    if len(region) not in (6, 9, 12) or not region.isdigit() or not scope.isdigit():
        return False
    province, city, county = scope[0:2], scope[2:4], scope[4:6]
    if len(scope) == 6 and city == "00" and county == "00":
        return region[0:2] == province
    if len(scope) == 6 and county == "00":
        return region[0:2] == province and region[2:4] == city
    if len(scope) == 6:
        return region[0:6] == scope
    if len(scope) == 9:
        return len(region) >= 9 and region[0:9] == scope
    if len(scope) == 12:
        return region == scope
    return False


# A small alphabet makes prefixes collide often; lengths include malformed ones.
codes = st.text(alphabet="0013", min_size=5, max_size=13)


@st.composite
def related_pairs(draw: st.DrawFn) -> tuple[str, str]:
    region = draw(st.text(alphabet="0123456789", min_size=12, max_size=12))[: draw(st.sampled_from([6, 9, 12]))]
    keep = draw(st.sampled_from([2, 4, 5, 6, 9, 12]))
    scope = region[:keep].ljust(6, "0") if keep <= 6 else region[:keep]
    if draw(st.booleans()):
        region, scope = draw(st.sampled_from([(region, scope), (scope, region)]))
    return scope, region


@given(codes, codes)
def test_scope_covers_matches_reference_random(scope: str, region: str) -> None:
    assert scope_covers(scope, region) == reference_covers(scope, region)


@given(related_pairs())
def test_scope_covers_matches_reference_related(pair: tuple[str, str]) -> None:
    scope, region = pair
    assert scope_covers(scope, region) == reference_covers(scope, region)


@given(st.sampled_from(sorted(county_codes())))
def test_every_code_covers_itself_and_its_province_covers_it(code: str) -> None:
    assert scope_covers(code, code)
    assert scope_covers(code[:2] + "0000", code)
    assert scope_covers(code, code + "001")
