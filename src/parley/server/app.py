"""The Parley server: FastAPI app, middleware, routes; `run()` is what `parley serve` calls.

Endpoints (all JSON unless said otherwise; errors are `{"error": {"message", "code", ...}}`):

    POST /api/session                  mint an ephemeral key for a persona (browser-direct calls)
    POST /api/calls                    SDP offer in, SDP answer out; the server holds the call (sideband)
    GET  /api/calls                    the caller's calls, newest first
    GET  /api/calls/{id}               one call: transcript in speech order, personas, usage, cost, outcome
    GET  /api/calls/{id}/transcript    Markdown or JSON (?format=md|json, or Accept)
    POST /api/calls/{id}/escalate      hand a server-held call to the supervisor persona
    POST /api/calls/{id}/hangup        end a call
    POST /api/calls/{id}/events        a browser-direct call reports its events
    GET  /api/personas                 the personas and their scenario cards
    GET  /api/me, POST /api/login, POST /api/logout
    GET  /healthz, GET /metrics (Prometheus)
    /v1/...                            the in-process engine (upstream "local")
    /                                  the web app (parley/web)
"""


import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parley.apps.scenarios import Persona, list_personas
from parley.protocol.pricing import DEFAULT_TABLE, PriceTable

from .auth import (
    CLIENT_COOKIE,
    SESSION_COOKIE,
    Authenticator,
    BearerAuth,
    CookieAuth,
    NoAuth,
    Principal,
    Signer,
    TokenTable,
    client_address,
    set_cookie_later,
)
from .calls import CallManager
from .copilot import PERSONAS as COPILOT
from .copilot import answerer_for, stream_answer
from .db import Store
from .errors import ApiError, error_response, scrub
from .limits import RateLimiter, retry_after
from .metrics import Metrics
from .personas import DEFAULT_PERSONA, find_persona
from .sdp import validate_offer
from .settings import ServerSettings
from .transcript import call_detail, call_summary, markdown
from .upstream import Upstream, UpstreamError, upstream_time

log = logging.getLogger("parley.server")

CALL_ID = r"^[A-Za-z0-9_-]{1,64}$"
TIMED_ROUTES = {"/api/session": "session", "/api/calls": "calls"}


# -- request / response models ------------------------------------------------------------------


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    persona: str = Field(DEFAULT_PERSONA, min_length=1, max_length=128, examples=["negotiator/sarah"])


class SessionResponse(BaseModel):
    value: str = Field(description="The ephemeral key (ek_...) for the browser's SDP POST.")
    expires_at: int
    model: str
    calls_url: str = Field(description="Where the browser posts its SDP offer with the key.")
    call_id: str = Field(description="This call's id on the Parley server, for /api/calls/{id}/events.")
    events_url: str
    persona: dict[str, Any]


class CallRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sdp: str = Field(min_length=1, description="The browser's SDP offer.")
    persona: str = Field(DEFAULT_PERSONA, min_length=1, max_length=128)


class EventsReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[dict[str, Any]] = Field(description="Server events as the data channel delivered them.")
    upstream_call_id: str | None = Field(None, pattern=r"^rtc_[A-Za-z0-9_-]{1,100}$",
                                         description="The upstream call id (Location of the SDP answer).")


class CopilotAnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mic_call_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    speaker_call_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    question: str | None = Field(None, max_length=4000, description="Their latest line, as the page heard it.")


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=4096)


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Bad input (malformed JSON, invalid SDP, unknown persona)"},
    401: {"description": "Not signed in"},
    404: {"description": "No such call"},
    409: {"description": "The call is not in a state for this"},
    413: {"description": "Body too large"},
    422: {"description": "Invalid fields"},
    429: {"description": "Rate limit, concurrent-call cap or daily cost cap (see Retry-After)"},
    502: {"description": "The upstream failed"},
    504: {"description": "The upstream timed out"},
}

CALLS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/sdp": {"schema": {"type": "string"}},
            "application/json": {"schema": {
                "type": "object", "additionalProperties": False, "required": ["sdp"],
                "properties": {"sdp": {"type": "string"}, "persona": {"type": "string"}}}},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["sdp"],
                "properties": {"sdp": {"type": "string"}, "persona": {"type": "string"}}}},
        },
    },
    "parameters": [{"name": "persona", "in": "query", "required": False, "schema": {"type": "string"},
                    "description": "The persona, with an application/sdp body."}],
}


# -- middleware -----------------------------------------------------------------------------------


AUDIO_UPLOAD = re.compile(r"^/api/calls/[^/]+/audio$")
AUDIO_TYPES = {"audio/webm": "webm", "audio/ogg": "ogg", "audio/wav": "wav", "audio/mp4": "m4a"}


class ServerMiddleware:
    """Timing (Server-Timing, the added-latency metric), cookies set by auth, safety headers."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body: int, max_audio: int) -> None:
        self.app, self.metrics, self.max_body, self.max_audio = app, metrics, max_body, max_audio

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = error_response(413, f"The request body is larger than {limit} bytes.", "body_too_large")
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A call's recording is the one large body the server takes.
        limit = self.max_audio if AUDIO_UPLOAD.match(scope["path"]) else self.max_body
        length = Headers(scope=scope).get("content-length")
        if length is not None:
            if not length.isdigit():
                await error_response(400, "Invalid Content-Length.", "invalid_request")(scope, receive, send)
                return
            if int(length) > limit:
                await self._too_large(scope, receive, send, limit)
                return
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise StarletteHTTPException(413, "body too large")
            return message

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
            await self.app(scope, receive_limited, send_wrapped)
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


def _self_url(request: Request, settings: ServerSettings) -> str | None:
    if settings.self_url:
        return settings.self_url
    server = request.scope.get("server")
    if not server or server[1] is None:
        return None
    host, port = server[0], server[1]
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if request.scope.get("scheme") in ("https", "wss") else "http"
    return f"{scheme}://{host}:{port}"


def _web_dir() -> Path | None:
    try:
        path = Path(str(resources.files("parley") / "web"))
    except (ModuleNotFoundError, TypeError):
        return None
    return path if path.is_dir() else None


@functools.cache
def _card(persona_id: str) -> dict[str, Any]:
    return find_persona(persona_id).card()


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


def create_app(settings: ServerSettings | None = None, *, engine: Any = None,
               authenticator: Authenticator | None = None) -> FastAPI:
    """The server app. `engine`: the in-process engine to mount (upstream "local"; default a new one)."""
    settings = settings or ServerSettings()
    metrics = Metrics()
    prices: PriceTable = PriceTable.from_file(settings.prices) if settings.prices else DEFAULT_TABLE

    engine_app: FastAPI | None = None
    internal_key: str | None = None
    if settings.upstream_kind == "local":
        from parley.engine.app import Engine, EngineSettings
        from parley.engine.app import create_app as create_engine_app

        engine = engine or Engine(EngineSettings())
        # The mounted engine takes only ephemeral keys and the server's own key (plus any configured
        # PARLEY_ENGINE_API_KEYS): nobody reaches it unrecorded with a made-up key.
        internal_key = "sk-parley-internal-" + secrets.token_urlsafe(24)
        engine.settings.api_keys = [*engine.settings.api_keys, internal_key]
        engine_app = create_engine_app(engine)

    upstream = Upstream(settings, metrics, engine_app=engine_app, internal_key=internal_key, engine=engine)
    store = Store(settings.database)
    calls = CallManager(settings, store, upstream, metrics, prices)
    signer = Signer(_session_secret(settings))
    auth = authenticator or _authenticator(settings, signer)
    limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    events_limiter = RateLimiter(settings.rate_limit_per_minute * 30, settings.rate_limit_burst * 24)
    login_limiter = RateLimiter(10, 5)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await store.start()
        await calls.start()
        nested: contextlib.AbstractAsyncContextManager[Any] = (
            engine_app.router.lifespan_context(engine_app) if engine_app is not None else contextlib.nullcontext())
        try:
            async with nested:
                yield
                await calls.shutdown()
        finally:
            await upstream.aclose()
            await store.close()

    app = FastAPI(title="Parley server", version="0.1.0", lifespan=lifespan,
                  description="Ephemeral keys, server-held calls with sideband recording, limits and storage.")
    app.state.settings, app.state.store, app.state.calls = settings, store, calls
    app.state.metrics, app.state.upstream, app.state.engine = metrics, upstream, engine
    app.add_middleware(ServerMiddleware, metrics=metrics, max_body=settings.max_body_bytes,
                       max_audio=settings.max_audio_bytes)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=True,
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["Location", "X-Parley-Call-Id", "Retry-After", "Server-Timing"])

    # -- errors -----------------------------------------------------------------------------------

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(UpstreamError)
    async def _upstream_error(_request: Request, exc: UpstreamError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "Malformed JSON body.", "invalid_json")
        details = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", ""))[:300],
                    "type": str(e.get("type", ""))} for e in errors[:20]]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(x for x in first["loc"] if x != "body") or "request"
        return error_response(422, f"Invalid {where}: {first['msg']}", "invalid_request", details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type"}
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 413:
            message = f"The request body is larger than {settings.max_body_bytes} bytes."
        return error_response(exc.status_code, message, codes.get(exc.status_code, "http_error"),
                              headers=dict(exc.headers or {}))

    @app.exception_handler(SQLAlchemyError)
    async def _storage(_request: Request, exc: SQLAlchemyError) -> JSONResponse:
        log.error("storage failed: %s", type(exc).__name__, exc_info=exc)
        return error_response(503, "The server's database is unavailable; try again shortly.", "storage_unavailable",
                              headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _crash(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error: %s", scrub(repr(exc), upstream.secret), exc_info=exc)
        return error_response(500, "Internal server error.", "internal_error")

    # -- dependencies -----------------------------------------------------------------------------

    async def who(request: Request) -> Principal:
        return await auth.authenticate(request)

    async def limited(request: Request, principal: Annotated[Principal, Depends(who)]) -> Principal:
        wait = limiter.acquire(principal.limit_key)
        if wait is not None:
            metrics.inc("parley_rate_limited_total", reason="rate")
            raise ApiError(429, f"Too many requests; try again in {retry_after(wait)} s.", "rate_limited",
                           headers={"Retry-After": retry_after(wait)})
        return principal

    Who = Annotated[Principal, Depends(who)]
    Limited = Annotated[Principal, Depends(limited)]
    CallId = Annotated[str, PathParam(pattern=CALL_ID, max_length=64)]

    async def owned_call(call_id: str, principal: Principal) -> Any:
        call = await store.get_call(call_id)
        if call is None or call.user_id != principal.user_id:
            raise ApiError(404, "No such call.", "call_not_found")
        return call

    # -- health and metrics -----------------------------------------------------------------------

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> JSONResponse:
        try:
            await asyncio.wait_for(store.ping(), 5)
            db = "ok"
        except Exception:
            db = "unavailable"
        body = {"status": "ok" if db == "ok" else "degraded", "upstream": upstream.kind, "database": db,
                "calls_active": calls.active_count()}
        return JSONResponse(body, status_code=200 if db == "ok" else 503)

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def prometheus(request: Request) -> PlainTextResponse:
        if settings.metrics_token is not None:
            given = (request.headers.get("authorization") or "")[7:].strip()
            if not secrets.compare_digest(given.encode(), settings.metrics_token.get_secret_value().encode()):
                raise ApiError(401, "The metrics need Authorization: Bearer <PARLEY_METRICS_TOKEN>.", "unauthorized")
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # -- who am I ---------------------------------------------------------------------------------

    @app.get("/api/me", tags=["auth"], responses=ERRORS)
    async def me(principal: Who) -> dict[str, Any]:
        return {"user_id": principal.user_id, "auth": settings.auth, "method": principal.method}

    @app.post("/api/login", tags=["auth"], responses=ERRORS)
    async def login(request: Request, body: LoginRequest) -> dict[str, Any]:
        if not isinstance(auth, CookieAuth):
            raise ApiError(404, "Sign-in is only used with PARLEY_AUTH=cookie.", "not_found")
        wait = login_limiter.acquire("login:" + client_address(request, settings.trust_forwarded_for))
        if wait is not None:
            raise ApiError(429, "Too many sign-in attempts.", "rate_limited", headers={"Retry-After": retry_after(wait)})
        user = auth.tokens.user_for(body.token)
        if user is None:
            raise ApiError(401, "Unknown token.", "unauthorized")
        set_cookie_later(request, SESSION_COOKIE, auth.session_cookie(user, settings.session_ttl_seconds),
                         settings.session_ttl_seconds, settings.cookie_secure)
        return {"user_id": user}

    @app.post("/api/logout", tags=["auth"])
    async def logout(request: Request) -> dict[str, Any]:
        for name in (SESSION_COOKIE, CLIENT_COOKIE):
            if name in request.cookies:
                set_cookie_later(request, name, "", 0, settings.cookie_secure)
        return {"ok": True}

    # -- personas ---------------------------------------------------------------------------------

    @app.get("/api/personas", tags=["calls"])
    async def personas() -> list[dict[str, Any]]:
        return [p.card() for p in list_personas()]

    # -- browser-direct: ephemeral keys -----------------------------------------------------------

    @app.post("/api/session", tags=["calls"], response_model=SessionResponse, responses=ERRORS)
    async def create_session(request: Request, principal: Limited,
                             body: Annotated[SessionRequest | None, Body()] = None) -> JSONResponse:
        persona = find_persona((body or SessionRequest()).persona)
        await calls.check_daily_cap(principal.user_id)
        call_id = calls.register_direct(principal, persona, settings.model, settings.ephemeral_key_ttl_seconds)
        try:
            from .personas import persona_session

            secret = await upstream.mint(persona_session(persona, settings), settings.ephemeral_key_ttl_seconds)
        except BaseException:
            calls.direct.pop(call_id, None)
            calls.slots.release(call_id)
            raise
        metrics.inc("parley_sessions_total")
        session = secret.get("session")
        if not isinstance(session, dict):
            session = {}
        # A JSONResponse straight away: FastAPI would validate and serialize the model field by field.
        return JSONResponse({"value": str(secret["value"]), "expires_at": int(secret.get("expires_at") or 0),
                             "model": str(session.get("model") or settings.model),
                             "calls_url": upstream.calls_url(str(request.base_url)),
                             "call_id": call_id, "events_url": f"/api/calls/{call_id}/events",
                             "persona": _card(persona.id)})

    # -- server-held calls ------------------------------------------------------------------------

    async def read_offer(request: Request) -> tuple[str, str, bool]:
        ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        accept = request.headers.get("accept") or ""
        if ctype == "application/sdp":
            raw = await request.body()
            try:
                sdp = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(400, "Invalid SDP offer: it is not UTF-8 text.", "invalid_sdp") from None
            persona = request.query_params.get("persona") or DEFAULT_PERSONA
            return sdp, persona, "application/json" in accept
        if ctype == "application/json":
            raw = await request.body()
            try:
                data = json.loads(raw)
            except ValueError:
                raise ApiError(400, "Malformed JSON body.", "invalid_json") from None
            try:
                req = CallRequest.model_validate(data)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(x) for x in first.get("loc", ())) or "body"
                raise ApiError(422, f"Invalid {where}: {first.get('msg')}", "invalid_request") from None
            return req.sdp, req.persona, "application/sdp" not in accept
        if ctype == "multipart/form-data":
            try:
                form = await request.form(max_files=0, max_fields=4, max_part_size=settings.max_sdp_bytes)
            except MultiPartException as exc:
                raise ApiError(400, f"Malformed multipart body: {exc.message}", "invalid_multipart") from None
            fields = {k: v for k, v in form.multi_items()}
            extra = set(fields) - {"sdp", "persona"}
            if extra:
                raise ApiError(400, f"Unknown form field {sorted(extra)[0]!r}: send 'sdp' and 'persona' (the server "
                                    "builds the session from the persona).", "unknown_parameter")
            sdp_field, persona_field = fields.get("sdp"), fields.get("persona")
            if not isinstance(sdp_field, str):
                raise ApiError(400, "The form needs an 'sdp' field.", "missing_sdp")
            persona = persona_field if isinstance(persona_field, str) and persona_field else DEFAULT_PERSONA
            return sdp_field, persona, "application/json" in accept
        raise ApiError(415, "Send the offer as application/sdp (persona in ?persona=), application/json "
                            "{\"sdp\", \"persona\"} or multipart/form-data (sdp, persona).", "unsupported_media_type")

    @app.post("/api/calls", tags=["calls"], status_code=201, responses=ERRORS, openapi_extra=CALLS_BODY,
              response_class=Response)
    async def create_call(request: Request, principal: Limited) -> Response:
        sdp, persona_id, want_json = await read_offer(request)
        persona = find_persona(persona_id[:128])
        offer = validate_offer(sdp, settings.max_sdp_bytes)
        call_id, answer = await calls.start_call(principal, persona, offer, self_url=_self_url(request, settings))
        headers = {"Location": f"/api/calls/{call_id}", "X-Parley-Call-Id": call_id}
        if want_json:
            return JSONResponse({"call_id": call_id, "type": "answer", "sdp": answer, "persona": _card(persona.id),
                                 "model": settings.model}, status_code=201, headers=headers)
        return Response(answer, status_code=201, media_type="application/sdp", headers=headers)

    @app.get("/api/calls", tags=["calls"], responses=ERRORS)
    async def list_calls(principal: Who, limit: Annotated[int, Query(ge=1, le=100)] = 50,
                         offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> list[dict[str, Any]]:
        return [call_summary(c, settings) for c in await store.list_calls(principal.user_id, limit=limit, offset=offset)]

    @app.get("/api/calls/{call_id}", tags=["calls"], responses=ERRORS)
    async def get_call(call_id: CallId, principal: Who) -> dict[str, Any]:
        call = await owned_call(call_id, principal)
        detail = call_detail(call, await store.items(call_id), await store.usage(call_id), settings)
        return {**detail, "has_audio": recording(call_id) is not None}

    def recording(call_id: str) -> Path | None:
        return next((p for p in (settings.data_dir / "audio").glob(f"{call_id}.*") if p.is_file()), None)

    @app.post("/api/calls/{call_id}/audio", tags=["calls"], responses=ERRORS)
    async def upload_audio(request: Request, call_id: CallId, principal: Who) -> dict[str, Any]:
        """The call's recording (microphone and agent, mixed in the browser)."""
        await owned_call(call_id, principal)
        kind = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if kind not in AUDIO_TYPES:
            raise ApiError(415, f"Send the recording as one of {', '.join(AUDIO_TYPES)}.", "unsupported_media_type")
        data = await request.body()
        if len(data) < 64:
            raise ApiError(400, "The recording is empty.", "empty_recording")
        folder = settings.data_dir / "audio"
        folder.mkdir(parents=True, exist_ok=True)
        old = recording(call_id)
        if old is not None:
            old.unlink()
        path = folder / f"{call_id}.{AUDIO_TYPES[kind]}"
        await asyncio.to_thread(path.write_bytes, data)
        return {"call_id": call_id, "bytes": len(data), "type": kind}

    @app.get("/api/calls/{call_id}/audio", tags=["calls"], responses=ERRORS, response_class=FileResponse)
    async def download_audio(call_id: CallId, principal: Who) -> FileResponse:
        await owned_call(call_id, principal)
        path = recording(call_id)
        if path is None:
            raise ApiError(404, "This call has no recording.", "no_recording")
        kind = next(k for k, ext in AUDIO_TYPES.items() if path.suffix == f".{ext}")
        return FileResponse(path, media_type=kind, filename=f"{call_id}{path.suffix}")

    @app.get("/api/calls/{call_id}/transcript", tags=["calls"], responses=ERRORS, response_class=Response)
    async def transcript(request: Request, call_id: CallId, principal: Who,
                         format: Annotated[Literal["md", "markdown", "json"] | None, Query()] = None) -> Response:
        call = await owned_call(call_id, principal)
        items = await store.items(call_id)
        if format is None:
            accept = request.headers.get("accept") or ""
            format = "md" if ("text/markdown" in accept or "text/plain" in accept) else "json"
        if format in ("md", "markdown"):
            return Response(markdown(call, items, settings), media_type="text/markdown; charset=utf-8",
                            headers={"Content-Disposition": f'inline; filename="{call_id}.md"'})
        return JSONResponse(call_detail(call, items, await store.usage(call_id), settings))

    @app.post("/api/calls/{call_id}/escalate", tags=["calls"], responses=ERRORS)
    async def escalate(call_id: CallId, principal: Who) -> dict[str, Any]:
        await owned_call(call_id, principal)
        persona: Persona = await calls.escalate(call_id)
        return {"call_id": call_id, "persona": {"id": persona.id, "name": persona.name, "role": persona.role}}

    @app.post("/api/calls/{call_id}/hangup", tags=["calls"], responses=ERRORS)
    async def hangup(call_id: CallId, principal: Who) -> dict[str, Any]:
        status, reason = await calls.hangup(principal, call_id)
        return {"call_id": call_id, "status": status, "end_reason": reason}

    @app.post("/api/calls/{call_id}/events", tags=["calls"], responses=ERRORS)
    async def report_events(call_id: CallId, principal: Who, body: EventsReport) -> dict[str, Any]:
        wait = events_limiter.acquire(principal.limit_key)
        if wait is not None:
            metrics.inc("parley_rate_limited_total", reason="events")
            raise ApiError(429, "Too many event reports; batch them.", "rate_limited",
                           headers={"Retry-After": retry_after(wait)})
        if len(body.events) > settings.max_events_per_report:
            raise ApiError(413, f"At most {settings.max_events_per_report} events per report.", "too_many_events")
        return await calls.report(principal, call_id, body.events, body.upstream_call_id)

    # -- the copilot -------------------------------------------------------------------------------

    copilot_answerer = answerer_for(settings)

    @app.get("/api/copilot", tags=["copilot"])
    async def copilot_info(principal: Who) -> dict[str, Any]:  # the dependency sets the visitor's cookie
        return {"answerer": copilot_answerer.label, "personas": [p.card()["persona"] for p in COPILOT.values()]}

    @app.post("/api/copilot/answer", tags=["copilot"], responses=ERRORS, response_class=StreamingResponse)
    async def copilot_answer(body: CopilotAnswerRequest, principal: Who) -> StreamingResponse:
        call = await owned_call(body.mic_call_id, principal)
        if call.persona != "copilot/mic":
            raise ApiError(400, "mic_call_id must be a copilot/mic call.", "not_a_copilot_call", param="mic_call_id")
        return StreamingResponse(stream_answer(store, call.id, copilot_answerer, body.question),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def api_not_found(rest: str) -> JSONResponse:
        return error_response(404, f"No such endpoint: /api/{rest[:100]}", "not_found")

    # -- mounts -----------------------------------------------------------------------------------

    if engine_app is not None:
        app.mount("/v1", _AtRoot(engine_app), name="engine")
    web = _web_dir()
    if web is not None:
        app.mount("/", StaticFiles(directory=web, html=True, check_dir=False), name="web")
    return app


# -- running ----------------------------------------------------------------------------------------


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
    import uvicorn

    from parley.engine.app import WS_MAX_MESSAGE_BYTES
    from parley.util.serving import quiet_denied_handshakes

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
    handler.addFilter(_Redact(settings.upstream_key))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
    try:
        app = create_app(settings)
    except (OSError, ValueError) as exc:  # e.g. an unreadable or malformed PARLEY_PRICES file
        raise SystemExit(f"parley serve: {scrub(str(exc), settings.upstream_key)}") from None
    from sqlalchemy.engine import make_url

    db = make_url(settings.database).render_as_string(hide_password=True)
    upstream = {"local": "the local engine, in process at /v1", "openai": f"OpenAI ({settings.openai_base_url})",
                "url": f"{settings.upstream_url}"}[settings.upstream_kind]
    log.info("Parley server on http://%s:%d — upstream: %s; database: %s; auth: %s",
             host, port, upstream, db, settings.auth)
    quiet_denied_handshakes()
    uvicorn.run(app, host=host, port=port, log_config=None, log_level=settings.log_level.lower(),
                ws_max_size=WS_MAX_MESSAGE_BYTES + 1024, proxy_headers=settings.trust_forwarded_for,
                server_header=False)
