"""The input audio buffer (`input_audio_buffer.*`): microphone audio not yet committed to an item.

Positions are in session time, ms since the session's first audio, so that VAD events, commits
and `audio_start_ms`/`audio_end_ms` all count on one clock; the buffer keeps the audio from
`start_ms` to `end_ms` (the end of all audio received).
"""

from __future__ import annotations

import numpy as np

from parley.audio.pcm import SAMPLE_RATE, FloatArray


class InputBuffer:
    def __init__(self) -> None:
        self._chunks: list[FloatArray] = []
        self._samples = 0
        self.start_ms = 0.0
        self.end_ms = 0.0

    @property
    def ms(self) -> float:
        """How much audio the buffer holds."""
        return self._samples * 1000 / SAMPLE_RATE

    def append(self, pcm: FloatArray) -> None:
        self._chunks.append(pcm)
        self._samples += pcm.size
        self.end_ms += pcm.size * 1000 / SAMPLE_RATE

    def audio(self) -> FloatArray:
        """All the buffered audio."""
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, dtype=np.float32)

    def slice(self, start_ms: float, end_ms: float) -> FloatArray:
        a = max(0, round((start_ms - self.start_ms) * SAMPLE_RATE / 1000))
        b = max(a, round((end_ms - self.start_ms) * SAMPLE_RATE / 1000))
        # Join only the chunks from `a` on: the end of speech is looked for at every pause, in
        # the last 64 ms, and must not copy the whole utterance each time.
        first, offset = len(self._chunks), self._samples
        while first > 0 and offset > a:
            first -= 1
            offset -= self._chunks[first].size
        chunks = self._chunks[first:]
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        joined = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
        return joined[a - offset : b - offset]

    def drop_before(self, ms: float) -> None:
        cut = round((ms - self.start_ms) * SAMPLE_RATE / 1000)
        if cut <= 0:
            return
        buf = self.audio()[cut:]
        self._chunks = [buf] if buf.size else []
        self._samples = buf.size
        self.start_ms = ms

    def clear(self) -> None:
        self._chunks, self._samples, self.start_ms = [], 0, self.end_ms
