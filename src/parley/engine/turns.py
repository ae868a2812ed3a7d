"""Turn detection (`server_vad`, `semantic_vad`): where the user's speech starts and stops.

The `TurnDetector` judges the speech probabilities of a `VoiceDetector`, frame by frame, and
tells the session what it found as turn signals; the session decides what they mean for the
conversation (an item, a commit, a speculative transcription, a barge-in).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from parley.audio.levels import loud_until
from parley.audio.pcm import SAMPLE_RATE, FloatArray
from parley.engine.input_buffer import InputBuffer
from parley.protocol.session import SemanticVad, ServerVad

VAD_FRAME_MS = 32
# Frames above the threshold before a turn starts: one frame of noise is not speech.
SPEECH_START_FRAMES = 2
# Silero's usual hysteresis: once speaking, a frame counts as voice down to threshold - 0.15.
NEG_THRESHOLD_GAP = 0.15
# Silero often scores a short word before a pause ("Oh, that's...", "Uh, yeah...") under the
# threshold, so the turn would start at the next word and the STT never hear it. When a turn
# starts, its start moves back to the earliest frame of the last ONSET_LOOKBACK_MS that scored
# at least threshold - ONSET_GAP (the prefix padding is then counted from there). On the tuning
# two-thirds of benchmarks/hearing.py (beam 5 on the session's cuts): clean 16.1 -> 15.0 % WER,
# G.711 34.9 -> 30.9 %; a look-back of 600 ms did the same, a lower bar (0.15) moved more starts
# and did worse (15.4 %, 36.8 %).
ONSET_LOOKBACK_MS = 1_000
ONSET_GAP = NEG_THRESHOLD_GAP
# Silero still calls the fading end of a word voice for 15-65 ms. On the first quiet frame the
# end of speech moves back to where the signal fell below -50 dBFS (4 ms resolution, at most
# two frames back), so the silence window counts from the end of the sound.
VOICE_TAIL_LOOKBACK_MS = 64
VOICE_TAIL_BLOCK_MS = 4
VOICE_TAIL_DBFS = -50.0
# Silence after which the turn may be over (or the whole window, if shorter): `VoicePaused`.
PAUSE_MS = VAD_FRAME_MS * 2
# semantic_vad has no language model here; eagerness picks a silence window instead.
SEMANTIC_SILENCE_MS = {"low": 1_200, "medium": 700, "auto": 700, "high": 400}

TurnDetection = ServerVad | SemanticVad


class VoiceDetector(Protocol):
    """What the session's turn detection hears with: speech probabilities of its audio.

    `feed` takes float32 24 kHz audio in chunks of any size and returns one (end_ms, probability)
    pair per complete frame of VAD_FRAME_MS, end_ms counted from the stream's start or last
    `reset`. The engine gives each session a silero stream (`speech.vad.VadStream`); tests can
    give a scripted one.
    """

    def feed(self, audio: FloatArray) -> Sequence[tuple[float, float]]: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


# -- turn signals (positions in session time, ms) ----------------------------------------------


@dataclass(frozen=True)
class SpeechStarted:
    start_ms: float  # with the prefix padding, never before the buffer's start


@dataclass(frozen=True)
class VoicePaused:
    """A pause after voice: the turn may be over. The speech so far is start_ms to voice_end_ms;
    the audio so far runs on into the pause, to until_ms (it holds the fading end of the last word,
    which the STT hears better with)."""

    start_ms: float
    voice_end_ms: float
    until_ms: float


@dataclass(frozen=True)
class VoiceResumed:
    """Voice again after a `VoicePaused`: the turn goes on."""


@dataclass(frozen=True)
class SpeechStopped:
    """Silence for the whole window: the turn's audio is start_ms to end_ms."""

    start_ms: float
    end_ms: float


TurnSignal = SpeechStarted | VoicePaused | VoiceResumed | SpeechStopped


def silence_window_ms(td: TurnDetection) -> int:
    if isinstance(td, ServerVad):
        return td.silence_duration_ms
    return SEMANTIC_SILENCE_MS[td.eagerness]


class TurnDetector:
    """Turn state over the session's input buffer, which it reads (to find the end of a sound)
    and never changes."""

    def __init__(self, voice: VoiceDetector, buffer: InputBuffer) -> None:
        self._voice = voice
        self._buffer = buffer
        # The VAD hears only what arrives while turn detection is on; its clock restarts at
        # `_origin_ms` of session time whenever it resumes after a gap.
        self._origin_ms = 0.0
        self._fed_until_ms = 0.0
        self.speaking = False
        self._above = 0
        self._candidate_start_ms = 0.0
        self._speech_start_ms = 0.0
        self._last_voice_ms = 0.0
        self._voice_end_refined = False
        self._paused = False
        self._quiet: deque[tuple[float, float]] = deque()  # (end_ms, prob) of recent frames before a turn

    def hear(self, td: TurnDetection, pcm: FloatArray, start_ms: float) -> Iterator[TurnSignal]:
        """`pcm` was just appended to the buffer at `start_ms`. The signals come as each frame
        is judged, so act on each before taking the next: what the session does with one (a
        commit drops buffered audio) is what the following frames see."""
        if start_ms != self._fed_until_ms:
            self._voice.reset()
            self._origin_ms = start_ms
            self._quiet.clear()
        self._fed_until_ms = self._buffer.end_ms
        return self._judge(td, self._voice.feed(pcm))

    def end(self) -> None:
        """The turn ended without the detector: a manual commit, a clear, turn detection off."""
        self.speaking = False
        self._above = 0
        self._quiet.clear()

    def close(self) -> None:
        """Give back the voice detector (a VAD model goes back to the shared pool)."""
        self._voice.close()

    def _judge(self, td: TurnDetection, frames: Sequence[tuple[float, float]]) -> Iterator[TurnSignal]:
        for end_ms, prob in frames:
            yield from self._frame(td, self._origin_ms + end_ms, prob)

    def _frame(self, td: TurnDetection, end_ms: float, prob: float) -> Iterator[TurnSignal]:
        threshold = td.threshold if isinstance(td, ServerVad) else 0.5
        if not self.speaking:
            self._quiet.append((end_ms, prob))
            while self._quiet[0][0] <= end_ms - ONSET_LOOKBACK_MS:
                self._quiet.popleft()
            if prob >= threshold:
                self._above += 1
                if self._above == 1:
                    self._candidate_start_ms = end_ms - VAD_FRAME_MS
                if self._above >= SPEECH_START_FRAMES:
                    prefix = td.prefix_padding_ms if isinstance(td, ServerVad) else 300
                    self.speaking, self._above, self._paused = True, 0, False
                    onset = self._onset_ms(threshold - ONSET_GAP)
                    self._quiet.clear()
                    self._speech_start_ms = max(self._buffer.start_ms, onset - prefix)
                    self._last_voice_ms = end_ms
                    self._voice_end_refined = False
                    yield SpeechStarted(self._speech_start_ms)
            else:
                self._above = 0
            return
        if prob >= threshold - NEG_THRESHOLD_GAP:
            self._last_voice_ms = end_ms
            self._voice_end_refined = False
            if self._paused:
                self._paused = False
                yield VoiceResumed()
            return
        if not self._voice_end_refined:
            self._voice_end_refined = True
            self._last_voice_ms = self._sound_end(self._last_voice_ms)
        silence = end_ms - self._last_voice_ms
        window = silence_window_ms(td)
        if not self._paused and silence >= min(PAUSE_MS, window):
            self._paused = True
            yield VoicePaused(self._speech_start_ms, self._last_voice_ms, end_ms)
        if silence >= window:
            self.speaking = False
            self._quiet.clear()
            yield SpeechStopped(self._speech_start_ms, end_ms)

    def _onset_ms(self, maybe: float) -> float:
        """Where the turn's voice began: the earliest recent frame that may have been voice."""
        first = next((end for end, prob in self._quiet if prob >= maybe), None)
        return min(self._candidate_start_ms, first - VAD_FRAME_MS) if first is not None else self._candidate_start_ms

    def _sound_end(self, voice_until_ms: float) -> float:
        start_ms = max(self._speech_start_ms, voice_until_ms - VOICE_TAIL_LOOKBACK_MS)
        tail = self._buffer.slice(start_ms, voice_until_ms)
        loud = loud_until(tail, SAMPLE_RATE * VOICE_TAIL_BLOCK_MS // 1000, VOICE_TAIL_DBFS)
        return min(voice_until_ms, start_ms + loud * 1000 / SAMPLE_RATE) if loud else start_ms
