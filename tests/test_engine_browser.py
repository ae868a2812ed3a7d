"""Headless Chromium runs a plain browser WebRTC client (the one the product was designed from) against
the engine, with a fake microphone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from parley.apps.local import local_engine
from parley.apps.scenarios import get_persona
from parley.engine import webrtc
from parley.engine.app import EngineSettings, create_app
from parley.engine.speech.wer import wer
from parley.util.serving import serve_app
from support.browser import browser, until
from support.speech import speech_wav

pytestmark = [pytest.mark.browser, pytest.mark.slow]

OPUS_BITRATE = webrtc.OPUS_MAX_AVERAGE_BITRATE
SENTENCE = "Hello, my monthly bill is too expensive and I want a better price."
PAGES = Path(__file__).parent / "browser"


@pytest.fixture(scope="module")
def engine_and_page() -> Iterator[tuple[str, str]]:
    engine = local_engine(EngineSettings(ice_hosts=["127.0.0.1"]))
    pages = Starlette(routes=[Mount("/", StaticFiles(directory=PAGES, html=True))])
    with serve_app(create_app(engine)) as engine_url, serve_app(pages) as page_url:
        yield engine_url, page_url


async def test_seed_page_calls_the_engine_with_an_ephemeral_key(
        engine_and_page: tuple[str, str], tmp_path: Path) -> None:
    engine_url, page_url = engine_and_page
    sarah, marco = get_persona("negotiator/sarah"), get_persona("negotiator/marco")
    async with httpx.AsyncClient(base_url=engine_url) as http:
        r = await http.post("/v1/realtime/client_secrets", headers={"Authorization": "Bearer sk-server"}, json={
            "session": {"type": "realtime", "instructions": sarah.instructions, "audio": {
                "input": {"transcription": {"model": "whisper-1"}}, "output": {"voice": sarah.voice}}}})
        token = r.json()["value"]
    wav = speech_wav(tmp_path, SENTENCE, lead_silence_ms=500, tail_silence_ms=25000)
    async with browser(wav) as chromium:
        page = await chromium.new_page()
        await page.goto(f"{page_url}/seed_call.html")
        call_id = await page.evaluate("([u, t]) => window.startCall(u, t)", [engine_url, token])
        assert call_id.startswith("rtc_")

        sideband_events: list[dict[str, Any]] = []
        async with websockets.connect(f"{engine_url.replace('http', 'ws')}/v1/realtime?call_id={call_id}",
                                      additional_headers={"Authorization": "Bearer sk-server"}) as sideband:
            async def listen() -> None:
                async for message in sideband:
                    sideband_events.append(json.loads(message))

            listener = asyncio.create_task(listen())
            transcript = await until(page, """window.events.filter(e =>
                e.type === 'conversation.item.input_audio_transcription.completed').map(e => e.transcript)[0]""")
            assert wer(SENTENCE, transcript) <= 0.3, transcript
            answer = await until(page, """window.events.filter(e => e.type === 'response.done')
                .map(e => e.response.output[0].content[0].transcript)[0]""")
            assert answer
            await until(page, "window.events.some(e => e.type === 'output_audio_buffer.stopped')", 30)
            audio = await page.evaluate("window.inboundAudio()")
            assert audio["packets"] > 50 and audio["energy"] > 0, audio
            # Chrome codes the microphone at the bitrate the engine's answer asks for (its default
            # of 32 kbps costs whisper words)
            sent = await page.evaluate("window.outboundAudio()")
            assert sent["bytes"] > 0 and sent["target"] == OPUS_BITRATE, sent

            # the sideband saw the same response as the page
            page_done = await page.evaluate("window.events.filter(e => e.type === 'response.done')[0].event_id")
            assert page_done in [e.get("event_id") for e in sideband_events]

            # and its session.update changes who answers next
            await sideband.send(json.dumps({"type": "session.update", "session": {
                "type": "realtime", "instructions": marco.instructions, "audio": {"output": {"voice": marco.voice}}}}))
            await sideband.send(json.dumps({"type": "response.create"}))
            second = await until(page, """(() => { const d = window.events.filter(e => e.type === 'response.done');
                return d.length > 1 ? d[d.length - 1].response.output[0].content[0].transcript : null; })()""")
            assert "Marco" in second, second
            listener.cancel()
        await page.close()
