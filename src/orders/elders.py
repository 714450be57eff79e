"""The elder registry: who is served, where they live, and their personal data kept as PIPL asks."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from kernel.audit import record_audit
from kernel.authz import Access
from kernel.clock import Clock
from kernel.errors import Conflict, NotFound, Unprocessable
from kernel.geo import to_wgs84
from kernel.ids import parse_id
from kernel.key_rotation import EncryptedColumn
from kernel.outbox import emit
from kernel.pagination import keyset, page_of
from kernel.personal_data import FieldCipher, mask_address, mask_name
from kernel.phones import mask_phone
from kernel.resident_id import check_matches_record, mask_resident_id, parse_resident_id
from orders import schemas
from orders.home import CHECK_IN_CONTEXT, CHECK_OUT_CONTEXT, HOME_CONTEXT, coarse, open_home, seal_home
from orders.models import Elder, Visit

ID_CONTEXT = "elders.id_number"
PHONE_CONTEXT = "elders.phone"
ADDRESS_CONTEXT = "elders.address"
CONTACTS_CONTEXT = "elders.emergency_contacts"
# what `vnh crypto rotate` re-encrypts
ENCRYPTED_COLUMNS = (
    EncryptedColumn(Elder, "id_number_enc", ID_CONTEXT),
    EncryptedColumn(Elder, "phone_enc", PHONE_CONTEXT),
    EncryptedColumn(Elder, "address_enc", ADDRESS_CONTEXT),
    EncryptedColumn(Elder, "emergency_contacts_enc", CONTACTS_CONTEXT),
    EncryptedColumn(Elder, "home_enc", HOME_CONTEXT),
    # where visits checked in and out: at the elder's door
    EncryptedColumn(Visit, "check_in_enc", CHECK_IN_CONTEXT),
    EncryptedColumn(Visit, "check_out_enc", CHECK_OUT_CONTEXT),
)



def _masked_contacts(contacts: list[schemas.EmergencyContact]) -> list[dict[str, str | None]]:
    return [{"name": c.name, "relation": c.relation, "phone": mask_phone(c.phone)} for c in contacts]


def _set_contacts(elder: Elder, cipher: FieldCipher, contacts: list[schemas.EmergencyContact]) -> None:
    plaintext = json.dumps([c.model_dump() for c in contacts], ensure_ascii=False)
    elder.emergency_contacts_enc = cipher.encrypt(plaintext, context=CONTACTS_CONTEXT) if contacts else None
    elder.emergency_contacts_masked = _masked_contacts(contacts)


def _set_home(elder: Elder, cipher: FieldCipher, lat: float, lon: float) -> None:
    elder.home_enc = seal_home(cipher, lat, lon)
    elder.coarse_lat, elder.coarse_lon = coarse(lat, lon)


def _set_phone(elder: Elder, cipher: FieldCipher, phone: str | None) -> None:
    if phone is None:
        elder.phone_enc = elder.phone_bidx = elder.phone_masked = None
        return
    protected = cipher.protect(phone, context=PHONE_CONTEXT, masked=mask_phone(phone))
    elder.phone_enc, elder.phone_bidx, elder.phone_masked = (
        protected.ciphertext, protected.blind_index, protected.masked)


async def create_elder(session: AsyncSession, clock: Clock, cipher: FieldCipher, access: Access,
                       data: schemas.ElderCreate) -> Elder:
    rid = parse_resident_id(data.id_number)
    check_matches_record(rid, data.birth_date, data.gender)  # 422 id_number_mismatch
    if data.birth_date > clock.now().date():
        raise Unprocessable("birth_date is in the future", code="invalid_birth_date")
    id_number = cipher.protect(rid.number, context=ID_CONTEXT, masked=mask_resident_id(rid.number))
    if await session.scalar(select(Elder.id).where(Elder.id_number_bidx == id_number.blind_index)) is not None:
        raise Conflict("an elder with this ID number is registered", code="id_number_taken")
    lat, lon = to_wgs84(data.lat, data.lon, data.crs)
    address = data.address.strip()
    elder = Elder(
        id=uuid.uuid4(), name=data.name.strip(),
        id_number_enc=id_number.ciphertext, id_number_bidx=id_number.blind_index, id_number_masked=id_number.masked,
        address_enc=cipher.encrypt(address, context=ADDRESS_CONTEXT), address_masked=mask_address(address),
        gender=data.gender, birth_date=data.birth_date, region_code=data.region_code,
        town_code=data.town_code, village_code=data.village_code, categories=sorted(set(data.categories)),
        assessment_level=data.assessment_level, languages=data.languages,
        preferences=data.preferences.model_dump(exclude_none=True), status="active",
    )
    _set_home(elder, cipher, lat, lon)
    _set_phone(elder, cipher, data.phone)
    _set_contacts(elder, cipher, data.emergency_contacts)
    session.add(elder)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent registration of the same person
        raise Conflict("an elder with this ID number is registered", code="id_number_taken") from exc
    await record_audit(session, clock, access, "elder.create", "elder", elder.id,
                       {"region_code": elder.region_code, "id_number": id_number.masked,
                        "categories": elder.categories, "assessment_level": elder.assessment_level})
    emit(session, clock, "orders.elder.created", str(elder.id),
         {"elder_id": str(elder.id), "region_code": elder.region_code})
    return elder


async def load_elder(session: AsyncSession, access: Access, elder_id: str, *, for_update: bool = False) -> Elder:
    """The elder if it exists and lies in the caller's scope; 404 otherwise."""
    query = select(Elder).where(Elder.id == parse_id(elder_id, "elder"))
    if for_update:
        query = query.with_for_update()
    elder = await session.scalar(query)
    if elder is None:
        raise NotFound("elder not found")
    access.ensure(what="elder", region_code=elder.region_code, elder_id=elder.id)
    return elder


async def read_elder(session: AsyncSession, clock: Clock, access: Access, elder_id: str) -> Elder:
    """A staff read of an elder's record is itself audited (PIPL: who looked at whom)."""
    elder = await load_elder(session, access, elder_id)
    if access.role != "elder":
        await record_audit(session, clock, access, "elder.read", "elder", elder.id, {"fields": "masked"})
    return elder


async def list_elders(session: AsyncSession, clock: Clock, access: Access, *, region_code: str | None,
                      status: str | None, cursor: str | None, limit: int) -> tuple[list[Elder], str | None]:
    query = select(Elder)
    if access.scope == "own":
        query = query.where(Elder.id.in_([uuid.UUID(e) for e in access.principal.elder_ids]))
    else:
        query = query.where(access.region_clause(Elder.region_code, Elder.town_code))
    if region_code:
        query = query.where(Elder.region_code == region_code)
    if status:
        query = query.where(Elder.status == status)
    rows = list((await session.scalars(keyset(query, Elder.created_at, Elder.id, cursor, limit))).all())
    rows, next_cursor = page_of(rows, limit, lambda r: (r.created_at, r.id))
    if access.role != "elder" and rows:
        # one row per county listed, carrying it, so each county's auditors see who listed their elders
        per_region: dict[str, int] = {}
        for elder in rows:
            per_region[elder.region_code] = per_region.get(elder.region_code, 0) + 1
        for listed_region, count in sorted(per_region.items()):
            await record_audit(session, clock, access, "elder.list", "elder", None,
                               {"count": count, "page_count": len(rows), "region_code": listed_region,
                                "filter_region_code": region_code, "fields": "masked"},
                               region_code=listed_region)
    return rows, next_cursor


async def update_elder(session: AsyncSession, clock: Clock, cipher: FieldCipher, access: Access, elder_id: str,
                       data: schemas.ElderUpdate) -> Elder:
    elder = await load_elder(session, access, elder_id, for_update=True)
    changed = sorted(data.model_dump(exclude_unset=True).keys() - {"crs"})
    if data.status is not None and data.status != elder.status:
        elder.status = data.status
        elder.status_changed_at = clock.now()
    if "phone" in changed:
        _set_phone(elder, cipher, data.phone)
    if data.address is not None:
        address = data.address.strip()
        elder.address_enc = cipher.encrypt(address, context=ADDRESS_CONTEXT)
        elder.address_masked = mask_address(address)
    if data.lat is not None and data.lon is not None:
        _set_home(elder, cipher, *to_wgs84(data.lat, data.lon, data.crs))
    if data.categories is not None:
        elder.categories = sorted(set(data.categories))
    if data.assessment_level is not None:
        elder.assessment_level = data.assessment_level
    if data.languages is not None:
        elder.languages = data.languages
    if data.preferences is not None:
        elder.preferences = data.preferences.model_dump(exclude_none=True)
    if data.emergency_contacts is not None:
        _set_contacts(elder, cipher, data.emergency_contacts)
    await session.flush()
    await record_audit(session, clock, access, "elder.update", "elder", elder.id,
                       {"fields": changed, "status": elder.status})
    emit(session, clock, "orders.elder.updated", str(elder.id),
         {"elder_id": str(elder.id), "region_code": elder.region_code, "fields": changed})
    return elder


async def reveal(session: AsyncSession, clock: Clock, cipher: FieldCipher, access: Access, elder_id: str,
                 request: schemas.RevealRequest) -> schemas.Revealed:
    """Unmasking is a recorded action with a reason (design §5)."""
    elder = await load_elder(session, access, elder_id)
    out = schemas.Revealed()
    for name in sorted(set(request.fields)):
        if name == "id_number":
            out.id_number = cipher.decrypt(elder.id_number_enc, context=ID_CONTEXT)
        elif name == "phone" and elder.phone_enc:
            out.phone = cipher.decrypt(elder.phone_enc, context=PHONE_CONTEXT)
        elif name == "address":
            out.address = cipher.decrypt(elder.address_enc, context=ADDRESS_CONTEXT)
        elif name == "home":
            lat, lon = open_home(cipher, elder.home_enc)
            out.home = schemas.HomePoint(lat=lat, lon=lon)
        elif name == "emergency_contacts":
            raw = cipher.decrypt(elder.emergency_contacts_enc, context=CONTACTS_CONTEXT) \
                if elder.emergency_contacts_enc else "[]"
            out.emergency_contacts = [schemas.EmergencyContact.model_validate(c) for c in json.loads(raw)]
    await record_audit(session, clock, access, "elder.reveal", "elder", elder.id,
                       {"fields": sorted(set(request.fields)), "reason": request.reason})
    return out


def to_schema(elder: Elder) -> schemas.Elder:
    return schemas.Elder(
        id=str(elder.id), name=elder.name, id_number=elder.id_number_masked, phone=elder.phone_masked,
        gender=elder.gender,
        birth_date=elder.birth_date, address=elder.address_masked, lat=elder.coarse_lat, lon=elder.coarse_lon,
        region_code=elder.region_code, town_code=elder.town_code, village_code=elder.village_code,
        categories=elder.categories, assessment_level=elder.assessment_level, languages=elder.languages,
        preferences=schemas.Preferences.model_validate(elder.preferences),
        emergency_contacts=[schemas.MaskedContact.model_validate(c) for c in elder.emergency_contacts_masked],
        status=elder.status, created_at=elder.created_at.isoformat(),
    )




@dataclass(frozen=True)
class ElderProfile:
    """What dispatch needs of an elder to match: home, region, languages, preferences.

    `lat`/`lon` are the exact home when the profile was read with the cipher (matching distances), else the ~1 km
    cell (`exact` False: offer lists, which show no position)."""

    id: uuid.UUID
    lat: float
    lon: float
    region_code: str
    languages: frozenset[str]
    preferred_gender: str | None
    name_masked: str
    address_masked: str
    device_ids: tuple[str, ...] = ()
    exact: bool = False


async def matching_profile(session: AsyncSession, elder_id: uuid.UUID,
                           cipher: FieldCipher | None = None) -> ElderProfile:
    elder = await session.get(Elder, elder_id)
    if elder is None:
        raise NotFound("elder not found")
    lat, lon = open_home(cipher, elder.home_enc) if cipher is not None else (elder.coarse_lat, elder.coarse_lon)
    return ElderProfile(
        id=elder.id, lat=lat, lon=lon, exact=cipher is not None, region_code=elder.region_code,
        languages=frozenset(elder.languages), preferred_gender=elder.preferences.get("caregiver_gender"),
        name_masked=mask_name(elder.name), address_masked=elder.address_masked,
    )


@dataclass(frozen=True)
class VisitContact:
    name: str
    address: str
    phone: str | None
    lat: float
    lon: float


async def contact_for_visit(session: AsyncSession, clock: Clock, cipher: FieldCipher, access: Access,
                            elder_id: uuid.UUID) -> VisitContact:
    """The assigned caregiver needs the door, the phone and the exact home point once it has accepted; the read is
    audited."""
    elder = await session.get(Elder, elder_id)
    if elder is None:
        raise NotFound("elder not found")
    await record_audit(session, clock, access, "elder.read_for_visit", "elder", elder.id,
                       {"fields": ["name", "address", "phone", "home"]})
    lat, lon = open_home(cipher, elder.home_enc)
    return VisitContact(
        name=elder.name, address=cipher.decrypt(elder.address_enc, context=ADDRESS_CONTEXT),
        phone=cipher.decrypt(elder.phone_enc, context=PHONE_CONTEXT) if elder.phone_enc else None,
        lat=lat, lon=lon,
    )


async def home_for_visit(session: AsyncSession, clock: Clock, cipher: FieldCipher, access: Access,
                         elder_id: uuid.UUID, visit_id: uuid.UUID) -> tuple[float, float]:
    """The exact home for the caregiver of an active visit (the caller checks who and when); audited."""
    token = await session.scalar(select(Elder.home_enc).where(Elder.id == elder_id))
    if token is None:
        raise NotFound("elder not found")
    await record_audit(session, clock, access, "elder.read_for_visit", "elder", elder_id,
                       {"fields": ["home"], "visit_id": str(visit_id)})
    return open_home(cipher, token)
