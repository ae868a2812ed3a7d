"""State shared by all sessions of one engine: keys, secrets, models, live sessions and calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from parley.audio.pcm import SAMPLE_RATE
from parley.engine.responders.base import Responder
from parley.engine.responders.generic import GenericResponder
from parley.engine.runtime import SessionRunner, Speech
from parley.engine.session import Session
from parley.engine.settings import EngineSettings
from parley.engine.sip.call import SipCall
from parley.engine.speech import vad
from parley.engine.speech.local import LocalSpeech
from parley.engine.webrtc import Call
from parley.http.errors import ApiError
from parley.ice import pin_host_addresses
from parley.protocol import ids
from parley.protocol.session import SessionConfig

if TYPE_CHECKING:
    from parley.engine.sip.listener import SipListener

# A call with a sideband: WebRTC (`POST /v1/realtime/calls`) or SIP (accepted after its webhook).
AnyCall = Call | SipCall


@dataclass(frozen=True)
class ClientSecret:
    value: str
    expires_at: int
    config: SessionConfig


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
        self.calls: dict[str, AnyCall] = {}
        self.sip: SipListener | None = None  # when settings.sip_addr is set, while the app runs
        self.late_frames = 0  # agent audio frames sent more than a frame late, over ended calls
        self._careful_ms: float | None = None  # the last closed session's timing of a careful pass
        # How to cut each open sideband, by call id, and calls whose sideband is refused for now.
        self.sidebands: dict[str, set[Callable[[], None]]] = {}
        self.sidebands_held: set[str] = set()
        # In a pool of engines (`parley.engine.pool`): the id it names itself by in call ids and keys,
        # and whether it is draining (SIGTERM: no new calls, the live ones go on).
        self.pool_id: str | None = None
        self.draining = False
        self._idle = asyncio.Event()  # set when the last session ends
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
                # An app's responder comes in through the constructor: the engine knows no app.
                self._responder = GenericResponder()
        return self._responder

    # -- keys ---------------------------------------------------------------------------------

    def authenticate(self, key: str | None) -> ClientSecret | None:
        """None for a valid standard key, the secret for a valid ephemeral key; else ApiError(401)."""
        if not key:
            raise ApiError(401, "You didn't provide an API key. Provide it in an Authorization header "
                                "(Bearer auth) or, from a browser, as an 'openai-insecure-api-key.' subprotocol.",
                           "missing_api_key")
        if key.startswith("ek_"):
            secret = self._secrets.get(key)
            if secret is None:
                raise ApiError(401, "Incorrect API key provided: the ephemeral key is unknown.", "invalid_api_key")
            if secret.expires_at <= time.time():
                del self._secrets[key]
                raise ApiError(401, "The ephemeral key has expired. Mint a new one.", "expired_api_key")
            return secret
        if self.settings.api_keys and key not in self.settings.api_keys:
            raise ApiError(401, "Incorrect API key provided.", "invalid_api_key")
        return None

    def mint_secret(self, config: SessionConfig, ttl: int) -> ClientSecret:
        now = time.time()
        if now - self._purged_at > 1.0:  # a full sweep at most once a second keeps minting O(1)
            self._purged_at = now
            for value in [v for v, s in self._secrets.items() if s.expires_at <= now]:
                del self._secrets[value]
        self.check_accepting()
        secret = ClientSecret(ids.client_secret(self.pool_id), int(now) + ttl, config)
        self._secrets[secret.value] = secret
        return secret

    def new_runner(self, session: Session, send: Any, *, beta: bool = False, playout: Any = None) -> SessionRunner:
        def forget(_reason: str) -> None:
            self.runners.pop(session.id, None)
            if session.careful_ms is not None:
                self._careful_ms = session.careful_ms
            if not self.runners:
                self._idle.set()

        runner = SessionRunner(session, send, responder=self.responder, speech=self.speech, beta=beta,
                               playout=playout, on_close=forget)
        self.runners[session.id] = runner
        return runner

    def new_session(self, config: SessionConfig, *, playback: Literal["client", "server"] = "client") -> Session:
        """A session hearing with its own silero stream (after `vad_ready()`), expiring 60 min from now.
        It starts from what the newest session timed a careful pass at, so that on a slow machine a
        call's first turn does not wait for a pass that does not fit its silence window."""
        return Session(config, detector=vad.VadStream(SAMPLE_RATE), now=time.time(), playback=playback,
                       careful_ms=self.careful_ms())

    def careful_ms(self) -> float | None:
        """What a careful pass costs on this machine now: the newest live session's timing, else
        the last closed one's."""
        live = [r.session.careful_ms for r in self.runners.values() if r.session.careful_ms is not None]
        return live[-1] if live else self._careful_ms

    async def start_call(self, config: SessionConfig, offer_sdp: str) -> tuple[Call, str]:
        """A WebRTC call: returns it and the SDP answer (the route checks `check_accepting` first)."""
        await vad_ready()
        call = Call(self.new_session(config, playback="server"), self.new_runner, on_end=self.call_ended,
                    ice_servers=self.settings.ice_servers, engine_id=self.pool_id)
        self.calls[call.id] = call
        try:
            answer = await call.answer(offer_sdp)
        except Exception:
            await call.close("bad_offer")
            raise
        return call, answer

    def check_accepting(self) -> None:
        """ApiError(503) while draining: a new call or key belongs on another engine of the pool."""
        if self.draining:
            raise ApiError(503, "This engine is draining (shutting down): it takes no new calls or sessions; "
                                "start the call on another engine.", "engine_draining", headers={"Retry-After": "1"})

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no session is live (a drain), at most `timeout` seconds; whether none is."""
        self._idle.clear()
        if self.runners:
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except TimeoutError:
                pass
        return not self.runners

    def active(self) -> int:
        """Live sessions: WebRTC and SIP calls and WebSocket sessions (each has a runner)."""
        return len(self.runners)

    def drop_sidebands(self, call_id: str, *, hold: bool = False) -> int:
        """Close a live call's sidebands as a restarting upstream would (1012: service restart), the
        call going on: from this event on they get nothing more (what they were sent still goes out
        first). With `hold`, refuse new ones (503) until `release_sidebands`. For operators and fault
        tests; how many were closed."""
        if hold:
            self.sidebands_held.add(call_id)
        cuts = list(self.sidebands.get(call_id, ()))
        for cut in cuts:
            cut()
        return len(cuts)

    def release_sidebands(self, call_id: str) -> None:
        self.sidebands_held.discard(call_id)

    def call_ended(self, call: AnyCall) -> None:
        self.calls.pop(call.id, None)
        self.sidebands_held.discard(call.id)
        self.late_frames += call.track.late_frames


async def vad_ready() -> None:
    """A new session takes a VAD model from the pool; when a burst of calls has emptied it, build
    one on a thread (~40 ms) rather than in the session's constructor on the event loop."""
    if vad.idle_models() == 0:
        await asyncio.to_thread(vad.prewarm, 1)
