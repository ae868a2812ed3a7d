"""One-time stream tokens: a media stream is accepted only with a token that a signed voice webhook
issued moments before, in the TwiML's `<Parameter>`. Each token is good once and for a short while."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

TOKEN_TTL_SECONDS = 60.0  # Twilio opens the stream within a second or two of the webhook's answer
MAX_TOKENS = 10_000


@dataclass(frozen=True)
class Ticket:
    """What the webhook decided about the call, for the stream it starts."""

    persona: str
    caller: str  # the calling number (From), as Twilio gave it
    called: str  # the number called (To)
    call_sid: str


class StreamTokens:
    def __init__(self, ttl: float = TOKEN_TTL_SECONDS, *, clock: Callable[[], float] = time.monotonic,
                 max_tokens: int = MAX_TOKENS) -> None:
        self.ttl, self.clock, self.max_tokens = ttl, clock, max_tokens
        self._tickets: OrderedDict[str, tuple[Ticket, float]] = OrderedDict()  # token -> (ticket, expiry)

    def issue(self, ticket: Ticket) -> str:
        now = self.clock()
        while self._tickets and (len(self._tickets) >= self.max_tokens or next(iter(self._tickets.values()))[1] <= now):
            self._tickets.popitem(last=False)  # oldest first: expired ones, or the overflow
        token = secrets.token_urlsafe(24)
        self._tickets[token] = (ticket, now + self.ttl)
        return token

    def take(self, token: str | None) -> Ticket | None:
        """The ticket for `token`, once; None when unknown, used or expired."""
        if not token:
            return None
        found = self._tickets.pop(token, None)
        if found is None or found[1] <= self.clock():
            return None
        return found[0]

    def __len__(self) -> int:
        return len(self._tickets)
