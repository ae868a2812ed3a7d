"""The engine's SIP side, as OpenAI runs it for SIP trunks: a UDP user agent server (aiosipua)
that takes INVITEs, tells the app with a signed `realtime.call.incoming` webhook, and waits for
`/v1/realtime/calls/{id}/accept|reject` (engine.routes.calls) to answer 200 (with SDP) or a 4xx/6xx.

An accepted call is a `SipCall` in `Engine.calls`; `refer` sends a SIP REFER to the caller,
`hangup` a BYE, and the caller's BYE ends the session. Malformed SIP and stray RTP are dropped,
logged and counted in `dropped` (by reason); nothing a peer sends raises out of here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from aiosipua import (
    IncomingCall,
    SdpMessage,
    SipMessage,
    SipRequest,
    SipUAC,
    SipUAS,
    UdpSipTransport,
)
from aiosipua.message import missing_required_headers
from aiosipua.transport import _UdpProtocol

from parley.protocol import ids
from parley.protocol.session import SessionConfig

from .call import SipCall
from .media import RtpReceiver, RtpSender
from .signalling import Media, OfferError, answer_sdp, incoming_call_webhook, read_offer, sip_headers

if TYPE_CHECKING:
    from parley.engine.engine import Engine

log = logging.getLogger(__name__)

# A call nobody accepts or rejects within this long is refused (OpenAI drops unanswered calls too).
RING_TIMEOUT_S = 30.0
WEBHOOK_TIMEOUT_S = 10.0
WEBHOOK_RETRY_S = (0.5, 1.0, 2.0)  # waits before the retries of a failed delivery, within the ring
MAX_DATAGRAM = 16 * 1024
USER_AGENT = "parley-engine"
REASONS = {403: "Forbidden", 404: "Not Found", 480: "Temporarily Unavailable", 486: "Busy Here",
           488: "Not Acceptable Here", 503: "Service Unavailable", 603: "Decline"}


class CallStateError(Exception):
    """accept/reject/refer on a call that is not in the state for it (the route answers 404/409)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class UdpProtocol(_UdpProtocol):
    """aiosipua's, without its check that the transport is an `asyncio.DatagramTransport`: on
    Python 3.11 the event loop's UDP transport is not one (it still works), and the failed assert
    was logged as an error on every start."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._owner._udp_transport = transport  # type: ignore[assignment]


class UdpTransport(UdpSipTransport):
    """aiosipua's UDP transport, knowing the port it actually bound (for Via and Contact)."""

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: UdpProtocol(self), local_addr=self.local_addr)
        self._udp_transport = transport
        name = transport.get_extra_info("sockname")
        self.local_addr = (str(name[0]), int(name[1]))


class _Transport(UdpTransport):
    """Counting (and logging) what cannot be a SIP message before it hands the rest on."""

    dropped: Counter[str]  # set by the listener (a subclass of a dataclass: no field of its own)

    def _dispatch(self, data: bytes, addr: tuple[str, int]) -> None:
        problem: str | None = None
        if len(data) > MAX_DATAGRAM:
            problem = f"{len(data)} bytes"
        else:
            try:
                msg = SipMessage.parse(data)
            except Exception as exc:  # the parser's errors are ValueError, but any input may come
                problem = f"unparsable ({type(exc).__name__})"
            else:
                if isinstance(msg, SipRequest) and (missing := missing_required_headers(msg)):
                    problem = f"{msg.method[:16]} without {', '.join(missing)}"  # aiosipua answers 400
                    self.dropped["sip_malformed"] += 1
                    log.info("malformed SIP from %s:%d: %s", addr[0], addr[1], problem)
                    problem = None
        if problem is not None:
            self.dropped["sip_malformed"] += 1
            log.info("dropped malformed SIP from %s:%d: %s", addr[0], addr[1], problem)
            return
        super()._dispatch(data, addr)


@dataclass
class _Pending:
    incoming: IncomingCall
    offer: SdpMessage
    media: Media
    created: float = field(default_factory=time.monotonic)
    deadline: asyncio.TimerHandle | None = None


class SipListener:
    def __init__(self, engine: Engine, host: str, port: int, *, webhook_url: str | None,
                 webhook_secret: str | None) -> None:
        self.engine = engine
        self.dropped: Counter[str] = Counter()
        self.transport = _Transport(local_addr=(host, port))
        self.transport.dropped = self.dropped
        self.uac = SipUAC(self.transport)
        self.uas = SipUAS(self.transport, user_agent=USER_AGENT, uac=self.uac)
        self.uas.on_invite = self._on_invite
        self.uas.on_bye = self._on_bye
        self.uas.on_cancel = self._on_cancel
        self.webhook_url, self.webhook_secret = webhook_url, webhook_secret
        self.pending: dict[str, _Pending] = {}  # our call id -> a ringing call
        self._ours: dict[str, str] = {}  # SIP Call-ID -> our call id
        self._tasks: set[asyncio.Task[Any]] = set()
        self._http = httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S, follow_redirects=False)

    @property
    def address(self) -> tuple[str, int]:
        return self.transport.local_addr

    async def start(self) -> None:
        await self.uas.start()
        log.info("SIP on udp %s:%d; webhook %s", *self.address, self.webhook_url or "(none: calls are refused)")

    async def stop(self) -> None:
        for call_id in list(self.pending):
            self._refuse(call_id, 503, "Service Unavailable")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.uas.stop()
        await self._http.aclose()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- from the caller ---------------------------------------------------------------------

    def _on_invite(self, incoming: IncomingCall) -> None:
        try:
            offer, media = read_offer(incoming.invite)
        except OfferError as exc:
            self.dropped["sip_bad_offer"] += 1
            log.info("refused an INVITE from %s: %d %s", incoming.caller[:100], exc.status, exc.reason)
            incoming.reject(exc.status, exc.reason)
            self.uas._calls.pop(incoming.call_id, None)  # aiosipua keeps refused calls
            return
        if not self.webhook_url or not self.webhook_secret:
            log.warning("refused an INVITE: no PARLEY_ENGINE_SIP_WEBHOOK_URL/_SECRET to tell anyone about it")
            incoming.reject(480, "Temporarily Unavailable")
            self.uas._calls.pop(incoming.call_id, None)
            return
        call_id = ids.rtc_call_id(self.engine.pool_id)  # a pool member names itself, as in WebRTC calls
        pending = _Pending(incoming, offer, media)
        pending.deadline = asyncio.get_running_loop().call_later(
            RING_TIMEOUT_S, self._refuse, call_id, 480, "Temporarily Unavailable")
        self.pending[call_id] = pending
        self._ours[incoming.call_id] = call_id
        incoming.ringing()
        self._spawn(self._notify(call_id, incoming.invite))

    async def _notify(self, call_id: str, invite: SipRequest) -> None:
        """Post the webhook; as OpenAI does, retry the same delivery (same webhook id) after a
        transport error or a 5xx while the call rings. A 4xx, or no luck, refuses the call."""
        assert self.webhook_url is not None and self.webhook_secret is not None
        hook = incoming_call_webhook(call_id, sip_headers(invite), self.webhook_secret)
        for attempt, backoff in enumerate((*WEBHOOK_RETRY_S, None)):
            try:
                r = await self._http.post(self.webhook_url, content=hook.body, headers=hook.headers)
                failure, status = "", r.status_code
            except httpx.HTTPError as exc:
                failure, status = type(exc).__name__, 0
            if not failure and status < 300:
                return
            log.warning("call %s: the webhook %s (attempt %d)", call_id,
                        f"failed ({failure})" if failure else f"answered {status}", attempt + 1)
            if backoff is None or 400 <= status < 500 or call_id not in self.pending:
                break
            await asyncio.sleep(backoff)
            if call_id not in self.pending:  # answered meanwhile (by an earlier delivery), or hung up
                return
        self._refuse(call_id, 480, "Temporarily Unavailable")

    def _on_bye(self, incoming: IncomingCall, _request: SipRequest) -> None:
        call_id = self._ours.pop(incoming.call_id, None)
        call = self.engine.calls.get(call_id) if call_id else None
        if isinstance(call, SipCall):
            self._spawn(call.close("caller_hangup", send_bye=False))

    def _on_cancel(self, request: SipRequest, _addr: tuple[str, int]) -> None:
        call_id = self._ours.pop(request.call_id or "", None)
        pending = self.pending.pop(call_id, None) if call_id else None
        if pending is not None and pending.deadline is not None:
            pending.deadline.cancel()

    # -- from the app (the /v1/realtime/calls/{id}/... routes) ---------------------------------

    def _take_pending(self, call_id: str) -> _Pending:
        pending = self.pending.pop(call_id, None)
        if pending is None:
            if call_id in self.engine.calls:
                raise CallStateError(409, "call_already_accepted", "The call has already been accepted.")
            raise CallStateError(404, "call_id_not_found", f"No pending call with id '{call_id[:100]}'.")
        if pending.deadline is not None:
            pending.deadline.cancel()
        return pending

    def _refuse(self, call_id: str, status: int, reason: str) -> None:
        pending = self.pending.pop(call_id, None)
        if pending is None:
            return
        if pending.deadline is not None:
            pending.deadline.cancel()
        self._ours.pop(pending.incoming.call_id, None)
        pending.incoming.reject(status, reason)
        self.uas._calls.pop(pending.incoming.call_id, None)

    def reject(self, call_id: str, status: int = 603) -> None:
        """Refuse a ringing call with a SIP status (OpenAI's default: 603 Decline)."""
        if call_id not in self.pending:
            self._take_pending(call_id)  # raises: unknown, or already accepted
        self._refuse(call_id, status, REASONS.get(status, "Call Refused"))

    async def accept(self, call_id: str, config: SessionConfig) -> SipCall:
        """Answer a ringing call (200 OK with our SDP) and start its session."""
        from parley.engine.engine import vad_ready

        pending = self._take_pending(call_id)
        incoming, media = pending.incoming, pending.media
        await vad_ready()
        session = self.engine.new_session(config, playback="server")

        def bye() -> None:
            self._ours.pop(incoming.call_id, None)
            incoming.hangup()
            self.uas._calls.pop(incoming.call_id, None)

        call = SipCall(call_id, session, self.engine.new_runner,
                       receiver=RtpReceiver(media.remote, media.payload_type, media.dtmf_payload_type),
                       sender=RtpSender(media.payload_type), on_end=self.engine.call_ended, bye=bye,
                       dropped=self.dropped)
        try:
            local = await call.open(self.address[0])
            answer = answer_sdp(pending.offer, local, media)
        except (OSError, OfferError) as exc:
            log.warning("call %s: could not answer (%s)", call_id, exc)
            self.pending[call_id] = pending
            self._refuse(call_id, 500, "Server Internal Error")
            await call.close("bad_offer", send_bye=False)
            raise CallStateError(500, "call_setup_failed", f"The call could not be answered: {exc}") from None
        self.engine.calls[call_id] = call
        incoming.accept(answer)
        await call.start()
        return call

    def refer(self, call_id: str, target_uri: str) -> None:
        call = self.engine.calls.get(call_id)
        if not isinstance(call, SipCall):
            raise CallStateError(404, "call_id_not_found", f"No SIP call with id '{call_id[:100]}' in progress.")
        incoming = self._incoming(call_id)
        if incoming is None:
            raise CallStateError(409, "call_not_active", "The call is over.")
        self.uac.send_refer(incoming.dialog, target_uri, incoming.source_addr)

    def _incoming(self, call_id: str) -> IncomingCall | None:
        sip_id = next((s for s, ours in self._ours.items() if ours == call_id), None)
        return self.uas.get_call(sip_id) if sip_id else None
