"""Supervision's interface to the other domains (decisions §1). Until the credit/blacklist part of the supervision
issue lands, nobody is blacklisted."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class Subject:
    kind: Literal["organization", "caregiver"]
    id: uuid.UUID


async def is_blacklisted(session: AsyncSession, subject: Subject, at: datetime) -> bool:
    """Whether the subject is on the credit blacklist at `at` (neutral: never)."""
    del session, subject, at
    return False
