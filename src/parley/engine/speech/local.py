"""The local speech models behind the runner's `Speech` interface, loaded once per process."""

from __future__ import annotations

from collections.abc import AsyncIterator

from parley.audio.pcm import FloatArray
from parley.engine.speech.stt import Transcriber, Transcript, careful_transcriber, default_transcriber
from parley.engine.speech.tts import Tts


class LocalSpeech:
    def __init__(self, transcriber: Transcriber | None = None, careful: Transcriber | None = None) -> None:
        self.tts = Tts()
        self.stt = transcriber or default_transcriber()
        self.careful_stt = careful or careful_transcriber()

    def stream(self, text: str, voice: str, speed: float) -> AsyncIterator[FloatArray]:
        return self.tts.stream(text, voice, speed)

    async def transcribe(self, audio_16k: FloatArray, prompt: str | None, language: str,
                         careful: bool = False) -> Transcript:
        return await (self.careful_stt if careful else self.stt).transcribe_async(audio_16k, prompt, language)

    def warm_up(self) -> None:
        """Load whisper and espeak now, so the first turn does not pay for it."""
        from parley.engine.speech.stt import warm_up
        from parley.engine.speech.vad import prewarm

        warm_up()
        self.tts.synthesize_all("Ready.")
        prewarm(4)  # sessions then start without ~40 ms of VAD construction on the event loop
