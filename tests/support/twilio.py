"""Twilio's side of a phone call, for tests: the voice webhook signed as Twilio signs it, and a media
stream peer that speaks Twilio's Media Streams protocol over a real WebSocket.

The peer behaves as Twilio does: it sends the caller's line as 20 ms mu-law `media` frames in real
time (silence when nobody speaks), plays the agent's `media` in real time, echoes each `mark` when
the audio before it has played, and on `clear` drops the unplayed audio and echoes its marks.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import websockets
from twilio.request_validator import RequestValidator

from parley.audio import g711
from parley.audio.pcm import SAMPLE_RATE, float_to_int16
from parley.audio.resample import resample
from support.speech import speech_pcm24k

FRAME = 160  # 20 ms of mu-law
SILENCE = b"\xff" * FRAME  # mu-law zero
VOICE = "/telephony/twilio/voice"


def ulaw_speech(text: str, **kw: Any) -> bytes:
    """`text` spoken by the test TTS as G.711 mu-law at 8 kHz."""
    return g711.ulaw_encode(float_to_int16(resample(speech_pcm24k(text, **kw), SAMPLE_RATE, 8000)))


def ulaw_ms(data: bytes | int) -> float:
    return (data if isinstance(data, int) else len(data)) / 8


@dataclass
class Webhook:
    status: int
    body: str
    stream_url: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    verbs: list[str] = field(default_factory=list)


async def voice_webhook(client: httpx.AsyncClient, url: str, *, auth_token: str | None, query: str = "",
                        caller: str = "+15551234567", called: str = "+15550001111", call_sid: str = "CA0001",
                        signature: str | None = None) -> Webhook:
    """POST the voice webhook as Twilio does (form-encoded, signed with `auth_token` over the URL)."""
    params = {"AccountSid": "AC0001", "CallSid": call_sid, "From": caller, "To": called, "CallStatus": "ringing",
              "Direction": "inbound", "ApiVersion": "2010-04-01"}
    full = f"{url}{VOICE}" + (f"?{query}" if query else "")
    headers = {}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    elif auth_token is not None:
        headers["X-Twilio-Signature"] = RequestValidator(auth_token).compute_signature(full, params)
    r = await client.post(full, data=params, headers=headers)
    hook = Webhook(r.status_code, r.text)
    if r.status_code == 200:
        root = ET.fromstring(r.text)
        hook.verbs = [child.tag for child in root]
        stream = root.find("./Connect/Stream")
        if stream is not None:
            hook.stream_url = stream.get("url")
            hook.parameters = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return hook


class TwilioPeer:
    """One media stream as Twilio runs it. Use `async with TwilioPeer.connect(url, params) as peer:`."""

    def __init__(self, ws: Any, stream_sid: str = "MZ00000000000000000000000000000001") -> None:
        self.ws = ws
        self.sid = stream_sid
        self.seq = 0
        self.received: list[tuple[float, dict[str, Any]]] = []  # (monotonic time, frame) of every frame in
        self.played = bytearray()  # agent audio as played out
        self.played_marks: list[str] = []
        self.clears: list[float] = []  # when each clear came, with the ms played by then
        self.played_at_clear: list[float] = []
        self.audio_in_ms = 0.0  # agent audio received
        self.first_audio: list[float] = []  # monotonic time of the first frame of each burst of agent audio
        self.utterance_started: float | None = None  # when the first frame of the latest utterance went out
        self._queue: deque[tuple[str, Any]] = deque()  # ("audio", bytes) | ("mark", name)
        self._outgoing: deque[bytes] = deque()
        self._tasks: list[asyncio.Task[Any]] = []
        self._changed = asyncio.Event()
        self._speaking = False
        self.closed: Any = None  # the close frame, once the server closed

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str, parameters: dict[str, str], *, start: bool = True) -> Any:
        async with websockets.connect(url, max_size=2**20) as ws:
            peer = cls(ws)
            if start:
                await peer.start(parameters)
            try:
                yield peer
            finally:
                await peer.close()

    def _next(self) -> str:
        self.seq += 1
        return str(self.seq)

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def start(self, parameters: dict[str, str]) -> None:
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self.send({"event": "start", "sequenceNumber": self._next(), "streamSid": self.sid, "start": {
            "accountSid": "AC0001", "streamSid": self.sid, "callSid": "CA0001", "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": parameters}})
        self._tasks = [asyncio.create_task(self._receive()), asyncio.create_task(self._play()),
                       asyncio.create_task(self._line())]

    def say(self, ulaw: bytes) -> None:
        """Queue the caller's words on the line (after whatever is queued)."""
        self._outgoing.extend(ulaw[i:i + FRAME] for i in range(0, len(ulaw), FRAME))

    @property
    def saying(self) -> bool:
        return bool(self._outgoing)

    async def dtmf(self, digit: str) -> None:
        await self.send({"event": "dtmf", "sequenceNumber": self._next(), "streamSid": self.sid,
                         "dtmf": {"track": "inbound_track", "digit": digit}})

    async def stop(self) -> None:
        await self.send({"event": "stop", "sequenceNumber": self._next(), "streamSid": self.sid,
                         "stop": {"accountSid": "AC0001", "callSid": "CA0001"}})

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ws.close()

    # -- the line: 20 ms frames in real time --------------------------------------------------------

    async def _line(self) -> None:
        begin = time.monotonic()
        n = 0
        chunk = 0
        while True:
            speaking = bool(self._outgoing)
            frame = self._outgoing.popleft() if speaking else SILENCE
            if speaking and not self._speaking:
                self.utterance_started = max(time.monotonic(), begin + n * 0.02)
            self._speaking = speaking
            n += 1
            chunk += 1
            await self.send({"event": "media", "sequenceNumber": self._next(), "streamSid": self.sid, "media": {
                "track": "inbound", "chunk": str(chunk), "timestamp": str(n * 20),
                "payload": base64.b64encode(frame).decode()}})
            delay = begin + n * 0.02 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    # -- the agent's audio: played in real time, marks echoed ----------------------------------------

    async def _receive(self) -> None:
        try:
            async for message in self.ws:
                frame = json.loads(message)
                now = time.monotonic()
                self.received.append((now, frame))
                kind = frame.get("event")
                if kind == "media":
                    audio = base64.b64decode(frame["media"]["payload"])
                    if not self._queue_has_audio():
                        self.first_audio.append(now)
                    self.audio_in_ms += ulaw_ms(audio)
                    self._queue.append(("audio", audio))
                elif kind == "mark":
                    self._queue.append(("mark", frame["mark"]["name"]))
                elif kind == "clear":
                    self.clears.append(now)
                    self.played_at_clear.append(ulaw_ms(len(self.played)))
                    marks = [name for k, name in self._queue if k == "mark"]
                    self._queue.clear()
                    for name in marks:  # Twilio echoes the cleared marks
                        await self._echo(name)
                self._changed.set()
        except websockets.ConnectionClosed:
            pass
        self.closed = self.ws.protocol.close_rcvd or "closed without a close frame"
        self._changed.set()

    def _queue_has_audio(self) -> bool:
        return any(k == "audio" for k, _ in self._queue)

    async def _echo(self, name: str) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.send({"event": "mark", "sequenceNumber": self._next(), "streamSid": self.sid,
                             "mark": {"name": name}})

    async def _play(self) -> None:
        clock = time.monotonic()
        while True:
            if not self._queue:
                self._changed.clear()
                await self._changed.wait()
                clock = time.monotonic()
                continue
            kind, value = self._queue.popleft()
            if kind == "mark":
                self.played_marks.append(value)
                await self._echo(value)
                continue
            clock += ulaw_ms(value) / 1000
            delay = clock - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.played.extend(value)

    # -- waiting ------------------------------------------------------------------------------------

    def frames(self, event: str) -> list[dict[str, Any]]:
        return [f for _, f in self.received if f.get("event") == event]

    async def wait_for(self, check: Any, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if self.closed is not None and not check():
                raise AssertionError(f"the server closed the stream: {self.closed}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            await asyncio.sleep(0.02)

    @property
    def idle(self) -> bool:
        """All agent audio received so far has played."""
        return not self._queue


def energy_dbfs(ulaw: bytes) -> float:
    pcm = g711.ulaw_decode(ulaw).astype(np.float32) / 32768
    return float(10 * np.log10(np.mean(pcm ** 2) + 1e-12)) if pcm.size else -120.0
