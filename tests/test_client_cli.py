"""`parley talk`, `parley transcribe` and `parley calls`, run in-process against real servers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from typer.testing import CliRunner

from parley.apps.local import local_engine
from parley.audio.wav import read_wav
from parley.cli import app
from parley.engine.app import EngineSettings, create_app
from parley.engine.speech.wer import wer
from parley.util.serving import serve_app
from support.chat_server import run_chat_server
from support.speech import speech_wav

pytestmark = pytest.mark.slow

runner = CliRunner()


@pytest.fixture(scope="module")
def chat_engine() -> Iterator[str]:
    with run_chat_server() as chat_url:
        engine = local_engine(EngineSettings(responder="chat", chat_url=str(chat_url), chat_model="test-chat"))
        with serve_app(create_app(engine)) as url:
            yield url


def test_talk_text(chat_engine: str) -> None:
    result = runner.invoke(app, ["talk", "--text", "--base-url", chat_engine, "--api-key", "sk-test"],
                           input="Hello there\nHow are you?\n")
    assert result.exit_code == 0, result.output
    assert "user: Hello there" in result.output
    assert "assistant: You said: Hello there" in result.output
    assert "assistant: You said: How are you?" in result.output
    assert "2 responses" in result.output


def test_talk_wav_speaks_a_file_and_saves_the_answer(chat_engine: str, tmp_path: Path) -> None:
    sentence = "Our next meeting is on Thursday."
    wav = speech_wav(tmp_path, sentence, rate=16000)  # any rate: the client resamples
    out = tmp_path / "answer.wav"
    result = runner.invoke(app, ["talk", "--wav", str(wav), "--speed", "4", "--base-url", chat_engine,
                                 "--api-key", "sk-test", "--out-wav", str(out)])
    assert result.exit_code == 0, result.output
    lines = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in result.output.splitlines()
             if line.startswith(("user:", "assistant:"))}
    assert wer(sentence, lines["user"]) <= 0.3, result.output
    assert lines["assistant"].startswith("You said:")
    audio, rate = read_wav(out)
    assert rate == 24000 and audio.size > rate  # more than a second of the answer


def test_transcribe_two_sources_to_json_lines(engine_url: str, tmp_path: Path) -> None:
    first = "Can you remind me when the meeting is?"
    second = "Another company offered me internet for fifty dollars a month."
    a, b = speech_wav(tmp_path, first), speech_wav(tmp_path, second, voice="echo", rate=48000)
    result = runner.invoke(app, ["transcribe", str(a), str(b), "--label", "mic", "--label", "speaker",
                                 "--speed", "4", "--base-url", engine_url, "--api-key", "sk-test"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    by_source = {line["source"]: line for line in lines}
    assert set(by_source) == {"mic", "speaker"}
    assert wer(first, by_source["mic"]["text"]) <= 0.3
    assert wer(second, by_source["speaker"]["text"]) <= 0.3
    assert all(line["item_id"].startswith("item_") and line["end_ms"] > line["start_ms"] for line in lines)


def test_talk_reports_an_unreachable_server() -> None:
    result = runner.invoke(app, ["talk", "--text", "--base-url", "http://127.0.0.1:9", "--api-key", "sk"], input="")
    assert result.exit_code == 1
    assert "could not connect" in result.output


# -- calls: a stand-in for the Parley server's stored-calls API (GET /api/calls...) ---------------


def calls_server() -> FastAPI:
    api = FastAPI()
    calls = [{"id": "call_1", "kind": "server", "status": "ended", "persona": "negotiator/sarah",
              "created_at": "2026-11-21T10:00:00Z", "duration_seconds": 61.5, "cost_usd": 0.0123},
             {"id": "call_2", "kind": "direct", "status": "active", "persona": "negotiator/marco",
              "created_at": "2026-11-21T11:00:00Z", "duration_seconds": 5.0, "cost_usd": 0.0}]
    seen: list[dict[str, Any]] = []
    api.state.seen = seen

    def authorized(request: Request) -> bool:
        seen.append({"path": request.url.path, "auth": request.headers.get("authorization"),
                     "query": dict(request.query_params)})
        return request.headers.get("authorization") == "Bearer tok"

    @api.get("/api/calls")
    async def list_calls(request: Request, limit: int = 50) -> Any:
        if not authorized(request):
            return JSONResponse({"error": {"message": "A valid bearer token is required.", "code": "unauthorized"}},
                                status_code=401)
        return calls[:limit]

    @api.get("/api/calls/{call_id}")
    async def get_call(call_id: str, request: Request) -> Any:
        authorized(request)
        found = next((c for c in calls if c["id"] == call_id), None)
        if found is None:
            return JSONResponse({"error": {"message": "No such call.", "code": "not_found"}}, status_code=404)
        return {**found, "items": [{"role": "user", "text": "Hi"}]}

    @api.get("/api/calls/{call_id}/transcript")
    async def transcript(call_id: str, request: Request, format: str = Query("json")) -> Any:
        authorized(request)
        if format in ("md", "markdown"):
            return Response(f"# Call {call_id}\n\n**user:** Hi\n\n**Sarah:** Hello!\n", media_type="text/markdown")
        return {"id": call_id, "items": [{"role": "user", "text": "Hi"}, {"role": "assistant", "text": "Hello!"}]}

    return api


def test_calls_list_show_export(tmp_path: Path) -> None:
    api = calls_server()
    with serve_app(api) as url:
        common = ["--base-url", url, "--api-key", "tok"]
        listed = runner.invoke(app, ["calls", "list", *common])
        assert listed.exit_code == 0, listed.output
        assert "call_1" in listed.output and "call_2" in listed.output and "negotiator/sarah" in listed.output
        as_json = runner.invoke(app, ["calls", "list", "--json", "--limit", "1", *common])
        assert json.loads(as_json.output)[0]["id"] == "call_1" and len(json.loads(as_json.output)) == 1
        shown = runner.invoke(app, ["calls", "show", "call_1", *common])
        assert shown.exit_code == 0 and "persona: negotiator/sarah" in shown.output and "**Sarah:** Hello!" in shown.output
        exported = runner.invoke(app, ["calls", "export", "call_1", *common])
        assert exported.output.startswith("# Call call_1")
        out = tmp_path / "call.json"
        saved = runner.invoke(app, ["calls", "export", "call_1", "--format", "json", "--out", str(out), *common])
        assert saved.exit_code == 0 and json.loads(out.read_text())["items"][1]["text"] == "Hello!"
        missing = runner.invoke(app, ["calls", "show", "call_9", *common])
        assert missing.exit_code == 1 and "not found" in missing.output
        refused = runner.invoke(app, ["calls", "list", "--base-url", url, "--api-key", "wrong"])
        assert refused.exit_code == 1 and "401" in refused.output and "bearer token" in refused.output
        queries = [s["query"] for s in api.state.seen if s["path"].endswith("/transcript")]
        assert {"format": "markdown"} in queries and {"format": "json"} in queries
    unreachable = runner.invoke(app, ["calls", "list", "--base-url", "http://127.0.0.1:9"])
    assert unreachable.exit_code == 1 and "cannot reach" in unreachable.output


def test_talk_and_transcribe_on_parley_serve_without_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no key anywhere, the CLI gets a short-lived one from the server's /api/session."""
    from support.server import make_settings, running_server

    monkeypatch.delenv("PARLEY_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with running_server(make_settings(tmp_path, max_concurrent_calls=10)) as server:
        result = runner.invoke(app, ["talk", "--text", "--base-url", server], input="Hi, my bill is too high.\n")
        assert result.exit_code == 0, result.output
        assert "assistant:" in result.output and "1 responses" in result.output
        sentence = "Can you remind me when the meeting is?"
        result = runner.invoke(app, ["transcribe", str(speech_wav(tmp_path, sentence)), "--speed", "4",
                                     "--base-url", server])
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
        assert lines and wer(sentence, " ".join(line["text"] for line in lines)) <= 0.4, result.output
