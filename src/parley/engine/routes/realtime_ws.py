"""The `/v1/realtime` WebSocket: a session (GA or beta events), or with `?call_id=` the sideband
of a live WebRTC or SIP call (every event out, client events in)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from parley.engine.engine import AnyCall, Engine, vad_ready
from parley.engine.runtime import SessionRunner
from parley.http.bearer import bearer_token
from parley.http.errors import ApiError, error_response
from parley.protocol import events as ev
from parley.protocol.session import RealtimeSessionConfig, SessionConfig, TranscriptionSessionConfig

router = APIRouter()


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    engine: Engine = websocket.app.state.engine
    offered = list(websocket.scope.get("subprotocols") or [])
    key = bearer_token(websocket.headers.get("authorization"))
    for proto in offered:
        if proto.startswith("openai-insecure-api-key."):
            key = key or proto.removeprefix("openai-insecure-api-key.")
    beta = "realtime=v1" in (websocket.headers.get("openai-beta") or "") or "openai-beta.realtime-v1" in offered
    try:
        secret = engine.authenticate(key)
    except ApiError as exc:
        await websocket.send_denial_response(exc.response())
        return
    params = websocket.query_params
    if params.get("call_id"):
        call = engine.calls.get(params["call_id"])
        if call is None:
            await websocket.send_denial_response(error_response(
                404, "No session found for the provided call_id", "call_id_not_found", param="call_id"))
            return
        if call.id in engine.sidebands_held:
            await websocket.send_denial_response(error_response(
                503, "The call's sideband is restarting; try again shortly.", "sideband_unavailable"))
            return
        await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
        await _sideband(websocket, call, engine.sidebands.setdefault(call.id, set()))
        if not engine.sidebands.get(call.id):
            engine.sidebands.pop(call.id, None)
        return
    if engine.draining:
        await websocket.send_denial_response(error_response(
            503, "This engine is draining (shutting down); open the session on another engine.", "engine_draining"))
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
    session = engine.new_session(config)
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
            runner.feed(data)  # one too large is an error event (parley.protocol): the session goes on
    except WebSocketDisconnect:
        pass
    finally:
        closer.cancel()
        await runner.close("client_disconnected")


async def _sideband(websocket: WebSocket, call: AnyCall, cuts: set[Callable[[], None]]) -> None:
    """A server's control connection to a live call: every event out, client events in. `cuts` holds,
    while it is open, how to cut it off (Engine.drop_sidebands)."""
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    stop = call.runner.listen(queue.put_nowait)
    queue.put_nowait(ev.session_created(call.session.resource()))
    close = (1000, call.end_reason or "")

    def cut() -> None:
        nonlocal close
        stop()  # nothing after this event; what was queued still goes
        close = (1012, "sideband restart")
        queue.put_nowait(None)

    async def pump_out() -> None:
        while (event := await queue.get()) is not None:
            await websocket.send_text(json.dumps(event, separators=(",", ":")))

    async def end_with_call() -> None:
        await call.ended.wait()
        queue.put_nowait(None)

    cuts.add(cut)
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
        cuts.discard(cut)
        with contextlib.suppress(ValueError):
            stop()
        watcher.cancel()
        sender.cancel()
        code, reason = close if close[0] != 1000 else (1000, call.end_reason or "")
        with contextlib.suppress(Exception):
            await websocket.close(code=code, reason=reason)


async def _close_when_done(websocket: WebSocket, runner: SessionRunner) -> None:
    reason = await runner.wait_closed()
    with contextlib.suppress(Exception):
        await websocket.close(code=1000 if reason != "session_expired" else 4000, reason=reason or "")
