"""The negotiation's outcome, as the persona records it with its `record_outcome` tool."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from parley.apps.scenarios import Persona

OUTCOME_TOOL = "record_outcome"


def _text(value: Any, limit: int = 256) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def parse_outcome(arguments: str | None, persona: Persona) -> dict[str, Any]:
    """The outcome from `record_outcome` arguments (ValueError when they make no sense)."""
    try:
        args = json.loads(arguments or "{}")
    except (ValueError, RecursionError):
        raise ValueError("the arguments are not JSON") from None
    if not isinstance(args, dict):
        raise ValueError("the arguments must be a JSON object")
    bill = float(persona.scenario.monthly_bill)
    try:
        new = float(args["new_monthly_price"])
        old = float(args.get("old_monthly_price") or bill)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise ValueError("new_monthly_price (and old_monthly_price) must be numbers") from None
    if not (0 <= new <= 100_000 and 0 < old <= 100_000):
        raise ValueError("prices must be between 0 and 100000")
    term = args.get("term_months")
    term_months = int(term) if isinstance(term, int | float) and not isinstance(term, bool) and 0 < term <= 120 else None
    monthly = round(old - new, 2)
    return {
        "new_monthly_price": round(new, 2),
        "old_monthly_price": round(old, 2),
        "monthly_savings": monthly,
        "term_months": term_months,
        "total_savings": round(monthly * term_months, 2) if term_months else None,
        "plan": _text(args.get("plan")),
        "accepted_by": _text(args.get("accepted_by"), 64) or persona.name,
        "persona": persona.id,
        "recorded_at": dt.datetime.now(dt.UTC).isoformat(),
    }
