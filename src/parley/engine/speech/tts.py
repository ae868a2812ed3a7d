"""Text-to-speech with espeak-ng (libespeak-ng + its data ship in the espeakng-loader wheel).

We drive the C library through ctypes in synchronous mode: espeak_Synth() runs on the calling
thread and hands us int16 chunks (~60 ms each, 22050 Hz) through a callback; returning 1 from
the callback aborts synthesis, which is how barge-in stops a long reply at once.

espeak-ng keeps all its state (current voice, rate, pitch, the callback) in globals, so every use
goes through one process-wide lock and one worker thread, and each call sets voice and prosody
from scratch. It runs ~600x faster than real time (first chunk in <1 ms), so serializing
sessions costs little.
"""

from __future__ import annotations

import asyncio
import ctypes
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

import numpy as np
import numpy.typing as npt

from parley.audio.pcm import SAMPLE_RATE, FloatArray
from parley.audio.resample import StreamResampler

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS: Final = 2
_INITIALIZE_DONT_EXIT: Final = 0x8000  # without it espeak calls exit() on a data error
_CHARS_UTF8: Final = 1
_POS_CHARACTER: Final = 1
_RATE, _PITCH, _RANGE, _WORDGAP = 1, 3, 4, 7
_RATE_MIN, _RATE_MAX = 80, 450
#: Words per minute at speed 1.0 (espeak's default).
BASE_WPM: Final = 175

OUTPUT_RATE: Final = SAMPLE_RATE

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@dataclass(frozen=True)
class VoiceSpec:
    """An espeak voice: language voice + variant ("en-us+f3"), base pitch and pitch range (0-100)."""

    espeak_name: str
    pitch: int = 50
    pitch_range: int = 50


# OpenAI voice names -> distinct espeak voices. Every entry has its own variant (formants, and so
# timbre) and its own pitch/range, and genders follow how the OpenAI voices are usually heard.
# Variants were picked for intelligibility: whisper tiny.en transcribed 8 phone-bill sentences
# at WER ~0.05-0.07 with f2/f3/f4/f5/m1/m8/edward, but 0.25-0.35 with m7, belinda, anika, max
# or en-gb-x-rp, so those are not used. British voices (sage, fable) cost ~0.14.
VOICES: Final[dict[str, VoiceSpec]] = {
    "alloy": VoiceSpec("en-us+f2", pitch=50, pitch_range=50),  # neutral, mid female
    "ash": VoiceSpec("en-us+m2", pitch=42, pitch_range=45),  # male
    "ballad": VoiceSpec("en+edward", pitch=55, pitch_range=70),  # male, British, lilting
    "coral": VoiceSpec("en-us+f3", pitch=60, pitch_range=60),  # female, bright
    "echo": VoiceSpec("en-us+m1", pitch=48, pitch_range=40),  # male, even
    "sage": VoiceSpec("en+f2", pitch=52, pitch_range=45),  # female, British, calm
    "shimmer": VoiceSpec("en-us+f4", pitch=68, pitch_range=65),  # female, high
    "verse": VoiceSpec("en-us+m6", pitch=52, pitch_range=75),  # male, expressive
    "marin": VoiceSpec("en-us+f5", pitch=55, pitch_range=55),  # female, warm
    "cedar": VoiceSpec("en-us+m3", pitch=35, pitch_range=40),  # male, deep
    "fable": VoiceSpec("en+m6", pitch=50, pitch_range=60),  # male, British
    "onyx": VoiceSpec("en-us+m8", pitch=28, pitch_range=35),  # male, deepest
    "nova": VoiceSpec("en-us+f1", pitch=62, pitch_range=65),  # female, young
}
DEFAULT_VOICE: Final = "alloy"


def voice_spec(voice: str | None) -> VoiceSpec:
    """The espeak voice for an OpenAI voice name; unknown names fall back to alloy."""
    return VOICES.get((voice or DEFAULT_VOICE).strip().lower(), VOICES[DEFAULT_VOICE])


def speed_to_prosody(speed: float) -> tuple[int, int]:
    """Map OpenAI `speed` (0.25-1.5, clamped) to (espeak words/minute, extra word gap in 10 ms units).

    espeak cannot talk slower than 80 wpm, so below speed ~0.46 we keep 80 wpm and stretch
    the pauses between words until the average word rate matches.
    """
    speed = min(1.5, max(0.25, float(speed)))
    wpm = BASE_WPM * speed
    if wpm >= _RATE_MIN:
        return min(_RATE_MAX, round(wpm)), 0
    # Word-gap units are nominally 10 ms "at the default speed"; at 80 wpm one unit measured
    # ~30 ms per word boundary, so that is the conversion used here.
    gap_ms = 60000.0 / wpm - 60000.0 / _RATE_MIN
    return _RATE_MIN, round(gap_ms / 30.0)


class _Espeak:
    """The process-wide libespeak-ng handle. Use only while holding `lock`."""

    def __init__(self) -> None:
        import espeakng_loader  # local import: only pay for it when TTS is used

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
        # espeak wants the directory that *contains* espeak-ng-data. libespeak-ng 1.52 also accepts
        # the data directory itself, but the parent works with every version; NULL does not work
        # at all (it falls back to the path baked in at the wheel's build, on the CI machine).
        data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent, _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({rate}) with data at {data_parent!r}")
        self.lib = lib
        self.sample_rate = rate  # 22050 for the bundled voices
        self.lock = threading.Lock()
        self._sink: Callable[[npt.NDArray[np.int16]], bool] | None = None
        self._error: BaseException | None = None
        # Keep a reference: ctypes does not, and a collected callback crashes the process.
        self._callback = _SynthCallback(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None

    def _on_audio(self, wav: ctypes._Pointer[ctypes.c_short], numsamples: int, _events: int | None) -> int:
        # Runs inside espeak_Synth on the synthesizing thread. Return 1 to abort.
        sink = self._sink
        if sink is None:
            return 1
        if not wav or numsamples <= 0:
            return 0
        try:
            chunk = np.ctypeslib.as_array(wav, shape=(numsamples,)).copy()
            return 0 if sink(chunk) else 1
        except BaseException as exc:  # an exception must not unwind through C
            self._error = exc
            return 1

    def synth(
        self, text: str, spec: VoiceSpec, speed: float, sink: Callable[[npt.NDArray[np.int16]], bool]
    ) -> None:
        """Synthesize `text`, passing int16 chunks to `sink` until it returns False. Caller holds lock."""
        lib = self.lib
        if spec.espeak_name != self._voice:
            # Loading a voice re-reads files, so skip it when the voice is unchanged...
            if lib.espeak_SetVoiceByName(spec.espeak_name.encode()) != 0:
                raise ValueError(f"espeak has no voice {spec.espeak_name!r}")
            self._voice = spec.espeak_name
        # ...but set every prosody parameter each call: they are global and the previous call
        # may have left any value behind.
        wpm, gap = speed_to_prosody(speed)
        lib.espeak_SetParameter(_RATE, wpm, 0)
        lib.espeak_SetParameter(_PITCH, spec.pitch, 0)
        lib.espeak_SetParameter(_RANGE, spec.pitch_range, 0)
        lib.espeak_SetParameter(_WORDGAP, gap, 0)
        # Seeding makes the first utterance after start-up reproducible, but espeak still varies
        # by a few samples between calls (state carried across utterances), so do not rely on
        # bit-exact output.
        lib.espeak_ng_SetRandSeed(1)
        data = text.encode("utf-8") + b"\0"
        self._sink, self._error = sink, None
        try:
            rc = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            lib.espeak_Synchronize()
        finally:
            self._sink = None
        if self._error is not None:
            raise self._error
        if rc != 0:
            raise RuntimeError(f"espeak_Synth failed ({rc})")


_engine: _Espeak | None = None
_engine_lock = threading.Lock()
# One worker thread owns all synthesis: espeak is serialized anyway, and a dedicated thread keeps
# the C call (which holds no GIL) off the event loop.
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parley-tts")


def _get_engine() -> _Espeak:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Espeak()
        return _engine


_END = object()


class Tts:
    """espeak-ng speech at 24 kHz float32. Cheap to construct; all instances share the engine."""

    sample_rate: Final = OUTPUT_RATE

    def _run(
        self,
        text: str,
        voice: str,
        speed: float,
        emit: Callable[[FloatArray], None],
        abort: threading.Event,
    ) -> None:
        """Synthesize on the current thread, passing 24 kHz chunks to `emit` until `abort` is set."""
        engine = _get_engine()
        resampler = StreamResampler(engine.sample_rate, OUTPUT_RATE)

        def sink(chunk: npt.NDArray[np.int16]) -> bool:
            if abort.is_set():
                return False
            out = resampler.process(chunk.astype(np.float32) / np.float32(32768.0))
            if out.size:
                emit(out)
            return not abort.is_set()

        if not text.strip() or abort.is_set():
            return
        with engine.lock:
            engine.synth(text, voice_spec(voice), speed, sink)
        if not abort.is_set():
            tail = resampler.flush()
            if tail.size:
                emit(tail)

    def synthesize(self, text: str, voice: str = DEFAULT_VOICE, speed: float = 1.0) -> Iterator[FloatArray]:
        """Yield float32 chunks at 24 kHz as espeak produces them.

        Closing the generator early (break, .close()) aborts synthesis.
        """
        q: queue.SimpleQueue[object] = queue.SimpleQueue()
        abort = threading.Event()

        def job() -> None:
            try:
                self._run(text, voice, speed, q.put, abort)
            except BaseException as exc:
                q.put(exc)
            finally:
                q.put(_END)

        _executor.submit(job)
        try:
            while True:
                item = q.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield cast(FloatArray, item)
        finally:
            abort.set()

    def synthesize_all(self, text: str, voice: str = DEFAULT_VOICE, speed: float = 1.0) -> FloatArray:
        """The whole utterance as one float32 array at 24 kHz."""
        chunks = list(self.synthesize(text, voice, speed))
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)

    async def stream(
        self, text: str, voice: str = DEFAULT_VOICE, speed: float = 1.0
    ) -> AsyncIterator[FloatArray]:
        """Async version of synthesize(): chunks arrive as soon as they exist.

        When the consumer stops (cancellation, break + aclose(), or garbage collection of the
        generator) the callback returns 1 on its next chunk and espeak stops within ~one chunk.
        Use `contextlib.aclosing()` around the loop to make abort on break immediate.
        """
        loop = asyncio.get_running_loop()
        aq: asyncio.Queue[object] = asyncio.Queue()
        abort = threading.Event()

        def put(item: object) -> None:
            # If the loop is gone, stop synthesizing rather than raise inside the callback.
            try:
                loop.call_soon_threadsafe(aq.put_nowait, item)
            except RuntimeError:
                abort.set()

        def job() -> None:
            try:
                self._run(text, voice, speed, put, abort)
            except BaseException as exc:
                put(exc)
            finally:
                put(_END)

        # submit() rather than run_in_executor(): nothing awaits the job itself, and its result
        # must not be posted back to a loop that may be closed by the time it finishes.
        _executor.submit(job)
        try:
            while True:
                item = await aq.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield cast(FloatArray, item)
        finally:
            abort.set()
