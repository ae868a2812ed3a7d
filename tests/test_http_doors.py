"""Bad input at every HTTP door of both apps, tried from outside over a real socket: each gets our
JSON error (OpenAI's shape), never a 500, and a 4xx for a body we could read keeps the client's
keep-alive connection. The standalone engine and the server (with the engine mounted at /v1)."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from parley.engine.app import create_app as create_engine_app
from parley.util.serving import serve_app
from support.server import make_engine, make_settings, running_server

SDP_OK = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
          "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\na=fingerprint:sha-256 00:11\r\n")
KEY = {"Authorization": "Bearer sk-doors"}


@pytest.fixture(scope="module")
def engine_alone() -> Iterator[str]:
    with serve_app(create_engine_app(make_engine())) as url:
        yield url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = make_settings(tmp_path_factory.mktemp("doors"), rate_limit_per_minute=100_000,
                             rate_limit_burst=10_000, max_concurrent_calls=1_000)
    with running_server(settings) as url:
        yield url


def deep(depth: int) -> str:
    """A JSON object nested `depth` deep (valid JSON: only its depth is wrong)."""
    return '{"a":' * depth + "1" + "}" * depth


class Conn:
    """One keep-alive HTTP/1.1 connection (http.client reconnects silently; this notices)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.http = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)

    def post(self, path: str, body: bytes | str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        self.http.request("POST", path, body=body.encode() if isinstance(body, str) else body, headers=headers)
        response = self.http.getresponse()
        data = response.read()
        self.closed = response.will_close
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def close(self) -> None:
        self.http.close()


def assert_error(status: int, headers: dict[str, str], body: bytes, expected: int) -> dict[str, Any]:
    assert status == expected, body[:300]
    assert headers["content-type"].startswith("application/json"), headers
    error: dict[str, Any] = json.loads(body)["error"]
    assert set(error) >= {"message", "type", "param", "code"} and len(error["message"]) > 10, error
    return error


def assert_kept_then_ok(conn: Conn, path: str, body: str, headers: dict[str, str], ok: int) -> None:
    """The connection was not closed after the error, and still serves a good request."""
    assert not conn.closed
    sock = conn.http.sock
    status, _h, data = conn.post(path, body, headers)
    assert status == ok, data[:300]
    assert conn.http.sock is sock  # the same socket: nothing reconnected


# -- nesting ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1_000, 5_000])
@pytest.mark.parametrize("path", ["/v1/realtime/client_secrets", "/v1/realtime/sessions",
                                  "/v1/realtime/transcription_sessions"])
def test_deep_json_at_the_engine_is_a_400_and_the_connection_stays(engine_alone: str, path: str, depth: int) -> None:
    conn = Conn(engine_alone)
    try:
        headers = {**KEY, "Content-Type": "application/json"}
        error = assert_error(*conn.post(path, deep(depth), headers), 400)
        assert error["code"] == "invalid_json" and "deep" in error["message"]
        good = json.dumps({"session": {"type": "realtime"}} if path.endswith("client_secrets") else {})
        assert_kept_then_ok(conn, path, good, headers, 200)
    finally:
        conn.close()


def test_a_refused_session_keeps_the_connection(engine_alone: str) -> None:
    conn = Conn(engine_alone)
    try:
        headers = {**KEY, "Content-Type": "application/json"}
        error = assert_error(*conn.post("/v1/realtime/client_secrets", json.dumps(
            {"session": {"type": "realtime", "audio": {"bogus": 1}}}), headers), 400)
        assert (error["code"], error["param"]) == ("unknown_parameter", "session.audio.bogus")
        assert_kept_then_ok(conn, "/v1/realtime/client_secrets", "{}", headers, 200)
    finally:
        conn.close()


def test_json_of_a_reasonable_depth_still_reaches_the_parser(engine_alone: str) -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(20):  # a tool whose parameters nest 20 objects: deep, but a real schema
        schema = {"type": "object", "properties": {"x": schema}}
    body = {"session": {"type": "realtime", "tools": [{"type": "function", "name": "f", "parameters": schema}]}}
    conn = Conn(engine_alone)
    try:
        status, _h, data = conn.post("/v1/realtime/client_secrets", json.dumps(body),
                                     {**KEY, "Content-Type": "application/json"})
        assert status == 200, data[:300]
    finally:
        conn.close()


@pytest.mark.parametrize("depth", [1_000, 5_000])
def test_deep_json_at_the_servers_calls_is_a_400(server: str, depth: int) -> None:
    conn = Conn(server)
    try:
        headers = {"Content-Type": "application/json"}
        error = assert_error(*conn.post("/api/calls", json.dumps({"sdp": SDP_OK, "persona": "x"})[:-1]
                                        + ', "deep": ' + deep(depth) + "}", headers), 400)
        assert error["code"] == "invalid_json"
        assert_error(*conn.post("/api/calls", "[" * depth + "]" * depth, headers), 400)
        assert_kept_then_ok(conn, "/api/session", "{}", headers, 200)
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["/api/session", "/api/calls/call_x/events", "/api/login", "/api/copilot/answer"])
def test_deep_json_at_the_servers_model_bodies_is_read_by_the_same_reader(server: str, path: str) -> None:
    conn = Conn(server)
    try:
        error = assert_error(*conn.post(path, deep(2_000), {"Content-Type": "application/json"}), 400)
        assert error["code"] == "invalid_json" and "deeper than 64" in error["message"]
        assert_kept_then_ok(conn, "/api/session", "{}", {"Content-Type": "application/json"}, 200)
    finally:
        conn.close()


@pytest.mark.parametrize("depth", [1_000, 5_000])
def test_deep_json_in_the_mounted_engines_session_part_is_a_400(server: str, depth: int) -> None:
    conn = Conn(server)
    try:
        status, _h, data = conn.post("/api/session", "{}", {"Content-Type": "application/json"})
        assert status == 200
        key = json.loads(data)["value"]
        boundary = "doorsboundary"
        form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"sdp\"\r\n\r\n{SDP_OK}\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"session\"\r\n"
                f"Content-Type: application/json\r\n\r\n{deep(depth)}\r\n--{boundary}--\r\n")
        error = assert_error(*conn.post("/v1/realtime/calls", form, {
            "Authorization": f"Bearer {key}", "Content-Type": f"multipart/form-data; boundary={boundary}"}), 400)
        assert error["code"] == "invalid_json" and error["param"] == "session"
        assert_kept_then_ok(conn, "/api/session", "{}", {"Content-Type": "application/json"}, 200)
    finally:
        conn.close()


# -- size ------------------------------------------------------------------------------------------


def test_the_engine_refuses_a_10_mb_body(engine_alone: str) -> None:
    conn = Conn(engine_alone)
    big = json.dumps({"session": {"type": "realtime", "instructions": "x" * 10_000_000}})
    try:
        error = assert_error(*conn.post("/v1/realtime/client_secrets", big,
                                        {**KEY, "Content-Type": "application/json"}), 413)
        assert error["code"] == "body_too_large"
    finally:
        conn.close()


def test_the_engine_refuses_a_10_mb_streamed_body(engine_alone: str) -> None:
    conn = Conn(engine_alone)
    try:
        # Chunked, valid JSON: no Content-Length to refuse it by, nothing else wrong with it.
        chunks = iter([b'{"session": {"type": "realtime", "instructions": "', *[b"x" * 100_000] * 100, b'"}}'])
        conn.http.request("POST", "/v1/realtime/client_secrets", body=chunks, encode_chunked=True,
                          headers={**KEY, "Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        response = conn.http.getresponse()
        assert_error(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read(), 413)
    finally:
        conn.close()


# -- SDP -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sdp", ["v=0\r\n\x00\x00m=audio", SDP_OK.replace("s=-", "s=\x07"), "v=1\r\n" + SDP_OK[5:],
                                 SDP_OK.replace("m=audio", "m=video"), "x" * 70_000])
def test_the_engine_checks_the_sdp_offer(engine_alone: str, sdp: str) -> None:
    conn = Conn(engine_alone)
    try:
        status, headers, body = conn.post("/v1/realtime/calls", sdp, {**KEY, "Content-Type": "application/sdp"})
        error = assert_error(status, headers, body, 413 if len(sdp) > 65_536 else 400)
        assert error["param"] == "sdp"
    finally:
        conn.close()


def test_the_mounted_engine_checks_the_sdp_offer(server: str) -> None:
    conn = Conn(server)
    try:
        status, _h, data = conn.post("/api/session", "{}", {"Content-Type": "application/json"})
        assert status == 200
        key = json.loads(data)["value"]
        error = assert_error(*conn.post("/v1/realtime/calls", "v=0\r\n\x00\x00m=audio", {
            "Authorization": f"Bearer {key}", "Content-Type": "application/sdp"}), 400)
        assert error["code"] == "invalid_sdp"
    finally:
        conn.close()


# -- malformed requests, refused by the HTTP server itself ------------------------------------------


def raw_request(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):  # the server closes: a broken request ends the connection
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("request_bytes", [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad\x01Name: 1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    b"NOT A REQUEST\r\n\r\n",
])
def test_a_malformed_request_gets_our_json_error(server: str, engine_alone: str, request_bytes: bytes) -> None:
    for url in (server, engine_alone):
        status, headers, body = raw_request(url, request_bytes)
        error = assert_error(status, headers, body, 400)
        assert error["code"] == "invalid_http_request"
        assert headers["connection"] == "close" and int(headers["content-length"]) == len(body)


def test_both_uvicorn_protocols_answer_malformed_requests_with_json(tmp_path: Path) -> None:
    from parley.http.malformed import JsonErrorsH11Protocol, JsonErrorsHttpToolsProtocol

    for protocol in (JsonErrorsH11Protocol, JsonErrorsHttpToolsProtocol):
        with serve_app(create_engine_app(make_engine()), http=protocol) as url:
            status, headers, body = raw_request(url, b"GET / HTTP/1.1\r\nHost: x\r\nNo colon\r\n\r\n")
        assert_error(status, headers, body, 400)
