"""The upstream realtime service, through the official `openai` SDK.

One `Upstream` per server: the in-process engine (reached without a socket for HTTP; its
sideband WebSocket goes to the server's own listening address), OpenAI, any engine by URL, or a
pool of engines (`parley.server.pool`: a new call goes to the least-loaded, a call's later
requests to the engine its id names).
Every operation has a deadline; failures become `UpstreamError` (502, or 504 on a timeout) with
a reason that never carries the key. Minting a key and hanging up are retried by the SDK (safe to
repeat); creating a call is retried only when the connection was refused (the offer never
arrived), because a repeated offer could open two calls.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import httpx2
import openai
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection

from parley.http.errors import ApiError
from parley.protocol.limits import MAX_EVENT_BYTES

from .errors import scrub
from .metrics import Metrics
from .pool import EnginePool, NoEngine
from .settings import ServerSettings

log = logging.getLogger(__name__)

LOCAL_BASE = "http://parley-engine.internal/v1"
POOL_BASE = "http://parley-pool.invalid/v1"  # (never used: each request goes to an engine of the pool)

# Seconds spent waiting for the upstream during the current request (for Server-Timing and the
# "added latency" metric): the middleware puts a fresh list here per request.
upstream_time: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("upstream_time", default=None)


CALL_GONE = "upstream_call_gone"  # an UpstreamError's code: the upstream has no such call (any more)


class UpstreamError(ApiError):
    """The upstream failed (502, 504), or refused what we sent on the caller's behalf (400)."""

    def __init__(self, status: int, message: str, code: str = "upstream_error",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message, code, headers=headers)


class _RedactHeaders(logging.Filter):
    """websockets logs handshake headers at DEBUG; never let the Authorization header through."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple) and len(record.args) >= 2 \
                and isinstance(record.args[0], str) and record.args[0].lower() == "authorization":
            record.args = (record.args[0], "[redacted]", *record.args[2:])
        return True


_ws_logger = logging.getLogger("parley.server.sideband.ws")
_ws_logger.addFilter(_RedactHeaders())


def call_id_from_location(location: str | None) -> str | None:
    if not location:
        return None
    tail = location.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return tail or None


class Upstream:
    def __init__(self, settings: ServerSettings, metrics: Metrics, *, engine_app: Any = None,
                 internal_key: str | None = None, engine: Any = None) -> None:
        self.settings = settings
        self._engine = engine if settings.upstream_kind == "local" else None
        self.kind = settings.upstream_kind
        self.metrics = metrics
        timeout = httpx2.Timeout(settings.upstream_timeout_seconds, connect=min(5.0, settings.upstream_timeout_seconds))
        self.timeout = settings.upstream_timeout_seconds
        if self.kind == "local":
            if engine_app is None or internal_key is None:
                raise ValueError("the local upstream needs the engine app and its internal key")
            self._key = internal_key
            http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=engine_app), base_url=LOCAL_BASE,
                                      timeout=timeout)
            self.base_url = LOCAL_BASE
        else:
            key = settings.upstream_key
            assert key is not None
            self._key = key
            self.base_url = {"url": settings.upstream_url, "pool": POOL_BASE}.get(self.kind) or settings.openai_base_url
            http = httpx2.AsyncClient(timeout=timeout, follow_redirects=False)
        self._http = http
        self.client = AsyncOpenAI(api_key=self._key, base_url=self.base_url, http_client=http,
                                  max_retries=settings.upstream_retries, timeout=timeout)
        self.pool: EnginePool | None = None
        self._clients: dict[str, AsyncOpenAI] = {}  # a pool's engines by base URL
        if self.kind == "pool":
            assert settings.redis_url is not None
            self.pool = EnginePool(settings.redis_url, settings.redis_prefix, max_calls=settings.upstream_pool_max_calls,
                                   max_cpu=settings.upstream_pool_max_cpu)

    async def start(self) -> None:
        if self.pool is not None:
            await self.pool.start()

    @property
    def secret(self) -> str:
        """The key the server uses upstream (for scrubbing; never to be shown)."""
        return self._key

    async def aclose(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()
        await self._http.aclose()

    # -- which engine (a pool: per call; otherwise the one client) -------------------------------

    def _at(self, url: str) -> AsyncOpenAI:
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = self.client.with_options(base_url=url)
        return client

    def _new(self) -> AsyncOpenAI:
        """The client for a new call, key or session: in a pool, the least-loaded engine's."""
        if self.pool is None:
            return self.client
        try:
            return self._at(self.pool.pick().url)
        except NoEngine as exc:
            self.metrics.inc("parley_upstream_errors_total", operation="pool", status="no_engine")
            raise UpstreamError(503, f"No engine can take a call now: {exc}; try again shortly.", "no_engine_available",
                                headers={"Retry-After": "2"}) from None

    def _of(self, call_id: str) -> AsyncOpenAI:
        """The client for an existing call: in a pool, the engine its id names."""
        if self.pool is None:
            return self.client
        url = self.pool.url_for(call_id)
        if url is None:
            raise UpstreamError(502, "No engine of the pool has this call (its id names none that is known).",
                                CALL_GONE)
        return self._at(url)

    # -- helpers ----------------------------------------------------------------------------------

    @contextmanager
    def _timed(self, operation: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.metrics.observe("parley_upstream_seconds", elapsed, operation=operation)
            spent = upstream_time.get()
            if spent is not None:
                spent.append(elapsed)

    def _error(self, operation: str, exc: BaseException) -> UpstreamError:
        if isinstance(exc, openai.APITimeoutError | asyncio.TimeoutError | TimeoutError):
            status, err = 504, UpstreamError(504, f"The upstream did not answer {operation} within "
                                                  f"{self.timeout:g} s.", "upstream_timeout")
        elif isinstance(exc, openai.APIStatusError):
            code = exc.status_code
            status = code
            if code in (401, 403):
                err = UpstreamError(502, f"The upstream refused the server's credentials ({code}) for {operation}.",
                                    "upstream_auth")
            elif code == 429:
                err = UpstreamError(502, f"The upstream is rate limiting the server ({operation}); try again later.",
                                    "upstream_rate_limited")
            else:
                detail = _message(exc)
                err = UpstreamError(502, f"The upstream failed {operation} ({code}): "
                                         f"{scrub(detail, self._key)}", "upstream_error")
        elif isinstance(exc, openai.APIConnectionError):
            status = 0
            cause = exc.__cause__ or exc.__context__
            err = UpstreamError(502, f"The upstream is unreachable ({type(cause).__name__ if cause else 'connection error'}) "
                                     f"for {operation}.", "upstream_unreachable")
        else:
            status = -1
            err = UpstreamError(502, f"The upstream failed {operation} ({type(exc).__name__}).", "upstream_error")
        self.metrics.inc("parley_upstream_errors_total", operation=operation, status=str(status))
        log.warning("upstream %s failed: %s", operation, err.message)
        return err

    # -- operations -------------------------------------------------------------------------------

    async def mint(self, session: dict[str, Any], ttl: int) -> dict[str, Any]:
        """POST /realtime/client_secrets: {"value": "ek_...", "expires_at": ..., "session": {...}}."""
        if self._engine is not None:
            return self._mint_in_process(session, ttl)
        with self._timed("client_secrets"):
            try:
                async with asyncio.timeout(self.timeout * (self.settings.upstream_retries + 1) + 5):
                    # The body as extra_body: the SDK would otherwise walk the whole session through
                    # its TypedDict transform on every call (~1 ms), for a dict that is already wire-shaped.
                    raw = await self._new().realtime.client_secrets.with_raw_response.create(
                        extra_body={"expires_after": {"anchor": "created_at", "seconds": ttl}, "session": session})
                    body = raw.http_response.json()
            except Exception as exc:
                raise self._error("client_secrets", exc) from None
        if not isinstance(body, dict) or not str(body.get("value", "")).startswith("ek_"):
            self.metrics.inc("parley_upstream_errors_total", operation="client_secrets", status="bad_body")
            raise UpstreamError(502, "The upstream answered client_secrets without an ephemeral key.", "upstream_error")
        return body

    def _mint_in_process(self, session: dict[str, Any], ttl: int) -> dict[str, Any]:
        """The in-process engine's client_secrets without the HTTP round trip through ourselves.

        Minting is the one hot path (every browser-direct call, hundreds a second): the SDK's request
        pipeline, an ASGI request and the engine's endpoint cost ~3x what the minting itself does. The
        same engine method and session validation run; OpenAI and engines by URL go through the SDK."""
        from parley.protocol.errors import ProtocolError
        from parley.protocol.session import parse_session

        assert self._engine is not None
        with self._timed("client_secrets"):
            try:
                secret = self._engine.mint_secret(parse_session(session), ttl)
            except ProtocolError as exc:
                self.metrics.inc("parley_upstream_errors_total", operation="client_secrets", status="400")
                raise UpstreamError(502, f"The engine refused the session config: {exc.message}",
                                    "upstream_error") from None
        return {"value": secret.value, "expires_at": secret.expires_at,
                "session": {"model": getattr(secret.config, "model", self.settings.model)}}

    async def create_call(self, sdp: str, session: dict[str, Any]) -> tuple[str, str]:
        """POST /realtime/calls (multipart sdp + session): (SDP answer, upstream call id)."""
        client = self._new().with_options(max_retries=0)
        attempts = 1 + self.settings.upstream_retries
        # A pooled engine that began draining since the last read of the registry refuses: the
        # call goes to the next one (each engine at most once).
        redirects = len(self.pool.engines) if self.pool is not None else 0
        with self._timed("calls"):
            attempt = -1
            while (attempt := attempt + 1) < attempts:
                try:
                    async with asyncio.timeout(self.timeout + 5):
                        raw = await client.realtime.calls.with_raw_response.create(sdp=sdp, session=cast(Any, session))
                    answer = raw.http_response.text
                    location = raw.headers.get("location")
                    break
                except openai.APIConnectionError as exc:
                    refused = isinstance(exc.__cause__, httpx2.ConnectError) and not isinstance(exc, openai.APITimeoutError)
                    if refused and attempt + 1 < attempts:
                        await asyncio.sleep(0.2 * (attempt + 1))
                        continue
                    raise self._error("calls", exc) from None
                except openai.APIStatusError as exc:
                    if self.pool is not None and redirects > 0 and getattr(exc, "code", None) == DRAINING:
                        redirects -= 1
                        attempt -= 1
                        self.pool.draining(str(client.base_url))
                        client = self._new().with_options(max_retries=0)
                        continue
                    if 400 <= exc.status_code < 500 and exc.status_code not in (401, 403, 429):
                        self.metrics.inc("parley_upstream_errors_total", operation="calls", status=str(exc.status_code))
                        raise UpstreamError(400, "The upstream rejected the offer: "
                                                 f"{scrub(_message(exc), self._key)}", "offer_rejected") from None
                    raise self._error("calls", exc) from None
                except Exception as exc:
                    raise self._error("calls", exc) from None
        call_id = call_id_from_location(location)
        if not answer.startswith("v=0") or not call_id:
            self.metrics.inc("parley_upstream_errors_total", operation="calls", status="bad_body")
            raise UpstreamError(502, "The upstream answered the offer without an SDP answer and a call id "
                                     "(Location header).", "upstream_error")
        return answer, call_id

    async def hangup(self, call_id: str) -> None:
        with self._timed("hangup"):
            try:
                async with asyncio.timeout(self.timeout + 5):
                    await self._of(call_id).realtime.calls.hangup(call_id)
            except openai.NotFoundError:
                return  # already over
            except Exception as exc:
                raise self._error("hangup", exc) from None

    # -- SIP calls (OpenAI's SIP trunking; the engine emulates it) ------------------------------

    async def accept_call(self, call_id: str, session: dict[str, Any]) -> None:
        """POST /realtime/calls/{id}/accept with the session config (a SIP call announced by webhook)."""
        body = {k: v for k, v in session.items() if k != "type"}
        await self._call_op("accept", self._of(call_id).realtime.calls.accept(call_id, type="realtime", extra_body=body))

    async def reject_call(self, call_id: str, status_code: int) -> None:
        await self._call_op("reject", self._of(call_id).realtime.calls.reject(call_id, status_code=status_code))

    async def refer_call(self, call_id: str, target_uri: str) -> None:
        await self._call_op("refer", self._of(call_id).realtime.calls.refer(call_id, target_uri=target_uri))

    async def _call_op(self, operation: str, request: Any) -> None:
        with self._timed(operation):
            try:
                async with asyncio.timeout(self.timeout + 5):
                    await request
            except Exception as exc:
                raise self._error(operation, exc) from None

    async def sideband(self, call_id: str, *, self_url: str | None) -> AsyncRealtimeConnection:
        """Open the sideband WebSocket (`/realtime?call_id=`) of a call."""
        return await self._connect("sideband", self_url, call_id=call_id)

    async def realtime(self, *, self_url: str | None) -> AsyncRealtimeConnection:
        """Open a realtime session over WebSocket (`/realtime?model=`): the server carries its audio
        (a phone call it bridges); the caller sends `session.update` first."""
        return await self._connect("realtime", self_url, model=self.settings.model)

    async def _connect(self, operation: str, self_url: str | None, **query: str) -> AsyncRealtimeConnection:
        client = self._of(query["call_id"]) if "call_id" in query else self._new()
        if self.kind == "local":
            if not self_url:
                raise UpstreamError(502, f"The server does not know its own address for the {operation} "
                                         "WebSocket (set PARLEY_SELF_URL).", "upstream_error")
            ws = self_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
            client = client.with_options(websocket_base_url=f"{ws}/v1")
        options = cast(Any, {"max_size": MAX_EVENT_BYTES, "compression": None, "logger": _ws_logger,
                             "open_timeout": self.timeout, "close_timeout": 2})
        with self._timed(operation):
            try:
                async with asyncio.timeout(self.timeout + 5):
                    return await client.realtime.connect(websocket_connection_options=options,
                                                         **cast(Any, query)).enter()
            except Exception as exc:
                if _status_of(exc) == 404:
                    self.metrics.inc("parley_upstream_errors_total", operation=operation, status="404")
                    raise UpstreamError(502, "The upstream has no such call for the sideband.", CALL_GONE) from None
                raise self._error(operation, exc) from None

    def calls_url(self, request_base: str, key: str | None = None) -> str:
        """Where a browser posts its SDP offer with the ephemeral key `key` (in a pool: at its engine)."""
        if self.pool is not None and key is not None:
            url = self.pool.url_for(key)
            if url is not None:
                return f"{url}/realtime/calls"
        if self.settings.upstream_public_url:
            return f"{self.settings.upstream_public_url}/realtime/calls"
        if self.kind == "local":
            return f"{request_base.rstrip('/')}/v1/realtime/calls"
        return f"{self.base_url}/realtime/calls"


#: What a draining `parley engine` answers a new call with (engine.routes).
DRAINING = "engine_draining"


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])[:500]
    return f"HTTP {exc.status_code}"


def _status_of(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None
