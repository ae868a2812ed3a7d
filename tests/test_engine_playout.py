"""The agent's track plays responses back to back and says when each one has played out."""

from __future__ import annotations

import numpy as np
from aiortc.rtp import RtpPacket

from parley.engine.webrtc import FRAME_SAMPLES, AgentAudioTrack, ArrivalBuffer


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


def test_arrival_buffer_releases_each_packet_at_once_and_drops_stale_ones() -> None:
    buf = ArrivalBuffer()

    def add(seq: int) -> bytes | None:
        packet = RtpPacket(sequence_number=seq, timestamp=seq * 960)
        packet._data = bytes([seq % 256])  # type: ignore[attr-defined]  # set by aiortc's depayloader
        return None if (frame := buf.add(packet)[1]) is None else frame.data

    assert add(65534) == bytes([254])
    assert add(65535) == bytes([255])
    assert add(1) == bytes([1])  # across the wrap, a lost packet (0) is skipped, not waited for
    assert add(0) is None  # late: a newer one has been played
    assert add(1) is None  # duplicate
    assert add(2) == bytes([2])
