"""The copilot's answerers and the local engine's auxiliary copilot."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from parley.apps.copilot import THEM_LABEL, glossary, lookup, mic_session, speaker_session, them_item
from parley.apps.copilot.answerer import ChatAnswerer, Line, LocalAnswerer, ResponsesAnswerer
from parley.apps.copilot.responder import CopilotResponder
from parley.engine.responders.base import ResponseRequest, TextDelta
from parley.protocol.session import parse_session
from parley.util.serving import serve_app
from support.chat_server import arun_chat_server


async def collect(stream: AsyncIterator[str]) -> str:
    return "".join([part async for part in stream])


def test_glossary_and_lookup() -> None:
    assert len(glossary()) >= 30
    assert [e.term for e in lookup("So what exactly is a hash table?")] == ["Hash map"]
    assert lookup("How would you design a rate limiter with Redis?")[0].term == "Rate limiting"
    assert lookup("tell me about your weekend") == []
    # whole words only: "cache" is in "caches", but "dict" must not match "predict"
    assert lookup("can you predict the weather") == []


def test_sessions_are_valid_ga_configs() -> None:
    assert parse_session(mic_session()).type == "realtime"
    assert parse_session(speaker_session()).type == "transcription"
    assert them_item("hi")["content"][0]["text"] == f"{THEM_LABEL} hi"


async def test_local_answerer_uses_the_latest_question() -> None:
    lines = [Line("them", "Tell me about yourself."), Line("you", "I build backend services."),
             Line("them", "How does binary search work, and what is its complexity?")]
    text = await collect(LocalAnswerer().answer(lines))
    assert text.startswith("Binary search: ") and "O(log n)" in text
    assert "Big O" in text  # the second topic of the question, briefly
    assert "no offline notes" in await collect(LocalAnswerer().answer([Line("them", "Nice weather today?")]))


async def test_aux_copilot_answers_in_a_line_or_two() -> None:
    responder = CopilotResponder()
    request = ResponseRequest(instructions=mic_session()["instructions"], items=[
        them_item("Can you explain what a load balancer does?"),
    ], output_modalities=("text",))
    chunks = [c async for c in responder.respond(request)]
    text = "".join(c.text for c in chunks if isinstance(c, TextDelta))
    assert text.startswith("Load balancer:") and len(text) < 300
    other = ResponseRequest(instructions="You are a helpful assistant.", items=[them_item("hello")])
    generic = "".join([c.text async for c in responder.respond(other) if isinstance(c, TextDelta)])
    assert generic and "Load balancer" not in generic


async def test_chat_answerer_streams_from_a_chat_model() -> None:
    async with arun_chat_server() as url:
        text = await collect(ChatAnswerer(str(url), "test-chat").answer([Line("them", "What is a heap?")]))
        assert text.startswith("You said:") and "Them: What is a heap?" in text
        assert url.requests[-1]["messages"][0]["role"] == "system"


@pytest.fixture
def responses_server() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """A minimal stand-in for OpenAI's Responses API (streaming), for the official SDK to talk to."""
    app = FastAPI()
    seen: list[dict[str, object]] = []

    @app.post("/v1/responses")
    async def responses(request: Request) -> StreamingResponse:
        body = await request.json()
        seen.append(body)

        async def events() -> AsyncIterator[str]:
            base = {"id": "resp_1", "object": "response", "created_at": 0, "model": body["model"], "output": [],
                    "status": "in_progress", "parallel_tool_calls": False, "tool_choice": "auto", "tools": []}
            yield "event: response.created\ndata: " + json.dumps(
                {"type": "response.created", "sequence_number": 0, "response": base}) + "\n\n"
            for i, word in enumerate(["A ", "heap ", "is ", "a ", "tree."]):
                yield "event: response.output_text.delta\ndata: " + json.dumps({
                    "type": "response.output_text.delta", "sequence_number": i + 1, "item_id": "msg_1",
                    "output_index": 0, "content_index": 0, "delta": word, "logprobs": []}) + "\n\n"
            yield "event: response.completed\ndata: " + json.dumps(
                {"type": "response.completed", "sequence_number": 9, "response": {**base, "status": "completed"}}) + "\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    with serve_app(app) as url:
        yield url, seen


async def test_responses_answerer_uses_the_responses_api(responses_server: tuple[str, list[dict[str, object]]]) -> None:
    url, seen = responses_server
    answerer = ResponsesAnswerer("sk-test", model="gpt-test", base_url=f"{url}/v1")
    assert await collect(answerer.answer([Line("them", "What is a heap?")])) == "A heap is a tree."
    assert seen[0]["model"] == "gpt-test" and "Them: What is a heap?" in str(seen[0]["input"])
