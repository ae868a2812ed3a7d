"""The local engine's HTTP and WebSocket endpoints, shaped like OpenAI's.

`create_app()` returns an ASGI app serving `/v1/realtime/client_secrets`, the beta
`/v1/realtime/sessions`, and the `/v1/realtime` WebSocket; `parley engine` runs it and the
Parley server mounts it. The transport code here is thin: the protocol lives in
`engine.session`, the work in `engine.runtime`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request, WebSocket
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.websockets import WebSocketDisconnect

from parley.engine.models import LocalSpeech
from parley.engine.responders.base import Responder
from parley.engine.runtime import SessionRunner, Speech
from parley.engine.session import Session, check_transcription
from parley.engine.speech import vad
from parley.engine.webrtc import Call, pin_host_addresses
from parley.protocol import ids
from parley.protocol.beta import session_from_beta, session_to_beta
from parley.protocol.errors import ProtocolError
from parley.protocol.session import (
    RealtimeSessionConfig,
    SessionConfig,
    TranscriptionSessionConfig,
    parse_session,
    session_resource,
)

log = logging.getLogger(__name__)

SECRET_TTL_DEFAULT = 600
SECRET_TTL_RANGE = (10, 7200)
# A 15 MiB append is ~20 MiB of base64; frames above this are refused by the server.
WS_MAX_MESSAGE_BYTES = 24 * 1024 * 1024


class EngineSettings(BaseSettings):
    """Settings of the local engine (environment variables `PARLEY_ENGINE_*`, or `.env`)."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_ENGINE_", env_file=".env", extra="ignore")

    # Standard keys the engine accepts. Empty: any non-empty key (fine on loopback, say so).
    api_keys: list[str] = Field(default_factory=list)
    responder: Literal["scenario", "chat"] = "scenario"
    chat_url: str | None = None  # an OpenAI-compatible base URL, e.g. http://127.0.0.1:11434/v1
    chat_model: str = "llama3.2"
    chat_api_key: str | None = None
    # Host addresses offered as ICE candidates for WebRTC calls (empty: the machine's own).
    ice_hosts: list[str] = Field(default_factory=list)
    warm_up: bool = True


def openai_error(status: int, message: str, *, code: str | None = None, param: str | None = None,
                 type: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse(status_code=status,
                        content={"error": {"message": message, "type": type, "param": param, "code": code}})


@dataclass(frozen=True)
class ClientSecret:
    value: str
    expires_at: int
    config: SessionConfig


class AuthError(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code

    def response(self) -> JSONResponse:
        return openai_error(self.status, self.message, code=self.code)


class Engine:
    """State shared by all sessions of one engine: keys, secrets, models, live sessions."""

    def __init__(self, settings: EngineSettings | None = None, *, speech: Speech | None = None,
                 responder: Responder | None = None) -> None:
        self.settings = settings or EngineSettings()
        self._speech = speech
        self._responder = responder
        self._secrets: dict[str, ClientSecret] = {}
        self._purged_at = 0.0
        self.runners: dict[str, SessionRunner] = {}
        self.calls: dict[str, Call] = {}
        self.late_frames = 0  # agent audio frames sent more than a frame late, over ended calls
        if self.settings.ice_hosts:
            pin_host_addresses(self.settings.ice_hosts)

    @property
    def speech(self) -> Speech:
        if self._speech is None:
            self._speech = LocalSpeech()
        return self._speech

    @property
    def responder(self) -> Responder:
        if self._responder is None:
            if self.settings.responder == "chat":
                from parley.engine.responders.chat import ChatResponder

                if not self.settings.chat_url:
                    raise RuntimeError("PARLEY_ENGINE_CHAT_URL is required with the chat responder")
                self._responder = ChatResponder(self.settings.chat_url, api_key=self.settings.chat_api_key,
                                                model=self.settings.chat_model)
            else:
                from parley.engine.responders.copilot import CopilotResponder
                from parley.engine.responders.scenario import ScenarioResponder

                self._responder = ScenarioResponder(fallback=CopilotResponder())
        return self._responder

    # -- keys ---------------------------------------------------------------------------------

    def authenticate(self, key: str | None) -> ClientSecret | None:
        """None for a valid standard key, the secret for a valid ephemeral key; else AuthError."""
        if not key:
            raise AuthError(401, "You didn't provide an API key. Provide it in an Authorization header "
                                 "(Bearer auth) or, from a browser, as an 'openai-insecure-api-key.' subprotocol.",
                            "missing_api_key")
        if key.startswith("ek_"):
            secret = self._secrets.get(key)
            if secret is None:
                raise AuthError(401, "Incorrect API key provided: the ephemeral key is unknown.", "invalid_api_key")
            if secret.expires_at <= time.time():
                del self._secrets[key]
                raise AuthError(401, "The ephemeral key has expired. Mint a new one.", "expired_api_key")
            return secret
        if self.settings.api_keys and key not in self.settings.api_keys:
            raise AuthError(401, "Incorrect API key provided.", "invalid_api_key")
        return None

    def mint_secret(self, config: SessionConfig, ttl: int) -> ClientSecret:
        now = time.time()
        if now - self._purged_at > 1.0:  # a full sweep at most once a second keeps minting O(1)
            self._purged_at = now
            for value in [v for v, s in self._secrets.items() if s.expires_at <= now]:
                del self._secrets[value]
        secret = ClientSecret(ids.client_secret(), int(now) + ttl, config)
        self._secrets[secret.value] = secret
        return secret

    def new_runner(self, session: Session, send: Any, *, beta: bool = False, playout: Any = None) -> SessionRunner:
        def forget(_reason: str) -> None:
            self.runners.pop(session.id, None)

        runner = SessionRunner(session, send, responder=self.responder, speech=self.speech, beta=beta,
                               playout=playout, on_close=forget)
        self.runners[session.id] = runner
        return runner

    async def start_call(self, config: SessionConfig, offer_sdp: str) -> tuple[Call, str]:
        """A WebRTC call: returns it and the SDP answer."""
        await vad_ready()
        call = Call(Session(config, playback="server"), self.new_runner, on_end=self._call_ended)
        self.calls[call.id] = call
        try:
            answer = await call.answer(offer_sdp)
        except Exception:
            await call.close("bad_offer")
            raise
        return call, answer

    def _call_ended(self, call: Call) -> None:
        self.calls.pop(call.id, None)
        self.late_frames += call.track.late_frames


async def vad_ready() -> None:
    """A new session takes a VAD model from the pool; when a burst of calls has emptied it, build
    one on a thread (~40 ms) rather than in the session's constructor on the event loop."""
    if vad.idle_models() == 0:
        await asyncio.to_thread(vad.prewarm, 1)


def _bearer(value: str | None) -> str | None:
    if value and value.lower().startswith("bearer "):
        return value[7:].strip()
    return None


def create_app(engine: Engine | None = None) -> FastAPI:
    engine = engine or Engine()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        warm = engine.settings.warm_up and isinstance(engine.speech, LocalSpeech)
        if warm:
            speech = engine.speech
            assert isinstance(speech, LocalSpeech)
            await asyncio.to_thread(speech.warm_up)
            from parley.apps.scenarios import list_personas

            await asyncio.to_thread(list_personas)  # the scenarios' YAML and patterns, not on a first turn
            # What is loaded by now (models, modules) lives as long as the process: keep it out of
            # the collector's full passes, which otherwise stall every call's audio for ~50 ms.
            gc.collect()
            gc.freeze()
        yield
        for call in list(engine.calls.values()):
            await call.close("engine_shutdown")
        for runner in list(engine.runners.values()):
            await runner.close("engine_shutdown")

    app = FastAPI(title="Parley local realtime engine", lifespan=lifespan)
    app.state.engine = engine
    # Like OpenAI's API: browsers on any origin may call with a bearer key (no cookies are used),
    # and must be able to read the call id from `Location`.
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST"],
                       allow_headers=["Authorization", "Content-Type", "OpenAI-Beta"], expose_headers=["Location"])

    async def _json_body(request: Request) -> dict[str, Any] | JSONResponse:
        raw = await request.body()
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            return openai_error(400, "We could not parse the JSON body of your request.", code="invalid_json")
        if not isinstance(body, dict):
            return openai_error(400, "The request body must be a JSON object.", code="invalid_type")
        return body

    def _auth_standard(request: Request) -> JSONResponse | None:
        try:
            if engine.authenticate(_bearer(request.headers.get("authorization"))) is not None:
                return openai_error(401, "Ephemeral keys cannot create client secrets; use a standard key.",
                                    code="invalid_api_key")
        except AuthError as exc:
            return exc.response()
        return None

    def _ttl(value: Any, param: str) -> int | JSONResponse:
        if value is None:
            return SECRET_TTL_DEFAULT
        if not isinstance(value, dict):
            return openai_error(400, f"Invalid type for '{param}': expected an object.", code="invalid_type",
                                param=param)
        seconds = value.get("seconds", SECRET_TTL_DEFAULT)
        if value.get("anchor", "created_at") != "created_at":
            return openai_error(400, f"Invalid '{param}.anchor': only 'created_at' is supported.",
                                code="invalid_value", param=f"{param}.anchor")
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not (
            SECRET_TTL_RANGE[0] <= seconds <= SECRET_TTL_RANGE[1]
        ):
            return openai_error(400, f"Invalid '{param}.seconds': expected an integer between "
                                     f"{SECRET_TTL_RANGE[0]} and {SECRET_TTL_RANGE[1]}.",
                                code="invalid_value", param=f"{param}.seconds")
        return seconds

    @app.post("/v1/realtime/client_secrets")
    async def client_secrets(request: Request) -> Any:
        if (denied := _auth_standard(request)) is not None:
            return denied
        body = await _json_body(request)
        if isinstance(body, JSONResponse):
            return body
        unknown = set(body) - {"expires_after", "session"}
        if unknown:
            name = sorted(unknown)[0]
            return openai_error(400, f"Unknown parameter: '{name}'.", code="unknown_parameter", param=name)
        ttl = _ttl(body.get("expires_after"), "expires_after")
        if isinstance(ttl, JSONResponse):
            return ttl
        try:
            config = parse_session(body.get("session") or {"type": "realtime"})
            check_transcription(config)
        except ProtocolError as exc:
            return openai_error(400, exc.message, code=exc.code, param=exc.param)
        secret = engine.mint_secret(config, ttl)
        return {"value": secret.value, "expires_at": secret.expires_at,
                "session": session_resource(config, id=ids.session_id(), expires_at=0)}

    async def _beta_secret(request: Request, kind: Literal["realtime", "transcription"]) -> Any:
        if (denied := _auth_standard(request)) is not None:
            return denied
        body = await _json_body(request)
        if isinstance(body, JSONResponse):
            return body
        holder = body.pop("client_secret", None) or {}
        ttl = _ttl(holder.get("expires_after") or holder.get("expires_at"), "client_secret.expires_after")
        if isinstance(ttl, JSONResponse):
            return ttl
        try:
            config = parse_session(session_from_beta(body, kind=kind))
            check_transcription(config)
        except ProtocolError as exc:
            return openai_error(400, exc.message, code=exc.code, param=exc.param)
        secret = engine.mint_secret(config, ttl)
        resource = session_to_beta(session_resource(config, id=ids.session_id(), expires_at=secret.expires_at))
        return {**resource, "client_secret": {"value": secret.value, "expires_at": secret.expires_at}}

    @app.post("/v1/realtime/sessions")
    async def beta_sessions(request: Request) -> Any:
        return await _beta_secret(request, "realtime")

    @app.post("/v1/realtime/transcription_sessions")
    async def beta_transcription_sessions(request: Request) -> Any:
        return await _beta_secret(request, "transcription")

    @app.post("/v1/realtime/calls")
    async def create_call(request: Request) -> Any:
        try:
            secret = engine.authenticate(_bearer(request.headers.get("authorization")))
        except AuthError as exc:
            return exc.response()
        offer, session_part = await _read_offer(request)
        if isinstance(offer, JSONResponse):
            return offer
        if not offer.lstrip().startswith("v=0") or "m=" not in offer:
            return openai_error(400, "The body is not an SDP offer (expected 'v=0' and media sections).",
                                code="invalid_offer", param="sdp")
        try:
            if session_part is not None:
                config = parse_session(session_part)
                check_transcription(config)
            elif secret is not None:
                config = secret.config
            else:
                config = RealtimeSessionConfig()
        except ProtocolError as exc:
            return openai_error(400, exc.message, code=exc.code, param=exc.param)
        try:
            call, answer = await engine.start_call(config, offer)
        except Exception as exc:  # aiortc rejects offers it cannot answer
            log.info("offer refused: %s", exc)
            return openai_error(400, f"Could not answer the SDP offer: {exc}", code="invalid_offer", param="sdp")
        return Response(answer, status_code=201, media_type="application/sdp",
                        headers={"Location": f"/v1/realtime/calls/{call.id}"})

    @app.post("/v1/realtime/calls/{call_id}/hangup")
    async def hangup(call_id: str, request: Request) -> Any:
        try:
            engine.authenticate(_bearer(request.headers.get("authorization")))
        except AuthError as exc:
            return exc.response()
        call = engine.calls.get(call_id)
        if call is None:
            return openai_error(404, f"No call found with id '{call_id}'.", code="call_id_not_found",
                                param="call_id")
        await call.close("hangup")
        return {}

    @app.get("/v1/realtime/healthz")
    async def healthz() -> dict[str, Any]:
        late = engine.late_frames + sum(call.track.late_frames for call in engine.calls.values())
        return {"status": "ok", "sessions": len(engine.runners), "calls": len(engine.calls), "late_frames": late}

    @app.websocket("/v1/realtime")
    async def realtime(websocket: WebSocket) -> None:
        offered = list(websocket.scope.get("subprotocols") or [])
        key = _bearer(websocket.headers.get("authorization"))
        for proto in offered:
            if proto.startswith("openai-insecure-api-key."):
                key = key or proto.removeprefix("openai-insecure-api-key.")
        beta = "realtime=v1" in (websocket.headers.get("openai-beta") or "") or "openai-beta.realtime-v1" in offered
        try:
            secret = engine.authenticate(key)
        except AuthError as exc:
            await websocket.send_denial_response(exc.response())
            return
        params = websocket.query_params
        if params.get("call_id"):
            call = engine.calls.get(params["call_id"])
            if call is None:
                await _deny_unknown_call(websocket, params["call_id"])
                return
            await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
            await _sideband(websocket, call)
            return
        config: SessionConfig
        if secret is not None:
            config = secret.config
        elif params.get("intent") == "transcription":
            config = TranscriptionSessionConfig()
        else:
            config = RealtimeSessionConfig(model=params.get("model") or "gpt-realtime")
        # Browsers fail the handshake unless the server picks one of the offered subprotocols.
        await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)

        async def send(event: dict[str, Any]) -> None:
            await websocket.send_text(json.dumps(event, separators=(",", ":")))

        await vad_ready()
        session = Session(config)
        runner = engine.new_runner(session, send, beta=beta)
        await runner.start()
        closer = asyncio.create_task(_close_when_done(websocket, runner))
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                if len(data) > WS_MAX_MESSAGE_BYTES:
                    runner.feed("{}")  # reported as an invalid event, the session goes on
                    continue
                runner.feed(data)
        except WebSocketDisconnect:
            pass
        finally:
            closer.cancel()
            await runner.close("client_disconnected")

    async def _deny_unknown_call(websocket: WebSocket, call_id: str) -> None:
        await websocket.send_denial_response(openai_error(
            404, "No session found for the provided call_id", code="call_id_not_found", param="call_id"))

    return app


MAX_OFFER_BYTES = 64 * 1024


async def _read_offer(request: Request) -> tuple[str | JSONResponse, Any]:
    """The SDP offer and (multipart only) the session part, from either body the SDK or a browser sends."""
    kind = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        try:
            form = await request.form(max_part_size=MAX_OFFER_BYTES)
        except Exception as exc:
            return openai_error(400, f"Could not read the multipart body: {exc}", code="invalid_body"), None
        sdp, session = form.get("sdp"), form.get("session")
        if sdp is None:
            return openai_error(400, "Missing required parameter: 'sdp'.", code="missing_required_parameter",
                                param="sdp"), None
        sdp_text = (await sdp.read()).decode("utf-8", "replace") if not isinstance(sdp, str) else sdp
        if session is None:
            return sdp_text, None
        raw = (await session.read()).decode("utf-8", "replace") if not isinstance(session, str) else session
        try:
            return sdp_text, json.loads(raw)
        except ValueError:
            return openai_error(400, "The 'session' part is not valid JSON.", code="invalid_json",
                                param="session"), None
    body = await request.body()
    if len(body) > MAX_OFFER_BYTES:
        return openai_error(413, "The SDP offer is too large.", code="invalid_offer", param="sdp"), None
    return body.decode("utf-8", "replace"), None


async def _sideband(websocket: WebSocket, call: Call) -> None:
    """A server's control connection to a live call: every event out, client events in."""
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    stop = call.runner.listen(queue.put_nowait)
    from parley.protocol import events as ev

    queue.put_nowait(ev.session_created(call.session.resource()))

    async def pump_out() -> None:
        while (event := await queue.get()) is not None:
            await websocket.send_text(json.dumps(event, separators=(",", ":")))

    async def end_with_call() -> None:
        await call.ended.wait()
        queue.put_nowait(None)

    sender = asyncio.create_task(pump_out())
    watcher = asyncio.create_task(end_with_call())
    try:
        while True:
            receive = asyncio.ensure_future(websocket.receive())
            done, _ = await asyncio.wait({receive, sender}, return_when=asyncio.FIRST_COMPLETED)
            if sender in done:
                receive.cancel()
                break
            message = receive.result()
            if message["type"] == "websocket.disconnect":
                break
            call.runner.feed(message.get("text") or message.get("bytes") or b"")
    except WebSocketDisconnect:
        pass
    finally:
        stop()
        watcher.cancel()
        sender.cancel()
        with contextlib.suppress(Exception):
            await websocket.close(code=1000, reason=call.end_reason or "")


async def _close_when_done(websocket: WebSocket, runner: SessionRunner) -> None:
    reason = await runner.wait_closed()
    with contextlib.suppress(Exception):
        await websocket.close(code=1000 if reason != "session_expired" else 4000, reason=reason or "")
