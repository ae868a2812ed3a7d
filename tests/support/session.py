"""Driving the engine's sans-I/O `Session` by hand in tests: the test plays the runtime's part.

`Harness` validates every server event strictly against the openai SDK and remembers its JSON at
the moment it is taken (events are snapshots: the runtime serialises them after the session has
moved on); `Mic` feeds audio as a client streams its microphone. The `make` fixture (conftest)
makes harnesses and checks their snapshots at the end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from parley.audio.pcm import SAMPLE_RATE, FloatArray
from parley.engine.session import VAD_FRAME_MS, Effect, Session
from parley.engine.speech.vad import VadStream
from parley.protocol.session import SessionConfig, parse_session
from support.conformance import validate_server_event

Event = dict[str, Any]
Out = Event | Effect
FRAME = SAMPLE_RATE * VAD_FRAME_MS // 1000


class Harness:
    """A session, with every output validated and its JSON remembered at the moment it is taken."""

    def __init__(self, config: SessionConfig | dict[str, Any] | None = None, **kwargs: Any) -> None:
        if isinstance(config, dict):
            config = parse_session({"type": "realtime", **config})
        kwargs.setdefault("detector", VadStream(SAMPLE_RATE))  # the real silero model
        kwargs.setdefault("now", time.time())
        self.s = Session(config, **kwargs)
        self.audio_ms = 0.0  # microphone audio fed so far
        self.snapshots: list[tuple[Event, str]] = []

    def take(self) -> list[Out]:
        out = self.s.take()
        for o in out:
            if isinstance(o, dict):
                validate_server_event(o)
                self.snapshots.append((o, json.dumps(o, sort_keys=True)))
        return out

    def send(self, event: Event) -> list[Out]:
        self.s.receive(event)
        return self.take()

    def audio(self, pcm: FloatArray) -> list[Out]:
        self.s.receive_audio(pcm)
        self.audio_ms += pcm.size * 1000 / SAMPLE_RATE
        return self.take()

    def check_snapshots(self) -> None:
        for event, snap in self.snapshots:
            assert json.dumps(event, sort_keys=True) == snap, f"{event['type']} changed after it was emitted"


class Mic:
    """Feeds audio to a session in 20 ms chunks, as a client streams its microphone."""

    def __init__(self, h: Harness, pcm: FloatArray, chunk_ms: float = 20, clock: float | None = None) -> None:
        self.h, self.pcm, self.pos = h, pcm, 0
        self.step = round(chunk_ms * SAMPLE_RATE / 1000)
        self.clock = clock  # driver time (s) at the session's audio time 0: tick() after each chunk
        self.at: list[tuple[float, Out]] = []  # (audio ms fed when it came out, output)

    def _chunk(self) -> list[Out]:
        chunk = self.pcm[self.pos : self.pos + self.step]
        self.pos += chunk.size
        out = self.h.audio(chunk)
        if self.clock is not None:
            self.h.s.tick(self.clock + self.h.audio_ms / 1000)
            out += self.h.take()
        self.at += [(self.h.audio_ms, o) for o in out]
        return out

    def until(self, pred: Callable[[Out], bool]) -> list[Out]:
        """Feed until an output satisfies `pred` (it must come); everything up to that chunk."""
        got: list[Out] = []
        while self.pos < self.pcm.size:
            out = self._chunk()
            got += out
            if any(pred(o) for o in out):
                return got
        raise AssertionError(f"never came; got {types(got)}")

    def rest(self) -> list[Out]:
        got: list[Out] = []
        while self.pos < self.pcm.size:
            got += self._chunk()
        return got


def types(outs: list[Out]) -> list[str]:
    return [o["type"] if isinstance(o, dict) else type(o).__name__ for o in outs]


def is_type(kind: str) -> Callable[[Out], bool]:
    return lambda o: (o.get("type") if isinstance(o, dict) else type(o).__name__) == kind


def only(outs: list[Out], kind: str) -> Any:
    found = [o for o in outs if is_type(kind)(o)]
    assert len(found) == 1, f"expected one {kind}, got {types(outs)}"
    return found[0]


def all_of(outs: list[Out], kind: str) -> list[Any]:
    return [o for o in outs if is_type(kind)(o)]


def error_of(outs: list[Out]) -> dict[str, Any]:
    assert types(outs) == ["error"], types(outs)
    err: dict[str, Any] = outs[0]["error"]
    return err


class ScriptedDetector:
    """Speech probability by time: `script(frame_end_ms)` for each complete 32 ms frame."""

    def __init__(self, script: Callable[[float], float]) -> None:
        self.script = script
        self.samples = 0
        self.resets = 0
        self.closed = False

    def feed(self, audio: FloatArray) -> Sequence[tuple[float, float]]:
        before = self.samples // FRAME
        self.samples += audio.size
        ends = [(i + 1) * VAD_FRAME_MS for i in range(before, self.samples // FRAME)]
        return [(end, self.script(end)) for end in ends]

    def reset(self) -> None:
        self.samples = 0
        self.resets += 1

    def close(self) -> None:
        self.closed = True


def speech_between(start_ms: float, end_ms: float, p: float = 0.9) -> Callable[[float], float]:
    return lambda t: p if start_ms < t <= end_ms else 0.05
