"""What each user's calls cost today (UTC), for the daily cost cap: the interface, the one-process
implementation (the database's sum) and the shared one (Redis).

The shared one keeps, per user and day, a hash call id -> that call's cost so far. Only the process
holding a call writes its field, with the call's running total (not an increment), so a repeated
or late write cannot count twice, and a read sums one hash in one round trip: every process sees
every call's cost at once, with no cache. When the hash is missing its "_init" field (a new day,
or Redis lost it), it is filled from the database first, without overwriting newer fields.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Protocol

from .db import Store

if TYPE_CHECKING:
    from .shared import SharedHub

CACHE_SECONDS = 2.0
DAY_SECONDS = 24 * 3600


class DayCosts(Protocol):
    async def spent(self, user_id: str, *, fresh: bool = False) -> float:
        """The user's cost today; `fresh`: not from a cache (a call in progress checking its cap)."""
        ...

    async def record(self, user_id: str, call_id: str, call_cost: float) -> None:
        """A call's cost so far (its running total), after its usage is stored."""
        ...


class StoredDayCosts:
    """One process: the sum over the database's call rows, cached for a couple of seconds per user
    for admission checks (a burst of requests asks the database once)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, tuple[float, float]] = {}  # user -> (dollars today, cached until)

    async def spent(self, user_id: str, *, fresh: bool = False) -> float:
        now = time.monotonic()
        cached = self._cache.get(user_id)
        if cached is not None and cached[1] > now and not fresh:
            return cached[0]
        spent = await self.store.day_cost(user_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[user_id] = (spent, now + CACHE_SECONDS)
        return spent

    async def record(self, user_id: str, call_id: str, call_cost: float) -> None:
        return None  # the database has it already


class RedisDayCosts:
    """N processes: per user and UTC day, a hash of each call's cost in Redis (see the module)."""

    def __init__(self, hub: SharedHub, store: Store) -> None:
        self.hub, self.store = hub, store

    def _key(self, user_id: str) -> str:
        return self.hub.key("cost", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"), user_id)

    async def spent(self, user_id: str, *, fresh: bool = False) -> float:
        key = self._key(user_id)
        values = await self.hub.redis.hgetall(key)
        if b"_init" not in values:
            by_call = await self.store.day_costs_by_call(user_id)
            async with self.hub.redis.pipeline(transaction=True) as pipe:
                for call_id, cost in by_call.items():
                    pipe.hsetnx(key, call_id, repr(cost))
                pipe.hset(key, "_init", "1")
                pipe.expire(key, 2 * DAY_SECONDS)
                pipe.hgetall(key)
                values = (await pipe.execute())[-1]
        return sum(float(v) for k, v in values.items() if k != b"_init")

    async def record(self, user_id: str, call_id: str, call_cost: float) -> None:
        key = self._key(user_id)
        async with self.hub.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, call_id, repr(float(call_cost)))
            pipe.expire(key, 2 * DAY_SECONDS)
            await pipe.execute()
