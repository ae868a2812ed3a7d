"""A pool of local engines as the upstream (PARLEY_UPSTREAM_POOL=1 with PARLEY_REDIS_URL).

Each `parley engine` of the pool beats in Redis with its load (`parley.engine.pool`). This process
reads the registry every `refresh` seconds into memory; a new call, key or session goes to the
least-loaded live engine that is not draining and is below the thresholds (active sessions, CPU).
The calls this process sent since an engine's last beat count towards its load, so a burst between
two beats is spread rather than piled on the engine that looked idlest.

A call's later requests (its sideband, hangup) go to the engine its id names (`rtc_<engine>_...`,
`parley.protocol.ids.engine_of`): the engine's URL is in the registry already in memory, so no
lookup is made per call. An engine that stops beating drops out when its key lapses (three beats).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from parley.protocol.ids import engine_of

log = logging.getLogger(__name__)

PICK_SECONDS = 5.0  # a call sent to an engine counts towards its load until its beat does, at most this


@dataclass(frozen=True)
class EngineInfo:
    id: str
    url: str
    active: int
    cpu: float
    draining: bool
    at: float  # its clock when it beat (for the picks made since)


class NoEngine(Exception):
    """No live engine of the pool is below the thresholds."""


class EnginePool:
    def __init__(self, redis_url: str, prefix: str, *, max_calls: int, max_cpu: float,
                 refresh: float = 0.5) -> None:
        import redis.asyncio as aioredis

        self.redis = aioredis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=10)
        self.prefix, self.max_calls, self.max_cpu, self.refresh_seconds = prefix, max_calls, max_cpu, refresh
        self.engines: dict[str, EngineInfo] = {}  # the live ones, as of the last refresh
        self.urls: dict[str, str] = {}  # every engine seen (a call on one that went quiet is still hung up there)
        self._picked: dict[str, list[float]] = {}  # engine id -> when this process sent it a call
        self._task: asyncio.Task[None] | None = None
        self.refresh_errors = 0

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="engine-pool")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.redis.aclose()

    async def refresh(self) -> None:
        ids = sorted(m.decode() if isinstance(m, bytes) else str(m)
                     for m in await self.redis.smembers(self._key("engines")))
        found = await self.redis.mget([self._key("engine", i) for i in ids]) if ids else []
        engines: dict[str, EngineInfo] = {}
        lapsed = []
        for engine_id, raw in zip(ids, found, strict=True):
            if raw is None:
                lapsed.append(engine_id)
                continue
            try:
                data: dict[str, Any] = json.loads(raw)
                info = EngineInfo(engine_id, str(data["url"]).rstrip("/"), int(data["active"]), float(data["cpu"]),
                                  bool(data["draining"]), float(data["at"]))
            except (ValueError, KeyError, TypeError) as exc:
                self.refresh_errors += 1
                log.warning("engine pool: unreadable entry for %s: %s", engine_id, exc)
                continue
            engines[engine_id] = info
            self.urls[engine_id] = info.url
            picks = self._picked.get(engine_id)
            if picks:  # the beat counts the calls sent before it (and clocks may differ a little)
                recent = time.time() - PICK_SECONDS
                self._picked[engine_id] = [t for t in picks if t > info.at and t > recent]
        if lapsed:
            await self.redis.srem(self._key("engines"), *lapsed)
        self.engines = engines

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.refresh()
            except Exception as exc:  # counted and logged; the registry in memory stands until the next
                self.refresh_errors += 1
                log.warning("engine pool: reading the registry failed: %s", exc)

    def load(self, info: EngineInfo) -> int:
        return info.active + len(self._picked.get(info.id, ()))

    def pick(self) -> EngineInfo:
        """The least-loaded engine below the thresholds (counted as one more call on it); NoEngine if none."""
        open_ = [e for e in self.engines.values()
                 if not e.draining and self.load(e) < self.max_calls and e.cpu < self.max_cpu]
        if not open_:
            raise NoEngine(f"no engine of the pool can take a call ({len(self.engines)} live, "
                           f"{sum(e.draining for e in self.engines.values())} draining)")
        best = min(open_, key=lambda e: (self.load(e), e.cpu, e.id))
        self._picked.setdefault(best.id, []).append(time.time())
        return best

    def draining(self, url: str) -> None:
        """An engine refused a call as draining before its beat said so: no more calls to it."""
        def base(u: str) -> str:
            return u.rstrip("/").removesuffix("/v1")

        for engine_id, info in list(self.engines.items()):
            if base(info.url) == base(url):
                self.engines[engine_id] = replace(info, draining=True)

    def url_for(self, call_id: str) -> str | None:
        """The base URL of the engine a call id or key names."""
        engine = engine_of(call_id)
        return self.urls.get(engine) if engine is not None else None
