"""The connection to Redis every shared-mode part uses, this process's identity and its heartbeat.

The heartbeat is a key with a TTL (`<prefix>:proc:<id>`) renewed every third of the lease: when the
process dies, it lapses, and with it every lease the process held (its call slots, and in a later
step its calls' owner leases). Renewals run in one task for all of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0


class SharedStateError(RuntimeError):
    """Shared mode cannot start (Redis missing or unreachable): refuse, never fall back."""


def _connect(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=CONNECT_TIMEOUT * 2,
                                   health_check_interval=30)


def _where(url: str) -> str:
    """The URL without its password, for messages."""
    from redis.connection import parse_url

    opts: dict[str, Any] = parse_url(url)
    if "path" in opts:
        return f"unix://{opts['path']}"
    return f"{url.split('://', 1)[0]}://{opts.get('host', 'localhost')}:{opts.get('port', 6379)}/{opts.get('db', 0)}"


async def check_redis(url: str) -> None:
    """Raise SharedStateError with a clear message unless Redis answers at `url`."""
    try:
        client = _connect(url)
    except ValueError as exc:
        raise SharedStateError(f"PARLEY_REDIS_URL is not a Redis URL: {exc}") from None
    try:
        await asyncio.wait_for(client.ping(), CONNECT_TIMEOUT * 2)
    except (RedisError, OSError, TimeoutError) as exc:
        raise SharedStateError(f"shared mode: Redis at {_where(url)} is unreachable ({type(exc).__name__}: {exc}); "
                               "it is required with PARLEY_REDIS_URL (no fallback to per-process state)") from None
    finally:
        await client.aclose()


class SharedHub:
    """One process's link to the shared state: the Redis client, its id, its heartbeat and renewals."""

    def __init__(self, url: str, *, prefix: str = "parley", lease_seconds: float = 30.0) -> None:
        self.url, self.prefix, self.lease_seconds = url, prefix, lease_seconds
        self.redis = _connect(url)
        # Names this process in leases and call rows (host, pid, and a random part for pid reuse).
        self.process_id = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"
        self._renewals: list[Callable[[], Awaitable[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self.renewal_errors = 0

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def process_key(self, process_id: str) -> str:
        return self.key("proc", process_id)

    def on_renew(self, renew: Callable[[], Awaitable[None]]) -> None:
        """Run `renew` with every heartbeat (e.g. extending the leases a part holds)."""
        self._renewals.append(renew)

    async def start(self) -> None:
        await check_redis(self.url)
        await self._beat()
        self._task = asyncio.create_task(self._run(), name="shared-heartbeat")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.redis.delete(self.process_key(self.process_id))
        except (RedisError, OSError):
            pass  # Redis gone: the key lapses by itself
        await self.redis.aclose()

    async def put_json(self, key: str, value: dict[str, Any], ttl: float) -> None:
        await self.redis.set(key, json.dumps(value), px=max(1, int(ttl * 1000)))

    async def get_json(self, key: str) -> dict[str, Any] | None:
        raw = await self.redis.get(key)
        return json.loads(raw) if raw is not None else None

    async def delete(self, key: str) -> None:
        await self.redis.delete(key)

    async def alive(self, process_ids: list[str]) -> set[str]:
        """Which of these processes still beat."""
        if not process_ids:
            return set()
        found = await self.redis.mget([self.process_key(p) for p in process_ids])
        return {p for p, v in zip(process_ids, found, strict=True) if v is not None}

    async def _beat(self) -> None:
        await self.redis.set(self.process_key(self.process_id), "1", px=int(self.lease_seconds * 1000))
        for renew in self._renewals:
            await renew()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self._beat()
            except (RedisError, OSError) as exc:
                # Counted and logged; the next beat tries again well before the leases lapse.
                self.renewal_errors += 1
                log.warning("shared mode: renewing leases in Redis failed: %s", exc)
