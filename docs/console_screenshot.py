"""Regenerates docs/console.png: logs in to a running `vnh serve --demo` as the demo dispatcher and photographs
the console in Debian's Chromium. Usage: .venv/bin/python docs/console_screenshot.py [http://127.0.0.1:8000]

The demo raises one device alarm of each severity when it starts on a region without open alarms (a fall, a heart
rate out of range, a low battery); start it on a fresh data directory for the picture in the README."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from playwright.async_api import async_playwright


async def main(base: str) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"])
        # reduced motion: the pulsing of unacknowledged critical alarms would otherwise be caught mid-animation
        page = await browser.new_page(locale="zh-CN", viewport={"width": 1600, "height": 1000},
                                      timezone_id="Asia/Shanghai", reduced_motion="reduce")
        await page.goto(f"{base}/console")
        await page.fill("input[name=username]", "demo-dispatcher")
        await page.fill("input[name=password]", "vnh-demo-2026")
        await page.click("button[type=submit]")
        await page.wait_for_selector("#console:not([hidden])")
        # the demo's caregivers, its open orders and its device alarms (one of each severity when it starts)
        await page.wait_for_selector("#map [data-caregiver]")
        await page.wait_for_selector("#map .alarm-marker")
        await page.wait_for_selector("#link.up")
        await page.wait_for_timeout(2500)
        out = Path(__file__).with_name("console.png")
        await page.screenshot(path=str(out), full_page=True)
        await browser.close()
        print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"))
