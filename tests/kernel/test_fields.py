from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from kernel.fields import (
    ContactPhone,
    CountyCode,
    Crs,
    GeoPoint,
    Latitude,
    Longitude,
    MobilePhone,
    ResidentIdNumber,
    TownCode,
    VillageCode,
)
from kernel.geo import from_wgs84, haversine_m


class ElderIn(BaseModel):
    id_number: ResidentIdNumber
    phone: MobilePhone
    contact_phone: ContactPhone
    region_code: CountyCode
    town_code: TownCode | None = None
    village_code: VillageCode | None = None
    lat: Latitude
    lon: Longitude
    crs: Crs = "wgs84"
    home: GeoPoint | None = None


GOOD: dict[str, Any] = {
    "id_number": "150625195001011234",
    "phone": "139-1234-5678",
    "contact_phone": "0477-8123456",
    "region_code": "150625",
    "lat": 39.8,
    "lon": 109.9,
}


def error_of(**changes: Any) -> dict[str, Any]:
    with pytest.raises(ValidationError) as info:
        ElderIn.model_validate({**GOOD, **changes})
    errors = info.value.errors()
    assert len(errors) == 1, errors
    return dict(errors[0])


def test_good_input_is_normalised() -> None:
    elder = ElderIn.model_validate({**GOOD, "id_number": "15062519470312006x", "town_code": "150625001"})
    assert elder.id_number == "15062519470312006X"
    assert elder.phone == "+8613912345678"
    assert elder.contact_phone == "+864778123456"
    assert elder.region_code == "150625"
    assert elder.town_code == "150625001"
    assert elder.crs == "wgs84"


def test_old_region_code_in_id_accepted() -> None:
    assert ElderIn.model_validate({**GOOD, "id_number": "152726193806150025"}).id_number == "152726193806150025"


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("id_number", "150625195001011235", "invalid_id_number"),
        ("id_number", "15062519500101123", "invalid_id_number"),
        ("id_number", 150625195001011234, "invalid_id_number"),
        ("id_number", None, "invalid_id_number"),
        ("id_number", "150625195002301233", "invalid_id_birth_date"),
        ("id_number", "99999919500101123X", "unknown_id_region"),
        ("phone", "010-12345678", "invalid_phone"),
        ("phone", "+1 650 253 0000", "invalid_phone"),
        ("phone", 13912345678, "invalid_phone"),
        ("contact_phone", "12345678", "invalid_phone"),
        ("contact_phone", "400-812-3123", "invalid_phone"),
        ("region_code", "999999", "invalid_region_code"),
        ("region_code", "15062", "invalid_region_code"),
        ("region_code", 150625, "invalid_region_code"),
        ("town_code", "150625000", "invalid_region_code"),
        ("town_code", "150625", "invalid_region_code"),
        ("village_code", "150625001", "invalid_region_code"),
        ("village_code", "999999001201", "invalid_region_code"),
        ("lat", 91, "invalid_coordinates"),
        ("lat", "north", "invalid_coordinates"),
        ("lat", True, "invalid_coordinates"),
        ("lat", float("nan"), "invalid_coordinates"),
        ("lon", -180.01, "invalid_coordinates"),
        ("lon", float("inf"), "invalid_coordinates"),
        ("lon", None, "invalid_coordinates"),
        ("crs", "GCJ-02", "invalid_coordinates"),
        ("crs", "cgcs2000", "invalid_coordinates"),
        ("home", {"lat": 0, "lon": 200}, "invalid_coordinates"),
        ("home", {"lat": 0, "lon": 0, "crs": "wgs-84"}, "invalid_coordinates"),
    ],
)
def test_error_types_are_the_service_codes(field: str, value: Any, code: str) -> None:
    error = error_of(**{field: value})
    assert error["type"] == code
    assert error["loc"][0] == field
    assert isinstance(error["msg"], str) and error["msg"]
    if isinstance(value, str | int) and len(str(value)) >= 6:
        assert str(value) not in error["msg"]
        assert str(value)[:6] not in error["msg"] or field != "id_number"


def test_id_messages_never_contain_the_number() -> None:
    for number in ["150625195001011235", "150625195002301233", "99999919500101123X"]:
        error = error_of(id_number=number)
        assert number not in error["msg"]
        assert number[6:14] not in error["msg"]


def test_json_input() -> None:
    body = json.dumps({**GOOD, "home": {"lat": 39.9, "lon": 116.4, "crs": "gcj02"}})
    elder = ElderIn.model_validate_json(body)
    assert elder.home is not None and elder.home.crs == "gcj02"
    with pytest.raises(ValidationError) as info:
        ElderIn.model_validate_json(body.replace("39.9", "NaN"))
    assert info.value.errors()[0]["type"] == "invalid_coordinates"


def test_geo_point_default_and_conversion() -> None:
    point = GeoPoint(lat=39.9042, lon=116.4074)
    assert point.crs == "wgs84"
    assert point.wgs84 == (39.9042, 116.4074)
    gcj = from_wgs84(39.9042, 116.4074, "gcj02")
    converted = GeoPoint.model_validate({"lat": gcj[0], "lon": gcj[1], "crs": "gcj02"})
    assert haversine_m(39.9042, 116.4074, *converted.to_wgs84()) < 0.001
    bd = from_wgs84(39.9042, 116.4074, "bd09")
    assert haversine_m(39.9042, 116.4074, *GeoPoint(lat=bd[0], lon=bd[1], crs="bd09").wgs84) < 0.001


def test_json_schema() -> None:
    schema = ElderIn.model_json_schema()
    props = schema["properties"]
    assert props["id_number"]["type"] == "string"
    assert props["lat"]["minimum"] == -90 and props["lat"]["maximum"] == 90
    assert props["crs"]["enum"] == ["wgs84", "gcj02", "bd09"]
    assert props["crs"]["default"] == "wgs84"
    geo = schema["$defs"]["GeoPoint"]
    assert geo["required"] == ["lat", "lon"]


@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True))
def test_geo_point_accepts_exactly_the_valid_range(lat: float, lon: float) -> None:
    valid = -90 <= lat <= 90 and -180 <= lon <= 180  # False for NaN; inf is out of range
    try:
        point = GeoPoint(lat=lat, lon=lon)
    except ValidationError as exc:
        assert not valid
        assert {e["type"] for e in exc.errors()} == {"invalid_coordinates"}
    else:
        assert valid
        assert point.wgs84 == (lat, lon)
