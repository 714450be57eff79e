"""The console in a real browser (Debian's Chromium driven by Playwright) against a running `vnh serve`."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from dispatch import live
from dispatch.models import Offer
from kernel.audit import SystemActor
from kernel.auth import create_user
from kernel.runtime import Runtime
from orders.service import Intake, create_order
from tests.conftest import TEST_PASSWORD
from tests.factories import XINI_TOWN, create_caregiver, create_elder, create_organization, offset, on_duty


async def _login(page: Any, base: str, username: str) -> None:
    await page.goto(f"{base}/console")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", TEST_PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#console:not([hidden])", timeout=10_000)


async def test_a_manual_assignment_from_the_page_reaches_the_caregivers_offers(
        served: tuple[Runtime, str], browser: Any) -> None:
    rt, base = served
    org = await create_organization(rt)
    elder = await create_elder(rt, lat=XINI_TOWN[0], lon=XINI_TOWN[1], preferences={})
    async with rt.database.unit_of_work() as s:
        await create_user(s, rt.clock, SystemActor("test"), username="console-dispatcher", password=TEST_PASSWORD,
                          role="dispatcher", region_code="150625")
        # nobody is on duty yet: the order lands in the dispatcher's queue
        order, _ = await create_order(s, rt, SystemActor("test"), Intake(
            elder_id=elder.id, service_code="daily_care", window="asap", priority="normal", channel="hotline"))
    assert order.status == "unfulfilled"
    chosen = await create_caregiver(rt, org, name="张秀英", skills=["personal_care"])
    await on_duty(rt, chosen, *offset(*XINI_TOWN, north_m=800))
    await live.set_position(rt, chosen.id, *offset(*XINI_TOWN, north_m=800), datetime.now(UTC))

    page = await browser.new_page(locale="zh-CN")
    await _login(page, base, "console-dispatcher")
    card = page.locator(f'li[data-order="{order.id}"]')
    await card.wait_for(timeout=10_000)
    await card.locator('[data-action="assign"]').click()
    choice = page.locator(f'[data-candidate="{chosen.id}"] [data-action="choose"]')
    await choice.wait_for(timeout=10_000)
    started = time.monotonic()
    await choice.click()
    offer = None
    while time.monotonic() - started < 10 and offer is None:
        async with rt.database.unit_of_work() as s:
            offer = await s.scalar(select(Offer).where(Offer.order_id == order.id, Offer.caregiver_id == chosen.id,
                                                       Offer.status == "pending"))
    assert offer is not None and offer.kind == "manual"
    print(f"assignment reached the caregiver's offers {time.monotonic() - started:.2f}s after the click")
    await page.close()
