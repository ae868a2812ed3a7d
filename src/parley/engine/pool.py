"""A `parley engine` in a pool of engines: registered in Redis with its load, draining on SIGTERM.

With PARLEY_ENGINE_REDIS_URL and PARLEY_ENGINE_POOL_URL (the base URL servers reach it at, e.g.
http://10.0.0.5:8001/v1), the engine names itself (PARLEY_ENGINE_POOL_ID, else a random id) in the
ids of its calls and keys (`parley.protocol.ids`), and every `heartbeat` seconds writes
`<prefix>:engine:<id>` = {url, active, cpu, draining} with a TTL of three beats, and its id in the
set `<prefix>:engines`. A server in pool mode (`parley.server.pool`) sends each new call to the
least-loaded live engine; an engine that stops beating drops out when its key lapses.

SIGTERM drains (with or without a pool): new calls, keys and sessions get 503 `engine_draining`,
the heartbeat says so at once, the live calls go on, and the engine exits when the last one ends
or `drain_seconds` have passed, whichever is first (a second SIGTERM or SIGINT: at once).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import threading
import time
from typing import Any

from parley.protocol.ids import ENGINE_ID

from .engine import Engine

log = logging.getLogger(__name__)


def pool_key(prefix: str, *parts: str) -> str:
    return ":".join((prefix, *parts))


class CpuMeter:
    """This process's CPU use since the last reading, in cores (1.0: one core busy)."""

    def __init__(self) -> None:
        self._wall, self._cpu = time.monotonic(), time.process_time()

    def read(self) -> float:
        wall, cpu = time.monotonic(), time.process_time()
        used = (cpu - self._cpu) / max(1e-6, wall - self._wall)
        self._wall, self._cpu = wall, cpu
        return round(used, 3)


class Membership:
    """The standalone engine's part in a pool (registration, heartbeat) and its drain."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        settings = engine.settings
        self.redis_url, self.url = settings.redis_url, settings.pool_url
        self.prefix, self.beat_seconds = settings.redis_prefix, settings.heartbeat_seconds
        self.drain_seconds = settings.drain_seconds
        self.id = settings.pool_id or secrets.token_hex(4)
        if not ENGINE_ID.fullmatch(self.id):
            raise ValueError(f"PARLEY_ENGINE_POOL_ID must be 1-16 of a-z, 0-9 (got {self.id!r})")
        self.redis: Any = None
        self.cpu = CpuMeter()
        self.beat_errors = 0
        self._beater: asyncio.Task[None] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._exit: Any = None  # uvicorn's own SIGTERM handler, called when the drain is over
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pooled(self) -> bool:
        return bool(self.redis_url)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._catch_sigterm()
        if not self.pooled:
            return
        if not self.url:
            raise SystemExit("parley engine: PARLEY_ENGINE_REDIS_URL needs PARLEY_ENGINE_POOL_URL, the base URL "
                             "servers reach this engine at (e.g. http://10.0.0.5:8001/v1)")
        import redis.asyncio as aioredis

        assert self.redis_url is not None
        self.redis = aioredis.Redis.from_url(self.redis_url, socket_connect_timeout=5, socket_timeout=10)
        self.engine.pool_id = self.id
        await self.beat()  # (unreachable Redis: the engine refuses to start, it would take calls unannounced)
        self._beater = asyncio.create_task(self._beat_loop(), name="engine-heartbeat")
        log.info("engine %s in the pool at %s (heartbeat every %.1f s)", self.id, self.url, self.beat_seconds)

    async def stop(self) -> None:
        for task in (self._beater, self._drainer):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if self.redis is not None:
            try:
                await self.redis.srem(pool_key(self.prefix, "engines"), self.id)
                await self.redis.delete(pool_key(self.prefix, "engine", self.id))
            except Exception as exc:  # (its key lapses by itself)
                log.warning("engine %s: could not leave the pool: %s", self.id, exc)
            await self.redis.aclose()

    def state(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "active": self.engine.active(), "cpu": self.cpu.read(),
                "draining": self.engine.draining, "pid": os.getpid(), "at": time.time()}

    async def beat(self) -> None:
        ttl = max(1, int(self.beat_seconds * 3000))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(pool_key(self.prefix, "engine", self.id), json.dumps(self.state()), px=ttl)
            pipe.sadd(pool_key(self.prefix, "engines"), self.id)
            await pipe.execute()

    async def _beat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.beat_seconds)
            try:
                await self.beat()
            except Exception as exc:  # counted and logged; the next beat tries again
                self.beat_errors += 1
                log.warning("engine %s: heartbeat failed: %s", self.id, exc)

    # -- draining ---------------------------------------------------------------------------------

    def _catch_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # (an engine app served from a thread, as in tests: no signals)
        self._exit = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, sig: int, frame: Any) -> None:
        assert self._loop is not None
        if self.engine.draining:  # a second SIGTERM: stop now
            self._loop.call_soon_threadsafe(self._leave, sig)
            return
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drainer = asyncio.create_task(self.drain(), name="engine-drain")

    async def drain(self) -> None:
        """Refuse new calls, announce it, wait for the live ones (up to drain_seconds), then exit."""
        self.engine.draining = True
        log.info("engine %s draining: %d live sessions, up to %.0f s", self.id, self.engine.active(),
                 self.drain_seconds)
        if self.redis is not None:
            try:
                await self.beat()
            except Exception as exc:
                log.warning("engine %s: could not announce the drain: %s", self.id, exc)
        if not await self.engine.wait_idle(self.drain_seconds):
            left = self.engine.active()
            log.warning("engine %s: drain limit reached with %d live sessions; they end now", self.id, left)
        self._leave(signal.SIGTERM)

    def _leave(self, sig: int) -> None:
        exit_ = self._exit
        if callable(exit_):
            exit_(sig, None)  # uvicorn's handler: a graceful shutdown (the lifespan ends what is left)
        else:
            signal.raise_signal(sig)
