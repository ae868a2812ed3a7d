"""The GA session: OpenAI's defaults, partial updates, validation errors with parameter paths,
and the session resource checked strictly against the SDK's resource models."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.realtime.realtime_session_create_response import RealtimeSessionCreateResponse
from openai.types.realtime.realtime_transcription_session_create_response import (
    RealtimeTranscriptionSessionCreateResponse,
)

from parley.protocol import ProtocolError, events, ids
from parley.protocol.session import (
    RealtimeSessionConfig,
    SemanticVad,
    ServerVad,
    TranscriptionSessionConfig,
    merge_session,
    parse_session,
    session_resource,
)
from support.conformance import ConformanceError, check_value, session_examples, validate_server_event


def dump(config: Any) -> dict[str, Any]:
    return config.model_dump(mode="json")


def merged(patch: dict[str, Any], current: Any = None) -> dict[str, Any]:
    return dump(merge_session(current or RealtimeSessionConfig(), {"type": "realtime", **patch}))


def rejected(patch: dict[str, Any], current: Any = None) -> ProtocolError:
    with pytest.raises(ProtocolError) as exc:
        merge_session(current or RealtimeSessionConfig(), patch)
    return exc.value


# -- defaults --------------------------------------------------------------------------------


def test_realtime_defaults_are_openais() -> None:
    s = dump(parse_session({"type": "realtime"}))
    assert s["type"] == "realtime"
    assert s["model"] == "gpt-realtime"
    assert s["instructions"]  # the server fills a default
    assert s["output_modalities"] == ["audio"]
    assert s["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert s["audio"]["output"] == {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy", "speed": 1.0}
    assert s["audio"]["input"]["turn_detection"] == {
        "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500,
        "create_response": True, "interrupt_response": True, "idle_timeout_ms": None,
    }
    assert s["audio"]["input"]["noise_reduction"] is None
    assert s["audio"]["input"]["transcription"] is None
    assert s["tools"] == []
    assert s["tool_choice"] == "auto"
    assert s["max_output_tokens"] == "inf"
    assert s["truncation"] == "auto"
    assert s["tracing"] is None
    assert s["prompt"] is None


def test_semantic_vad_defaults() -> None:
    assert dump(SemanticVad()) == {"type": "semantic_vad", "eagerness": "auto", "create_response": True,
                                   "interrupt_response": True}
    assert ServerVad().threshold == 0.5


def test_transcription_defaults() -> None:
    s = dump(parse_session({"type": "transcription"}))
    assert set(s) == {"type", "audio", "include"}
    assert s["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert s["audio"]["input"]["transcription"]["model"]
    assert s["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert isinstance(parse_session({"type": "transcription"}), TranscriptionSessionConfig)


# -- merge_session ---------------------------------------------------------------------------


def test_partial_update_merges_nested_objects() -> None:
    before = RealtimeSessionConfig()
    snapshot = dump(before)
    after = merged({"audio": {"output": {"voice": "ash"}}}, before)
    assert after["audio"]["output"] == {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "ash", "speed": 1.0}
    assert after["audio"]["input"] == snapshot["audio"]["input"]
    assert {k: v for k, v in after.items() if k != "audio"} == {k: v for k, v in snapshot.items() if k != "audio"}
    assert dump(before) == snapshot  # the current session is not modified


def test_partial_turn_detection_update_keeps_the_other_fields() -> None:
    current = merge_session(RealtimeSessionConfig(), {
        "type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 900}}}})
    after = merged({"audio": {"input": {"turn_detection": {"threshold": 0.7}}}}, current)
    td = after["audio"]["input"]["turn_detection"]
    assert (td["type"], td["threshold"], td["silence_duration_ms"], td["prefix_padding_ms"]) == (
        "server_vad", 0.7, 900, 300)


def test_turn_detection_null_clears() -> None:
    assert merged({"audio": {"input": {"turn_detection": None}}})["audio"]["input"]["turn_detection"] is None


def test_switching_server_vad_to_semantic_vad_replaces_the_object() -> None:
    current = merge_session(RealtimeSessionConfig(), {
        "type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 0.9,
                                                                   "idle_timeout_ms": 6000}}}})
    after = merged({"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "low"}}}}, current)
    assert after["audio"]["input"]["turn_detection"] == {
        "type": "semantic_vad", "eagerness": "low", "create_response": True, "interrupt_response": True}
    back = merged({"audio": {"input": {"turn_detection": {"type": "server_vad"}}}},
                  merge_session(RealtimeSessionConfig(), {"type": "realtime", **{
                      "audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}}}))
    assert back["audio"]["input"]["turn_detection"] == dump(ServerVad())


def test_turn_detection_from_null() -> None:
    current = merge_session(RealtimeSessionConfig(), {"type": "realtime",
                                                      "audio": {"input": {"turn_detection": None}}})
    after = merged({"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 0.2}}}}, current)
    assert after["audio"]["input"]["turn_detection"] == {**dump(ServerVad()), "threshold": 0.2}


def test_changing_the_format_type_replaces_the_format() -> None:
    after = merged({"audio": {"input": {"format": {"type": "audio/pcmu"}}}})
    assert after["audio"]["input"]["format"] == {"type": "audio/pcmu"}  # no stray `rate`
    after = merged({"audio": {"output": {"format": "g711_alaw"}}})
    assert after["audio"]["output"]["format"] == {"type": "audio/pcma"}


def test_tools_empty_list_clears() -> None:
    tool = {"type": "function", "name": "get_weather", "description": "Weather", "parameters": {"type": "object"}}
    current = merge_session(RealtimeSessionConfig(), {"type": "realtime", "tools": [tool, {**tool, "name": "b"}]})
    assert len(current.tools) == 2
    assert merged({"tools": [{**tool, "name": "c"}]}, current)["tools"] == [{**tool, "name": "c"}]  # lists replace
    assert merged({"tools": []}, current)["tools"] == []


def test_instructions_empty_string_clears() -> None:
    current = merge_session(RealtimeSessionConfig(), {"type": "realtime", "instructions": "Be brief."})
    assert current.instructions == "Be brief."
    assert merged({"instructions": ""}, current)["instructions"] == ""


def test_noise_reduction_and_transcription_on_and_off() -> None:
    on = merge_session(RealtimeSessionConfig(), {"type": "realtime", "audio": {"input": {
        "noise_reduction": {"type": "far_field"}, "transcription": {"model": "gpt-4o-transcribe", "language": "en"}}}})
    assert on.audio.input.noise_reduction is not None and on.audio.input.noise_reduction.type == "far_field"
    assert on.audio.input.transcription is not None and on.audio.input.transcription.language == "en"
    off = merged({"audio": {"input": {"noise_reduction": None, "transcription": None}}}, on)
    assert off["audio"]["input"]["noise_reduction"] is None
    assert off["audio"]["input"]["transcription"] is None


def test_update_of_a_transcription_session() -> None:
    current = parse_session({"type": "transcription"})
    after = merge_session(current, {"type": "transcription", "audio": {"input": {
        "transcription": {"language": "fr"}, "turn_detection": None}}})
    assert isinstance(after, TranscriptionSessionConfig)
    assert after.audio.input.transcription is not None
    assert (after.audio.input.transcription.model, after.audio.input.transcription.language) == ("whisper-1", "fr")
    assert after.audio.input.turn_detection is None


def test_two_output_modalities_become_audio() -> None:
    # GA allows one output modality; audio always comes with its transcript.
    assert merged({"output_modalities": ["text", "audio"]})["output_modalities"] == ["audio"]
    assert merged({"output_modalities": ["text"]})["output_modalities"] == ["text"]


@pytest.mark.parametrize("fmt", ["pcm16", "g711_ulaw", "g711_alaw"])
def test_beta_format_strings_are_accepted(fmt: str) -> None:
    want = {"pcm16": {"type": "audio/pcm", "rate": 24000}, "g711_ulaw": {"type": "audio/pcmu"},
            "g711_alaw": {"type": "audio/pcma"}}[fmt]
    s = dump(parse_session({"type": "realtime", "audio": {"input": {"format": fmt}, "output": {"format": fmt}}}))
    assert s["audio"]["input"]["format"] == s["audio"]["output"]["format"] == want
    t = dump(parse_session({"type": "transcription", "audio": {"input": {"format": fmt}}}))
    assert t["audio"]["input"]["format"] == want


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "code", "param"),
    [
        ({"audio": {"output": {"speed": 2.0}}}, "invalid_value", "session.audio.output.speed"),
        ({"audio": {"output": {"speed": 0.1}}}, "invalid_value", "session.audio.output.speed"),
        ({"audio": {"input": {"turn_detection": {"threshold": 1.5}}}}, "invalid_value",
         "session.audio.input.turn_detection.threshold"),
        ({"audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 100}}}}, "invalid_value",
         "session.audio.input.turn_detection.idle_timeout_ms"),
        ({"audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 40_000}}}},
         "invalid_value", "session.audio.input.turn_detection.idle_timeout_ms"),
        ({"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "eager"}}}}, "invalid_value",
         "session.audio.input.turn_detection.eagerness"),
        ({"audio": {"input": {"turn_detection": {"type": "push_to_talk"}}}}, "invalid_value",
         "session.audio.input.turn_detection.type"),
        ({"audio": {"output": {"format": {"type": "audio/mp3"}}}}, "invalid_value", "session.audio.output.format.type"),
        ({"audio": {"output": {"format": {"type": "audio/pcm", "rate": 16000}}}}, "invalid_value",
         "session.audio.output.format.rate"),
        ({"audio": {"output": {"voice": 5}}}, "invalid_type", "session.audio.output.voice"),
        ({"audio": {"input": {"noise_reduction": {"type": "medium_field"}}}}, "invalid_value",
         "session.audio.input.noise_reduction.type"),
        ({"voice": "alloy"}, "unknown_parameter", "session.voice"),
        ({"modalities": ["text"]}, "unknown_parameter", "session.modalities"),
        ({"temperature": 0.8}, "unknown_parameter", "session.temperature"),
        ({"audio": {"input": {"vad": {}}}}, "unknown_parameter", "session.audio.input.vad"),
        ({"audio": {"output": {"format": {"type": "audio/pcm", "bits": 16}}}}, "unknown_parameter",
         "session.audio.output.format.bits"),
        ({"audio": {"input": {"turn_detection": {"type": "semantic_vad", "threshold": 0.5}}}}, "unknown_parameter",
         "session.audio.input.turn_detection.threshold"),
        ({"tools": [{"type": "function", "name": "f", "strict": True}]}, "unknown_parameter", "session.tools[0].strict"),
        ({"tools": [{"type": "function", "name": "bad name"}]}, "invalid_value", "session.tools[0].name"),
        ({"tools": [{"type": "file_search"}]}, "invalid_value", "session.tools[0].type"),
        ({"tool_choice": "sometimes"}, "invalid_value", "session.tool_choice"),
        ({"instructions": 5}, "invalid_type", "session.instructions"),
        ({"include": ["everything"]}, "invalid_value", "session.include[0]"),
    ],
)
def test_invalid_values(patch: dict[str, Any], code: str, param: str) -> None:
    err = rejected({"type": "realtime", **patch})
    assert (err.code, err.param) == (code, param), err.message
    assert err.type == "invalid_request_error"
    assert err.message


@pytest.mark.parametrize("value", [0, 100_000, "infinite", -1])
def test_invalid_max_output_tokens(value: Any) -> None:
    err = rejected({"type": "realtime", "max_output_tokens": value})
    assert err.code in ("invalid_value", "invalid_type")
    assert err.param == "session.max_output_tokens"


@pytest.mark.parametrize("fmt", ["mp3", "pcm24", ""])
def test_unknown_format_string(fmt: str) -> None:
    err = rejected({"type": "realtime", "audio": {"output": {"format": fmt}}})
    assert err.code in ("invalid_value", "invalid_type")
    assert err.param is not None and err.param.startswith("session.audio.output.format")


def test_type_change_is_rejected() -> None:
    err = rejected({"type": "transcription"})
    assert (err.code, err.param) == ("invalid_value", "session.type")
    err = rejected({"type": "realtime"}, parse_session({"type": "transcription"}))
    assert (err.code, err.param) == ("invalid_value", "session.type")


@pytest.mark.parametrize("patch", [{}, {"instructions": "x"}, {"type": None}])
def test_session_type_is_required(patch: dict[str, Any]) -> None:
    err = rejected(patch)
    assert (err.code, err.param) == ("missing_required_parameter", "session.type")


@pytest.mark.parametrize("kind", ["banana", 5, ["realtime"]])
def test_unknown_session_type(kind: Any) -> None:
    err = rejected({"type": kind})
    assert (err.code, err.param) == ("invalid_value", "session.type")


@pytest.mark.parametrize("patch", ["realtime", None, ["type", "realtime"], 5])
def test_session_not_an_object(patch: Any) -> None:
    err = rejected(patch)
    assert (err.code, err.param) == ("invalid_type", "session")
    with pytest.raises(ProtocolError):
        parse_session(patch)


def test_a_transcription_session_has_no_voice() -> None:
    err = rejected({"type": "transcription", "audio": {"output": {"voice": "alloy"}}}, parse_session(
        {"type": "transcription"}))
    assert (err.code, err.param) == ("unknown_parameter", "session.audio.output")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from(["realtime", "transcription", "server_vad", "semantic_vad", "audio/pcm", "pcm16", "inf"]),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(
        st.sampled_from(["type", "audio", "input", "output", "format", "voice", "turn_detection", "threshold",
                         "tools", "name", "rate", "speed", "transcription", "model"]) | st.text(max_size=6),
        c, max_size=4),
    max_leaves=15,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patch=st.dictionaries(st.sampled_from(["audio", "tools", "tool_choice", "instructions", "truncation",
                                              "max_output_tokens", "output_modalities", "tracing", "prompt",
                                              "include", "model"]) | st.text(max_size=6), json_values, max_size=4),
       kind=st.sampled_from(["realtime", "transcription"]))
def test_merge_raises_only_protocol_errors(patch: dict[str, Any], kind: str) -> None:
    current = parse_session({"type": kind})
    try:
        after = merge_session(current, {**patch, "type": kind})
    except ProtocolError as exc:
        assert exc.code and exc.message
        assert exc.param is None or exc.param.startswith("session")
    else:
        assert after.type == kind
        assert dump(parse_session(dump(after))) == dump(after)  # the result is a valid session


# -- the resource ----------------------------------------------------------------------------

RESOURCES = session_examples()


@pytest.mark.parametrize("name", list(RESOURCES))
def test_session_resource_is_the_sdks_resource_model(name: str) -> None:
    resource = RESOURCES[name]
    model = RealtimeSessionCreateResponse if resource["type"] == "realtime" else (
        RealtimeTranscriptionSessionCreateResponse)
    model.model_validate(resource, strict=True)
    check_value(resource, model)


@pytest.mark.parametrize("name", list(RESOURCES))
def test_session_resource_in_events(name: str) -> None:
    validate_server_event(events.session_created(RESOURCES[name]))
    validate_server_event(events.session_updated(RESOURCES[name]))


def test_session_resource_fields() -> None:
    sid = ids.session_id()
    r = session_resource(parse_session({"type": "realtime"}), id=sid, expires_at=1_767_225_600)
    assert (r["id"], r["object"], r["type"], r["expires_at"]) == (sid, "realtime.session", "realtime", 1_767_225_600)
    t = session_resource(parse_session({"type": "transcription"}), id=sid, expires_at=0)
    assert (t["object"], t["type"]) == ("realtime.transcription_session", "transcription")


def test_fields_the_resource_model_lacks_appear_only_when_set() -> None:
    # The SDK's RealtimeSessionCreateResponse has no parallel_tool_calls; the request has.
    plain = session_resource(parse_session({"type": "realtime"}), id="sess_1", expires_at=0)
    assert "parallel_tool_calls" not in plain and "reasoning" not in plain
    with_it = session_resource(parse_session({"type": "realtime", "parallel_tool_calls": True,
                                              "reasoning": {"effort": "high"}}), id="sess_1", expires_at=0)
    assert with_it["parallel_tool_calls"] is True
    assert with_it["reasoning"] == {"effort": "high"}
    validate_server_event(events.session_updated(with_it))


def test_resource_round_trips_through_parse_session() -> None:
    for resource in RESOURCES.values():
        config = {k: v for k, v in resource.items() if k not in ("id", "object", "expires_at")}
        again = session_resource(parse_session(config), id=resource["id"], expires_at=resource["expires_at"])
        assert again == resource


def test_transcription_session_with_semantic_vad() -> None:
    # The SDK's session.update request allows semantic_vad in a transcription session, but its
    # transcription resource model knows server_vad fields only; session events accept either shape.
    resource = session_resource(parse_session({"type": "transcription", "audio": {"input": {
        "turn_detection": {"type": "semantic_vad", "eagerness": "low"}}}}), id="sess_1", expires_at=0)
    validate_server_event(events.session_updated(resource))
    with pytest.raises(ConformanceError):
        check_value(resource, RealtimeTranscriptionSessionCreateResponse)
