"""Local engine over WebRTC: mouth-to-ear turn latency and how many calls two cores sustain.

    .venv/bin/python benchmarks/engine_webrtc.py [--turns 20] [--max-calls 12]

The engine runs as its own process (`parley engine`, ICE pinned to 127.0.0.1); aiortc peers in
this process speak TTS sentences on their microphone track, paced in real time, and listen to the
agent's track. Per turn it measures, to the first agent audio packet above -45 dBFS received
(decoded as it arrives; a browser would play it out after its jitter buffer, 20-40 ms on loopback):
  * from the end of the user's speech in the sent audio (what a caller feels), and
  * from `input_audio_buffer.speech_stopped` on the data channel.
Then it runs N simultaneous calls, each taking a turn every few seconds, for growing N, and
reports turn latency and late agent frames (the engine's count of frames sent more than 20 ms
late: audible stutter) at each N.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from machine import describe, percentile  # noqa: E402
from parley.apps.scenarios import get_persona  # noqa: E402
from parley.engine.speech.tts import Tts  # noqa: E402
from parley.ice import pin_host_addresses  # noqa: E402
from parley.util.serving import free_port  # noqa: E402
from support.rtc import RtcPeer, of_type  # noqa: E402

SENTENCES = [
    "Hi, I would like to lower my monthly bill.",
    "I have been a customer for six years.",
    "Another company offered me internet for fifty dollars a month.",
    "If you cannot help me I will cancel my service.",
    "What does that offer include?",
    "That is still too expensive for me.",
]
SILENCE_WINDOW_MS = 500


async def open_call(url: str) -> RtcPeer:
    persona = get_persona("negotiator/sarah")
    peer = RtcPeer()
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        r = await http.post("/v1/realtime/calls", content=await peer.offer(), headers={
            "Authorization": "Bearer sk-bench", "Content-Type": "application/sdp"})
        r.raise_for_status()
    await peer.answer(r.text)
    await peer.wait_for(of_type("session.created"))
    peer.send({"type": "session.update", "session": {"type": "realtime", "instructions": persona.instructions}})
    await peer.wait_for(of_type("session.updated"))
    return peer


async def turn(peer: RtcPeer, pcm: object) -> tuple[float, float]:
    """(end of speech -> first audible frame, speech_stopped -> first audible frame) in ms."""
    mark = len(peer.events)
    peer.mic.say(pcm)  # type: ignore[arg-type]
    started = await peer.wait_for(of_type("output_audio_buffer.started"), timeout=60, start=mark)
    stopped_i = next(i for i in range(mark, len(peer.events))
                     if peer.events[i]["type"] == "input_audio_buffer.speech_stopped")
    stopped_at = peer.event_times[stopped_i]
    assert peer.mic.speech_end_at is not None
    heard = None
    for _ in range(300):
        heard = peer.first_audible_after(peer.mic.speech_end_at)
        if heard is not None:
            break
        await asyncio.sleep(0.01)
    assert heard is not None, "no audible agent audio"
    # Cut the answer short, as a caller would, and wait until the buffer is cleared.
    peer.send({"type": "output_audio_buffer.clear"})
    await peer.wait_for(lambda e: e["type"] in ("output_audio_buffer.cleared", "output_audio_buffer.stopped")
                        and e.get("response_id") == started["response_id"], timeout=30, start=mark)
    return (heard - peer.mic.speech_end_at) * 1000, (heard - stopped_at) * 1000


async def single(url: str, turns: int, speech: list[object]) -> float:
    peer = await open_call(url)
    ends, stops = [], []
    try:
        for n in range(turns):
            end_ms, stop_ms = await turn(peer, speech[n % len(speech)])
            ends.append(end_ms)
            stops.append(stop_ms)
            print(f"turn {n + 1:2d}: end of speech -> first audible frame {end_ms:6.0f} ms; "
                  f"speech_stopped -> first audible frame {stop_ms:5.0f} ms")
            await asyncio.sleep(0.3)
    finally:
        await peer.close()
    print()
    print(f"end of user speech -> first audible agent frame: p50 {percentile(ends, 50):.0f} ms, "
          f"p95 {percentile(ends, 95):.0f} ms (target p50 <= silence window {SILENCE_WINDOW_MS} + 150 ms)")
    print(f"speech_stopped -> first audible agent frame:     p50 {percentile(stops, 50):.0f} ms, "
          f"p95 {percentile(stops, 95):.0f} ms (target p50 <= 150, p95 <= 300)")
    return percentile(ends, 50)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def concurrent(url: str, calls: int, seconds: float, speech: list[object]) -> tuple[list[float], int, int]:
    async with httpx.AsyncClient(base_url=url) as http:
        late_before = (await http.get("/v1/realtime/healthz")).json()["late_frames"]
    peers = await asyncio.gather(*(open_call(url) for _ in range(calls)))
    latencies: list[float] = []
    failures = 0
    stop_at = time.monotonic() + seconds

    async def caller(peer: RtcPeer, seed: int) -> None:
        nonlocal failures
        rng = random.Random(seed)
        await asyncio.sleep(rng.uniform(0, 2))
        while time.monotonic() < stop_at:
            try:
                end_ms, _ = await turn(peer, speech[rng.randrange(len(speech))])
                latencies.append(end_ms)
            except (TimeoutError, AssertionError):
                failures += 1
            await asyncio.sleep(rng.uniform(1.0, 2.5))

    await asyncio.gather(*(caller(p, i) for i, p in enumerate(peers)))
    await asyncio.gather(*(p.close() for p in peers))
    async with httpx.AsyncClient(base_url=url) as http:
        late_after = (await http.get("/v1/realtime/healthz")).json()["late_frames"]
    return latencies, late_after - late_before, failures


async def run(url: str, turns: int, max_calls: int, seconds: float, engine_pid: int) -> None:
    tts = Tts()
    speech = [tts.synthesize_all(s, voice=v) for s, v in zip(SENTENCES, ["alloy", "echo", "coral"] * 2, strict=True)]
    base = await single(url, turns, speech)
    print()
    print(f"simultaneous calls, each taking a turn every few seconds ({seconds:.0f} s per level):")
    sustained = 0
    n = 1
    while n <= max_calls:
        cpu0, t0 = cpu_seconds(engine_pid), time.monotonic()
        lat, late, failures = await concurrent(url, n, seconds, speech)
        engine_cpu = (cpu_seconds(engine_pid) - cpu0) / (time.monotonic() - t0)
        p50 = percentile(lat, 50)
        ok = late == 0 and failures == 0 and p50 <= 2 * base
        print(f"  {n:2d} calls: {len(lat):3d} turns, p50 {p50:6.0f} ms, p95 {percentile(lat, 95):6.0f} ms, "
              f"late agent frames {late}, failed turns {failures}, engine CPU {engine_cpu:.0%} of a core "
              f"-> {'ok' if ok else 'degraded'}")
        if not ok:
            break
        sustained = n
        n = n + 1 if n < 4 else n + 2
    print(f"sustained: {sustained} simultaneous calls with no late frames and p50 within 2x of one call "
          f"({base:.0f} ms) (target >= 8)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--max-calls", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=25.0, help="duration of each concurrency level")
    args = parser.parse_args()
    print(f"machine: {describe()}")
    print("note: the engine and the client peers share these cores")
    pin_host_addresses(["127.0.0.1"])
    port = free_port()
    env = {**os.environ, "PARLEY_ENGINE_ICE_HOSTS": '["127.0.0.1"]'}
    engine = subprocess.Popen([sys.executable, "-m", "parley.cli", "engine", "--port", str(port), "--log-level",
                               "warning"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/v1/realtime/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        asyncio.run(run(url, args.turns, args.max_calls, args.seconds, engine.pid))
    finally:
        engine.terminate()
        engine.wait(10)


if __name__ == "__main__":
    main()
