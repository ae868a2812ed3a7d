"""Telephony in shared mode (PARLEY_REDIS_URL), on a private redis-server and a fresh PostgreSQL
database: one-time stream tokens in Redis, so Twilio's voice webhook and its media WebSocket may
land on different server processes; and webhook ids that a failed attempt forgets again. Skips,
saying why, where redis-server or PostgreSQL is absent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley.server.replays import MemoryReplays
from parley.server.shared import RedisReplays, SharedHub
from parley.telephony.tokens import RedisStreamTokens, Ticket
from support.server import http, make_settings, running_server
from support.twilio import TwilioPeer, voice_webhook

TICKET = Ticket(persona="negotiator/sarah", caller="+15551234567", called="+15557654321", call_sid="CA1")


@contextlib.asynccontextmanager
async def hubs(redis_url: str, n: int = 2) -> AsyncIterator[list[SharedHub]]:
    started = [SharedHub(redis_url, prefix="tokens-test") for _ in range(n)]
    try:
        yield started
    finally:
        for hub in started:
            await hub.close()


async def test_a_stream_token_issued_by_one_process_is_taken_once_by_any(redis_url: str) -> None:
    async with hubs(redis_url) as (a, b):
        issuer = RedisStreamTokens(a.redis, a.key("twilio-stream"))
        others = [RedisStreamTokens(h.redis, h.key("twilio-stream")) for h in (a, b)]
        token = await issuer.issue(TICKET)
        assert len(token) >= 32
        # two streams presenting it at once, at either process: exactly one gets the ticket
        taken = await asyncio.gather(*(others[i % 2].take(token) for i in range(10)))
        assert taken.count(TICKET) == 1 and taken.count(None) == 9
        assert await others[1].take(None) is None and await others[1].take("made-up") is None
        assert await others[1].take("x" * 10_000) is None
        await a.redis.set(a.key("twilio-stream", "forged"), b"not a ticket")
        assert await others[1].take("forged") is None

        brief = RedisStreamTokens(a.redis, a.key("twilio-stream"), ttl=0.2)
        late = await brief.issue(TICKET)
        assert 0 < await a.redis.pttl(a.key("twilio-stream", late)) <= 200  # Redis expires it on its own
        deadline = asyncio.get_running_loop().time() + 5
        while await a.redis.exists(a.key("twilio-stream", late)):  # Redis has no event for it
            assert asyncio.get_running_loop().time() < deadline, "the token never expired"
            await asyncio.sleep(0.05)
        assert await others[1].take(late) is None


async def test_a_forgotten_webhook_id_is_acted_on_again(redis_url: str) -> None:
    memory = MemoryReplays(60)
    assert await memory.first_time("wh_1") and not await memory.first_time("wh_1")
    await memory.forget("wh_1")
    assert await memory.first_time("wh_1")
    async with hubs(redis_url) as (a, b):
        first, second = RedisReplays(a, ttl=60), RedisReplays(b, ttl=60)
        assert await first.first_time("wh_1") and not await second.first_time("wh_1")
        await first.forget("wh_1")  # the attempt at A failed: the retry reaching B is acted on
        assert await second.first_time("wh_1") and not await first.first_time("wh_1")


@pytest.mark.slow
@pytest.mark.postgres
async def test_the_voice_webhook_at_one_process_starts_a_stream_at_another(
        tmp_path: Path, redis_url: str, database: str) -> None:
    shared = {"database_url": database, "redis_url": redis_url, "session_secret": "a-shared-test-secret-0123456789",
              "recordings_dir": tmp_path / "recordings", "twilio_insecure": True, "max_concurrent_calls": 4}
    with running_server(make_settings(tmp_path / "a", **shared)) as a, \
            running_server(make_settings(tmp_path / "b", **shared)) as b:
        async with http(a) as client:
            hook = await voice_webhook(client, a, auth_token=None)
        assert hook.status == 200 and hook.stream_url, hook.body
        at_b = hook.stream_url.replace(a.replace("http://", "ws://"), b.replace("http://", "ws://"))
        assert at_b != hook.stream_url
        async with TwilioPeer.connect(at_b, hook.parameters) as peer:
            await peer.wait_for(lambda: peer.played, timeout=120)  # Sarah greets: B took A's token
            # the token was good once: the same stream parameters are now refused, at A as at B
            async with TwilioPeer.connect(hook.stream_url, hook.parameters) as again:
                await again.wait_for(lambda: again.closed is not None, timeout=30)
                assert again.closed.code == 1008 and "token" in again.closed.reason
            await peer.stop()
