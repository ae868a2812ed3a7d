"""The agent's track plays responses back to back and says when each one has played out."""

from __future__ import annotations

import numpy as np
import pytest

from parley.engine.webrtc import FRAME_SAMPLES, AgentAudioTrack


def test_back_to_back_responses_each_report_when_played() -> None:
    drained: list[str] = []
    track = AgentAudioTrack(drained.append)
    track.enqueue("resp_a", "item_a", np.full(FRAME_SAMPLES * 2, 0.1, np.float32))
    track.finish("resp_a")
    track.enqueue("resp_b", "item_b", np.full(FRAME_SAMPLES + 100, 0.2, np.float32))
    track.finish("resp_b")
    frames = [track._next_samples() for _ in range(4)]
    assert drained == ["resp_a", "resp_b"]
    assert np.allclose(frames[0], 0.1) and np.allclose(frames[2], 0.2)
    assert np.allclose(frames[3][:100], 0.2) and not frames[3][100:].any()


def test_clear_reports_what_was_heard() -> None:
    track = AgentAudioTrack(lambda _r: None)
    track.enqueue("resp_a", "item_a", np.ones(FRAME_SAMPLES * 10, np.float32))
    for _ in range(3):
        track._next_samples()
    assert track.clear() == ("resp_a", "item_a", 60.0)
    assert not track._next_samples().any()  # silence after a clear



def test_mic_receiver_decodes_each_packet_on_arrival_and_keeps_pace_through_loss() -> None:
    from aiortc.rtp import RtpPacket

    from parley.engine.webrtc import OPUS_FRAME, MicReceiver, PacedAudioTrack

    class Tone(PacedAudioTrack):
        n = 0

        def _next_samples(self) -> np.ndarray:
            self.n += 1
            t = (np.arange(FRAME_SAMPLES) + self.n * FRAME_SAMPLES) / 24_000
            return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)

    sender = Tone()
    payloads = [sender._payload(sender._next_samples()) for _ in range(8)]
    heard: list[np.ndarray] = []
    mic = MicReceiver(heard.append)

    def add(seq: int, payload: bytes) -> None:
        packet = RtpPacket(sequence_number=seq % 65536, timestamp=(seq * OPUS_FRAME) % 2**32)
        packet._data = payload  # type: ignore[attr-defined]  # set by aiortc's depayloader
        assert mic.add(packet) == (False, None)  # nothing left for aiortc's own decoder

    for n, seq in enumerate((65533, 65534, 65535)):
        add(seq, payloads[n])
    assert [h.size for h in heard][-1] > 0  # audio came out with no later packet needed
    before = sum(h.size for h in heard)
    add(65537, payloads[4])  # 65536 (0) was lost: its 20 ms come as silence, then this packet
    assert sum(h.size for h in heard) - before == pytest.approx(2 * FRAME_SAMPLES, abs=48)
    count = len(heard)
    add(65536, payloads[3])  # late: a newer packet has been decoded
    add(65537, payloads[4])  # duplicate
    add(65538, b"\xff\x00garbage")  # refused by the decoder: dropped, the call goes on
    assert len(heard) == count
    add(65539, payloads[6])
    assert len(heard) == count + 1
    level = np.sqrt(np.mean(np.concatenate(heard[:3]) ** 2))  # the first three, in a row
    assert level > 0.12  # the tone survives the round trip through Opus (0.3 peak: 0.21 RMS)


def test_silence_goes_out_as_one_cached_packet_after_a_hangover() -> None:
    from parley.engine.webrtc import ENCODER_HANGOVER_FRAMES, PacedAudioTrack

    track = PacedAudioTrack()
    quiet = np.zeros(FRAME_SAMPLES, np.float32)
    silence = track._payload(quiet)
    assert track._encoder is None  # nothing encoded for a silent start
    loud = track._payload(np.full(FRAME_SAMPLES, 0.3, np.float32))
    assert loud != silence
    tail = [track._payload(quiet) for _ in range(ENCODER_HANGOVER_FRAMES + 2)]
    assert tail[-1] == tail[-2] == silence
