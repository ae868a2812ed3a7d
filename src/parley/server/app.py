"""The Parley server (issue 5 builds it out)."""

from __future__ import annotations


def run(host: str, port: int) -> None:
    """Run the server in the foreground."""
    raise NotImplementedError("the Parley server is being built")
