"""Every GA server event parley builds, and every GA client event it accepts, checked strictly
against the official `openai` SDK's models (see tests/conformance.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from parley.protocol import CLIENT_EVENT_TYPES, Invalid, events, ids, items, parse_client_event
from support.conformance import (
    EVENTS_WITHOUT_EVENT_ID,
    GA_CLIENT_EVENTS,
    GA_SERVER_EVENTS,
    ConformanceError,
    client_event_examples,
    server_event_examples,
    validate_client_event,
    validate_server_event,
)

EXAMPLES = server_event_examples()
SERVER_CASES = [
    pytest.param(event, id=f"{kind}[{label}]") for kind, cases in EXAMPLES.items() for label, event in cases
]


# -- server events ---------------------------------------------------------------------------


def test_the_sdk_has_46_ga_server_event_types() -> None:
    assert len(GA_SERVER_EVENTS) == 46


def test_examples_cover_exactly_the_sdk_union() -> None:
    # A type added to the SDK's union fails here until it has a builder and an example.
    assert set(EXAMPLES) == set(GA_SERVER_EVENTS)
    assert all(EXAMPLES.values())


@pytest.mark.parametrize("event", SERVER_CASES)
def test_server_event_conforms(event: dict[str, Any]) -> None:
    validate_server_event(event)


@pytest.mark.parametrize("event", SERVER_CASES)
def test_server_event_ids(event: dict[str, Any]) -> None:
    if event["type"] in EVENTS_WITHOUT_EVENT_ID:
        assert "event_id" not in event
    else:
        assert event["event_id"].startswith("event_")


def test_event_ids_are_fresh() -> None:
    seen = [event["event_id"] for cases in EXAMPLES.values() for _, event in cases if "event_id" in event]
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize(
    ("make", "prefix"),
    [
        (ids.event_id, "event_"), (ids.item_id, "item_"), (ids.response_id, "resp_"), (ids.session_id, "sess_"),
        (ids.conversation_id, "conv_"), (ids.call_id, "call_"), (ids.rtc_call_id, "rtc_"),
        (ids.client_secret, "ek_"),
    ],
)
def test_ids_look_like_openais(make: Any, prefix: str) -> None:
    made = {make() for _ in range(200)}
    assert len(made) == 200
    for value in made:
        assert value.startswith(prefix)
        tail = value[len(prefix):]
        assert len(tail) == 22 and tail.isalnum() and tail.isascii()


def test_every_response_status_is_exercised() -> None:
    responses = [event["response"] for _, event in EXAMPLES["response.created"] + EXAMPLES["response.done"]]
    assert {r["status"] for r in responses} == {"in_progress", "completed", "cancelled", "failed", "incomplete"}
    reasons = {(r["status_details"] or {}).get("reason") for r in responses}
    assert {"turn_detected", "client_cancelled", "max_output_tokens", "content_filter"} <= reasons
    assert {tuple(r["output_modalities"]) for r in responses} == {("audio",), ("text",)}
    assert any(r["conversation_id"] is None for r in responses)


def test_every_content_type_is_exercised() -> None:
    parts = {
        (event["item"]["role"], part["type"])
        for _, event in EXAMPLES["conversation.item.done"]
        if event["item"]["type"] == "message"
        for part in event["item"]["content"]
    }
    assert parts == {
        ("system", "input_text"),
        ("user", "input_text"), ("user", "input_audio"), ("user", "input_image"),
        ("assistant", "output_text"), ("assistant", "output_audio"),
    }
    kinds = {event["item"]["type"] for _, event in EXAMPLES["conversation.item.done"]}
    assert kinds == {"message", "function_call", "function_call_output"}


def test_both_session_kinds_are_exercised() -> None:
    objects = {event["session"]["object"] for _, event in EXAMPLES["session.created"]}
    assert objects == {"realtime.session", "realtime.transcription_session"}


# -- the validator itself must be strict ------------------------------------------------------


def _response_done() -> dict[str, Any]:
    return copy.deepcopy(dict(EXAMPLES["response.done"])["completed-audio"])


def _mutate(path: str, value: Any = None, *, delete: bool = False) -> dict[str, Any]:
    event = _response_done()
    *parents, last = path.split(".")
    node: Any = event
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if delete:
        del node[last]
    else:
        node[last] = value
    return event


@pytest.mark.parametrize(
    "event",
    [
        pytest.param({"type": "response.made", "event_id": "event_1"}, id="unknown-type"),
        pytest.param({"event_id": "event_1"}, id="no-type"),
        pytest.param(["response.done"], id="not-an-object"),
        pytest.param({"type": "input_audio_buffer.cleared"}, id="missing-event-id"),
        pytest.param({"type": "input_audio_buffer.cleared", "event_id": ""}, id="empty-event-id"),
        pytest.param({"type": "input_audio_buffer.cleared", "event_id": "event_1", "eventid": "x"}, id="top-typo"),
        pytest.param(_mutate("response.usage.input_token_details.cahced_tokens", 1), id="nested-typo"),
        pytest.param(_mutate("response.output.0.content.0.transcrpt", "x"), id="typo-in-union-member"),
        pytest.param(_mutate("response.output.0.content.0.type", "audio"), id="beta-content-type-in-ga"),
        pytest.param(_mutate("response.output.1.arguments", {"city": "Paris"}), id="arguments-not-a-string"),
        pytest.param(_mutate("response.usage.total_tokens", "253"), id="numeric-string"),
        pytest.param(_mutate("response.usage.total_tokens", 253.0), id="float-for-int"),
        pytest.param(_mutate("response.usage.total_tokens", True), id="bool-for-int"),
        pytest.param(_mutate("response.usage.total_tokens", float("nan")), id="nan"),
        pytest.param(_mutate("response.status", "done"), id="bad-literal"),
        pytest.param(_mutate("response.status_details", {"type": "cancelled", "reason": "user"}), id="bad-reason"),
        pytest.param(_mutate("response.output_modalities", ("audio",)), id="tuple"),
        pytest.param(_mutate("response", None), id="null-required"),
        pytest.param(_mutate("response_id", "resp_1"), id="field-of-another-event"),
        pytest.param(_mutate("response.output.0.role", "robot"), id="bad-role"),
        pytest.param(_mutate("response.output.0.content", None), id="null-content"),
        pytest.param(_mutate("response.output.1.name", delete=True), id="function-call-without-name"),
        pytest.param({**events.input_audio_buffer_dtmf_event_received("1", 0), "event_id": "event_1"},
                     id="dtmf-with-event-id"),
        pytest.param({"type": "session.created", "event_id": "event_1",
                      "session": {"type": "realtime", "object": "realtime.transcription_session", "id": "sess_1"}},
                     id="session-object-mismatch"),
        pytest.param({"type": "session.created", "event_id": "event_1",
                      "session": {"type": "realtime", "id": "sess_1", "voice": "alloy"}},
                     id="beta-field-in-ga-session"),
        pytest.param({"type": "session.created", "event_id": "event_1",
                      "session": {"type": "realtime", "id": "sess_1", "object": "realtime.session",
                                  "audio": {"input": {"turn_detection": {"type": "server_vad",
                                                                         "eagerness": "low"}}}}},
                     id="semantic-field-in-server-vad"),
        pytest.param({"type": "conversation.item.added", "event_id": "event_1",
                      "item": items.message("item_1", "system", [items.output_text("x")])},
                     id="system-output-text"),
    ],
)
def test_validator_rejects(event: Any) -> None:
    with pytest.raises(ConformanceError):
        validate_server_event(event)


def test_validator_rejects_a_beta_event_in_ga_and_a_ga_event_in_beta() -> None:
    beta_only = {"type": "response.text.delta", "event_id": "event_1", "response_id": "r", "item_id": "i",
                 "output_index": 0, "content_index": 0, "delta": "x"}
    validate_server_event(beta_only, beta=True)
    with pytest.raises(ConformanceError):
        validate_server_event(beta_only)
    ga_only = events.response_output_text_delta("r", "i", 0, 0, "x")
    with pytest.raises(ConformanceError):
        validate_server_event(ga_only, beta=True)


# -- client events ---------------------------------------------------------------------------

CLIENT_EXAMPLES = client_event_examples()
CLIENT_CASES = [
    pytest.param(event, id=f"{kind}[{label}]") for kind, cases in CLIENT_EXAMPLES.items() for label, event in cases
]


def test_client_event_types_equal_the_sdk_union() -> None:
    assert set(CLIENT_EVENT_TYPES) == set(GA_CLIENT_EVENTS)
    assert len(CLIENT_EVENT_TYPES) == len(set(CLIENT_EVENT_TYPES)) == 11


def test_client_examples_cover_every_type() -> None:
    assert set(CLIENT_EXAMPLES) == set(GA_CLIENT_EVENTS)


@pytest.mark.parametrize("event", CLIENT_CASES)
def test_client_example_is_valid_for_the_sdk(event: dict[str, Any]) -> None:
    validate_client_event(event)


@pytest.mark.parametrize("event", CLIENT_CASES)
def test_client_example_is_accepted_by_parley(event: dict[str, Any]) -> None:
    parsed = parse_client_event(copy.deepcopy(event))
    assert not isinstance(parsed, Invalid), parsed.error
    assert parsed.type == event["type"]
    assert parsed.event_id == event.get("event_id")


def test_item_reference_is_accepted_though_the_sdk_omits_it() -> None:
    # docs/protocol.md, section 3.1: the GA schema does not list item_reference in response.input, but
    # OpenAI's own response.create example uses it.
    event = {"type": "response.create",
             "response": {"conversation": "none", "input": [{"type": "item_reference", "id": "item_A"}]}}
    with pytest.raises(ConformanceError):
        validate_client_event(event)
    parsed = parse_client_event(event)
    assert not isinstance(parsed, Invalid), parsed.error
    assert parsed.response is not None and parsed.response.out_of_band


def test_client_validator_is_strict() -> None:
    with pytest.raises(ConformanceError):
        validate_client_event({"type": "response.create", "response": {"modalities": ["text"]}})
    with pytest.raises(ConformanceError):
        validate_client_event({"type": "transcription_session.update", "session": {}})
    validate_client_event({"type": "transcription_session.update", "session": {}}, beta=True)
