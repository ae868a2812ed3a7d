"""Prometheus metrics in the text exposition format (0.0.4), without a client library.

One process renders its own series. In shared mode (N processes) every series carries a `process`
label and each process publishes a snapshot of its series to Redis (`parley.server.shared.metrics`):
`/metrics` at any process renders every live process's series, so one scrape through the reverse
proxy sees them all, each summable over `process`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from typing import Any

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

Labels = tuple[tuple[str, str], ...]

_DEFS: dict[str, tuple[str, str]] = {
    "parley_calls_total": ("counter", "Calls started, by kind (server: unified with sideband; direct: browser with an ephemeral key; phone: SIP)."),
    "parley_calls_ended_total": ("counter", "Calls ended, by reason."),
    "parley_calls_active": ("gauge", "Calls in progress."),
    "parley_sessions_total": ("counter", "Ephemeral keys minted through /api/session."),
    "parley_tokens_total": ("counter", "Tokens used by recorded responses, by direction."),
    "parley_cost_usd_total": ("counter", "Dollars of recorded usage (responses and transcription)."),
    "parley_transcript_items_total": ("counter", "Transcript items stored."),
    "parley_backfill_requests_total": ("counter", "Items asked of the upstream after a gap in a call's events, by why "
                                                  "(pending: placed, not complete; previous: named, never seen)."),
    "parley_takeovers_total": ("counter", "Calls of a dead process this process took over, by outcome."),
    "parley_handovers_total": ("counter", "Calls this process handed to the others as it stopped (a rolling restart)."),
    "parley_calls_lost_total": ("counter", "Calls another process claimed while this one stalled past its lease (let go here)."),
    "parley_invalid_events_total": ("counter", "Server events a recorder could not read (malformed), counted and skipped."),
    "parley_recorder_errors_total": ("counter", "Events whose recording failed with an error (a bug; logged)."),
    "parley_tool_calls_total": ("counter", "Function calls the server answered, by name."),
    "parley_caps_total": ("counter", "Calls the server ended because of a cap, by cap."),
    "parley_rate_limited_total": ("counter", "Requests refused with 429, by reason."),
    "parley_upstream_errors_total": ("counter", "Failed upstream operations, by operation and status."),
    "parley_webhooks_total": ("counter", "OpenAI webhooks received, by outcome (ok, bad_signature, replay, ignored)."),
    "parley_phone_rejected_total": ("counter", "Incoming phone calls rejected, by SIP status."),
    "parley_db_writes_total": ("counter", "Writes to the database (items, usage, calls), all group-committed."),
    "parley_db_commit_seconds": ("histogram", "Time to commit one batch of the database's writes (one transaction)."),
    "parley_upstream_seconds": ("histogram", "Upstream operation latency, by operation."),
    "parley_request_seconds": ("histogram", "Time spent in the server for API requests, by route."),
    "parley_added_seconds": ("histogram", "The server's own time for API requests (upstream time excluded), by route."),
    "parley_phone_webhooks_total": ("counter", "Twilio voice webhooks answered with a media stream."),
    "parley_phone_webhooks_refused_total": ("counter", "Twilio voice webhooks refused, by reason."),
    "parley_phone_streams_refused_total": ("counter", "Twilio media streams refused, by reason."),
    "parley_phone_frames_dropped_total": ("counter", "Twilio media stream frames dropped as bad input, by reason."),
    "parley_phone_barge_ins_total": ("counter", "Times a caller spoke over the agent on a phone call."),
    "parley_phone_dtmf_total": ("counter", "Keypad entries passed to the agent on phone calls."),
}


# A snapshot of one process's series (JSON-able): counters {name: [[labels, value]]}, histograms
# {name: [[labels, counts, sum, n]]}, gauges {name: value}.
Snapshot = dict[str, Any]

_UNLABELED = ("parley_sessions_total", "parley_cost_usd_total", "parley_invalid_events_total",
              "parley_recorder_errors_total", "parley_phone_webhooks_total", "parley_phone_barge_ins_total",
              "parley_phone_dtmf_total", "parley_db_writes_total", "parley_calls_lost_total")


def _labels(labels: dict[str, str]) -> Labels:
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


def _fmt_labels(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    pairs = [*labels, *([extra] if extra else [])]
    if not pairs:
        return ""
    esc = [(k, v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')) for k, v in pairs]
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc) + "}"


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class Metrics:
    def __init__(self) -> None:
        self._values: dict[str, dict[Labels, float]] = {}
        self._hist: dict[str, dict[Labels, tuple[list[int], list[float]]]] = {}  # counts, [sum, count]
        self._gauges: dict[str, Callable[[], float]] = {}

    def inc(self, metric: str, value: float = 1.0, **labels: str) -> None:
        series = self._values.setdefault(metric, {})
        key = _labels(labels)
        series[key] = series.get(key, 0.0) + value

    def gauge(self, metric: str, read: Callable[[], float]) -> None:
        self._gauges[metric] = read

    def observe(self, metric: str, seconds: float, **labels: str) -> None:
        series = self._hist.setdefault(metric, {})
        key = _labels(labels)
        entry = series.get(key)
        if entry is None:
            entry = ([0] * len(BUCKETS), [0.0, 0.0])
            series[key] = entry
        counts, total = entry
        i = bisect.bisect_left(BUCKETS, seconds)
        if i < len(counts):
            counts[i] += 1
        total[0] += seconds
        total[1] += 1

    def value(self, metric: str, **labels: str) -> float:
        return self._values.get(metric, {}).get(_labels(labels), 0.0)

    def snapshot(self) -> Snapshot:
        gauges: dict[str, float] = {}
        for name, read in self._gauges.items():
            try:
                gauges[name] = float(read())
            except Exception:  # a gauge must never break the page
                gauges[name] = math.nan
        return {"counters": {n: [[list(map(list, k)), v] for k, v in series.items()] for n, series in self._values.items()},
                "histograms": {n: [[list(map(list, k)), counts, total, n_] for k, (counts, (total, n_)) in series.items()]
                               for n, series in self._hist.items()},
                "gauges": gauges}

    def render(self, processes: dict[str, Snapshot] | None = None) -> str:
        """This process's series; or, given each process's snapshot by id, all of theirs with a
        `process` label."""
        return render({"": self.snapshot()} if processes is None else processes, labelled=processes is not None)


def _series(snap: Snapshot, part: str, name: str) -> list[Any]:
    found: list[Any] = snap.get(part, {}).get(name, [])
    return found


def render(processes: dict[str, Snapshot], *, labelled: bool) -> str:
    out: list[str] = []

    def labels_of(raw: list[list[str]], process: str) -> Labels:
        pairs = [(str(k), str(v)) for k, v in raw]
        return tuple(sorted([*pairs, ("process", process)])) if labelled else tuple(pairs)

    for name, (kind, help_text) in _DEFS.items():
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for process, snap in sorted(processes.items()):
            if kind == "gauge":
                if name in snap.get("gauges", {}):
                    value = float(snap["gauges"][name])
                    out.append(f"{name}{_fmt_labels(labels_of([], process))} {'NaN' if math.isnan(value) else _num(value)}")
            elif kind == "histogram":
                for raw, counts, total, n in sorted(_series(snap, "histograms", name)):
                    labels = labels_of(raw, process)
                    running = 0
                    for bound, count in zip(BUCKETS, counts, strict=True):
                        running += count
                        out.append(f"{name}_bucket{_fmt_labels(labels, ('le', _num(bound)))} {running}")
                    out.append(f"{name}_bucket{_fmt_labels(labels, ('le', '+Inf'))} {int(n)}")
                    out.append(f"{name}_sum{_fmt_labels(labels)} {_num(total)}")
                    out.append(f"{name}_count{_fmt_labels(labels)} {int(n)}")
            else:
                series = _series(snap, "counters", name)
                if not series and name in _UNLABELED:
                    out.append(f"{name}{_fmt_labels(labels_of([], process))} 0")
                for raw, value in sorted(series):
                    out.append(f"{name}{_fmt_labels(labels_of(raw, process))} {_num(value)}")
    return "\n".join(out) + "\n"
