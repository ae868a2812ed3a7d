"""Soak the call recorder with hypothesis-made events (protocol-shaped, filled with anything) on a
real SQLite file, and print how many it took, how fast, and how many raised (must be 0).

    .venv/bin/python benchmarks/recorder_soak.py [--events 20000]

CI runs a smaller dose of the same strategies (tests/test_server_recorder.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from machine import describe
from parley.protocol.pricing import DEFAULT_TABLE
from parley.server.db import Store
from parley.server.metrics import Metrics
from parley.server.recorder import Recorder
from support.recorder_events import event


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    folder = tempfile.TemporaryDirectory()
    store = Store(f"sqlite+aiosqlite:///{Path(folder.name) / 'soak.db'}")
    loop.run_until_complete(store.start())
    totals = {"events": 0, "calls": 0, "raised": 0, "invalid": 0}
    metrics = Metrics()
    batches = max(1, args.events // 24)
    began = time.perf_counter()

    @given(st.lists(event, min_size=8, max_size=40))
    @settings(max_examples=batches, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def soak(events: list[dict[str, Any]]) -> None:
        totals["calls"] += 1
        call_id = f"call_{totals['calls']}"

        async def run() -> None:
            await store.create_call(id=call_id, user_id="soak", kind="direct", persona="negotiator/sarah",
                                    persona_name="Sarah", model="gpt-realtime")
            recorder = Recorder(store, call_id, persona="negotiator/sarah", model="gpt-realtime",
                                transcription_model="whisper-1", prices=DEFAULT_TABLE, metrics=metrics)
            for e in events:
                totals["events"] += 1
                try:
                    changes = await recorder.handle(e)
                except Exception:
                    totals["raised"] += 1
                    traceback.print_exc()
                    continue
                totals["invalid"] += sum(1 for c in changes if c.kind == "invalid_event")

        loop.run_until_complete(run())

    soak()
    elapsed = time.perf_counter() - began
    loop.run_until_complete(store.close())
    print(describe())
    print(f"recorder soak: {totals['events']} events in {totals['calls']} calls, {elapsed:.1f} s "
          f"({totals['events'] / elapsed:.0f} events/s, SQLite writes included)")
    print(f"  read as invalid: {totals['invalid']}; raised: {totals['raised']} (must be 0)")
    sys.exit(1 if totals["raised"] else 0)


if __name__ == "__main__":
    main()
