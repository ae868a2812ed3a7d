"""Client commands of the `parley` CLI: talk, transcribe, calls (issue 7 builds them out)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the client's commands to the `parley` command."""
