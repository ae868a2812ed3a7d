"""Client commands of the `parley` CLI: talk, transcribe, calls.

    parley talk                       # microphone and speaker (needs sounddevice + PortAudio)
    parley talk --text                # type instead of speaking
    parley talk --wav question.wav    # speak a file, print the answer, exit
    parley transcribe a.wav [b.wav]   # one or two sources -> JSON lines
    parley calls list|show|export     # the Parley server's stored calls

They talk to the Parley server on http://127.0.0.1:8000 by default (`--base-url`, or
`PARLEY_BASE_URL`); `parley engine` alone listens on :8001. The key comes from `--api-key`,
else `PARLEY_API_KEY`, else `OPENAI_API_KEY` when the URL is OpenAI's; with none, a placeholder
the local engine accepts ("sk-local"), and on the Parley server, which refuses it, a short-lived
key from its /api/session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import typer

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
SILENCE_TAIL_S = 1.5
CHUNK_MS = 20


def _base_url(base_url: str | None, url: str | None) -> str | None:
    if url:
        return None
    return base_url or os.environ.get("PARLEY_BASE_URL") or DEFAULT_BASE_URL


def credentials(api_key: str | None, base_url: str | None, url: str | None = None,
                persona: str | None = None) -> dict[str, Any]:
    """RealtimeClient's key arguments: `api_key`, else `PARLEY_API_KEY`, else `OPENAI_API_KEY` for
    OpenAI's URL; with none of them a placeholder ("sk-local", which `parley engine` takes) and,
    for a Parley server that refuses it, a short-lived key from its /api/session for `persona`."""
    if api_key:
        return {"api_key": api_key}
    if os.environ.get("PARLEY_API_KEY"):
        return {"api_key": os.environ["PARLEY_API_KEY"]}
    host = urlsplit(url or base_url or "").hostname or ""
    if host.endswith("openai.com") and os.environ.get("OPENAI_API_KEY"):
        return {"api_key": os.environ["OPENAI_API_KEY"]}
    if url is not None or base_url is None:
        return {"api_key": "sk-local"}
    from parley.client.keys import server_key_provider

    return {"api_key": "sk-local", "key_provider": server_key_provider(base_url, persona=persona)}


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _read_audio(path: Path) -> tuple[Any, int]:
    from parley.audio.wav import read_wav

    try:
        return read_wav(path)
    except (OSError, ValueError) as exc:
        _fail(f"cannot read {path}: {exc}")
        raise  # unreachable


async def _stream_file(client: Any, samples: Any, rate: int, speed: float) -> None:
    """Send audio like a microphone would (`speed` times real time), then a little silence."""
    import numpy as np

    step = max(1, rate * CHUNK_MS // 1000)
    start = time.monotonic()
    tail = np.zeros(int(rate * SILENCE_TAIL_S), dtype=np.float32)
    audio = np.concatenate([np.asarray(samples, dtype=np.float32), tail])
    for i, offset in enumerate(range(0, audio.size, step)):
        await client.send_audio(audio[offset:offset + step], rate=rate)
        if speed > 0:
            delay = start + (i + 1) * CHUNK_MS / 1000 / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


class _Transcript:
    """Prints the conversation: final lines, and the words being spoken live on a terminal."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.console import Console

        self.console = Console(stderr=False, highlight=False)
        self.live: Any = None
        self.partial: dict[str, tuple[str, str]] = {}
        self.quiet = quiet
        if self.console.is_terminal and not quiet:
            from rich.live import Live

            self.live = Live("", console=self.console, refresh_per_second=12, transient=True)
            self.live.start()

    def _render(self) -> Any:
        from rich.text import Text

        text = Text()
        for role, words in self.partial.values():
            text.append(f"{role}: ", style="bold cyan" if role == "user" else "bold green")
            text.append(words + "\n", style="dim")
        return text

    def delta(self, item_id: str, role: str, text: str) -> None:
        if self.live is None:
            return
        self.partial[item_id] = (role, text)
        self.live.update(self._render())

    def message(self, item_id: str, role: str, text: str) -> None:
        self.partial.pop(item_id, None)
        if self.live is not None:
            self.live.update(self._render())
        if not text:
            return
        style = "bold cyan" if role == "user" else "bold green"
        self.console.print(f"[{style}]{role}:[/] {text}", markup=True, highlight=False, soft_wrap=True)

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"[dim]{text}[/]", markup=True)

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def _talk_session(instructions: str | None, voice: str | None, text_only: bool, vad: bool,
                  transcribe_model: str) -> dict[str, Any]:
    session: dict[str, Any] = {"audio": {"input": {"transcription": {"model": transcribe_model}}}}
    if instructions:
        session["instructions"] = instructions
    if voice:
        session["audio"]["output"] = {"voice": voice}
    if text_only:
        session["output_modalities"] = ["text"]
    session["audio"]["input"]["turn_detection"] = (
        {"type": "server_vad", "silence_duration_ms": 500} if vad else None)
    return session


async def _talk(*, url: str | None, base_url: str | None, keys: dict[str, Any], model: str | None, transport: str,
                text_mode: bool, wav: Path | None, instructions: str | None, voice: str | None,
                out_wav: Path | None, speed: float, timeout: float, speak: bool, transcribe_model: str) -> int:
    from parley.client import AudioPlayer, RealtimeClient, sounddevice_available

    use_device = not text_mode and wav is None
    if use_device and not sounddevice_available():
        _fail("no audio device: install sounddevice and PortAudio (pip install 'parley[audio]'), "
              "or use --text or --wav FILE")
    play = use_device or (text_mode and speak and sounddevice_available())
    player = AudioPlayer("sounddevice") if play and transport == "websocket" else None
    view = _Transcript()
    received: list[bytes] = []
    client = RealtimeClient(url, base_url=base_url, **keys, model=model,
                            transport=transport,  # type: ignore[arg-type]
                            session=_talk_session(instructions, voice, text_mode and not speak, not text_mode,
                                                  transcribe_model),
                            player=player, ice_hosts=["127.0.0.1"] if _is_loopback(url or base_url) else None)
    client.on("transcript_delta", lambda e: view.delta(e.item_id, e.role, e.text))
    client.on("message", lambda m: view.message(m.item_id, m.role, m.text))
    client.on("error", lambda e: view.note(f"error: {e}"))
    client.on("disconnected", lambda e: view.note(f"disconnected: {e.reason}"
                                                  + (" (reconnecting)" if e.will_reconnect else "")))
    client.on("reconnected", lambda e: view.note(f"reconnected ({e.reason}), {e.replayed} items replayed"))
    if out_wav is not None:
        client.on("audio", lambda a: received.append(a.pcm))
    try:
        await client.connect()
    except Exception as exc:
        view.stop()
        _fail(f"could not connect: {exc}")
    view.note(f"connected to {client.websocket_url() if transport == 'websocket' else client.http_base()} "
              f"(session {client.session_id})")
    try:
        if wav is not None:
            samples, rate = _read_audio(wav)
            done = asyncio.ensure_future(client.wait_for(
                "response.done", lambda e: e.status in ("completed", "failed", "incomplete"), timeout))
            await _stream_file(client, samples, rate, speed)
            try:
                await done
                if client.speaking:  # WebRTC: the answer is still being played to us
                    await client.wait_for("speaking_stopped", None, timeout)
            except TimeoutError:
                _fail(f"no answer within {timeout:g} s")
            await asyncio.sleep(0.3)  # late transcripts
            for item in client.conversation:
                if item.type == "message" and not client.announced(item.id):
                    view.message(item.id, item.role or "", item.text)
        elif text_mode:
            loop = asyncio.get_running_loop()
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line:
                    break
                line = line.strip()
                if not line:
                    continue
                if line in ("/quit", "/exit"):
                    break
                handle = await client.send_text(line)
                del handle
                try:
                    await client.wait_for("response.done", None, timeout)
                except TimeoutError:
                    view.note("no answer in time")
                # a tool call answers with a second response
                with contextlib.suppress(TimeoutError):
                    while client.active_response_id is not None or client._tools_running():
                        await client.wait_for("response.done", None, timeout)
        else:
            await _talk_with_microphone(client, view)
    finally:
        view.stop()
        if out_wav is not None and received:
            from parley.audio.pcm import pcm16_to_float
            from parley.audio.wav import write_wav

            write_wav(out_wav, pcm16_to_float(b"".join(received)), 24_000)
        usage = client.usage
        await client.close()
        if player is not None:
            player.close()
        view.note(f"{usage.responses} responses, {usage.total_tokens} tokens, ${usage.cost:.4f}")
    return 0


async def _talk_with_microphone(client: Any, view: _Transcript) -> None:
    import sounddevice as sd

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    def callback(indata: Any, _frames: int, _time: Any, _status: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, bytes(indata))

    view.note("speak; Ctrl-C to stop")
    with sd.RawInputStream(samplerate=24_000, channels=1, dtype="int16", blocksize=480, callback=callback):
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            while True:
                await client.send_audio(await queue.get())


def _is_loopback(url: str | None) -> bool:
    host = urlsplit(url or "").hostname or ""
    return host in ("127.0.0.1", "localhost", "::1")


# -- transcribe ---------------------------------------------------------------------------------


async def _transcribe(*, sources: list[str], labels: list[str], url: str | None, base_url: str | None,
                      keys: dict[str, Any], model: str, language: str | None, speed: float, timeout: float,
                      transport: str) -> int:
    from parley.client import ConnectionManager

    if not 1 <= len(sources) <= 2:
        _fail("give one or two audio sources")
    names = labels + [f"source{i + 1}" if len(sources) > 1 else "source" for i in range(len(labels), len(sources))]
    if len(set(names)) != len(names):
        _fail("labels must differ")
    transcription: dict[str, Any] = {"model": model}
    if language:
        transcription["language"] = language
    config = {"audio": {"input": {"transcription": transcription,
                                  "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}}
    manager = ConnectionManager(url=url, base_url=base_url, **keys, transport=transport)
    started = time.monotonic()
    pending: dict[str, set[str]] = {n: set() for n in names}
    last_event = [time.monotonic()]

    def emit(name: str, event: Any) -> None:
        last_event[0] = time.monotonic()
        if event.type == "input_audio_buffer.committed":
            pending[name].add(event.item_id)
            return
        item_id = event.get("item_id")
        pending[name].discard(item_id)
        client = manager[name]
        item = client.conversation.get(item_id)
        line = {"source": name, "item_id": item_id,
                "text": event.get("transcript") if event.type.endswith("completed") else None,
                "t": round(time.monotonic() - started, 3),
                "start_ms": item.speech_start_ms if item else None, "end_ms": item.speech_end_ms if item else None}
        if event.type.endswith("failed"):
            line["error"] = (event.get("error") or {}).get("message")
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    for name in names:
        manager.add(name, intent="transcription", session=config)
    manager.on("input_audio_buffer.committed", emit)
    manager.on("conversation.item.input_audio_transcription.completed", emit)
    manager.on("conversation.item.input_audio_transcription.failed", emit)
    try:
        await manager.connect()
    except Exception as exc:
        _fail(f"could not connect: {exc}")
    try:
        feeders = []
        for name, source in zip(names, sources, strict=True):
            feeders.append(feed_source(manager[name], source, speed))
        await asyncio.gather(*feeders)
        # wait for the last transcripts: nothing pending, or a quiet second, or the timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(pending.values()) and time.monotonic() - last_event[0] > 1.0:
                break
            await asyncio.sleep(0.05)
    finally:
        await manager.close()
    return 0


async def feed_source(client: Any, source: str, speed: float) -> None:
    if source in ("mic", "microphone") or source.startswith("device:"):
        import sounddevice as sd

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        device = None if source in ("mic", "microphone") else source.split(":", 1)[1]

        def callback(indata: Any, _frames: int, _time: Any, _status: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, bytes(indata))

        with sd.RawInputStream(samplerate=24_000, channels=1, dtype="int16", blocksize=480, device=device,
                               callback=callback):
            with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
                while True:
                    await client.send_audio(await queue.get())
        return
    samples, rate = _read_audio(Path(source))
    await _stream_file(client, samples, rate, speed)


# -- calls ------------------------------------------------------------------------------------


def _server_get(base_url: str, path: str, api_key: str | None, params: dict[str, Any] | None = None,
                cookie: str | None = None) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    if cookie:
        headers["Cookie"] = cookie
    try:
        response = httpx.get(base_url.rstrip("/") + path, headers=headers, params=params, timeout=30)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the Parley server at {base_url}: {exc}")
        raise  # unreachable
    if response.status_code == 404:
        _fail(f"not found: {path}")
    if response.status_code >= 400:
        try:
            detail = response.json()
            message = (detail.get("error") or {}).get("message") if isinstance(detail.get("error"), dict) else None
            message = message or detail.get("detail") or response.text
        except ValueError:
            message = response.text
        _fail(f"the server answered {response.status_code}: {message}")
    return response


_PREFERRED_COLUMNS = ("id", "created_at", "started_at", "duration_seconds", "duration", "persona", "scenario",
                      "status", "end_reason", "outcome", "score", "cost_usd", "cost")


def _calls_of(payload: Any) -> list[dict[str, Any]]:
    if isinstance(payload, list):
        return [c for c in payload if isinstance(c, dict)]
    if isinstance(payload, dict):
        for key in ("calls", "data", "items", "results"):
            if isinstance(payload.get(key), list):
                return [c for c in payload[key] if isinstance(c, dict)]
    return []


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value)[:40]
    return str(value)


def register(app: typer.Typer) -> None:
    """Add the client's commands to the `parley` command."""

    @app.command()
    def talk(
        url: str | None = typer.Option(None, help="Full realtime endpoint (ws[s]://.../v1/realtime?model=...)."),
        base_url: str | None = typer.Option(None, help="API base URL [default: $PARLEY_BASE_URL or "
                                                       f"{DEFAULT_BASE_URL}]."),
        api_key: str | None = typer.Option(None, help="API key [default: $PARLEY_API_KEY, ...]."),
        model: str | None = typer.Option(None, help="Realtime model."),
        transport: str = typer.Option("websocket", help="websocket or webrtc."),
        text: bool = typer.Option(False, "--text", help="Type instead of speaking (one message per line)."),
        wav: Path | None = typer.Option(None, "--wav", help="Speak this WAV file, print the answer, exit."),
        instructions: str | None = typer.Option(None, help="Session instructions."),
        voice: str | None = typer.Option(None, help="Assistant voice."),
        out_wav: Path | None = typer.Option(None, help="Write the assistant's audio to this WAV file."),
        speed: float = typer.Option(1.0, help="With --wav: send the file this many times faster than real time."),
        timeout: float = typer.Option(60.0, help="Seconds to wait for an answer."),
        speak: bool = typer.Option(False, help="With --text: answer with audio too (played when possible)."),
        transcribe_model: str = typer.Option("whisper-1", help="Input transcription model."),
    ) -> None:
        """Voice chat in the terminal: microphone and speaker, typed text, or a WAV file."""
        if transport not in ("websocket", "webrtc"):
            _fail("--transport is websocket or webrtc")
        if text and wav is not None:
            _fail("use --text or --wav, not both")
        base = _base_url(base_url, url)
        code = asyncio.run(_talk(url=url, base_url=base, keys=credentials(api_key, base, url), model=model, transport=transport,
                                 text_mode=text, wav=wav, instructions=instructions, voice=voice, out_wav=out_wav,
                                 speed=speed, timeout=timeout, speak=speak, transcribe_model=transcribe_model))
        raise typer.Exit(code)

    @app.command()
    def transcribe(
        sources: list[str] = typer.Argument(..., help="One or two sources: WAV files, 'mic', or 'device:NAME'."),
        label: list[str] = typer.Option([], "--label", help="A name per source (repeat), e.g. --label mic "
                                                            "--label speaker."),
        url: str | None = typer.Option(None, help="Full realtime endpoint."),
        base_url: str | None = typer.Option(None, help=f"API base URL [default: {DEFAULT_BASE_URL}]."),
        api_key: str | None = typer.Option(None, help="API key."),
        model: str = typer.Option("whisper-1", help="Transcription model."),
        language: str | None = typer.Option(None, help="ISO-639-1 language of the speech."),
        speed: float = typer.Option(1.0, help="Send files this many times faster than real time."),
        timeout: float = typer.Option(30.0, help="Seconds to wait for the last transcripts after the audio."),
        transport: str = typer.Option("websocket", help="websocket or webrtc."),
    ) -> None:
        """Transcribe one or two audio sources (each on its own transcription session) to JSON lines."""
        base = _base_url(base_url, url)
        # on a Parley server: keys for its transcription-only persona
        keys = credentials(api_key, base, url, persona="copilot/speaker")
        code = asyncio.run(_transcribe(sources=sources, labels=list(label), url=url, base_url=base, keys=keys,
                                       model=model, language=language, speed=speed, timeout=timeout,
                                       transport=transport))
        raise typer.Exit(code)

    calls = typer.Typer(help="The Parley server's stored calls.", no_args_is_help=True)
    app.add_typer(calls, name="calls")

    def server_options(base_url: str | None, api_key: str | None) -> tuple[str, str | None]:
        base = base_url or os.environ.get("PARLEY_BASE_URL") or DEFAULT_BASE_URL
        return base, api_key or os.environ.get("PARLEY_API_KEY")

    cookie_help = "A Cookie header for the server (e.g. the browser's parley_client=...) [default: $PARLEY_COOKIE]."

    @calls.command("list")
    def calls_list(
        base_url: str | None = typer.Option(None, help=f"Parley server [default: {DEFAULT_BASE_URL}]."),
        api_key: str | None = typer.Option(None, help="Key for the server [default: $PARLEY_API_KEY]."),
        cookie: str | None = typer.Option(None, help=cookie_help),
        limit: int | None = typer.Option(None, help="At most this many calls."),
        as_json: bool = typer.Option(False, "--json", help="Print the server's JSON."),
    ) -> None:
        """List stored calls."""
        base, key = server_options(base_url, api_key)
        payload = _server_get(base, "/api/calls", key, {"limit": limit} if limit else None,
                              cookie or os.environ.get("PARLEY_COOKIE")).json()
        if as_json:
            typer.echo(json.dumps(payload, indent=2))
            return
        rows = _calls_of(payload)
        if limit:
            rows = rows[:limit]
        from rich.console import Console
        from rich.table import Table

        console = Console(width=None if sys.stdout.isatty() else 200)
        if not rows:
            console.print("no calls")
            return
        keys = [k for k in _PREFERRED_COLUMNS if any(k in r for r in rows)]
        keys += [k for k in rows[0] if k not in keys and not isinstance(rows[0][k], dict | list)][: max(0, 7 - len(keys))]
        table = Table()
        for k in keys:
            table.add_column(k, overflow="fold", no_wrap=k == "id")
        for row in rows:
            table.add_row(*(_cell(row.get(k)) for k in keys))
        console.print(table)

    @calls.command("show")
    def calls_show(
        call_id: str = typer.Argument(..., help="The call's id."),
        base_url: str | None = typer.Option(None, help=f"Parley server [default: {DEFAULT_BASE_URL}]."),
        api_key: str | None = typer.Option(None, help="Key for the server [default: $PARLEY_API_KEY]."),
        cookie: str | None = typer.Option(None, help=cookie_help),
        as_json: bool = typer.Option(False, "--json", help="Print the server's JSON as is."),
    ) -> None:
        """Show one call: its record and transcript."""
        base, key = server_options(base_url, api_key)
        cookie = cookie or os.environ.get("PARLEY_COOKIE")
        payload = _server_get(base, f"/api/calls/{call_id}", key, cookie=cookie).json()
        if as_json:
            typer.echo(json.dumps(payload, indent=2))
            return
        from rich.console import Console

        console = Console()
        if isinstance(payload, dict):
            for k, v in payload.items():
                if isinstance(v, dict | list):
                    continue
                console.print(f"[bold]{k}[/]: {_cell(v)}", highlight=False)
        transcript = _server_get(base, f"/api/calls/{call_id}/transcript", key, {"format": "markdown"}, cookie).text
        console.print()
        console.print(transcript, markup=False, highlight=False)

    @calls.command("export")
    def calls_export(
        call_id: str = typer.Argument(..., help="The call's id."),
        format: str = typer.Option("markdown", help="markdown or json."),
        out: Path | None = typer.Option(None, help="Write to this file instead of stdout."),
        base_url: str | None = typer.Option(None, help=f"Parley server [default: {DEFAULT_BASE_URL}]."),
        api_key: str | None = typer.Option(None, help="Key for the server [default: $PARLEY_API_KEY]."),
        cookie: str | None = typer.Option(None, help=cookie_help),
    ) -> None:
        """Export a call's transcript as Markdown or JSON."""
        if format not in ("markdown", "json"):
            _fail("--format is markdown or json")
        base, key = server_options(base_url, api_key)
        response = _server_get(base, f"/api/calls/{call_id}/transcript", key, {"format": format},
                               cookie or os.environ.get("PARLEY_COOKIE"))
        text = json.dumps(response.json(), indent=2) + "\n" if format == "json" else response.text
        if out is not None:
            out.write_text(text)
            typer.echo(f"wrote {out}", err=True)
        else:
            sys.stdout.write(text)
