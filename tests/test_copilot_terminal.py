"""`parley copilot` in Python: two WAV sources against the engine, quick and main answers."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from parley.apps.copilot.answerer import LocalAnswerer
from parley.apps.copilot.terminal import run_copilot
from parley.audio.pcm import SAMPLE_RATE
from parley.audio.wav import write_wav
from parley.engine.speech.wer import wer
from support.speech import speech_pcm24k

pytestmark = pytest.mark.slow


def _wav(path: Path, lead_s: float, text: str, tail_s: float = 2.5) -> str:
    pcm = np.concatenate([np.zeros(int(SAMPLE_RATE * lead_s), np.float32), speech_pcm24k(text, voice="echo"),
                          np.zeros(int(SAMPLE_RATE * tail_s), np.float32)])
    return str(write_wav(path, pcm, SAMPLE_RATE))


async def test_two_sources_quick_and_main_answers(engine_url: str, tmp_path: Path) -> None:
    them = _wav(tmp_path / "them.wav", 0.3, "How does a load balancer work?", tail_s=6.0)
    you = _wav(tmp_path / "you.wav", 4.0, "I would put the servers behind it.")
    out = io.StringIO()
    timeline = await run_copilot(base_url=f"{engine_url}/v1", api_key="sk-local", mic=you, speaker=them,
                                 answerer=LocalAnswerer(), out=out)
    kinds = [e["kind"] for e in timeline]
    assert "them" in kinds and "you" in kinds, timeline
    assert kinds.index("them") < kinds.index("you")  # speech order
    them_line = next(e for e in timeline if e["kind"] == "them")
    assert wer("How does a load balancer work?", them_line["text"]) <= 0.5, them_line
    # the quick answer knew what the other party asked: the injection works
    aux = [e for e in timeline if e["kind"] == "aux"]
    assert aux and "Load balancer" in aux[0]["text"], timeline
    main = next(e for e in timeline if e["kind"] == "main")
    assert main["text"].startswith("Load balancer:") and "Offline answerer" in main["label"]
    assert [json.loads(line)["kind"] for line in out.getvalue().splitlines()] == kinds
