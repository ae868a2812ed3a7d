"""One-time stream tokens: a media stream is accepted only with a token that a signed voice webhook
issued moments before, in the TwiML's `<Parameter>`. Each token is good once and for a short while.

Two stores behind one interface (`TokenStore`): `StreamTokens` in this process's memory, and
`RedisStreamTokens` for shared mode, where Twilio's voice webhook and its media WebSocket may reach
different server processes (SET with PX on issue, GETDEL on take: one-time across all of them).
"""

from __future__ import annotations

import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

TOKEN_TTL_SECONDS = 60.0  # Twilio opens the stream within a second or two of the webhook's answer
MAX_TOKENS = 10_000
MAX_TOKEN_CHARS = 128  # ours are 32; anything much longer is not one of them


@dataclass(frozen=True)
class Ticket:
    """What the webhook decided about the call, for the stream it starts."""

    persona: str
    caller: str  # the calling number (From), as Twilio gave it
    called: str  # the number called (To)
    call_sid: str


class TokenStore(Protocol):
    async def issue(self, ticket: Ticket) -> str:
        """A new token for `ticket`, good once within the store's time to live."""
        ...

    async def take(self, token: str | None) -> Ticket | None:
        """The ticket for `token`, once; None when unknown, used or expired."""
        ...


def _usable(token: str | None) -> bool:
    return bool(token) and len(token or "") <= MAX_TOKEN_CHARS


class StreamTokens:
    """Tokens in this process's memory (bounded: the oldest go first)."""

    def __init__(self, ttl: float = TOKEN_TTL_SECONDS, *, clock: Callable[[], float] = time.monotonic,
                 max_tokens: int = MAX_TOKENS) -> None:
        self.ttl, self.clock, self.max_tokens = ttl, clock, max_tokens
        self._tickets: OrderedDict[str, tuple[Ticket, float]] = OrderedDict()  # token -> (ticket, expiry)

    async def issue(self, ticket: Ticket) -> str:
        now = self.clock()
        while self._tickets and (len(self._tickets) >= self.max_tokens or next(iter(self._tickets.values()))[1] <= now):
            self._tickets.popitem(last=False)  # oldest first: expired ones, or the overflow
        token = secrets.token_urlsafe(24)
        self._tickets[token] = (ticket, now + self.ttl)
        return token

    async def take(self, token: str | None) -> Ticket | None:
        if not _usable(token):
            return None
        assert token is not None
        found = self._tickets.pop(token, None)
        if found is None or found[1] <= self.clock():
            return None
        return found[0]

    def __len__(self) -> int:
        return len(self._tickets)


class RedisStreamTokens:
    """Tokens in Redis under `<prefix>:<token>`, each expiring on its own (PX)."""

    def __init__(self, redis: Any, prefix: str, ttl: float = TOKEN_TTL_SECONDS) -> None:
        self.redis, self.prefix, self.ttl_ms = redis, prefix, max(1, int(ttl * 1000))

    def _key(self, token: str) -> str:
        return f"{self.prefix}:{token}"

    async def issue(self, ticket: Ticket) -> str:
        token = secrets.token_urlsafe(24)
        await self.redis.set(self._key(token), json.dumps(asdict(ticket)), px=self.ttl_ms)
        return token

    async def take(self, token: str | None) -> Ticket | None:
        if not _usable(token):
            return None
        assert token is not None
        # GETDEL reads and forgets in one step: of two streams presenting one token, one gets it.
        raw = await self.redis.getdel(self._key(token))
        if raw is None:
            return None
        try:
            fields = json.loads(raw)
            return Ticket(**{k: str(fields[k]) for k in ("persona", "caller", "called", "call_sid")})
        except (ValueError, KeyError, TypeError):
            return None  # not a ticket we wrote: as good as unknown
