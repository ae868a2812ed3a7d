"""The engine's WebRTC transport: one aiortc peer per call.

Each microphone packet is decoded and resampled into the session's pipeline as it arrives; the
agent's speech goes out on a local track paced in 20 ms Opus packets (silence in between); the
`oai-events` data channel carries the same JSON events as the WebSocket, minus audio deltas, plus
`output_audio_buffer.*`. The protocol itself stays in `engine.session`; this module only moves
media and messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import functools
import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from aiortc import MediaStreamTrack, RTCDataChannel, RTCRtpSender, RTCSessionDescription
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add
from av import AudioFrame, CodecContext, FFmpegError, Packet
from av.audio.codeccontext import AudioCodecContext

from parley.audio.pcm import SAMPLE_RATE, FloatArray
from parley.audio.resample import StreamResampler
from parley.engine.runtime import SessionRunner
from parley.engine.session import Session
from parley.ice import IceServer, peer_connection
from parley.protocol import ids

log = logging.getLogger(__name__)

FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
#: What the answer asks the caller's Opus encoder for (RFC 7587's maxaveragebitrate): browsers
#: otherwise send 32 kbps, which cost whisper ~4 WER points on the Opus clips of hearing.py's tuning
#: two-thirds (64 kbps: 19.5 %, 32 kbps: 23.3 %, no codec: 16.2 %; 96 kbps gained 0.5 more).
OPUS_MAX_AVERAGE_BITRATE = 64_000
# Opus's RTP clock (RFC 7587), whatever rate the audio is coded at.
OPUS_RATE = 48_000
OPUS_FRAME = OPUS_RATE * FRAME_MS // 1000
# Frames that still go through the encoder after the last sound, so that its state has settled
# on silence before the cached silence packet takes over (and agrees with the decoder's when
# speech resumes).
ENCODER_HANGOVER_FRAMES = 10
# A gap in the microphone's RTP timestamps up to this long (lost packets) is filled with silence,
# so session time keeps pace with the caller's.
MAX_FILLED_GAP = OPUS_RATE * 2
# A call whose peer never connects is dropped after this long.
CONNECT_TIMEOUT_S = 30.0
# aiortc's (and browsers' usual) SCTP message size limit.
MAX_CHANNEL_MESSAGE = 65_536


def with_opus_max_average_bitrate(sdp: str, bps: int) -> str:
    """The SDP with `maxaveragebitrate` on each Opus payload type's fmtp (added, or the line made):
    a receiver's word to the sender's encoder, which aiortc's answer does not carry."""
    lines = sdp.split("\r\n")
    opus = {m.group(1) for line in lines if (m := re.match(r"a=rtpmap:(\d+) opus/", line, re.IGNORECASE))}
    out: list[str] = []
    for line in lines:
        fmtp = re.match(r"a=fmtp:(\d+) ", line)
        if fmtp and fmtp.group(1) in opus:
            params = [p for p in line[len(fmtp.group(0)):].split(";") if not p.strip().startswith("maxaveragebitrate=")]
            line = fmtp.group(0) + ";".join([*params, f"maxaveragebitrate={bps}"])
            opus.discard(fmtp.group(1))
        out.append(line)
    for pt in opus:  # no fmtp line yet: one after the rtpmap
        at = next(i for i, line in enumerate(out) if line.lower().startswith(f"a=rtpmap:{pt} opus/"))
        out.insert(at + 1, f"a=fmtp:{pt} maxaveragebitrate={bps}")
    return "\r\n".join(out)


def _opus_encoder() -> AudioCodecContext:
    encoder = CodecContext.create("libopus", "w")
    encoder.sample_rate = SAMPLE_RATE  # libopus codes 24 kHz as is: nothing resampled or held back
    encoder.layout = "mono"
    encoder.format = "s16"
    # aiortc's rate. At 48 kbps whisper tiny.en heard a test's "supervisor" as "super minor".
    encoder.bit_rate = 96_000
    # Complexity 5, as WebRTC uses on phones: about a fifth cheaper than 10 for speech.
    encoder.options = {"application": "voip", "compression_level": "5"}
    encoder.time_base = fractions.Fraction(1, SAMPLE_RATE)
    encoder.open()
    return encoder


def _encode(encoder: AudioCodecContext, samples: FloatArray, pts: int) -> bytes:
    frame = AudioFrame.from_ndarray(
        (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = SAMPLE_RATE
    frame.pts = pts
    return b"".join(bytes(p) for p in encoder.encode(frame))  # libopus: one packet per 20 ms frame


@functools.cache
def _silence_packet() -> bytes:
    encoder = _opus_encoder()
    quiet = np.zeros(FRAME_SAMPLES, dtype=np.float32)
    return [_encode(encoder, quiet, n * FRAME_SAMPLES) for n in range(3)][-1]  # past the start-up frames


class PacedAudioTrack(MediaStreamTrack):
    """An audio track that sends 20 ms of Opus in real time; subclasses say what to play
    (float32 at 24 kHz).

    It hands aiortc encoded packets, not frames: aiortc's encoder resamples to 48 kHz, holding
    back a 20 ms frame, and runs on an executor thread with a level computed per frame in
    Python; silence, most of a call, is here one cached packet.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._timestamp = 0  # at OPUS_RATE
        self._encoder: AudioCodecContext | None = None
        self._hangover = 0
        self.late_frames = 0  # frames produced more than one frame late (audible stutter)

    def _next_samples(self) -> FloatArray:
        return np.zeros(FRAME_SAMPLES, dtype=np.float32)

    def _payload(self, samples: FloatArray) -> bytes:
        if samples.any():
            self._hangover = ENCODER_HANGOVER_FRAMES
        elif self._hangover == 0:
            return _silence_packet()
        else:
            self._hangover -= 1
        if self._encoder is None:
            self._encoder = _opus_encoder()
        return _encode(self._encoder, samples, self._timestamp // 2) or _silence_packet()

    async def recv(self) -> Packet:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            self._timestamp += OPUS_FRAME
            wait = self._start + self._timestamp / OPUS_RATE - now
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -FRAME_MS / 1000:
                self.late_frames += 1
        packet = Packet(self._payload(self._next_samples()))
        packet.pts = self._timestamp
        packet.time_base = fractions.Fraction(1, OPUS_RATE)
        return packet


class AgentAudioTrack(PacedAudioTrack):
    """The agent's voice, played in real time: 20 ms frames, silence when there is nothing to say.

    It knows what was actually played, per item, so barge-in can truncate at that point.
    """

    def __init__(self, on_drained: Callable[[str], None]) -> None:
        super().__init__()
        self._queue: deque[tuple[str, str, FloatArray]] = deque()
        self._on_drained = on_drained
        self._finished: set[str] = set()
        self._current: tuple[str, str] | None = None  # (response_id, item_id) last played
        self._played: dict[str, int] = {}  # item_id -> samples played

    def enqueue(self, response_id: str, item_id: str, pcm: FloatArray) -> None:
        if pcm.size:
            self._queue.append((response_id, item_id, pcm))

    def finish(self, response_id: str) -> None:
        """No more audio will come for this response."""
        self._finished.add(response_id)
        if not self._queue and self._current is not None and self._current[0] == response_id:
            self._drained()

    def clear(self) -> tuple[str | None, str | None, float]:
        """Drop everything queued; returns what was playing and how much of its item was heard."""
        current = self._current or (self._queue[0][:2] if self._queue else None)
        self._queue.clear()
        self._current = None
        if current is None:
            return None, None, 0.0
        response_id, item_id = current
        self._finished.discard(response_id)
        return response_id, item_id, self._played.get(item_id, 0) * 1000 / SAMPLE_RATE

    def _drained(self) -> None:
        assert self._current is not None
        response_id = self._current[0]
        self._current = None
        self._finished.discard(response_id)
        self._on_drained(response_id)

    def _next_samples(self) -> FloatArray:
        out = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        filled = 0
        while filled < FRAME_SAMPLES and self._queue:
            response_id, item_id, pcm = self._queue[0]
            take = min(FRAME_SAMPLES - filled, pcm.size)
            out[filled : filled + take] = pcm[:take]
            filled += take
            if self._current is not None and self._current[0] != response_id and self._current[0] in self._finished:
                self._drained()  # the previous response played out right before this one
            self._current = (response_id, item_id)
            self._played[item_id] = self._played.get(item_id, 0) + take
            if take == pcm.size:
                self._queue.popleft()
            else:
                self._queue[0] = (response_id, item_id, pcm[take:])
        if not self._queue and self._current is not None and self._current[0] in self._finished:
            self._drained()
        return out


class MicReceiver(JitterBuffer):
    """Takes the place of aiortc's jitter buffer for the microphone: each Opus packet is decoded
    the moment it arrives and its audio handed on at 24 kHz.

    aiortc's buffer holds four frames (80 ms) for the whole call, and even with no prefetch
    knows a frame is whole only when the next packet comes: 20 ms on every turn. Its decoder
    thread, track queue and frame conversions then cost about as much CPU as the rest of the
    call. An Opus packet is a whole frame, and the VAD and STT are better served by a rare gap
    (reordering is rare on loopback and LANs) than by a fixed delay: a packet older than one
    already decoded is dropped, and lost packets become silence.
    """

    def __init__(self, on_audio: Callable[[FloatArray], None]) -> None:
        super().__init__(capacity=16)
        self._on_audio = on_audio
        self._decoder = CodecContext.create("libopus", "r")
        self._decoder.sample_rate = OPUS_RATE
        self._decoder.layout = "mono"  # libopus downmixes a stereo sender
        # LQ: HQ holds back ~32 ms at 48 -> 24 kHz, which every turn would wait for.
        self._resampler = StreamResampler(OPUS_RATE, SAMPLE_RATE, quality="LQ")
        self._last_seq: int | None = None
        self._next_ts: int | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._last_seq is not None and not 0 < uint16_add(seq, -self._last_seq) < 0x8000:
            return False, None  # a duplicate, or older than one already decoded
        self._last_seq = seq
        try:
            frames = self._decoder.decode(Packet(packet._data))  # type: ignore[attr-defined]
        except FFmpegError:
            log.debug("dropped a microphone packet the Opus decoder refused", exc_info=True)
            return False, None
        decoded = [f.to_ndarray().reshape(-1) for f in frames]
        lost = 0 if self._next_ts is None else (packet.timestamp - self._next_ts) % 2**32
        self._next_ts = (packet.timestamp + sum(d.size for d in decoded)) % 2**32
        if 0 < lost <= MAX_FILLED_GAP:
            decoded.insert(0, np.zeros(lost, dtype=np.int16))
        if decoded:
            pcm = np.concatenate(decoded).astype(np.float32) * np.float32(1 / 32768)
            try:
                self._on_audio(self._resampler.process(pcm))
            except Exception:  # never into aiortc's receive loop: that would end the call
                log.exception("microphone audio could not be processed")
        return False, None


def set_jitter_buffer(receiver: Any, buffer: JitterBuffer) -> None:
    """Replace an aiortc receiver's audio jitter buffer. (A private attribute: if aiortc renames
    it, its default buffer stays and only latency suffers.)"""
    name = "_RTCRtpReceiver__jitter_buffer"
    if isinstance(getattr(receiver, name, None), JitterBuffer):
        setattr(receiver, name, buffer)


class MediaCall:
    """What every call the engine carries audio for has (WebRTC here, SIP in `engine.sip.call`): the
    session, its runner playing the agent's audio on the paced `track`, and the call's own tasks. A
    call sends the session's events its own way (`_send`) and ends its own way (`close`)."""

    def __init__(self, session: Session, runner_factory: Callable[..., SessionRunner]) -> None:
        self.session = session
        self.track = AgentAudioTrack(self._on_drained)
        self.ended = asyncio.Event()
        self.end_reason: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.runner = runner_factory(session, self._send, playout=self.track)
        self.runner.listen(self._watch)

    async def _send(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    async def close(self, reason: str = "hangup") -> None:
        raise NotImplementedError

    def _watch(self, event: dict[str, Any]) -> None:
        if event["type"] == "response.done":
            self.track.finish(event["response"]["id"])

    def _on_drained(self, response_id: str) -> None:
        self.session.playback_stopped(response_id)
        self.runner.pump()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _end_with_session(self) -> None:
        reason = await self.runner.wait_closed()  # e.g. session_expired
        await self.close(reason or "session_closed")


class Call(MediaCall):
    """One WebRTC call: the peer, its session runner, and sideband listeners."""

    def __init__(self, session: Session, runner_factory: Callable[..., SessionRunner],
                 on_end: Callable[[Call], None], *, ice_servers: Sequence[IceServer] = (),
                 engine_id: str | None = None) -> None:
        self.id = ids.rtc_call_id(engine_id)  # (an engine in a pool names itself in its calls' ids)
        self.pc = peer_connection(ice_servers)
        self._channel: RTCDataChannel | None = None
        self._pending: list[str] = []
        self._on_end = on_end
        super().__init__(session, runner_factory)

    # -- signalling --------------------------------------------------------------------------

    async def answer(self, offer_sdp: str) -> str:
        pc = self.pc

        @pc.on("datachannel")
        def _on_channel(channel: RTCDataChannel) -> None:
            if channel.label != "oai-events":
                return
            self._channel = channel

            @channel.on("message")
            def _on_message(message: str | bytes) -> None:
                self.runner.feed(message)

            for text in self._pending:
                channel.send(text)
            self._pending.clear()

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.close(f"peer_{pc.connectionState}")

        if "\nm=audio " in offer_sdp:
            # Made before the offer is applied, so that it takes the offer's first audio section
            # with our codec choice: Opus only, as OpenAI answers (the microphone path decodes
            # Opus itself; an offer without it is refused).
            transceiver = pc.addTransceiver(self.track, direction="sendrecv")
            transceiver.setCodecPreferences(
                [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"])
            set_jitter_buffer(transceiver.receiver, MicReceiver(self.runner.feed_audio))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self.runner.start()
        self._spawn(self._connect_deadline())
        self._spawn(self._end_with_session())
        return with_opus_max_average_bitrate(pc.localDescription.sdp, OPUS_MAX_AVERAGE_BITRATE)

    async def _connect_deadline(self) -> None:
        await asyncio.sleep(CONNECT_TIMEOUT_S)
        if self.pc.connectionState != "connected":
            await self.close("peer_never_connected")

    # -- media and events --------------------------------------------------------------------

    async def _send(self, event: dict[str, Any]) -> None:
        text = json.dumps(event, separators=(",", ":"))
        if len(text) > MAX_CHANNEL_MESSAGE and event["type"] == "conversation.item.retrieved":
            # A whole item's audio does not fit a data channel message; the sideband carries it.
            item = {**event["item"], "content": [{k: v for k, v in p.items() if k != "audio"}
                                                 for p in event["item"].get("content", [])]}
            text = json.dumps({**event, "item": item}, separators=(",", ":"))
        channel = self._channel
        if channel is None or channel.readyState != "open":
            self._pending.append(text)  # session.created etc. wait for the channel to open
            return
        try:
            channel.send(text)
        except Exception:
            log.warning("dropped a %s event the data channel refused", event["type"], exc_info=True)

    # -- ending ------------------------------------------------------------------------------

    async def close(self, reason: str = "hangup") -> None:
        if self.ended.is_set():
            return
        self.end_reason = reason
        self.ended.set()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        self.track.stop()
        await self.runner.close(reason)
        with contextlib.suppress(Exception):
            await self.pc.close()
        self._on_end(self)
