"""The input side of the engine's `Session`: microphone audio in, user turns committed, and
their transcription.

Audio goes into the `InputBuffer`; with turn detection on, the `TurnDetector`'s signals open a
turn's user item, start a speculative transcription in a pause, and commit the turn when the
silence window has passed (or the client commits, or `idle_timeout_ms` fires). A committed item
gets its transcript from the driver (`Transcribe` out, `transcription_result` back); responses
that include it wait for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from parley.audio.formats import InputDecoder
from parley.audio.pcm import SAMPLE_RATE, FloatArray
from parley.engine.effects import Effect, Transcribe
from parley.engine.input_buffer import InputBuffer
from parley.engine.speech import stt
from parley.engine.tokens import estimate_tokens
from parley.engine.turns import (
    SpeechStarted,
    TurnDetection,
    TurnDetector,
    VoiceDetector,
    VoicePaused,
    VoiceResumed,
    silence_window_ms,
)
from parley.protocol import events as ev
from parley.protocol import ids
from parley.protocol import items as it
from parley.protocol.client_events import ResponseParams
from parley.protocol.errors import ProtocolError
from parley.protocol.limits import MIN_COMMIT_MS
from parley.protocol.session import SessionConfig

# Buffered audio kept while nobody speaks (the prefix padding comes from here).
IDLE_KEEP_MS = 2_000
MAX_BUFFER_MS = 15 * 60 * 1000
#: Before the session has timed a pass: a silence window at least this long is taken to leave time
#: for the careful pass (beam 5, 1.3-1.6x the quick one) on the speculative cut. Once passes have
#: been timed, the careful pass runs straight away when its cost fits in what is left of the window.
CAREFUL_WINDOW_MS = 400
#: What the careful pass costs, in units of the quick one (measured 1.3-1.6x): after an unsure quick
#: pass, a careful one runs only if this much of the quick pass's time is left of the silence window;
#: and a timed quick pass predicts a careful one at this many times its cost.
CAREFUL_COST = 1.6
#: Weight of the latest timed pass in the session's estimate of what a careful pass costs.
COST_WEIGHT = 0.5


def check_transcription(config: SessionConfig, param: str = "session") -> None:
    """Refuse, as OpenAI refuses a value it does not support, a transcription language the local
    STT model cannot do: it would only guess English words for the speech."""
    tr = config.audio.input.transcription
    if tr is None:
        return
    asked = [(tr.language, f"{param}.audio.input.transcription.language")] if tr.language else []
    asked += [(code, f"{param}.audio.input.transcription.languages[{i}]") for i, code in enumerate(tr.languages or [])]
    for code, where in asked:
        if code.strip().lower().split("-")[0] not in stt.LANGUAGES:
            supported = ", ".join(f"'{c}'" for c in sorted(stt.LANGUAGES))
            raise ProtocolError(
                "invalid_value",
                f"Invalid value: {code!r}. Supported values are: {supported} (the local engine transcribes "
                f"with {stt.MODEL_NAME}, which knows no other language).",
                where,
            )


@dataclass
class _Stt:
    attempt: int = 0
    speculative_until_ms: float | None = None  # audio end of the running speculative attempt
    audio: FloatArray | None = None  # what the current attempt transcribes
    quick_text: str | None = None  # the quick pass's words, while a careful pass is running
    careful: bool = False  # the current attempt is a careful pass
    asked_at_ms: float = 0.0  # session time when the current attempt was asked for
    window_end_ms: float | None = None  # a speculative attempt's: when its silence window runs out
    text: str | None = None
    error: str | None = None  # a failed speculative attempt, reported once committed
    committed: bool = False
    done: bool = False
    audio_ms: float = 0.0


class SessionInput:
    """Part of `Session` (a mixin: it shares the session's items and output)."""

    # what it uses of the rest of the session
    config: SessionConfig
    _items: dict[str, dict[str, Any]]
    _audio: dict[str, FloatArray]
    _active: str | None

    if TYPE_CHECKING:
        @property
        def is_realtime(self) -> bool: ...
        def _emit(self, event: dict[str, Any] | Effect) -> None: ...
        def _input_format(self) -> str: ...
        def _turn_detection(self) -> TurnDetection | None: ...
        def _transcription_on(self) -> bool: ...
        def _insert(self, item: dict[str, Any], previous_item_id: str | None) -> None: ...
        def _previous(self, item_id: str) -> str | None: ...
        def _last_item(self) -> str | None: ...
        def create_response(self, params: ResponseParams | None) -> str | None: ...
        def _cancel(self, response_id: str, reason: str) -> None: ...
        def _stop_playback(self, response_id: str | None = None) -> None: ...
        def _transcript_done(self, item_id: str) -> None: ...

    def _init_input(self, detector: VoiceDetector, careful_ms: float | None) -> None:
        self._stt: dict[str, _Stt] = {}
        self._careful_ms = careful_ms
        self._decoder = InputDecoder(self._input_format())
        # input audio: a buffer in session time (ms since the first audio of the session)
        self._buffer = InputBuffer()
        self._turns = TurnDetector(detector, self._buffer)
        self._turn_item: str | None = None  # the user message of the turn being spoken

    def _input_config_changed(self, old_format: str) -> None:
        """After `session.update`."""
        if self._input_format() != old_format:
            self._decoder = InputDecoder(self._input_format())
        if self._turn_detection() is None and self._turns.speaking:
            self._end_speech_state()

    # -- audio and turns ---------------------------------------------------------------------------

    def _append(self, data: bytes) -> None:
        try:
            pcm = self._decoder.decode(data)
        except ValueError as exc:
            raise ProtocolError(
                "invalid_value",
                f"Invalid 'audio': {exc} (the session's input format is {self._input_format()}).",
                "audio",
            ) from None
        self.receive_audio(pcm)

    def receive_audio(self, pcm: FloatArray) -> None:
        """Microphone audio, float32 at 24 kHz (WebRTC hands it here directly)."""
        if pcm.size == 0:
            return
        chunk_start_ms = self._buffer.end_ms
        self._buffer.append(pcm)
        td = self._turn_detection()
        if td is None:
            if self._buffer.ms > MAX_BUFFER_MS:
                self._buffer.drop_before(self._buffer.end_ms - MAX_BUFFER_MS)
            return
        for signal in self._turns.hear(td, pcm, chunk_start_ms):  # acted on one at a time
            if isinstance(signal, SpeechStarted):
                self._speech_started(td, signal.start_ms)
            elif isinstance(signal, VoicePaused):
                self._voice_paused(td, signal)
            elif isinstance(signal, VoiceResumed):
                self._voice_resumed()
            else:
                self._speech_stopped(td, signal.start_ms, signal.end_ms)
        if not self._turns.speaking and self._buffer.ms > IDLE_KEEP_MS * 2:
            self._buffer.drop_before(self._buffer.end_ms - IDLE_KEEP_MS)

    def _clear_buffer(self) -> None:
        self._buffer.clear()
        self._end_speech_state()

    def _end_speech_state(self) -> None:
        self._turns.end()
        self._turn_item = None

    def _speech_started(self, td: TurnDetection, start_ms: float) -> None:
        item_id = ids.item_id()
        self._turn_item = item_id
        self._stt[item_id] = _Stt()
        self._emit(ev.input_audio_buffer_speech_started(int(start_ms), item_id))
        if td.interrupt_response:
            if self._active is not None:
                self._cancel(self._active, reason="turn_detected")
            self._stop_playback()  # WebRTC: a finished response may still be playing

    def _voice_paused(self, td: TurnDetection, pause: VoicePaused) -> None:
        item_id = self._turn_item
        assert item_id is not None
        stt = self._stt[item_id]
        if stt.speculative_until_ms is None:
            # The silence window is time the STT can use: start on what was said so far. If the
            # user goes on, the attempt is discarded.
            stt.attempt += 1
            stt.speculative_until_ms = pause.voice_end_ms
            stt.window_end_ms = pause.voice_end_ms + silence_window_ms(td)
            # Into the pause, not to the trimmed end of the voice: on the tuning two-thirds of
            # benchmarks/hearing.py the fading end of the last word is worth ~0.5 WER points.
            self._transcribe(item_id, stt, self._buffer.slice(pause.start_ms, pause.until_ms),
                             careful=self._careful_in_time(td, stt))

    def _voice_resumed(self) -> None:
        item_id = self._turn_item
        assert item_id is not None
        stt = self._stt[item_id]
        if stt.speculative_until_ms is not None:
            # Speech resumed: the speculative transcript is stale.
            stt.speculative_until_ms, stt.text, stt.error, stt.quick_text = None, None, None, None
            stt.window_end_ms = None
            stt.attempt += 1

    def _speech_stopped(self, td: TurnDetection, start_ms: float, end_ms: float) -> None:
        item_id = self._turn_item
        assert item_id is not None
        self._turn_item = None
        self._emit(ev.input_audio_buffer_speech_stopped(int(end_ms), item_id))
        audio = self._buffer.slice(start_ms, end_ms)
        self._buffer.drop_before(end_ms)
        self._commit(item_id, audio)
        if self.is_realtime and td.create_response:
            if self._active is None:
                self.create_response(None)

    # -- commits -----------------------------------------------------------------------------------

    def _commit_manual(self) -> None:
        if self._turns.speaking and self._turn_item is not None:
            item_id = self._turn_item
            self._end_speech_state()
        else:
            item_id = ids.item_id()
            self._stt[item_id] = _Stt()
        audio = self._buffer.audio()
        ms = audio.size * 1000 / SAMPLE_RATE
        if ms < MIN_COMMIT_MS:
            self._stt.pop(item_id, None)
            raise ProtocolError(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms "
                f"of audio, but buffer only has {ms:.2f}ms of audio.",
            )
        self._buffer.clear()
        self._commit(item_id, audio)

    def _timeout_triggered(self, idle_timeout_ms: int) -> None:
        """`idle_timeout_ms` passed with nobody speaking: the recent audio is a turn of its own."""
        item_id = ids.item_id()
        start = max(self._buffer.start_ms, self._buffer.end_ms - idle_timeout_ms)
        self._emit(ev.input_audio_buffer_timeout_triggered(int(start), int(self._buffer.end_ms), item_id))
        audio = self._buffer.slice(start, self._buffer.end_ms)
        self._buffer.drop_before(self._buffer.end_ms)
        self._stt[item_id] = _Stt()
        self._commit(item_id, audio)
        self.create_response(None)

    def _commit(self, item_id: str, audio: FloatArray) -> None:
        previous = self._last_item()
        self._emit(ev.input_audio_buffer_committed(item_id, previous))
        item = it.message(item_id, "user", [it.input_audio(None)])
        self._insert(item, previous)
        self._audio[item_id] = audio
        self._emit(ev.conversation_item_added(it.snapshot(item), previous))
        stt = self._stt.setdefault(item_id, _Stt())
        stt.committed = True
        stt.audio_ms = audio.size * 1000 / SAMPLE_RATE
        if stt.text is not None and stt.speculative_until_ms is not None:
            self._transcript_ready(item_id, stt, error=stt.error)
        elif stt.speculative_until_ms is None:
            stt.attempt += 1
            self._transcribe(item_id, stt, audio)
        # else: the speculative attempt is still running and covers this audio.

    # -- transcription -----------------------------------------------------------------------------

    def _transcribe(self, item_id: str, stt: _Stt, audio: FloatArray, careful: bool = False) -> None:
        tr = self.config.audio.input.transcription
        stt.audio, stt.asked_at_ms, stt.careful = audio, self._buffer.end_ms, careful
        self._emit(Transcribe(item_id, stt.attempt, audio, tr.language if tr else "en", tr.prompt if tr else None,
                              careful))

    def transcription_result(self, item_id: str, attempt: int, text: str | None, error: str | None = None,
                             *, sure: bool = True, took_ms: float | None = None) -> None:
        """The driver's answer to `Transcribe`. `sure=False` (the STT doubted a word of its quick
        pass): if a careful pass of the same audio fits in what is left of the silence window, the
        turn waits for it, and its words are final and are what the responder answers, in place of
        these; otherwise these stand (a careful pass would only make the answer later). `took_ms`:
        the pass's wall time from asking to answer, which tells later turns what a pass costs on
        this machine now."""
        stt = self._stt.get(item_id)
        if stt is None or stt.done or attempt != stt.attempt:
            return
        if took_ms is not None and error is None:
            self._timed(took_ms if stt.careful else CAREFUL_COST * took_ms)
        if error is None and not sure and stt.quick_text is None and stt.audio is not None and self._careful_fits(stt):
            stt.quick_text = text or ""
            self._transcribe(item_id, stt, stt.audio, careful=True)
            return
        if error is not None and stt.quick_text is not None:
            text, error = stt.quick_text, None  # the careful pass failed: the quick one stands
        stt.text = text if error is None else None
        if error is not None:
            stt.text, stt.error = "", error
            if stt.committed:
                self._transcript_ready(item_id, stt, error=error)
            return
        if stt.committed:
            self._transcript_ready(item_id, stt)

    @property
    def careful_ms(self) -> float | None:
        """What a careful pass costs now (wall time, the STT queue included), as this session last
        timed its passes; None before any. A new session on the same machine can start from it."""
        return self._careful_ms

    def _timed(self, careful_ms: float) -> None:
        old = self._careful_ms
        self._careful_ms = careful_ms if old is None else COST_WEIGHT * careful_ms + (1 - COST_WEIGHT) * old

    def _careful_in_time(self, td: TurnDetection, stt: _Stt) -> bool:
        """Whether the speculative cut gets the careful pass at once: when what it costs (as last
        timed) ends inside the silence window. On a slow or busy machine the turn gets the quick
        pass instead, and a careful one after it only if that still fits (see transcription_result):
        the answer is not made later for the sake of a better transcript."""
        if self._careful_ms is None:
            return silence_window_ms(td) >= CAREFUL_WINDOW_MS
        assert stt.window_end_ms is not None
        return self._careful_ms <= stt.window_end_ms - self._buffer.end_ms

    def _careful_fits(self, stt: _Stt) -> bool:
        """In session time (which keeps pace with the caller): the quick pass took now - asked_at;
        the careful one, CAREFUL_COST times that, must end before the silence window does. A turn
        the client committed has no window: it waits for its words either way, so it gets them."""
        if stt.window_end_ms is None:
            return True
        if stt.committed:
            return False
        now = self._buffer.end_ms
        return stt.window_end_ms - now >= CAREFUL_COST * (now - stt.asked_at_ms)

    def _transcript_ready(self, item_id: str, stt: _Stt, error: str | None = None) -> None:
        stt.done = True
        stt.audio = None  # no careful pass can come now; the item keeps its own audio
        text = (stt.text or "").strip()
        item = self._items.get(item_id)
        if self._transcription_on():
            if error is not None:
                self._emit(ev.conversation_item_input_audio_transcription_failed(item_id, "transcription_failed", error))
            else:
                if text:
                    self._emit(ev.conversation_item_input_audio_transcription_delta(item_id, text))
                model = self.config.audio.input.transcription.model if self.config.audio.input.transcription else None
                usage = (ev.transcription_usage_duration(stt.audio_ms / 1000) if model in (None, "whisper-1")
                         else ev.transcription_usage_tokens(estimate_tokens(text) + int(stt.audio_ms / 100),
                                                            estimate_tokens(text), int(stt.audio_ms / 100)))
                self._emit(ev.conversation_item_input_audio_transcription_completed(item_id, text, usage))
        if item is not None:
            for part in item["content"]:
                if part["type"] == "input_audio":
                    part["transcript"] = text if error is None else None
            self._emit(ev.conversation_item_done(it.snapshot(item), self._previous(item_id)))
        self._transcript_done(item_id)

    def _transcribing(self, item_id: str) -> bool:
        """The item's transcript is still to come (an item is done, and answered, only with it)."""
        pending = self._stt.get(item_id)
        return pending is not None and not pending.done

    def _transcribe_created(self, item_id: str, audio: FloatArray) -> None:
        """A client's item with audio and no transcript: transcribed as a committed turn is."""
        stt = self._stt[item_id] = _Stt(attempt=1, committed=True, audio_ms=audio.size * 1000 / SAMPLE_RATE)
        self._transcribe(item_id, stt, audio)
