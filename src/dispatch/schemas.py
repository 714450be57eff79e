from __future__ import annotations

from datetime import datetime, time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kernel.fields import CountyCode, GeoPoint, MobilePhone
from orders.catalogue import SKILLS

CertificateLevel = Literal["none", "junior", "intermediate", "senior", "medical"]
Gender = Literal["male", "female"]
LanguageCode = str


class OrganizationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=2, max_length=200)
    region_code: CountyCode
    contracted_programs: list[str] = Field(default_factory=list)


class Organization(BaseModel):
    id: str
    name: str
    region_code: str
    created_at: str


class Shift(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weekday: int = Field(ge=1, le=7, description="ISO weekday, 1 = Monday")
    start: time
    end: time

    @model_validator(mode="after")
    def _end_after_start(self) -> Shift:
        if self.end <= self.start:
            raise ValueError("shift end must be after its start (split overnight shifts in two)")
        return self


def _languages(values: list[str]) -> list[str]:
    cleaned = []
    for value in values:
        code = value.strip().lower()
        if not (2 <= len(code) <= 3 and code.isascii() and code.isalpha()):
            raise ValueError(f"language {value!r} is not an ISO 639 code")
        cleaned.append(code)
    return sorted(set(cleaned))


class CaregiverCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    organization_id: str
    name: str = Field(min_length=1, max_length=100)
    phone: MobilePhone
    gender: Gender
    languages: list[str] = Field(default_factory=lambda: ["zh"], max_length=10)
    skills: list[str] = Field(min_length=1, max_length=len(SKILLS))
    certificate_level: CertificateLevel = "none"
    home_base: GeoPoint | None = None
    shifts: list[Shift] = Field(default_factory=list, max_length=50)
    username: str = Field(min_length=3, max_length=64)
    password: str = Field(min_length=1, max_length=200)

    @field_validator("languages")
    @classmethod
    def _check_languages(cls, languages: list[str]) -> list[str]:
        return _languages(languages)

    @field_validator("skills")
    @classmethod
    def _known_skills(cls, skills: list[str]) -> list[str]:
        unknown = sorted(set(skills) - set(SKILLS))
        if unknown:
            raise ValueError(f"unknown skills {unknown}; known: {sorted(SKILLS)}")
        return sorted(set(skills))


class CaregiverUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=100)
    phone: MobilePhone | None = None
    languages: list[str] | None = None
    skills: list[str] | None = None
    certificate_level: CertificateLevel | None = None
    home_base: GeoPoint | None = None
    shifts: list[Shift] | None = None
    active: bool | None = None

    @field_validator("languages")
    @classmethod
    def _check_languages(cls, languages: list[str] | None) -> list[str] | None:
        return None if languages is None else _languages(languages)

    @field_validator("skills")
    @classmethod
    def _known_skills(cls, skills: list[str] | None) -> list[str] | None:
        if skills is None:
            return None
        return CaregiverCreate._known_skills(skills)


class Point(BaseModel):
    lat: float
    lon: float


class Caregiver(BaseModel):
    id: str
    organization_id: str
    name: str
    phone: str = Field(description="masked: 139****5678")
    gender: Gender
    languages: list[str]
    skills: list[str]
    certificate_level: CertificateLevel
    home_base: Point | None
    shifts: list[Shift]
    active: bool
    user_id: str | None = None
    created_at: str


class DutyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    on_duty: bool


class Duty(BaseModel):
    caregiver_id: str
    on_duty: bool


class OfferElder(BaseModel):
    name: str = Field(description="masked until accepted")
    address: str = Field(description="county level until accepted")
    phone: str | None = Field(default=None, description="only once accepted")
    lat: float | None = Field(default=None, description="the exact home, only once accepted")
    lon: float | None = Field(default=None, description="the exact home, only once accepted")


class OfferOut(BaseModel):
    id: str
    order_id: str
    status: Literal["pending", "accepted", "declined", "expired", "withdrawn"]
    kind: str
    expires_at: datetime
    service_code: str
    priority: str
    distance_m: float | None
    window_start: datetime
    window_end: datetime
    elder: OfferElder
    visit_id: str | None = None


class DeclineRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=500)


class CandidateOut(BaseModel):
    caregiver_id: str
    organization_id: str
    score: float
    distance_m: float
    reasons: dict[str, float]
    rating: float | None
    visits_today: int
    served_before: bool


class Candidates(BaseModel):
    order_id: str
    considered: int
    items: list[CandidateOut]


class PositionOut(BaseModel):
    caregiver_id: str
    organization_id: str
    name: str
    lat: float | None
    lon: float | None
    position_at: datetime | None
    age_s: float | None
    stale: bool
    busy: bool
