"""Shared fixtures: real servers on loopback, no mocks of our own parts."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from parley.apps.local import local_engine
from parley.protocol.session import SessionConfig
from parley.util.serving import serve_app
from support.cluster import EngineProcess
from support.services import postgres_database, redis_server
from support.session import Harness, types


@pytest.fixture(scope="session")
def engine_url() -> Iterator[str]:
    """The local engine (scenario responder, real speech models) on a free loopback port."""
    from parley.engine.app import EngineSettings, create_app

    with serve_app(create_app(local_engine(EngineSettings(api_keys=[], responder="scenario")))) as url:
        yield url


@pytest.fixture
def make() -> Iterator[Callable[..., Harness]]:
    """Engine sessions driven by hand (`support.session.Harness`), started unless start=False."""
    made: list[Harness] = []

    def factory(config: SessionConfig | dict[str, Any] | None = None, *, start: bool = True,
                **kwargs: Any) -> Harness:
        h = Harness(config, **kwargs)
        made.append(h)
        if start:
            h.s.start()
            assert types(h.take()) == ["session.created"]
        return h

    yield factory
    for h in made:
        h.s.close()
    for h in made:
        h.check_snapshots()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A private redis-server on a unix socket (skips, saying why, where there is none)."""
    with redis_server() as url:
        yield url


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database (skips, saying why, where no server is reachable)."""
    async with postgres_database() as url:
        yield url


@pytest.fixture
async def engine_process(tmp_path: Path) -> AsyncIterator[EngineProcess]:
    """A standalone `parley engine` process: the upstream a cluster of servers shares."""
    proc = EngineProcess(tmp_path / "engine")
    try:
        await proc.wait_healthy()
        yield proc
    finally:
        proc.stop()
