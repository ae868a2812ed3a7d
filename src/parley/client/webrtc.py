"""The WebRTC transport (aiortc): events on the `oai-events` data channel, audio on RTP.

The flow is OpenAI's GA one: make a peer connection with a microphone track and a data channel
named `oai-events`, `POST /v1/realtime/calls` with the SDP offer (raw `application/sdp` with an
ephemeral key; `multipart/form-data` with `sdp` and `session` parts with a standard key), take
the SDP answer from the 201 response and the call id from its `Location` header.

The server owns playback here: assistant audio arrives on the remote track in real time (handed
to `on_audio` as PCM16 24 kHz) and barge-in clears the server's output buffer
(`output_audio_buffer.*` events). Microphone audio given to `send_audio()` is queued and sent at
real-time pace, 20 ms per RTP frame, silence when there is nothing to send.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from parley.audio.pcm import float_to_pcm16, pcm16_to_float
from parley.audio.resample import StreamResampler
from parley.client.transport import USER_AGENT, ConnectError, Transport, TransportClosed, connect_error
from parley.ice import IceServer, peer_connection, pin_host_addresses

log = logging.getLogger(__name__)

__all__ = ["MicrophoneTrack", "WebRTCTransport"]

RTC_RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz
_CLOSED = object()


def _track_base() -> Any:
    from aiortc import MediaStreamTrack

    return MediaStreamTrack


class MicrophoneTrack(_track_base()):  # type: ignore[misc]
    """An outgoing audio track fed with PCM16 24 kHz, paced in real time."""

    kind = "audio"

    def __init__(self, max_buffer_s: float = 120.0) -> None:
        super().__init__()
        self._buffer = bytearray()
        self._resampler = StreamResampler(24_000, RTC_RATE)
        self._max = int(max_buffer_s * RTC_RATE * 2)
        self._start: float | None = None
        self._pts = 0

    def push(self, pcm24k: bytes) -> None:
        up = self._resampler.process(pcm16_to_float(pcm24k))
        self._buffer += float_to_pcm16(up)
        if len(self._buffer) > self._max:
            del self._buffer[: len(self._buffer) - self._max]

    def clear(self) -> None:
        self._buffer.clear()

    @property
    def queued_ms(self) -> float:
        return len(self._buffer) / (RTC_RATE * 2 / 1000)

    async def recv(self) -> Any:
        from aiortc.mediastreams import MediaStreamError
        from av import AudioFrame

        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.time()
        else:
            wait = self._start + self._pts / RTC_RATE - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        nbytes = FRAME_SAMPLES * 2
        chunk = bytes(self._buffer[:nbytes])
        del self._buffer[:nbytes]
        if len(chunk) < nbytes:
            chunk += bytes(nbytes - len(chunk))
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(chunk)
        frame.pts = self._pts
        frame.sample_rate = RTC_RATE
        frame.time_base = fractions.Fraction(1, RTC_RATE)
        self._pts += FRAME_SAMPLES
        return frame


def frame_to_pcm24k(frame: Any, resamplers: dict[int, StreamResampler]) -> bytes:
    """An av.AudioFrame (any layout, s16 or float) -> PCM16 mono 24 kHz."""
    array = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        mono = array.reshape(channels, -1).mean(axis=0)
    else:
        mono = array.reshape(-1, channels).mean(axis=1)
    if np.issubdtype(array.dtype, np.integer):
        samples = (mono / 32768.0).astype(np.float32)
    else:
        samples = mono.astype(np.float32)
    rate = int(frame.sample_rate)
    if rate != 24_000:
        resampler = resamplers.get(rate)
        if resampler is None:
            resampler = resamplers[rate] = StreamResampler(rate, 24_000)
        samples = resampler.process(samples)
    return float_to_pcm16(samples)


class WebRTCTransport(Transport):
    name = "webrtc"
    audio_in_events = False

    def __init__(self, calls_url: str, *, session: dict[str, Any] | None = None, ice_hosts: list[str] | None = None,
                 headers: dict[str, str] | None = None, open_timeout: float = 15.0,
                 ice_servers: Sequence[IceServer | str] = ()) -> None:
        """`ice_hosts`: the only host addresses to offer (process-wide, `parley.ice`); `ice_servers`:
        STUN/TURN servers (default none: no query leaves the machine unless you ask)."""
        self.calls_url = calls_url
        self._session = session
        self._ice_hosts = ice_hosts
        self._ice_servers = list(ice_servers)
        self._headers = dict(headers or {})
        self._open_timeout = open_timeout
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._pc: Any = None
        self._channel: Any = None
        self._mic: MicrophoneTrack | None = None
        self._readers: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._close_reason = "closed"
        self.call_id: str | None = None
        self._key: str | None = None

    async def open(self, key: str) -> None:
        if self._ice_hosts:
            pin_host_addresses(self._ice_hosts)
        from aiortc import RTCSessionDescription

        self._key = key
        self._pc = pc = peer_connection(self._ice_servers)
        self._mic = MicrophoneTrack()
        pc.addTrack(self._mic)
        channel = self._channel = pc.createDataChannel("oai-events")
        opened = asyncio.get_running_loop().create_future()

        @channel.on("open")
        def _on_open() -> None:
            if not opened.done():
                opened.set_result(True)

        @channel.on("message")
        def _on_message(message: str | bytes) -> None:
            self._queue.put_nowait(message)

        @channel.on("close")
        def _on_close() -> None:
            self._mark_closed("data channel closed")

        @pc.on("track")
        def _on_track(track: Any) -> None:
            if track.kind == "audio":
                task = asyncio.ensure_future(self._read_track(track))
                self._readers.add(task)
                task.add_done_callback(self._readers.discard)

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._mark_closed(f"peer connection {pc.connectionState}")

        try:
            async with asyncio.timeout(self._open_timeout):
                offer = await pc.createOffer()
                await pc.setLocalDescription(offer)
                answer = await self._post_offer(pc.localDescription.sdp, key)
                await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
                await opened
        except TimeoutError:
            await self.close()
            raise ConnectError(f"WebRTC call to {self.calls_url} did not open within {self._open_timeout:g} s") from None
        except ConnectError:
            await self.close()
            raise
        except Exception as exc:
            await self.close()
            raise ConnectError(f"WebRTC call to {self.calls_url} failed: {type(exc).__name__}: {exc}") from None

    async def _post_offer(self, sdp: str, key: str) -> str:
        headers = {"Authorization": f"Bearer {key}", "User-Agent": USER_AGENT, "Accept": "application/sdp",
                   **self._headers}
        async with httpx.AsyncClient(timeout=self._open_timeout) as http:
            try:
                if self._session is not None:
                    files = {"sdp": (None, sdp, "application/sdp"),
                             "session": (None, json.dumps(self._session), "application/json")}
                    response = await http.post(self.calls_url, headers=headers, files=files)
                else:
                    response = await http.post(self.calls_url, headers={**headers, "Content-Type": "application/sdp"},
                                               content=sdp.encode())
            except httpx.HTTPError as exc:
                raise ConnectError(f"Could not post the SDP offer to {self.calls_url}: {exc}") from None
        if response.status_code not in (200, 201):
            raise connect_error(response.status_code, response.content, "The SDP offer")
        location = response.headers.get("location")
        if location:
            self.call_id = location.rstrip("/").split("/")[-1]
        return response.text

    async def _read_track(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        resamplers: dict[int, StreamResampler] = {}
        while True:
            try:
                frame = await track.recv()
            except (MediaStreamError, asyncio.CancelledError):
                return
            callback = self.on_audio
            if callback is None:
                continue
            try:
                callback(frame_to_pcm24k(frame, resamplers))
            except Exception:
                log.exception("audio callback failed")

    def _mark_closed(self, reason: str) -> None:
        if not self._closed:
            self._closed = True
            self._close_reason = reason
            self._queue.put_nowait(_CLOSED)

    async def send(self, text: str) -> None:
        channel = self._channel
        if self._closed or channel is None or channel.readyState != "open":
            raise TransportClosed(self._close_reason if self._closed else "data channel not open", 1006)
        channel.send(text)

    async def recv(self) -> str | bytes:
        message = await self._queue.get()
        if message is _CLOSED:
            self._queue.put_nowait(_CLOSED)  # later calls fail too
            raise TransportClosed(self._close_reason, 1006)
        return message

    async def send_audio(self, pcm16: bytes) -> None:
        if self._closed or self._mic is None:
            raise TransportClosed(self._close_reason, 1006)
        self._mic.push(pcm16)

    @property
    def microphone(self) -> MicrophoneTrack | None:
        return self._mic

    async def hangup(self) -> None:
        """End the call at the upstream too (`POST .../calls/{id}/hangup`), best effort."""
        if self.call_id is None or self._key is None:
            return
        with contextlib.suppress(httpx.HTTPError):
            async with httpx.AsyncClient(timeout=2.0) as http:
                await http.post(f"{self.calls_url.rstrip('/')}/{self.call_id}/hangup",
                                headers={"Authorization": f"Bearer {self._key}", **self._headers})

    async def close(self) -> None:
        self._mark_closed("closed by the client")
        for task in list(self._readers):
            task.cancel()
        if self._pc is not None:
            pc, self._pc = self._pc, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pc.close(), 5)

    def abort(self) -> None:
        if self._pc is not None:
            task = asyncio.ensure_future(self.close())
            self._readers.add(task)
            task.add_done_callback(self._readers.discard)

    @property
    def closed(self) -> bool:
        return self._closed
