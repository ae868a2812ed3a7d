"""Metrics across processes: each process publishes a snapshot of its series to Redis, and
`/metrics` at any of them renders every live process's series with a `process` label.

(Not prometheus_client's multiprocess mode: that shares a directory of mmap files between the
workers of one host, and Parley's processes may be on many machines with nothing shared but
PostgreSQL and Redis. Not one global counter in Redis per series either: a counter per process,
labelled, is what Prometheus sums and rates correctly across restarts.)

A snapshot is `<prefix>:metrics:<process id>`, rewritten every `interval` seconds with a TTL of a
few intervals: a process that stops drops out of the page when its snapshot lapses, and its
counters with it (Prometheus treats that as the series ending, not as a reset of the sum).
"""

from __future__ import annotations

import asyncio
import json
import logging

from ..metrics import Metrics, Snapshot
from .hub import SharedHub

log = logging.getLogger(__name__)


class SharedMetrics:
    def __init__(self, hub: SharedHub, metrics: Metrics, *, interval: float = 2.0) -> None:
        self.hub, self.metrics, self.interval = hub, metrics, interval
        self._task: asyncio.Task[None] | None = None
        self.errors = 0

    def _key(self, process_id: str) -> str:
        return self.hub.key("metrics", process_id)

    async def start(self) -> None:
        await self.publish()
        self._task = asyncio.create_task(self._loop(), name="shared-metrics")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.publish()  # the last counts (they lapse with the TTL)
        except Exception as exc:
            log.warning("shared mode: could not publish the last metrics: %s", exc)

    async def publish(self) -> None:
        ttl = max(1, int(self.interval * 3000))
        await self.hub.redis.set(self._key(self.hub.process_id), json.dumps(self.metrics.snapshot()), px=ttl)
        await self.hub.redis.sadd(self.hub.key("metrics"), self.hub.process_id)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.publish()
            except Exception as exc:  # counted and logged; the page shows the last snapshot until it lapses
                self.errors += 1
                log.warning("shared mode: publishing metrics failed: %s", exc)

    async def collect(self) -> dict[str, Snapshot]:
        """Every live process's snapshot (this one's taken now)."""
        ids = sorted(m.decode() if isinstance(m, bytes) else str(m)
                     for m in await self.hub.redis.smembers(self.hub.key("metrics")))
        others = [i for i in ids if i != self.hub.process_id]
        found = await self.hub.redis.mget([self._key(i) for i in others]) if others else []
        snapshots = {self.hub.process_id: self.metrics.snapshot()}
        lapsed = []
        for process_id, raw in zip(others, found, strict=True):
            if raw is None:
                lapsed.append(process_id)
            else:
                snapshots[process_id] = json.loads(raw)
        if lapsed:
            await self.hub.redis.srem(self.hub.key("metrics"), *lapsed)
        return snapshots

    async def render(self) -> str:
        return self.metrics.render(await self.collect())
