"""Regenerates docs/console.png: logs in to a running `vnh serve --demo` as the demo dispatcher and photographs
the console in Debian's Chromium. Usage: .venv/bin/python docs/console_screenshot.py [http://127.0.0.1:8000]"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from playwright.async_api import async_playwright


async def main(base: str) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"])
        page = await browser.new_page(locale="zh-CN", viewport={"width": 1600, "height": 1000})
        await page.goto(f"{base}/console")
        await page.fill("input[name=username]", "demo-dispatcher")
        await page.fill("input[name=password]", "vnh-demo-2026")
        await page.click("button[type=submit]")
        await page.wait_for_selector("#console:not([hidden])")
        await page.wait_for_selector("#map circle")
        await page.wait_for_timeout(2500)
        out = Path(__file__).with_name("console.png")
        await page.screenshot(path=str(out), full_page=True)
        await browser.close()
        print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"))
