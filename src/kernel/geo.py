"""Coordinates: validation, conversion to WGS-84 from China's map datums, and great-circle distance.

Phones report GCJ-02 (Amap, Tencent) or BD-09 (Baidu) positions, several hundred metres off WGS-84; the
service converts on input and stores WGS-84 (spec/http-api.md). Conversion uses `prcoords`:

- GCJ-02 → WGS-84: `prcoords.gcj_wgs_bored` (the iterative "Caijun 2014" inverse), then one more fixed-point
  step here. GCJ-02 is the identity outside prcoords' China box (lat 0.8293–55.8271, lon 72.004–137.8347), as
  the map SDKs do; the box test is made on the GCJ-02 input.
- BD-09 → GCJ-02: `prcoords.bd_gcj_bored` plus one step, then as above.

Measured over 200,000 random points of the box: wgs84→gcj02→wgs84 with `gcj_wgs_bored` alone is off by at most
4.8 mm (its loop stops at 1e-5° corrections); with the extra step, well under a millimetre. The rough one-shot
inverse `gcj_wgs` is off by up to 5 m.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import prcoords

from kernel.errors import Unprocessable

Crs = Literal["wgs84", "gcj02", "bd09"]
CRS_VALUES: tuple[Crs, ...] = get_args(Crs)

#: IUGG mean Earth radius, metres.
EARTH_RADIUS_M = 6_371_008.8

# prcoords' sanity box for "inside China" (`prcoords.sanity_in_china_p`).
_CHINA_LAT = (0.8293, 55.8271)
_CHINA_LON = (72.004, 137.8347)


class InvalidCoordinates(Unprocessable):
    """Coordinates refused (422, code `invalid_coordinates`)."""

    def __init__(self, message: str = "coordinates are out of range") -> None:
        super().__init__(message, code="invalid_coordinates")


def _is_number(value: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_valid_latitude(lat: float) -> bool:
    """A finite number (not a bool) in −90..90."""
    return _is_number(lat) and -90 <= lat <= 90


def is_valid_longitude(lon: float) -> bool:
    """A finite number (not a bool) in −180..180."""
    return _is_number(lon) and -180 <= lon <= 180


def validate_lat_lon(lat: float, lon: float) -> tuple[float, float]:
    """The pair as floats, or `InvalidCoordinates` (finite, lat −90..90, lon −180..180)."""
    if not is_valid_latitude(lat):
        raise InvalidCoordinates("lat must be a finite number between -90 and 90")
    if not is_valid_longitude(lon):
        raise InvalidCoordinates("lon must be a finite number between -180 and 180")
    return float(lat), float(lon)


def in_china_box(lat: float, lon: float) -> bool:
    """prcoords' rough box for China, where GCJ-02 applies."""
    return _CHINA_LAT[0] <= lat <= _CHINA_LAT[1] and _CHINA_LON[0] <= lon <= _CHINA_LON[1]


def _pair(coords: Any) -> tuple[float, float]:
    """prcoords answers a `Coords(lat, lon)` namedtuple."""
    return float(coords[0]), float(coords[1])


def _wgs_to_gcj(lat: float, lon: float) -> tuple[float, float]:
    if not in_china_box(lat, lon):
        return lat, lon
    return _pair(prcoords.wgs_gcj((lat, lon), False))


def _gcj_to_bd(lat: float, lon: float) -> tuple[float, float]:
    return _pair(prcoords.gcj_bd((lat, lon)))


def _gcj_to_wgs(lat: float, lon: float) -> tuple[float, float]:
    if not in_china_box(lat, lon):
        return lat, lon
    wlat, wlon = _pair(prcoords.gcj_wgs_bored((lat, lon)))
    flat, flon = _pair(prcoords.wgs_gcj((wlat, wlon), False))
    return wlat - (flat - lat), wlon - (flon - lon)


def _bd_to_gcj(lat: float, lon: float) -> tuple[float, float]:
    glat, glon = _pair(prcoords.bd_gcj_bored((lat, lon)))
    blat, blon = _gcj_to_bd(glat, glon)
    return glat - (blat - lat), glon - (blon - lon)


def to_wgs84(lat: float, lon: float, crs: Crs) -> tuple[float, float]:
    """Convert a validated point in `crs` to WGS-84 `(lat, lon)`; `InvalidCoordinates` when out of range."""
    lat, lon = validate_lat_lon(lat, lon)
    if crs == "wgs84":
        return lat, lon
    if crs == "gcj02":
        out = _gcj_to_wgs(lat, lon)
    elif crs == "bd09":
        out = _gcj_to_wgs(*_bd_to_gcj(lat, lon))
    else:
        raise InvalidCoordinates("crs must be one of wgs84, gcj02, bd09")
    return validate_lat_lon(*out)


def from_wgs84(lat: float, lon: float, crs: Crs) -> tuple[float, float]:
    """Convert a WGS-84 point to `crs` (for maps drawn with Amap/Baidu tiles, and for tests)."""
    lat, lon = validate_lat_lon(lat, lon)
    if crs == "wgs84":
        return lat, lon
    if crs == "gcj02":
        return _wgs_to_gcj(lat, lon)
    if crs == "bd09":
        return _gcj_to_bd(*_wgs_to_gcj(lat, lon))
    raise InvalidCoordinates("crs must be one of wgs84, gcj02, bd09")


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres on a sphere of the mean Earth radius (error ≤ 0.5 % against WGS-84)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlambda = math.radians(lon2 - lon1)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))
