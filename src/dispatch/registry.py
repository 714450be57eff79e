"""Registry of the supply side: organisations and their caregivers (with the caregiver's login)."""

from __future__ import annotations

import uuid

from sqlalchemy import Select, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from billing import service as billing
from dispatch import schemas
from dispatch.models import Caregiver, Organization
from kernel.audit import record_audit
from kernel.auth import User, create_user
from kernel.authz import Access
from kernel.clock import Clock
from kernel.errors import Conflict, NotFound
from kernel.ids import parse_id
from kernel.key_rotation import EncryptedColumn
from kernel.outbox import emit
from kernel.personal_data import FieldCipher
from kernel.phones import mask_phone

PHONE_CONTEXT = "caregivers.phone"
ENCRYPTED_COLUMNS = (EncryptedColumn(Caregiver, "phone_enc", PHONE_CONTEXT),)  # what `vnh crypto rotate` rewrites



async def create_organization(session: AsyncSession, clock: Clock, access: Access,
                              data: schemas.OrganizationCreate) -> Organization:
    org = Organization(id=uuid.uuid4(), name=data.name.strip(), region_code=data.region_code)
    session.add(org)
    await session.flush()
    if data.contracted_programs:  # shorthand for contracts in the organisation's region (422 for unknown ids)
        await billing.contract_new_organization(session, clock, access, organization_id=org.id,
                                                region_code=org.region_code, program_ids=data.contracted_programs)
    await record_audit(session, clock, access, "organization.create", "organization", org.id,
                       {"name": org.name, "region_code": org.region_code})
    emit(session, clock, "dispatch.organization.created", str(org.id),
         {"organization_id": str(org.id), "region_code": org.region_code})
    return org


async def get_organization(session: AsyncSession, access: Access, organization_id: str) -> Organization:
    org = await session.get(Organization, parse_id(organization_id, "organization"))
    if org is None:
        raise NotFound("organization not found")
    access.ensure(what="organization", region_code=org.region_code, organization_id=org.id)
    return org


async def list_organizations(session: AsyncSession, access: Access) -> list[Organization]:
    rows = (await session.scalars(select(Organization).order_by(Organization.name))).all()
    return [o for o in rows if access.covers(region_code=o.region_code, organization_id=o.id)]


async def create_caregiver(session: AsyncSession, clock: Clock, cipher: FieldCipher, access: Access,
                           data: schemas.CaregiverCreate) -> tuple[Caregiver, User]:
    """A caregiver and its app login, in one transaction. An org admin creates only in its own organisation."""
    org = await get_organization(session, access, data.organization_id)
    phone = cipher.protect(data.phone, context=PHONE_CONTEXT, masked=mask_phone(data.phone))
    if await session.scalar(select(Caregiver.id).where(Caregiver.phone_bidx == phone.blind_index)) is not None:
        raise Conflict("a caregiver with this phone number exists", code="phone_taken")
    home = data.home_base.to_wgs84() if data.home_base else None
    caregiver = Caregiver(
        id=uuid.uuid4(), organization_id=org.id, name=data.name.strip(),
        phone_enc=phone.ciphertext, phone_bidx=phone.blind_index, phone_masked=phone.masked,
        gender=data.gender, languages=data.languages, skills=data.skills,
        certificate_level=data.certificate_level,
        home_lat=home[0] if home else None, home_lon=home[1] if home else None,
        shifts=[s.model_dump(mode="json") for s in data.shifts],
    )
    session.add(caregiver)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict("a caregiver with this phone number exists", code="phone_taken") from exc
    user = await create_user(session, clock, access, username=data.username, password=data.password,
                             role="caregiver", organization_id=org.id, caregiver_id=caregiver.id)
    await record_audit(session, clock, access, "caregiver.create", "caregiver", caregiver.id,
                       {"organization_id": str(org.id), "skills": data.skills,
                        "certificate_level": data.certificate_level, "phone": phone.masked})
    emit(session, clock, "dispatch.caregiver.created", str(caregiver.id),
         {"caregiver_id": str(caregiver.id), "organization_id": str(org.id)})
    return caregiver, user


async def get_caregiver(session: AsyncSession, access: Access, caregiver_id: str) -> Caregiver:
    caregiver = await session.get(Caregiver, parse_id(caregiver_id, "caregiver"))
    if caregiver is None:
        raise NotFound("caregiver not found")
    org = await session.get(Organization, caregiver.organization_id)
    assert org is not None
    access.ensure(what="caregiver", region_code=org.region_code, organization_id=org.id, caregiver_id=caregiver.id)
    return caregiver


async def update_caregiver(session: AsyncSession, clock: Clock, cipher: FieldCipher, access: Access,
                           caregiver_id: str, data: schemas.CaregiverUpdate) -> Caregiver:
    caregiver = await get_caregiver(session, access, caregiver_id)
    changed = data.model_dump(exclude_unset=True)
    if "phone" in changed and data.phone is not None:
        phone = cipher.protect(data.phone, context=PHONE_CONTEXT, masked=mask_phone(data.phone))
        caregiver.phone_enc, caregiver.phone_bidx, caregiver.phone_masked = (
            phone.ciphertext, phone.blind_index, phone.masked)
    if "home_base" in changed:
        home = data.home_base.to_wgs84() if data.home_base else None
        caregiver.home_lat, caregiver.home_lon = (home[0], home[1]) if home else (None, None)
    for name in ("name", "languages", "skills", "certificate_level", "active"):
        if name in changed and changed[name] is not None:
            setattr(caregiver, name, changed[name])
    if "shifts" in changed and data.shifts is not None:
        caregiver.shifts = [s.model_dump(mode="json") for s in data.shifts]
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict("a caregiver with this phone number exists", code="phone_taken") from exc
    fields = sorted(changed)
    await record_audit(session, clock, access, "caregiver.update", "caregiver", caregiver.id, {"fields": fields})
    emit(session, clock, "dispatch.caregiver.updated", str(caregiver.id),
         {"caregiver_id": str(caregiver.id), "organization_id": str(caregiver.organization_id), "fields": fields})
    return caregiver


async def list_caregivers(session: AsyncSession, access: Access, organization_id: str | None = None) -> list[Caregiver]:
    query = select(Caregiver, Organization.region_code).join(Organization).order_by(Caregiver.name, Caregiver.id)
    if organization_id:
        query = query.where(Caregiver.organization_id == parse_id(organization_id, "organization"))
    rows = (await session.execute(query)).all()
    return [
        cg for cg, region in rows
        if access.covers(region_code=region, organization_id=cg.organization_id, caregiver_id=cg.id)
    ]


async def logins_of(session: AsyncSession, caregiver_ids: list[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """The app login (user id) of each caregiver, in one query."""
    if not caregiver_ids:
        return {}
    rows = await session.execute(select(User.caregiver_id, User.id).where(
        User.role == "caregiver", User.caregiver_id.in_(caregiver_ids)))
    return {cid: uid for cid, uid in rows.all() if cid is not None}


async def caregiver_schemas(session: AsyncSession, caregivers: list[Caregiver]) -> list[schemas.Caregiver]:
    """Caregivers as the API shows them, each with its login's `user_id`."""
    logins = await logins_of(session, [c.id for c in caregivers])
    return [to_schema(c, logins.get(c.id)) for c in caregivers]


def to_schema(caregiver: Caregiver, user_id: uuid.UUID | None = None) -> schemas.Caregiver:
    return schemas.Caregiver(
        id=str(caregiver.id), organization_id=str(caregiver.organization_id), name=caregiver.name,
        phone=caregiver.phone_masked, gender=caregiver.gender,
        languages=caregiver.languages, skills=caregiver.skills,
        certificate_level=caregiver.certificate_level,
        home_base=(schemas.Point(lat=caregiver.home_lat, lon=caregiver.home_lon)
                   if caregiver.home_lat is not None and caregiver.home_lon is not None else None),
        shifts=[schemas.Shift.model_validate(s) for s in caregiver.shifts], active=caregiver.active,
        user_id=str(user_id) if user_id else None, created_at=caregiver.created_at.isoformat(),
    )


async def organization_of_caregiver(session: AsyncSession, caregiver_id: uuid.UUID | None) -> uuid.UUID | None:
    if caregiver_id is None:
        return None
    return await session.scalar(select(Caregiver.organization_id).where(Caregiver.id == caregiver_id))


def caregivers_of_organization(organization_id: uuid.UUID) -> Select[uuid.UUID]:
    """A subquery of the organisation's caregiver ids, for other domains' list filters."""
    return select(Caregiver.id).where(Caregiver.organization_id == organization_id)


async def record_rating(session: AsyncSession, caregiver_id: uuid.UUID, rating: int) -> None:
    """An elder's rating feeds the caregiver's average (a matching input); one atomic increment."""
    await session.execute(
        update(Caregiver).where(Caregiver.id == caregiver_id)
        .values(rating_sum=Caregiver.rating_sum + rating, rating_count=Caregiver.rating_count + 1))
