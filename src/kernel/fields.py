"""Pydantic v2 field types for request schemas: resident IDs, phones, region codes, coordinates.

Every failure, including a wrong JSON type, is a `PydanticCustomError` whose type is the service's error code
(`invalid_id_number`, `invalid_id_birth_date`, `unknown_id_region`, `invalid_phone`, `invalid_region_code`,
`invalid_coordinates`, `invalid_time`); messages are short English and never contain the offending value. Note that
pydantic's own error records still carry the raw `input`: the HTTP error handler must not echo it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, Field, ValidationError, ValidatorFunctionWrapHandler, WrapValidator
from pydantic_core import PydanticCustomError

from kernel.geo import Crs as _CrsLiteral
from kernel.geo import is_valid_latitude, is_valid_longitude, to_wgs84
from kernel.phones import InvalidPhone, normalise_contact_phone, normalise_mobile
from kernel.regions import is_county_code, is_town_code, is_village_code
from kernel.resident_id import InvalidResidentId, parse_resident_id

T = TypeVar("T")


def _wrapped(code: str, message: str, check: Callable[[Any], T], *, reject_bool: bool = False) -> WrapValidator:
    """Run the inner (type) validation, then `check`; a type failure becomes `PydanticCustomError(code, ...)`.

    `check` may itself raise `PydanticCustomError` to give a more precise code or message.
    """

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> T:
        if reject_bool and isinstance(value, bool):  # pydantic's lax float would take True as 1.0
            raise PydanticCustomError(code, message)
        try:
            inner = handler(value)
        except ValidationError:
            raise PydanticCustomError(code, message) from None
        return check(inner)

    return WrapValidator(validate)


def _resident_id(value: str) -> str:
    try:
        return parse_resident_id(value).number
    except InvalidResidentId as exc:
        raise PydanticCustomError(exc.code, exc.message) from None


def _phone(normalise: Callable[[str], str]) -> Callable[[str], str]:
    def check(value: str) -> str:
        try:
            return normalise(value)
        except InvalidPhone as exc:
            raise PydanticCustomError("invalid_phone", exc.message) from None

    return check


def _code(predicate: Callable[[str], bool], message: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        value = value.strip()
        if not predicate(value):
            raise PydanticCustomError("invalid_region_code", message)
        return value

    return check


def _coordinate(predicate: Callable[[float], bool], message: str) -> Callable[[float], float]:
    def check(value: float) -> float:
        if not predicate(value):
            raise PydanticCustomError("invalid_coordinates", message)
        return float(value)

    return check


#: The times the service accepts: wide enough for every real window, birth and report range, narrow enough that
#: any offset arithmetic stays inside PostgreSQL's and Python's ranges (year 1 at +08:00 is year 0 in UTC).
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2100, 1, 1, tzinfo=UTC)
_TIME_MESSAGE = "must be an RFC 3339 time with a UTC offset, from 2000 to 2099"


def _time(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise PydanticCustomError("invalid_time", "time needs a UTC offset (RFC 3339)")
    try:
        in_range = EARLIEST_TIME <= value < LATEST_TIME
    except OverflowError:  # an offset pushing year 1 or 9999 outside datetime's range
        in_range = False
    if not in_range:
        raise PydanticCustomError("invalid_time", _TIME_MESSAGE)
    return value


def _same(value: T) -> T:
    return value


_COUNTY_MESSAGE = "must be a 6-digit GB/T 2260 county code"
_TOWN_MESSAGE = "must be a 9-digit town code within a known county"
_VILLAGE_MESSAGE = "must be a 12-digit village code within a known county"
_LAT_MESSAGE = "lat must be a finite number between -90 and 90"
_LON_MESSAGE = "lon must be a finite number between -180 and 180"
_CRS_MESSAGE = "crs must be one of wgs84, gcj02, bd09"

#: An 18-character resident ID number, normalised (upper-case X). Not checked against the record: see
#: `kernel.resident_id.check_matches_record`.
ResidentIdNumber = Annotated[
    str,
    _wrapped("invalid_id_number", "ID number must be a string", _resident_id),
    Field(
        description="Resident identity number (GB 11643), 18 characters",
        json_schema_extra={"pattern": "^[0-9]{17}[0-9Xx]$"},
    ),
]
#: A mainland China mobile number, normalised to E.164 (`+8613912345678`).
MobilePhone = Annotated[
    str,
    _wrapped("invalid_phone", "phone number must be a string", _phone(normalise_mobile)),
    Field(description="Mainland China mobile number; stored as E.164"),
]
#: A mainland China mobile or fixed-line (with area code) number, normalised to E.164.
ContactPhone = Annotated[
    str,
    _wrapped("invalid_phone", "phone number must be a string", _phone(normalise_contact_phone)),
    Field(description="Mainland China mobile or fixed-line number with area code; stored as E.164"),
]
#: A 6-digit GB/T 2260 code of any period (province `PP0000`, city `PPCC00` or county).
CountyCode = Annotated[
    str,
    _wrapped("invalid_region_code", _COUNTY_MESSAGE, _code(is_county_code, _COUNTY_MESSAGE)),
    Field(description="GB/T 2260 administrative division code", json_schema_extra={"pattern": "^[0-9]{6}$"}),
]
TownCode = Annotated[
    str,
    _wrapped("invalid_region_code", _TOWN_MESSAGE, _code(is_town_code, _TOWN_MESSAGE)),
    Field(description="Town (乡镇/街道) code, 9 digits", json_schema_extra={"pattern": "^[0-9]{9}$"}),
]
VillageCode = Annotated[
    str,
    _wrapped("invalid_region_code", _VILLAGE_MESSAGE, _code(is_village_code, _VILLAGE_MESSAGE)),
    Field(description="Village (村/社区) code, 12 digits", json_schema_extra={"pattern": "^[0-9]{12}$"}),
]
Latitude = Annotated[
    float,
    _wrapped("invalid_coordinates", _LAT_MESSAGE, _coordinate(is_valid_latitude, _LAT_MESSAGE), reject_bool=True),
    Field(description="Latitude in degrees", json_schema_extra={"minimum": -90, "maximum": 90}),
]
Longitude = Annotated[
    float,
    _wrapped("invalid_coordinates", _LON_MESSAGE, _coordinate(is_valid_longitude, _LON_MESSAGE), reject_bool=True),
    Field(description="Longitude in degrees", json_schema_extra={"minimum": -180, "maximum": 180}),
]
#: The datum of a `lat`/`lon` pair; give fields of this type the default `"wgs84"`.
Crs = Annotated[
    _CrsLiteral,
    _wrapped("invalid_coordinates", _CRS_MESSAGE, _same),
    Field(description="Datum of lat/lon: wgs84 (GPS), gcj02 (Amap, Tencent) or bd09 (Baidu)"),
]

#: A timezone-aware time between 2000 and 2099 (request bodies and query parameters); anything else is 422
#: `invalid_time`, never a time the database or the offset arithmetic would overflow on.
AwareTime = Annotated[
    datetime,
    _wrapped("invalid_time", _TIME_MESSAGE, _time),
    Field(description="RFC 3339 time with offset, years 2000-2099", json_schema_extra={"format": "date-time"}),
]


class GeoPoint(BaseModel):
    """`{lat, lon, crs="wgs84"}` as sent by apps and devices; `wgs84` gives the stored WGS-84 pair."""

    lat: Latitude
    lon: Longitude
    crs: Crs = "wgs84"

    def to_wgs84(self) -> tuple[float, float]:
        """The point as WGS-84 `(lat, lon)`; `InvalidCoordinates` only for BD-09 input at the antimeridian."""
        return to_wgs84(self.lat, self.lon, self.crs)

    @property
    def wgs84(self) -> tuple[float, float]:
        return self.to_wgs84()
