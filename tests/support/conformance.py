"""A strict validator of Realtime events against the official `openai` SDK's models.

Parsing an event with the SDK alone proves little: its models accept unknown keys (extra="allow")
and `construct_type` builds a lenient object even for an unknown `type`. Here an event must

* have a `type` that is a member of the SDK's event union (GA or beta),
* validate with `Model.model_validate(event, strict=True)` (required fields, types), and
* contain only declared fields, at every depth: nested models, lists and dicts of models, and
  unions (an event passes if some member of each union accepts the value with no unknown key),
* be plain JSON (it survives `json.dumps(allow_nan=False)` unchanged), and
* carry a non-empty string `event_id` (server events; all but `input_audio_buffer.dtmf_event_received`,
  whose schema has none).

Deliberate widenings, where the SDK models disagree with what the server sends (each is in
`FIELD_WIDENINGS`, and applies to that one field only):

* GA `session.created` / `session.updated`: the SDK types `session` as the session *request*
  models, which have no `id`, `object` or `expires_at`; the server sends the session resource
  (docs/protocol.md, sections 1.3 and 5.1). Accepted: a request model plus those three fields, or the
  SDK's resource models (`RealtimeSessionCreateResponse` /
  `RealtimeTranscriptionSessionCreateResponse`).
* beta `session.created` / `session.updated`: likewise (the beta `Session` has `id` only; beta
  sessions carried `object` and `expires_at`, docs/protocol.md section 2.1).
* beta `transcription_session.updated`: the SDK reuses the REST response, whose `client_secret`
  is required; accepted: the beta `transcription_session.update` session plus the resource fields.
* beta usage: `input_token_details.cached_tokens_details` (text/audio), which beta servers sent
  though the beta SDK type lacks it (docs/protocol.md, section 3.4).

Parley's own extensions (keys the engine adds that the SDK does not declare, each in `EXTENSIONS`
and docs/protocol.md): `previous_item_id` on `conversation.item.retrieved`.

Examples of every GA server event and client event, built with parley.protocol, are at the end
(`server_event_examples()`, `client_event_examples()`, ...), for any test to reuse.

Import it from tests as `from conformance import validate_server_event` (pytest puts tests/ on
sys.path).
"""

from __future__ import annotations

import collections.abc
import json
import math
import types
import typing
from typing import Any, Literal, Union

import pydantic
import typing_extensions
from openai.types.beta.realtime import realtime_client_event as _beta_client
from openai.types.beta.realtime import realtime_response_usage as _beta_usage
from openai.types.beta.realtime import realtime_server_event as _beta_server
from openai.types.beta.realtime import session as _beta_session
from openai.types.beta.realtime import session_created_event as _beta_session_created
from openai.types.beta.realtime import session_update_event as _beta_session_update
from openai.types.beta.realtime import session_updated_event as _beta_session_updated
from openai.types.beta.realtime import transcription_session_update as _beta_transcription_update
from openai.types.beta.realtime import transcription_session_updated_event as _beta_transcription_updated
from openai.types.realtime import realtime_client_event as _ga_client
from openai.types.realtime import realtime_server_event as _ga_server
from openai.types.realtime import session_created_event as _ga_session_created
from openai.types.realtime import session_updated_event as _ga_session_updated
from openai.types.realtime.realtime_session_create_response import RealtimeSessionCreateResponse
from openai.types.realtime.realtime_transcription_session_create_response import (
    RealtimeTranscriptionSessionCreateResponse,
)

__all__ = [
    "BETA_CLIENT_EVENTS",
    "BETA_SERVER_EVENTS",
    "EVENTS_WITHOUT_EVENT_ID",
    "FIELD_WIDENINGS",
    "GA_CLIENT_EVENTS",
    "GA_SERVER_EVENTS",
    "SESSION_RESOURCE",
    "ConformanceError",
    "check_value",
    "client_event_examples",
    "item_examples",
    "response_examples",
    "server_event_examples",
    "session_examples",
    "validate_client_event",
    "validate_server_event",
]


class ConformanceError(AssertionError):
    """An event (or value) that the SDK's model does not describe exactly."""


# -- the SDK's unions ------------------------------------------------------------------------


def _union_members(union: Any) -> list[type[pydantic.BaseModel]]:
    """Members of `Annotated[Union[...], PropertyInfo(discriminator="type")]`."""
    if typing.get_origin(union) is typing.Annotated:
        union = typing.get_args(union)[0]
    return [m for m in typing.get_args(union) if isinstance(m, type) and issubclass(m, pydantic.BaseModel)]


def _type_literal(model: type[pydantic.BaseModel]) -> str:
    ann = model.model_fields["type"].annotation
    values = typing.get_args(ann) if typing.get_origin(ann) is Literal else ()
    if len(values) != 1 or not isinstance(values[0], str):
        raise TypeError(f"{model.__name__}.type is not a single string Literal: {ann!r}")
    return values[0]


def _by_type(union: Any) -> dict[str, type[pydantic.BaseModel]]:
    out: dict[str, type[pydantic.BaseModel]] = {}
    for model in _union_members(union):
        kind = _type_literal(model)
        if kind in out:
            raise TypeError(f"two models for {kind!r}: {out[kind].__name__}, {model.__name__}")
        out[kind] = model
    return out


GA_SERVER_EVENTS: dict[str, type[pydantic.BaseModel]] = _by_type(_ga_server.RealtimeServerEvent)
BETA_SERVER_EVENTS: dict[str, type[pydantic.BaseModel]] = _by_type(_beta_server.RealtimeServerEvent)
GA_CLIENT_EVENTS: dict[str, type[pydantic.BaseModel]] = _by_type(_ga_client.RealtimeClientEvent)
BETA_CLIENT_EVENTS: dict[str, type[pydantic.BaseModel]] = _by_type(_beta_client.RealtimeClientEvent)

EVENTS_WITHOUT_EVENT_ID = frozenset({"input_audio_buffer.dtmf_event_received"})


# -- widenings -------------------------------------------------------------------------------


class _RealtimeSessionResource(_ga_session_created.RealtimeSessionCreateRequest):
    """The SDK's session.created `session` (a request model) plus the resource fields."""

    id: str
    object: Literal["realtime.session"]
    expires_at: int | None = None


class _TranscriptionSessionResource(_ga_session_created.RealtimeTranscriptionSessionCreateRequest):
    id: str
    object: Literal["realtime.transcription_session"]
    expires_at: int | None = None


# The session in session.created / session.updated: what the SDK declares (a request model, with
# the resource's id/object/expires_at added) or the SDK's session resource models.
SESSION_RESOURCE = Union[  # noqa: UP007 - a runtime union of classes
    _RealtimeSessionResource,
    _TranscriptionSessionResource,
    RealtimeSessionCreateResponse,
    RealtimeTranscriptionSessionCreateResponse,
]


class _BetaSessionResource(_beta_session_update.Session):
    """Beta session.created/updated as sent (docs/protocol.md, section 2.1: `object`, `id`, `expires_at`);
    the SDK's beta `Session` has only `id`. Built on the session.update model, as for GA."""

    id: str
    object: Literal["realtime.session"]
    expires_at: int | None = None


class _BetaTranscriptionSessionResource(_beta_transcription_update.Session):
    """The SDK types transcription_session.updated's session as the REST response, whose
    `client_secret` is required; a session event has none."""

    id: str
    object: Literal["realtime.transcription_session"]
    expires_at: int | None = None


class _BetaCachedTokensDetails(pydantic.BaseModel):
    """GA's split of cached tokens, less the image tokens (images are GA-only)."""

    audio_tokens: int | None = None
    text_tokens: int | None = None


class _BetaInputTokenDetails(_beta_usage.InputTokenDetails):
    """Beta servers sent `cached_tokens_details`, which the beta SDK type lacks (docs/protocol.md 3.4)."""

    cached_tokens_details: _BetaCachedTokensDetails | None = None


# (model, field) -> the annotation to check that field against instead of the SDK's.
FIELD_WIDENINGS: dict[tuple[type[pydantic.BaseModel], str], Any] = {
    (_ga_session_created.SessionCreatedEvent, "session"): SESSION_RESOURCE,
    (_ga_session_updated.SessionUpdatedEvent, "session"): SESSION_RESOURCE,
    (_beta_session_created.SessionCreatedEvent, "session"): Union[  # noqa: UP007
        _beta_session.Session, _BetaSessionResource],
    (_beta_session_updated.SessionUpdatedEvent, "session"): Union[  # noqa: UP007
        _beta_session.Session, _BetaSessionResource],
    (_beta_transcription_updated.TranscriptionSessionUpdatedEvent, "session"): Union[  # noqa: UP007
        _beta_transcription_updated.TranscriptionSession, _BetaTranscriptionSessionResource],
    (_beta_usage.RealtimeResponseUsage, "input_token_details"): _BetaInputTokenDetails | None,
}
# (model, key) -> annotation: keys Parley's engine adds that the SDK's model does not declare (its
# own extensions, each documented in docs/protocol.md; clients ignore them).
EXTENSIONS: dict[tuple[type[pydantic.BaseModel], str], Any] = {
    # A retrieved item names its previous one, so a recorder can walk back through a gap.
    (_ga_server.ConversationItemRetrieved, "previous_item_id"): str | None,
    (_beta_server.ConversationItemRetrieved, "previous_item_id"): str | None,
}
# The event models with a widened field, for the SDK's own validation step (nested widenings
# need none: the SDK models accept the extra keys there).
_VALIDATORS: dict[type[pydantic.BaseModel], type[pydantic.BaseModel]] = {
    model: pydantic.create_model(  # type: ignore[call-overload]
        f"{model.__name__}AsSent", __base__=model, **{field: (ann, ...)}
    )
    for (model, field), ann in FIELD_WIDENINGS.items()
    if "type" in model.model_fields and model.model_fields[field].is_required()
}


# -- the recursive check ---------------------------------------------------------------------


_TYPE_ALIAS_TYPES = tuple(
    t for t in (getattr(typing, "TypeAliasType", None), getattr(typing_extensions, "TypeAliasType", None)) if t
)


def _path(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else key)


def _declared(model: type[pydantic.BaseModel]) -> dict[str, tuple[str, pydantic.fields.FieldInfo]]:
    """Wire key -> (attribute name, field)."""
    return {(field.alias or name): (name, field) for name, field in model.model_fields.items()}


def _field_annotation(field: pydantic.fields.FieldInfo) -> Any:
    # pydantic moves `Annotated[...]` metadata (e.g. the SDK's PropertyInfo discriminator) off the
    # annotation; put it back so unions can be narrowed by their discriminator.
    if field.metadata:
        return typing.Annotated[(field.annotation, *field.metadata)]
    return field.annotation


def _discriminator(metadata: tuple[Any, ...]) -> str | None:
    for meta in metadata:
        disc = getattr(meta, "discriminator", None)
        if isinstance(disc, str):
            return disc
    return None


def _literal_values(model: type[pydantic.BaseModel], field: str) -> tuple[Any, ...] | None:
    info = model.model_fields.get(field)
    if info is None:
        return None
    values: list[Any] = []
    pending = [info.annotation]
    while pending:  # Literal["x"], Optional[Literal["x"]], Union of Literals
        ann = pending.pop()
        if typing.get_origin(ann) is Literal:
            values.extend(typing.get_args(ann))
        elif _is_union(typing.get_origin(ann)):
            pending.extend(typing.get_args(ann))
    return tuple(values) or None


def _is_union(origin: Any) -> bool:
    return origin is Union or origin is types.UnionType


def _type_name(ann: Any) -> str:
    return getattr(ann, "__name__", None) or repr(ann)


def check_value(value: Any, ann: Any, path: str = "") -> None:
    """Raise ConformanceError unless `value` is exactly described by the annotation `ann`."""
    if ann is Any or ann is object:
        return
    if isinstance(ann, _TYPE_ALIAS_TYPES):
        check_value(value, ann.__value__, path)
        return
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        inner, *metadata = typing.get_args(ann)
        disc = _discriminator(tuple(metadata))
        if disc and _is_union(typing.get_origin(inner)) and isinstance(value, dict) and disc in value:
            members = typing.get_args(inner)
            narrowed = [
                m for m in members
                if isinstance(m, type) and issubclass(m, pydantic.BaseModel)
                and value[disc] in (_literal_values(m, disc) or ())
            ]
            if not narrowed:
                raise ConformanceError(
                    f"{path or '<root>'}: {disc}={value[disc]!r} names no member of "
                    f"{[_type_name(m) for m in members]}"
                )
            _check_union(value, narrowed, path)
            return
        check_value(value, inner, path)
        return
    if ann is None or ann is type(None):
        if value is not None:
            raise ConformanceError(f"{path or '<root>'}: expected null, got {value!r}")
        return
    if origin is Literal:
        if not any(value == v and type(value) is type(v) for v in typing.get_args(ann)):
            raise ConformanceError(f"{path or '<root>'}: {value!r} is not one of {list(typing.get_args(ann))}")
        return
    if _is_union(origin):
        _check_union(value, list(typing.get_args(ann)), path)
        return
    if origin in (list, collections.abc.Sequence, collections.abc.Iterable):
        if not isinstance(value, list):
            raise ConformanceError(f"{path or '<root>'}: expected an array, got {type(value).__name__}")
        (item_ann,) = typing.get_args(ann)[:1] or (Any,)
        for i, item in enumerate(value):
            check_value(item, item_ann, _path(path, i))
        return
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise ConformanceError(f"{path or '<root>'}: expected an object, got {type(value).__name__}")
        args = typing.get_args(ann)
        key_ann, val_ann = args if len(args) == 2 else (str, Any)
        for k, v in value.items():
            check_value(k, key_ann, _path(path, f"<key {k!r}>"))
            check_value(v, val_ann, _path(path, k))
        return
    if isinstance(ann, type) and issubclass(ann, pydantic.BaseModel):
        _check_model(value, ann, path)
        return
    if ann is bool:
        if not isinstance(value, bool):
            raise ConformanceError(f"{path or '<root>'}: expected a boolean, got {value!r}")
        return
    if ann is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConformanceError(f"{path or '<root>'}: expected an integer, got {value!r}")
        return
    if ann is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ConformanceError(f"{path or '<root>'}: expected a number, got {value!r}")
        return
    if ann is str:
        if not isinstance(value, str):
            raise ConformanceError(f"{path or '<root>'}: expected a string, got {value!r}")
        return
    raise ConformanceError(f"{path or '<root>'}: conformance.py does not know the annotation {ann!r}")


def _check_union(value: Any, members: list[Any], path: str) -> None:
    failures: list[str] = []
    for member in members:
        try:
            check_value(value, member, path)
        except ConformanceError as exc:
            failures.append(f"  as {_type_name(member)}: {exc}")
        else:
            return
    raise ConformanceError(f"{path or '<root>'}: no member of the union accepts the value:\n" + "\n".join(failures))


def _check_model(value: Any, model: type[pydantic.BaseModel], path: str) -> None:
    if not isinstance(value, dict):
        raise ConformanceError(f"{path or '<root>'}: expected a {model.__name__} object, got {value!r}")
    declared = _declared(model)
    extended = {key: ann for (m, key), ann in EXTENSIONS.items() if m is model}
    unknown = sorted(set(value) - set(declared) - set(extended))
    if unknown:
        raise ConformanceError(
            f"{path or '<root>'}: {model.__name__} does not declare {', '.join(map(repr, unknown))} "
            f"(declared: {', '.join(sorted(declared))})"
        )
    for key, (_name, field) in declared.items():
        if key not in value:
            if field.is_required():
                raise ConformanceError(f"{_path(path, key)}: required by {model.__name__} but missing")
            continue
        ann = FIELD_WIDENINGS.get((model, key))
        check_value(value[key], ann if ann is not None else _field_annotation(field), _path(path, key))
    for key, ann in extended.items():
        if key in value:
            check_value(value[key], ann, _path(path, key))


def _check_json(event: Any) -> None:
    try:
        text = json.dumps(event, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConformanceError(f"not JSON-serialisable: {exc}") from None
    if json.loads(text) != event:
        raise ConformanceError("does not survive a JSON round trip unchanged (tuples, non-str keys?)")


def _validate(event: Any, models: dict[str, type[pydantic.BaseModel]], what: str) -> type[pydantic.BaseModel]:
    if not isinstance(event, dict):
        raise ConformanceError(f"{what} must be a JSON object, got {type(event).__name__}")
    _check_json(event)
    kind = event.get("type")
    model = models.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ConformanceError(f"{what} type {kind!r} is not in the SDK's union")
    try:
        _VALIDATORS.get(model, model).model_validate(event, strict=True)
    except pydantic.ValidationError as exc:
        raise ConformanceError(f"{kind}: the SDK's {model.__name__} rejects it:\n{exc}") from None
    try:
        _check_model(event, model, "")
    except ConformanceError as exc:
        raise ConformanceError(f"{kind}: {exc}") from None
    return model


def validate_server_event(event: dict[str, Any], *, beta: bool = False) -> None:
    """Raise ConformanceError unless `event` is exactly a GA (or beta) server event of the SDK."""
    _validate(event, BETA_SERVER_EVENTS if beta else GA_SERVER_EVENTS, "server event")
    if event["type"] not in EVENTS_WITHOUT_EVENT_ID:
        eid = event.get("event_id")
        if not isinstance(eid, str) or not eid:
            raise ConformanceError(f"{event['type']}: event_id must be a non-empty string, got {eid!r}")


def validate_client_event(event: dict[str, Any], *, beta: bool = False) -> None:
    """Raise ConformanceError unless `event` is exactly a GA (or beta) client event of the SDK."""
    _validate(event, BETA_CLIENT_EVENTS if beta else GA_CLIENT_EVENTS, "client event")


# -- examples of every GA server event, built with parley.protocol ------------------------------


def session_examples() -> dict[str, dict[str, Any]]:
    """Session resources (as in session.created/updated) for realtime and transcription sessions."""
    from parley.protocol import ids
    from parley.protocol.session import parse_session, session_resource

    def resource(config: dict[str, Any]) -> dict[str, Any]:
        return session_resource(parse_session(config), id=ids.session_id(), expires_at=1_767_225_600)

    weather = {
        "type": "function", "name": "get_weather", "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    return {
        "realtime-defaults": resource({"type": "realtime"}),
        "realtime-full": resource({
            "type": "realtime",
            "model": "gpt-realtime-2025-08-28",
            "instructions": "You are a terse assistant.",
            "output_modalities": ["text"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "noise_reduction": {"type": "far_field"},
                    "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en", "prompt": "Parley"},
                    "turn_detection": {"type": "semantic_vad", "eagerness": "high", "create_response": False},
                },
                "output": {"format": {"type": "audio/pcma"}, "voice": "marin", "speed": 1.25},
            },
            "tools": [weather],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "max_output_tokens": 4096,
            "truncation": {"type": "retention_ratio", "retention_ratio": 0.8,
                           "token_limits": {"post_instructions": 1000}},
            "prompt": {"id": "pmpt_123", "version": "2", "variables": {"city": "Paris"}},
            "tracing": {"workflow_name": "parley", "group_id": "g1", "metadata": {"k": "v"}},
            "include": ["item.input_audio_transcription.logprobs"],
            "reasoning": {"effort": "low"},
        }),
        "realtime-server-vad-idle-timeout": resource({
            "type": "realtime",
            "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 0.7, "prefix_padding_ms": 200,
                                                   "silence_duration_ms": 800, "idle_timeout_ms": 6000,
                                                   "interrupt_response": False}}},
            "tracing": "auto",
            "truncation": "disabled",
            "tool_choice": "required",
        }),
        "realtime-manual-turns": resource({"type": "realtime", "audio": {"input": {"turn_detection": None}},
                                           "tool_choice": "none"}),
        "transcription-defaults": resource({"type": "transcription"}),
        "transcription-full": resource({
            "type": "transcription",
            "audio": {"input": {
                "format": "g711_alaw",
                "noise_reduction": {"type": "near_field"},
                "transcription": {"model": "gpt-4o-transcribe", "language": "de", "prompt": "Namen"},
                "turn_detection": {"type": "server_vad", "threshold": 0.4, "silence_duration_ms": 300},
            }},
            "include": ["item.input_audio_transcription.logprobs"],
        }),
        "transcription-no-vad": resource({
            "type": "transcription",
            "audio": {"input": {"transcription": {"model": "gpt-realtime-whisper"}, "turn_detection": None}},
        }),
    }


def item_examples() -> dict[str, dict[str, Any]]:
    """Items as the server reports them (no audio bytes), one per role/content type/status."""
    from parley.protocol import ids, items

    png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    return {
        "system-text": items.message(ids.item_id(), "system", [items.input_text("Speak French.")]),
        "user-text": items.message(ids.item_id(), "user", [items.input_text("hi")]),
        "user-audio-pending": items.message(ids.item_id(), "user", [items.input_audio(None)], status="in_progress"),
        "user-audio": items.message(ids.item_id(), "user", [items.input_audio("What's the weather?")]),
        "user-image": items.message(ids.item_id(), "user", [
            items.input_text("What is this?"), {"type": "input_image", "image_url": png, "detail": "low"}]),
        "assistant-empty": items.message(ids.item_id(), "assistant", [], status="in_progress"),
        "assistant-text": items.message(ids.item_id(), "assistant", [items.output_text("Bonjour.")]),
        "assistant-audio": items.message(ids.item_id(), "assistant", [items.output_audio("It is sunny.")]),
        "assistant-audio-incomplete": items.message(ids.item_id(), "assistant", [items.output_audio("It is")],
                                                    status="incomplete"),
        "function-call-started": items.function_call(ids.item_id(), ids.call_id(), "get_weather", "",
                                                     status="in_progress"),
        "function-call": items.function_call(ids.item_id(), ids.call_id(), "get_weather", '{"city": "Paris"}'),
        "function-call-output": items.function_call_output(ids.item_id(), ids.call_id(), '{"temp_c": 21}'),
    }


def response_examples() -> dict[str, dict[str, Any]]:
    """Response objects in every status, both modalities, with usage."""
    from parley.protocol import events, ids, items

    conv = ids.conversation_id()
    audio_msg = items.message(ids.item_id(), "assistant", [items.output_audio("It is sunny in Paris.")])
    text_msg = items.message(ids.item_id(), "assistant", [items.output_text("topic: weather")])
    call = items.function_call(ids.item_id(), ids.call_id(), "get_weather", '{"city": "Paris"}')
    audio_out = {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"}
    use = events.usage(input_text=119, input_audio=13, cached_text=64, output_text=30, output_audio=91)
    r = events.response_object
    return {
        "in-progress": r(ids.response_id(), conversation_id=conv, audio_output=audio_out),
        "completed-audio": r(ids.response_id(), status="completed", output=[audio_msg, call], conversation_id=conv,
                             audio_output=audio_out, usage=use),
        "completed-text-out-of-band": r(ids.response_id(), status="completed", output=[text_msg],
                                        output_modalities=["text"], max_output_tokens=256,
                                        metadata={"purpose": "classify"},
                                        usage=events.usage(input_text=40, output_text=3)),
        "cancelled-turn-detected": r(ids.response_id(), status="cancelled",
                                     status_details=events.status_details("cancelled", "turn_detected"),
                                     output=[items.message(ids.item_id(), "assistant", [items.output_audio("It")],
                                                           status="incomplete")],
                                     conversation_id=conv, usage=events.usage(input_audio=50, output_audio=4)),
        "cancelled-client": r(ids.response_id(), status="cancelled",
                              status_details=events.status_details("cancelled", "client_cancelled"),
                              conversation_id=conv, usage=events.usage()),
        "failed": r(ids.response_id(), status="failed",
                    status_details=events.status_details("failed", error={"type": "server_error",
                                                                          "code": "engine_error"}),
                    conversation_id=conv, usage=events.usage(input_text=10)),
        "incomplete-max-tokens": r(ids.response_id(), status="incomplete",
                                   status_details=events.status_details("incomplete", "max_output_tokens"),
                                   output=[text_msg], output_modalities=["text"], max_output_tokens=3,
                                   conversation_id=conv, usage=events.usage(input_text=12, cached_audio=0,
                                                                            output_text=3)),
        "incomplete-content-filter": r(ids.response_id(), status="incomplete",
                                       status_details=events.status_details("incomplete", "content_filter"),
                                       conversation_id=conv, usage=events.usage(input_image=85, cached_image=85,
                                                                                output_audio=7)),
    }


def server_event_examples() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """GA server event type -> [(label, event)], covering every type in the SDK's union."""
    from parley.protocol import events, ids, items
    from parley.protocol.errors import error_event

    sessions = session_examples()
    its = item_examples()
    responses = response_examples()
    resp, item, prev, call = ids.response_id(), ids.item_id(), ids.item_id(), ids.call_id()
    pcm = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    e = events
    ex: dict[str, list[tuple[str, dict[str, Any]]]] = {
        "session.created": [(k, e.session_created(v)) for k, v in sessions.items()],
        "session.updated": [(k, e.session_updated(v)) for k, v in sessions.items()],
        "conversation.created": [("default", e.conversation_created(ids.conversation_id()))],
        "rate_limits.updated": [("requests-and-tokens", e.rate_limits_updated([
            e.rate_limit("requests", 1000, 999, 60.0), e.rate_limit("tokens", 50000, 49746, 0.3)]))],
        "error": [
            ("no-client-event", error_event("invalid_event", "The 'type' field is missing.")),
            ("client-event", error_event("missing_required_parameter", "Missing required parameter: 'item'.",
                                         param="item", client_event_id="c_1")),
            ("server-error", error_event(None, "The server had an error.", type="server_error")),
        ],
        "input_audio_buffer.speech_started": [("vad", e.input_audio_buffer_speech_started(1200, item))],
        "input_audio_buffer.speech_stopped": [("vad", e.input_audio_buffer_speech_stopped(2800, item))],
        "input_audio_buffer.committed": [
            ("first", e.input_audio_buffer_committed(item, None)),
            ("after", e.input_audio_buffer_committed(item, prev)),
        ],
        "input_audio_buffer.cleared": [("clear", e.input_audio_buffer_cleared())],
        "input_audio_buffer.timeout_triggered": [("idle", e.input_audio_buffer_timeout_triggered(9000, 15000, item))],
        "input_audio_buffer.dtmf_event_received": [
            ("digit", e.input_audio_buffer_dtmf_event_received("5", 1_767_225_600)),
            ("star-now", e.input_audio_buffer_dtmf_event_received("*")),
        ],
        "conversation.item.added": [(k, e.conversation_item_added(v, prev)) for k, v in its.items()]
        + [("first-item", e.conversation_item_added(its["user-text"], None))],
        "conversation.item.done": [(k, e.conversation_item_done(v, prev)) for k, v in its.items()]
        + [("first-item", e.conversation_item_done(its["user-text"], None))],
        "conversation.item.created": [(k, e.conversation_item_created(v, prev)) for k, v in its.items()],
        "conversation.item.retrieved": [
            ("user-audio-with-bytes", e.conversation_item_retrieved(
                items.message(item, "user", [items.input_audio("hello", audio=pcm)]))),
            ("assistant-audio-with-bytes", e.conversation_item_retrieved(
                items.message(item, "assistant", [items.output_audio("hi", audio=pcm)]))),
            *[(k, e.conversation_item_retrieved(v)) for k, v in its.items()],
        ],
        "conversation.item.truncated": [("played", e.conversation_item_truncated(item, 0, 1420))],
        "conversation.item.deleted": [("deleted", e.conversation_item_deleted(item))],
        "conversation.item.input_audio_transcription.delta": [
            ("delta", e.conversation_item_input_audio_transcription_delta(item, "Hel")),
        ],
        "conversation.item.input_audio_transcription.completed": [
            ("tokens", e.conversation_item_input_audio_transcription_completed(
                item, "Hello.", e.transcription_usage_tokens(22, 3, audio_tokens=20))),
            ("duration", e.conversation_item_input_audio_transcription_completed(
                item, "Hello.", e.transcription_usage_duration(1.2345))),
        ],
        "conversation.item.input_audio_transcription.failed": [
            ("unintelligible", e.conversation_item_input_audio_transcription_failed(
                item, "audio_unintelligible", "The audio could not be transcribed.")),
        ],
        "conversation.item.input_audio_transcription.segment": [
            ("diarized", e.conversation_item_input_audio_transcription_segment(
                item, "seg_0001", "Hello there.", 0.0, 1.25, "A")),
        ],
        "response.created": [("in-progress", e.response_created(responses["in-progress"]))],
        "response.done": [(k, e.response_done(v)) for k, v in responses.items() if k != "in-progress"],
        "response.output_item.added": [
            ("message", e.response_output_item_added(resp, 0, its["assistant-empty"])),
            ("function-call", e.response_output_item_added(resp, 1, its["function-call-started"])),
        ],
        "response.output_item.done": [
            ("audio-message", e.response_output_item_done(resp, 0, its["assistant-audio"])),
            ("text-message", e.response_output_item_done(resp, 0, its["assistant-text"])),
            ("incomplete-message", e.response_output_item_done(resp, 0, its["assistant-audio-incomplete"])),
            ("function-call", e.response_output_item_done(resp, 1, its["function-call"])),
        ],
        "response.content_part.added": [
            ("audio", e.response_content_part_added(resp, item, 0, 0, {"type": "audio", "transcript": ""})),
            ("text", e.response_content_part_added(resp, item, 0, 0, {"type": "text", "text": ""})),
        ],
        "response.content_part.done": [
            ("audio", e.response_content_part_done(resp, item, 0, 0, {"type": "audio", "transcript": "Hi there."})),
            ("text", e.response_content_part_done(resp, item, 0, 0, {"type": "text", "text": "Hi there."})),
        ],
        "response.output_text.delta": [("delta", e.response_output_text_delta(resp, item, 0, 0, "Hi"))],
        "response.output_text.done": [("done", e.response_output_text_done(resp, item, 0, 0, "Hi there."))],
        "response.output_audio.delta": [("delta", e.response_output_audio_delta(resp, item, 0, 0, pcm))],
        "response.output_audio.done": [("done", e.response_output_audio_done(resp, item, 0, 0))],
        "response.output_audio_transcript.delta": [
            ("delta", e.response_output_audio_transcript_delta(resp, item, 0, 0, "Hi")),
        ],
        "response.output_audio_transcript.done": [
            ("done", e.response_output_audio_transcript_done(resp, item, 0, 0, "Hi there.")),
        ],
        "response.function_call_arguments.delta": [
            ("delta", e.response_function_call_arguments_delta(resp, item, 1, call, '{"city":')),
        ],
        "response.function_call_arguments.done": [
            ("done", e.response_function_call_arguments_done(resp, item, 1, call, "get_weather",
                                                             '{"city": "Paris"}')),
        ],
        "output_audio_buffer.started": [("started", e.output_audio_buffer_started(resp))],
        "output_audio_buffer.stopped": [("stopped", e.output_audio_buffer_stopped(resp))],
        "output_audio_buffer.cleared": [("cleared", e.output_audio_buffer_cleared(resp))],
        "mcp_list_tools.in_progress": [("mcp", e.mcp_list_tools_in_progress(item))],
        "mcp_list_tools.completed": [("mcp", e.mcp_list_tools_completed(item))],
        "mcp_list_tools.failed": [("mcp", e.mcp_list_tools_failed(item))],
        "response.mcp_call_arguments.delta": [("mcp", e.response_mcp_call_arguments_delta(resp, item, 0, '{"q":'))],
        "response.mcp_call_arguments.done": [("mcp", e.response_mcp_call_arguments_done(resp, item, 0, '{"q": 1}'))],
        "response.mcp_call.in_progress": [("mcp", e.response_mcp_call_in_progress(item, 0))],
        "response.mcp_call.completed": [("mcp", e.response_mcp_call_completed(item, 0))],
        "response.mcp_call.failed": [("mcp", e.response_mcp_call_failed(item, 0))],
    }
    return ex


PCM_20MS = "AAAA" * 320  # 960 zero bytes: 20 ms of 24 kHz pcm16


def client_event_examples() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """GA client event type -> [(label, event)]: valid for the SDK and for parley, every type."""
    return {
        "session.update": [
            ("realtime", {"type": "session.update", "event_id": "c_1", "session": {
                "type": "realtime", "instructions": "You are a terse assistant.", "output_modalities": ["audio"],
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                    "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
                                    "noise_reduction": {"type": "near_field"},
                                    "turn_detection": {"type": "semantic_vad", "eagerness": "auto"}},
                          "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin", "speed": 1.0}},
                "tools": [{"type": "function", "name": "get_weather", "description": "Current weather for a city",
                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                          "required": ["city"]}}],
                "tool_choice": "auto", "max_output_tokens": "inf"}}),
            ("transcription", {"type": "session.update", "session": {
                "type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcmu"},
                                    "transcription": {"model": "gpt-4o-transcribe", "prompt": "names"},
                                    "turn_detection": {"type": "server_vad", "threshold": 0.6}}},
                "include": ["item.input_audio_transcription.logprobs"]}}),
            ("partial", {"type": "session.update", "session": {"type": "realtime", "instructions": ""}}),
        ],
        "input_audio_buffer.append": [("20ms", {"type": "input_audio_buffer.append", "audio": PCM_20MS})],
        "input_audio_buffer.commit": [("commit", {"type": "input_audio_buffer.commit", "event_id": "c_2"})],
        "input_audio_buffer.clear": [("clear", {"type": "input_audio_buffer.clear"})],
        "output_audio_buffer.clear": [("clear", {"type": "output_audio_buffer.clear"})],
        "conversation.item.create": [
            ("user-text", {"type": "conversation.item.create", "event_id": "c_1", "item": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}}),
            ("user-audio-image", {"type": "conversation.item.create", "previous_item_id": "root", "item": {
                "type": "message", "role": "user", "content": [
                    {"type": "input_audio", "audio": PCM_20MS},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}]}}),
            ("system", {"type": "conversation.item.create", "item": {
                "type": "message", "role": "system", "content": [{"type": "input_text", "text": "Be brief."}]}}),
            ("assistant-text", {"type": "conversation.item.create", "item": {
                "id": "item_mine", "type": "message", "role": "assistant",
                "content": [{"type": "output_text", "text": "Hello."}]}}),
            ("function-call-output", {"type": "conversation.item.create", "item": {
                "type": "function_call_output", "call_id": "call_1", "output": '{"temp_c": 21}'}}),
            ("function-call", {"type": "conversation.item.create", "item": {
                "type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"}}),
        ],
        "conversation.item.retrieve": [("retrieve", {"type": "conversation.item.retrieve", "item_id": "item_1"})],
        "conversation.item.truncate": [("truncate", {"type": "conversation.item.truncate", "item_id": "item_B",
                                                     "content_index": 0, "audio_end_ms": 1420})],
        "conversation.item.delete": [("delete", {"type": "conversation.item.delete", "item_id": "item_1"})],
        "response.create": [
            ("bare", {"type": "response.create"}),
            ("out-of-band", {"type": "response.create", "response": {
                "conversation": "none", "metadata": {"purpose": "classify"}, "output_modalities": ["text"],
                "instructions": "Return one word: topic.",
                "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "rain?"}]}]}}),
            ("overrides", {"type": "response.create", "response": {
                "audio": {"output": {"voice": "cedar", "format": {"type": "audio/pcma"}}},
                "max_output_tokens": 200, "tool_choice": {"type": "function", "name": "get_weather"},
                "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
                "parallel_tool_calls": False, "reasoning": {"effort": "minimal"},
                "prompt": {"id": "pmpt_1", "variables": {"x": "y"}}}}),
        ],
        "response.cancel": [
            ("active", {"type": "response.cancel"}),
            ("by-id", {"type": "response.cancel", "response_id": "resp_1", "event_id": "c_9"}),
        ],
    }
