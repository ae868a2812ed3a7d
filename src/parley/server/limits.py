"""Per-user request rate limits and the concurrent-call slots: the interfaces, and the one-process
implementations kept in memory (the default). `parley.server.shared` has the Redis ones, for N
processes; `create_app` picks by settings (PARLEY_REDIS_URL)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Protocol


class RequestLimiter(Protocol):
    """Requests per key: `acquire` takes one, None when allowed, else the seconds to wait."""

    async def acquire(self, key: str) -> float | None: ...


class Slots(Protocol):
    """The calls each key has open, for the concurrent-call cap.

    A slot taken with `ttl=None` is held until released (for a server-held call; across processes
    it is a lease its holder renews, so it lapses if the holder dies); one taken with a ttl lapses
    unless refreshed (a browser-direct call, refreshed by its event reports)."""

    async def try_take(self, key: str, call_id: str, limit: int, ttl: float | None = None) -> bool: ...

    async def count(self, key: str) -> int: ...

    async def refresh(self, call_id: str, ttl: float) -> None: ...

    async def holds(self, call_id: str) -> bool: ...

    async def release(self, call_id: str) -> None: ...

    def forget(self, call_id: str) -> None:
        """Stop renewing a held slot without releasing it: another process holds the call on."""
        ...


class RateLimiter:
    """A token bucket per key: `burst` requests at once, refilled at `per_minute` per minute.

    Memory is bounded: the least recently used keys beyond `max_keys` are forgotten (a forgotten
    key starts again with a full bucket, which is what an idle key would have by then anyway).
    """

    def __init__(self, per_minute: float, burst: int, *, max_keys: int = 100_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    async def acquire(self, key: str) -> float | None:
        return self.take(key)

    def take(self, key: str, now: float | None = None) -> float | None:
        """Take one token: None when allowed, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            result = None
        else:
            self._buckets[key] = (tokens, now)
            result = (1.0 - tokens) / self.rate
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return result


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


class CallSlots:
    """Which calls each user has open, for the concurrent-call cap (one process: in memory).

    Server-held calls hold their slot until released; browser-direct calls hold it until they
    have been quiet for a while (they are refreshed by every event report)."""

    def __init__(self) -> None:
        self._by_key: dict[str, dict[str, float]] = {}  # key -> call id -> expiry (monotonic; inf: held)
        self._key_of: dict[str, str] = {}

    def _slots(self, key: str, now: float) -> dict[str, float]:
        slots = self._by_key.get(key)
        if slots is None:
            return {}
        for call_id in [c for c, expires in slots.items() if expires <= now]:
            del slots[call_id]
            self._key_of.pop(call_id, None)
        if not slots:
            del self._by_key[key]
        return slots

    async def count(self, key: str) -> int:
        return len(self._slots(key, time.monotonic()))

    async def try_take(self, key: str, call_id: str, limit: int, ttl: float | None = None) -> bool:
        now = time.monotonic()
        if len(self._slots(key, now)) >= limit:
            return False
        self._by_key.setdefault(key, {})[call_id] = now + ttl if ttl is not None else math.inf
        self._key_of[call_id] = key
        return True

    async def refresh(self, call_id: str, ttl: float) -> None:
        key = self._key_of.get(call_id)
        slots = self._by_key.get(key) if key is not None else None
        if slots is not None and call_id in slots and slots[call_id] != math.inf:
            slots[call_id] = time.monotonic() + ttl

    async def holds(self, call_id: str) -> bool:
        key = self._key_of.get(call_id)
        return key is not None and call_id in self._slots(key, time.monotonic())

    async def release(self, call_id: str) -> None:
        key = self._key_of.pop(call_id, None)
        if key is not None:
            slots = self._by_key.get(key, {})
            slots.pop(call_id, None)
            if not slots:
                self._by_key.pop(key, None)

    def forget(self, call_id: str) -> None:
        pass  # (one process: no other holds a call on)

    def __len__(self) -> int:
        now = time.monotonic()
        return sum(len(self._slots(k, now)) for k in list(self._by_key))
