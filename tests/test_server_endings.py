"""Every end reason the server can record reads as a sentence (parley.server.endings)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parley.server.endings import end_text, outcome_text
from parley.server.settings import ServerSettings

SRC = Path(__file__).resolve().parents[1] / "src" / "parley"


def _recorded_reasons() -> set[str]:
    """The reasons in the code: what the server passes when it ends a call, and (as
    `upstream_closed:<why>`) why the engine closes one."""
    server = "\n".join(line for f in ("calls.py", "direct_calls.py", "db.py", "recorder.py")
                       for line in (SRC / "server" / f).read_text().splitlines() if "metrics." not in line)
    reasons = set(re.findall(r'(?:reason=|reason = |reason: str = |self\.end\([^,]+, |_end_direct\([^,]+, )"([a-z_]+)"',
                             server))
    engine = "\n".join(p.read_text() for p in (SRC / "engine").glob("*.py"))
    closes = set(re.findall(r'close\("([a-z_]+)"\)', engine))
    closes |= {f"peer_{state}" for state in ("failed", "closed")}  # close(f"peer_{pc.connectionState}")
    return reasons | {f"upstream_closed:{why}" for why in closes}


def test_the_code_records_the_reasons_this_test_knows() -> None:
    found = _recorded_reasons()
    # a sanity check of the scan itself: these are all recorded somewhere
    assert {"hangup", "max_duration", "max_cost", "daily_cost_cap", "idle", "server_shutdown", "server_restart",
            "sideband_failed", "sideband_lost", "sideband_error", "upstream_closed",
            "upstream_closed:peer_closed", "upstream_closed:session_expired"} <= found, found


@pytest.mark.parametrize("reason", sorted(_recorded_reasons()))
def test_every_recorded_reason_has_a_sentence(reason: str) -> None:
    text = end_text("ended", reason, ServerSettings())
    assert text[0].isupper() and "_" not in text and ":" not in text, text


def test_caps_come_from_the_settings() -> None:
    assert end_text("ended", "max_duration", ServerSettings()) == "Ended at the 15-minute cap"
    caps = ServerSettings(max_call_seconds=90, max_call_cost_usd=0.5, daily_cost_cap_usd=3)
    assert end_text("ended", "max_duration", caps) == "Ended at the 90-second cap"
    assert end_text("ended", "max_cost", caps) == "Ended at the $0.50 cost cap for a call"
    assert end_text("ended", "daily_cost_cap", caps) == "Ended at the $3.00 daily cost cap"


def test_states_without_a_reason_and_unknown_reasons() -> None:
    caps = ServerSettings()
    assert end_text("active", None, caps) == "In progress"
    assert end_text("failed", None, caps) == "Failed"
    assert end_text("ended", "upstream_closed:going_away", caps) == "The agent's side ended the call (going_away)"
    assert end_text("ended", "something_new", caps) == "Ended (something_new)"


def test_outcome_sentence() -> None:
    assert outcome_text({"new_monthly_price": 94.99, "accepted_by": "Marco"}) == "Accepted $94.99/month from Marco"
    assert outcome_text({"new_monthly_price": 80}) == "Accepted $80.00/month"
    assert outcome_text(None) is None and outcome_text({"new_monthly_price": "cheap"}) is None
