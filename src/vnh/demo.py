"""A living demo banner: organisations, caregivers, elders, devices and logins, made through the real services.

`seed_demo` builds, from a seeded `random.Random`, a reproducible world around the towns of one reference region
(`demo_places.json`, a subset of the project's `shared/data/regions.json`: real GB/T 2260 and NBS town codes with
sourced WGS-84 town centres). Everything else is invented and looks real: names, mobile numbers valid per
`phonenumbers`, resident ID numbers with correct check digits (most with the county's current code, some with its
pre-2001 code), villages, communities and house numbers (no `village_code` is set: the names are made up).

Every row goes through the domain services (`create_organization`, `create_caregiver`, `create_elder`,
`register_device`, `create_user`), so the audit log and the outbox get their rows as in production.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from functools import cache
from importlib import resources
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from stdnum.cn import ric

from devices.models import Device
from devices.registry import register_device
from devices.schemas import DeviceCreate, DeviceKind
from dispatch.models import Caregiver, Organization
from dispatch.registry import create_caregiver, create_organization
from dispatch.schemas import CaregiverCreate, OrganizationCreate, Shift
from kernel.auth import User, create_user
from kernel.authz import Access, Role
from kernel.fields import GeoPoint
from kernel.phones import InvalidPhone, normalise_contact_phone, normalise_mobile
from kernel.runtime import Runtime
from orders.catalogue import SKILLS
from orders.elders import create_elder
from orders.models import Elder
from orders.schemas import Category, ElderCreate, EmergencyContact, Preferences

DEMO_PASSWORD = "vnh-demo-2026"  # noqa: S105  (the documented, well-known password of the demo logins)
ADMIN_USERNAME = "demo-admin"
STAFF_LOGINS: tuple[tuple[str, Role], ...] = (
    ("demo-dispatcher", "dispatcher"), ("demo-auditor", "auditor"), ("demo-finance", "finance"),
)
FAMILY_USERNAME = "demo-family"
ORGANISATIONS = 3
CAREGIVERS = 50
ELDERS = 300
ELDERS_PER_TRANSACTION = 100
DEVICE_TOKENS_KEPT = 3  # per device kind, for the device simulator

Gender = Literal["male", "female"]
Progress = Callable[[str], None]

_SEED_ACCESS = Access.system("demo-seed")


@dataclass(frozen=True)
class DemoSummary:
    """What the demo holds. `device_tokens` (device id → token, a few per kind) is for the device simulator only:
    callers must not print or log it; it is empty when the demo already existed (tokens are shown once)."""

    region_code: str
    organisations: int
    caregivers: int
    elders: int
    devices: int
    logins: tuple[str, ...]
    password: str
    created: bool
    device_tokens: Mapping[str, str] = field(default_factory=dict, repr=False)


class DemoSeedInterrupted(RuntimeError):
    """Demo logins exist but the demo admin does not: an earlier seeding stopped half-way."""


# --- reference places -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Town:
    code: str
    name: str
    kind: str  # 镇, 苏木, 乡, 街道
    lat: float
    lon: float


@dataclass(frozen=True)
class Region:
    code: str
    name: str
    province: str
    city: str
    city_code: str
    former_codes: tuple[str, ...]
    towns: tuple[Town, ...]  # the seat first, when the region names one
    has_seat: bool

    @property
    def address_prefix(self) -> str:
        return f"{self.province}{self.city}{self.name}"


@cache
def _places() -> dict[str, Any]:
    raw = resources.files("vnh").joinpath("demo_places.json").read_text(encoding="utf-8")
    places: dict[str, Any] = json.loads(raw)
    return places


def demo_region_codes() -> tuple[str, ...]:
    return tuple(r["code"] for r in _places()["regions"])


def load_region(region_code: str) -> Region:
    """A reference region with its towns that have coordinates; ValueError for a region the demo does not know."""
    for r in _places()["regions"]:
        if r["code"] != region_code:
            continue
        towns = [Town(t["code"], t["name"], t["kind"], float(t["lat"]), float(t["lon"]))
                 for t in r["towns"] if t.get("lat") is not None and t.get("lon") is not None]
        if not towns:
            raise ValueError(f"region {region_code} has no town with coordinates")
        towns.sort(key=lambda t: t.name != r.get("seat"))  # stable: the seat first, the rest in code order
        return Region(code=r["code"], name=r["name"], province=r["province"],
                      city=r["parent"]["name"].split(" ")[0], city_code=r["parent"]["code"],
                      former_codes=tuple(r.get("former_codes", ())), towns=tuple(towns),
                      has_seat=towns[0].name == r.get("seat"))
    raise ValueError(f"no demo places for region {region_code}; known: {', '.join(demo_region_codes())}")


# --- name, number and place generators ------------------------------------------------------------------------------

# Surnames roughly by frequency (the first ones repeated so they come up more often).
_SURNAMES = (
    "王王王李李李张张张刘刘刘陈陈杨杨赵赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董程曹袁邓许傅沈曾彭吕"
    "苏卢蒋蔡贾丁魏薛叶阎余潘杜戴夏钟汪田任姜范方石姚谭邹熊金陆郝孔白崔康毛邱秦江史顾侯邵孟万段钱汤尹常武"
    "乔贺"
)
_ELDER_GIVEN: dict[Gender, tuple[str, ...]] = {
    "male": ("建国", "国庆", "建华", "志强", "德明", "振华", "福生", "长青", "国华", "文华", "明亮", "玉林", "宝山",
             "永福", "树林", "金山", "春生", "学文", "兴旺", "光明", "广才", "有福", "存良", "占奎", "满仓", "福贵",
             "来喜", "根柱", "二虎", "志远", "俊", "海", "忠", "德", "才", "贵", "生", "武"),
    "female": ("秀英", "桂英", "秀兰", "玉兰", "桂兰", "淑珍", "凤英", "玉珍", "秀珍", "翠花", "兰英", "凤兰", "淑英",
               "玉梅", "桂芳", "秀梅", "桂珍", "金花", "素芬", "春梅", "彩霞", "俊英", "爱华", "美兰", "招娣", "润梅",
               "改花", "拉娣", "英", "兰", "芳", "珍", "梅", "霞"),
}
_YOUNGER_GIVEN: dict[Gender, tuple[str, ...]] = {
    "male": ("伟", "强", "磊", "军", "勇", "涛", "斌", "鹏", "超", "志刚", "海军", "建军", "永强", "晓东", "宏伟",
             "俊杰", "文博", "浩", "亮", "凯", "小龙", "二军", "建平", "利军"),
    "female": ("丽", "娟", "敏", "静", "艳", "霞", "红梅", "晓燕", "丽娟", "海燕", "春燕", "秀娟", "慧", "婷婷", "雪梅",
               "美玲", "晓红", "玉霞", "建英", "丽萍", "小芳", "燕", "丽华", "艳芳", "晓丽", "彩云"),
}


@dataclass(frozen=True)
class _Minority:
    """A regional language besides Mandarin: how common it is, and names its speakers commonly carry."""

    language: str
    elder_share: float
    caregiver_share: float  # of caregivers who also speak it
    monolingual_share: float  # of elders who speak it, those without Mandarin
    given: Mapping[Gender, tuple[str, ...]]
    surnames: str  # "" when the given name is used alone
    separator: str = ""


_MONGOLIAN: dict[Gender, tuple[str, ...]] = {
    "male": ("巴特尔", "额尔敦", "宝音", "朝鲁", "苏和", "阿拉坦", "巴图", "孟和", "吉日木图", "那顺", "布和", "特木尔",
             "格日勒图", "哈斯", "达来", "旺其格"),
    "female": ("其其格", "乌云", "斯琴", "娜仁花", "图雅", "萨仁", "敖登", "乌日娜", "高娃", "托娅", "塔娜", "琪琪格",
               "萨日娜", "阿拉坦花", "格日勒", "苏布达"),
}
_UYGHUR: dict[Gender, tuple[str, ...]] = {
    "male": ("艾力", "买买提", "阿不都热合曼", "吐尔逊", "依明", "阿迪力", "买尔旦", "努尔买买提", "艾合买提",
             "热合曼"),
    "female": ("阿依古丽", "古丽娜尔", "热依拉", "帕提古丽", "再娜甫", "玛依拉", "吐尼萨", "阿依努尔", "米娜瓦尔"),
}


def _minority(region: Region) -> _Minority | None:
    if region.code.startswith("15"):  # Inner Mongolia: banners (旗) more Mongolian than city districts
        banner = region.name.endswith("旗")
        return _Minority("mn", 0.2 if banner else 0.06, 0.3 if banner else 0.1, 0.15, _MONGOLIAN, "包白奇云韩吴")
    if region.code.startswith("65"):
        return _Minority("ug", 0.45, 0.4, 0.4, _UYGHUR, "", separator="·")
    return None


# Landline area code and local number length of the regions' prefectures (a village or community office is an
# emergency contact now and then).
_AREA_CODES = {"150600": ("477", 7), "150200": ("472", 7), "520300": ("851", 8), "654000": ("999", 7)}
_MOBILE_PREFIXES = ("139", "138", "137", "136", "135", "150", "151", "152", "157", "158", "159", "187", "188", "182",
                    "183", "130", "131", "132", "155", "156", "185", "186", "133", "153", "180", "189", "177", "199")

_COMMUNITY_NAMES = ("团结", "新华", "和平", "建设", "民族", "文化", "振兴", "幸福", "胜利", "光明", "锦绣", "育才")
_MONGOLIAN_VILLAGES = ("巴音乌素", "乌兰敖包", "哈日陶勒盖", "阿日赛", "查干淖尔", "宝日陶勒盖", "沙日摩仁", "额尔和图",
                       "乌兰呼都格", "布日都", "巴音布拉格", "赛音乌素")
_HAN_VILLAGES = ("新民", "红旗", "前进", "东风", "光明", "永丰", "联合", "新建", "和平", "胜利", "丰收", "富民")

_KM_PER_DEGREE = 111.32


def _offset(rng: random.Random, lat: float, lon: float, max_km: float, min_km: float = 0.0) -> tuple[float, float]:
    """A point uniformly distributed in the ring min_km..max_km around (lat, lon) (flat-earth: fine at these scales)."""
    distance = math.sqrt(rng.uniform(min_km**2, max_km**2))
    bearing = rng.uniform(0, 2 * math.pi)
    dlat = distance * math.cos(bearing) / _KM_PER_DEGREE
    dlon = distance * math.sin(bearing) / (_KM_PER_DEGREE * math.cos(math.radians(lat)))
    return round(lat + dlat, 6), round(lon + dlon, 6)


@dataclass(frozen=True)
class _Place:
    """A village or community of a town: an invented name at a point near the town centre."""

    town: Town
    name: str
    lat: float
    lon: float
    rural: bool


def _places_of(rng: random.Random, region: Region, town: Town) -> list[_Place]:
    """2–3 communities within 1.5 km of the centre; for a town that is not a 街道, 3–4 villages 1.5–5 km out."""
    places = [_Place(town, f"{name}社区", *_offset(rng, town.lat, town.lon, 1.5), rural=False)
              for name in rng.sample(_COMMUNITY_NAMES, rng.randint(2, 3))]
    if town.kind != "街道":
        pastoral = region.code.startswith("15") and (town.kind == "苏木" or rng.random() < 0.5)
        names, suffix = (_MONGOLIAN_VILLAGES, "嘎查") if pastoral else (_HAN_VILLAGES, "村")
        places += [_Place(town, f"{name}{suffix}", *_offset(rng, town.lat, town.lon, 5.0, 1.5), rural=True)
                   for name in rng.sample(names, rng.randint(3, 4))]
    return places


class _World:
    """The seeded generators, with the uniqueness bookkeeping of phones and ID numbers."""

    def __init__(self, region: Region, seed: int, today: date) -> None:
        self.region = region
        self.rng = random.Random(seed)
        self.today = today
        self.minority = _minority(region)
        self._phones: set[str] = set()
        self._id_numbers: set[str] = set()
        self.places = {town.code: _places_of(self.rng, region, town) for town in region.towns}

    def mobile(self) -> str:
        while True:
            candidate = self.rng.choice(_MOBILE_PREFIXES) + f"{self.rng.randrange(10**8):08d}"
            try:
                number = normalise_mobile(candidate)
            except InvalidPhone:
                continue
            if number not in self._phones:
                self._phones.add(number)
                return candidate

    def landline(self) -> str | None:
        if self.region.city_code not in _AREA_CODES:
            return None
        area, digits = _AREA_CODES[self.region.city_code]
        for _ in range(20):
            candidate = f"0{area}-{self.rng.randint(2, 8)}{self.rng.randrange(10 ** (digits - 1)):0{digits - 1}d}"
            try:
                normalise_contact_phone(candidate)
            except InvalidPhone:
                continue
            return candidate
        return None

    def han_name(self, gender: Gender, given: Mapping[Gender, tuple[str, ...]], surname: str | None = None) -> str:
        return (surname or self.rng.choice(_SURNAMES)) + self.rng.choice(given[gender])

    def minority_name(self, gender: Gender) -> str:
        assert self.minority is not None
        m = self.minority
        given = self.rng.choice(m.given[gender])
        if m.separator:  # Uyghur: given name · father's name
            return f"{given}{m.separator}{self.rng.choice(m.given['male'])}"
        if m.surnames and self.rng.random() < 0.4:
            return self.rng.choice(m.surnames) + given
        return given

    def id_number(self, birth: date, gender: Gender) -> str:
        former = self.region.former_codes
        while True:
            prefix = self.rng.choice(former) if former and self.rng.random() < 0.3 else self.region.code
            sex_digit = self.rng.choice("13579" if gender == "male" else "02468")
            body = f"{prefix}{birth:%Y%m%d}{self.rng.randrange(100):02d}{sex_digit}"
            number = body + ric.calc_check_digit(body + "?")  # it ignores the last character, the check digit
            if number not in self._id_numbers:
                self._id_numbers.add(number)
                return number

    def birth_date(self, age: int) -> date:
        """A birth date at which someone is exactly `age` today."""
        latest = _years_before(self.today, age)
        earliest = _years_before(self.today, age + 1) + timedelta(days=1)
        return earliest + timedelta(days=self.rng.randrange((latest - earliest).days + 1))


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def _age(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


# --- the plan: organisations, caregivers, elders (pure, from the seeded generators) ---------------------------------


@dataclass(frozen=True)
class OrganisationPlan:
    name: str
    towns: tuple[Town, ...]
    caregivers: tuple[CaregiverCreate, ...]  # organization_id filled in when the organisation exists


@dataclass(frozen=True)
class ElderPlan:
    data: ElderCreate
    devices: tuple[DeviceKind, ...]


@dataclass(frozen=True)
class DemoPlan:
    region: Region
    organisations: tuple[OrganisationPlan, ...]
    elders: tuple[ElderPlan, ...]


_BRANDS = ("福康", "颐康", "康乐", "安康", "颐和", "福寿", "乐龄", "爱心", "仁和", "康馨")
_CERTIFICATES = (("none", 18), ("junior", 36), ("intermediate", 28), ("senior", 14), ("medical", 4))
_EVERYDAY_SKILLS = ("personal_care", "cleaning", "meal", "companionship", "visiting", "escort", "bathing")
_WEEKDAYS = (1, 2, 3, 4, 5)


def _shifts(rng: random.Random) -> list[Shift]:
    def days(weekdays: Sequence[int], start: time, end: time) -> list[Shift]:
        return [Shift(weekday=d, start=start, end=end) for d in weekdays]

    pattern = rng.choices(("day", "split", "weekend", "evening", "tue_sat"), weights=(55, 20, 10, 10, 5))[0]
    if pattern == "day":
        return days(_WEEKDAYS, time(8), time(17))
    if pattern == "split":
        return days((1, 2, 3, 4, 5, 6), time(8), time(12)) + days((1, 2, 3, 4, 5, 6), time(14), time(18))
    if pattern == "weekend":
        return days((5, 6, 7), time(8), time(20))
    if pattern == "evening":
        return days((1, 2, 3, 4, 5, 6, 7), time(17), time(22))
    return days((2, 3, 4, 5, 6), time(9), time(18))


def _caregiver(world: _World, number: int, towns: Sequence[Town], *, medical_nurse: bool) -> CaregiverCreate:
    rng = world.rng
    gender: Gender = "female" if rng.random() < 0.8 else "male"
    m = world.minority
    speaks_minority = m is not None and rng.random() < m.caregiver_share
    name = (world.minority_name(gender) if speaks_minority and rng.random() < 0.6
            else world.han_name(gender, _YOUNGER_GIVEN))
    level = "medical" if medical_nurse else rng.choices([c for c, _ in _CERTIFICATES],
                                                          weights=[w for _, w in _CERTIFICATES])[0]
    skills = set(rng.sample(_EVERYDAY_SKILLS, rng.randint(2, 3)))
    if level == "medical":
        skills = {"nursing"} | set(rng.sample(("rehab", "escort", "personal_care"), rng.randint(1, 2)))
    elif level == "senior" and rng.random() < 0.6:
        skills = {"rehab"} | set(rng.sample(_EVERYDAY_SKILLS, rng.randint(1, 2)))
    elif level in ("junior", "intermediate") and rng.random() < 0.2:
        skills.add("nursing")  # health checks need only a junior certificate
    assert skills <= set(SKILLS) and 2 <= len(skills) <= 4
    # the organisation's first town (the seat, for the first two organisations) is home to most of its staff
    town = towns[0] if len(towns) == 1 or rng.random() < 0.6 else rng.choice(towns[1:])
    lat, lon = _offset(rng, town.lat, town.lon, 3.0)
    return CaregiverCreate(
        organization_id=str(uuid.UUID(int=0)), name=name, phone=world.mobile(), gender=gender,
        languages=["zh", m.language] if speaks_minority and m is not None else ["zh"],
        skills=sorted(skills), certificate_level=level, home_base=GeoPoint(lat=lat, lon=lon),
        shifts=_shifts(rng), username=f"cg-{number:03d}", password=DEMO_PASSWORD,
    )


def _plan_organisations(world: _World) -> list[OrganisationPlan]:
    """Three organisations: the seat's public centre, a private company at the seat reaching half the other towns,
    and a rural station for the other half (in a city district: the same, with 街道 for towns)."""
    region, rng = world.region, world.rng
    seat, others = region.towns[0], list(region.towns[1:])
    half = (len(others) + 1) // 2
    station_towns = tuple(others[:half]) or (seat,)
    station = "社区养老服务站" if station_towns[0].kind == "街道" else "综合养老服务站"
    layouts = (
        (f"{region.name}{seat.name}居家养老服务中心", (seat,), 20),
        (f"{region.city}{rng.choice(_BRANDS)}居家养老服务有限公司", (seat, *others[half:]), 18),
        (f"{region.name}{station_towns[0].name}{station}", station_towns, CAREGIVERS - 38),
    )
    plans, number = [], 0
    for name, towns, count in layouts[:ORGANISATIONS]:
        caregivers = []
        for i in range(count):
            number += 1
            caregivers.append(_caregiver(world, number, towns, medical_nurse=i == 0))
        plans.append(OrganisationPlan(name=name, towns=towns, caregivers=tuple(caregivers)))
    return plans


# relation, gender, carries the elder's surname; a child first, then (for 40%) someone else
_CHILDREN: tuple[tuple[str, Gender, bool], ...] = (("儿子", "male", True), ("女儿", "female", True))
_OTHER_RELATIVES: tuple[tuple[str, Gender, bool], ...] = (
    ("儿媳", "female", False), ("女婿", "male", False), ("孙子", "male", True), ("孙女", "female", True),
    ("侄子", "male", True), ("邻居", "female", False),
)


def _contacts(world: _World, elder_name: str, place: _Place, minority: bool) -> list[EmergencyContact]:
    rng = world.rng
    relations = [rng.choice(_CHILDREN)] + ([rng.choice(_OTHER_RELATIVES)] if rng.random() < 0.4 else [])
    contacts = []
    for relation, gender, same_surname in relations:
        if minority and rng.random() < 0.7:
            name = world.minority_name(gender)
        else:
            surname = elder_name[0] if same_surname and not minority else None
            name = world.han_name(gender, _YOUNGER_GIVEN, surname)
        contacts.append(EmergencyContact(name=name, relation=relation, phone=world.mobile()))
    if rng.random() < 0.1 and (office := world.landline()) is not None:
        office_kind = "村委会" if place.rural else "居委会"
        contacts.append(EmergencyContact(name=f"{place.name}{office_kind}", relation=office_kind, phone=office))
    return contacts


def _categories(rng: random.Random, age: int, level: int, rural: bool) -> list[Category]:
    categories: list[Category] = []
    if age >= 80:
        categories.append("gaoling")
    income = rng.random()
    if income < 0.03:
        categories.append("tekun")
    elif income < 0.12:
        categories.append("dibao")
    if level >= 2:
        categories.append("shineng")
    if rng.random() < (0.08 if age >= 80 else 0.03):
        categories.append("shizhi")
    living = rng.random()
    if living < 0.14:
        categories.append("duju")
    elif living < 0.44:
        categories.append("kongchao")
    if rural and rng.random() < 0.08:
        categories.append("liushou")
    if rng.random() < 0.02:
        categories.append("youfu")
    if rng.random() < 0.03:
        categories.append("jisheng_tefu")
    if rng.random() < (0.15 if level >= 3 else 0.02):
        categories.append("zhongdu_canji")
    return categories


def _address(world: _World, place: _Place) -> str:
    rng = world.rng
    if place.rural:
        return f"{world.region.address_prefix}{place.town.name}{place.name}{rng.randint(1, 160)}号"
    return (f"{world.region.address_prefix}{place.town.name}{place.name}{rng.randint(1, 30)}号楼"
            f"{rng.randint(1, 4)}单元{rng.randint(1, 6)}0{rng.randint(1, 4)}")


def _elder(world: _World) -> ElderPlan:
    rng, region = world.rng, world.region
    # about half the elders live around the seat, the rest spread evenly (evenly everywhere without a seat)
    weights = [max(1, len(region.towns) - 1) if region.has_seat else 1] + [1] * (len(region.towns) - 1)
    town = rng.choices(region.towns, weights=weights)[0]
    place = rng.choice(world.places[town.code])
    lat, lon = _offset(rng, place.lat, place.lon, 0.4 if place.rural else 0.3)
    ages = range(65, 96)
    age = rng.choices(ages, weights=[math.exp(-(a - 65) / 12) for a in ages])[0]
    gender: Gender = "female" if rng.random() < 0.55 else "male"  # women outlive men
    birth = world.birth_date(age)
    level = rng.choices(range(5), weights=(40, 25, 17, 10, 8) if age >= 80 else (65, 20, 8, 4, 3))[0]
    m = world.minority
    speaks_minority = m is not None and rng.random() < m.elder_share
    if speaks_minority and m is not None:
        name = world.minority_name(gender)
        languages = [m.language] if rng.random() < m.monolingual_share else [m.language, "zh"]
    else:
        name = world.han_name(gender, _ELDER_GIVEN)
        languages = ["zh"]
    categories = _categories(rng, _age(birth, world.today), level, place.rural)
    preferred: Gender | None = None
    if rng.random() < (0.35 if gender == "female" else 0.08):
        preferred = gender
    data = ElderCreate(
        name=name, id_number=world.id_number(birth, gender),
        phone=world.mobile() if rng.random() < (0.7 if age < 80 else 0.4) else None,
        gender=gender, birth_date=birth, address=_address(world, place), lat=lat, lon=lon,
        region_code=region.code, town_code=town.code, categories=categories, assessment_level=level,
        languages=languages, preferences=Preferences(caregiver_gender=preferred),
        emergency_contacts=_contacts(world, name, place, minority=speaks_minority),
    )
    watched = {"duju", "kongchao", "gaoling"} & set(categories)
    devices: list[DeviceKind] = []
    if rng.random() < (0.8 if watched else 0.55):
        devices.append("call_button")
    if rng.random() < (0.6 if {"shizhi", "duju"} & set(categories) or level >= 3 else 0.1):
        devices.append("wristband")
    return ElderPlan(data=data, devices=tuple(devices))


def plan_demo(region_code: str, *, seed: int, today: date) -> DemoPlan:
    """The demo world as validated service inputs, the same for the same seed and day (ages count from `today`)."""
    world = _World(load_region(region_code), seed, today)
    organisations = tuple(_plan_organisations(world))
    elders = tuple(_elder(world) for _ in range(ELDERS))
    return DemoPlan(region=world.region, organisations=organisations, elders=elders)


# --- writing it through the services ----------------------------------------------------------------------------------


def _staff_usernames() -> list[str]:
    return [ADMIN_USERNAME, *(u for u, _ in STAFF_LOGINS),
            *(f"demo-org-{i}" for i in range(1, ORGANISATIONS + 1)), FAMILY_USERNAME]


def _demo_login_clause() -> ColumnElement[bool]:
    return or_(User.username.in_(_staff_usernames()), User.username.regexp_match("^cg-[0-9]{3}$"))


async def _existing_summary(session: AsyncSession, default_region: str) -> DemoSummary:
    dispatcher = await session.scalar(select(User.region_code).where(User.username == STAFF_LOGINS[0][0]))
    region = dispatcher or default_region
    logins = list((await session.scalars(select(User.username).where(_demo_login_clause()))).all())
    staff = _staff_usernames()
    logins.sort(key=lambda u: (staff.index(u) if u in staff else len(staff), u))
    org_ids = select(Organization.id).where(Organization.region_code == region)
    elder_ids = select(Elder.id).where(Elder.region_code == region)
    count = func.count()
    return DemoSummary(
        region_code=region,
        organisations=await session.scalar(select(count).select_from(Organization)
                                           .where(Organization.region_code == region)) or 0,
        caregivers=await session.scalar(select(count).select_from(Caregiver)
                                        .where(Caregiver.organization_id.in_(org_ids))) or 0,
        elders=await session.scalar(select(count).select_from(Elder).where(Elder.region_code == region)) or 0,
        devices=await session.scalar(select(count).select_from(Device).where(Device.elder_id.in_(elder_ids))) or 0,
        logins=tuple(logins), password=DEMO_PASSWORD, created=False,
    )


async def seed_demo(runtime: Runtime, *, region_code: str = "150625", seed: int = 7,
                    progress: Progress | None = None) -> DemoSummary:
    """Seed a demo world in `region_code` (default 杭锦旗), once: ~3 organisations, ~50 caregivers (logins `cg-001`…),
    ~300 elders, their call buttons (`btn-…`) and wristbands (`wb-…`), and the staff logins `demo-admin`,
    `demo-dispatcher`, `demo-auditor`, `demo-finance`, `demo-org-N` (one per organisation) and `demo-family` (the
    first elder), all with the password `DEMO_PASSWORD`.

    Idempotent: when `demo-admin` exists nothing is created and the summary counts what the demo region holds
    (`created=False`). `demo-admin` is created in the last transaction, as the mark of a complete seeding; demo logins
    without it mean an interrupted seeding (`DemoSeedInterrupted`: start from an empty database).

    The summary's `device_tokens` holds a few device tokens for the device simulator: never print or log them (the
    CLI prints counts only). The world is reproducible for a given seed and day (ages are counted from the clock).
    """
    say = progress or (lambda _message: None)
    load_region(region_code)  # an unknown region fails before anything else
    async with runtime.database.unit_of_work() as session:
        if await session.scalar(select(User.id).where(User.username == ADMIN_USERNAME)) is not None:
            return await _existing_summary(session, region_code)
        leftover = await session.scalar(select(User.username).where(_demo_login_clause()).limit(1))
        if leftover is not None:
            raise DemoSeedInterrupted(f"demo login {leftover} exists without {ADMIN_USERNAME}: an earlier demo "
                                      "seeding was interrupted; seed into an empty database")

    today = runtime.clock.now().astimezone(ZoneInfo(runtime.settings.timezone)).date()
    plan = plan_demo(region_code, seed=seed, today=today)
    region, organisations, elders = plan.region, plan.organisations, plan.elders
    clock, cipher, access = runtime.clock, runtime.cipher, _SEED_ACCESS
    org_admins: list[str] = []
    caregiver_logins: list[str] = []

    for index, org_plan in enumerate(organisations, start=1):
        say(f"organisation {index}/{len(organisations)}: {org_plan.name} with {len(org_plan.caregivers)} caregivers")
        async with runtime.database.unit_of_work() as session:
            org = await create_organization(session, clock, access,
                                            OrganizationCreate(name=org_plan.name, region_code=region.code))
            admin = await create_user(session, clock, access, username=f"demo-org-{index}", password=DEMO_PASSWORD,
                                      role="org_admin", organization_id=org.id)
            org_admins.append(admin.username)
            for data in org_plan.caregivers:
                _, user = await create_caregiver(session, clock, cipher, access,
                                                 data.model_copy(update={"organization_id": str(org.id)}))
                caregiver_logins.append(user.username)

    tokens: dict[str, str] = {}
    serials: dict[DeviceKind, int] = {"call_button": 0, "wristband": 0}
    prefixes: dict[DeviceKind, str] = {"call_button": "btn", "wristband": "wb"}
    first_elder: uuid.UUID | None = None
    for start in range(0, len(elders), ELDERS_PER_TRANSACTION):
        batch = elders[start:start + ELDERS_PER_TRANSACTION]
        async with runtime.database.unit_of_work() as session:
            for elder_plan in batch:
                elder = await create_elder(session, clock, cipher, access, elder_plan.data)
                first_elder = first_elder or elder.id
                for kind in elder_plan.devices:
                    serials[kind] += 1
                    device_id = f"{prefixes[kind]}-{serials[kind]:06d}"
                    _, token = await register_device(session, clock, cipher, access,
                                                     DeviceCreate(device_id=device_id, kind=kind,
                                                                  elder_id=str(elder.id)))
                    if serials[kind] <= DEVICE_TOKENS_KEPT:
                        tokens[device_id] = token
        say(f"elders {start + len(batch)}/{len(elders)}, devices {sum(serials.values())}")

    say("staff logins")
    async with runtime.database.unit_of_work() as session:
        for username, role in STAFF_LOGINS:
            await create_user(session, clock, access, username=username, password=DEMO_PASSWORD, role=role,
                              region_code=region.code)
        if first_elder is not None:
            await create_user(session, clock, access, username=FAMILY_USERNAME, password=DEMO_PASSWORD,
                              role="elder", elder_ids=[first_elder])
        await create_user(session, clock, access, username=ADMIN_USERNAME, password=DEMO_PASSWORD, role="admin")
    logins = [ADMIN_USERNAME, *(u for u, _ in STAFF_LOGINS), *org_admins,
              *([FAMILY_USERNAME] if first_elder is not None else []), *caregiver_logins]
    say(f"demo ready: {len(organisations)} organisations, {len(caregiver_logins)} caregivers, {len(elders)} elders, "
        f"{sum(serials.values())} devices")
    return DemoSummary(
        region_code=region.code, organisations=len(organisations), caregivers=len(caregiver_logins),
        elders=len(elders), devices=sum(serials.values()), logins=tuple(logins), password=DEMO_PASSWORD,
        created=True, device_tokens=tokens,
    )
