"""Shared mode: N `parley serve` processes sharing one PostgreSQL and one Redis (real servers).

The key test starts three real server processes on three loopback ports, the local engine as each
one's upstream, on a fresh PostgreSQL database and a private redis-server: a burst of 1,000
/api/session + /api/calls requests for one user, spread over the three, admits exactly the rate
limit and, of the calls among them, exactly the concurrent-call cap; a cookie signed at one process
is valid at the others; a key minted at A is reported at B; a recording uploaded at A is served at C.
Skips, saying why, where redis-server or PostgreSQL is absent.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from parley.server.costs import RedisDayCosts
from parley.server.db import Store, schema_head
from parley.server.settings import ServerSettings, normalize_database_url
from parley.server.shared import (
    RedisLimiter,
    RedisReplays,
    RedisSlots,
    SharedHub,
    SharedStateError,
    check_redis,
)
from parley.util.serving import free_port
from support.cluster import SECRET, Cluster, command, serve_env
from support.server import eventually

pytestmark = [pytest.mark.postgres]

BURST = 40  # the rate limit: 40 requests in any 80-minute window
CALL_CAP = 3


# -- the Redis parts, in process --------------------------------------------------------------------


async def test_a_burst_over_three_limiters_admits_exactly_the_limit(redis_url: str) -> None:
    hubs = [SharedHub(redis_url, prefix="t") for _ in range(3)]
    for hub in hubs:
        await hub.start()
    try:
        limiters = [RedisLimiter(hub, "calls", 1.0, 25) for hub in hubs]
        waits = await asyncio.gather(*(limiters[i % 3].acquire("alice") for i in range(300)))
        assert sum(w is None for w in waits) == 25
        assert all(w is not None and 0 < w <= 25 * 60 for w in waits if w is not None)
        assert await limiters[0].acquire("bob") is None  # per key
    finally:
        for hub in hubs:
            await hub.close()


async def test_call_slots_are_leases_that_lapse_when_their_holder_dies(redis_url: str) -> None:
    holder, other = SharedHub(redis_url, lease_seconds=1.0), SharedHub(redis_url, lease_seconds=1.0)
    await holder.start()
    await other.start()
    try:
        mine, theirs = RedisSlots(holder), RedisSlots(other)
        results = await asyncio.gather(*((mine if i % 2 else theirs).try_take("alice", f"call_{i}", 2)
                                         for i in range(20)))
        assert sum(results) == 2
        for i, ok in enumerate(results):
            if ok:  # released at the other process than the one that took it
                await (theirs if i % 2 else mine).release(f"call_{i}")
        assert await mine.count("alice") == 0
        assert await theirs.try_take("alice", "theirs", 2) and await mine.try_take("alice", "mine", 2)
        assert await mine.count("alice") == await theirs.count("alice") == 2 and await mine.count("bob") == 0
        await asyncio.sleep(1.5)  # past the lease: the heartbeats renewed both
        assert await theirs.holds("mine") and await mine.holds("theirs")
        assert not await theirs.try_take("alice", "call_x", 2)
        # the holder of "mine" dies (its heartbeat stops, nobody releases): its slot lapses by itself
        assert holder._task is not None
        holder._task.cancel()
        started = time.monotonic()
        while not await theirs.try_take("alice", "call_z", 2):
            assert time.monotonic() - started < 5, "the dead holder's slot did not lapse"
            await asyncio.sleep(0.05)
        assert not await theirs.holds("mine") and await theirs.holds("theirs")
        assert await theirs.count("alice") == 2  # "theirs" and "call_z"
    finally:
        await holder.close()
        await other.close()


async def test_a_webhook_id_is_acted_on_once_across_processes(redis_url: str) -> None:
    a, b = SharedHub(redis_url, prefix="replays-test"), SharedHub(redis_url, prefix="replays-test")
    try:
        first, second = RedisReplays(a, ttl=0.5), RedisReplays(b, ttl=0.5)
        # the same delivery reaching both processes at once: exactly one acts on it
        results = await asyncio.gather(*(guard.first_time("wh_1") for guard in (first, second) * 5))
        assert sorted(results) == [False] * 9 + [True]
        assert await second.first_time("wh_2") and not await first.first_time("wh_2")
        deadline = time.monotonic() + 5
        while not await first.first_time("wh_1"):  # remembered for the window only
            assert time.monotonic() < deadline, "the webhook id was never forgotten"
            await asyncio.sleep(0.05)
    finally:
        await a.close()
        await b.close()


def _samples(text: str, name: str) -> dict[str, float]:
    """{labels: value} of one metric's samples in a Prometheus page."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            found[key[len(name):]] = float(value)
    return found


async def test_metrics_of_every_process_are_on_each_ones_page(redis_url: str) -> None:
    from parley.server.metrics import Metrics
    from parley.server.shared.metrics import SharedMetrics

    hubs = [SharedHub(redis_url, prefix="m") for _ in range(2)]
    metrics = [Metrics(), Metrics()]
    shared = [SharedMetrics(hub, m, interval=0.2) for hub, m in zip(hubs, metrics, strict=True)]
    for hub, sm in zip(hubs, shared, strict=True):
        await hub.start()
        await sm.start()
    try:
        metrics[0].inc("parley_calls_total", kind="server")
        metrics[0].inc("parley_calls_total", kind="server")
        metrics[1].inc("parley_calls_total", kind="server")
        metrics[1].inc("parley_sessions_total")
        metrics[1].observe("parley_upstream_seconds", 0.02, operation="calls")
        await shared[1].publish()
        page = await shared[0].render()
        calls = _samples(page, "parley_calls_total")
        p0, p1 = hubs[0].process_id, hubs[1].process_id
        assert calls == {f'{{kind="server",process="{p0}"}}': 2.0, f'{{kind="server",process="{p1}"}}': 1.0}, calls
        assert sum(calls.values()) == 3  # summable over `process`
        assert _samples(page, "parley_sessions_total") == {f'{{process="{p0}"}}': 0.0, f'{{process="{p1}"}}': 1.0}
        assert _samples(page, "parley_upstream_seconds_count") == {f'{{operation="calls",process="{p1}"}}': 1.0}
        # a process that stops drops out once its snapshot lapses
        await shared[1].stop()
        await hubs[1].close()

        async def gone() -> bool:
            return p1 not in await shared[0].render()

        await eventually(gone, timeout=10, interval=0.1)
    finally:
        await shared[0].stop()
        await hubs[0].close()


async def test_daily_costs_are_shared_and_filled_from_the_database(redis_url: str, database: str) -> None:
    store = Store(normalize_database_url(database))
    await store.start()
    hubs = [SharedHub(redis_url), SharedHub(redis_url)]
    try:
        for hub in hubs:
            await hub.start()
        await store.create_call(id="call_1", user_id="alice", kind="server", persona="p", persona_name="P", model="m")
        await store.add_usage("call_1", kind="response", ref_id="r1", persona=None, model="m", status="completed",
                              input_tokens=1, output_tokens=1, usage=None, cost_usd=0.5)
        a, b = RedisDayCosts(hubs[0], store), RedisDayCosts(hubs[1], store)
        assert await b.spent("alice") == pytest.approx(0.5)  # filled from the database
        await a.record("alice", "call_2", 1.25)
        await a.record("alice", "call_2", 1.5)  # a call's running total, not an increment
        assert await b.spent("alice") == pytest.approx(2.0)
        await a.record("alice", "call_1", 0.75)
        assert await b.spent("alice") == pytest.approx(2.25)
        assert await b.spent("bob") == 0
    finally:
        for hub in hubs:
            await hub.close()
        await store.close()


# -- refusals at start ------------------------------------------------------------------------------


def _settings(tmp_path: Path, **values: Any) -> ServerSettings:
    return ServerSettings(_env_file=None, upstream="local", data_dir=tmp_path, openai_api_key=None,  # type: ignore[call-arg]
                          **values)


def test_shared_mode_refuses_sqlite_a_missing_secret_and_a_private_recordings_dir(tmp_path: Path) -> None:
    pg = "postgresql://postgres@/test?host=/var/run/postgresql"
    shared = {"redis_url": "unix:///nonexistent/redis.sock", "session_secret": SECRET,
              "recordings_dir": tmp_path / "rec", "database_url": pg}
    assert _settings(tmp_path, **shared).shared
    assert not _settings(tmp_path).shared  # the default: one process, SQLite, no Redis
    for missing, message in (("database_url", "needs PostgreSQL"), ("session_secret", "PARLEY_SESSION_SECRET"),
                             ("recordings_dir", "PARLEY_RECORDINGS_DIR")):
        with pytest.raises(ValidationError, match=message):
            _settings(tmp_path, **{k: v for k, v in shared.items() if k != missing})
    with pytest.raises(ValidationError, match="redis://"):
        _settings(tmp_path, **{**shared, "redis_url": "http://localhost:6379"})


async def test_unreachable_redis_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SharedStateError, match="unreachable"):
        await check_redis(f"unix://{tmp_path}/no-redis.sock")


def test_parley_serve_refuses_to_start_without_its_redis(tmp_path: Path) -> None:
    env = serve_env(tmp_path, "postgresql://postgres@/test?host=/var/run/postgresql", f"unix://{tmp_path}/none.sock")
    proc = subprocess.run([*command(), "serve", "--port", str(free_port())], env=env, cwd=tmp_path,
                          capture_output=True, timeout=120)
    assert proc.returncode != 0
    assert b"unreachable" in proc.stderr and b"no fallback" in proc.stderr
    env["PARLEY_DATABASE_URL"] = f"sqlite:///{tmp_path}/parley.db"
    proc = subprocess.run([*command(), "serve", "--port", str(free_port())], env=env, cwd=tmp_path,
                          capture_output=True, timeout=120)
    assert proc.returncode != 0 and b"needs PostgreSQL" in proc.stderr


# -- three real server processes --------------------------------------------------------------------


@pytest.fixture
async def cluster(tmp_path: Path, database: str, redis_url: str) -> AsyncIterator[Cluster]:
    # All three start at once on an empty database: the migration lock makes them take turns.
    c = Cluster(tmp_path, database, redis_url, PARLEY_RATE_LIMIT_BURST=str(BURST),
                PARLEY_RATE_LIMIT_PER_MINUTE="0.5", PARLEY_MAX_CONCURRENT_CALLS=str(CALL_CAP))
    try:
        await c.wait_healthy()
        yield c
    finally:
        c.stop()


def _code(r: httpx.Response) -> str:
    if r.status_code < 400:
        return "ok"
    error = r.json().get("error") or {}
    return str(error.get("code") or error.get("type"))


async def test_three_processes_share_limits_cookies_calls_and_recordings(cluster: Cluster, database: str) -> None:
    a, b, c = cluster.urls
    # one client per user: its cookie jar sends the cookie to every port of 127.0.0.1
    async with httpx.AsyncClient(timeout=60) as client, httpx.AsyncClient(timeout=60) as bob:
        # a cookie signed at A is valid at B and C: the same user everywhere
        me = await client.get(f"{a}/api/me")
        user = me.json()["user_id"]
        assert "parley_client" in client.cookies
        for url in (b, c):
            assert (await client.get(f"{url}/api/me")).json()["user_id"] == user

        # the burst: 1,000 requests for one user over the three processes
        gate = asyncio.Semaphore(48)

        async def one(i: int) -> httpx.Response:
            url = cluster.urls[i % 3]
            async with gate:
                if i % 2:
                    return await client.post(f"{url}/api/session", json={})
                return await client.post(f"{url}/api/calls", json={"sdp": "v=0\r\nnot an offer"})

        responses = await asyncio.gather(*(one(i) for i in range(1000)))
        codes = Counter(_code(r) for r in responses)
        limited = [r for r in responses if _code(r) == "rate_limited"]
        assert sum(n for code, n in codes.items() if code != "rate_limited") == BURST, codes
        assert len(limited) == 1000 - BURST and all(r.status_code == 429 for r in limited)
        assert all(int(r.headers["retry-after"]) >= 1 for r in limited)
        # of the keys minted (each holds a call slot until used or expired), exactly the cap, across processes
        sessions = [r for r in responses if r.request.url.path == "/api/session" and r.status_code == 200]
        assert len(sessions) == CALL_CAP, codes
        assert codes["too_many_calls"] + codes["invalid_sdp"] + CALL_CAP == BURST, codes
        by_process = Counter(str(r.request.url).split("/api")[0] for r in limited)
        assert len(by_process) == 3  # each process refused its share

        # a key minted at one process, reported at another: the call goes on record there
        minted = sessions[0].json()
        minted_at = str(sessions[0].request.url).split("/api")[0]
        elsewhere = [u for u in cluster.urls if u != minted_at]
        report = {"events": [{"type": "conversation.item.added", "previous_item_id": None,
                              "item": {"id": "item_1", "type": "message", "role": "user", "status": "completed",
                                       "content": [{"type": "input_text", "text": "hi"}]}}]}
        r = await client.post(f"{elsewhere[0]}{minted['events_url']}", json=report)
        assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
        report2 = {"events": [{"type": "conversation.item.added", "previous_item_id": "item_1",
                               "item": {"id": "item_2", "type": "message", "role": "user", "status": "completed",
                                        "content": [{"type": "input_text", "text": "still me"}]}}]}
        r = await client.post(f"{elsewhere[1]}{minted['events_url']}", json=report2)
        assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
        # and back at the process that minted it, which must not take its own copy for current
        report3 = {"events": [{"type": "conversation.item.added", "previous_item_id": "item_2",
                               "item": {"id": "item_3", "type": "message", "role": "user", "status": "completed",
                                        "content": [{"type": "input_text", "text": "and again"}]}}]}
        r = await client.post(f"{minted_at}{minted['events_url']}", json=report3)
        assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
        call = (await client.get(f"{minted_at}/api/calls/{minted['call_id']}")).json()
        assert [i["text"] for i in call["transcript"]] == ["hi", "still me", "and again"]

        # a recording uploaded at A is served at C
        audio = bytes(range(256)) * 20
        call_url = f"/api/calls/{minted['call_id']}"
        r = await client.post(f"{a}{call_url}/audio", content=audio, headers={"Content-Type": "audio/webm"})
        assert r.status_code == 200, r.text
        got = await client.get(f"{c}{call_url}/audio")
        assert got.status_code == 200 and got.content == audio
        assert (await client.get(f"{b}{call_url}")).json()["has_audio"] is True

        # hanging up at another process frees the slot for all: a new key for a second user fits
        # the cap again (the first user's rate limit is spent)
        assert (await bob.get(f"{b}/api/me")).json()["user_id"] != user
        keys = [await bob.post(f"{u}/api/session", json={}) for u in (a, b, c, a)]
        assert [k.status_code for k in keys] == [200, 200, 200, 429] and _code(keys[3]) == "too_many_calls"
        first = keys[0].json()["call_id"]
        r = await bob.post(f"{c}/api/calls/{first}/hangup")
        assert r.status_code == 200 and r.json()["status"] == "ended", r.text
        assert (await bob.post(f"{b}/api/session", json={})).status_code == 200

        # /metrics at any process: every process's series, labelled, summing to the cluster's counts
        minted_keys = len(sessions) + 4  # the first user's keys and bob's (one refused above: not minted)

        async def counted() -> dict[str, float] | None:
            found = _samples((await client.get(f"{c}/metrics")).text, "parley_sessions_total")
            return found if len(found) == 3 and sum(found.values()) == minted_keys else None

        try:
            per_process = await eventually(counted, timeout=15, interval=0.2)
        except TimeoutError:
            per_process = _samples((await client.get(f"{c}/metrics")).text, "parley_sessions_total")
        assert len(per_process) == 3 and sum(per_process.values()) == minted_keys, per_process

    import asyncpg

    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("select version_num from alembic_version") == schema_head()
        owners = await conn.fetch("select owner from calls where id = $1", minted["call_id"])
        assert owners[0]["owner"]  # the row names the process that holds it
    finally:
        await conn.close()
