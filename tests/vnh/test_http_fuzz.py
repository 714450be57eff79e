"""Schemathesis over the service's own OpenAPI document, against a running `vnh serve`: no input may produce a
server error (5xx). Runs as an admin (the widest surface) with examples, coverage and fuzzing phases."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from kernel.audit import SystemActor
from kernel.auth import create_user
from kernel.runtime import Runtime
from tests.conftest import IN_CI, TEST_PASSWORD, settings_env
from tests.factories import create_elder, create_organization


async def test_no_request_the_schema_allows_makes_a_server_error(served: tuple[Runtime, str]) -> None:
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    if cli is None:
        if IN_CI:
            pytest.fail("schemathesis is not installed (pip install -e '.[dev]')")
        pytest.skip("schemathesis is not installed")
    rt, base = served
    # something to find: ids in the database make the fuzzer reach past 404s
    await create_organization(rt)
    await create_elder(rt)
    env = settings_env(rt.settings)
    async with rt.database.unit_of_work() as session:
        await create_user(session, rt.clock, SystemActor("test"), username="fuzz-admin", password=TEST_PASSWORD,
                          role="admin")
    async with httpx.AsyncClient(base_url=base) as client:
        # log in through the server: its clock dates the token
        token = await client.post("/v1/auth/token", json={"username": "fuzz-admin", "password": TEST_PASSWORD})
    assert token.status_code == 200, token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    run = await asyncio.create_subprocess_exec(
        cli, "run", f"{base}/openapi.json", "--checks", "not_a_server_error",
        "--header", f"Authorization: {headers['Authorization']}",
        "--phases", "examples,coverage,fuzzing", "--max-examples", os.environ.get("VNH_FUZZ_EXAMPLES", "15"),
        "--workers", "1", "--max-time", os.environ.get("VNH_FUZZ_SECONDS", "90"), "--seed", "2026", "--no-color",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env)
    out, _ = await asyncio.wait_for(run.communicate(), 400)
    report = out.decode(errors="replace")
    print(report[-6000:])
    assert run.returncode == 0, report[-8000:]
    assert re.search(r"\d+ (passed|generated)", report) or "test cases" in report, report[-3000:]
