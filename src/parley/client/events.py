"""Events the client hands to its users.

Server events are wrapped, not converted: a `ServerEvent` holds the parsed JSON dict and reads
fields on demand, so wrapping costs one small object and nothing is built for an event nobody
listens to. Subclasses add typed properties for the fields people use; any other field is
reachable as an attribute (`event.audio_start_ms`) or with `event["field"]` / `event.get()`.

The client also emits its own, friendlier events (the names seed 002's hand-built client had):
`connected`, `disconnected`, `reconnecting`, `reconnected`, `speaking_started`,
`speaking_stopped`, `message`, `audio`, `transcript_delta`, `tool_call`, `key_refreshed`.
Errors from the server and from the client itself share the `error` type (`ErrorEvent`).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, ClassVar

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


class ServerEvent:
    """A server event: the parsed JSON object, read lazily."""

    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    @property
    def type(self) -> str:
        return str(self.data.get("type"))

    @property
    def event_id(self) -> str | None:
        value = self.data.get("event_id")
        return value if isinstance(value, str) else None

    # Most events name their item and response at the top level; the few that carry the whole
    # item or response override these.
    @property
    def item_id(self) -> str | None:
        return _str_or_none(self.data.get("item_id"))

    @property
    def response_id(self) -> str | None:
        return _str_or_none(self.data.get("response_id"))

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: expose the event's fields as attributes.
        if name.startswith("__"):
            raise AttributeError(name)
        data = object.__getattribute__(self, "data")
        try:
            return data[name]
        except KeyError:
            raise AttributeError(f"{data.get('type')!r} event has no field {name!r}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServerEvent) and other.data == self.data

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={_short(v)}" for k, v in self.data.items() if k != "type")
        return f"{type(self).__name__}({self.type}: {fields})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class SessionEvent(ServerEvent):
    """`session.created` / `session.updated`."""

    __slots__ = ()

    @property
    def session(self) -> dict[str, Any]:
        value = self.data.get("session")
        return value if isinstance(value, dict) else {}


class ErrorEvent(ServerEvent):
    """`error`: from the server, or made by the client (`error.type == "client_error"`)."""

    __slots__ = ()

    @property
    def error(self) -> dict[str, Any]:
        value = self.data.get("error")
        return value if isinstance(value, dict) else {}

    @property
    def code(self) -> str | None:
        return _str_or_none(self.error.get("code"))

    @property
    def message(self) -> str:
        return str(self.error.get("message") or "")

    @property
    def client_event_id(self) -> str | None:
        """The `event_id` of the client event that failed, when the server says."""
        return _str_or_none(self.error.get("event_id"))

    @classmethod
    def client(cls, code: str, message: str, **extra: Any) -> ErrorEvent:
        return cls({"type": "error", "event_id": None,
                    "error": {"type": "client_error", "code": code, "message": message, "param": None,
                              "event_id": None, **extra}})

    def __str__(self) -> str:
        return f"{self.code or self.error.get('type')}: {self.message}"


class SpeechEvent(ServerEvent):
    """`input_audio_buffer.speech_started|speech_stopped|committed|timeout_triggered`."""

    __slots__ = ()


class ItemEvent(ServerEvent):
    """`conversation.item.added|done|created|retrieved`, `response.output_item.added|done`."""

    __slots__ = ()

    @property
    def item(self) -> dict[str, Any]:
        value = self.data.get("item")
        return value if isinstance(value, dict) else {}

    @property
    def item_id(self) -> str | None:
        return _str_or_none(self.item.get("id"))

    @property
    def previous_item_id(self) -> str | None:
        return _str_or_none(self.data.get("previous_item_id"))


class TranscriptionCompleted(ServerEvent):
    """`conversation.item.input_audio_transcription.completed`."""

    __slots__ = ()

    @property
    def transcript(self) -> str:
        return str(self.data.get("transcript") or "")


class TextDelta(ServerEvent):
    """Streaming text: `response.output_text.delta`, `response.output_audio_transcript.delta`,
    `response.function_call_arguments.delta`, input transcription deltas."""

    __slots__ = ()

    @property
    def delta(self) -> str:
        return str(self.data.get("delta") or "")


class AudioDelta(ServerEvent):
    """`response.output_audio.delta`; `.audio` decodes the base64 on first use."""

    __slots__ = ("_audio",)

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        self._audio: bytes | None = None

    @property
    def audio(self) -> bytes:
        if self._audio is None:
            self._audio = base64.b64decode(self.data.get("delta") or "")
        return self._audio


class FunctionCallArgumentsDone(ServerEvent):
    """`response.function_call_arguments.done`."""

    __slots__ = ()

    @property
    def call_id(self) -> str | None:
        return _str_or_none(self.data.get("call_id"))

    @property
    def name(self) -> str | None:
        return _str_or_none(self.data.get("name"))

    @property
    def arguments(self) -> str:
        return str(self.data.get("arguments") or "")


class ResponseEvent(ServerEvent):
    """`response.created` / `response.done`."""

    __slots__ = ()

    @property
    def response(self) -> dict[str, Any]:
        value = self.data.get("response")
        return value if isinstance(value, dict) else {}

    @property
    def response_id(self) -> str | None:
        return _str_or_none(self.response.get("id"))

    @property
    def status(self) -> str | None:
        return _str_or_none(self.response.get("status"))

    @property
    def usage(self) -> dict[str, Any] | None:
        value = self.response.get("usage")
        return value if isinstance(value, dict) else None

    @property
    def output(self) -> list[dict[str, Any]]:
        value = self.response.get("output")
        return [i for i in value if isinstance(i, dict)] if isinstance(value, list) else []


_CLASSES: dict[str, type[ServerEvent]] = {
    "session.created": SessionEvent,
    "session.updated": SessionEvent,
    "transcription_session.created": SessionEvent,
    "transcription_session.updated": SessionEvent,
    "error": ErrorEvent,
    "input_audio_buffer.speech_started": SpeechEvent,
    "input_audio_buffer.speech_stopped": SpeechEvent,
    "input_audio_buffer.committed": SpeechEvent,
    "input_audio_buffer.timeout_triggered": SpeechEvent,
    "conversation.item.added": ItemEvent,
    "conversation.item.done": ItemEvent,
    "conversation.item.created": ItemEvent,
    "conversation.item.retrieved": ItemEvent,
    "response.output_item.added": ItemEvent,
    "response.output_item.done": ItemEvent,
    "conversation.item.input_audio_transcription.completed": TranscriptionCompleted,
    "conversation.item.input_audio_transcription.delta": TextDelta,
    "response.output_text.delta": TextDelta,
    "response.text.delta": TextDelta,
    "response.output_audio_transcript.delta": TextDelta,
    "response.audio_transcript.delta": TextDelta,
    "response.function_call_arguments.delta": TextDelta,
    "response.output_audio.delta": AudioDelta,
    "response.audio.delta": AudioDelta,
    "response.function_call_arguments.done": FunctionCallArgumentsDone,
    "response.created": ResponseEvent,
    "response.done": ResponseEvent,
}


def wrap(data: dict[str, Any]) -> ServerEvent:
    """The typed wrapper for a parsed server event."""
    return _CLASSES.get(data.get("type"), ServerEvent)(data)  # type: ignore[arg-type]


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
