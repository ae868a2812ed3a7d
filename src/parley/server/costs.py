"""What each user's calls cost today (UTC), for the daily cost cap: the interface, the one-process
implementation (in memory, filled from the database) and the shared one (Redis).

Both keep, per user and day, call id -> that call's cost so far. Only the process holding a call
writes its entry, with the call's running total (not an increment), so a repeated or late write
cannot count twice. The shared one keeps them in a Redis hash, so a read sums one hash in one round
trip and every process sees every call's cost at once, with no cache. When the hash is missing its
"_init" field (a new day, or Redis lost it), it is filled from the database first, without
overwriting newer fields.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Protocol

from .db import Store

if TYPE_CHECKING:
    from .shared import SharedHub

DAY_SECONDS = 24 * 3600


class DayCosts(Protocol):
    async def spent(self, user_id: str) -> float:
        """The user's cost today."""
        ...

    async def record(self, user_id: str, call_id: str, call_cost: float) -> None:
        """A call's cost so far (its running total), after its usage is stored."""
        ...


class StoredDayCosts:
    """One process: each user's calls today, call id -> cost, read from the database once per user
    and day, then kept up to date by `record` (every recorder in the process reports its call's
    running total), so a check, at admission or after each response, costs no query."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._day = ""
        self._users: dict[str, dict[str, float]] = {}  # today: user -> {call id: cost}

    async def _today(self, user_id: str) -> dict[str, float]:
        day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        if day != self._day:
            self._day, self._users = day, {}
        known = self._users.get(user_id)
        if known is None:
            loaded = await self.store.day_costs_by_call(user_id)
            known = self._users.setdefault(user_id, {})
            for call_id, cost in loaded.items():  # (a record() may have come in while the query ran)
                known[call_id] = max(known.get(call_id, 0.0), cost)
        return known

    async def spent(self, user_id: str) -> float:
        return sum((await self._today(user_id)).values())

    async def record(self, user_id: str, call_id: str, call_cost: float) -> None:
        known = await self._today(user_id)
        known[call_id] = max(known.get(call_id, 0.0), call_cost)


class RedisDayCosts:
    """N processes: per user and UTC day, a hash of each call's cost in Redis (see the module)."""

    def __init__(self, hub: SharedHub, store: Store) -> None:
        self.hub, self.store = hub, store

    def _key(self, user_id: str) -> str:
        return self.hub.key("cost", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"), user_id)

    async def spent(self, user_id: str) -> float:
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
