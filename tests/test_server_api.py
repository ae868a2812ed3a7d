"""The Parley server's HTTP API against the real local engine (in process) and a real SQLite file:
ephemeral keys the openai SDK can use, bad input, auth, rate limits, caps, CORS, metrics."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from parley.apps.scenarios import get_persona
from support.realtime import collect_until, is_type, recv_event
from support.server import http, make_settings, running_server

SDP_OK = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
          "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\na=fingerprint:sha-256 00:11\r\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = make_settings(tmp_path_factory.mktemp("api"), rate_limit_per_minute=600, rate_limit_burst=100,
                             max_concurrent_calls=50, ephemeral_key_ttl_seconds=10)
    with running_server(settings) as url:
        yield url


async def test_health_personas_and_metrics(server: str) -> None:
    async with http(server) as c:
        health = (await c.get("/healthz")).json()
        assert health == {"status": "ok", "upstream": "local", "database": "ok", "calls_active": health["calls_active"]}
        personas = (await c.get("/api/personas")).json()
        assert {p["persona"]["id"] for p in personas} >= {"negotiator/sarah", "negotiator/marco"}
        metrics = await c.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
        for line in metrics.text.splitlines():  # every sample line is "name{labels} number"
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                float(value)
                assert name.startswith("parley_")
        for needed in ("parley_calls_active", "parley_calls_total", "parley_tokens_total", "parley_cost_usd_total",
                       "parley_upstream_errors_total", "parley_upstream_seconds"):
            assert f"# TYPE {needed} " in metrics.text


async def test_session_key_works_with_the_sdk_over_websocket(server: str) -> None:
    async with http(server) as c:
        r = await c.post("/api/session", json={"persona": "negotiator/sarah"})
        assert r.status_code == 200, r.text
        body = r.json()
    assert body["value"].startswith("ek_")
    assert body["expires_at"] - time.time() <= 11
    assert body["model"] == "gpt-realtime"
    assert body["calls_url"] == f"{server}/v1/realtime/calls"
    assert body["events_url"] == f"/api/calls/{body['call_id']}/events"
    assert "server-timing" in r.headers and "upstream;dur=" in r.headers["server-timing"]

    client = AsyncOpenAI(base_url=f"{server}/v1", api_key=body["value"])
    async with client.realtime.connect() as conn:
        created = await recv_event(conn)
        session = created["session"]
        sarah = get_persona("negotiator/sarah")
        assert session["instructions"] == sarah.instructions
        assert session["audio"]["output"]["voice"] == sarah.voice
        assert session["audio"]["input"]["transcription"]["model"] == "whisper-1"
        assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        assert {t["name"] for t in session["tools"]} == {"record_outcome", "transfer_to_supervisor"}
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await collect_until(conn, is_type("session.updated"))
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                   "content": [{"type": "input_text", "text": "Hello?"}]})
        await conn.response.create()
        events = await collect_until(conn, is_type("response.done"))
    text = events[-1]["response"]["output"][0]["content"][0]["text"]
    assert "Sarah" in text


async def test_expired_key_is_refused(server: str) -> None:
    async with http(server) as c:
        body = (await c.post("/api/session", json={})).json()  # the default persona
    assert body["persona"]["persona"]["id"] == "negotiator/sarah"
    await asyncio.sleep(max(0.0, body["expires_at"] - time.time()) + 0.3)
    client = AsyncOpenAI(base_url=f"{server}/v1", api_key=body["value"], max_retries=0)
    with pytest.raises(Exception) as info:
        async with client.realtime.connect() as conn:
            await recv_event(conn)
    assert "401" in str(info.value)
    # and a made-up standard key does not open the mounted engine either
    with pytest.raises(Exception) as info:
        async with AsyncOpenAI(base_url=f"{server}/v1", api_key="sk-made-up").realtime.connect(model="gpt-realtime") as conn:
            await recv_event(conn)
    assert "401" in str(info.value)


@pytest.mark.parametrize(("path", "kwargs", "status", "code"), [
    ("/api/session", {"json": {"persona": "nobody/here"}}, 400, "unknown_persona"),
    ("/api/session", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
    ("/api/session", {"json": {"persona": "negotiator/sarah", "voice": "x"}}, 422, "invalid_request"),
    ("/api/session", {"json": {"persona": 7}}, 422, "invalid_request"),
    ("/api/session", {"json": ["negotiator/sarah"]}, 422, "invalid_request"),
    ("/api/session", {"json": {"persona": "x" * 200}}, 422, "invalid_request"),
    ("/api/session", {"content": b"x" * 300_000, "headers": {"content-type": "application/json"}}, 413, "body_too_large"),
    ("/api/calls", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
    ("/api/calls", {"content": b"v=0\r\n", "headers": {"content-type": "application/sdp"}}, 400, "invalid_sdp"),
    ("/api/calls", {"content": b"", "headers": {"content-type": "application/sdp"}}, 400, "invalid_sdp"),
    ("/api/calls", {"content": b"\xff\xfe", "headers": {"content-type": "application/sdp"}}, 400, "invalid_sdp"),
    ("/api/calls", {"content": SDP_OK.replace("m=audio", "m=video").encode(), "headers": {"content-type": "application/sdp"}},
     400, "invalid_sdp"),
    ("/api/calls", {"content": SDP_OK.replace("a=fingerprint:sha-256 00:11\r\n", "").encode(),
                    "headers": {"content-type": "application/sdp"}}, 400, "invalid_sdp"),
    ("/api/calls", {"json": {"sdp": SDP_OK, "persona": "nobody/here"}}, 400, "unknown_persona"),
    ("/api/calls", {"json": {"persona": "negotiator/sarah"}}, 422, "invalid_request"),
    ("/api/calls", {"content": b"{", "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
    ("/api/calls", {"data": {"sdp": SDP_OK, "session": "{}"}}, 415, "unsupported_media_type"),
    ("/api/calls", {"files": {"sdp": (None, SDP_OK), "session": (None, "{}")}}, 400, "unknown_parameter"),
    ("/api/calls", {"content": SDP_OK.encode() * 2000, "headers": {"content-type": "application/sdp"}}, 413, "body_too_large"),
    ("/api/calls/call_nope/events", {"json": {"events": []}}, 404, "call_not_found"),
    ("/api/calls/call_nope/events", {"json": {"events": [1, 2]}}, 422, "invalid_request"),
    ("/api/calls/call_nope/events", {"json": {"events": [], "upstream_call_id": "x"}}, 422, "invalid_request"),
    ("/api/calls/call_nope/escalate", {}, 404, "call_not_found"),
    ("/api/calls/call_nope/hangup", {}, 404, "call_not_found"),
    ("/api/calls/bad%20id!/hangup", {}, 422, "invalid_request"),
    ("/api/nothing", {}, 404, "not_found"),
])
async def test_bad_input_is_refused_with_a_reason(server: str, path: str, kwargs: dict[str, Any], status: int,
                                                  code: str) -> None:
    async with http(server) as c:
        r = await c.post(path, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    assert len(error["message"]) > 10


async def test_oversized_streamed_body_is_refused(server: str) -> None:
    async def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 10_000

    async with http(server) as c:
        r = await c.post("/api/session", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "body_too_large"


async def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, rate_limit_per_minute=2, rate_limit_burst=2, max_concurrent_calls=10)
    with running_server(settings) as url:
        async with http(url) as c:
            await c.get("/api/me")  # the client cookie: from now on this browser is its own user
            statuses = [(await c.post("/api/session", json={})).status_code for _ in range(2)]
            assert statuses == [200, 200]
            r = await c.post("/api/session", json={})
            assert r.status_code == 429
            assert r.json()["error"]["code"] == "rate_limited"
            assert 1 <= int(r.headers["retry-after"]) <= 30
            # /api/calls shares the bucket: refused before the body is even looked at
            r = await c.post("/api/calls", content=SDP_OK, headers={"content-type": "application/sdp"})
            assert r.status_code == 429 and "retry-after" in r.headers
            # another client (its own cookie) has its own bucket
            async with http(url) as other:
                assert (await other.post("/api/session", json={})).status_code == 200
            metrics = (await c.get("/metrics")).text
            assert 'parley_rate_limited_total{reason="rate"} 2' in metrics


async def test_concurrent_call_cap_and_hangup_frees_a_slot(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_concurrent_calls=2)
    with running_server(settings) as url:
        async with http(url) as c:
            await c.get("/api/me")
            first = (await c.post("/api/session", json={})).json()
            assert (await c.post("/api/session", json={})).status_code == 200
            r = await c.post("/api/session", json={})
            assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_calls"
            assert "retry-after" in r.headers
            assert (await c.post(f"/api/calls/{first['call_id']}/hangup")).status_code == 200
            assert (await c.post("/api/session", json={})).status_code == 200


async def test_bearer_auth_and_calls_are_private(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, auth="bearer", auth_tokens={"alice": "token-alice-123", "bob": "token-bob-456"})
    with running_server(settings) as url:
        async with http(url) as anon:
            r = await anon.post("/api/session", json={})
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert (await anon.get("/api/calls", headers={"authorization": "Bearer wrong"})).status_code == 401
        async with http(url, headers={"authorization": "Bearer token-alice-123"}) as alice, \
                http(url, headers={"authorization": "Bearer token-bob-456"}) as bob:
            assert (await alice.get("/api/me")).json()["user_id"] == "alice"
            call_id = (await alice.post("/api/session", json={})).json()["call_id"]
            report = {"events": [{"type": "conversation.item.added", "previous_item_id": None,
                                  "item": {"id": "item_1", "type": "message", "role": "user", "status": "completed",
                                           "content": [{"type": "input_text", "text": "hi"}]}}]}
            assert (await bob.post(f"/api/calls/{call_id}/events", json=report)).status_code == 404
            assert (await alice.post(f"/api/calls/{call_id}/events", json=report)).status_code == 200
            assert (await bob.get(f"/api/calls/{call_id}")).status_code == 404
            assert (await bob.get("/api/calls")).json() == []
            assert [c["id"] for c in (await alice.get("/api/calls")).json()] == [call_id]


async def test_cookie_auth_login(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, auth="cookie", auth_tokens={"carol": "token-carol-789"},
                             session_secret="a-long-test-secret")
    with running_server(settings) as url:
        async with http(url) as c:
            assert (await c.get("/api/me")).status_code == 401
            assert (await c.post("/api/login", json={"token": "nope"})).status_code == 401
            r = await c.post("/api/login", json={"token": "token-carol-789"})
            assert r.status_code == 200
            cookie = r.headers["set-cookie"]
            assert "parley_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
            assert (await c.get("/api/me")).json() == {"user_id": "carol", "auth": "cookie", "method": "session-cookie"}
            c.cookies.set("parley_session", c.cookies["parley_session"][:-2] + "xx")  # tampered
            assert (await c.get("/api/me")).status_code == 401


async def test_cors_is_closed_by_default_and_opens_by_setting(server: str, tmp_path: Path) -> None:
    preflight = {"origin": "https://evil.example", "access-control-request-method": "POST",
                 "access-control-request-headers": "content-type"}
    async with http(server) as c:
        r = await c.options("/api/session", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
        r = await c.post("/api/session", json={}, headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
    settings = make_settings(tmp_path, cors_origins=["https://app.example"])
    with running_server(settings) as url:
        async with http(url) as c:
            r = await c.options("/api/session", headers={**preflight, "origin": "https://app.example"})
            assert r.headers["access-control-allow-origin"] == "https://app.example"
            r = await c.options("/api/session", headers=preflight)
            assert "access-control-allow-origin" not in r.headers


# -- upstream failures: 502/504 with a reason, never a hang ------------------------------------------


class _Upstream:
    """A misbehaving third-party HTTP server on loopback: refuses nothing, answers badly or never."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.hits = 0
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.hits += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            if self.mode == "hang":
                await asyncio.sleep(30)
                return
            body = json.dumps({"error": {"message": "boom", "type": "server_error"}}).encode()
            writer.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def _free_port() -> int:
    from parley.util.serving import free_port

    return free_port()


async def test_upstream_refused_is_502_quickly(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, upstream="url", upstream_url=f"http://127.0.0.1:{_free_port()}/v1",
                             upstream_api_key="sk-test-upstream", upstream_retries=1)
    with running_server(settings) as url:
        async with http(url) as c:
            start = time.monotonic()
            r = await c.post("/api/session", json={})
            assert time.monotonic() - start < 10
            assert r.status_code == 502
            assert r.json()["error"]["code"] == "upstream_unreachable"
            r = await c.post("/api/calls", content=SDP_OK, headers={"content-type": "application/sdp"})
            assert r.status_code == 502
            metrics = (await c.get("/metrics")).text
            assert 'parley_upstream_errors_total{operation="client_secrets",status="0"} 1' in metrics


async def test_upstream_5xx_is_retried_then_502(tmp_path: Path) -> None:
    fake = _Upstream("error")
    async with fake as upstream_url:
        settings = make_settings(tmp_path, upstream="url", upstream_url=upstream_url, upstream_api_key="sk-x",
                                 upstream_retries=1)
        with running_server(settings) as url:
            async with http(url) as c:
                r = await c.post("/api/session", json={})
                assert r.status_code == 502
                assert r.json()["error"]["code"] == "upstream_error"
                assert "500" in r.json()["error"]["message"]
                assert fake.hits == 2  # minting a key is safe to repeat: one retry
                fake.hits = 0
                r = await c.post("/api/calls", content=SDP_OK, headers={"content-type": "application/sdp"})
                assert r.status_code == 502
                assert fake.hits == 1  # an offer is never sent twice once it arrived


async def test_upstream_that_hangs_is_504_within_the_timeout(tmp_path: Path) -> None:
    fake = _Upstream("hang")
    async with fake as upstream_url:
        settings = make_settings(tmp_path, upstream="url", upstream_url=upstream_url, upstream_api_key="sk-x",
                                 upstream_timeout_seconds=1.0, upstream_retries=0)
        with running_server(settings) as url:
            async with http(url) as c:
                start = time.monotonic()
                r = await c.post("/api/session", json={})
                elapsed = time.monotonic() - start
                assert r.status_code == 504, r.text
                assert r.json()["error"]["code"] == "upstream_timeout"
                assert elapsed < 5
                r = await c.post("/api/calls", content=SDP_OK, headers={"content-type": "application/sdp"})
                assert r.status_code == 504


def test_settings_pick_the_upstream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from parley.server.settings import ServerSettings

    for name in ("OPENAI_API_KEY", "PARLEY_UPSTREAM", "PARLEY_UPSTREAM_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PARLEY_DATA_DIR", str(tmp_path))
    assert ServerSettings(_env_file=None).upstream_kind == "local"  # type: ignore[call-arg]
    assert ServerSettings(_env_file=None).database == f"sqlite+aiosqlite:///{tmp_path}/parley.db"  # type: ignore[call-arg]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    s = ServerSettings(_env_file=None)  # type: ignore[call-arg]
    assert s.upstream_kind == "openai" and s.upstream_key == "sk-from-env"
    assert "sk-from-env" not in repr(s)
    monkeypatch.setenv("PARLEY_UPSTREAM_URL", "http://127.0.0.1:8001/v1/")
    s = ServerSettings(_env_file=None)  # type: ignore[call-arg]
    assert (s.upstream_kind, s.upstream_url, s.upstream_key) == ("url", "http://127.0.0.1:8001/v1", "sk-from-env")
    monkeypatch.setenv("PARLEY_DATABASE_URL", "postgresql://u:p@db/parley")
    assert ServerSettings(_env_file=None).database == "postgresql+asyncpg://u:p@db/parley"  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="PARLEY_AUTH_TOKENS"):
        ServerSettings(_env_file=None, auth="bearer")  # type: ignore[call-arg]


def test_sdp_check_normalizes_line_endings() -> None:
    from parley.http.sdp import check_offer

    assert check_offer(SDP_OK.replace("\r\n", "\n"), 65536) == SDP_OK


async def test_unknown_route_and_method_answer_json(server: str) -> None:
    async with http(server) as c:
        r = await c.delete("/api/session")
        assert r.status_code in (404, 405) and "error" in r.json()
        r = await c.get("/api/calls", params={"limit": 0})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
        r = await c.get("/api/calls/call_x/transcript", params={"format": "pdf"})
        assert r.status_code == 422
        r = await c.post("/api/calls/call_x/events", content=b"[", headers={"content-type": "application/json"})
        assert r.status_code == 400


async def test_engine_health_is_mounted(server: str) -> None:
    async with httpx.AsyncClient() as c:
        r = await c.get(f"{server}/v1/realtime/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
