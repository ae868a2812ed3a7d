"""A SIP phone for tests, on loopback: aiosipua for signalling (INVITE/ACK/BYE out; REFER, BYE in)
and a plain asyncio UDP socket for RTP (G.711 μ-law in real-time paced 20 ms packets, RFC 4733
digits), so a test calls the engine's SIP address as a softphone would.

    phone = await SipPhone.open()
    await phone.call(engine_sip_addr)        # INVITE ... 200 OK, ACK
    await phone.say(speech_pcm24k("hello"))  # paced RTP
    heard = phone.heard_24k()                # what the agent said, decoded
    await phone.hang_up()
"""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiortp import DtmfEvent, RtpPacket
from aiosipua import IncomingCall, OutgoingCall, SipRequest, SipUAC, SipUAS, build_sdp

from parley.audio.g711 import ulaw_decode, ulaw_encode
from parley.audio.pcm import SAMPLE_RATE, FloatArray
from parley.audio.resample import resample
from parley.engine.sip.listener import UdpTransport

FRAME_8K = 160
DTMF_PT = 101


class _Rtp(asyncio.DatagramProtocol):
    def __init__(self, phone: SipPhone) -> None:
        self.phone = phone

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.phone._rtp_in(data)


@dataclass
class Heard:
    at: float  # time.monotonic() of arrival
    pcm8k: np.ndarray


class SipPhone:
    def __init__(self, number: str = "+15550123") -> None:
        self.number = number
        self.transport = UdpTransport(local_addr=("127.0.0.1", 0))
        self.uac = SipUAC(self.transport)
        self.uas = SipUAS(self.transport, uac=self.uac, user_agent="parley-test-phone")
        self.uas.on_refer = self._on_refer
        self.uas.on_bye = self._on_bye
        self.call_: OutgoingCall | None = None
        self.remote_rtp: tuple[str, int] | None = None
        self.rtp: asyncio.DatagramTransport | None = None
        self.rtp_port = 0
        self.heard: list[Heard] = []
        self.refers: list[str] = []
        self.referred = asyncio.Event()
        self.bye_received = asyncio.Event()
        self._seq, self._ts, self._ssrc = 1000, 160_000, 0x5EED

    @classmethod
    async def open(cls, number: str = "+15550123") -> SipPhone:
        phone = cls(number)
        await phone.uas.start()
        loop = asyncio.get_running_loop()
        rtp, _ = await loop.create_datagram_endpoint(lambda: _Rtp(phone), local_addr=("127.0.0.1", 0))
        phone.rtp = rtp
        phone.rtp_port = int(rtp.get_extra_info("sockname")[1])
        return phone

    @property
    def sip_addr(self) -> tuple[str, int]:
        return self.transport.local_addr

    async def close(self) -> None:
        if self.rtp is not None:
            self.rtp.close()
        await self.uas.stop()

    # -- signalling --------------------------------------------------------------------------

    def dial(self, engine: tuple[str, int], *, sdp: Any = None) -> OutgoingCall:
        """Send the INVITE (μ-law and telephone-event offered); `call` waits for the answer."""
        offer = sdp if sdp is not None else build_sdp("127.0.0.1", self.rtp_port, 0, "PCMU",
                                                      dtmf_payload_type=DTMF_PT)
        self.call_ = self.uac.send_invite(f"sip:{self.number}@127.0.0.1", f"sip:agent@{engine[0]}:{engine[1]}",
                                          engine, offer)
        return self.call_

    async def call(self, engine: tuple[str, int], timeout: float = 30.0) -> OutgoingCall:
        call = self.dial(engine)
        await call.wait_answered(timeout)
        assert call.sdp_answer is not None and call.sdp_answer.rtp_address is not None
        self.remote_rtp = call.sdp_answer.rtp_address
        return call

    async def hang_up(self) -> None:
        assert self.call_ is not None
        self.call_.hangup(self.uac)

    def _on_refer(self, call: IncomingCall, refer_to: str) -> None:
        # The header as sent: aiosipua re-serializes the URI as a sip: one, which mangles tel: URIs.
        raw = call.invite.get_header("refer-to") or refer_to
        self.refers.append(raw.strip().removeprefix("<").split(">")[0])
        self.referred.set()

    def _on_bye(self, _call: IncomingCall, _request: SipRequest) -> None:
        self.bye_received.set()

    # -- media -------------------------------------------------------------------------------

    def _rtp_in(self, data: bytes) -> None:
        packet = RtpPacket.parse(data)
        if packet.payload_type == 0:
            self.heard.append(Heard(time.monotonic(), ulaw_decode(packet.payload)))

    def send_packet(self, payload_type: int, payload: bytes, *, marker: int = 0, timestamp: int | None = None,
                    to: tuple[str, int] | None = None) -> None:
        assert self.rtp is not None
        dest = to or self.remote_rtp
        assert dest is not None
        self._seq = (self._seq + 1) % 65536
        packet = RtpPacket(payload_type=payload_type, marker=marker, sequence_number=self._seq,
                           timestamp=self._ts if timestamp is None else timestamp, ssrc=self._ssrc, payload=payload)
        self.rtp.sendto(packet.serialize(), dest)

    async def say(self, pcm24k: FloatArray) -> float:
        """Send audio as μ-law in 20 ms packets, in real time; the monotonic time the last left."""
        pcm8k = resample(pcm24k, SAMPLE_RATE, 8000)
        pcm8k = np.concatenate([pcm8k, np.zeros(-len(pcm8k) % FRAME_8K, dtype=np.float32)])
        start = time.monotonic()
        for n in range(len(pcm8k) // FRAME_8K):
            frame = (np.clip(pcm8k[n * FRAME_8K:(n + 1) * FRAME_8K], -1, 1) * 32767).astype(np.int16)
            self.send_packet(0, ulaw_encode(frame))
            self._ts = (self._ts + FRAME_8K) % 2**32
            wait = start + (n + 1) * 0.02 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        return time.monotonic()

    def send_digit(self, key: str) -> None:
        """An RFC 4733 digit: progress packets, then three end packets, one timestamp."""
        code = "0123456789*#".index(key)
        for duration, end in ((160, False), (320, False), (640, True), (640, True), (640, True)):
            payload = DtmfEvent(event=code, end=end, volume=10, duration=duration).serialize()
            self.send_packet(DTMF_PT, payload, marker=1 if duration == 160 else 0)
        self._ts = (self._ts + 640) % 2**32

    def heard_24k(self, since: float = 0.0) -> FloatArray:
        chunks = [h.pcm8k for h in self.heard if h.at >= since]
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        pcm = np.concatenate(chunks).astype(np.float32) / 32768
        return resample(pcm, 8000, SAMPLE_RATE)

    def first_audible_after(self, t: float, threshold_dbfs: float = -45.0) -> float | None:
        level = 10 ** (threshold_dbfs / 20) * 32768
        for h in self.heard:
            if h.at >= t and np.sqrt(np.mean(h.pcm8k.astype(np.float64) ** 2)) > level:
                return h.at
        return None


def bad_datagrams() -> list[bytes]:
    """Things that are not SIP (or barely): for the listener to drop without harm."""
    return [b"\x00\xff" * 40, b"INVITE\r\n\r\n", b"SIP/2.0 banana\r\n\r\n", b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n\r\n",
            struct.pack("!I", 7) * 5000]
