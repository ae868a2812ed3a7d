"""Parsing and validation of client events.

`parse_client_event` never raises: it returns a validated event model, or `Invalid` carrying
the `error` server event to send back (the session goes on).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from . import beta as _beta
from .errors import ProtocolError, error_from, from_validation_error
from .items import Item, ItemReference
from .limits import MAX_APPEND_BYTES, MAX_EVENT_BYTES, MAX_EVENT_ID_CHARS, MAX_METADATA_PAIRS
from .session import (
    AudioFormat,
    CustomVoice,
    MaxOutputTokens,
    Modality,
    Prompt,
    Reasoning,
    Tool,
    ToolChoice,
    one_modality,
)


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    event_id: str | None = Field(default=None, max_length=MAX_EVENT_ID_CHARS)


class SessionUpdate(_Event):
    type: Literal["session.update"]
    # Validated against the current session when merged (see session.merge_session).
    session: dict[str, Any]


def _decode_audio(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("audio must be a base64 string")
    if len(value) > MAX_APPEND_BYTES * 4 // 3 + 4:
        raise ValueError(f"audio is larger than {MAX_APPEND_BYTES // (1024 * 1024)} MiB per event")
    try:
        audio = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("audio is not valid base64") from None
    if len(audio) > MAX_APPEND_BYTES:  # the length check above lets up to 3 bytes more through
        raise ValueError(f"audio is larger than {MAX_APPEND_BYTES // (1024 * 1024)} MiB per event")
    return audio


class InputAudioBufferAppend(_Event):
    type: Literal["input_audio_buffer.append"]
    # Decoded once, while validating: this is the hot path (50 events a second per call).
    audio: Annotated[bytes, BeforeValidator(_decode_audio)]


class InputAudioBufferCommit(_Event):
    type: Literal["input_audio_buffer.commit"]


class InputAudioBufferClear(_Event):
    type: Literal["input_audio_buffer.clear"]


class ConversationItemCreate(_Event):
    type: Literal["conversation.item.create"]
    item: Item
    previous_item_id: str | None = None


class ConversationItemRetrieve(_Event):
    type: Literal["conversation.item.retrieve"]
    item_id: str


class ConversationItemTruncate(_Event):
    type: Literal["conversation.item.truncate"]
    item_id: str
    content_index: int = Field(ge=0)
    audio_end_ms: int = Field(ge=0)


class ConversationItemDelete(_Event):
    type: Literal["conversation.item.delete"]
    item_id: str


class ResponseAudioOutput(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    format: AudioFormat | None = None
    voice: str | CustomVoice | None = None


class ResponseAudio(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    output: ResponseAudioOutput | None = None


class ResponseParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    output_modalities: list[Modality] | None = None
    instructions: str | None = None
    audio: ResponseAudio | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    reasoning: Reasoning | None = None
    max_output_tokens: MaxOutputTokens | None = None
    conversation: str | None = None  # "auto" (default) or "none" (out of band)
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None = None
    prompt: Prompt | None = None
    input: list[Annotated[Item | ItemReference, Field(discriminator="type")]] | None = None

    @model_validator(mode="after")
    def _check(self) -> ResponseParams:
        if self.metadata is not None and len(self.metadata) > MAX_METADATA_PAIRS:
            raise ValueError(f"metadata can have at most {MAX_METADATA_PAIRS} pairs")
        if self.output_modalities is not None:
            self.output_modalities = one_modality(self.output_modalities)
        return self

    @property
    def out_of_band(self) -> bool:
        return self.conversation == "none"


class ResponseCreate(_Event):
    type: Literal["response.create"]
    response: ResponseParams | None = None


class ResponseCancel(_Event):
    type: Literal["response.cancel"]
    response_id: str | None = None


class OutputAudioBufferClear(_Event):
    type: Literal["output_audio_buffer.clear"]


ClientEvent = (
    SessionUpdate
    | InputAudioBufferAppend
    | InputAudioBufferCommit
    | InputAudioBufferClear
    | ConversationItemCreate
    | ConversationItemRetrieve
    | ConversationItemTruncate
    | ConversationItemDelete
    | ResponseCreate
    | ResponseCancel
    | OutputAudioBufferClear
)
_MODELS: dict[str, type[_Event]] = {
    cls.model_fields["type"].annotation.__args__[0]: cls  # type: ignore[union-attr]
    for cls in (
        SessionUpdate, InputAudioBufferAppend, InputAudioBufferCommit, InputAudioBufferClear,
        ConversationItemCreate, ConversationItemRetrieve, ConversationItemTruncate, ConversationItemDelete,
        ResponseCreate, ResponseCancel, OutputAudioBufferClear,
    )
}
CLIENT_EVENT_TYPES = tuple(_MODELS)


@dataclass(frozen=True)
class Invalid:
    """A client event that could not be accepted; `error` is the event to send back."""

    error: dict[str, Any]


def parse_client_event(raw: str | bytes | Any, *, beta: bool = False) -> ClientEvent | Invalid:
    """Validate one client event (a JSON text, or an already decoded value)."""
    data = raw
    if isinstance(raw, (str, bytes, bytearray)):
        if len(raw) > MAX_EVENT_BYTES:
            return Invalid(error_from(ProtocolError(
                "invalid_value", f"The event is larger than {MAX_EVENT_BYTES // (1024 * 1024)} MiB.")))
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return Invalid(error_from(ProtocolError("invalid_json", f"The event is not valid JSON: {exc}.")))
        except RecursionError:
            return Invalid(error_from(ProtocolError("invalid_json", "The event is nested too deeply.")))
    if not isinstance(data, dict):
        return Invalid(error_from(ProtocolError("invalid_event", "An event must be a JSON object with a 'type'.")))
    client_event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    kind = data.get("type")
    if kind is None:
        return Invalid(error_from(ProtocolError("missing_required_parameter",
                                                "Missing required parameter: 'type'.", "type"), client_event_id))
    if not isinstance(kind, str):
        return Invalid(error_from(ProtocolError("invalid_type",
                                                "Invalid type for 'type': expected a string.", "type"),
                                  client_event_id))
    if beta or kind == "transcription_session.update":
        try:
            data = _beta.client_event_from_beta(data)
        except RecursionError:
            return Invalid(error_from(ProtocolError("invalid_event", "The event is nested too deeply."),
                                      client_event_id))
        kind = data.get("type")
    if kind not in CLIENT_EVENT_TYPES:
        return Invalid(error_from(ProtocolError(
            "invalid_value",
            f"Invalid value: '{kind}'. Supported values are: {', '.join(repr(t) for t in CLIENT_EVENT_TYPES)}.",
            "type"), client_event_id))
    try:
        return _MODELS[kind].model_validate(data)  # type: ignore[return-value]
    except ValidationError as exc:
        return Invalid(error_from(from_validation_error(exc), client_event_id))
    except RecursionError:
        return Invalid(error_from(ProtocolError("invalid_event", "The event is nested too deeply."), client_event_id))
