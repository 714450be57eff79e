"""Administrative region codes (GB/T 2260 counties, 9-digit towns, 12-digit villages) and scope coverage.

The county table is python-stdnum's `stdnum/cn/loc.dat` (read through `stdnum.numdb`, as `stdnum.cn.ric`
does): every code of every period, so a code retired long ago (152726, the pre-2001 杭锦旗) is still known.
A 6-digit code in that table may be a province (`PP0000`), a prefecture-level city (`PPCC00`) or a county.

Town codes are 9 digits and village codes 12: the first six are a known county, then three (town) or three
plus three (village) digits, neither group `000`. stdnum has no town or village names, so they are validated
by shape and county only.

Scope coverage (decisions.md §2): a province scope `PP0000` covers every code starting `PP`, a city `PPCC00`
every code starting `PPCC`, a county exactly itself and its towns and villages (a single trailing zero is
never trimmed: 130130 does not cover 130131), a town scope that town and its villages, a village only itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from stdnum import numdb

RegionLevel = Literal["province", "city", "county", "town", "village"]

_SIX = re.compile(r"[0-9]{6}")
_NINE = re.compile(r"[0-9]{9}")
_TWELVE = re.compile(r"[0-9]{12}")
_PERIOD = re.compile(r"\[(?P<start>[0-9]*)-(?P<end>[0-9]*)\](?P<name>.*)")


@dataclass(frozen=True, slots=True)
class RegionName:
    """One name a code carried, with the years stdnum gives for it (`None`: open-ended)."""

    name: str
    since: int | None
    until: int | None


def _parse_names(value: str) -> tuple[RegionName, ...]:
    names: list[RegionName] = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        match = _PERIOD.fullmatch(part)
        if match is None:
            names.append(RegionName(part, None, None))
        else:
            start, end = match.group("start"), match.group("end")
            since = int(start) if start else None
            until = int(end) if end else None
            names.append(RegionName(match.group("name"), since, until))
    return tuple(names)


def _walk(prefixes: list[Any], parent: str, out: dict[str, tuple[RegionName, ...]]) -> None:
    for length, low, high, props, children in prefixes:
        for value in range(int(low), int(high) + 1):
            code = parent + str(value).zfill(length)
            if len(code) == 6 and "county" in props:
                out[code] = out.get(code, ()) + _parse_names(props["county"])
            elif len(code) < 6:
                _walk(children, code, out)


@cache
def _table() -> dict[str, tuple[RegionName, ...]]:
    """Every 6-digit code in stdnum's GB/T 2260 table (all periods) with its names."""
    out: dict[str, tuple[RegionName, ...]] = {}
    _walk(numdb.get("cn/loc").prefixes, "", out)
    return out


def county_codes() -> frozenset[str]:
    """All 6-digit codes of stdnum's table, any period and any level (province, city, county)."""
    return frozenset(_table())


def is_county_code(code: str) -> bool:
    """6 ASCII digits present in stdnum's GB/T 2260 table, of any period."""
    return isinstance(code, str) and _SIX.fullmatch(code) is not None and code in _table()


def is_town_code(code: str) -> bool:
    """9 digits: a known county code followed by a town number other than `000`."""
    return (
        isinstance(code, str) and _NINE.fullmatch(code) is not None and code[6:9] != "000" and is_county_code(code[:6])
    )


def is_village_code(code: str) -> bool:
    """12 digits: a valid town code followed by a village number other than `000`."""
    return (
        isinstance(code, str) and _TWELVE.fullmatch(code) is not None and code[9:12] != "000" and is_town_code(code[:9])
    )


def region_history(code: str) -> tuple[RegionName, ...]:
    """Every name stdnum records for a 6-digit code, oldest first; empty when unknown (or not 6 digits)."""
    if not isinstance(code, str) or _SIX.fullmatch(code) is None:
        return ()
    return _table().get(code, ())


def region_name(code: str) -> str | None:
    """The current name of a 6-digit code (the open-ended period if any, else the latest), or None.

    Town and village codes answer None: stdnum's table has only county-level and higher names.
    """
    names = region_history(code)
    if not names:
        return None
    for entry in reversed(names):
        if entry.until is None:
            return entry.name
    return names[-1].name


def region_level(code: str) -> RegionLevel | None:
    """The level a code's shape denotes (not whether it exists): None for anything not 6, 9 or 12 digits."""
    if not isinstance(code, str):
        return None
    if _SIX.fullmatch(code):
        if code[2:] == "0000":
            return "province"
        if code[4:] == "00":
            return "city"
        return "county"
    if _NINE.fullmatch(code):
        return "town"
    if _TWELVE.fullmatch(code):
        return "village"
    return None


def scope_covers(scope_code: str, region_code: str) -> bool:
    """Whether a user's region scope covers a region code (decisions.md §2).

    Both are codes of 6, 9 or 12 digits; anything else covers nothing and is covered by nothing (deny).
    Pure shape logic: neither code has to be in the table.
    """
    level = region_level(scope_code)
    if level is None or region_level(region_code) is None:
        return False
    if level == "province":
        prefix = scope_code[:2]
    elif level == "city":
        prefix = scope_code[:4]
    else:  # county, town, village: the whole code, never trimmed
        prefix = scope_code
    return region_code.startswith(prefix)
