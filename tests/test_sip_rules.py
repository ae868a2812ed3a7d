"""The sans-I/O SIP rules: RTP in and out (engine.sip.media), the webhook's shape, the caller's
identity from a From header (server.sip_calls)."""

from __future__ import annotations

import numpy as np
from aiortp import DtmfEvent, RtpPacket
from openai import OpenAI

from parley.audio.g711 import ulaw_encode
from parley.engine.sip.media import PCMU, Audio, Digit, Dropped, RtpReceiver, RtpSender
from parley.engine.sip.signalling import incoming_call_webhook
from parley.server.sip_calls import caller_of

PEER = ("127.0.0.1", 40000)


def rtp(seq: int, ts: int, payload: bytes, pt: int = PCMU) -> bytes:
    return RtpPacket(payload_type=pt, sequence_number=seq, timestamp=ts, ssrc=7, payload=payload).serialize()


def test_receiver_decodes_and_drops() -> None:
    rx = RtpReceiver(PEER, PCMU)
    tone = ulaw_encode((np.sin(np.arange(160) / 3) * 8000).astype(np.int16))
    got = [rx.receive(rtp(seq, (seq - 1) * 160, tone), PEER) for seq in range(1, 7)]
    assert all(isinstance(g, Audio) for g in got)
    # At 24 kHz; the stream resampler hands its output on in blocks.
    assert sum(g.pcm.size for g in got if isinstance(g, Audio)) >= 3 * 480
    assert rx.receive(rtp(7, 960, tone), ("127.0.0.1", 40001)) == Dropped("stranger", "127.0.0.1:40001")
    assert isinstance(rx.receive(b"\x80\x00", PEER), Dropped)
    assert rx.receive(rtp(1, 0, tone), PEER) == Dropped("old", "1")
    assert rx.receive(rtp(8, 1120, tone, pt=8), PEER) == Dropped("payload_type", "8")


def test_receiver_gives_each_digit_once() -> None:
    rx = RtpReceiver(PEER, PCMU)
    got = [rx.receive(rtp(10 + i, 800, DtmfEvent(5, end, 10, 320).serialize(), pt=101), PEER)
           for i, end in enumerate((False, True, True, True))]
    assert got == [None, Digit("5"), None, None]


def test_sender_makes_20ms_packets() -> None:
    tx = RtpSender(PCMU)
    packets = [RtpPacket.parse(tx.packet(np.zeros(480, dtype=np.float32))) for _ in range(3)]
    assert [len(p.payload) for p in packets] == [160, 160, 160]
    assert packets[1].timestamp - packets[0].timestamp == 160
    assert packets[0].marker == 1 and packets[1].marker == 0


def test_webhook_verifies_with_the_sdk() -> None:
    secret = "whsec_" + "A" * 43 + "="
    hook = incoming_call_webhook("rtc_1", [{"name": "From", "value": "<sip:+15550123@x>;tag=1"}], secret)
    event = OpenAI(api_key="unused").webhooks.unwrap(hook.body, hook.headers, secret=secret)
    assert event.type == "realtime.call.incoming" and event.data.call_id == "rtc_1"


def test_caller_identity() -> None:
    def who(value: str) -> str | None:
        caller = caller_of([{"name": "From", "value": value}])
        return caller.user_id if caller else None

    assert who('"Ann" <sip:+1 (555) 0123@carrier.example>;tag=x'.replace(" ", "")) == "tel:+15550123"
    assert who("<tel:+15550123>") == "tel:+15550123"
    assert who("<sip:alice@example.org>;tag=1") == "sip:alice@example.org"
    assert who("nobody") is None
    assert caller_of([]) is None
