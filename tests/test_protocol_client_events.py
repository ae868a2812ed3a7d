"""parse_client_event never raises: whatever a client sends, it returns a validated event or an
`Invalid` whose `error` is a well-formed GA `error` event (checked strictly against the SDK)."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parley.protocol import CLIENT_EVENT_TYPES, Invalid, ProtocolError, parse_client_event
from parley.protocol.client_events import (
    ConversationItemCreate,
    InputAudioBufferAppend,
    ResponseCreate,
    SessionUpdate,
)
from parley.protocol.limits import MAX_APPEND_BYTES
from parley.protocol.session import RealtimeSessionConfig, merge_session
from support.conformance import client_event_examples, validate_server_event

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

EXAMPLES = [event for cases in client_event_examples().values() for _, event in cases]
BETA_EXAMPLES = [
    {"type": "session.update", "session": {"modalities": ["text", "audio"], "voice": "ash",
                                           "input_audio_format": "g711_ulaw", "output_audio_format": "pcm16",
                                           "input_audio_transcription": {"model": "whisper-1"},
                                           "turn_detection": {"type": "server_vad", "threshold": 0.6},
                                           "temperature": 0.8, "max_response_output_tokens": "inf"}},
    {"type": "transcription_session.update", "session": {"input_audio_format": "pcm16",
                                                         "input_audio_transcription": {"model": "whisper-1"},
                                                         "turn_detection": None, "include": []}},
    {"type": "response.create", "response": {"modalities": ["text"], "voice": "verse",
                                             "output_audio_format": "g711_alaw", "temperature": 0.7,
                                             "max_response_output_tokens": 50,
                                             "input": [{"type": "message", "role": "assistant",
                                                        "content": [{"type": "text", "text": "x"}]}]}},
    {"type": "conversation.item.create", "event_id": "b_1",
     "item": {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "Hi."}]}},
]
ALL_TYPES = [*CLIENT_EVENT_TYPES, "transcription_session.update", "response.made", ""]

json_leaves = (
    st.none() | st.booleans() | st.integers() | st.floats()
    | st.text(max_size=20) | st.sampled_from(["", "type", "audio/pcm", "pcm16", "message", "user", "inf"])
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
keys = st.sampled_from(["type", "event_id", "session", "item", "audio", "content", "role", "response",
                        "previous_item_id", "item_id", "metadata", "output_modalities", "modalities"]) | st.text(
    max_size=12)


# -- the property ----------------------------------------------------------------------------


def check(result: Any, sent: Any) -> None:
    """`sent` is the decoded event (or anything else that was sent)."""
    if isinstance(result, Invalid):
        validate_server_event(result.error)
        err = result.error["error"]
        assert err["type"] == "invalid_request_error"
        assert isinstance(err["code"], str) and err["code"]
        assert isinstance(err["message"], str) and err["message"]
        eid = sent.get("event_id") if isinstance(sent, dict) else None
        if err["message"].startswith("The event is larger than"):
            assert err["event_id"] is None  # refused before it is read: its id is not known
        else:
            assert err["event_id"] == (eid if isinstance(eid, str) else None)
        if err["param"] is not None:
            assert isinstance(err["param"], str) and err["param"]
        return
    assert result.type in CLIENT_EVENT_TYPES
    assert isinstance(result.event_id, str | None)


@contextlib.contextmanager
def unraisable_ignored() -> Iterator[None]:
    """pydantic-core reports (and then ignores) a RecursionError while it reads a union tag nested
    deeper than the recursion limit; pytest's hook cannot even repr that object. Not our failure."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda _: None
    try:
        yield
    finally:
        sys.unraisablehook = hook


def parse_both_ways(event: Any, *, beta: bool) -> None:
    # (no copy: the nested cases are deeper than copy.deepcopy can go)
    with unraisable_ignored():
        check(parse_client_event(event, beta=beta), event)
    try:
        text = json.dumps(event)
    except (RecursionError, ValueError, TypeError):
        return
    check(parse_client_event(text, beta=beta), event)
    check(parse_client_event(text.encode(), beta=beta), event)


@FUZZ
@given(value=json_values, beta=st.booleans())
def test_arbitrary_json(value: Any, beta: bool) -> None:
    parse_both_ways(value, beta=beta)


@FUZZ
@given(kind=st.sampled_from(ALL_TYPES), body=st.dictionaries(keys, json_values, max_size=6), beta=st.booleans())
def test_arbitrary_objects_with_a_known_type(kind: str, body: dict[str, Any], beta: bool) -> None:
    parse_both_ways({**body, "type": kind}, beta=beta)


@FUZZ
@given(raw=st.text() | st.binary(), beta=st.booleans())
def test_arbitrary_text_and_bytes(raw: str | bytes, beta: bool) -> None:
    result = parse_client_event(raw, beta=beta)
    try:
        sent = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        sent = None
        assert isinstance(result, Invalid)
    check(result, sent)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every node, down to depth 12 (mutations may already have nested a node deeply)."""
    out = [prefix]
    if len(prefix) >= 12:
        return out
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _nest(value: Any, depth: int) -> Any:
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    event = copy.deepcopy(draw(st.sampled_from(EXAMPLES + BETA_EXAMPLES)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(event)))
        kind = draw(st.sampled_from(["drop", "retype", "unknown_key", "nest", "huge", "null"]))
        if not path:
            if kind == "unknown_key":
                event[draw(keys)] = draw(json_values)
            continue
        parent: Any = event
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        if kind == "drop":
            del parent[last]
        elif kind == "retype":
            # A type as the default argument, not the value: hypothesis reprs defaults, and the value
            # may be nested 3000 deep.
            parent[last] = draw(json_values.filter(lambda v, old_type=type(parent[last]): type(v) is not old_type))
        elif kind == "unknown_key":
            if isinstance(parent[last], dict):
                parent[last][draw(keys)] = draw(json_values)
            else:
                parent[last] = {draw(keys): parent[last]}
        elif kind == "nest":
            parent[last] = _nest(parent[last], draw(st.sampled_from([1, 2, 50, 3000])))
        elif kind == "huge":
            parent[last] = draw(st.sampled_from(["a", "é", "\x00", "A/+=", "🙂"])) * draw(
                st.integers(100_000, 1_000_000))
        else:
            parent[last] = None
    return event


@FUZZ
@given(event=mutated_events(), beta=st.booleans())
def test_mutations_of_valid_events(event: dict[str, Any], beta: bool) -> None:
    parse_both_ways(event, beta=beta)


@pytest.mark.parametrize("event", EXAMPLES + BETA_EXAMPLES)
def test_deep_nesting_everywhere(event: dict[str, Any]) -> None:
    """Any value replaced by one nested deeper than Python's recursion limit."""
    for path in _paths(event)[1:]:
        mutated = copy.deepcopy(event)
        parent: Any = mutated
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = _nest(parent[path[-1]], 3_000)
        for beta in (False, True):
            with unraisable_ignored():
                check(parse_client_event(mutated, beta=beta), mutated)


@pytest.mark.parametrize("opener", ["[", '{"a":', '{"type": "session.update", "session": {"a":'])
@pytest.mark.parametrize("depth", [100, 100_000])
def test_deeply_nested_json_text(opener: str, depth: int) -> None:
    text = opener * depth
    result = parse_client_event(text)
    assert isinstance(result, Invalid)
    check(result, None)


# -- exact expectations ----------------------------------------------------------------------


def error_of(raw: Any, *, beta: bool = False) -> dict[str, Any]:
    result = parse_client_event(raw, beta=beta)
    assert isinstance(result, Invalid), f"accepted: {result!r}"
    validate_server_event(result.error)
    return result.error["error"]


@pytest.mark.parametrize("raw", ["not json", "{", b"\xff\xfe\x00", "", '{"type": "response.create",}'])
def test_non_json_is_invalid_json(raw: str | bytes) -> None:
    err = error_of(raw)
    assert err["code"] == "invalid_json"
    assert err["event_id"] is None


@pytest.mark.parametrize("raw", ['"response.create"', "[]", "42", "null", ["x"]])
def test_non_object_is_invalid_event(raw: Any) -> None:
    assert error_of(raw)["code"] == "invalid_event"


def test_missing_type() -> None:
    err = error_of('{"event_id": "c_1"}')
    assert (err["code"], err["param"], err["event_id"]) == ("missing_required_parameter", "type", "c_1")


def test_non_string_type() -> None:
    err = error_of({"type": 5, "event_id": "c_2"})
    assert (err["code"], err["param"], err["event_id"]) == ("invalid_type", "type", "c_2")


def test_unknown_type() -> None:
    err = error_of({"type": "response.make", "event_id": "c_1"})
    assert (err["code"], err["param"], err["event_id"]) == ("invalid_value", "type", "c_1")
    assert "response.make" in err["message"]


def test_beta_only_type_in_ga_mode_other_than_transcription_update() -> None:
    # Beta has no other client event GA lacks; a GA-only name is fine in beta mode too.
    assert not isinstance(parse_client_event({"type": "output_audio_buffer.clear"}, beta=True), Invalid)


def test_missing_item() -> None:
    err = error_of({"type": "conversation.item.create", "event_id": "c_1"})
    assert (err["code"], err["param"], err["event_id"]) == ("missing_required_parameter", "item", "c_1")


def test_event_id_not_a_string_is_not_echoed() -> None:
    err = error_of({"type": "conversation.item.create", "event_id": 7})
    assert err["event_id"] is None
    assert (err["code"], err["param"]) == ("invalid_type", "event_id")


@pytest.mark.parametrize("audio", ["not base64!", "AAA", "éé==", "AAAA\nAAAA"])
def test_bad_base64_audio(audio: str) -> None:
    err = error_of({"type": "input_audio_buffer.append", "audio": audio, "event_id": "a_1"})
    assert (err["code"], err["param"], err["event_id"]) == ("invalid_value", "audio", "a_1")


@pytest.mark.parametrize("audio", [5, None, ["AAAA"]])
def test_audio_not_a_string(audio: Any) -> None:
    err = error_of({"type": "input_audio_buffer.append", "audio": audio})
    assert err["param"] == "audio"
    assert err["code"] in ("invalid_type", "invalid_value")


def test_append_decodes_audio() -> None:
    pcm = bytes(range(256)) * 4
    parsed = parse_client_event({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
    assert isinstance(parsed, InputAudioBufferAppend)
    assert parsed.audio == pcm


def test_append_of_exactly_15_mib_is_accepted() -> None:
    audio = base64.b64encode(bytes(MAX_APPEND_BYTES)).decode()
    parsed = parse_client_event({"type": "input_audio_buffer.append", "audio": audio})
    assert isinstance(parsed, InputAudioBufferAppend)
    assert len(parsed.audio) == MAX_APPEND_BYTES == 15 * 1024 * 1024


def test_append_over_15_mib_is_rejected() -> None:
    audio = base64.b64encode(bytes(MAX_APPEND_BYTES + 3)).decode()
    err = error_of(json.dumps({"type": "input_audio_buffer.append", "audio": audio, "event_id": "big"}))
    assert (err["code"], err["param"], err["event_id"]) == ("invalid_value", "audio", "big")
    assert len(err["message"]) < 1000


@pytest.mark.parametrize("value", ["abc", "", [1420], {"ms": 1420}, None])
def test_truncate_with_non_integer_audio_end_ms(value: Any) -> None:
    err = error_of({"type": "conversation.item.truncate", "item_id": "item_B", "content_index": 0,
                    "audio_end_ms": value})
    assert (err["code"], err["param"]) == ("invalid_type", "audio_end_ms")


@pytest.mark.parametrize("value", ["1420", 1420.0, True])
def test_truncate_with_coercible_audio_end_ms(value: Any) -> None:
    err = error_of({"type": "conversation.item.truncate", "item_id": "item_B", "content_index": 0,
                    "audio_end_ms": value})
    assert (err["code"], err["param"]) == ("invalid_type", "audio_end_ms")


def test_truncate_with_negative_audio_end_ms() -> None:
    err = error_of({"type": "conversation.item.truncate", "item_id": "item_B", "content_index": 0,
                    "audio_end_ms": -1})
    assert (err["code"], err["param"]) == ("invalid_value", "audio_end_ms")


@pytest.mark.parametrize(
    ("role", "part"),
    [
        ("user", {"type": "output_text", "text": "x"}),
        ("user", {"type": "output_audio", "transcript": "x"}),
        ("system", {"type": "input_audio", "audio": "AAAA"}),
        ("system", {"type": "output_text", "text": "x"}),
        ("assistant", {"type": "input_text", "text": "x"}),
        ("assistant", {"type": "output_audio", "audio": "AAAA", "transcript": "x"}),
    ],
)
def test_content_type_not_allowed_for_role(role: str, part: dict[str, Any]) -> None:
    err = error_of({"type": "conversation.item.create", "event_id": "c_3",
                    "item": {"type": "message", "role": role, "content": [part]}})
    assert (err["code"], err["event_id"]) == ("invalid_value", "c_3")
    assert err["param"] is not None and err["param"].startswith("item")


def test_unknown_content_type() -> None:
    err = error_of({"type": "conversation.item.create",
                    "item": {"type": "message", "role": "user", "content": [{"type": "input_txt", "text": "x"}]}})
    assert (err["code"], err["param"]) == ("invalid_value", "item.content[0].type")


def test_unknown_parameter_has_a_dotted_param() -> None:
    err = error_of({"type": "conversation.item.create",
                    "item": {"type": "message", "role": "user",
                             "content": [{"type": "input_text", "text": "x", "txt": "y"}]}})
    assert (err["code"], err["param"]) == ("unknown_parameter", "item.content[0].txt")


def test_response_create_with_17_metadata_pairs() -> None:
    metadata = {f"k{i}": "v" for i in range(17)}
    err = error_of({"type": "response.create", "event_id": "r_1", "response": {"metadata": metadata}})
    assert (err["code"], err["event_id"]) == ("invalid_value", "r_1")
    assert err["param"] in ("response", "response.metadata")
    assert "16" in err["message"]
    ok = parse_client_event({"type": "response.create", "response": {"metadata": dict(list(metadata.items())[:16])}})
    assert isinstance(ok, ResponseCreate)


@pytest.mark.parametrize("metadata", [{"k" * 65: "v"}, {"k": "v" * 513}, {"k": 5}])
def test_response_create_metadata_limits(metadata: dict[str, Any]) -> None:
    err = error_of({"type": "response.create", "response": {"metadata": metadata}})
    assert err["code"] in ("invalid_value", "invalid_type")
    assert err["param"].startswith("response.metadata")


def test_response_create_beta_field_in_ga_mode() -> None:
    err = error_of({"type": "response.create", "response": {"modalities": ["text"]}})
    assert (err["code"], err["param"]) == ("unknown_parameter", "response.modalities")


def test_event_id_longer_than_512() -> None:
    long_id = "e" * 513
    err = error_of({"type": "response.cancel", "event_id": long_id})
    assert (err["code"], err["param"]) == ("invalid_value", "event_id")
    assert err["event_id"] == long_id
    assert isinstance(parse_client_event({"type": "response.cancel", "event_id": "e" * 512}), Invalid) is False


# -- beta client events come out GA-shaped ----------------------------------------------------


def test_beta_session_update_is_translated() -> None:
    parsed = parse_client_event({
        "type": "session.update", "event_id": "b_1",
        "session": {"modalities": ["text", "audio"], "voice": "ash", "input_audio_format": "g711_ulaw",
                    "output_audio_format": "g711_alaw", "instructions": "Be brief.", "speed": 1.1,
                    "input_audio_transcription": {"model": "whisper-1"},
                    "input_audio_noise_reduction": {"type": "far_field"},
                    "turn_detection": {"type": "server_vad", "threshold": 0.6, "silence_duration_ms": 700},
                    "tools": [], "tool_choice": "auto", "temperature": 0.8, "max_response_output_tokens": 100},
    }, beta=True)
    assert isinstance(parsed, SessionUpdate)
    assert parsed.event_id == "b_1"
    assert parsed.session == {
        "type": "realtime",
        "output_modalities": ["audio"],
        "instructions": "Be brief.",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": 100,
        "audio": {
            "input": {"format": {"type": "audio/pcmu"}, "transcription": {"model": "whisper-1"},
                      "noise_reduction": {"type": "far_field"},
                      "turn_detection": {"type": "server_vad", "threshold": 0.6, "silence_duration_ms": 700}},
            "output": {"voice": "ash", "format": {"type": "audio/pcma"}, "speed": 1.1},
        },
    }
    merged = merge_session(RealtimeSessionConfig(), parsed.session)
    assert merged.audio.input.format.type == "audio/pcmu"
    assert merged.audio.output.voice == "ash"
    assert merged.output_modalities == ["audio"]


def test_beta_text_only_session() -> None:
    parsed = parse_client_event({"type": "session.update", "session": {"modalities": ["text"]}}, beta=True)
    assert isinstance(parsed, SessionUpdate)
    assert parsed.session == {"type": "realtime", "output_modalities": ["text"]}


@pytest.mark.parametrize("beta", [False, True])
def test_transcription_session_update_becomes_session_update(beta: bool) -> None:
    parsed = parse_client_event({
        "type": "transcription_session.update", "event_id": "t_1",
        "session": {"input_audio_format": "g711_alaw", "modalities": ["text"],
                    "input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
                    "include": ["item.input_audio_transcription.logprobs"]},
    }, beta=beta)
    assert isinstance(parsed, SessionUpdate)
    assert (parsed.type, parsed.event_id) == ("session.update", "t_1")
    assert parsed.session == {
        "type": "transcription",
        "include": ["item.input_audio_transcription.logprobs"],
        "audio": {"input": {"format": {"type": "audio/pcma"},
                            "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}},
    }


def test_beta_response_create_is_translated() -> None:
    parsed = parse_client_event(BETA_EXAMPLES[2], beta=True)
    assert isinstance(parsed, ResponseCreate) and parsed.response is not None
    params = parsed.response.model_dump(exclude_unset=True, mode="json")
    assert params["output_modalities"] == ["text"]
    assert params["audio"] == {"output": {"voice": "verse", "format": {"type": "audio/pcma"}}}
    assert params["max_output_tokens"] == 50
    assert "temperature" not in params
    assert params["input"][0]["content"] == [{"type": "output_text", "text": "x"}]


def test_beta_assistant_text_item() -> None:
    parsed = parse_client_event(BETA_EXAMPLES[3], beta=True)
    assert isinstance(parsed, ConversationItemCreate)
    assert parsed.item.model_dump(exclude_unset=True)["content"] == [{"type": "output_text", "text": "Hi."}]


def test_beta_user_content_is_left_alone() -> None:
    # `text` is an assistant spelling only; a user message with it stays invalid.
    err = error_of({"type": "conversation.item.create",
                    "item": {"type": "message", "role": "user", "content": [{"type": "text", "text": "x"}]}},
                   beta=True)
    assert err["code"] == "invalid_value"


# -- regressions found by the fuzz tests -------------------------------------------------------


def test_beta_modalities_not_a_list_is_left_for_validation() -> None:
    parsed = parse_client_event({"type": "session.update", "session": {"modalities": 5}}, beta=True)
    assert isinstance(parsed, SessionUpdate)
    with pytest.raises(ProtocolError) as exc:
        merge_session(RealtimeSessionConfig(), parsed.session)
    assert (exc.value.code, exc.value.param) == ("invalid_type", "session.output_modalities")


@pytest.mark.parametrize("part_type", [[], {}, None, 5])
def test_beta_content_type_not_a_string(part_type: Any) -> None:
    err = error_of({"type": "conversation.item.create", "item": {
        "type": "message", "role": "assistant", "content": [{"type": part_type, "text": "x"}]}}, beta=True)
    assert err["param"] is not None and err["param"].startswith("item.content[0]")


def test_error_messages_quote_values_briefly() -> None:
    err = error_of({"type": "conversation.item.create",
                    "item": {"type": "message", "role": "x" * 1_000_000, "content": []}})
    assert (err["code"], err["param"]) == ("invalid_value", "item.role")
    assert len(err["message"]) < 500
