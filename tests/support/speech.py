"""Spoken test fixtures made by our own TTS (espeak-ng), cached per process.

    from support.speech import speech_pcm24k, speech_wav, speech_pcm16_bytes

speech_pcm24k() gives float32 at 24 kHz with silence around the words; speech_wav() writes it
as a mono 16-bit WAV (24 kHz by default). Chromium's fake microphone
(--use-file-for-fake-audio-capture) runs the file through its own resampler (AudioConverter in
media/audio/fake_audio_input_stream.cc), so any rate works there; pass rate=48000 to hand it
audio at WebRTC's native rate. Chromium loops the file, so the tail silence is the pause
between repetitions.

espeak output varies by a few samples from call to call, so the cache also makes a fixture
identical everywhere within one test run. Expected words should be checked through STT with a
WER bound (parley.engine.speech.wer), never by comparing audio.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

from parley.audio.pcm import SAMPLE_RATE, float_to_pcm16
from parley.audio.resample import resample
from parley.audio.wav import write_wav
from parley.engine.speech.tts import Tts

FloatArray = npt.NDArray[np.float32]


@functools.cache
def _tts() -> Tts:
    return Tts()


@functools.lru_cache(maxsize=256)
def _speech(text: str, voice: str, speed: float) -> FloatArray:
    audio = _tts().synthesize_all(text, voice=voice, speed=speed)
    audio.setflags(write=False)
    return audio


def silence(ms: float, rate: int = SAMPLE_RATE) -> FloatArray:
    return np.zeros(round(ms * rate / 1000), dtype=np.float32)


def speech_pcm24k(
    text: str,
    voice: str = "alloy",
    lead_silence_ms: float = 300,
    tail_silence_ms: float = 800,
    speed: float = 1.0,
) -> FloatArray:
    """`text` spoken by our TTS as float32 at 24 kHz, with silence before and after (a fresh copy)."""
    return np.concatenate([silence(lead_silence_ms), _speech(text, voice, speed), silence(tail_silence_ms)])


def speech_pcm16k(
    text: str, voice: str = "alloy", lead_silence_ms: float = 300, tail_silence_ms: float = 800
) -> FloatArray:
    """Same as speech_pcm24k at whisper's 16 kHz."""
    return resample(speech_pcm24k(text, voice, lead_silence_ms, tail_silence_ms), SAMPLE_RATE, 16000)


def speech_pcm16_bytes(
    text: str, voice: str = "alloy", lead_silence_ms: float = 300, tail_silence_ms: float = 800
) -> bytes:
    """PCM16 LE mono 24 kHz bytes, ready for input_audio_buffer.append."""
    return float_to_pcm16(speech_pcm24k(text, voice, lead_silence_ms, tail_silence_ms))


def speech_bounds_ms(
    text: str, voice: str = "alloy", lead_silence_ms: float = 300, threshold: float = 0.01
) -> tuple[float, float]:
    """(start_ms, end_ms) of the audible speech inside speech_pcm24k(text, voice, lead_silence_ms, ...)."""
    audio = _speech(text, voice, 1.0)
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return (lead_silence_ms, lead_silence_ms)
    to_ms = 1000.0 / SAMPLE_RATE
    return (lead_silence_ms + loud[0] * to_ms, lead_silence_ms + (loud[-1] + 1) * to_ms)


def speech_wav(
    directory: str | os.PathLike[str],
    text: str,
    voice: str = "alloy",
    lead_silence_ms: float = 300,
    tail_silence_ms: float = 800,
    rate: int = SAMPLE_RATE,
) -> Path:
    """Write the fixture as a mono 16-bit WAV in `directory` (named by a hash of its arguments;
    reused if already there) and return its path."""
    key = f"{text}|{voice}|{lead_silence_ms}|{tail_silence_ms}|{rate}".encode()
    path = Path(directory) / f"speech-{hashlib.sha1(key).hexdigest()[:12]}.wav"
    if not path.exists():
        audio = resample(speech_pcm24k(text, voice, lead_silence_ms, tail_silence_ms), SAMPLE_RATE, rate)
        tmp = path.with_suffix(".tmp")
        write_wav(tmp, audio, rate)
        tmp.replace(path)  # atomic: parallel test workers never see half a file
    return path
