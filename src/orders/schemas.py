from __future__ import annotations

from datetime import date, datetime
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kernel.fields import (
    AwareTime,
    ContactPhone,
    CountyCode,
    Crs,
    Latitude,
    Longitude,
    MobilePhone,
    ResidentIdNumber,
    TownCode,
    VillageCode,
)
from orders.models import CATEGORIES
from orders.state import QueueReason

Gender = Literal["male", "female"]
Category = Literal[
    "tekun", "dibao", "gaoling", "shineng", "shizhi", "duju", "kongchao", "liushou", "jisheng_tefu", "youfu",
    "zhongdu_canji",
]
assert set(Category.__args__) == set(CATEGORIES)  # type: ignore[attr-defined]


class Preferences(BaseModel):
    model_config = ConfigDict(extra="forbid")
    caregiver_gender: Gender | None = None


class EmergencyContact(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=50)
    relation: str | None = Field(default=None, max_length=20)
    phone: ContactPhone


def _languages(values: list[str]) -> list[str]:
    out = []
    for value in values:
        code = value.strip().lower()
        if not (2 <= len(code) <= 3 and code.isascii() and code.isalpha()):
            raise ValueError(f"language {value!r} is not an ISO 639 code")
        out.append(code)
    return sorted(set(out))


class ElderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    id_number: ResidentIdNumber
    phone: MobilePhone | None = None
    gender: Gender
    birth_date: date
    address: str = Field(min_length=4, max_length=300)
    lat: Latitude
    lon: Longitude
    crs: Crs = "wgs84"
    region_code: CountyCode
    town_code: TownCode | None = None
    village_code: VillageCode | None = None
    categories: list[Category] = Field(default_factory=list)
    assessment_level: int = Field(default=0, ge=0, le=4)
    languages: list[str] = Field(default_factory=lambda: ["zh"], max_length=10)
    preferences: Preferences = Field(default_factory=Preferences)
    emergency_contacts: list[EmergencyContact] = Field(default_factory=list, max_length=10)

    @field_validator("languages")
    @classmethod
    def _check_languages(cls, languages: list[str]) -> list[str]:
        return _languages(languages)

    @model_validator(mode="after")
    def _codes_nest(self) -> ElderCreate:
        if self.town_code and not self.town_code.startswith(self.region_code):
            raise ValueError("town_code must lie in region_code")
        if self.village_code and not (self.town_code and self.village_code.startswith(self.town_code)):
            raise ValueError("village_code must lie in town_code")
        return self


class ElderUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["active", "deceased", "moved"] | None = None
    phone: MobilePhone | None = None
    address: str | None = Field(default=None, min_length=4, max_length=300)
    lat: Latitude | None = None
    lon: Longitude | None = None
    crs: Crs = "wgs84"
    categories: list[Category] | None = None
    assessment_level: int | None = Field(default=None, ge=0, le=4)
    languages: list[str] | None = None
    preferences: Preferences | None = None
    emergency_contacts: list[EmergencyContact] | None = None

    @field_validator("languages")
    @classmethod
    def _check_languages(cls, languages: list[str] | None) -> list[str] | None:
        return None if languages is None else _languages(languages)

    @model_validator(mode="after")
    def _position_whole(self) -> ElderUpdate:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon change together")
        return self


class MaskedContact(BaseModel):
    name: str
    relation: str | None
    phone: str


class Elder(BaseModel):
    """An elder as staff lists show it: personal numbers masked (unmasking is `POST /v1/elders/{id}/reveal`)."""

    id: str
    name: str
    id_number: str
    phone: str | None
    gender: Gender
    birth_date: date
    address: str
    lat: float = Field(description="the home's ~1 km cell (0.01°), not the door: the exact point is revealed "
                                   "(`home`) or shown to the caregiver of an active visit")
    lon: float = Field(description="the home's ~1 km cell (0.01°)")
    region_code: str
    town_code: str | None
    village_code: str | None
    categories: list[str]
    assessment_level: int
    languages: list[str]
    preferences: Preferences
    emergency_contacts: list[MaskedContact]
    status: str
    created_at: str


RevealField = Literal["id_number", "phone", "address", "emergency_contacts", "home"]


class RevealRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=4, max_length=500)
    fields: list[RevealField] = Field(default_factory=lambda: list(get_args(RevealField)), min_length=1,
                                      description="which to unmask; all of them when left out")


class HomePoint(BaseModel):
    lat: float
    lon: float


class Revealed(BaseModel):
    id_number: str | None = None
    phone: str | None = None
    address: str | None = None
    home: HomePoint | None = None
    emergency_contacts: list[EmergencyContact] | None = None


class Service(BaseModel):
    code: str
    name: str
    unit: Literal["visit", "hour"]
    price_fen: int
    required_skill: str | None
    min_certificate_level: str
    default_duration_min: int


class Window(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: AwareTime | None = None
    end: AwareTime | None = None


class OrderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    elder_id: str
    service_code: str = Field(min_length=1, max_length=40)
    window: Window | Literal["asap"] = "asap"
    priority: Literal["normal", "urgent"] = "normal"
    notes: str | None = Field(default=None, max_length=1000)
    channel: Literal["app", "hotline", "device", "caregiver"] = "app"


class HistoryEntry(BaseModel):
    status: str
    event: str
    at: datetime
    actor: str
    reason: str | None = None


class OrderListItem(BaseModel):
    """An order as lists show it; the single-order read adds its `history`."""

    id: str
    elder_id: str
    service_code: str
    region_code: str
    status: str
    priority: Literal["normal", "urgent"]
    channel: str
    window: Window | None
    asap: bool
    scheduled: bool
    planned_minutes: int
    notes: str | None
    price_fen: int
    quota_fen: int
    copay_fen: int
    program_id: str | None
    assigned_caregiver_id: str | None
    visit_id: str | None
    created_at: datetime


class Order(OrderListItem):
    history: list[HistoryEntry] = Field(default_factory=list)


class QueueItem(BaseModel):
    """An order waiting in the dispatcher's queue (`unfulfilled`) and why it is there."""

    order: OrderListItem
    reason: QueueReason = Field(description="nobody_in_reach: no qualified caregiver within reach at dispatch; "
                                            "nobody_accepted: every qualified caregiver declined or let it expire; "
                                            "assigned_caregiver_declined / assigned_caregiver_expired: the caregiver "
                                            "a dispatcher chose said no; hotline_callback: a call-back request")
    detail: str | None = Field(description="the reason as recorded in the order's history")
    queued_at: datetime = Field(description="when the order entered the queue")


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500)


class AssignRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    caregiver_id: str
