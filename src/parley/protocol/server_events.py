"""Reading server events: one raw event in, one typed, GA-shaped view out.

`read_server_event` never raises. It parses the JSON once, maps beta names and shapes to GA
(`protocol.beta`), and wraps the dict in the view class for its type. Anything that is not an
event (not JSON, not an object, no string `type`) comes back as an `InvalidServerEvent` saying
why, so a reader counts it and goes on.

A view holds the parsed dict and reads fields on demand: wrapping costs one small object, and an
unknown or future event type is still a `ServerEvent` with all its fields reachable as attributes
(`event.audio_start_ms`) or with `event["field"]` / `event.get()`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from . import beta as _beta

__all__ = [
    "AudioDelta",
    "ErrorEvent",
    "FunctionCallArgumentsDone",
    "InvalidServerEvent",
    "ItemEvent",
    "ResponseEvent",
    "ServerEvent",
    "SessionEvent",
    "SpeechEvent",
    "TextDelta",
    "TranscriptionCompleted",
    "read_server_event",
    "wrap",
]

_loads = json.loads
_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # the C scanner, without json.loads' two whitespace regexes


def _parse(raw: str | bytes | bytearray) -> Any:
    text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8")
    try:
        value, end = _scan(text, 0)
    except StopIteration:  # leading whitespace, or nothing JSON at all: the full parser says which
        return _loads(text)
    if end != len(text) and text[end:].strip():
        return _loads(text)  # raises with the place of the extra data
    return value


class ServerEvent:
    """A server event: the parsed JSON object, read lazily."""

    __slots__ = ("data", "type")

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.type: str = str(data.get("type"))

    @property
    def event_id(self) -> str | None:
        return _str_or_none(self.data.get("event_id"))

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


class InvalidServerEvent(ServerEvent):
    """Something that is not a server event; `reason` says what was wrong with it."""

    __slots__ = ("reason",)

    def __init__(self, reason: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(data if data is not None else {})
        self.type = "invalid"
        self.reason = reason

    def __repr__(self) -> str:
        return f"InvalidServerEvent({self.reason})"


class SessionEvent(ServerEvent):
    """`session.created` / `session.updated`."""

    __slots__ = ()

    @property
    def session(self) -> dict[str, Any]:
        value = self.data.get("session")
        return value if isinstance(value, dict) else {}


class ErrorEvent(ServerEvent):
    """`error`: from the server, or made by a client (`error.type == "client_error"`)."""

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
    def param(self) -> str | None:
        return _str_or_none(self.error.get("param"))

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
    """`conversation.item.added|done|retrieved`, `response.output_item.added|done`."""

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

    @property
    def audio(self) -> bytes:
        try:
            return self._audio
        except AttributeError:  # not decoded yet: most readers never ask
            self._audio: bytes = base64.b64decode(self.data.get("delta") or "")
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


# GA names only: beta names are mapped before the lookup.
_CLASSES: dict[str, type[ServerEvent]] = {
    "session.created": SessionEvent,
    "session.updated": SessionEvent,
    "error": ErrorEvent,
    "input_audio_buffer.speech_started": SpeechEvent,
    "input_audio_buffer.speech_stopped": SpeechEvent,
    "input_audio_buffer.committed": SpeechEvent,
    "input_audio_buffer.timeout_triggered": SpeechEvent,
    "conversation.item.added": ItemEvent,
    "conversation.item.done": ItemEvent,
    "conversation.item.retrieved": ItemEvent,
    "response.output_item.added": ItemEvent,
    "response.output_item.done": ItemEvent,
    "conversation.item.input_audio_transcription.completed": TranscriptionCompleted,
    "conversation.item.input_audio_transcription.delta": TextDelta,
    "response.output_text.delta": TextDelta,
    "response.output_audio_transcript.delta": TextDelta,
    "response.function_call_arguments.delta": TextDelta,
    "response.output_audio.delta": AudioDelta,
    "response.function_call_arguments.done": FunctionCallArgumentsDone,
    "response.created": ResponseEvent,
    "response.done": ResponseEvent,
}

# Events whose type or payload may be in a beta shape: renamed types, and those carrying a
# session, an item or a response (beta content part names, flat sessions, `modalities`).
_MAYBE_BETA = frozenset({
    *_beta.SERVER_RENAMES,
    "transcription_session.created", "transcription_session.updated",
    "session.created", "session.updated",
    "conversation.item.added", "conversation.item.done", "conversation.item.retrieved",
    "response.output_item.added", "response.output_item.done", "response.created", "response.done",
})


def wrap(data: dict[str, Any]) -> ServerEvent:
    """The typed view of an already parsed GA server event."""
    return _CLASSES.get(data.get("type"), ServerEvent)(data)  # type: ignore[arg-type]


def read_server_event(raw: str | bytes | bytearray | dict[str, Any]) -> ServerEvent:
    """One server event as a GA-shaped typed view; an `InvalidServerEvent` for anything else."""
    if raw.__class__ is dict:
        data: Any = raw
    else:
        try:
            data = _parse(raw)  # type: ignore[arg-type]
        except (ValueError, UnicodeDecodeError, TypeError) as exc:
            return InvalidServerEvent(f"not JSON: {exc}")
        except RecursionError:
            return InvalidServerEvent("nested too deeply")
    if data.__class__ is not dict:
        return InvalidServerEvent("not a JSON object")
    kind = data.get("type")
    if kind.__class__ is not str:
        return InvalidServerEvent("no string 'type'", data)
    if kind in _MAYBE_BETA:
        try:
            data = _beta.server_event_from_beta(data)
        except (RecursionError, AttributeError, TypeError) as exc:
            return InvalidServerEvent(f"malformed {kind!r} event: {type(exc).__name__}", data)
        kind = data.get("type")
    return _CLASSES.get(kind, ServerEvent)(data)
