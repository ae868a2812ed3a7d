"""Record the sideband event streams of real calls, for the replaying upstream (benchmarks/replayer.py).

    scripts/loopback-only .venv/bin/python benchmarks/record_calls.py [--calls 4]

A standalone `parley engine` and a `parley serve` in front of it (PARLEY_UPSTREAM=url, SQLite in a
temporary directory); each call goes through POST /api/calls with an aiortc peer that speaks (our
TTS) and types turns, so the persona's tools run (transfer to the supervisor, the outcome). A second
sideband on the engine (`/v1/realtime?call_id=`, the official SDK) receives what the server's own
sideband receives; every event is saved with its time from the start of the call, one JSON object
a line: benchmarks/data/calls/call-N.jsonl. The aiortc offer and the engine's answer of the first
call are saved too (benchmarks/data/offer.sdp, answer.sdp): the replayer needs an offer that passes
the server's SDP check, and an answer to give back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

import httpx
from openai import AsyncOpenAI

from support.cluster import EngineProcess, command, stop_all
from support.rtc import RtcPeer, of_type
from support.server import say_text, wait_done
from support.speech import speech_pcm24k

DATA = Path(__file__).parent / "data"
# Each call's turns: ("say", text) is spoken through the microphone, ("type", text) typed on the data channel.
SCRIPTS: list[list[tuple[str, str]]] = [
    [("say", "Hi, I would like to lower my monthly bill, it is too expensive."),
     ("type", "Another company offered me fifty dollars a month."),
     ("say", "I want to talk to your manager, someone else in charge."),
     ("say", "Yes please, I will take it. Sign me up.")],
    [("type", "Hello, my internet bill went up again this month."),
     ("say", "I have been a customer for six years."),
     ("type", "Can you do anything about the price?"),
     ("say", "No thanks, that is still too much.")],
    [("say", "Hi, my bill is too high."),
     ("type", "I want to talk to your manager, someone else in charge."),
     ("say", "Yes please, I will take it. Sign me up.")],
    [("type", "Hi there, I am thinking about cancelling my plan."),
     ("say", "The price went up by twenty dollars."),
     ("type", "What is the best offer you have?"),
     ("say", "Okay, I will think about it. Goodbye.")],
]


def start_server(data_dir: Path, upstream: str, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PARLEY_"))}
    env.update({"PARLEY_DATA_DIR": str(data_dir), "PARLEY_UPSTREAM": "url", "PARLEY_UPSTREAM_URL": upstream,
                "PARLEY_LOG_LEVEL": "warning", "HF_HUB_OFFLINE": "1", "PARLEY_MAX_CONCURRENT_CALLS": "10"})
    return subprocess.Popen([*command(), "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            cwd=data_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(timeout=2) as c:
        for _ in range(600):
            if proc.poll() is not None:
                raise SystemExit(f"parley serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            try:
                if (await c.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit("parley serve did not start")


def upstream_id(db: Path, call_id: str) -> str:
    with sqlite3.connect(db) as conn:
        row = conn.execute("select upstream_call_id from calls where id = ?", (call_id,)).fetchone()
    return str(row[0])


async def listen(engine_url: str, rtc_id: str, out: list[dict[str, Any]], began: float) -> None:
    client = AsyncOpenAI(api_key="sk-record", base_url=engine_url)
    async with client.realtime.connect(call_id=rtc_id) as conn:
        while True:
            try:
                raw = await conn.recv_bytes()
            except Exception:
                return
            event = json.loads(raw)
            if event["type"] == "conversation.item.retrieved":
                # The answer to the recording server's own request, with the item's whole audio: the
                # replayer answers retrieves itself, from the words; the audio is not needed.
                for part in event["item"].get("content", []):
                    part.pop("audio", None)
            out.append({"t": round(time.monotonic() - began, 4), "event": event})


async def record(index: int, script: list[tuple[str, str]], server: str, engine: EngineProcess, db: Path) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=60) as c:
        peer = RtcPeer()
        offer = await peer.offer()
        r = await c.post("/api/calls", json={"sdp": offer, "persona": "negotiator/sarah"})
        r.raise_for_status()
        call_id, answer = r.json()["call_id"], r.json()["sdp"]
        began = time.monotonic()
        events: list[dict[str, Any]] = []
        listener = asyncio.create_task(listen(engine.url, upstream_id(db, call_id), events, began))
        await peer.answer(answer)
        await peer.wait_for(of_type("session.created"))
        if index == 0:
            (DATA / "offer.sdp").write_text(offer)
            (DATA / "answer.sdp").write_text(answer)
        for how, text in script:
            if how == "say":
                start = len(peer.events)
                peer.mic.say(speech_pcm24k(text))
                await wait_done(peer, start, timeout=120)
            else:
                await wait_done(peer, say_text(peer, text), timeout=120)
            for _ in range(3):  # the server's agent may answer a tool call with another response
                await asyncio.sleep(1.5)
                created = [i for i, e in enumerate(peer.events) if e["type"] == "response.created"]
                done = [i for i, e in enumerate(peer.events) if e["type"] == "response.done"]
                if not created or (done and done[-1] > created[-1]):
                    break
                await wait_done(peer, created[-1], timeout=120)
        await asyncio.sleep(1.0)
        await c.post(f"/api/calls/{call_id}/hangup")
        await asyncio.wait_for(listener, 10)
        await peer.close()
    path = DATA / "calls" / f"call-{index + 1}.jsonl"
    path.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events))
    types: dict[str, int] = {}
    for e in events:
        types[e["event"]["type"]] = types.get(e["event"]["type"], 0) + 1
    print(f"{path.name}: {len(events)} events over {events[-1]['t']:.1f} s, {path.stat().st_size // 1024} KB; {types}")


async def main(calls: int) -> None:
    (DATA / "calls").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        engine = EngineProcess(Path(tmp) / "engine")
        from parley.util.serving import free_port

        port = free_port()
        server_dir = Path(tmp) / "server"
        server_dir.mkdir()
        proc = start_server(server_dir, engine.url, port)
        try:
            await engine.wait_healthy()
            await wait_healthy(f"http://127.0.0.1:{port}", proc)
            for i in range(calls):
                await record(i, SCRIPTS[i % len(SCRIPTS)], f"http://127.0.0.1:{port}", engine, server_dir / "parley.db")
        finally:
            stop_all([proc, engine.proc])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4)
    asyncio.run(main(parser.parse_args().calls))
