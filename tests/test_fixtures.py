"""The harness itself: what one test does to its runtime does not reach the next one."""

from __future__ import annotations

from pydantic import BaseModel

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
