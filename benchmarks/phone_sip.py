"""Phone calls through SIP: mouth-to-ear turn latency on the RTP μ-law path, beside WebRTC's, and how
many simultaneous SIP calls two cores carry with no late agent packets.

    .venv/bin/python benchmarks/phone_sip.py [--turns 20] [--vad-silence-ms 500] [--compare]
    .venv/bin/python benchmarks/phone_sip.py --compare --baseline ../other-checkout/src
    .venv/bin/python benchmarks/phone_sip.py --calls 8 [--seconds 30]

`parley serve` runs as its own process with the engine in process taking SIP on a loopback UDP port
(PARLEY_ENGINE_SIP_ADDR) and announcing each INVITE with a signed webhook to the server's own
/webhooks/openai, which accepts it with Sarah's session. A SIP phone in this process (aiosipua for
signalling, as tests/support/sip_phone.py) dials it and keeps its line going as a phone does: one
20 ms G.711 μ-law RTP packet every 20 ms, the caller's sentences or silence. Per turn it measures
from the end of the caller's audible speech in the sent RTP to the first agent RTP packet above
-45 dBFS received. --compare follows each phone turn with a WebRTC turn on a `parley engine` at the
same silence window (see phone_common.py); --baseline SRC adds a turn on a second server run from
another checkout's code (before/after on the same load). --calls N ramps up to N calls, each taking a turn every
few seconds, and counts agent packets that arrived more than 20 ms behind the 20 ms pace.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import random
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe
from parley.util.serving import free_port
from phone_common import (
    AUDIBLE_DBFS,
    QUIET_SECONDS,
    SENTENCES,
    PaceWatch,
    WebRtcCaller,
    baseline_env,
    levels_up_to,
    process,
    ramp,
    sentences,
    serve_env,
    single,
    speech,
    ulaw,
    webrtc_engine,
)
from support.sip_phone import FRAME_8K, SipPhone

SILENCE = b"\xff" * FRAME_8K  # μ-law zero
AUDIBLE = 10 ** (AUDIBLE_DBFS / 20) * 32768


class SipCaller:
    """One SIP call to the engine: a line of paced RTP out, the agent's packets timed as they come."""

    def __init__(self, phone: SipPhone) -> None:
        self.phone = phone
        self.watch = PaceWatch(paced=True)
        self.utterance_started: float | None = None
        self.last_audible = 0.0
        self._seen = 0
        self._outgoing: deque[bytes] = deque()

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, sip: tuple[str, int], number: int = 0) -> Any:
        phone = await SipPhone.open(f"+1555{number:07d}")
        caller = cls(phone)
        line: asyncio.Task[None] | None = None
        try:
            began = time.monotonic()
            await phone.call(sip, timeout=120)
            line = asyncio.create_task(caller._line())
            await caller._wait(lambda: caller.last_audible > began, 120)  # her greeting
            await caller.quiet()
            yield caller
        finally:
            if line is not None:
                line.cancel()
                await asyncio.gather(line, return_exceptions=True)
            with contextlib.suppress(Exception):
                await phone.hang_up()
            await phone.close()

    async def _line(self) -> None:
        begin = time.monotonic()
        n = 0
        speaking = False
        while True:
            frame = self._outgoing.popleft() if self._outgoing else None
            if frame is not None and not speaking:
                self.utterance_started = max(time.monotonic(), begin + n * 0.02)
            speaking = frame is not None
            self.phone.send_packet(0, frame or SILENCE)
            self.phone._ts = (self.phone._ts + FRAME_8K) % 2**32
            n += 1
            self._account()
            delay = begin + n * 0.02 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    def _account(self) -> None:
        heard = self.phone.heard
        for h in heard[self._seen:]:
            self.watch.arrived(h.at)
            if np.sqrt(np.mean(h.pcm8k.astype(np.float64) ** 2)) > AUDIBLE:
                self.last_audible = h.at
        self._seen = len(heard)

    async def _wait(self, check: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError("timed out")
            await asyncio.sleep(0.01)
            self._account()

    async def quiet(self, timeout: float = 90.0) -> None:
        await self._wait(lambda: time.monotonic() - self.last_audible > QUIET_SECONDS, timeout)

    async def turn(self, text: str) -> float:
        """One sentence, then her whole answer; ms from its end to her first audible packet."""
        _pcm, end_ms = speech(text)
        self.utterance_started = None
        said = ulaw(text)
        self._outgoing.extend(said[i:i + FRAME_8K].ljust(FRAME_8K, b"\xff") for i in range(0, len(said), FRAME_8K))
        await self._wait(lambda: self.utterance_started is not None, 10)
        assert self.utterance_started is not None
        speech_end = self.utterance_started + end_ms / 1000
        await self._wait(lambda: self.last_audible >= speech_end, 90)
        heard = next(h.at for h in self.phone.heard if h.at >= speech_end
                     and np.sqrt(np.mean(h.pcm8k.astype(np.float64) ** 2)) > AUDIBLE)
        await self.quiet()
        return float((heard - speech_end) * 1000)


async def run_single(sips: list[tuple[str, int]], turns: int, compare: bool, silence_ms: int) -> None:
    async with contextlib.AsyncExitStack() as stack:
        phones = [await stack.enter_async_context(SipCaller.open(sip)) for sip in sips]
        webrtc = None
        if compare:
            engine_url = stack.enter_context(webrtc_engine())
            webrtc = await WebRtcCaller.open(engine_url, silence_ms)
            stack.push_async_callback(webrtc.close)
        labels = ["SIP (RTP)", "SIP baseline"]
        await single([(label, sentences(phone.turn)) for label, phone in zip(labels, phones, strict=False)], turns, webrtc)


async def engine_late_frames(url: str) -> int | None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        r = await http.get("/v1/realtime/healthz")
        return int(r.json()["late_frames"]) if r.status_code == 200 else None


async def run_level(url: str, sip: tuple[str, int], calls: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    failed = 0
    late_before = await engine_late_frames(url)
    async with contextlib.AsyncExitStack() as stack:
        phones = await asyncio.gather(*(stack.enter_async_context(SipCaller.open(sip, n)) for n in range(calls)))
        stop_at = time.monotonic() + seconds

        async def talk(phone: SipCaller, seed: int) -> None:
            nonlocal failed
            rng = random.Random(seed)
            await asyncio.sleep(rng.uniform(0, 2))
            while time.monotonic() < stop_at:
                try:
                    latencies.append(await phone.turn(SENTENCES[rng.randrange(len(SENTENCES))]))
                except (TimeoutError, AssertionError, StopIteration):
                    failed += 1
                await asyncio.sleep(rng.uniform(0.5, 2.0))

        await asyncio.gather(*(talk(p, i) for i, p in enumerate(phones)))
    late_after = await engine_late_frames(url)
    assert late_before is not None and late_after is not None, "the engine's /v1/realtime/healthz"
    # The engine's count is the authority (a packet sent more than 20 ms after its time); what the
    # phones saw also counts this process's own stalls (its event loop stamps the arrivals).
    seen = sum(p.watch.late for p in phones)
    return {"latencies": latencies, "failed": failed, "late": late_after - late_before,
            "packets": sum(p.watch.packets for p in phones), "worst_ms": max(p.watch.worst_ms for p in phones),
            "extra": f"late as received by the phones {seen} (the count before is the engine's)"}


async def warm_up(sip: tuple[str, int]) -> None:
    async with SipCaller.open(sip, 999) as phone:
        await phone.turn(SENTENCES[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--vad-silence-ms", type=int, default=500)
    parser.add_argument("--compare", action="store_true", help="a WebRTC turn after each phone turn")
    parser.add_argument("--baseline", metavar="SRC", help="also a server from another checkout's src directory, "
                        "turn by turn with this one (before/after)")
    parser.add_argument("--calls", type=int, default=0, help="ramp up to this many simultaneous calls")
    parser.add_argument("--seconds", type=float, default=30.0, help="duration of each --calls level")
    args = parser.parse_args()
    print(f"machine: {describe()}")
    print(f"note: parley serve (with the engine in process), the SIP phones{' and parley engine' if args.compare else ''}"
          f" share these cores; VAD silence window {args.vad_silence_ms} ms")
    port, sip_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    sip = ("127.0.0.1", sip_port)
    with contextlib.ExitStack() as stack:
        stack.enter_context(process(["serve", "--port", str(port)], sip_env(url, sip_port, args.vad_silence_ms),
                                    f"{url}/healthz"))
        sips = [sip]
        if args.baseline:
            other, other_sip = free_port(), free_port()
            env = baseline_env(sip_env(f"http://127.0.0.1:{other}", other_sip, args.vad_silence_ms), args.baseline)
            stack.enter_context(process(["serve", "--port", str(other)], env, f"http://127.0.0.1:{other}/healthz"))
            sips.append(("127.0.0.1", other_sip))
        if args.calls:
            print(f"simultaneous SIP calls, each taking a turn every few seconds ({args.seconds:.0f} s per level):")
            asyncio.run(ramp(levels_up_to(args.calls), lambda n: run_level(url, sip, n, args.seconds),
                             lambda: warm_up(sip)))
        else:
            asyncio.run(run_single(sips, args.turns, args.compare, args.vad_silence_ms))


def sip_env(url: str, sip_port: int, silence_ms: int) -> dict[str, str]:
    """A server whose in-process engine takes SIP on `sip_port` and announces calls to the server."""
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    return serve_env(tempfile.mkdtemp(prefix="parley-sip-bench-"), silence_ms,
                     PARLEY_ENGINE_SIP_ADDR=f"127.0.0.1:{sip_port}", PARLEY_OPENAI_WEBHOOK_SECRET=secret,
                     PARLEY_ENGINE_SIP_WEBHOOK_URL=f"{url}/webhooks/openai")

if __name__ == "__main__":
    main()
