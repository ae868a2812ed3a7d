"""Phone calls through the Twilio bridge: mouth-to-ear turn latency on the μ-law path, beside WebRTC's,
and how many simultaneous phone calls two cores carry with no late agent audio.

    .venv/bin/python benchmarks/phone_twilio.py [--turns 20] [--vad-silence-ms 500] [--compare]
    .venv/bin/python benchmarks/phone_twilio.py --compare --baseline ../other-checkout/src
    .venv/bin/python benchmarks/phone_twilio.py --calls 8 [--seconds 30]

`parley serve` runs as its own process on the local engine, with unsigned webhooks allowed
(PARLEY_TWILIO_INSECURE=1, loopback only). A peer in this process plays Twilio: it posts the voice
webhook, opens the media stream, sends TTS sentences as 20 ms μ-law frames paced in real time (silence
in between), and plays the agent's media in real time, echoing marks. Per turn it measures from the end
of the caller's audible speech in the sent μ-law to the first agent `media` frame above -45 dBFS
received (Twilio would play it from there). --compare follows each phone turn with a WebRTC turn on a
`parley engine` at the same silence window (see phone_common.py); --baseline SRC adds a turn on a
second server run from another checkout's code (before/after on the same load). --calls N ramps up to N calls, each
taking a turn every few seconds, and counts agent frames that reached Twilio after their play time
(more than 20 ms: the caller hears a gap).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

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
from support.twilio import TwilioPeer, energy_dbfs, voice_webhook


class Audible:
    """The first audible agent media frame received after a time (scanning each frame once)."""

    def __init__(self, peer: TwilioPeer, after: float) -> None:
        self.peer, self.after = peer, after
        self.index = next((i for i, (at, _f) in enumerate(peer.received) if at >= after), len(peer.received))

    def __call__(self) -> float | None:
        received = self.peer.received
        while self.index < len(received):
            at, frame = received[self.index]
            self.index += 1
            if at >= self.after and frame.get("event") == "media" and \
                    energy_dbfs(base64.b64decode(frame["media"]["payload"])) > AUDIBLE_DBFS:
                return at
        return None


async def quiet(peer: TwilioPeer, timeout: float = 90.0) -> None:
    """Wait until the agent's audio has played out and nothing new came for QUIET_SECONDS."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = peer.received[-1][0] if peer.received else 0.0
        if peer.idle and time.monotonic() - last > QUIET_SECONDS:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the agent never went quiet")


class TwilioCaller:
    """One call through the bridge, as Twilio carries it; counts agent frames late for playout."""

    def __init__(self, peer: TwilioPeer) -> None:
        self.peer = peer
        self.watch = PaceWatch(paced=False)
        self._seen = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, url: str, number: int = 0) -> Any:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            hook = await voice_webhook(http, url, auth_token=None, caller=f"+1555{number:07d}",
                                       call_sid=f"CA{number:032d}")
            assert hook.status == 200 and hook.stream_url, hook.body
        async with TwilioPeer.connect(hook.stream_url, hook.parameters) as peer:
            caller = cls(peer)
            await peer.wait_for(lambda: peer.played, timeout=120)  # her greeting
            await quiet(peer)
            caller._account()
            try:
                yield caller
            finally:
                await peer.stop()

    def _account(self) -> None:
        received = self.peer.received
        for at, frame in received[self._seen:]:
            if frame.get("event") == "media":
                self.watch.arrived(at, len(base64.b64decode(frame["media"]["payload"])) / 8000)
        self._seen = len(received)

    async def turn(self, text: str) -> float:
        """One sentence, then her whole answer; ms from its end to her first audible frame."""
        peer = self.peer
        _pcm, end_ms = speech(text)
        self._account()
        self.watch.restart()  # her answer is a new burst
        peer.utterance_started = None
        peer.say(ulaw(text))
        await peer.wait_for(lambda: peer.utterance_started is not None, timeout=10)
        assert peer.utterance_started is not None
        speech_end = peer.utterance_started + end_ms / 1000
        heard = await peer.wait_for(Audible(peer, speech_end), timeout=90)
        await quiet(peer)
        self._account()
        return float((heard - speech_end) * 1000)


async def run_single(urls: list[str], turns: int, compare: bool, silence_ms: int) -> None:
    async with contextlib.AsyncExitStack() as stack:
        phones = [await stack.enter_async_context(TwilioCaller.open(url)) for url in urls]
        webrtc = None
        if compare:
            engine_url = stack.enter_context(webrtc_engine())
            webrtc = await WebRtcCaller.open(engine_url, silence_ms)
            stack.push_async_callback(webrtc.close)
        labels = ["Twilio bridge", "Twilio baseline"]
        await single([(label, sentences(phone.turn)) for label, phone in zip(labels, phones, strict=False)], turns, webrtc)


async def run_level(url: str, calls: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    failed = 0
    async with contextlib.AsyncExitStack() as stack:
        phones = await asyncio.gather(*(stack.enter_async_context(TwilioCaller.open(url, n)) for n in range(calls)))
        stop_at = time.monotonic() + seconds

        async def talk(phone: TwilioCaller, seed: int) -> None:
            nonlocal failed
            rng = random.Random(seed)
            await asyncio.sleep(rng.uniform(0, 2))
            while time.monotonic() < stop_at:
                try:
                    latencies.append(await phone.turn(SENTENCES[rng.randrange(len(SENTENCES))]))
                except (TimeoutError, AssertionError):
                    failed += 1
                await asyncio.sleep(rng.uniform(0.5, 2.0))

        await asyncio.gather(*(talk(p, i) for i, p in enumerate(phones)))
    return {"latencies": latencies, "failed": failed, "late": sum(p.watch.late for p in phones),
            "packets": sum(p.watch.packets for p in phones), "worst_ms": max(p.watch.worst_ms for p in phones)}


async def warm_up(url: str) -> None:
    async with TwilioCaller.open(url, 999) as phone:
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
    print(f"note: parley serve (with the engine in process), the Twilio peers{' and parley engine' if args.compare else ''}"
          f" share these cores; VAD silence window {args.vad_silence_ms} ms")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        env = serve_env(stack.enter_context(tempfile.TemporaryDirectory()), args.vad_silence_ms,
                        PARLEY_TWILIO_INSECURE="1")
        stack.enter_context(process(["serve", "--port", str(port)], env, f"{url}/healthz"))
        urls = [url]
        if args.baseline:
            other = free_port()
            urls.append(f"http://127.0.0.1:{other}")
            env = baseline_env(serve_env(stack.enter_context(tempfile.TemporaryDirectory()), args.vad_silence_ms,
                                         PARLEY_TWILIO_INSECURE="1"), args.baseline)
            stack.enter_context(process(["serve", "--port", str(other)], env, f"{urls[1]}/healthz"))
        if args.calls:
            print(f"simultaneous Twilio calls, each taking a turn every few seconds ({args.seconds:.0f} s per level):")
            asyncio.run(ramp(levels_up_to(args.calls), lambda n: run_level(url, n, args.seconds), lambda: warm_up(url)))
        else:
            asyncio.run(run_single(urls, args.turns, args.compare, args.vad_silence_ms))

if __name__ == "__main__":
    main()
