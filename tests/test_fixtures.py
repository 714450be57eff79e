"""The harness itself: what one test does to its runtime does not reach the next one."""

from __future__ import annotations

import pytest
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch import candidates
from kernel.runtime import Runtime
from kernel.settings import Settings


def test_runtime_settings_share_no_nested_object_with_the_session(runtime: Runtime, base_settings: Settings) -> None:
    nested = [name for name in type(base_settings).model_fields
              if isinstance(getattr(base_settings, name), BaseModel)]
    assert nested  # push, auth, http, … (else this test proves nothing)
    shared = [name for name in nested if getattr(runtime.settings, name) is getattr(base_settings, name)]
    assert shared == []
    runtime.settings.push.webhook_url = "http://127.0.0.1:9/leak"
    assert base_settings.push.webhook_url != "http://127.0.0.1:9/leak"


_seeded: list[str] = []


async def test_service_requirements_cached_by_one_test(session: AsyncSession) -> None:
    await candidates._requirement(session, "bathing")
    assert "bathing" in candidates._REQUIREMENTS
    _seeded.append("bathing")


def test_the_next_test_starts_without_them() -> None:
    if not _seeded:
        pytest.skip("the test that fills the cache ran in another process")
    assert candidates._REQUIREMENTS == {}
