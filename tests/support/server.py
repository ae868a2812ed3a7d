"""Running the Parley server in tests: a real server on loopback, the real local engine as its
upstream (mounted in process, or by URL), a real SQLite file (or PostgreSQL), aiortc peers."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx

from parley.apps.local import local_engine
from parley.engine.app import Engine, EngineSettings
from parley.engine.speech.local import LocalSpeech
from parley.server.app import create_app
from parley.server.settings import ServerSettings
from parley.util.serving import serve_app
from support.rtc import RtcPeer, of_type


@functools.cache
def shared_speech() -> LocalSpeech:
    """The speech models, loaded once per test process and shared by every engine."""
    speech = LocalSpeech()
    speech.warm_up()
    return speech


def make_engine(**settings: Any) -> Engine:
    return local_engine(EngineSettings(_env_file=None, ice_hosts=["127.0.0.1"], warm_up=False,  # type: ignore[call-arg]
                                 **settings), speech=shared_speech())


def make_settings(data_dir: Path, **overrides: Any) -> ServerSettings:
    """Server settings for a test: local upstream, a SQLite file in `data_dir`, no .env, no env key."""
    values: dict[str, Any] = {"upstream": "local", "data_dir": data_dir, "openai_api_key": None}
    values.update(overrides)
    return ServerSettings(_env_file=None, **values)  # type: ignore[call-arg]


@contextmanager
def running_server(settings: ServerSettings, *, engine: Engine | None = None) -> Iterator[str]:
    with running_app(settings, engine=engine) as (url, _app):
        yield url


@contextmanager
def running_app(settings: ServerSettings, *, engine: Engine | None = None) -> Iterator[tuple[str, Any]]:
    """The server on a free loopback port: (base URL, the FastAPI app, for fault injection)."""
    engine = engine if engine is not None or settings.upstream_kind != "local" else make_engine()
    app = create_app(settings, engine=engine)
    with serve_app(app) as url:
        yield url, app


def http(url: str, **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=30, **kw)


async def start_call(client: httpx.AsyncClient, url: str = "", persona: str = "negotiator/sarah") -> tuple[RtcPeer, str]:
    """A call through POST {url}/api/calls with an aiortc peer, connected; (peer, call id). The caller
    closes the peer."""
    peer = RtcPeer()
    try:
        r = await client.post(f"{url}/api/calls", json={"sdp": await peer.offer(), "persona": persona})
        assert r.status_code == 201, r.text
        body = r.json()
        assert r.headers["location"] == f"/api/calls/{body['call_id']}"
        await peer.answer(body["sdp"])
        await peer.wait_for(of_type("session.created"))
    except BaseException:
        await peer.close()
        raise
    return peer, body["call_id"]


@asynccontextmanager
async def server_call(client: httpx.AsyncClient, persona: str = "negotiator/sarah") -> AsyncIterator[tuple[RtcPeer, str]]:
    """A call through POST /api/calls with an aiortc peer; yields (peer, call id) once connected."""
    peer, call_id = await start_call(client, persona=persona)
    try:
        yield peer, call_id
    finally:
        await peer.close()


def say_text(peer: RtcPeer, text: str) -> int:
    """Type a user turn on the data channel and ask for a response; the index to wait from."""
    start = len(peer.events)
    peer.send({"type": "conversation.item.create",
               "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
    peer.send({"type": "response.create"})
    return start


async def wait_done(peer: RtcPeer, start: int, timeout: float = 60) -> dict[str, Any]:
    """The next response.done from `start` on, after its audio finished playing."""
    done = await peer.wait_for(of_type("response.done"), timeout=timeout, start=start)
    rid = done["response"]["id"]
    await peer.wait_for(lambda e: e["type"] == "output_audio_buffer.stopped" and e.get("response_id") == rid,
                        timeout=timeout, start=start)
    return done


async def call_json(client: httpx.AsyncClient, call_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/calls/{call_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def eventually(check: Any, timeout: float = 10.0, interval: float = 0.1) -> Any:
    """Poll an async `check` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s (last: {value!r})")
        await asyncio.sleep(interval)


def conversation(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(item id, role) in conversation order, as the caller's data channel placed them."""
    order: list[str] = []
    roles: dict[str, str] = {}
    for e in events:
        if e["type"] != "conversation.item.added":
            continue
        item, previous = e["item"], e.get("previous_item_id")
        if item["id"] in roles:
            continue
        roles[item["id"]] = item.get("role") or ("tool" if item["type"] == "function_call_output" else "assistant")
        order.insert(order.index(previous) + 1 if previous in order else len(order) if previous else 0, item["id"])
    return [(i, roles[i]) for i in order]
