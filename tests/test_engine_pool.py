"""A pool of local engines: two real `parley engine` processes registered in a private redis-server,
a `parley serve` in pool mode (PARLEY_UPSTREAM_POOL) on PostgreSQL, aiortc peers.

New calls go to the less loaded engine; each call's id names its engine, so its sideband and its
hangup reach that engine; SIGTERM drains an engine (new calls refused with 503 `engine_draining`,
new calls through the server go to the other, its live call goes on until hung up, then it exits).
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.protocol import ids
from support.cluster import Cluster, EngineProcess
from support.rtc import RtcPeer, of_type
from support.server import eventually, say_text, wait_done


def test_an_engines_ids_name_it() -> None:
    call, key = ids.rtc_call_id("b7"), ids.client_secret("b7")
    assert call.startswith("rtc_b7_") and key.startswith("ek_b7_")
    assert ids.engine_of(call) == ids.engine_of(key) == "b7"
    assert ids.engine_of(ids.rtc_call_id()) is None and ids.engine_of(ids.client_secret()) is None
    assert ids.engine_of("rtc_UPPER_" + "x" * 22) is None and ids.engine_of("rtc_b7_short") is None


@pytest.fixture
async def engines(tmp_path: Path, redis_url: str) -> AsyncIterator[dict[str, EngineProcess]]:
    procs: dict[str, EngineProcess] = {}
    try:
        for name in ("a", "b"):
            proc = procs[name] = EngineProcess(tmp_path / f"engine-{name}", PARLEY_ENGINE_REDIS_URL=redis_url,
                                               PARLEY_ENGINE_POOL_ID=name, PARLEY_ENGINE_HEARTBEAT_SECONDS="0.3",
                                               PARLEY_ENGINE_DRAIN_SECONDS="60")
        for proc in procs.values():
            await proc.wait_healthy()
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


async def _registry(redis_url: str) -> dict[str, dict[str, Any]]:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(redis_url)
    try:
        found = {}
        for name in ("a", "b"):
            raw = await r.get(f"parley:engine:{name}")
            if raw is not None:
                found[name] = json.loads(raw)
        return found
    finally:
        await r.aclose()


async def _load(redis_url: str, name: str, active: int) -> None:
    async def reported() -> bool:
        return (await _registry(redis_url)).get(name, {}).get("active") == active

    await eventually(reported, timeout=20, interval=0.1)


async def _upstream_id(database: str, call_id: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(database)
    try:
        return str(await conn.fetchval("select upstream_call_id from calls where id = $1", call_id))
    finally:
        await conn.close()


async def _server_call(c: httpx.AsyncClient, url: str) -> tuple[RtcPeer, str]:
    peer = RtcPeer()
    r = await c.post(f"{url}/api/calls", json={"sdp": await peer.offer(), "persona": "negotiator/sarah"})
    assert r.status_code == 201, r.text
    await peer.answer(r.json()["sdp"])
    await peer.wait_for(of_type("session.created"))
    return peer, r.json()["call_id"]


async def _engine_call(c: httpx.AsyncClient, engine: EngineProcess) -> tuple[RtcPeer, httpx.Response]:
    """A call made at the engine itself (not through the server): load on it."""
    peer = RtcPeer()
    r = await c.post(f"{engine.url}/realtime/calls", headers={"Authorization": "Bearer sk-test"},
                     files={"sdp": (None, await peer.offer(), "application/sdp"),
                            "session": (None, json.dumps({"type": "realtime"}), "application/json")})
    if r.status_code == 201:
        await peer.answer(r.text)
    return peer, r


@pytest.mark.postgres
@pytest.mark.slow
async def test_calls_go_to_the_less_loaded_engine_and_a_draining_one_gets_none(
        tmp_path: Path, redis_url: str, database: str, engines: dict[str, EngineProcess]) -> None:
    a, b = engines["a"], engines["b"]
    cluster = Cluster(tmp_path, database, redis_url, 1, PARLEY_UPSTREAM="pool", PARLEY_UPSTREAM_POOL="1",
                      PARLEY_MAX_CONCURRENT_CALLS="10", PARLEY_RATE_LIMIT_BURST="20")
    peers: list[RtcPeer] = []
    try:
        await cluster.wait_healthy()
        url = cluster.urls[0]
        registry = await _registry(redis_url)
        assert set(registry) == {"a", "b"} and registry["a"]["url"] == a.url, registry
        async with httpx.AsyncClient(timeout=60) as c:
            # engine a carries two calls of its own; the server's next two go to b
            for _ in range(2):
                peer, r = await _engine_call(c, a)
                assert r.status_code == 201, r.text
                peers.append(peer)
            await _load(redis_url, "a", 2)
            # the server reads the registry every 0.5 s: let it read a's beat (three reads)
            await asyncio.sleep(1.5)
            held: dict[str, tuple[RtcPeer, str]] = {}
            for k in range(2):
                peer, call_id = await _server_call(c, url)
                peers.append(peer)
                upstream = await _upstream_id(database, call_id)
                assert ids.engine_of(upstream) == "b", (k, upstream)
                held[f"b{k}"] = (peer, call_id)
            await _load(redis_url, "b", 2)
            # a browser-direct call's key is minted at an engine, and its calls_url is that engine's
            r = await c.post(f"{url}/api/session", json={"persona": "negotiator/sarah"})
            assert r.status_code == 200, r.text
            engine = ids.engine_of(r.json()["value"])
            assert engine in ("a", "b") and r.json()["calls_url"] == f"{engines[engine].url}/realtime/calls", r.json()
            # the sideband reaches the call's engine: a typed turn on a call at b is recorded
            peer, call_id = held["b0"]
            await wait_done(peer, say_text(peer, "Hi, my bill is too high."), timeout=90)

            # SIGTERM b: it drains
            b.proc.send_signal(signal.SIGTERM)

            async def draining() -> bool:
                return bool((await _registry(redis_url)).get("b", {}).get("draining"))

            await eventually(draining, timeout=20, interval=0.05)
            _, refused = await _engine_call(c, b)
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "engine_draining", refused.text
            for _ in range(2):  # a has 2 and b 2, but b is draining: the new ones go to a
                peer, new_id = await _server_call(c, url)
                peers.append(peer)
                assert ids.engine_of(await _upstream_id(database, new_id)) == "a"
            # b's live calls go on
            peer, call_id = held["b1"]
            await wait_done(peer, say_text(peer, "Can you do better than that?"), timeout=90)
            assert b.proc.poll() is None
            # once they are hung up (through the server: their ids name b), b exits
            for _peer, call_id in held.values():
                r = await c.post(f"{url}/api/calls/{call_id}/hangup")
                assert r.status_code == 200 and r.json()["end_reason"] == "hangup", r.text
            code = await asyncio.to_thread(b.proc.wait, 30)
            assert code in (0, -signal.SIGTERM), code
            assert "b" not in await _registry(redis_url)
            peer, new_id = await _server_call(c, url)
            peers.append(peer)
            assert ids.engine_of(await _upstream_id(database, new_id)) == "a"
    finally:
        for peer in peers:
            await peer.close()
        cluster.stop()
