"""Supervision's interface to the other domains (decisions §1): the credit blacklist. A blacklisted organisation
or caregiver gets no new offers (dispatch asks here) and no new government-purchased billing (billing asks here)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import ColumnElement, DateTime, and_, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from kernel.errors import Conflict
from supervision.models import BlacklistEntry


@dataclass(frozen=True)
class Subject:
    kind: Literal["organization", "caregiver"]
    id: uuid.UUID


def _in_force(at: datetime | ColumnElement[datetime]) -> ColumnElement[bool]:
    return and_(
        BlacklistEntry.valid_from <= at,
        or_(BlacklistEntry.valid_to.is_(None), BlacklistEntry.valid_to > at),
        or_(BlacklistEntry.lifted_at.is_(None), BlacklistEntry.lifted_at > at),
    )


# built once (matching runs it for every order): the expression costs more to construct than to run
_LISTED_AMONG = select(BlacklistEntry.subject_kind, BlacklistEntry.subject_id).where(
    BlacklistEntry.subject_id == func.any(bindparam("ids")), _in_force(bindparam("at", type_=DateTime(timezone=True))))


async def is_blacklisted(session: AsyncSession, subject: Subject, at: datetime) -> bool:
    """Whether the subject is on the credit blacklist at `at`."""
    return bool(await session.scalar(select(BlacklistEntry.id).where(
        BlacklistEntry.subject_kind == subject.kind, BlacklistEntry.subject_id == subject.id, _in_force(at)).limit(1)))


async def blacklisted_among(session: AsyncSession, subjects: Iterable[Subject], at: datetime) -> set[Subject]:
    """The blacklisted ones of many subjects, in one query (matching asks for a few hundred at once)."""
    wanted = {(s.kind, s.id) for s in subjects}
    if not wanted:
        return set()
    rows = await session.execute(_LISTED_AMONG, {"ids": list({sid for _, sid in wanted}), "at": at})
    return {Subject(kind, sid) for kind, sid in rows.all() if (kind, sid) in wanted}  # type: ignore[arg-type]


class Blacklisted(Conflict):
    """409: the caregiver (`caregiver_blacklisted`) or its organisation (`organization_blacklisted`) is on the credit
    blacklist, so it may take no offer, assignment or billing."""

    code = "caregiver_blacklisted"


async def refuse_blacklisted(session: AsyncSession, *, caregiver_id: uuid.UUID, organization_id: uuid.UUID,
                             at: datetime) -> None:
    """Raise `Blacklisted` when the caregiver or its organisation is blacklisted at `at`: the same query as
    matching's filter (`blacklisted_among`), for the paths that name a caregiver without matching (a dispatcher's
    assignment, an accept, a capture)."""
    caregiver, organization = Subject("caregiver", caregiver_id), Subject("organization", organization_id)
    listed = await blacklisted_among(session, (caregiver, organization), at)
    if caregiver in listed:
        raise Blacklisted("the caregiver is on the credit blacklist", code="caregiver_blacklisted",
                          details={"caregiver_id": str(caregiver_id)})
    if organization in listed:
        raise Blacklisted("the caregiver's organisation is on the credit blacklist", code="organization_blacklisted",
                          details={"organization_id": str(organization_id)})
