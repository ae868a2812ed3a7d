"""Events the client hands to its users.

Server events are handed on as the protocol reads them (`parley.protocol.server_events`: a typed,
lazy view of the GA-shaped dict).

The client also emits its own, friendlier events (the names of the hand-built browser client the product grew from):
`connected`, `disconnected`, `reconnecting`, `reconnected`, `speaking_started`,
`speaking_stopped`, `message`, `audio`, `transcript_delta`, `tool_call`, `key_refreshed`.
Errors from the server and from the client itself share the `error` type (`ErrorEvent`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from parley.protocol.server_events import (
    AudioDelta,
    ErrorEvent,
    FunctionCallArgumentsDone,
    ItemEvent,
    ResponseEvent,
    ServerEvent,
    SessionEvent,
    SpeechEvent,
    TextDelta,
    TranscriptionCompleted,
    wrap,
)

__all__ = [
    "Audio",
    "AudioDelta",
    "Connected",
    "Disconnected",
    "ErrorEvent",
    "Event",
    "FunctionCallArgumentsDone",
    "ItemEvent",
    "KeyRefreshed",
    "Message",
    "Reconnected",
    "Reconnecting",
    "ResponseEvent",
    "ServerEvent",
    "SessionEvent",
    "SpeakingStarted",
    "SpeakingStopped",
    "SpeechEvent",
    "TextDelta",
    "ToolCall",
    "TranscriptDelta",
    "TranscriptionCompleted",
    "wrap",
]


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# -- the client's own events ------------------------------------------------------------------


@dataclass(slots=True)
class Connected:
    """The first session is open and configured."""

    session: dict[str, Any]
    transport: str
    type: ClassVar[str] = "connected"

    @property
    def session_id(self) -> str | None:
        return _str_or_none(self.session.get("id"))


@dataclass(slots=True)
class Disconnected:
    """The connection is gone. `will_reconnect` says whether the client tries again."""

    reason: str
    code: int | None = None
    will_reconnect: bool = False
    type: ClassVar[str] = "disconnected"


@dataclass(slots=True)
class Reconnecting:
    """An attempt to reconnect is scheduled `delay` seconds from now."""

    attempt: int
    delay: float
    last_error: str | None = None
    type: ClassVar[str] = "reconnecting"


@dataclass(slots=True)
class Reconnected:
    """A new session carries on the conversation (`reason`: "drop" or "renewal")."""

    session: dict[str, Any]
    reason: str
    attempts: int
    downtime_s: float
    replayed: int
    resumed_response: bool = False
    type: ClassVar[str] = "reconnected"

    @property
    def session_id(self) -> str | None:
        return _str_or_none(self.session.get("id"))


@dataclass(slots=True)
class KeyRefreshed:
    """The key provider minted a fresh key (`expires_at`: unix seconds, when known)."""

    expires_at: float | None
    reason: str
    type: ClassVar[str] = "key_refreshed"


@dataclass(slots=True)
class SpeakingStarted:
    """The assistant started speaking (first audio of a response; WebRTC: output buffer started)."""

    response_id: str | None
    item_id: str | None
    type: ClassVar[str] = "speaking_started"


@dataclass(slots=True)
class SpeakingStopped:
    """The assistant stopped speaking (`reason`: done, cancelled, cleared, interrupted)."""

    response_id: str | None
    item_id: str | None
    reason: str
    type: ClassVar[str] = "speaking_stopped"


@dataclass(slots=True)
class Message:
    """A finished message of the conversation (or of an out-of-band response)."""

    item_id: str
    role: str
    text: str
    status: str
    response_id: str | None = None
    out_of_band: bool = False
    type: ClassVar[str] = "message"


@dataclass(slots=True)
class Audio:
    """Assistant audio as PCM16 LE mono 24 kHz."""

    pcm: bytes
    item_id: str | None
    response_id: str | None
    sample_rate: int = 24_000
    type: ClassVar[str] = "audio"

    @property
    def duration_ms(self) -> float:
        return len(self.pcm) * 1000 / (2 * self.sample_rate)


@dataclass(slots=True)
class TranscriptDelta:
    """A piece of a transcript for either role, with the text so far."""

    item_id: str
    role: str
    delta: str
    text: str
    type: ClassVar[str] = "transcript_delta"


@dataclass(slots=True)
class ToolCall:
    """A registered tool ran for a function call of the model."""

    name: str
    call_id: str
    arguments: dict[str, Any] | None
    output: str
    error: str | None
    duration_ms: float
    response_id: str | None = None
    type: ClassVar[str] = "tool_call"


Event = (ServerEvent | Connected | Disconnected | Reconnecting | Reconnected | KeyRefreshed | SpeakingStarted
         | SpeakingStopped | Message | Audio | TranscriptDelta | ToolCall)

FRIENDLY_TYPES = frozenset({
    "connected", "disconnected", "reconnecting", "reconnected", "key_refreshed", "speaking_started",
    "speaking_stopped", "message", "audio", "transcript_delta", "tool_call",
})
