"""The local engine with the apps' responders: the scripted personas of the practice scenarios and
the copilot's quick assistant, and the engine's own generic responder for any other session.

The engine knows no app: `parley serve`, `parley engine` and the tests build it here.
"""

from __future__ import annotations

from typing import Any

from parley.apps.copilot.responder import CopilotResponder
from parley.apps.negotiator.responder import ScenarioResponder
from parley.engine.engine import Engine
from parley.engine.responders.base import Responder
from parley.engine.responders.generic import GenericResponder
from parley.engine.settings import EngineSettings


def apps_responder(settings: EngineSettings) -> Responder | None:
    """The apps' scripted responder when the settings ask for it ("scenario"); None otherwise (the
    engine builds its chat responder, or uses its generic one)."""
    if settings.responder != "scenario":
        return None
    return ScenarioResponder(fallback=CopilotResponder(fallback=GenericResponder()))


def local_engine(settings: EngineSettings | None = None, **kwargs: Any) -> Engine:
    """An `Engine` whose responder plays the apps' personas (unless `responder=` says otherwise)."""
    settings = settings or EngineSettings()
    kwargs.setdefault("responder", apps_responder(settings))
    return Engine(settings, **kwargs)
