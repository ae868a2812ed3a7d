"""Rate limits and call slots in Redis, exact across processes.

* Requests: the `limits` library's moving window (its own Lua script, one round trip per request),
  `burst` requests in any window of `burst / rate` (5 per 15 s at the default 20/min with a burst of
  5): a burst admits exactly `burst`, and the long-run rate is the configured one, as with the
  one-process token bucket.
* Call slots: a sorted set per limit key, member = call id, score = when the slot lapses (Redis's
  own clock, `TIME`, so the processes' clocks do not matter). Taking, refreshing and releasing are
  small Lua scripts, so a burst over many processes admits exactly `limit` calls. A held slot (a
  server-held call) is a lease the holding process renews with its heartbeat: if it dies, the slot
  lapses within `lease_seconds`.
"""

from __future__ import annotations

import math
import time
from typing import Any

from limits import RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from .hub import SharedHub

# KEYS: the key's slot set, the call's slot record. ARGV: call id, limit, ttl ms, limit key.
TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local ttl = tonumber(ARGV[3])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
redis.call('SET', KEYS[2], ARGV[4], 'PX', ttl)
return 1
"""

# KEYS: the call's slot record. ARGV: the slot sets' key prefix, ttl ms, mode, the slot records' key prefix.
# mode "refresh": extend a slot still held; "holds": 1 if held; "release": drop it.
SLOT = """
local owner = redis.call('GET', KEYS[1])
if not owner then return 0 end
local set = ARGV[1] .. owner
local call = string.sub(KEYS[1], string.len(ARGV[4]) + 1)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', set, call)
if ARGV[3] == 'release' then
  redis.call('ZREM', set, call)
  redis.call('DEL', KEYS[1])
  return 1
end
if not score or tonumber(score) <= now then return 0 end
if ARGV[3] == 'refresh' then
  local ttl = tonumber(ARGV[2])
  redis.call('ZADD', set, 'XX', now + ttl, call)
  if redis.call('PTTL', set) < ttl then redis.call('PEXPIRE', set, ttl) end
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
"""


# KEYS: a key's slot set. The slots it holds that have not lapsed.
COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
"""


class RedisLimiter:
    """`burst` requests per key in any window of burst / rate, through `limits`' Redis storage."""

    def __init__(self, hub: SharedHub, name: str, per_minute: float, burst: int) -> None:
        storage = RedisStorage("async+redis://", implementation="redispy", key_prefix=hub.key("limits"),
                               connection_pool=hub.redis.connection_pool)  # type: ignore[arg-type]
        self.strategy = MovingWindowRateLimiter(storage)
        self.item = RateLimitItemPerSecond(burst, max(1, math.ceil(burst * 60.0 / per_minute)))
        self.name = name

    async def acquire(self, key: str) -> float | None:
        if await self.strategy.hit(self.item, self.name, key):
            return None
        stats = await self.strategy.get_window_stats(self.item, self.name, key)
        return max(0.0, stats.reset_time - time.time())


class RedisSlots:
    """The concurrent-call slots of every process, in Redis (see the module's docstring)."""

    def __init__(self, hub: SharedHub) -> None:
        self.hub = hub
        self._take = hub.redis.register_script(TAKE)
        self._slot = hub.redis.register_script(SLOT)
        self._count = hub.redis.register_script(COUNT)
        self._held: set[str] = set()  # the held slots this process renews
        hub.on_renew(self._renew)

    @property
    def _lease_ms(self) -> int:
        return int(self.hub.lease_seconds * 1000)

    def _set(self, key: str) -> str:
        return self.hub.key("slots", key)

    def _record(self, call_id: str) -> str:
        return self.hub.key("slot", call_id)

    async def _op(self, call_id: str, ttl_ms: int, mode: str) -> bool:
        record_prefix = self.hub.key("slot", "")
        result: Any = await self._slot(keys=[self._record(call_id)],
                                       args=[self.hub.key("slots", ""), ttl_ms, mode, record_prefix])
        return bool(result)

    async def try_take(self, key: str, call_id: str, limit: int, ttl: float | None = None) -> bool:
        ttl_ms = self._lease_ms if ttl is None else max(1, int(ttl * 1000))
        taken = bool(await self._take(keys=[self._set(key), self._record(call_id)], args=[call_id, limit, ttl_ms, key]))
        if taken and ttl is None:
            self._held.add(call_id)
        return taken

    async def count(self, key: str) -> int:
        return int(await self._count(keys=[self._set(key)]))

    async def refresh(self, call_id: str, ttl: float) -> None:
        if call_id not in self._held:
            await self._op(call_id, max(1, int(ttl * 1000)), "refresh")

    async def holds(self, call_id: str) -> bool:
        return await self._op(call_id, 0, "holds")

    async def release(self, call_id: str) -> None:
        self._held.discard(call_id)
        await self._op(call_id, 0, "release")

    def forget(self, call_id: str) -> None:
        self._held.discard(call_id)  # it lapses within a lease unless its next holder takes it

    async def _renew(self) -> None:
        for call_id in list(self._held):
            await self._op(call_id, self._lease_ms, "refresh")
