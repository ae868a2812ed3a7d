"""Phone calls through Twilio Media Streams: `POST /telephony/twilio/voice` (the voice webhook:
TwiML that connects the call to a media stream) and the `/telephony/twilio/media` WebSocket
(the stream, bridged to the upstream by `server.twilio_bridge`).

The webhook is refused unless its `X-Twilio-Signature` checks out against
`PARLEY_TWILIO_AUTH_TOKEN` (the `twilio` package's validator, over the URL Twilio called:
`PARLEY_PUBLIC_URL` + path), or `PARLEY_TWILIO_INSECURE=1` opens it for local testing. Its TwiML
carries a one-time token as a stream `<Parameter>`; the media socket takes only a stream whose
`start` brings a token the webhook issued.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import Response
from starlette.datastructures import URL
from starlette.requests import HTTPConnection
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from parley.apps.scenarios import Persona
from parley.http.errors import ApiError
from parley.http.sdp import media_type
from parley.telephony import twilio_stream as ts
from parley.telephony.tokens import Ticket, TokenStore

from ..personas import DEFAULT_PERSONA, find_persona
from ..settings import ServerSettings
from ..state import ServerState
from ..twilio_bridge import TwilioCall
from .deps import State

log = logging.getLogger(__name__)

VOICE_PATH = "/telephony/twilio/voice"
MEDIA_PATH = "/telephony/twilio/media"
START_TIMEOUT_SECONDS = 10.0
TOKEN_PARAMETER = "parley_token"

router = APIRouter(tags=["telephony"])

ERRORS: dict[int | str, dict[str, str]] = {
    400: {"description": "Unknown persona"},
    403: {"description": "Bad or missing X-Twilio-Signature, or no PARLEY_TWILIO_AUTH_TOKEN configured"},
    415: {"description": "Not a form-encoded webhook"},
}
VOICE_BODY = {"requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "properties": {"CallSid": {"type": "string"}, "From": {"type": "string"},
                                     "To": {"type": "string"}}}}}},
    "parameters": [{"name": "persona", "in": "query", "required": False, "schema": {"type": "string"},
                    "description": "The persona to answer with (else by the number called, else the default)."}]}


def stream_tokens(app_state: object) -> TokenStore:
    tokens: TokenStore | None = getattr(app_state, "twilio_tokens", None)
    assert tokens is not None, "create_app sets app.state.twilio_tokens"
    return tokens


def public_url(conn: HTTPConnection, settings: ServerSettings, path: str, query: str = "") -> str:
    """The URL of `path` as the world reaches it: PARLEY_PUBLIC_URL, else as this request came in."""
    if settings.public_url:
        return settings.public_url + path + (f"?{query}" if query else "")
    return str(URL(str(conn.url)).replace(path=path, query=query))


def media_url(conn: HTTPConnection, settings: ServerSettings) -> str:
    url = public_url(conn, settings, MEDIA_PATH)
    return url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)


def _xml(twiml: VoiceResponse) -> Response:
    return Response(str(twiml.to_xml()), media_type="text/xml")


async def _signed_form(request: Request, state: ServerState) -> dict[str, str]:
    settings = state.settings
    if media_type(request) != "application/x-www-form-urlencoded":
        raise ApiError(415, "Twilio's voice webhook is form-encoded (application/x-www-form-urlencoded).",
                       "unsupported_media_type")
    form = await request.form()
    params = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    token = settings.twilio_auth_token
    if token is None:
        if not settings.twilio_insecure:
            state.metrics.inc("parley_phone_webhooks_refused_total", reason="not_configured")
            raise ApiError(403, "Phone calls are off: set PARLEY_TWILIO_AUTH_TOKEN (your Twilio auth token) so "
                                "webhooks can be verified, or PARLEY_TWILIO_INSECURE=1 for local testing.",
                           "twilio_not_configured")
        return params
    url = public_url(request, settings, request.url.path, request.url.query)
    signature = request.headers.get("x-twilio-signature") or ""
    if not RequestValidator(token.get_secret_value()).validate(url, params, signature):
        state.metrics.inc("parley_phone_webhooks_refused_total", reason="bad_signature")
        log.warning("twilio webhook refused: the signature does not match %s", url)
        raise ApiError(403, "The X-Twilio-Signature does not match this request (check PARLEY_PUBLIC_URL is the "
                            "URL Twilio calls, and the auth token).", "bad_signature")
    return params


@router.post(VOICE_PATH, response_class=Response, responses=ERRORS, openapi_extra=VOICE_BODY)
async def twilio_voice(request: Request, state: State) -> Response:
    """TwiML that connects the call to a bidirectional media stream with the chosen persona."""
    settings = state.settings
    params = await _signed_form(request, state)
    called = params.get("To", "")[:64]
    persona_id = request.query_params.get("persona") or settings.twilio_numbers.get(called) or DEFAULT_PERSONA
    persona = find_persona(persona_id[:128])
    if not isinstance(persona, Persona):
        raise ApiError(400, f"{persona.id} cannot take phone calls.", "unknown_persona", param="persona")
    twiml = VoiceResponse()
    user = settings.twilio_user
    try:
        await state.calls.check_daily_cap(user)
    except ApiError as exc:
        log.info("twilio call %s rejected: %s", params.get("CallSid", "?")[:64], exc.code)
        twiml.reject(reason="busy")
        return _xml(twiml)
    if await state.calls.slots.count(f"phone:{user}") >= settings.max_concurrent_calls:
        log.info("twilio call %s rejected: too many calls", params.get("CallSid", "?")[:64])
        twiml.reject(reason="busy")
        return _xml(twiml)
    token = await stream_tokens(request.app.state).issue(Ticket(
        persona=persona.id, caller=params.get("From", "")[:64], called=called, call_sid=params.get("CallSid", "")[:64]))
    connect = Connect()
    stream = connect.stream(url=media_url(request, settings))
    stream.parameter(name=TOKEN_PARAMETER, value=token)
    twiml.append(connect)
    state.metrics.inc("parley_phone_webhooks_total")
    return _xml(twiml)


@router.websocket(MEDIA_PATH)
async def twilio_media(websocket: WebSocket) -> None:
    state: ServerState = websocket.app.state.server
    await websocket.accept()
    reader = ts.StreamReader()
    call: TwilioCall | None = None
    try:
        async with asyncio.timeout(START_TIMEOUT_SECONDS):
            start = await _wait_for_start(websocket, reader, state)
    except TimeoutError:
        start = None
    if start is None:
        await _refuse(websocket, state, "no_start", "no start frame")
        return
    ticket = await stream_tokens(websocket.app.state).take(start.parameters.get(TOKEN_PARAMETER))
    if ticket is None:
        log.warning("twilio stream %s refused: no valid one-time token", start.stream_sid)
        await _refuse(websocket, state, "bad_token", "no valid stream token")
        return
    if start.encoding != ts.MULAW or start.sample_rate != 8000 or start.channels not in (0, 1):
        await _refuse(websocket, state, "bad_format", f"need {ts.MULAW} at 8000 Hz mono")
        return
    persona = find_persona(ticket.persona)
    assert isinstance(persona, Persona)
    call = TwilioCall(state, websocket, reader, start, ticket, persona, self_url=_self_url(websocket, state))
    await call.run()


async def _wait_for_start(websocket: WebSocket, reader: ts.StreamReader, state: ServerState) -> ts.Start | None:
    bad = 0
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        frame = reader.feed(text if text is not None else (message.get("bytes") or b""))
        if isinstance(frame, ts.Start):
            return frame
        if isinstance(frame, ts.Bad):
            bad += 1
            state.metrics.inc("parley_phone_frames_dropped_total", reason=frame.reason)
            log.info("twilio stream: dropped a frame before start (%s)", frame.reason)
            if bad > 20:
                return None


async def _refuse(websocket: WebSocket, state: ServerState, reason: str, text: str) -> None:
    state.metrics.inc("parley_phone_streams_refused_total", reason=reason)
    try:
        await websocket.close(code=1008, reason=text)
    except RuntimeError:
        pass  # the other side already went away


def _self_url(conn: HTTPConnection, state: ServerState) -> str | None:
    """The server's own base URL (the local engine's WebSocket dials it)."""
    if state.settings.self_url:
        return state.settings.self_url
    server = conn.scope.get("server")
    if not server or server[1] is None:
        return None
    host = f"[{server[0]}]" if ":" in server[0] else server[0]
    scheme = "https" if conn.scope.get("scheme") in ("https", "wss") else "http"
    return f"{scheme}://{host}:{server[1]}"
