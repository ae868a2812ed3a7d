"""How long the browser client takes to read a call's server events (RealtimeCall, under node).

A typed call of N turns is produced by the engine's sans-I/O Session (text answers streamed in
small deltas, as a page receives them); every event goes through `RealtimeCall` as the data
channel hands it over, the page's view (`state.items`) rebuilt as it goes. Prints the cost per
event, overall and over the last tenth of the call (where the transcript is longest).

    PYTHONPATH=src .venv/bin/python benchmarks/web_reading.py [--turns 150] [--web DIR]

`--web` reads another copy of src/parley/web (e.g. an older one, from `git archive`), to compare.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import parley
from machine import describe
from parley.audio.pcm import SAMPLE_RATE
from parley.engine.session import Session, StartResponse
from parley.engine.speech.vad import VadStream
from parley.protocol.session import parse_session

NODE_MAIN = """
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { RealtimeCall } from "./parley.js";
const events = JSON.parse(readFileSync(0, "utf8"));
const runs = [];
for (let run = 0; run < 5; run++) {
  const call = new RealtimeCall();
  let renders = 0;
  call.addEventListener("change", () => (renders += call.state.items.length > 0));
  // this client's reading (a JSON text), or the one before it (a parsed object)
  const read = call._receive ? (raw) => call._receive(raw) : (raw) => call._handle(JSON.parse(raw));
  const times = [];
  for (const raw of events) {
    const t = performance.now();
    read(raw);
    times.push(performance.now() - t);
  }
  runs.push({ times, items: call.state.items.length, renders });
}
process.stdout.write(JSON.stringify(runs));
"""


def typed_call(turns: int) -> list[str]:
    session = Session(parse_session({"type": "realtime", "output_modalities": ["text"]}),
                      detector=VadStream(SAMPLE_RATE), now=time.time(), playback="server")
    session.start()
    events = [json.dumps(e) for e in session.take() if isinstance(e, dict)]
    for turn in range(turns):
        session.receive({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": f"Question {turn}?"}]}})
        session.receive({"type": "response.create"})
        out = session.take()
        (start,) = [e for e in out if isinstance(e, StartResponse)]
        for i in range(30):
            session.response_text(start.response_id, f" word{i}")
        session.response_complete(start.response_id)
        events += [json.dumps(e) for e in out + session.take() if isinstance(e, dict)]
    session.close()
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=150)
    parser.add_argument("--web", type=Path, default=Path(parley.__file__).parent / "web")
    args = parser.parse_args()
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is not installed")
    events = typed_call(args.turns)
    with tempfile.TemporaryDirectory() as tmp:
        for module in args.web.glob("*.js"):
            shutil.copy(module, tmp)
        Path(tmp, "package.json").write_text('{"type": "module"}')
        Path(tmp, "main.js").write_text(NODE_MAIN)
        version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
        done = subprocess.run([node, "main.js"], cwd=tmp, input=json.dumps(events), capture_output=True, text=True,
                              check=True)
    runs = json.loads(done.stdout)
    print(f"machine: {describe()}, node {version}")
    print(f"web: {args.web}")
    print(f"{args.turns} typed turns, {len(events)} events, {runs[0]['items']} items shown at the end")
    tail = len(events) // 10
    for i, run in enumerate(runs):
        times = run["times"]
        print(f"run {i + 1}: {sum(times):7.1f} ms in all, {1000 * sum(times) / len(times):6.1f} us/event, "
              f"last tenth {1000 * sum(times[-tail:]) / tail:6.1f} us/event")


if __name__ == "__main__":
    main()
