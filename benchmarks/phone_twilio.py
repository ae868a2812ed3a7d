"""Phone calls through the Twilio bridge: mouth-to-ear turn latency on the μ-law path.

    .venv/bin/python benchmarks/phone_twilio.py [--turns 20] [--vad-silence-ms 500]

`parley serve` runs as its own process on the local engine, with unsigned webhooks allowed
(PARLEY_TWILIO_INSECURE=1, loopback only). A peer in this process plays Twilio: it posts the voice
webhook, opens the media stream, sends TTS sentences as 20 ms μ-law frames paced in real time (silence
in between), and plays the agent's media in real time, echoing marks. Per turn it measures from the end
of the caller's audible speech in the sent μ-law to the first agent `media` frame above -45 dBFS
received (Twilio would play it from there). Compare with benchmarks/engine_webrtc.py at the same VAD
silence window.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from machine import describe, percentile  # noqa: E402
from parley.util.serving import free_port  # noqa: E402
from support.speech import speech_bounds_ms  # noqa: E402
from support.twilio import TwilioPeer, energy_dbfs, ulaw_speech, voice_webhook  # noqa: E402

SENTENCES = [
    "Hi, I would like to lower my monthly bill.",
    "I have been a customer for six years.",
    "Another company offered me internet for fifty dollars a month.",
    "If you cannot help me I will cancel my service.",
    "What does that offer include?",
    "That is still too expensive for me.",
]
AUDIBLE_DBFS = -45.0
QUIET_SECONDS = 1.5  # no agent media for this long after playing out: her answer is over


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


async def run(url: str, turns: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        hook = await voice_webhook(http, url, auth_token=None)
        assert hook.status == 200 and hook.stream_url, hook.body
    latencies: list[float] = []
    async with TwilioPeer.connect(hook.stream_url, hook.parameters) as peer:
        await peer.wait_for(lambda: peer.played, timeout=90)  # her greeting
        await quiet(peer)
        for n in range(turns):
            text = SENTENCES[n % len(SENTENCES)]
            _start_ms, end_ms = speech_bounds_ms(text)
            peer.utterance_started = None
            peer.say(ulaw_speech(text))
            await peer.wait_for(lambda: peer.utterance_started is not None, timeout=10)
            assert peer.utterance_started is not None
            speech_end = peer.utterance_started + end_ms / 1000
            heard = await peer.wait_for(Audible(peer, speech_end), timeout=90)
            latency = (heard - speech_end) * 1000
            latencies.append(latency)
            print(f"turn {n + 1:2d}: end of speech -> first audible agent media frame {latency:6.0f} ms")
            await quiet(peer)
        await peer.stop()
    print()
    print(f"end of caller speech (sent μ-law) -> first audible agent media frame, {len(latencies)} turns: "
          f"p50 {percentile(latencies, 50):.0f} ms, p95 {percentile(latencies, 95):.0f} ms, "
          f"max {max(latencies):.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--vad-silence-ms", type=int, default=500)
    args = parser.parse_args()
    print(f"machine: {describe()}")
    print(f"note: parley serve (with the engine in process) and the Twilio peer share these cores; "
          f"VAD silence window {args.vad_silence_ms} ms")
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "PARLEY_TWILIO_INSECURE": "1", "PARLEY_DATA_DIR": data, "PARLEY_UPSTREAM": "local",
               "PARLEY_VAD_SILENCE_MS": str(args.vad_silence_ms), "PARLEY_ENGINE_ICE_HOSTS": '["127.0.0.1"]'}
        env.pop("OPENAI_API_KEY", None)
        server = subprocess.Popen([sys.executable, "-m", "parley.cli", "serve", "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            asyncio.run(run(url, args.turns))
        finally:
            server.terminate()
            server.wait(15)


if __name__ == "__main__":
    main()
