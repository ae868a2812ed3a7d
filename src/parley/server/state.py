"""The parts of one server that its routes use, built by `create_app` and kept in `app.state.server`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from parley.apps.copilot.answerer import Answerer

from .auth import Authenticator
from .calls import CallManager
from .db import Store
from .limits import RequestLimiter
from .metrics import Metrics
from .replays import MemoryReplays, ReplayGuard
from .settings import ServerSettings
from .storage import Recordings
from .upstream import Upstream


@dataclass
class ServerState:
    settings: ServerSettings
    store: Store
    calls: CallManager
    upstream: Upstream
    metrics: Metrics
    auth: Authenticator
    limiter: RequestLimiter  # requests that start calls (/api/session, /api/calls)
    events_limiter: RequestLimiter  # a browser-direct call's event reports
    login_limiter: RequestLimiter
    copilot: Answerer
    engine: Any  # the in-process engine (upstream "local"), else None
    recordings: Recordings
    hub: Any = None  # shared mode: the SharedHub (Redis), else None
    shared_metrics: Any = None  # shared mode: every process's series (shared.metrics.SharedMetrics)
    replays: ReplayGuard = field(default_factory=lambda: MemoryReplays(24 * 3600.0))  # webhook ids acted on

