"""The local engine's ASGI app, shaped like OpenAI's API: `create_app()` assembles it.

It serves `/v1/realtime/client_secrets`, the beta `/v1/realtime/sessions` and
`/v1/realtime/transcription_sessions`, `/v1/realtime/calls` (WebRTC) and the `/v1/realtime`
WebSocket (routers in `engine.routes`); `parley engine` runs it and the Parley server mounts it.
The transport code is thin: the protocol lives in `engine.session`, the work in `engine.runtime`,
the shared state in `engine.engine`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from parley.engine.engine import ClientSecret, Engine
from parley.engine.pool import Membership
from parley.engine.routes import calls, client_secrets, health, realtime_ws, sip_calls
from parley.engine.settings import EngineSettings
from parley.engine.speech.local import LocalSpeech
from parley.http.body import BodyLimit
from parley.http.errors import install_error_handlers

__all__ = ["ClientSecret", "Engine", "EngineSettings", "create_app"]


def create_app(engine: Engine | None = None, *, standalone: bool = False) -> FastAPI:
    """`standalone`: run as `parley engine` (drains on SIGTERM, joins a pool with PARLEY_ENGINE_REDIS_URL),
    not mounted in a server."""
    engine = engine or Engine()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        warm = engine.settings.warm_up and isinstance(engine.speech, LocalSpeech)
        if warm:
            speech = engine.speech
            assert isinstance(speech, LocalSpeech)
            await asyncio.to_thread(speech.warm_up)
            warm_responder = getattr(engine.responder, "warm_up", None)
            if warm_responder is not None:  # e.g. an app's scripts, loaded now rather than on a first turn
                await asyncio.to_thread(warm_responder)
            # What is loaded by now (models, modules) lives as long as the process: keep it out of
            # the collector's full passes, which otherwise stall every call's audio for ~50 ms.
            gc.collect()
            gc.freeze()
        if engine.settings.sip_addr:
            from parley.engine.settings import sip_host_port
            from parley.engine.sip.listener import SipListener

            secret = engine.settings.sip_webhook_secret
            engine.sip = SipListener(engine, *sip_host_port(engine.settings.sip_addr),
                                     webhook_url=engine.settings.sip_webhook_url,
                                     webhook_secret=secret.get_secret_value() if secret else None)
            await engine.sip.start()
        membership = Membership(engine) if standalone else None
        if membership is not None:
            await membership.start()
        yield
        if membership is not None:
            await membership.stop()
        for call in list(engine.calls.values()):
            await call.close("engine_shutdown")
        for runner in list(engine.runners.values()):
            await runner.close("engine_shutdown")
        if engine.sip is not None:
            await engine.sip.stop()
            engine.sip = None

    app = FastAPI(title="Parley local realtime engine", lifespan=lifespan,
                  description="OpenAI's Realtime API (client secrets, WebRTC calls, the /v1/realtime WebSocket) "
                              "from local models. Every route takes `Authorization: Bearer <key>`.")
    app.state.engine = engine
    app.add_middleware(BodyLimit, limit=engine.settings.max_body_bytes)
    # Like OpenAI's API: browsers on any origin may call with a bearer key (no cookies are used),
    # and must be able to read the call id from `Location`.
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST"],
                       allow_headers=["Authorization", "Content-Type", "OpenAI-Beta"], expose_headers=["Location"])
    install_error_handlers(app)
    for router in (client_secrets.router, calls.router, sip_calls.router, health.router, realtime_ws.router):
        app.include_router(router)
    return app

