"""Webhook replay protection: a webhook id is acted on once.

Behind a tiny interface so that shared mode can keep the ids in Redis (several server processes
behind one webhook URL); `MemoryReplays` serves one process.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Protocol


class ReplayGuard(Protocol):
    async def first_time(self, webhook_id: str) -> bool:
        """True the first time `webhook_id` is seen within the guard's window (and remember it)."""
        ...

    async def forget(self, webhook_id: str) -> None:
        """Handling `webhook_id` failed: its sender's retry is to be acted on, not refused."""
        ...


class MemoryReplays:
    """Ids seen in the last `ttl` seconds, in one process (bounded: the oldest go first)."""

    def __init__(self, ttl: float, *, max_ids: int = 100_000) -> None:
        self.ttl, self.max_ids = ttl, max_ids
        self._seen: OrderedDict[str, float] = OrderedDict()  # id -> expiry (monotonic), oldest first

    async def first_time(self, webhook_id: str) -> bool:
        now = time.monotonic()
        while self._seen and (next(iter(self._seen.values())) <= now or len(self._seen) >= self.max_ids):
            self._seen.popitem(last=False)
        if webhook_id in self._seen:
            return False
        self._seen[webhook_id] = now + self.ttl
        return True

    async def forget(self, webhook_id: str) -> None:
        self._seen.pop(webhook_id, None)
