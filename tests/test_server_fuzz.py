"""Fuzzing: schemathesis against the server's and the (standalone) engine's own OpenAPI specs, and
hypothesis against the event recorder (random events reported for a real browser-direct call).
Nothing may answer 5xx."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from parley.engine.app import create_app as create_engine_app
from parley.util.serving import serve_app
from support.server import make_engine, make_settings, running_server


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings_ = make_settings(tmp_path_factory.mktemp("fuzz"), rate_limit_per_minute=100_000,
                              rate_limit_burst=10_000, max_concurrent_calls=10_000)
    with running_server(settings_) as url:
        yield url


@pytest.fixture(scope="module")
def fuzz_engine() -> Iterator[str]:
    with serve_app(create_engine_app(make_engine())) as url:
        yield url


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(f"{record.name}: {record.getMessage()}")


@contextmanager
def no_errors_logged() -> Iterator[None]:
    """A crash after the response went out (the status looked fine, the connection was dropped)
    shows only in the logs: uvicorn's own, which do not reach the root logger, and ours."""
    handler = _Errors()
    loggers = [logging.getLogger("uvicorn.error"), logging.getLogger()]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert handler.seen == []


def _operations(url: str) -> list[Any]:
    spec = schemathesis.openapi.from_url(f"{url}/openapi.json")
    return [result.ok() for result in spec.get_all_operations()]


def test_no_5xx_anywhere_in_the_spec(fuzz_server: str) -> None:
    """Every operation of /openapi.json with schemathesis' generated requests (valid and not)."""
    operations = _operations(fuzz_server)
    assert len(operations) >= 12
    statuses: dict[str, set[int]] = {}
    with no_errors_logged():
        for operation in operations:
            _fuzz(operation, statuses.setdefault(operation.label, set()))
    assert all(s < 500 for codes in statuses.values() for s in codes), statuses
    assert any(400 <= s < 500 for codes in statuses.values() for s in codes)  # bad input was generated


def test_no_5xx_anywhere_in_the_engines_spec(fuzz_engine: str) -> None:
    """The engine's /v1 routes, described in its /openapi.json, with a key (any key is valid) and without."""
    operations = _operations(fuzz_engine)
    assert {op.label for op in operations} >= {
        "POST /v1/realtime/client_secrets", "POST /v1/realtime/sessions", "POST /v1/realtime/transcription_sessions",
        "POST /v1/realtime/calls", "POST /v1/realtime/calls/{call_id}/hangup", "GET /v1/realtime/healthz"}
    statuses: dict[str, set[int]] = {}
    with no_errors_logged():
        for operation in operations:
            for headers in ({"Authorization": "Bearer sk-fuzz"}, {}):
                _fuzz(operation, statuses.setdefault(operation.label, set()), headers=headers,
                      examples=60 if headers else 10)
    assert all(s < 500 for codes in statuses.values() for s in codes), statuses
    assert {200, 400, 401} <= set().union(*statuses.values()), statuses  # accepted, refused and unauthenticated


def _fuzz(operation: Any, seen: set[int], *, headers: dict[str, str] | None = None, examples: int = 40) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def fuzz(case: Any) -> None:
        seen.add(case.call_and_validate(headers=headers, checks=[not_a_server_error]).status_code)

    fuzz()


# -- the recorder, with events shaped like the protocol's but filled with anything -----------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.floats(allow_nan=False, allow_infinity=False),
                     st.text(max_size=40))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                         max_size=4), max_leaves=12)
_types = st.sampled_from(["session.created", "session.updated", "conversation.item.added", "conversation.item.done",
                          "response.output_item.done", "conversation.item.input_audio_transcription.completed",
                          "conversation.item.input_audio_transcription.failed", "conversation.item.truncated",
                          "conversation.item.deleted", "response.created", "response.done", "error",
                          "response.output_audio.delta", "unknown.event"])
_item = st.fixed_dictionaries({"id": st.one_of(st.sampled_from(["item_a", "item_b", "item_c"]), _json),
                               "type": st.one_of(st.sampled_from(["message", "function_call", "function_call_output"]), _json),
                               "role": st.one_of(st.sampled_from(["user", "assistant", "system"]), _json),
                               "status": st.one_of(st.sampled_from(["completed", "in_progress", "incomplete"]), _json),
                               "name": st.one_of(st.sampled_from(["record_outcome", "transfer_to_supervisor"]), _json),
                               "arguments": st.one_of(st.just('{"new_monthly_price": 99.99}'), _json),
                               "content": st.one_of(st.lists(st.dictionaries(
                                   st.sampled_from(["type", "text", "transcript"]),
                                   st.one_of(st.sampled_from(["input_text", "input_audio", "output_audio"]), _json)),
                                   max_size=3), _json)})
_event = st.fixed_dictionaries(
    {"type": _types},
    optional={"item": st.one_of(_item, _json), "previous_item_id": st.one_of(st.sampled_from(["item_a", "item_b"]), _json),
              "item_id": st.one_of(st.sampled_from(["item_a", "item_c"]), _json), "transcript": _json,
              "usage": st.one_of(st.fixed_dictionaries({"input_tokens": _json, "output_tokens": _json}), _json),
              "response": st.one_of(st.fixed_dictionaries(
                  {"id": st.one_of(st.just("resp_1"), _json), "status": _json, "output": st.one_of(st.lists(_item, max_size=2), _json),
                   "usage": st.one_of(st.fixed_dictionaries({"input_tokens": st.integers(0, 10**6),
                                                             "output_tokens": st.integers(0, 10**6)}), _json)}), _json),
              "session": st.one_of(st.fixed_dictionaries({"model": _json, "instructions": _json}), _json),
              "audio_end_ms": _json, "error": _json})


def test_recorder_survives_any_reported_events(fuzz_server: str) -> None:
    with httpx.Client(base_url=fuzz_server, timeout=30) as client:
        call = client.post("/api/session", json={}).json()

        @given(st.lists(_event, min_size=1, max_size=8))
        @settings(max_examples=50, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def report(events: list[dict[str, Any]]) -> None:
            r = client.post(call["events_url"], json={"events": events})
            assert r.status_code < 500, r.text
            assert r.status_code in (200, 409, 413, 422), r.text

        report()
        detail = client.get(f"/api/calls/{call['call_id']}")
        assert detail.status_code == 200
        assert client.get(f"/api/calls/{call['call_id']}/transcript?format=md").status_code == 200
