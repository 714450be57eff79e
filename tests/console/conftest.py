"""A running `vnh serve` and a headless Chromium for end-to-end console tests."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from kernel.clock import ManualClock
from kernel.runtime import Runtime
from tests.conftest import IN_CI, settings_env

CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def served(committed_runtime: Runtime, tmp_path: Path) -> AsyncIterator[tuple[Runtime, str]]:
    """`vnh serve` on the committed test database, with the test runtime's clock set to now (the server's)."""
    assert isinstance(committed_runtime.clock, ManualClock)
    committed_runtime.clock.set(datetime.now(UTC))
    port = _free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vnh.cli", "serve", "--port", str(port), env=settings_env(committed_runtime.settings),
        stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            for _ in range(120):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.5)
        yield committed_runtime, base
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 60)
        log.close()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if shutil.which("chromium") is None:
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        if IN_CI:
            pytest.fail("playwright is not installed (pip install -e '.[dev]')")
        pytest.skip("playwright is not installed")
    async with async_playwright() as p:
        instance = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"])
        try:
            yield instance
        finally:
            await instance.close()
