"""The dispatcher's queue over HTTP: `unfulfilled` orders of the region, each with why it waits; order lists carry
no (empty) history, the single order does."""

from __future__ import annotations

from typing import Any

from tests.conftest import login_headers
from tests.factories import create_elder
from tests.world import World


async def _queue(world: World, headers: dict[str, str] | None = None, **params: Any) -> dict[str, Any]:
    answer = await world.client.get("/v1/dispatch/queue", params=params, headers=headers or world.dispatcher)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def _decline_all(world: World, order_id: str) -> None:
    for index in range(3):
        offers = [o for o in await world.offers_of(index) if o["order_id"] == order_id]
        declined = await world.client.post(f"/v1/offers/{offers[0]['id']}/decline", json={"reason": "忙"},
                                           headers=await world.as_cg(index))
        assert declined.status_code == 200


async def test_the_queue_lists_unfulfilled_orders_with_their_reason(world: World) -> None:
    callback = await world.order(service_code="hotline_callback", channel="hotline")
    declined = await world.order()
    await _decline_all(world, declined["id"])
    assigned = await world.order()
    chosen = world.caregivers[2]
    await world.client.post(f"/v1/orders/{assigned['id']}/assign", json={"caregiver_id": str(chosen.id)},
                            headers=world.dispatcher)
    manual = [o for o in await world.offers_of(2) if o["order_id"] == assigned["id"]]
    await world.client.post(f"/v1/offers/{manual[0]['id']}/decline", json={"reason": "太远"},
                            headers=await world.as_cg(2))
    offered = await world.order()  # still offered: not in the queue

    page = await _queue(world)
    reasons = {item["order"]["id"]: item["reason"] for item in page["items"]}
    assert reasons == {callback["id"]: "hotline_callback", declined["id"]: "nobody_accepted",
                       assigned["id"]: "assigned_caregiver_declined"}
    assert offered["id"] not in reasons and page["next_cursor"] is None
    item = next(i for i in page["items"] if i["order"]["id"] == declined["id"])
    assert item["detail"] == "no qualified caregiver left" and item["queued_at"]
    assert "history" not in item["order"]

    first = await _queue(world, limit=2)
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = await _queue(world, limit=2, cursor=first["next_cursor"])
    assert [i["order"]["id"] for i in first["items"] + rest["items"]] == [i["order"]["id"] for i in page["items"]]


async def test_nobody_in_reach_and_other_regions_stay_out_of_the_queue(world: World) -> None:
    far = await create_elder(world.rt, lat=39.9, lon=116.4)  # Beijing: nobody on duty there, same region record
    order = await world.order(elder_id=str(far.id))
    assert order["status"] == "unfulfilled"
    assert [i["reason"] for i in (await _queue(world))["items"]] == ["nobody_in_reach"]
    elsewhere = await login_headers(world.rt, "dispatcher", region_code="110101")
    assert (await _queue(world, headers=elsewhere))["items"] == []
    auditor = await login_headers(world.rt, "auditor", region_code="150625")
    assert len((await _queue(world, headers=auditor))["items"]) == 1
    refused = await world.client.get("/v1/dispatch/queue", headers=world.family)
    assert refused.status_code == 403


async def test_order_lists_leave_out_history_and_the_order_has_it(world: World) -> None:
    order = await world.order()
    listed = (await world.client.get("/v1/orders", headers=world.dispatcher)).json()["items"]
    assert [o["id"] for o in listed] == [order["id"]] and "history" not in listed[0]
    single = (await world.client.get(f"/v1/orders/{order['id']}", headers=world.dispatcher)).json()
    assert [h["status"] for h in single["history"]] == ["created", "dispatching", "offered"]
