"""A replaying upstream: recorded sideband event streams of real calls, served at real-time pace.

    .venv/bin/python benchmarks/replayer.py --port 8765 [--data benchmarks/data/calls]

Just what `parley serve` needs of an upstream for server-held calls (PARLEY_UPSTREAM_URL=
http://127.0.0.1:8765/v1), so that a benchmark measures the server, not an engine's media:

* `POST /v1/realtime/calls` (multipart sdp + session): a recorded SDP answer, `Location` naming a new
  call id; each call is given one of the recordings in turn;
* `WS /v1/realtime?call_id=`: the call's recording, each event at its recorded time from the moment
  the sideband opened, looped until the call is hung up (each loop with fresh item, response and
  event ids, chained after the previous loop's last item, so the recorder sees one long call);
  client events are answered minimally: `session.update` with `session.updated`,
  `conversation.item.retrieve` with the item as the recording completed it; others are ignored
  (the recording already holds what the engine did with them);
* `POST /v1/realtime/calls/{id}/hangup`: closes the sideband (1000);
* `GET /marks?since=N`: when each event that completes an item was sent — (call id, item id, unix
  time) — for the benchmark to match with the rows it reads back (benchmarks/recorders.py); and
  counts of calls, events sent and sidebands the server dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from parley.protocol import changes as ch
from parley.protocol import ids
from parley.protocol.conversation import ConversationState

DATA = Path(__file__).parent / "data"
ID = re.compile(r"\b((?:item|resp|event)_[A-Za-z0-9]{18})[A-Za-z0-9]{4}\b")
# Answers to the recording server's own requests: sent here only when asked for.
ON_REQUEST = frozenset({"conversation.item.retrieved", "session.updated"})
PLACING = ("conversation.item.added", "conversation.item.done", "input_audio_buffer.committed")


def _loop_code(k: int) -> str:
    chars = []
    for _ in range(4):
        k, r = divmod(k, 62)
        chars.append(ids._ALPHABET[r])
    return "".join(chars)


@dataclass
class Step:
    t: float
    text: str
    completes: str | None  # the item id this event completes (words on record), if any


@dataclass
class Recording:
    name: str
    events: list[tuple[float, dict[str, Any]]]
    length: float
    session: dict[str, Any]
    items: dict[str, dict[str, Any]]  # item id -> the item as last seen complete (for retrieve)
    last_item: str | None
    loops: dict[int, list[Step]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Recording:
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        events = [(float(x["t"]), x["event"]) for x in lines]
        session = next(e["session"] for _t, e in events if e["type"] == "session.created")
        items: dict[str, dict[str, Any]] = {}
        last = None
        for _t, e in events:
            if e["type"] in ("conversation.item.done", "conversation.item.retrieved"):
                items[e["item"]["id"]] = e["item"]
            if e["type"] == "conversation.item.added":
                last = e["item"]["id"]
        return cls(path.stem, events, events[-1][0] + 1.0, session, items, last)

    def loop(self, k: int) -> list[Step]:
        """The recording's k-th loop: ids made unique to it, ready to send (made once per k)."""
        if k in self.loops:
            return self.loops[k]
        code, previous = _loop_code(k), _loop_code(k - 1)
        chain = ID.sub(lambda m: m.group(1) + previous, self.last_item) if k and self.last_item else None
        state = ConversationState()
        steps = []
        for t, event in self.events:
            if event["type"] in ON_REQUEST or (k and event["type"] == "session.created"):
                continue
            e = json.loads(ID.sub(lambda m: m.group(1) + code, json.dumps(event)))
            if chain and e["type"] in PLACING and e.get("previous_item_id", "") is None:
                e["previous_item_id"] = chain  # after the previous loop, not at the start
            completes = next((c.item.id for c in state.apply(e, time.time())
                              if isinstance(c, ch.ItemCompleted) and c.first and not c.item.out_of_band), None)
            steps.append(Step(t, json.dumps(e, separators=(",", ":")), completes))
        self.loops[k] = steps
        return steps

    def item(self, item_id: str) -> dict[str, Any] | None:
        """An item of any loop, as the recording completed it, with that loop's ids."""
        m = ID.fullmatch(item_id)
        if m is None:
            return None
        code = item_id[-4:]
        for original, item in self.items.items():
            if original.startswith(m.group(1)):
                return dict(json.loads(ID.sub(lambda x: x.group(1) + code, json.dumps(item))))
        return None


class Replayer:
    def __init__(self, recordings: list[Recording], answer: str) -> None:
        self.recordings, self.answer = recordings, answer
        self.calls: dict[str, Recording] = {}
        self.hangups: dict[str, asyncio.Event] = {}
        self.marks: list[tuple[str, str, float]] = []
        self.counts = {"calls": 0, "sidebands": 0, "events": 0, "hangups": 0, "dropped_by_server": 0,
                       "answered": 0, "late_sends": 0}
        self.lag: list[float] = []  # how late each send was against its recorded time (s), sampled

    async def create(self, request: Request) -> Response:
        await request.body()
        call_id = ids.new_id("rtc")
        self.calls[call_id] = self.recordings[self.counts["calls"] % len(self.recordings)]
        self.hangups[call_id] = asyncio.Event()
        self.counts["calls"] += 1
        return Response(self.answer, status_code=201, media_type="application/sdp",
                        headers={"location": f"/v1/realtime/calls/{call_id}"})

    async def hangup(self, request: Request) -> Response:
        call_id = request.path_params["call_id"]
        event = self.hangups.get(call_id)
        if event is None:
            return JSONResponse({"error": {"message": "No such call.", "code": "call_id_not_found"}}, 404)
        self.counts["hangups"] += 1
        event.set()
        return JSONResponse({})

    async def marks_since(self, request: Request) -> Response:
        since = int(request.query_params.get("since", "0"))
        lag = sorted(self.lag)
        self.lag.clear()
        return JSONResponse({"marks": self.marks[since:], "next": len(self.marks), "counts": self.counts,
                             "lag_p99": lag[int(len(lag) * 0.99)] if lag else 0.0})

    async def sideband(self, ws: WebSocket) -> None:
        call_id = ws.query_params.get("call_id", "")
        recording = self.calls.get(call_id)
        if recording is None:
            await ws.close(code=1008)
            return
        offered = ws.scope.get("subprotocols") or []
        await ws.accept(subprotocol="realtime" if "realtime" in offered else None)
        self.counts["sidebands"] += 1
        hung_up = self.hangups[call_id]
        session = copy.deepcopy(recording.session)
        player = asyncio.create_task(self._play(ws, call_id, recording))
        waiter = asyncio.create_task(hung_up.wait())
        try:
            while True:
                receive = asyncio.ensure_future(ws.receive())
                done, _ = await asyncio.wait({receive, waiter, player}, return_when=asyncio.FIRST_COMPLETED)
                if receive not in done:
                    receive.cancel()
                    break
                message = receive.result()
                if message["type"] == "websocket.disconnect":
                    if not hung_up.is_set():
                        self.counts["dropped_by_server"] += 1
                    break
                await self._answer(ws, recording, session, message.get("text") or message.get("bytes") or b"")
        except WebSocketDisconnect:
            if not hung_up.is_set():
                self.counts["dropped_by_server"] += 1
        finally:
            player.cancel()
            waiter.cancel()
            with contextlib.suppress(Exception):
                await ws.close(code=1000)
            self.calls.pop(call_id, None)
            self.hangups.pop(call_id, None)

    async def _answer(self, ws: WebSocket, recording: Recording, session: dict[str, Any], raw: str | bytes) -> None:
        event = json.loads(raw)
        reply: dict[str, Any] | None = None
        if event.get("type") == "session.update":
            session.update({k: v for k, v in (event.get("session") or {}).items() if k != "type"})
            reply = {"type": "session.updated", "session": session}
        elif event.get("type") == "conversation.item.retrieve":
            item = recording.item(str(event.get("item_id")))
            reply = {"type": "conversation.item.retrieved", "item": item} if item else {
                "type": "error", "error": {"type": "invalid_request_error", "code": "item_not_found",
                                           "message": "No such item.", "event_id": event.get("event_id")}}
        if reply is not None:
            self.counts["answered"] += 1
            await ws.send_text(json.dumps({"event_id": ids.event_id(), **reply}, separators=(",", ":")))

    async def _play(self, ws: WebSocket, call_id: str, recording: Recording) -> None:
        began, k = time.monotonic(), 0
        while True:
            start = began + k * recording.length
            for step in recording.loop(k):
                wait = start + step.t - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                elif wait < -0.05:
                    self.counts["late_sends"] += 1
                if len(self.lag) < 100_000:
                    self.lag.append(max(0.0, -wait))
                if step.completes is not None:
                    self.marks.append((call_id, step.completes, time.time()))
                await ws.send_text(step.text)
                self.counts["events"] += 1
            k += 1


def make_app(data: Path = DATA) -> Starlette:
    recordings = [Recording.load(p) for p in sorted((data / "calls").glob("*.jsonl"))]
    if not recordings:
        raise SystemExit(f"no recordings in {data / 'calls'} (benchmarks/record_calls.py makes them)")
    replayer = Replayer(recordings, (data / "answer.sdp").read_text())
    app = Starlette(routes=[
        Route("/v1/realtime/calls", replayer.create, methods=["POST"]),
        Route("/v1/realtime/calls/{call_id}/hangup", replayer.hangup, methods=["POST"]),
        Route("/marks", replayer.marks_since),
        WebSocketRoute("/v1/realtime", replayer.sideband),
    ])
    app.state.replayer = replayer
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    uvicorn.run(make_app(args.data), host="127.0.0.1", port=args.port, log_level="warning",
                ws_max_size=16 * 1024 * 1024, backlog=4096)


if __name__ == "__main__":
    main()
