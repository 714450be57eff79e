"""What a finished visit bills, end to end: an approved visit with no service time bills nothing (issue 13 #11)."""

from __future__ import annotations

from sqlalchemy import select

from billing.models import Capture
from tests.world import World


async def test_an_approved_zero_minute_hourly_visit_bills_nothing(world: World) -> None:
    client = world.client
    order = await world.order(headers=world.family, service_code="daily_care")  # hourly
    offer = (await world.offers_of(0))[0]
    cg = await world.as_cg(0)
    visit_id = (await client.post(f"/v1/offers/{offer['id']}/accept", headers=cg)).json()["visit_id"]
    here = {"lat": world.home[0], "lon": world.home[1]}
    assert (await client.post(f"/v1/visits/{visit_id}/check-in", json=here, headers=cg)).status_code == 200
    out = await client.post(f"/v1/visits/{visit_id}/check-out", json=here, headers=cg)  # the same minute
    assert out.status_code == 200, out.text
    assert out.json()["duration_min"] == 0 and out.json()["billing"] == "held"
    approved = await client.post(f"/v1/visits/{visit_id}/flags/too_short/resolve",
                                 json={"decision": "approved", "reason": "老人临时外出，已电话核实"},
                                 headers=world.dispatcher)
    assert approved.status_code == 200, approved.text
    confirmed = await client.post(f"/v1/visits/{visit_id}/confirm", json={"rating": 3}, headers=world.family)
    assert confirmed.status_code == 200 and confirmed.json()["billing"] == "captured", confirmed.text
    async with world.rt.database.unit_of_work() as s:
        capture = await s.scalar(select(Capture).where(Capture.order_id == order["id"]))
    assert capture is not None
    assert (capture.price_fen, capture.quota_fen, capture.copay_fen) == (0, 0, 0)
