"""The caregiver app against a running `vnh serve`, as a phone would use it: its live stream over HTTP (httpx
streaming, Bearer token) gets its own urgent offer within the bound and never another caregiver's, resumes with
`Last-Event-ID` after a disconnect without losing what happened meanwhile, and the push provider's webhook (a real
local HTTP server) receives the signed push of the offer. Bounds are decisions §7's 10 s; the times are printed."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from dispatch.models import Caregiver, Offer
from kernel.audit import SystemActor
from kernel.runtime import Runtime
from orders.service import Intake, create_order
from tests.conftest import TEST_PASSWORD
from tests.dispatch.push_receiver import PushReceiver, signed_by
from tests.factories import XINI_TOWN, create_caregiver, create_elder, create_organization, offset, on_duty

BOUND_S = 10.0
SECRET = "e2e-push-secret"


@dataclass
class Frame:
    id: str | None
    event: str | None
    data: dict[str, Any] | None  # None: a comment (keep-alive)


async def frames(response: httpx.Response) -> AsyncIterator[Frame]:
    """Server-sent events as the EventSource spec frames them (a blank line ends a frame)."""
    fields: dict[str, str] = {}
    comment = False
    async for line in response.aiter_lines():
        if line == "":
            if fields or comment:
                yield Frame(fields.get("id"), fields.get("event"),
                            json.loads(fields["data"]) if "data" in fields else None)
            fields, comment = {}, False
        elif line.startswith(":"):
            comment = True
        else:
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value


async def next_event(stream: AsyncIterator[Frame], wanted: str, *, within: float = BOUND_S
                     ) -> tuple[Frame, list[Frame]]:
    """The first frame of type `wanted`, and every event frame before it."""
    before: list[Frame] = []

    async def read() -> Frame:
        async for frame in stream:
            if frame.event == wanted:
                return frame
            if frame.event is not None:
                before.append(frame)
        raise AssertionError("the stream ended")

    return await asyncio.wait_for(read(), within), before


@pytest.fixture
def receiver() -> Iterator[PushReceiver]:
    server = PushReceiver()
    yield server
    server.close()


@pytest.fixture
def pushing(committed_runtime: Runtime, receiver: PushReceiver, request: pytest.FixtureRequest
            ) -> tuple[Runtime, str]:
    """`vnh serve` with its push webhook pointed at the local receiver."""
    committed_runtime.settings.push.webhook_url = receiver.url
    committed_runtime.settings.push.webhook_secret = SecretStr(SECRET)
    served: tuple[Runtime, str] = request.getfixturevalue("served")
    return served


async def _login(client: httpx.AsyncClient, username: str) -> dict[str, str]:
    response = await client.post("/v1/auth/token", json={"username": username, "password": TEST_PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def _offer(rt: Runtime, order_id: Any, caregiver: Caregiver) -> Offer:
    async with rt.database.unit_of_work() as s:
        offer = await s.scalar(select(Offer).where(Offer.order_id == order_id, Offer.caregiver_id == caregiver.id))
    assert offer is not None
    return offer


async def test_a_caregivers_stream_gets_its_urgent_offer_only_and_resumes_after_a_disconnect(
        pushing: tuple[Runtime, str], receiver: PushReceiver) -> None:
    rt, base = pushing
    org = await create_organization(rt)
    elder = await create_elder(rt, lat=XINI_TOWN[0], lon=XINI_TOWN[1], preferences={})
    mine_login, their_login = f"cg-me-{uuid.uuid4().hex[:8]}", f"cg-other-{uuid.uuid4().hex[:8]}"
    me = await create_caregiver(rt, org, skills=["personal_care"], username=mine_login)
    other = await create_caregiver(rt, org, skills=["personal_care", "bathing"], username=their_login)
    await on_duty(rt, me, *offset(*XINI_TOWN, north_m=300))
    await on_duty(rt, other, *offset(*XINI_TOWN, north_m=800))

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        my_headers = await _login(client, mine_login)
        their_headers = await _login(client, their_login)
        async with client.stream("GET", "/v1/caregivers/me/stream", headers=my_headers) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = frames(response)
            ready, _ = await next_event(stream, "stream.ready")
            assert ready.data == {"type": "stream.ready", "last_event_id": int(ready.id or "")}
            async with rt.database.unit_of_work() as s:
                # only the other caregiver bathes: offered to them alone
                theirs, _ = await create_order(s, rt, SystemActor("test"), Intake(
                    elder_id=elder.id, service_code="bathing", window="asap", priority="normal", channel="hotline"))
            started = time.monotonic()
            async with rt.database.unit_of_work() as s:
                urgent, _ = await create_order(s, rt, SystemActor("test"), Intake(
                    elder_id=elder.id, service_code="daily_care", window="asap", priority="urgent",
                    channel="hotline"))
            mine = await _offer(rt, urgent.id, me)
            their_urgent = await _offer(rt, urgent.id, other)
            their_bathing = await _offer(rt, theirs.id, other)
            got, before = await next_event(stream, "dispatch.offer.created")
            took = time.monotonic() - started
            print(f"the urgent offer reached the caregiver's stream {took:.2f}s after its commit")
            assert got.data is not None
            assert (got.data["offer_id"], got.data["kind"]) == (str(mine.id), "urgent")
            assert got.data["expires_at"] == mine.expires_at.isoformat()
            assert got.data["offer"]["elder"]["name"].endswith("*")
            last_id = got.id
            assert last_id is not None and int(last_id) > int(ready.id or "")
            # nothing of the other caregiver's offers (its bathing offer committed first, its urgent one with ours)
            seen = json.dumps([f.data for f in [*before, got]])
            assert str(their_bathing.id) not in seen and str(their_urgent.id) not in seen
            assert str(theirs.id) not in seen and str(elder.id) not in seen and elder.name not in seen
        # disconnected; meanwhile the other caregiver takes the urgent order
        accepted = await client.post(f"/v1/offers/{their_urgent.id}/accept", headers=their_headers)
        assert accepted.status_code == 200, accepted.text
        async with client.stream("GET", "/v1/caregivers/me/stream",
                                 headers={**my_headers, "Last-Event-ID": last_id}) as response:
            assert response.status_code == 200
            stream = frames(response)
            lost, before = await next_event(stream, "dispatch.offer.withdrawn")
            assert before == []  # no `stream.ready`, nothing of theirs: straight on from where it left
            assert lost.data is not None
            assert (lost.data["offer_id"], lost.data["reason"]) == (str(mine.id), "another caregiver accepted")
            assert int(lost.id or "") > int(last_id)

    # a web view of the app, like the console, authenticates the stream with the session cookie instead
    async with httpx.AsyncClient(base_url=base, timeout=30) as browser:
        opened = await browser.post("/v1/auth/session", json={"username": mine_login, "password": TEST_PASSWORD})
        assert opened.status_code == 200 and browser.cookies.get("vnh_session")
        async with browser.stream("GET", "/v1/caregivers/me/stream") as response:
            assert response.status_code == 200
            ready, _ = await next_event(frames(response), "stream.ready")
            assert ready.data is not None and ready.data["last_event_id"] >= int(lost.id or "")

    # the phone got the push of its urgent offer through the provider's webhook, signed
    await asyncio.to_thread(receiver.wait_for, lambda pushes: any(p["caregiver_id"] == str(me.id) for p in pushes),
                            BOUND_S)
    ours = [(h, b) for h, b in receiver.received if json.loads(b)["caregiver_id"] == str(me.id)]
    assert len(ours) == 1, receiver.pushes()
    headers, body = ours[0]
    assert signed_by(SECRET, headers, body)
    push = json.loads(body)
    assert (push["title"], push["data"]["order_id"], push["data"]["offer_id"]) == (
        "新的紧急工单", str(urgent.id), str(mine.id))
    assert elder.name not in body.decode() and str(elder.id) not in body.decode()
    print(f"pushes received by the provider's webhook: {len(receiver.received)}")


@pytest.fixture
def rechecking(committed_runtime: Runtime, request: pytest.FixtureRequest) -> tuple[Runtime, str]:
    """`vnh serve` whose streams ask before every frame whether their token still holds."""
    committed_runtime.settings.auth.stream_recheck = timedelta(0)
    served: tuple[Runtime, str] = request.getfixturevalue("served")
    return served


async def test_an_open_stream_ends_when_its_token_is_logged_out(rechecking: tuple[Runtime, str]) -> None:
    """A revoked token must not keep a stream that was opened with it: after logout, the caregiver's next offer is
    not delivered on the old stream; the stream ends instead (kernel/event_stream.py asks `still_held`)."""
    rt, base = rechecking
    org = await create_organization(rt)
    elder = await create_elder(rt, lat=XINI_TOWN[0], lon=XINI_TOWN[1], preferences={})
    login = f"cg-out-{uuid.uuid4().hex[:8]}"
    me = await create_caregiver(rt, org, skills=["personal_care"], username=login)
    await on_duty(rt, me, *offset(*XINI_TOWN, north_m=300))
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        headers = await _login(client, login)
        async with client.stream("GET", "/v1/caregivers/me/stream", headers=headers) as response:
            assert response.status_code == 200
            stream = frames(response)
            await next_event(stream, "stream.ready")
            assert (await client.post("/v1/auth/logout", headers=headers)).status_code == 204
            async with rt.database.unit_of_work() as s:
                order, _ = await create_order(s, rt, SystemActor("test"), Intake(
                    elder_id=elder.id, service_code="daily_care", window="asap", priority="urgent",
                    channel="hotline"))
            assert (await _offer(rt, order.id, me)).status == "pending"
            with pytest.raises(AssertionError, match="the stream ended"):
                await next_event(stream, "dispatch.offer.created")
