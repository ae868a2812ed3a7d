"""Twilio Media Streams, sans I/O: the JSON frames of a bidirectional `<Connect><Stream>`.

In (Twilio -> us): `connected`, `start`, `media`, `dtmf`, `mark`, `stop`. Out: `media`, `mark`,
`clear`. Audio is G.711 mu-law, 8 kHz, mono, base64 in `media.payload` (8 bytes per millisecond).

`StreamReader` checks each inbound frame against the stream so far (one `start`, then frames of
that stream id in sequence order, nothing after `stop`) and returns a typed frame or a `Bad` with
a machine reason; the transport counts, logs and drops those. `Playout` is the mark bookkeeping:
Twilio echoes a `mark` once the audio sent before it has been played (and echoes the remaining
marks after a `clear`), so the last echoed mark says how much of an answer the caller heard.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

BYTES_PER_MS = 8  # mu-law at 8 kHz
FRAME_BYTES = 160  # 20 ms, what Twilio itself sends
MARK_EVERY_BYTES = 800  # a mark at least every 100 ms of agent audio: the resolution of "heard"
MAX_FRAME_CHARS = 16_384  # a 20 ms media frame is ~300 characters
MAX_MEDIA_BYTES = 4_000  # 500 ms in one inbound frame is far beyond anything Twilio sends
MAX_MARK_NAME = 64
MAX_PARAMETERS = 32
DTMF_DIGITS = frozenset("0123456789*#ABCD")
MULAW = "audio/x-mulaw"

BadReason = Literal["binary", "oversized", "invalid_json", "unknown_event", "out_of_order", "before_start",
                    "unknown_stream", "after_stop", "invalid_start", "invalid_media", "oversized_media",
                    "invalid_dtmf", "invalid_mark"]


# -- inbound frames -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connected:
    protocol: str


@dataclass(frozen=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    encoding: str
    sample_rate: int
    channels: int
    parameters: dict[str, str]  # the TwiML's <Parameter>s (customParameters)


@dataclass(frozen=True)
class Media:
    track: str
    timestamp_ms: int | None
    payload: bytes
    payload_b64: str  # as received (valid base64 of `payload`), to forward without re-encoding


@dataclass(frozen=True)
class Dtmf:
    digit: str


@dataclass(frozen=True)
class Mark:
    name: str


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Bad:
    reason: BadReason
    detail: str = ""


Frame = Connected | Start | Media | Dtmf | Mark | Stop


def _str(value: Any, limit: int = 128) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def _int(value: Any) -> int | None:
    """Twilio sends numbers as strings ("sequenceNumber": "2") and sometimes as numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    return None


@dataclass
class StreamReader:
    """One media stream's inbound frames, checked in order."""

    max_frame_chars: int = MAX_FRAME_CHARS
    stream_sid: str | None = None
    stopped: bool = False
    last_sequence: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # bad frames by reason

    def feed(self, message: str | bytes) -> Frame | Bad:
        bad = self._read(message)
        if isinstance(bad, Bad):
            self.counts[bad.reason] = self.counts.get(bad.reason, 0) + 1
        return bad

    def _read(self, message: str | bytes) -> Frame | Bad:
        if isinstance(message, bytes):
            return Bad("binary", "Twilio sends text frames")
        if len(message) > self.max_frame_chars:
            return Bad("oversized", f"{len(message)} characters")
        try:
            data = json.loads(message)
        except ValueError:
            return Bad("invalid_json")
        if not isinstance(data, dict):
            return Bad("invalid_json", "not an object")
        event = data.get("event")
        if event == "connected":
            if self.stream_sid is not None:
                return Bad("out_of_order", "connected after start")
            return Connected(_str(data.get("protocol")) or "")
        if event not in ("start", "media", "dtmf", "mark", "stop"):
            return Bad("unknown_event", str(event)[:32])
        if "sequenceNumber" in data:
            seq = _int(data["sequenceNumber"])
            if seq is None:
                return Bad("out_of_order", "sequenceNumber is not a number")
            if seq <= self.last_sequence:
                return Bad("out_of_order", f"sequence {seq} after {self.last_sequence}")
        else:
            seq = None
        frame: Frame | Bad
        if event == "start":
            frame = self._start(data)
        else:
            if self.stream_sid is None:
                return Bad("before_start", str(event))
            if self.stopped:
                return Bad("after_stop", str(event))
            if data.get("streamSid") != self.stream_sid:
                return Bad("unknown_stream", str(data.get("streamSid"))[:64])
            frame = self._frame(str(event), data)
        if seq is not None and not isinstance(frame, Bad):
            self.last_sequence = seq
        return frame

    def _start(self, data: dict[str, Any]) -> Start | Bad:
        if self.stream_sid is not None:
            return Bad("out_of_order", "a second start")
        start = data.get("start")
        if not isinstance(start, dict):
            return Bad("invalid_start", "no start object")
        sid = _str(start.get("streamSid")) or _str(data.get("streamSid"))
        if sid is None or data.get("streamSid", sid) != sid:
            return Bad("invalid_start", "no streamSid")
        fmt = start.get("mediaFormat")
        fmt = fmt if isinstance(fmt, dict) else {}
        custom = start.get("customParameters")
        custom = custom if isinstance(custom, dict) else {}
        params = {k[:64]: v[:512] for k, v in list(custom.items())[:MAX_PARAMETERS]
                  if isinstance(k, str) and isinstance(v, str)}
        tracks = start.get("tracks")
        self.stream_sid = sid
        return Start(
            stream_sid=sid, call_sid=_str(start.get("callSid")) or "", account_sid=_str(start.get("accountSid")) or "",
            tracks=tuple(t for t in tracks if isinstance(t, str))[:4] if isinstance(tracks, list) else (),
            encoding=_str(fmt.get("encoding"), 64) or "", sample_rate=_int(fmt.get("sampleRate")) or 0,
            channels=_int(fmt.get("channels")) or 0, parameters=params)

    def _frame(self, event: str, data: dict[str, Any]) -> Frame | Bad:
        body = data.get(event)
        if event == "stop":
            self.stopped = True
            return Stop()
        if not isinstance(body, dict):
            return Bad({"media": "invalid_media", "dtmf": "invalid_dtmf"}.get(event, "invalid_mark"),  # type: ignore[arg-type]
                       f"no {event} object")
        if event == "media":
            payload = body.get("payload")
            if not isinstance(payload, str):
                return Bad("invalid_media", "no payload")
            if len(payload) > MAX_MEDIA_BYTES * 4 // 3 + 4:
                return Bad("oversized_media", f"{len(payload)} base64 characters")
            try:
                audio = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                return Bad("invalid_media", "payload is not base64")
            track = body.get("track", "inbound")
            if track != "inbound":
                return Bad("invalid_media", f"track {str(track)[:16]}")
            return Media(track="inbound", timestamp_ms=_int(body.get("timestamp")), payload=audio, payload_b64=payload)
        if event == "dtmf":
            digit = body.get("digit")
            if not isinstance(digit, str) or digit not in DTMF_DIGITS:
                return Bad("invalid_dtmf", str(digit)[:8])
            return Dtmf(digit)
        name = _str(body.get("name"), MAX_MARK_NAME)
        if name is None:
            return Bad("invalid_mark", "no name")
        return Mark(name)


# -- outbound frames ------------------------------------------------------------------------------


def _dump(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"))


def media_frames(stream_sid: str, audio: bytes) -> list[str]:
    """Agent audio as `media` frames of 20 ms (the last may be shorter)."""
    return [_dump({"event": "media", "streamSid": stream_sid,
                   "media": {"payload": base64.b64encode(audio[i:i + FRAME_BYTES]).decode()}})
            for i in range(0, len(audio), FRAME_BYTES)]


def mark_frame(stream_sid: str, name: str) -> str:
    return _dump({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear_frame(stream_sid: str) -> str:
    return _dump({"event": "clear", "streamSid": stream_sid})


# -- what the caller heard ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pending:
    name: str
    item_id: str
    end_ms: float  # the item's audio up to here has been played once this mark comes back


@dataclass(frozen=True)
class Cut:
    """An answer the caller interrupted: truncate `item_id` at `audio_end_ms` (what was heard)."""

    item_id: str
    audio_end_ms: int


class Playout:
    """Which agent audio Twilio has played, from the marks it echoes.

    Call `queued(item_id, nbytes)` for audio sent and send the mark it returns after it; call
    `played(name)` for each mark Twilio echoes. `interrupt()` (on barge-in, when `playing`) gives
    the cuts to make and forgets the unplayed audio; the marks Twilio then echoes for the cleared
    audio are recognised and ignored."""

    def __init__(self) -> None:
        self._pending: deque[_Pending] = deque()
        self._sent_ms: dict[str, float] = {}  # item -> ms of its audio sent so far
        self._heard_ms: dict[str, float] = {}  # item -> ms of its audio played (per the marks)
        self._cleared: set[str] = set()
        self._next = 0

    @property
    def playing(self) -> bool:
        """Audio sent that Twilio has not yet confirmed playing."""
        return bool(self._pending)

    def sent_ms(self, item_id: str) -> float:
        return self._sent_ms.get(item_id, 0.0)

    def heard_ms(self, item_id: str) -> float:
        return self._heard_ms.get(item_id, 0.0)

    def queued(self, item_id: str, nbytes: int) -> str:
        """`nbytes` of `item_id`'s audio were sent: the name of the mark to send after them."""
        end = self._sent_ms.get(item_id, 0.0) + nbytes / BYTES_PER_MS
        self._sent_ms[item_id] = end
        self._next += 1
        name = f"m{self._next}"
        self._pending.append(_Pending(name, item_id, end))
        return name

    def played(self, name: str) -> bool:
        """Twilio echoed mark `name`: it and every mark before it have played. False for a mark we
        do not know or cleared (nothing changes)."""
        if name in self._cleared:
            self._cleared.discard(name)
            return False
        if not any(p.name == name for p in self._pending):
            return False
        while self._pending:
            mark = self._pending.popleft()
            self._heard_ms[mark.item_id] = max(self._heard_ms.get(mark.item_id, 0.0), mark.end_ms)
            if mark.name == name:
                break
        return True

    def interrupt(self) -> list[Cut]:
        """The caller spoke over the agent: a cut for each item with unplayed audio, at what was heard."""
        cuts: list[Cut] = []
        for mark in self._pending:
            self._cleared.add(mark.name)
            if all(c.item_id != mark.item_id for c in cuts):
                cuts.append(Cut(mark.item_id, int(self._heard_ms.get(mark.item_id, 0.0))))
        self._pending.clear()
        if len(self._cleared) > 10_000:  # marks Twilio never echoed: forget the oldest
            self._cleared = set(sorted(self._cleared, key=lambda n: int(n[1:]))[-1000:])
        return cuts
