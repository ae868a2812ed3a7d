"""One accepted SIP call: its session runner, and RTP on a UDP socket of its own.

Like a WebRTC call (both are `engine.webrtc.MediaCall`s), it plays the agent through an
`AgentAudioTrack` (which knows what was heard, for barge-in), here paced in 20 ms G.711 packets, and feeds the caller's
audio to the session as it arrives. The rules for the packets are in `media`; this module only
moves them. It is in `Engine.calls` like a WebRTC call, so the sideband works the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from parley.engine.runtime import SessionRunner
from parley.engine.session import Session
from parley.engine.webrtc import MediaCall
from parley.protocol import events as ev

from .media import FRAME_MS, Addr, Audio, Digit, Dropped, RtpReceiver, RtpSender

log = logging.getLogger(__name__)


class _RtpProtocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Addr], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.info("RTP socket error: %s", exc)  # e.g. ICMP port unreachable after the caller left


class SipCall(MediaCall):
    """An accepted SIP call: the session, its runner, the RTP socket and the agent's paced audio."""

    def __init__(self, call_id: str, session: Session, runner_factory: Callable[..., SessionRunner], *,
                 receiver: RtpReceiver, sender: RtpSender, on_end: Callable[[SipCall], None],
                 bye: Callable[[], None], dropped: Counter[str]) -> None:
        self.id = call_id
        self.receiver, self.sender = receiver, sender
        self.dropped = dropped  # shared with the listener: drops by reason, over all calls
        self._on_end, self._bye = on_end, bye
        self._transport: asyncio.DatagramTransport | None = None
        super().__init__(session, runner_factory)

    async def open(self, host: str) -> Addr:
        """Bind the RTP socket (a free port on `host`); the local address for the SDP answer."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _RtpProtocol(self._on_datagram),
                                                           local_addr=(host, 0))
        self._transport = transport
        sockname = transport.get_extra_info("sockname")
        return str(sockname[0]), int(sockname[1])

    async def start(self) -> None:
        await self.runner.start()
        self._spawn(self._play())
        self._spawn(self._end_with_session())

    # -- media -------------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: Addr) -> None:
        if self.ended.is_set():
            return
        got = self.receiver.receive(data, addr)
        if isinstance(got, Audio):
            self.runner.feed_audio(got.pcm)
        elif isinstance(got, Digit):
            self.runner.announce(ev.input_audio_buffer_dtmf_event_received(got.key))
        elif isinstance(got, Dropped):
            self.dropped[f"rtp_{got.reason}"] += 1
            if got.reason in ("stranger", "malformed"):
                log.info("call %s: dropped RTP (%s) %s", self.id, got.reason, got.detail[:80])

    async def _play(self) -> None:
        """One packet every 20 ms, on the clock (silence when the agent says nothing)."""
        start = time.monotonic()
        frames = 0
        while True:
            packet = self.sender.packet(self.track._next_samples())  # (its own pacing is aiortc's recv)
            if self._transport is not None:
                self._transport.sendto(packet, self.receiver.remote)
            frames += 1
            wait = start + frames * FRAME_MS / 1000 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -FRAME_MS / 1000:
                self.track.late_frames += 1

    # -- events ------------------------------------------------------------------------------

    async def _send(self, _event: dict[str, Any]) -> None:
        """A SIP caller has no event channel: events go to the sideband (the runner's listeners)."""

    # -- ending ------------------------------------------------------------------------------

    async def close(self, reason: str = "hangup", *, send_bye: bool = True) -> None:
        """End the call: BYE to the caller (unless the caller's BYE is why), the session, the socket."""
        if self.ended.is_set():
            return
        self.end_reason = reason
        self.ended.set()
        if send_bye:
            try:
                self._bye()
            except Exception:
                log.exception("call %s: the BYE could not be sent", self.id)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        self.track.stop()
        await self.runner.close(reason)
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.close()
        self._on_end(self)
