"""Shared mode: N `parley serve` processes share their hot state through Redis (limits, call slots,
leases, browser-direct calls awaiting their first report) and their durable state in PostgreSQL.

Turned on by PARLEY_REDIS_URL; see docs/deployment.md. The one-process defaults (in memory) are in
`parley.server.limits`; both sides implement the same interfaces.
"""

from .hub import SharedHub, SharedStateError, check_redis
from .limits import RedisLimiter, RedisSlots
from .replays import RedisReplays

__all__ = ["RedisLimiter", "RedisReplays", "RedisSlots", "SharedHub", "SharedStateError", "check_redis"]
