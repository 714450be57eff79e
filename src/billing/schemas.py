"""Billing's request and response bodies. Money is integer fen; months are `YYYY-MM` in Asia/Shanghai."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from billing.rules import format_month, parse_month
from kernel.fields import CountyCode
from orders.schemas import Category


def _month(value: str) -> str:
    return format_month(parse_month(value))


Month = Annotated[str, AfterValidator(_month), Field(description="YYYY-MM (Asia/Shanghai)",
                                                     json_schema_extra={"pattern": "^[0-9]{4}-[0-9]{2}$"})]
ServiceCode = Annotated[str, Field(min_length=1, max_length=40)]


class ProgramRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    category: Category | None = None
    assessment_level_min: int | None = Field(default=None, ge=0, le=4)
    min_age: int | None = Field(default=None, ge=0, le=150)
    monthly_quota_fen: int = Field(ge=0, le=10_000_000_00)
    copay_percent: int = Field(ge=0, le=100)


class ProgramCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=2, max_length=200)
    region_code: CountyCode
    period_start: date
    period_end: date
    budget_fen: int = Field(ge=0, le=10**15)
    covered_services: list[ServiceCode] = Field(min_length=1, max_length=100)
    rules: list[ProgramRule] = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _period_ordered(self) -> ProgramCreate:
        if self.period_end < self.period_start:
            raise ValueError("period_end must not be before period_start")
        return self


class Program(BaseModel):
    id: str
    name: str
    region_code: str
    period_start: date
    period_end: date
    budget_fen: int
    reserved_fen: int
    used_fen: int
    remaining_fen: int
    covered_services: list[str]
    rules: list[ProgramRule]
    created_at: str


class ContractCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    organization_id: str = Field(min_length=1, max_length=64)
    program_id: str | None = Field(default=None, max_length=64)
    region_codes: list[CountyCode] = Field(min_length=1, max_length=200)
    service_codes: list[ServiceCode] = Field(min_length=1, max_length=100)
    valid_from: date
    valid_to: date

    @model_validator(mode="after")
    def _validity_ordered(self) -> ContractCreate:
        if self.valid_to < self.valid_from:
            raise ValueError("valid_to must not be before valid_from")
        return self


class Contract(BaseModel):
    id: str
    organization_id: str
    program_id: str | None
    region_codes: list[str]
    service_codes: list[str]
    valid_from: date
    valid_to: date
    created_at: str


class Entitlement(BaseModel):
    program_id: str
    program_name: str
    month: str
    quota_fen: int
    reserved_fen: int
    used_fen: int
    remaining_fen: int
    copay_percent: int


class SettlementCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    program_id: str = Field(min_length=1, max_length=64)
    organization_id: str = Field(min_length=1, max_length=64)
    month: Month


class SettlementTotals(BaseModel):
    line_count: int
    adjustment_count: int
    exclusion_count: int
    price_fen: int
    quota_fen: int
    copay_fen: int


class SettlementLine(BaseModel):
    kind: Literal["capture", "adjustment", "exclusion"]
    visit_id: str
    order_id: str
    elder_id: str
    caregiver_id: str
    service_code: str
    service_month: str
    served_at: str | None
    price_fen: int
    quota_fen: int
    copay_fen: int
    reason: str | None = None


class Settlement(BaseModel):
    id: str
    program_id: str
    organization_id: str
    month: str
    status: Literal["draft", "approved"]
    totals: SettlementTotals
    drafted_at: str
    approved_at: str | None
    approved_by: str | None
    lines: list[SettlementLine] = Field(default_factory=list, description="captures and adjustments, this page")
    exclusions: list[SettlementLine] = Field(default_factory=list, description="exclusions with reasons, this page")
    next_cursor: str | None = None
