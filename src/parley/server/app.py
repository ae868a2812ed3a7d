"""The Parley server: `create_app()` assembles its parts, middleware and routers (`server.routes`);
`run()` is what `parley serve` calls.

Endpoints (all JSON unless said otherwise; errors are OpenAI's `{"error": {"message", "type",
"param", "code"}}`, see `parley.http.errors`):

    POST /api/session                  mint an ephemeral key for a persona (browser-direct calls)
    POST /api/calls                    SDP offer in, SDP answer out; the server holds the call (sideband)
    GET  /api/calls                    the caller's calls, newest first
    GET  /api/calls/{id}               one call: transcript in speech order, personas, usage, cost, outcome
    GET  /api/calls/{id}/transcript    Markdown or JSON (?format=md|json, or Accept)
    POST /api/calls/{id}/escalate      hand a server-held call to the supervisor persona
    POST /api/calls/{id}/hangup        end a call
    POST /api/calls/{id}/transfer      a phone call to PARLEY_TRANSFER_TO (SIP REFER)
    POST /api/calls/{id}/events        a browser-direct call reports its events
    POST, GET /api/calls/{id}/audio    the call's recording
    GET  /api/copilot, POST /api/copilot/answer   the copilot's considered answers
    GET  /api/personas                 the personas and their scenario cards
    GET  /api/me, POST /api/login, POST /api/logout
    POST /webhooks/openai              OpenAI's webhooks: realtime.call.incoming (a SIP phone call)
    GET  /healthz, GET /metrics (Prometheus)
    POST /telephony/twilio/voice       Twilio's voice webhook (form in, TwiML out; docs/telephony.md)
    WS   /telephony/twilio/media       the call's Twilio media stream, bridged to the upstream
    /v1/...                            the in-process engine (upstream "local")
    /                                  the web app (parley/web)
"""


import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import MutableHeaders
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parley.http.body import BodyLimit
from parley.http.errors import error_response, install_error_handlers
from parley.protocol.pricing import DEFAULT_TABLE, PriceTable
from parley.telephony.tokens import RedisStreamTokens, StreamTokens

from .auth import Authenticator, BearerAuth, CookieAuth, NoAuth, Signer, TokenTable
from .calls import CallManager
from .copilot import answerer_for
from .costs import RedisDayCosts, StoredDayCosts
from .db import Store
from .errors import scrub
from .limits import CallSlots, RateLimiter, RequestLimiter, Slots
from .metrics import Metrics
from .replays import MemoryReplays, ReplayGuard
from .routes import auth as auth_routes
from .routes import calls as calls_routes
from .routes import copilot, ops, recordings, session, telephony, webhooks
from .settings import ServerSettings
from .state import ServerState
from .storage import DirectoryRecordings
from .upstream import Upstream, upstream_time

log = logging.getLogger("parley.server")

TIMED_ROUTES = {"/api/session": "session", "/api/calls": "calls"}


# -- middleware -----------------------------------------------------------------------------------


class ServerMiddleware:
    """Timing (Server-Timing, the added-latency metric), cookies set by auth, safety headers."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        spent: list[float] = []
        token = upstream_time.set(spent)
        state = scope.setdefault("state", {})
        path = scope["path"]
        route = TIMED_ROUTES.get(path) if scope["method"] == "POST" else None
        api = path.startswith("/api/")

        async def send_wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                total = time.perf_counter() - start
                up = sum(spent)
                headers = MutableHeaders(scope=message)
                if api or route:
                    headers.append("Server-Timing", f"upstream;dur={up * 1000:.3f}, app;dur={(total - up) * 1000:.3f}")
                    headers["Cache-Control"] = "no-store"
                for cookie in state.get("set_cookies") or ():
                    headers.append("Set-Cookie", cookie)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                if route and message.get("status", 500) < 400:
                    self.metrics.observe("parley_request_seconds", total, route=route)
                    self.metrics.observe("parley_added_seconds", max(0.0, total - up), route=route)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapped)
        finally:
            upstream_time.reset(token)


class _AtRoot:
    """Serve a mounted app with the parent's root path, so an app whose routes already start
    with the mount prefix (the engine's `/v1/...`) sees its own paths."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = dict(scope)
            scope["root_path"] = scope.get("app_root_path", "")
        await self.app(scope, receive, send)


# -- the app --------------------------------------------------------------------------------------


def _authenticator(settings: ServerSettings, signer: Signer) -> Authenticator:
    tokens = TokenTable({u: t.get_secret_value() for u, t in settings.auth_tokens.items()})
    if settings.auth == "bearer":
        return BearerAuth(tokens)
    if settings.auth == "cookie":
        return CookieAuth(signer, tokens)
    return NoAuth(signer, secure=settings.cookie_secure, trust_forwarded_for=settings.trust_forwarded_for)


def _web_dir() -> Path | None:
    try:
        path = Path(str(resources.files("parley") / "web"))
    except (ModuleNotFoundError, TypeError):
        return None
    return path if path.is_dir() else None


def _session_secret(settings: ServerSettings) -> bytes:
    """PARLEY_SESSION_SECRET, else one kept in the data dir (so cookies outlive a restart), else random."""
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value().encode()
    path = settings.data_dir / "session-secret"
    try:
        if path.is_file() and len(data := path.read_bytes()) >= 32:
            return data
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        data = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return data
    except OSError:
        log.warning("cannot keep a session secret in %s; cookies will not survive a restart", settings.data_dir)
        return secrets.token_bytes(32)


def _shared_parts(settings: ServerSettings) -> tuple[Any, Slots, Any]:
    """(hub, call slots, limiter factory): Redis in shared mode, else this process's memory."""
    if not settings.shared:
        def memory(_name: str, per_minute: float, burst: int) -> RequestLimiter:
            return RateLimiter(per_minute, burst)
        return None, CallSlots(), memory
    from .shared import RedisLimiter, RedisSlots, SharedHub

    assert settings.redis_url
    hub = SharedHub(settings.redis_url, prefix=settings.redis_prefix, lease_seconds=settings.slot_lease_seconds)

    def shared(name: str, per_minute: float, burst: int) -> RequestLimiter:
        return RedisLimiter(hub, name, per_minute, burst)
    return hub, RedisSlots(hub), shared


def _replays(settings: ServerSettings, hub: Any) -> ReplayGuard:
    if hub is None:
        return MemoryReplays(settings.webhook_replay_seconds)
    from .shared import RedisReplays

    return RedisReplays(hub, settings.webhook_replay_seconds)


def _shared_metrics(hub: Any, metrics: Metrics) -> Any:
    if hub is None:
        return None
    from .shared.metrics import SharedMetrics

    return SharedMetrics(hub, metrics)


def create_app(settings: ServerSettings | None = None, *, engine: Any = None,
               authenticator: Authenticator | None = None) -> FastAPI:
    """The server app. `engine`: the in-process engine to mount (upstream "local"; default a new one)."""
    settings = settings or ServerSettings()
    metrics = Metrics()
    prices: PriceTable = PriceTable.from_file(settings.prices) if settings.prices else DEFAULT_TABLE

    engine_app: FastAPI | None = None
    internal_key: str | None = None
    if settings.upstream_kind == "local":
        from parley.apps.local import local_engine
        from parley.engine.app import create_app as create_engine_app

        engine = engine or local_engine()
        # The mounted engine takes only ephemeral keys and the server's own key (plus any configured
        # PARLEY_ENGINE_API_KEYS): nobody reaches it unrecorded with a made-up key.
        internal_key = "sk-parley-internal-" + secrets.token_urlsafe(24)
        engine.settings.api_keys = [*engine.settings.api_keys, internal_key]
        engine_app = create_engine_app(engine)
        _wire_sip(engine, settings)

    upstream = Upstream(settings, metrics, engine_app=engine_app, internal_key=internal_key, engine=engine)
    store = Store(settings.database)

    def committed(writes: int, seconds: float) -> None:
        metrics.inc("parley_db_writes_total", writes)
        metrics.observe("parley_db_commit_seconds", seconds)

    store.writer.on_batch = committed
    hub, slots, limiter = _shared_parts(settings)
    day_costs = RedisDayCosts(hub, store) if hub is not None else StoredDayCosts(store)
    calls = CallManager(settings, store, upstream, metrics, prices, slots=slots, day_costs=day_costs, hub=hub)
    state = ServerState(
        settings=settings, store=store, calls=calls, upstream=upstream, metrics=metrics,
        auth=authenticator or _authenticator(settings, Signer(_session_secret(settings))),
        limiter=limiter("calls", settings.rate_limit_per_minute, settings.rate_limit_burst),
        events_limiter=limiter("events", settings.rate_limit_per_minute * 30, settings.rate_limit_burst * 24),
        login_limiter=limiter("login", 10, 5), copilot=answerer_for(settings), engine=engine,
        recordings=DirectoryRecordings(settings.recordings), hub=hub,
        replays=_replays(settings, hub), shared_metrics=_shared_metrics(hub, metrics))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if hub is not None:
            await hub.start()  # refuses to start (SharedStateError) when Redis does not answer
        await store.start()
        await upstream.start()  # (a pool: its registry read before the first call)
        await calls.start()
        if state.shared_metrics is not None:
            await state.shared_metrics.start()
        nested: contextlib.AbstractAsyncContextManager[Any] = (
            engine_app.router.lifespan_context(engine_app) if engine_app is not None else contextlib.nullcontext())
        try:
            async with nested:
                yield
                await calls.shutdown()
                if state.shared_metrics is not None:
                    await state.shared_metrics.stop()
        finally:
            await upstream.aclose()
            await store.close()
            if hub is not None:
                await hub.close()

    app = FastAPI(title="Parley server", version="0.1.0", lifespan=lifespan,
                  description="Ephemeral keys, server-held calls with sideband recording, limits and storage.")
    app.state.server = state
    # Shared mode: Twilio's voice webhook and its media stream may reach different processes.
    app.state.twilio_tokens = RedisStreamTokens(hub.redis, hub.key("twilio-stream")) if hub is not None else StreamTokens()
    # A call's recording is the one large body the server takes.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes,
                       limit_for=lambda path: settings.max_audio_bytes if recordings.AUDIO_UPLOAD.match(path) else None)
    app.add_middleware(ServerMiddleware, metrics=metrics)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=True,
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["Location", "X-Parley-Call-Id", "Retry-After", "Server-Timing"])

    install_error_handlers(app, redact=lambda text: scrub(text, upstream.secret))
    app.add_exception_handler(SQLAlchemyError, _storage_error)
    for router in (ops.router, auth_routes.router, session.router, calls_routes.router, recordings.router,
                   copilot.router, telephony.router, webhooks.router, ops.api_not_found):
        app.include_router(router)
    if engine_app is not None:
        app.mount("/v1", _AtRoot(engine_app), name="engine")
    web = _web_dir()
    if web is not None:
        app.mount("/", StaticFiles(directory=web, html=True, check_dir=False), name="web")
    return app


def _wire_sip(engine: Any, settings: ServerSettings) -> None:
    """The in-process engine taking SIP calls (PARLEY_ENGINE_SIP_ADDR) announces them to this server's
    own webhook, signed with its secret, unless told otherwise: one setting makes a phone line."""
    sip = engine.settings
    if not sip.sip_addr:
        return
    if not sip.sip_webhook_url and settings.self_url:
        sip.sip_webhook_url = f"{settings.self_url}{webhooks.WEBHOOK_PATH}"
    if sip.sip_webhook_secret is None and settings.openai_webhook_secret is not None:
        sip.sip_webhook_secret = settings.openai_webhook_secret


async def _storage_error(_request: Request, exc: Exception) -> JSONResponse:
    log.error("storage failed: %s", type(exc).__name__, exc_info=exc)
    return error_response(503, "The server's database is unavailable; try again shortly.", "storage_unavailable",
                          headers={"Retry-After": "5"})


# -- running ----------------------------------------------------------------------------------------


def telephony_banner(settings: ServerSettings) -> list[str]:
    """What `parley serve` says about phone calls: the webhook URLs to give Twilio and OpenAI, and
    whether each is on."""
    base = settings.public_url or settings.self_url or "http://127.0.0.1:8000"
    url = f"{base}{telephony.VOICE_PATH}"
    if settings.twilio_auth_token is not None:
        state = "signatures checked with PARLEY_TWILIO_AUTH_TOKEN"
        if not settings.public_url:
            state += "; set PARLEY_PUBLIC_URL to the https:// URL Twilio calls"
    elif settings.twilio_insecure:
        state = "UNSIGNED webhooks accepted (PARLEY_TWILIO_INSECURE=1: local testing only)"
    else:
        state = "off until PARLEY_TWILIO_AUTH_TOKEN is set"
    sip = "on" if settings.openai_webhook_secret else "off until PARLEY_OPENAI_WEBHOOK_SECRET is set"
    return [f"Twilio voice webhook (HTTP POST): {url} — {state}",
            f"OpenAI webhook (realtime.call.incoming, SIP calls): {base}{webhooks.WEBHOOK_PATH} — {sip}"]


class _Redact(logging.Filter):
    def __init__(self, *secrets_: str | None) -> None:
        super().__init__()
        self.secrets = [s for s in secrets_ if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            cleaned = scrub(message, *self.secrets)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


def run(host: str, port: int) -> None:
    """Run the server in the foreground (`parley serve`)."""
    from parley.util.serving import run_app

    try:
        settings = ServerSettings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise SystemExit(f"parley serve: bad settings: {scrub(problems)}") from None
    if not settings.self_url:
        loop_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        loop_host = f"[{loop_host}]" if ":" in loop_host else loop_host
        settings.self_url = f"http://{loop_host}:{port}"
    level = settings.log_level.upper()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    held = (settings.twilio_auth_token, settings.openai_webhook_secret)
    handler.addFilter(_Redact(settings.upstream_key, *(s.get_secret_value() for s in held if s is not None)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
    if settings.redis_url:
        import asyncio

        from .shared import SharedStateError, check_redis

        try:
            asyncio.run(check_redis(settings.redis_url))
        except SharedStateError as exc:
            raise SystemExit(f"parley serve: {exc}") from None
    try:
        app = create_app(settings)
    except (OSError, ValueError) as exc:  # e.g. an unreadable or malformed PARLEY_PRICES file
        raise SystemExit(f"parley serve: {scrub(str(exc), settings.upstream_key)}") from None
    from sqlalchemy.engine import make_url

    db = make_url(settings.database).render_as_string(hide_password=True)
    upstream = {"local": "the local engine, in process at /v1", "openai": f"OpenAI ({settings.openai_base_url})",
                "url": f"{settings.upstream_url}", "pool": "the pool of engines registered in Redis"}[settings.upstream_kind]
    log.info("Parley server on http://%s:%d — upstream: %s; database: %s; auth: %s; %s",
             host, port, upstream, db, settings.auth,
             "shared mode (Redis)" if settings.shared else "one process (state in memory)")
    for line in telephony_banner(settings):
        log.info("%s", line)
    engine_settings = getattr(getattr(app.state.server, "engine", None), "settings", None)
    if engine_settings is not None and engine_settings.sip_addr:
        log.info("The local engine takes SIP calls on udp %s", engine_settings.sip_addr)
    run_app(app, host=host, port=port, log_config=None,
            log_level=settings.log_level.lower(), proxy_headers=settings.trust_forwarded_for, server_header=False)
