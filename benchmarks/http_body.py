"""parley.http.body: what the JSON nesting bound costs, next to the parse itself.

    .venv/bin/python benchmarks/http_body.py

Every JSON body of both apps goes through `parse_json`, which runs `json_depth_error` (bytes
operations only) before `json.loads`. Bodies: a small client_secrets request, a browser-direct
call's event report (400 events, ~115 KB), and a session whose tool schema strings hold brackets
(the slower path of the check, which cuts the strings out). Best of 5 runs each.
"""

from __future__ import annotations

import json
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "src")]

from machine import describe  # noqa: E402
from parley.http.body import json_depth_error, parse_json  # noqa: E402


def bodies() -> dict[str, bytes]:
    event = {"type": "response.done", "response": {
        "id": "resp_1", "status": "completed", "usage": {"input_tokens": 100, "output_tokens": 50},
        "output": [{"id": "item_1", "type": "message", "role": "assistant", "content": [
            {"type": "output_audio", "transcript": "Hello, this is Sarah from billing. How can I help you today?"}]}]}}
    tool = {"type": "function", "name": "record_outcome", "description": "Record the offer [price, term] agreed.",
            "parameters": {"type": "object", "properties": {f"p{i}": {"type": "string", "pattern": "^[a-z]{2,8}$"}
                                                            for i in range(40)}}}
    texts = {
        "client_secrets (small)": {"session": {"type": "realtime", "instructions": "You are Sarah. " * 40}},
        "event report (400 events)": {"events": [event] * 400},
        "session with brackets in strings": {"session": {"type": "realtime", "tools": [tool] * 10}},
    }
    return {name: json.dumps(body).encode() for name, body in texts.items()}


def best_us(call: Callable[[bytes], object], data: bytes) -> float:
    number = max(10, 2_000_000 // len(data))
    return min(timeit.repeat(lambda: call(data), number=number, repeat=5)) / number * 1e6


def main() -> None:
    print(describe())
    print(f"{'body':36} {'bytes':>8} {'json.loads':>12} {'depth check':>12} {'parse_json':>12}")
    for name, data in bodies().items():
        loads, check, full = best_us(json.loads, data), best_us(json_depth_error, data), best_us(parse_json, data)
        print(f"{name:36} {len(data):>8} {loads:>10.1f}us {check:>10.1f}us {full:>10.1f}us"
              f"   check/loads {check / loads:.2f}")


if __name__ == "__main__":
    main()
