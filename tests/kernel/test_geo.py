from __future__ import annotations

import math
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.geo import (
    CRS_VALUES,
    InvalidCoordinates,
    from_wgs84,
    haversine_m,
    in_china_box,
    is_valid_latitude,
    is_valid_longitude,
    to_wgs84,
    validate_lat_lon,
)

# Tiananmen, WGS-84.
TIANANMEN = (39.9042, 116.4074)


def test_crs_values() -> None:
    assert CRS_VALUES == ("wgs84", "gcj02", "bd09")


def test_gcj02_offset_is_hundreds_of_metres_in_china_and_none_outside() -> None:
    gcj = from_wgs84(*TIANANMEN, "gcj02")
    assert 300 < haversine_m(*TIANANMEN, *gcj) < 800
    bd = from_wgs84(*TIANANMEN, "bd09")
    assert 800 < haversine_m(*TIANANMEN, *bd) < 1500
    paris = (48.8566, 2.3522)
    assert from_wgs84(*paris, "gcj02") == paris
    assert to_wgs84(*paris, "gcj02") == paris


def test_to_wgs84_inverts_known_point() -> None:
    for crs in CRS_VALUES:
        back = to_wgs84(*from_wgs84(*TIANANMEN, crs), crs)
        assert haversine_m(*TIANANMEN, *back) < 0.001


def test_wgs84_is_identity() -> None:
    assert to_wgs84(39.9, 116.4, "wgs84") == (39.9, 116.4)
    assert to_wgs84(-33, 151, "wgs84") == (-33.0, 151.0)


def test_no_warnings_from_prcoords() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        to_wgs84(48.8566, 2.3522, "gcj02")
        to_wgs84(48.8566, 2.3522, "bd09")
        from_wgs84(48.8566, 2.3522, "bd09")
        to_wgs84(*TIANANMEN, "bd09")


@pytest.mark.parametrize(
    ("lat", "lon"),
    [(90.0001, 0), (-91, 0), (0, 180.5), (0, -181), (math.nan, 0), (0, math.inf), (-math.inf, 0)],
)
def test_range_validation(lat: float, lon: float) -> None:
    assert not (is_valid_latitude(lat) and is_valid_longitude(lon))
    for crs in CRS_VALUES:
        with pytest.raises(InvalidCoordinates) as info:
            to_wgs84(lat, lon, crs)
        assert info.value.code == "invalid_coordinates"
        assert info.value.status == 422
    with pytest.raises(InvalidCoordinates):
        validate_lat_lon(lat, lon)


def test_bounds_and_types() -> None:
    assert validate_lat_lon(90, -180) == (90.0, -180.0)
    assert validate_lat_lon(-90, 180) == (-90.0, 180.0)
    assert not is_valid_latitude(True)
    assert not is_valid_longitude("1")  # type: ignore[arg-type]


def test_unknown_crs() -> None:
    with pytest.raises(InvalidCoordinates):
        to_wgs84(39.9, 116.4, "cgcs2000")  # type: ignore[arg-type]


def test_china_box() -> None:
    assert in_china_box(*TIANANMEN)
    assert in_china_box(18.25, 109.5)  # Sanya
    assert not in_china_box(48.8566, 2.3522)


def test_haversine() -> None:
    assert haversine_m(*TIANANMEN, *TIANANMEN) == 0
    # one degree of latitude on the mean sphere
    assert haversine_m(0, 0, 1, 0) == pytest.approx(111_195, abs=1)
    # Beijing – Shanghai, about 1,067 km
    assert haversine_m(39.9042, 116.4074, 31.2304, 121.4737) == pytest.approx(1_067_300, rel=0.002)
    # antipodes do not fail on rounding
    assert haversine_m(0, 0, 0, 180) == pytest.approx(math.pi * 6_371_008.8)
    assert haversine_m(10, 20, 30, 40) == haversine_m(30, 40, 10, 20)


# China's box as prcoords draws it, kept 0.05° inside its edges.
china_lat = st.floats(min_value=0.8293 + 0.05, max_value=55.8271 - 0.05)
china_lon = st.floats(min_value=72.004 + 0.05, max_value=137.8347 - 0.05)


@given(china_lat, china_lon)
def test_gcj02_round_trip_within_centimetres(lat: float, lon: float) -> None:
    gcj = from_wgs84(lat, lon, "gcj02")
    back = to_wgs84(*gcj, "gcj02")
    assert haversine_m(lat, lon, *back) < 0.02  # measured: under 0.03 mm


@given(china_lat, china_lon)
def test_bd09_round_trip_within_centimetres(lat: float, lon: float) -> None:
    bd = from_wgs84(lat, lon, "bd09")
    back = to_wgs84(*bd, "bd09")
    assert haversine_m(lat, lon, *back) < 0.02


@given(
    st.floats(min_value=-90, max_value=90),
    st.floats(min_value=-180, max_value=180),
    st.floats(min_value=-90, max_value=90),
    st.floats(min_value=-180, max_value=180),
)
def test_haversine_is_symmetric_and_bounded(lat1: float, lon1: float, lat2: float, lon2: float) -> None:
    d = haversine_m(lat1, lon1, lat2, lon2)
    assert 0 <= d <= math.pi * 6_371_008.8 + 1e-6
    assert d == pytest.approx(haversine_m(lat2, lon2, lat1, lon1), abs=1e-6)
