"""A client's connection over time: establishing a configured session, reading it, reconnecting
after a drop, renewing before the upstream's session cap.

Establishing is one loop with backoff and jitter (`ReconnectPolicy`): a transport, a key (a fresh
one from the key provider when the old one is refused or about to expire, at once, without
backoff), `session.created`, the client's session config, and after the first session the
conversation replayed. Renewal opens the new session before it closes the old one, at a quiet
moment (nobody speaking, no response, no tool running).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from parley.client.events import Disconnected, ErrorEvent, KeyRefreshed, Reconnected, Reconnecting
from parley.client.policy import Key, resolve_key
from parley.client.resume import _dumps, replay_events
from parley.client.transport import (
    AuthenticationError,
    ConnectError,
    RealtimeError,
    Transport,
    TransportClosed,
    WebSocketTransport,
)

if TYPE_CHECKING:
    from parley.client.client import RealtimeClient

log = logging.getLogger("parley.client")

_ITEM_EVENTS = ("conversation.item.added", "conversation.item.done")


def _dig(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


class Connection:
    def __init__(self, client: RealtimeClient) -> None:
        self.c = client
        self.replayed_ids: set[str] = set()

    # -- endpoints ------------------------------------------------------------------------------

    def http_base(self) -> str:
        """The HTTP base of the API ("https://host/v1")."""
        c = self.c
        if c._base_url is not None:
            scheme, netloc, path, _, _ = urlsplit(c._base_url.rstrip("/"))
            if not path.endswith("/v1"):
                path = path + "/v1"
        else:
            assert c._url is not None
            scheme, netloc, path, _, _ = urlsplit(c._url)
            path = path.rstrip("/").removesuffix("/calls").removesuffix("/realtime")
        return urlunsplit(({"ws": "http", "wss": "https"}.get(scheme, scheme), netloc, path, "", ""))

    def websocket_url(self, key: Key | None = None) -> str:
        c = self.c
        if c._url is not None and urlsplit(c._url).path.rstrip("/").endswith("/realtime"):
            scheme, netloc, path, query, _ = urlsplit(c._url)
            params = dict(parse_qsl(query))
        else:
            scheme, netloc, path, _, _ = urlsplit(self.http_base() + "/realtime")
            params = {}
        scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
        if c.intent == "transcription":
            params.setdefault("intent", "transcription")
        elif "model" not in params and "call_id" not in params:
            model = c.model or (None if key is not None and key.ephemeral else "gpt-realtime")
            if model:
                params["model"] = model
        return urlunsplit((scheme, netloc, path, urlencode(params), ""))

    def _new_transport(self, key: Key) -> Transport:
        c = self.c
        kind = c._transport_kind
        if callable(kind):
            return kind(c, key)
        if kind == "webrtc":
            from parley.client.webrtc import WebRTCTransport

            session = None if key.ephemeral else {"type": c._session_type, **c._config()}
            if session is not None and c.model and c._session_type == "realtime":
                session.setdefault("model", c.model)
            return WebRTCTransport(self.http_base() + "/realtime/calls", session=session, ice_hosts=c._ice_hosts,
                                   headers=c._headers)
        if kind != "websocket":
            raise ValueError(f"unknown transport {kind!r}")
        return WebSocketTransport(self.websocket_url(key), headers=c._headers)

    async def _key_for(self, force: bool, reason: str) -> Key:
        c = self.c
        if c._key_provider is not None and (force or c._key is None or c._key.expiring()):
            c._key = await resolve_key(c._key_provider)
            c.key_refreshes += 1
            c._emit(KeyRefreshed(c._key.expires_at, reason))
        if c._key is None:
            raise AuthenticationError("No API key: pass api_key= or key_provider= (or set OPENAI_API_KEY).",
                                      status=401)
        return c._key

    # -- establishing ---------------------------------------------------------------------------

    async def establish(self, *, initial: bool, renewal: bool = False) -> tuple[Transport, int]:
        """A transport carrying a configured session with the conversation replayed.

        Returns it and how many items were replayed. Retries per the policy (the first
        connection only with `retry_initial`); raises the last error when it gives up. A key
        the upstream refuses is replaced through the key provider at once, without backoff."""
        c = self.c
        policy = c.policy
        attempt = 0
        force_key = False
        refreshed_for_auth = False
        last_error: str | None = None
        # after a drop the first attempt waits too (the peer just went away); otherwise not
        backoff_index = 0 if initial or renewal else 1
        while True:
            attempt += 1
            if backoff_index > 0 and not force_key:
                delay = policy.delay(backoff_index)
                if not renewal:
                    c._emit(Reconnecting(attempt, delay, last_error))
                await asyncio.sleep(delay)
            if c._closing:
                raise TransportClosed("closed by the client")
            c.attempt_times.append(time.monotonic())
            transport: Transport | None = None
            try:
                key = await self._key_for(force_key, "refused" if force_key else "expiring")
                force_key = False
                transport = self._new_transport(key)
                await transport.open(key.value)
                replayed = await self._open_session(transport, resume=not initial)
                return transport, replayed
            except AuthenticationError as exc:
                if transport is not None:
                    await transport.close()
                last_error = str(exc)
                if c._key_provider is None or refreshed_for_auth:
                    raise
                force_key = refreshed_for_auth = True
            except (ConnectError, TransportClosed, TimeoutError) as exc:
                if transport is not None:
                    await transport.close()
                last_error = f"{type(exc).__name__}: {exc}"
                retryable = not isinstance(exc, ConnectError) or exc.retryable
                if not retryable or not policy.enabled or (initial and not policy.retry_initial):
                    raise
                if policy.max_attempts is not None and attempt >= policy.max_attempts:
                    raise ConnectError(f"Gave up after {attempt} attempts; last error: {last_error}") from exc
                backoff_index += 1
            except BaseException:
                if transport is not None:
                    await transport.close()
                raise

    async def _open_session(self, transport: Transport, *, resume: bool) -> int:
        c = self.c
        timeout = c.policy.handshake_timeout
        transport.on_audio = c._on_track_audio
        await self.read_until(transport, lambda d: d.get("type") == "session.created", timeout)
        config = c._config()
        if config or c._session_type == "transcription":
            eid = "parley_session_" + secrets.token_hex(4)
            await transport.send(_dumps({"type": "session.update", "event_id": eid,
                                         "session": {"type": c._session_type, **config}}))
            reply = await self.read_until(
                transport, lambda d: d.get("type") == "session.updated"
                or (d.get("type") == "error" and _dig(d, "error", "event_id") == eid), timeout)
            if reply.get("type") == "error":
                err = reply.get("error") or {}
                raise ConnectError(f"The session config was refused: {err.get('message')}", status=400,
                                   code=err.get("code"))
        if not resume:
            return 0
        return await self.replay(transport, set(), timeout)

    async def read_until(self, transport: Transport, predicate: Callable[[dict[str, Any]], bool],
                         timeout: float) -> dict[str, Any]:
        """Read and dispatch events from a transport nobody else reads yet, until one matches."""
        async with asyncio.timeout(timeout):
            while True:
                data = self.c._feed(await transport.recv())
                if data is not None and predicate(data):
                    return data

    async def replay(self, transport: Transport, skip: set[str], timeout: float) -> int:
        """Re-create the conversation's items in the session on `transport`."""
        c = self.c
        events = replay_events(c.conversation, skip=skip, unacked=c._inflight.unacked, audio=c._audio,
                               audio_in_events=transport.audio_in_events)
        self.replayed_ids = set(skip) | {e["item"]["id"] for e in events}
        if not events:
            return 0
        for event in events:
            await transport.send(_dumps(event))
        last_id, last_eid = events[-1]["item"]["id"], events[-1]["event_id"]
        await self.read_until(transport, lambda d: (d.get("type") in _ITEM_EVENTS and _dig(d, "item", "id") == last_id)
                              or (d.get("type") == "error" and _dig(d, "error", "event_id") == last_eid), timeout)
        return len(events)

    def activate(self, transport: Transport) -> None:
        """Make `transport` the live one and re-send what the previous session left in flight."""
        c = self.c
        resume_audio = c._audio.to_resume()
        c._transport = transport
        c.state = "connected"
        c.session_started_at = time.monotonic()
        c._audio.new_session()
        c.user_speaking = False
        c._apply_formats()
        texts = c._inflight.to_resend(time.monotonic())
        resume, c._resume_response = c._resume_response, False
        if resume_audio:
            # ahead of any newer microphone audio (send_audio flushes the backlog first)
            c._audio.backlog = resume_audio
        if texts or resume or resume_audio:
            c._spawn(self._resend(texts, resume, bool(resume_audio)))

    async def _resend(self, texts: list[str], resume: bool, audio: bool) -> None:
        """What the previous session left in flight, in order: unacknowledged items, unanswered
        response requests, raw events sent while disconnected; then a new response for one the
        drop cut off, and the user's unfinished utterance."""
        for text in texts:
            await self.send_now(text)
        if resume:
            await self.c.create_response(_kind="resume")
        if audio:
            await self.c.send_audio(b"")

    async def send_now(self, text: str) -> None:
        transport = self.c._transport
        if transport is None:
            return
        with contextlib.suppress(TransportClosed):
            await transport.send(text)

    # -- reading, drops, renewal ----------------------------------------------------------------

    async def supervise(self) -> None:
        c = self.c
        while True:
            transport = c._transport
            if transport is None:
                return
            feed = c._feed
            recv = transport.recv
            try:
                while True:
                    feed(await recv())
            except TransportClosed as exc:
                closed = exc
            if c._closing:
                return
            if transport is not c._transport:
                continue  # replaced by a renewal: read the new one
            await self._handle_drop(transport, closed)
            if c.state != "connected":
                return

    async def _handle_drop(self, transport: Transport, closed: TransportClosed) -> None:
        c = self.c
        dropped_at = time.monotonic()
        policy = c.policy
        will = policy.enabled and (closed.code != 1000 or policy.on_normal_close)
        c._resume_response = c.active_response_id is not None and policy.resume_response
        c._connection_lost("disconnected")
        c.state = "reconnecting" if will else "closed"
        c._transport = None
        await transport.close()
        c._emit(Disconnected(closed.reason, closed.code, will_reconnect=will))
        if not will:
            c._finish_after_final_drop()
            return
        first_attempt = len(c.attempt_times)
        try:
            new, replayed = await self.establish(initial=False)
        except (RealtimeError, OSError) as exc:
            if c._closing:
                return
            c.state = "closed"
            c._emit(ErrorEvent.client("reconnect_failed", f"Could not reconnect: {exc}"))
            c._emit(Disconnected(f"gave up reconnecting: {exc}", None, will_reconnect=False))
            c._finish_after_final_drop()
            return
        # what could not be replayed (an answer cut off before its first word, a half-written
        # function call) does not exist in the new session: forget it here too
        for item in c.conversation.items:
            if item.id not in self.replayed_ids and item.id not in c._inflight.unacked:
                c.conversation.forget(item.id)
        resumed = c._resume_response
        self.activate(new)
        c.reconnects += 1
        c._emit(Reconnected(c.session, "drop", len(c.attempt_times) - first_attempt,
                            time.monotonic() - dropped_at, replayed, resumed))

    async def renew_loop(self) -> None:
        c = self.c
        while not c._closing:
            limit = c.max_session_duration
            if limit is None:
                return
            started = c.session_started_at or time.monotonic()
            due = started + max(limit - c.renew_margin, 1.0)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if c._closing:
                return
            if c.state != "connected" or c.session_started_at != started:
                continue  # a reconnect made a new session meanwhile
            hard = started + limit - min(c.renew_margin / 4, 5.0)
            await self._quiet_moment(hard)
            try:
                await self.renew()
            except (RealtimeError, OSError, TimeoutError) as exc:
                log.warning("session renewal failed: %s", exc)
                c._emit(ErrorEvent.client("renewal_failed", f"Could not renew the session: {exc}"))
                await asyncio.sleep(min(10.0, max(c.renew_margin / 4, 0.5)))

    async def _quiet_moment(self, deadline: float) -> None:
        """Wait until nobody speaks, no response runs and no tool works (or the deadline)."""
        # polled: the conditions change inside event handlers all over the client
        while self.c._busy() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    async def renew(self) -> None:
        """Move the conversation to a fresh session now (make before break)."""
        c = self.c
        if c.state != "connected":
            return
        began = time.monotonic()
        first_attempt = len(c.attempt_times)
        new, replayed = await self.establish(initial=False, renewal=True)
        old = c._transport
        if c.state != "connected" or old is None:
            await new.close()
            return
        # items completed on the old session while the new one was being prepared
        for _ in range(3):
            missing = [i.id for i in c.conversation if i.id not in self.replayed_ids
                       and i.completed and i.id not in c._inflight.unacked]
            if not missing:
                break
            replayed += await self.replay(new, set(self.replayed_ids), c.policy.handshake_timeout)
        self.activate(new)
        await old.close()
        c.renewals += 1
        c._emit(Reconnected(c.session, "renewal", len(c.attempt_times) - first_attempt,
                            time.monotonic() - began, replayed, False))
