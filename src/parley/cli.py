"""The `parley` command."""

from __future__ import annotations

import typer

app = typer.Typer(help="Parley: real-time voice agents on the OpenAI Realtime protocol.", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print Parley's version."""
    from parley import __version__

    typer.echo(__version__)


@app.command()
def engine(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8001, help="Port to listen on."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Run the local realtime engine alone (OpenAI's /v1/realtime endpoints on local models).

    Without PARLEY_ENGINE_API_KEYS it accepts any non-empty key: keep it on loopback. With
    PARLEY_ENGINE_REDIS_URL and PARLEY_ENGINE_POOL_URL it joins a pool of engines; SIGTERM drains it.
    """
    from parley.apps.local import local_engine
    from parley.engine.app import create_app
    from parley.util.serving import run_app

    run_app(create_app(local_engine(), standalone=True), host=host, port=port, log_level=log_level)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
) -> None:
    """Run the Parley server (the local engine is its default upstream)."""
    from parley.server.app import run

    run(host, port)


@app.command()
def copilot(
    mic: str = typer.Option("mic", help="Your voice: 'mic', 'device:NAME' or a WAV file."),
    speaker: str = typer.Option(..., help="The other party: 'device:NAME' (a loopback/monitor device) or a WAV file."),
    base_url: str = typer.Option(None, help="Realtime base URL (default: PARLEY_BASE_URL or http://127.0.0.1:8000)."),
    api_key: str = typer.Option(None, help="API key (default: PARLEY_API_KEY, else a local placeholder)."),
    speed: float = typer.Option(1.0, help="Play WAV files this many times faster than real time."),
) -> None:
    """The copilot in the terminal: your words, theirs, quick answers and main answers (JSON lines)."""
    import asyncio
    import os

    from parley.apps.copilot.terminal import run_copilot

    base = (base_url or os.environ.get("PARLEY_BASE_URL") or "http://127.0.0.1:8000").rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    asyncio.run(run_copilot(base_url=base, api_key=api_key, mic=mic, speaker=speaker, speed=speed))


def _register_client_commands() -> None:
    from parley.client.cli import register

    register(app)


_register_client_commands()


if __name__ == "__main__":
    app()
