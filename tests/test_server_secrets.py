"""The standard API key never leaves the server process: a scan of every response body and header,
every static file, every log line and every database row (and the database files' bytes).

The server is configured like a deployment on OpenAI (`OPENAI_API_KEY`), except that its upstream is
a local engine by URL (which accepts any key), so every path that uses the key really runs.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

import parley
from parley.engine.app import create_app as create_engine_app
from parley.util.serving import serve_app
from support.rtc import of_type
from support.server import http, make_engine, make_settings, running_server, say_text, server_call

pytestmark = pytest.mark.slow

SECRET = "sk-proj-" + secrets.token_urlsafe(36)
FRAGMENTS = (SECRET, SECRET[8:30], SECRET[-10:])  # the key, its middle, its tail (a masked key shows the tail)


class _Capture(logging.Handler):
    def __init__(self, skip_threads: set[str]) -> None:
        super().__init__(logging.DEBUG)
        self.skip_threads = skip_threads
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.threadName in self.skip_threads:  # the upstream's own logs (another machine, in real life)
            return
        text = self.format(record)
        self.lines.append(f"{text} {record.args!r} {record.__dict__.get('headers', '')}")


@pytest.fixture
def capture() -> Iterator[_Capture]:
    handler = _Capture(set())
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # Media packet logs are voluminous and carry no credentials: INFO keeps the test fast.
    quiet = {name: logging.getLogger(name).level for name in ("aiortc", "aioice", "numba", "aiosqlite")}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)


def _leaks(text: str) -> list[str]:
    return [f for f in FRAGMENTS if f in text]


async def test_the_api_key_appears_nowhere(tmp_path: Path, capture: _Capture) -> None:
    seen: list[tuple[str, str]] = []  # (what, text)

    async def record(response: httpx.Response) -> None:
        await response.aread()
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        seen.append((f"{response.request.method} {response.request.url}", f"{headers}\n{response.text}"))

    upstream_engine = make_engine()  # api_keys=[]: any key works, so the server's key is really used
    with serve_app(create_engine_app(upstream_engine)) as engine_url:
        capture.skip_threads.add(f"uvicorn-{engine_url.rsplit(':', 1)[1]}")
        settings = make_settings(tmp_path, upstream="url", upstream_url=f"{engine_url}/v1",
                                 openai_api_key=SecretStr(SECRET), rate_limit_burst=50, max_concurrent_calls=10)
        assert settings.upstream_key == SECRET
        with running_server(settings) as url:
            async with http(url, event_hooks={"response": [record]}) as c:
                for path in ("/healthz", "/metrics", "/api/personas", "/api/me", "/openapi.json", "/docs", "/",
                             "/api/calls"):
                    await c.get(path)
                key = (await c.post("/api/session", json={"persona": "negotiator/sarah"})).json()
                assert key["value"].startswith("ek_")
                await c.post("/api/session", json={"persona": "nobody"})
                await c.post("/api/calls", content=b"v=0\r\n", headers={"content-type": "application/sdp"})
                await c.post(key["events_url"], json={"events": [{"type": "error", "error": {
                    "code": "x", "message": f"an upstream error quoting {SECRET}"}}]})
                async with server_call(c) as (peer, call_id):
                    await peer.wait_for(of_type("response.done"), start=say_text(peer, "Hi, my bill is too high."))
                    start = len(peer.events)
                    assert (await c.post(f"/api/calls/{call_id}/escalate")).status_code == 200
                    await peer.wait_for(lambda e: e["type"] == "response.done" and "Marco" in str(e["response"]),
                                        start=start)
                    for suffix in ("", "/transcript?format=md", "/transcript?format=json"):
                        await c.get(f"/api/calls/{call_id}{suffix}")
                    await c.post(f"/api/calls/{call_id}/hangup")
                    channel = [str(e) for e in peer.events]
                await c.get("/api/calls")
                await c.get("/metrics")

        # an upstream that refuses the key, and one that is down: the errors name neither the key
        refusing = make_engine(api_keys=["sk-some-other-key"])
        with serve_app(create_engine_app(refusing)) as refusing_url:
            capture.skip_threads.add(f"uvicorn-{refusing_url.rsplit(':', 1)[1]}")
            bad = make_settings(tmp_path / "b", upstream="url", upstream_url=f"{refusing_url}/v1",
                                openai_api_key=SecretStr(SECRET))
            with running_server(bad) as url:
                async with http(url, event_hooks={"response": [record]}) as c:
                    r = await c.post("/api/session", json={})
                    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_auth"

    assert len(seen) > 20
    for what, text in seen:
        assert not _leaks(text), f"the key leaked in the response to {what}"
    for text in channel:
        assert not _leaks(text)

    web = Path(parley.__file__).parent / "web"
    static = [p for p in web.rglob("*") if p.is_file()] if web.is_dir() else []
    for path in static:
        assert not _leaks(path.read_bytes().decode("utf-8", "replace")), path

    assert len(capture.lines) > 50  # the debug logs of the SDK, websockets, httpx, the server
    assert any("parley.server.sideband.ws" in line for line in capture.lines)  # the handshake was logged...
    for line in capture.lines:
        assert not _leaks(line), line  # ...without the Authorization header

    rows: list[Any] = []
    for data_dir in (tmp_path, tmp_path / "b"):
        with sqlite3.connect(data_dir / "parley.db") as db:
            tables = [t for (t,) in db.execute("select name from sqlite_master where type='table'")]
            assert {"calls", "transcript_items", "usage_records", "alembic_version"} <= set(tables)
            for table in tables:
                rows += db.execute(f"select * from {table}").fetchall()
        for path in data_dir.glob("parley.db*"):  # the files themselves, WAL included
            assert not _leaks(path.read_bytes().decode("latin-1")), path
    assert len(rows) > 5
    for row in rows:
        assert not _leaks(repr(row)), row
