"""RTP media of a SIP call, sans-I/O: G.711 μ-law/A-law in 20 ms packets, RFC 4733 DTMF in.

`RtpReceiver` takes datagrams as they arrive and says what each was: audio for the session (at
the engine's 24 kHz), a keypad digit, or something dropped (and why, for the counter). Only the
address the caller's SDP named may send (once the first packet has come from it, latched: a
caller behind NAT sends from elsewhere than it says, and on loopback they agree). `RtpSender`
turns the agent's 24 kHz audio into the next packet to send. Packets are parsed and built by
`aiortp`; telephone-event payloads by its `DtmfReceiver`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import numpy as np
from aiortp import DtmfReceiver, RtpPacket

from parley.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from parley.audio.pcm import SAMPLE_RATE, FloatArray
from parley.audio.resample import LOW_LATENCY, StreamResampler

G711_RATE = 8000
FRAME_MS = 20
FRAME_8K = G711_RATE * FRAME_MS // 1000  # samples (and bytes) of G.711 per packet
FRAME_24K = SAMPLE_RATE * FRAME_MS // 1000
PCMU, PCMA = 0, 8
CODECS: dict[int, str] = {PCMU: "PCMU", PCMA: "PCMA"}
DTMF_PT = 101
# A gap in the caller's timestamps up to this long (lost packets) becomes silence, so the
# session's clock keeps pace with the caller's; a longer one is a new talk spurt.
MAX_FILLED_GAP = G711_RATE * 2
MAX_PACKET = 1500

Addr = tuple[str, int]


@dataclass(frozen=True)
class Audio:
    pcm: FloatArray  # 24 kHz


@dataclass(frozen=True)
class Digit:
    key: str


@dataclass(frozen=True)
class Dropped:
    reason: Literal["stranger", "malformed", "payload_type", "old"]
    detail: str = ""


Received = Audio | Digit | Dropped | None  # None: taken, nothing to hand on (a DTMF progress packet)


class RtpReceiver:
    def __init__(self, remote: Addr, payload_type: int, dtmf_payload_type: int | None = DTMF_PT) -> None:
        self.remote = remote
        self.payload_type = payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self._decode = ulaw_decode if payload_type == PCMU else alaw_decode
        # Low latency: soxr would hold back up to 37 ms (LQ) of the caller's last words.
        self._resampler = StreamResampler(G711_RATE, SAMPLE_RATE, quality=LOW_LATENCY)
        self._ssrc: int | None = None
        self._last_seq: int | None = None
        self._next_ts: int | None = None
        self._digits: list[str] = []
        self._dtmf = DtmfReceiver(lambda key, _duration: self._digits.append(key))

    def receive(self, data: bytes, addr: Addr) -> Received:
        if addr != self.remote:
            return Dropped("stranger", f"{addr[0]}:{addr[1]}")
        if len(data) > MAX_PACKET:
            return Dropped("malformed", f"{len(data)} bytes")
        try:
            packet = RtpPacket.parse(data)
        except ValueError as exc:
            return Dropped("malformed", str(exc))
        if packet.payload_type == self.dtmf_payload_type:
            try:
                self._dtmf.handle_packet(packet)
            except ValueError as exc:
                return Dropped("malformed", str(exc))
            return Digit(self._digits.pop(0)) if self._digits else None
        if packet.payload_type != self.payload_type:
            return Dropped("payload_type", str(packet.payload_type))
        if self._ssrc != packet.ssrc:  # a new source (or the first): its own numbering
            self._ssrc, self._last_seq, self._next_ts = packet.ssrc, None, None
        seq = packet.sequence_number
        if self._last_seq is not None and not 0 < (seq - self._last_seq) % 65536 < 0x8000:
            return Dropped("old", str(seq))  # a duplicate, or older than one already played
        self._last_seq = seq
        samples = self._decode(packet.payload).astype(np.float32) * np.float32(1 / 32768)
        lost = 0 if self._next_ts is None else (packet.timestamp - self._next_ts) % 2**32
        self._next_ts = (packet.timestamp + samples.size) % 2**32
        if 0 < lost <= MAX_FILLED_GAP:
            samples = np.concatenate([np.zeros(lost, dtype=np.float32), samples])
        return Audio(self._resampler.process(samples))


class RtpSender:
    """The agent's side of the stream: one packet of `payload_type` per 20 ms frame at 24 kHz."""

    def __init__(self, payload_type: int) -> None:
        self.payload_type = payload_type
        self._encode = ulaw_encode if payload_type == PCMU else alaw_encode
        self._resampler = StreamResampler(SAMPLE_RATE, G711_RATE, quality=LOW_LATENCY)
        self._ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._first = True

    def packet(self, frame_24k: FloatArray) -> bytes:
        self._pending = np.concatenate([self._pending, self._resampler.process(frame_24k)])
        if self._pending.size < FRAME_8K:  # the resampler's start-up delay: pad (once, a few samples)
            self._pending = np.concatenate([np.zeros(FRAME_8K - self._pending.size, dtype=np.float32),
                                            self._pending])
        samples, self._pending = self._pending[:FRAME_8K], self._pending[FRAME_8K:]
        pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)
        packet = RtpPacket(payload_type=self.payload_type, marker=1 if self._first else 0,
                           sequence_number=self._seq, timestamp=self._ts, ssrc=self._ssrc,
                           payload=self._encode(pcm))
        self._first = False
        self._seq = (self._seq + 1) % 65536
        self._ts = (self._ts + FRAME_8K) % 2**32
        return packet.serialize()
