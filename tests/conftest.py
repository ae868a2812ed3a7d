"""Shared fixtures: real servers on loopback, no mocks of our own parts."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from parley.apps.local import local_engine
from parley.util.serving import serve_app


@pytest.fixture(scope="session")
def engine_url() -> Iterator[str]:
    """The local engine (scenario responder, real speech models) on a free loopback port."""
    from parley.engine.app import EngineSettings, create_app

    with serve_app(create_app(local_engine(EngineSettings(api_keys=[], responder="scenario")))) as url:
        yield url
