"""Commands for a call another process holds, through Redis pub/sub.

Each process listens on its own channel (`<prefix>:cmd:<process id>`). A request publishes
`{op, call_id, reply}` to the owner's channel and waits (BLPOP) on the one-time `reply` list, where
the owner pushes `{ok, ...}` or `{ok: false, status, code, message}`. Nobody listening (the owner
died and is not yet taken over) is a 503 the caller may retry. Announcements to every process (a
process handing its calls over as it stops: "sweep") go on `<prefix>:cmd:*all`, with no reply.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import ApiError
from .hub import SharedHub

log = logging.getLogger(__name__)

Handler = Callable[[str, str], Awaitable[dict[str, Any]]]  # (op, call id) -> reply body
Announced = Callable[[str], None]  # an announcement's op
EVERYONE = "*all"
REPLY_SECONDS = 8.0


class Commands:
    def __init__(self, hub: SharedHub, handler: Handler, announced: Announced | None = None) -> None:
        self.hub, self.handler, self.announced = hub, handler, announced
        self._task: asyncio.Task[None] | None = None
        self._pubsub: Any = None
        self._running: set[asyncio.Task[None]] = set()
        self.errors = 0

    def channel(self, process_id: str) -> str:
        return self.hub.key("cmd", process_id)

    async def start(self) -> None:
        self._pubsub = self.hub.redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self.channel(self.hub.process_id), self.channel(EVERYONE))
        self._task = asyncio.create_task(self._listen(), name="shared-commands")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._pubsub is not None:
            await self._pubsub.aclose()

    async def broadcast(self, op: str) -> None:
        """Announce `op` to every process (this one included)."""
        await self.hub.redis.publish(self.channel(EVERYONE), json.dumps({"op": op, "from": self.hub.process_id}))

    async def send(self, owner: str, op: str, call_id: str) -> dict[str, Any]:
        """Run `op` on `call_id` at process `owner`; its reply body, or ApiError as the owner raised it."""
        reply = self.hub.key("reply", secrets.token_hex(8))
        listeners = await self.hub.redis.publish(self.channel(owner), json.dumps(
            {"op": op, "call_id": call_id, "reply": reply}))
        if not listeners:
            raise ApiError(503, "The process holding this call is not answering; try again in a few seconds.",
                           "owner_unavailable", headers={"Retry-After": "2"})
        got = await self.hub.redis.blpop([reply], timeout=REPLY_SECONDS)
        if got is None:
            raise ApiError(504, "The process holding this call did not answer in time.", "owner_timeout")
        body: dict[str, Any] = json.loads(got[1])
        if not body.get("ok"):
            raise ApiError(int(body.get("status") or 500), str(body.get("message") or "The command failed."),
                           str(body.get("code") or "command_failed"))
        return body

    async def _listen(self) -> None:
        async for message in self._pubsub.listen():
            if message.get("type") != "message":
                continue
            try:
                request = json.loads(message["data"])
                if "reply" not in request:  # an announcement
                    if self.announced is not None and request.get("from") != self.hub.process_id:
                        self.announced(str(request["op"]))
                    continue
                task = asyncio.ensure_future(self._answer(str(request["op"]), str(request["call_id"]),
                                                          str(request["reply"])))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            except (ValueError, KeyError, TypeError) as exc:
                self.errors += 1
                log.warning("shared mode: an unreadable command: %s", exc)

    async def _answer(self, op: str, call_id: str, reply: str) -> None:
        try:
            body = {"ok": True, **await self.handler(op, call_id)}
        except ApiError as exc:
            body = {"ok": False, "status": exc.status, "code": exc.code, "message": exc.message}
        except Exception:
            self.errors += 1
            log.exception("shared mode: command %s of call %s failed", op, call_id)
            body = {"ok": False, "status": 500, "code": "command_failed", "message": "The command failed."}
        try:
            await self.hub.redis.rpush(reply, json.dumps(body))
            await self.hub.redis.pexpire(reply, int(REPLY_SECONDS * 2000))
        except Exception:
            self.errors += 1
            log.exception("shared mode: could not reply to command %s of call %s", op, call_id)
