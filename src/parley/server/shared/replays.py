"""Webhook ids acted on, in Redis: with N processes behind one webhook URL, a replay that reaches
another process than the first delivery is still refused."""

from __future__ import annotations

from .hub import SharedHub


class RedisReplays:
    def __init__(self, hub: SharedHub, ttl: float) -> None:
        self.hub, self.ttl_ms = hub, max(1, int(ttl * 1000))

    async def first_time(self, webhook_id: str) -> bool:
        # SET NX is the check and the record in one step: of two deliveries at once, one wins.
        return bool(await self.hub.redis.set(self.hub.key("webhook", webhook_id), "1", nx=True, px=self.ttl_ms))

    async def forget(self, webhook_id: str) -> None:
        await self.hub.redis.delete(self.hub.key("webhook", webhook_id))
