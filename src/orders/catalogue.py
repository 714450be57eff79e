"""The national home-care service categories (居家养老服务), with the prices vnh seeds and the skills they need.

Prices are in fen, typical of government-purchased home-care tenders in Inner Mongolia and comparable regions
(hourly services per hour, others per visit). Operators adjust them with a migration or the admin API later;
the codes are stable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Unit = Literal["visit", "hour"]

SKILLS: dict[str, str] = {
    "meal": "助餐",
    "bathing": "助浴",
    "cleaning": "助洁/家政",
    "personal_care": "生活照料",
    "escort": "助行/陪诊",
    "nursing": "护理",
    "rehab": "康复",
    "companionship": "精神慰藉",
    "visiting": "巡访探访",
}


@dataclass(frozen=True)
class CatalogueEntry:
    code: str
    name: str
    unit: Unit
    price_fen: int
    required_skill: str | None
    min_certificate_level: str
    default_duration_min: int


CATALOGUE: tuple[CatalogueEntry, ...] = (
    CatalogueEntry("meal_assist", "助餐（送餐上门）", "visit", 1500, "meal", "none", 30),
    CatalogueEntry("bathing", "助浴", "visit", 8000, "bathing", "junior", 60),
    CatalogueEntry("cleaning", "助洁", "hour", 4000, "cleaning", "none", 120),
    CatalogueEntry("housekeeping", "家政服务", "hour", 4500, "cleaning", "none", 120),
    CatalogueEntry("daily_care", "生活照料", "hour", 4500, "personal_care", "junior", 60),
    CatalogueEntry("walking_assist", "助行", "hour", 4000, "escort", "none", 60),
    CatalogueEntry("medical_escort", "助医陪诊", "hour", 6000, "escort", "junior", 180),
    CatalogueEntry("rehab_nursing", "康复护理", "hour", 9000, "rehab", "senior", 60),
    CatalogueEntry("home_nursing", "上门医疗护理", "visit", 12000, "nursing", "medical", 45),
    CatalogueEntry("health_check", "上门健康监测", "visit", 4000, "nursing", "junior", 30),
    CatalogueEntry("companionship", "精神慰藉", "hour", 3000, "companionship", "none", 60),
    CatalogueEntry("welfare_visit", "巡访探访", "visit", 2000, "visiting", "none", 30),
    CatalogueEntry("respite_care", "喘息服务", "hour", 5000, "personal_care", "intermediate", 240),
    CatalogueEntry("family_bed_care", "家庭养老床位照护", "visit", 6000, "personal_care", "intermediate", 60),
    # No skill filter: the K nearest on-duty caregivers are offered an emergency at once (decisions §3).
    CatalogueEntry("emergency_response", "紧急救援", "visit", 0, None, "none", 30),
    # Goes to the dispatcher queue; never offered to caregivers.
    CatalogueEntry("hotline_callback", "热线回访", "visit", 0, None, "none", 10),
)
