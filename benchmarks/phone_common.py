"""What the phone benchmarks (phone_twilio.py, phone_sip.py) share: the server and engine processes,
the caller's sentences, a WebRTC caller to compare with, late-frame counting and the printed lines.

Every latency is from the end of the caller's audible speech in what was sent (the last sample above
0.01, as `support.speech.speech_bounds_ms` finds it, on both paths) to the first agent packet above
-45 dBFS received. With --compare each phone turn is followed by a WebRTC turn on a `parley engine`
at the same silence window, so both see the same load on this shared machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from machine import percentile  # noqa: E402
from parley.apps.scenarios import get_persona  # noqa: E402
from parley.audio.levels import dbfs  # noqa: E402
from parley.engine.webrtc import FRAME_SAMPLES  # noqa: E402
from parley.ice import pin_host_addresses  # noqa: E402
from parley.util.serving import free_port  # noqa: E402
from support.rtc import RtcPeer, of_type  # noqa: E402
from support.speech import speech_bounds_ms, speech_pcm24k  # noqa: E402
from support.twilio import ulaw_speech  # noqa: E402

SENTENCES = [
    "Hi, I would like to lower my monthly bill.",
    "I have been a customer for six years.",
    "Another company offered me internet for fifty dollars a month.",
    "If you cannot help me I will cancel my service.",
    "What does that offer include?",
    "That is still too expensive for me.",
]
AUDIBLE_DBFS = -45.0
QUIET_SECONDS = 1.5  # no agent audio for this long: her answer is over
LATE_MS = 20.0  # a packet this much behind its pace is a stutter


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.get(url).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} never answered")


def baseline_env(env: dict[str, str], src: str | None) -> dict[str, str]:
    """`env` for a server from another checkout's `src` (--baseline: before/after side by side)."""
    return {**env, "PYTHONPATH": str(Path(src).resolve())} if src else env


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], health: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-m", "parley.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_healthy(health, proc)
        yield proc
    finally:
        proc.terminate()
        proc.wait(15)


def serve_env(data_dir: str, silence_ms: int, **extra: str) -> dict[str, str]:
    """`parley serve` on the local engine, loopback only, no key, limits out of the benchmark's way."""
    env = {**os.environ, "PARLEY_DATA_DIR": data_dir, "PARLEY_UPSTREAM": "local",
           "PARLEY_VAD_SILENCE_MS": str(silence_ms), "PARLEY_ENGINE_ICE_HOSTS": '["127.0.0.1"]',
           "PARLEY_MAX_CONCURRENT_CALLS": "64", "PARLEY_RATE_LIMIT_BURST": "200",
           "PARLEY_RATE_LIMIT_PER_MINUTE": "600", "PARLEY_DAILY_COST_CAP_USD": "100000",
           "PARLEY_MAX_CALL_COST_USD": "10000", **extra}
    env.pop("OPENAI_API_KEY", None)
    return env


@contextlib.contextmanager
def webrtc_engine() -> Iterator[str]:
    """`parley engine` in its own process, for the WebRTC figure beside the phone's."""
    pin_host_addresses(["127.0.0.1"])
    port = free_port()
    env = {**os.environ, "PARLEY_ENGINE_ICE_HOSTS": '["127.0.0.1"]'}
    with process(["engine", "--port", str(port), "--log-level", "warning"], env,
                 f"http://127.0.0.1:{port}/v1/realtime/healthz"):
        yield f"http://127.0.0.1:{port}"


@functools.cache
def speech(text: str) -> tuple[np.ndarray, float]:
    """The caller's sentence as float32 24 kHz, and where its audible speech ends (ms into it).
    Cached: synthesizing it mid-call would stall this process's callers (and look like late packets)."""
    return speech_pcm24k(text), speech_bounds_ms(text)[1]


@functools.cache
def ulaw(text: str) -> bytes:
    """The caller's sentence as G.711 μ-law at 8 kHz (cached, as `speech`)."""
    return ulaw_speech(text)


class WebRtcCaller:
    """A browser-like caller over WebRTC, timed exactly as the phone callers are."""

    def __init__(self, peer: RtcPeer) -> None:
        self.peer = peer

    @classmethod
    async def open(cls, url: str, silence_ms: int) -> WebRtcCaller:
        peer = RtcPeer()
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            r = await http.post("/v1/realtime/calls", content=await peer.offer(), headers={
                "Authorization": "Bearer sk-bench", "Content-Type": "application/sdp"})
            r.raise_for_status()
        await peer.answer(r.text)
        await peer.wait_for(of_type("session.created"))
        peer.send({"type": "session.update", "session": {
            "type": "realtime", "instructions": get_persona("negotiator/sarah").instructions,
            "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms}}}}})
        await peer.wait_for(of_type("session.updated"))
        return cls(peer)

    async def turn(self, text: str) -> float:
        """One sentence; ms from its end to the first audible agent packet (her answer is then cut)."""
        pcm, end_ms = speech(text)
        # The mic notes when its last frame above -50 dBFS ended; move that back to the sample
        # threshold the phone benchmarks use (the clip starts on a frame boundary).
        frames = [i for i in range(0, pcm.size, FRAME_SAMPLES) if dbfs(pcm[i:i + FRAME_SAMPLES]) > -50]
        frame_end_ms = (frames[-1] + FRAME_SAMPLES) / 24 if frames else end_ms
        peer = self.peer
        mark = len(peer.events)
        peer.mic.say(pcm)
        started = await peer.wait_for(of_type("output_audio_buffer.started"), timeout=60, start=mark)
        assert peer.mic.speech_end_at is not None
        speech_end = peer.mic.speech_end_at - (frame_end_ms - end_ms) / 1000
        heard = None
        for _ in range(600):
            heard = peer.first_audible_after(speech_end, AUDIBLE_DBFS)
            if heard is not None:
                break
            await asyncio.sleep(0.01)
        assert heard is not None, "no audible agent audio"
        peer.send({"type": "output_audio_buffer.clear"})
        await peer.wait_for(lambda e: e["type"] in ("output_audio_buffer.cleared", "output_audio_buffer.stopped")
                            and e.get("response_id") == started["response_id"], timeout=30, start=mark)
        await asyncio.sleep(0.3)
        return (heard - speech_end) * 1000

    async def close(self) -> None:
        await self.peer.close()


def summary(values: list[float]) -> str:
    return (f"p50 {percentile(values, 50):4.0f} ms, p95 {percentile(values, 95):4.0f} ms, "
            f"max {max(values):4.0f} ms ({len(values)} turns)")


Turn = Callable[[int], Awaitable[float]]


def sentences(say: Callable[[str], Awaitable[float]]) -> Turn:
    """Turn n says SENTENCES[n], round and round."""
    def turn(n: int) -> Awaitable[float]:
        return say(SENTENCES[n % len(SENTENCES)])
    return turn


async def single(phones: list[tuple[str, Turn]], turns: int, webrtc: WebRtcCaller | None) -> None:
    """`turns` turns on each phone line (a baseline's too), each followed by a WebRTC turn when
    comparing, interleaved so that all share the machine's load; the figures side by side."""
    lines: dict[str, list[float]] = {label: [] for label, _ in phones}
    rtc: list[float] = []
    for n in range(turns):
        parts = []
        for label, phone_turn in phones:
            lines[label].append(await phone_turn(n))
            parts.append(f"{label} {lines[label][-1]:5.0f} ms")
        if webrtc is not None:
            rtc.append(await webrtc.turn(SENTENCES[n % len(SENTENCES)]))
            parts.append(f"WebRTC {rtc[-1]:5.0f} ms")
        print(f"turn {n + 1:2d}: " + ", ".join(parts), flush=True)
    print()
    width = max(len(label) for label in [*lines, "WebRTC"])
    print("end of caller speech -> first audible agent packet:")
    for label, values in lines.items():
        print(f"  {label:<{width}}  {summary(values)}")
    if webrtc is not None:
        print(f"  {'WebRTC':<{width}}  {summary(rtc)}")
        for label, values in lines.items():
            d50 = percentile(values, 50) - percentile(rtc, 50)
            d95 = percentile(values, 95) - percentile(rtc, 95)
            print(f"{label} - WebRTC: p50 {d50:+.0f} ms, p95 {d95:+.0f} ms; ratio p50 "
                  f"{percentile(values, 50) / percentile(rtc, 50):.2f} (target: within 30 ms)")
    if len(phones) > 1:
        (now, a), (then, b) = list(lines.items())[:2]
        print(f"{now} - {then}: p50 {percentile(a, 50) - percentile(b, 50):+.0f} ms, "
              f"p95 {percentile(a, 95) - percentile(b, 95):+.0f} ms")


class PaceWatch:
    """Late agent packets against their pace. `paced` (RTP, sent every 20 ms): packet k is due at
    t0 + k * 20 ms, t0 set by the earliest arrival so far. Buffered (Twilio plays what it was sent
    ahead of time): packet k plays at t0 + k * 20 ms from the first arrival of the burst, and one
    arriving after that has stalled the playout (the clock waits for it). `restart()`: a new burst."""

    def __init__(self, *, paced: bool) -> None:
        self.paced = paced
        self.late = 0
        self.packets = 0
        self.worst_ms = 0.0
        self._t0: float | None = None
        self._played = 0.0  # seconds of audio before this packet

    def restart(self) -> None:
        self._t0, self._played = None, 0.0

    def arrived(self, at: float, duration_s: float = 0.02) -> None:
        if self._t0 is None:
            self._t0 = at - self._played
        due = self._t0 + self._played
        late_ms = (at - due) * 1000
        if late_ms > 0:
            self.worst_ms = max(self.worst_ms, late_ms)
            if late_ms > LATE_MS:
                self.late += 1
            if not self.paced:
                self._t0 += at - due  # the player waited for it
        elif self.paced:
            self._t0 += at - due  # earlier than the pace so far: the pace was later than it could be
        self._played += duration_s
        self.packets += 1


async def ramp(levels: list[int], run_level: Callable[[int], Awaitable[dict[str, Any]]],
               warm_up: Callable[[], Awaitable[None]]) -> None:
    """Each level of simultaneous calls in turn, until one has late packets or failed turns; after
    one call that is not counted (the server's first call loads what it had not yet)."""
    for text in SENTENCES:
        speech(text), ulaw(text)
    await warm_up()
    sustained = 0
    prompt: int | None = None  # the most calls whose p50 stayed within 2x of one call's
    base: float | None = None
    for n in levels:
        r = await run_level(n)
        ok = r["late"] == 0 and r["failed"] == 0
        lat = r["latencies"]
        figures = summary(lat) if lat else "no turns"
        if lat and base is None:
            base = percentile(lat, 50)
        if lat and base is not None and percentile(lat, 50) <= 2 * base and prompt == (sustained or None):
            prompt = n
        print(f"  {n:2d} calls: {figures}; late agent packets {r['late']} of {r['packets']} "
              f"(the worst {r['worst_ms']:.0f} ms behind as received), failed turns {r['failed']}"
              f"{', ' + r['extra'] if r.get('extra') else ''} -> {'ok' if ok else 'late'}", flush=True)
        if not ok:
            break
        sustained = n
    print(f"sustained: {sustained} simultaneous phone calls with no agent packet more than {LATE_MS:.0f} ms late; "
          f"{prompt or 0} with turn latency p50 within 2x of one call's")


def levels_up_to(n: int) -> list[int]:
    out, k = [], 1
    while k <= n:
        out.append(k)
        k = k + 1 if k < 4 else k + 2
    if out[-1] != n:
        out.append(n)
    return out
