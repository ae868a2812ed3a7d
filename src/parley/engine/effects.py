"""What the engine's `Session` asks its driver to do: the effects `Session.take()` returns among
the server events.

Each is a frozen record of work that needs I/O, a thread or a model (transcribe, start or cancel
a responder, drop queued playout, close the connection); the driver (`engine.runtime`) carries it
out and reports back through the session's methods.
"""

from __future__ import annotations

from dataclasses import dataclass

from parley.audio.pcm import FloatArray
from parley.engine.responders.base import ResponseRequest


@dataclass(frozen=True)
class Transcribe:
    """Transcribe `audio` (float32, 24 kHz) for `item_id`; report with `transcription_result`.

    `attempt` tells a speculative run (started in the VAD's silence window, before the turn is
    committed) from a later one: results of superseded attempts are ignored. `careful` asks for
    the STT's slower, better pass of the same attempt, after its quick pass came back unsure.
    """

    item_id: str
    attempt: int
    audio: FloatArray
    language: str | None
    prompt: str | None
    careful: bool = False


@dataclass(frozen=True)
class StartResponse:
    response_id: str
    request: ResponseRequest
    audio: bool  # speak the text (else text only)
    voice: str
    speed: float


@dataclass(frozen=True)
class CancelResponse:
    response_id: str


@dataclass(frozen=True)
class ClearPlayback:
    """WebRTC: drop the agent audio queued for playout; report with `playback_cleared`."""

    response_id: str


@dataclass(frozen=True)
class CloseSession:
    reason: str


Effect = Transcribe | StartResponse | CancelResponse | ClearPlayback | CloseSession
