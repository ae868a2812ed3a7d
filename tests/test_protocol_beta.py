"""GA <-> beta translation (docs/protocol.md, section 6): round trips, renames, and every beta
output checked strictly against the SDK's beta models (tests/conformance.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.protocol import beta, events, ids, items, parse_session, session_resource
from support.conformance import (
    BETA_CLIENT_EVENTS,
    BETA_SERVER_EVENTS,
    GA_SERVER_EVENTS,
    client_event_examples,
    server_event_examples,
    session_examples,
    validate_client_event,
    validate_server_event,
)

SERVER_EXAMPLES = server_event_examples()
SESSIONS = session_examples()

# GA-only features a beta client cannot ask for, so a beta server never has to report them.
GA_ONLY_LABELS = {"user-image", "transcription-no-vad"}  # input_image content; gpt-realtime-whisper
GA_ONLY_TYPES = {
    "input_audio_buffer.timeout_triggered", "input_audio_buffer.dtmf_event_received",
    "conversation.item.input_audio_transcription.segment",
    "mcp_list_tools.in_progress", "mcp_list_tools.completed", "mcp_list_tools.failed",
    "response.mcp_call_arguments.delta", "response.mcp_call_arguments.done",
    "response.mcp_call.in_progress", "response.mcp_call.completed", "response.mcp_call.failed",
}
RENAMED = {
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "conversation.item.added": "conversation.item.created",
}
SERVER_CASES = [
    pytest.param(event, id=f"{kind}[{label}]")
    for kind, cases in SERVER_EXAMPLES.items()
    for label, event in cases
    if label not in GA_ONLY_LABELS
]


def to_beta(event: dict[str, Any]) -> dict[str, Any]:
    out = beta.server_event_to_beta(event)
    assert len(out) == 1
    return out[0]


@pytest.mark.parametrize("event", SERVER_CASES)
def test_beta_server_event_conforms(event: dict[str, Any]) -> None:
    for out in beta.server_event_to_beta(copy.deepcopy(event)):
        if out["type"] in GA_ONLY_TYPES or out["type"] == "transcription_session.created":
            continue  # no beta model in the SDK (the spec has transcription_session.created)
        validate_server_event(out, beta=True)


def test_beta_translation_does_not_modify_its_input() -> None:
    for cases in SERVER_EXAMPLES.values():
        for _, event in cases:
            before = copy.deepcopy(event)
            beta.server_event_to_beta(event)
            assert event == before


def test_beta_realtime_session_has_no_ga_only_keys() -> None:
    validate_server_event(to_beta(events.session_updated(SESSIONS["realtime-defaults"])), beta=True)


def test_beta_session_sub_objects_have_no_ga_only_fields() -> None:
    out = to_beta(events.session_updated(SESSIONS["transcription-full"]))
    validate_server_event(out, beta=True)


def test_beta_session_tool_choice_is_a_string() -> None:
    out = to_beta(events.session_updated(SESSIONS["realtime-full"]))
    assert isinstance(out["session"]["tool_choice"], str)
    validate_server_event(out, beta=True)


def test_beta_usage_has_no_image_tokens() -> None:
    out = to_beta(dict(SERVER_EXAMPLES["response.done"])["completed-audio"])
    validate_server_event(out, beta=True)


def test_beta_function_call_arguments_done_has_no_name() -> None:
    out = to_beta(events.response_function_call_arguments_done("resp_1", "item_1", 0, "call_1", "f", "{}"))
    validate_server_event(out, beta=True)


# -- server event renames and shapes ---------------------------------------------------------


def test_ga_only_types_are_exactly_those_without_a_beta_model() -> None:
    beta_names = {RENAMED.get(t, t) for t in GA_SERVER_EVENTS} - {"conversation.item.done"}
    assert beta_names - set(BETA_SERVER_EVENTS) == GA_ONLY_TYPES
    assert set(BETA_SERVER_EVENTS) - beta_names == {"transcription_session.updated"}


@pytest.mark.parametrize(("ga", "beta_name"), list(RENAMED.items()))
def test_renamed_types(ga: str, beta_name: str) -> None:
    event = SERVER_EXAMPLES[ga][0][1]
    out = to_beta(event)
    assert out["type"] == beta_name
    assert beta.server_event_from_beta(out)["type"] == ga


@pytest.mark.parametrize("kind", sorted(set(GA_SERVER_EVENTS) - set(RENAMED) - {"conversation.item.done"}))
def test_unrenamed_types_keep_their_name(kind: str) -> None:
    for _, event in SERVER_EXAMPLES[kind]:
        expected = kind
        if kind.startswith("session.") and event["session"]["type"] == "transcription":
            expected = "transcription_" + kind
        assert to_beta(event)["type"] == expected


def test_conversation_item_done_is_dropped_for_beta() -> None:
    for _, event in SERVER_EXAMPLES["conversation.item.done"]:
        assert beta.server_event_to_beta(event) == []


def test_item_added_becomes_created_with_beta_content() -> None:
    item = items.message("item_1", "assistant", [items.output_text("Hi."), items.output_audio("Hello.")])
    out = to_beta(events.conversation_item_added(item, "item_0"))
    assert out["type"] == "conversation.item.created"
    assert out["previous_item_id"] == "item_0"
    assert [p["type"] for p in out["item"]["content"]] == ["text", "audio"]
    validate_server_event(out, beta=True)
    back = beta.server_event_from_beta(out)
    assert back["type"] == "conversation.item.added"
    assert back["item"] == item


def test_user_content_keeps_its_names_in_beta() -> None:
    item = items.message("item_1", "user", [items.input_text("hi"), items.input_audio("hello")])
    assert to_beta(events.conversation_item_created(item, None))["item"] == item


@pytest.mark.parametrize("kind", ["session.created", "session.updated"])
def test_transcription_session_events_become_transcription_session_events(kind: str) -> None:
    resource = SESSIONS["transcription-full"]
    event = events.session_created(resource) if kind == "session.created" else events.session_updated(resource)
    out = to_beta(event)
    assert out["type"] == "transcription_" + kind
    s = out["session"]
    assert s["input_audio_format"] == "g711_alaw"
    assert s["input_audio_transcription"]["model"] == "gpt-4o-transcribe"
    assert s["turn_detection"]["type"] == "server_vad"
    assert s["modalities"] == ["text"]
    assert "voice" not in s and "instructions" not in s and "audio" not in s
    back = beta.server_event_from_beta(out)
    assert back["type"] == kind
    assert back["session"]["type"] == "transcription"
    assert back["session"]["audio"]["input"]["format"] == {"type": "audio/pcma"}


def test_realtime_session_event_in_beta_shape() -> None:
    out = to_beta(events.session_created(SESSIONS["realtime-full"]))
    assert out["type"] == "session.created"
    s = out["session"]
    assert (s["id"], s["object"], s["model"]) == (SESSIONS["realtime-full"]["id"], "realtime.session",
                                                   "gpt-realtime-2025-08-28")
    assert s["modalities"] == ["text"]
    assert (s["input_audio_format"], s["output_audio_format"]) == ("g711_ulaw", "g711_alaw")
    assert (s["voice"], s["speed"]) == ("marin", 1.25)
    assert s["max_response_output_tokens"] == 4096
    assert s["turn_detection"]["type"] == "semantic_vad"
    assert s["input_audio_noise_reduction"]["type"] == "far_field"
    assert s["temperature"] == 0.8
    assert "audio" not in s and "output_modalities" not in s and "max_output_tokens" not in s


@pytest.mark.parametrize(
    ("modalities", "beta_modalities"), [(["audio"], ["text", "audio"]), (["text"], ["text"])]
)
def test_response_objects(modalities: list[str], beta_modalities: list[str]) -> None:
    response = events.response_object(
        ids.response_id(), status="completed", output_modalities=modalities,
        audio_output={"format": {"type": "audio/pcmu"}, "voice": "verse"},
        output=[items.message(ids.item_id(), "assistant", [items.output_text("x")])],
        usage=events.usage(input_text=5, output_text=1))
    out = to_beta(events.response_done(response))["response"]
    assert out["modalities"] == beta_modalities
    assert (out["voice"], out["output_audio_format"]) == ("verse", "g711_ulaw")
    assert "audio" not in out and "output_modalities" not in out
    assert out["output"][0]["content"][0]["type"] == "text"
    assert beta.response_from_beta(out) == _beta_expressible(events.response_done(response))["response"]


def test_response_without_audio_settings() -> None:
    response = events.response_object(ids.response_id(), output_modalities=["text"])
    out = beta.response_to_beta(response)
    assert "voice" not in out and "output_audio_format" not in out
    assert beta.response_from_beta(out) == response


@pytest.mark.parametrize("event", [
    pytest.param(event, id=f"{kind}[{label}]")
    for kind, cases in SERVER_EXAMPLES.items()
    if not kind.startswith("session.") and kind not in ("conversation.item.done", "conversation.item.created")
    for label, event in cases
])
def test_server_event_round_trip(event: dict[str, Any]) -> None:
    assert beta.server_event_from_beta(to_beta(event)) == _beta_expressible(event)


def _beta_expressible(event: dict[str, Any]) -> dict[str, Any]:
    """What survives a trip through beta: GA's image tokens and the call's `name` do not."""
    event = copy.deepcopy(event)
    if event["type"] == "response.function_call_arguments.done":
        event.pop("name")
    usage = (event.get("response") or {}).get("usage")
    if usage:
        usage["input_token_details"].pop("image_tokens", None)
        usage["input_token_details"].get("cached_tokens_details", {}).pop("image_tokens", None)
    return event


def test_ga_conversation_item_created_comes_back_as_added() -> None:
    # conversation.item.created is in the GA union, but beta's single item event maps to `added`.
    for _, event in SERVER_EXAMPLES["conversation.item.created"]:
        out = to_beta(event)
        assert out == to_beta({**event, "type": "conversation.item.added"})
        assert beta.server_event_from_beta(out) == {**event, "type": "conversation.item.added"}


@pytest.mark.parametrize("name", list(SESSIONS))
def test_session_event_round_trip(name: str) -> None:
    resource = SESSIONS[name]
    back = beta.server_event_from_beta(to_beta(events.session_updated(resource)))["session"]
    assert {k: back[k] for k in ("id", "object", "expires_at", "type")} == {
        k: resource[k] for k in ("id", "object", "expires_at", "type")}
    again = session_resource(parse_session(_config(back)), id=back["id"], expires_at=back["expires_at"])
    assert again == _without_ga_only(resource)


def _config(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in ("id", "object", "expires_at")}


def _without_ga_only(session: dict[str, Any]) -> dict[str, Any]:
    """What beta cannot express goes back to its default: truncation, reasoning, parallel_tool_calls,
    prompt, include, a forced function (-> "required") and the GA-only fields of sub-objects."""
    out = copy.deepcopy(session)
    audio_in = out["audio"]["input"]
    for key, value in (("idle_timeout_ms", None),):
        if isinstance(audio_in.get("turn_detection"), dict) and audio_in["turn_detection"]["type"] == "server_vad" \
                and "idle_timeout_ms" in audio_in["turn_detection"]:
            audio_in["turn_detection"][key] = value
    if isinstance(audio_in.get("transcription"), dict):
        audio_in["transcription"].update({"languages": None, "keywords": None, "delay": None})
    if isinstance(audio_in.get("noise_reduction"), dict):
        audio_in["noise_reduction"]["strength"] = None
    if session["type"] != "realtime":
        return out
    out.update({"truncation": "auto", "prompt": None, "include": None})
    if isinstance(out.get("tool_choice"), dict):
        out["tool_choice"] = "required"
    for key in ("reasoning", "parallel_tool_calls"):
        if "id" in session:  # a resource: they appear only when set
            out.pop(key, None)
        else:  # a config dump: null when unset
            out[key] = None
    return out


# -- sessions ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SESSIONS))
def test_session_config_round_trip(name: str) -> None:
    config = parse_session(_config(SESSIONS[name])).model_dump(mode="json")
    beta_session = beta.session_to_beta(config)
    assert "audio" not in beta_session and "type" not in beta_session
    back = parse_session(beta.session_from_beta(beta_session, kind=config["type"])).model_dump(mode="json")
    assert back == _without_ga_only(config)


BETA_SESSION = {
    "modalities": ["text", "audio"], "instructions": "You are a terse assistant.", "voice": "alloy",
    "input_audio_format": "pcm16", "output_audio_format": "g711_ulaw",
    "input_audio_transcription": {"model": "whisper-1"},
    "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500},
    "tools": [], "tool_choice": "auto", "temperature": 0.8, "max_response_output_tokens": "inf",
}


def test_beta_session_to_ga_and_back() -> None:
    ga = beta.session_from_beta(BETA_SESSION)
    assert ga["type"] == "realtime"
    assert ga["output_modalities"] == ["audio"]
    assert ga["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert ga["audio"]["output"] == {"voice": "alloy", "format": {"type": "audio/pcmu"}}
    assert ga["max_output_tokens"] == "inf"
    assert "temperature" not in ga
    full = parse_session(ga).model_dump(mode="json")
    back = beta.session_to_beta(full)
    assert "temperature" not in back  # GA has none; an update must not reset a beta server's
    for key, value in BETA_SESSION.items():
        if key == "temperature":
            continue
        if isinstance(value, dict):
            assert {k: back[key][k] for k in value} == value, key
        else:
            assert back[key] == value, key


def test_ga_session_passes_through_session_from_beta() -> None:
    ga = {"type": "realtime", "instructions": "x"}
    assert beta.session_from_beta(ga) == ga


formats = st.sampled_from([{"type": "audio/pcm", "rate": 24000}, {"type": "audio/pcmu"}, {"type": "audio/pcma"}])
turn_detection = st.none() | st.builds(
    lambda t, c, i: {"type": "server_vad", "threshold": t, "create_response": c, "interrupt_response": i},
    st.floats(0, 1), st.booleans(), st.booleans(),
) | st.builds(lambda e: {"type": "semantic_vad", "eagerness": e}, st.sampled_from(["low", "medium", "high", "auto"]))
transcription = st.none() | st.builds(
    lambda m, lang: {"model": m, "language": lang},
    st.sampled_from(["whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"]), st.sampled_from([None, "en", "fr"]))
noise = st.none() | st.builds(lambda t: {"type": t}, st.sampled_from(["near_field", "far_field"]))
realtime_configs = st.builds(
    lambda mods, instr, voice, speed, fin, fout, td, tr, nr, mot, tools, choice: {
        "type": "realtime", "output_modalities": mods, "instructions": instr, "max_output_tokens": mot,
        "audio": {"input": {"format": fin, "turn_detection": td, "transcription": tr, "noise_reduction": nr},
                  "output": {"voice": voice, "speed": speed, "format": fout}},
        "tools": tools, "tool_choice": choice,
    },
    st.sampled_from([["audio"], ["text"]]), st.text(max_size=40),
    st.sampled_from(["alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse"]),
    st.floats(0.25, 1.5), formats, formats, turn_detection, transcription, noise,
    st.integers(1, 4096) | st.just("inf"),
    st.lists(st.builds(lambda n, d: {"type": "function", "name": n, "description": d, "parameters": {
        "type": "object", "properties": {}}}, st.from_regex(r"[a-z_]{1,12}", fullmatch=True), st.text(max_size=20)),
        max_size=2, unique_by=lambda t: t["name"]),
    st.sampled_from(["auto", "none", "required"]),
)
transcription_configs = st.builds(
    lambda fin, td, tr, nr, inc: {"type": "transcription", "include": inc, "audio": {"input": {
        "format": fin, "turn_detection": td, "transcription": tr, "noise_reduction": nr}}},
    formats,
    st.none() | st.builds(lambda t, s: {"type": "server_vad", "threshold": t, "silence_duration_ms": s},
                          st.floats(0, 1), st.integers(0, 2000)),
    transcription, noise, st.none() | st.just(["item.input_audio_transcription.logprobs"]),
)


@settings(max_examples=150, deadline=None)
@given(config=realtime_configs | transcription_configs)
def test_generated_session_round_trip(config: dict[str, Any]) -> None:
    ga = parse_session(config).model_dump(mode="json")
    back = parse_session(beta.session_from_beta(beta.session_to_beta(ga), kind=ga["type"])).model_dump(mode="json")
    assert back == ga
    resource = session_resource(parse_session(config), id="sess_1", expires_at=0)
    out = to_beta(events.session_updated(resource))
    validate_server_event(out, beta=True)


# -- client events -------------------------------------------------------------------------

CLIENT_EXAMPLES = client_event_examples()
GA_ONLY_CLIENT_LABELS = {"user-audio-image", "overrides"}  # input_image; GA-only response.create fields
CLIENT_CASES = [
    pytest.param(event, id=f"{kind}[{label}]")
    for kind, cases in CLIENT_EXAMPLES.items() for label, event in cases if label not in GA_ONLY_CLIENT_LABELS
]


@pytest.mark.parametrize("event", CLIENT_CASES)
def test_beta_client_event_conforms_and_round_trips(event: dict[str, Any]) -> None:
    out = beta.client_event_to_beta(copy.deepcopy(event))
    validate_client_event(out, beta=True)
    assert out["type"] in BETA_CLIENT_EVENTS
    assert beta.client_event_from_beta(out) == event


def test_transcription_session_update_to_beta() -> None:
    event = dict(CLIENT_EXAMPLES["session.update"])["transcription"]
    out = beta.client_event_to_beta(event)
    assert out["type"] == "transcription_session.update"
    assert out["session"]["input_audio_format"] == "g711_ulaw"
    assert out["session"]["input_audio_transcription"] == {"model": "gpt-4o-transcribe", "prompt": "names"}
    assert out["session"]["turn_detection"] == {"type": "server_vad", "threshold": 0.6}
    back = beta.client_event_from_beta(out)
    assert back == event


def test_session_update_to_beta() -> None:
    out = beta.client_event_to_beta(dict(CLIENT_EXAMPLES["session.update"])["realtime"])
    s = out["session"]
    assert out["type"] == "session.update"
    assert s["modalities"] == ["text", "audio"]
    assert (s["voice"], s["speed"], s["input_audio_format"], s["output_audio_format"]) == (
        "marin", 1.0, "pcm16", "pcm16")
    assert s["max_response_output_tokens"] == "inf"
    assert s["turn_detection"] == {"type": "semantic_vad", "eagerness": "auto"}
    assert s["input_audio_noise_reduction"] == {"type": "near_field"}


def test_response_create_to_beta_and_back() -> None:
    event = {"type": "response.create", "event_id": "c_5", "response": {
        "output_modalities": ["audio"], "audio": {"output": {"voice": "ash", "format": {"type": "audio/pcma"}}},
        "max_output_tokens": 300, "instructions": "Say hi.", "conversation": "auto",
        "input": [items.message("item_x", "assistant", [items.output_text("Earlier answer.")])]}}
    out = beta.client_event_to_beta(event)
    r = out["response"]
    assert r["modalities"] == ["text", "audio"]
    assert (r["voice"], r["output_audio_format"], r["max_response_output_tokens"]) == ("ash", "g711_alaw", 300)
    assert "audio" not in r and "max_output_tokens" not in r and "output_modalities" not in r
    assert r["input"][0]["content"] == [{"type": "text", "text": "Earlier answer."}]
    validate_client_event(out, beta=True)
    assert beta.client_event_from_beta(out) == event


def test_conversation_item_create_with_assistant_text() -> None:
    event = {"type": "conversation.item.create", "item": {
        "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello."}]}}
    out = beta.client_event_to_beta(event)
    assert out["item"]["content"] == [{"type": "text", "text": "Hello."}]
    validate_client_event(out, beta=True)
    assert beta.client_event_from_beta(out) == event


def test_response_create_to_beta_has_no_ga_only_fields() -> None:
    validate_client_event(beta.client_event_to_beta(dict(CLIENT_EXAMPLES["response.create"])["overrides"]), beta=True)
