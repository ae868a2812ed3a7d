"""Headless Chromium (Debian's, never a downloaded one) driven by Playwright, with a fake microphone."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def chromium_args(fake_audio: Path | None, *, deny_microphone: bool = False, ask_microphone: bool = False) -> list[str]:
    args = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-device-for-media-stream", "--allow-loopback-in-peer-connection",
        "--autoplay-policy=no-user-gesture-required",
    ]
    if not ask_microphone:  # (asked: the test grants it with the context's grant_permissions)
        # a user who says no to the microphone prompt, or one who says yes
        args.append("--deny-permission-prompts" if deny_microphone else "--use-fake-ui-for-media-stream")
    if fake_audio is not None:
        args.append(f"--use-file-for-fake-audio-capture={fake_audio}")
    return args


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup --test installs it as root)")


@asynccontextmanager
async def browser(fake_audio: Path | None = None, *, deny_microphone: bool = False, ask_microphone: bool = False,
                  extra_args: list[str] | None = None) -> AsyncIterator[Any]:
    require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        args = chromium_args(fake_audio, deny_microphone=deny_microphone, ask_microphone=ask_microphone) \
            + (extra_args or [])
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield b
        finally:
            await b.close()


async def until(page: Any, expression: str, timeout: float = 60.0, *, context: str = "null") -> Any:
    """Poll a JavaScript expression until it is truthy; its value. `context` (JS) explains a timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await page.evaluate(expression)
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"{expression!r} never held; {await page.evaluate(context)}")
        await asyncio.sleep(0.1)
