"""The negotiator's part of a call on the server: its tools, its outcome and the hand-over to Marco.

It reads the changes the call's recorder made of each event (`parley.protocol.changes`) and acts
through `send` (a server-held call's sideband). It answers the persona's tools
(`record_outcome`, the hand-over tool) with `function_call_output`, hands the call to the
supervisor with `session.update`, and asks for the next response when none is running. Without
`send` (a browser-direct call, whose browser answers the tools) it only records the outcome.

Who speaks is explicit: the call starts with a persona, and a hand-over takes effect when the
upstream confirms our `session.update` (its `session.updated` carries the instructions we sent), in
event order, so what Sarah was still saying is not put in Marco's mouth.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from parley.apps.scenarios import Persona
from parley.protocol import changes as ch

from .outcome import OUTCOME_TOOL, parse_outcome

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]


class EscalationError(Exception):
    """The call cannot be handed over now (`code`: no_supervisor, not_server_call)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def handoff_note(old: Persona, new: Persona) -> str:
    """The short line added to the conversation when `old` hands the call to `new`."""
    return (f"{old.name} has transferred this call to you. Greet the customer as {new.name} "
            f"({new.role.lower()}), say you have the context, and continue the negotiation.")


class NegotiatorAgent:
    def __init__(
        self,
        persona: Persona,
        *,
        session_for: Callable[[Persona], dict[str, Any]],
        on_outcome: Callable[[dict[str, Any]], Awaitable[None]],
        on_persona: Callable[[Persona], Awaitable[None]],
        on_tool: Callable[[str], None] = lambda _name: None,
        send: Send | None = None,
    ) -> None:
        self.persona = persona
        self.session_for = session_for
        self.on_outcome, self.on_persona, self.on_tool = on_outcome, on_persona, on_tool
        self.send = send
        self.outcome: dict[str, Any] | None = None
        self.active_response: str | None = None
        self.idle = asyncio.Event()
        self.idle.set()
        self._pending: tuple[Persona, str] | None = None  # asked for with session.update: (persona, instructions)
        self._handled_calls: set[str] = set()
        self._deferred_response = False  # a response.create to send once the active one is done
        self._escalating = asyncio.Lock()

    async def on_changes(self, changes: Sequence[ch.Change]) -> None:
        for change in changes:
            if isinstance(change, ch.SessionChanged):
                await self._session_changed(change.session)
            elif isinstance(change, ch.ResponseStarted) and not change.response.out_of_band:
                self.active_response = change.response.id
                self.idle.clear()
            elif isinstance(change, ch.ResponseDone):
                await self._response_done(change)
            elif isinstance(change, ch.ItemCompleted) and self.send is None:
                item = change.item
                if item.type == "function_call" and item.name == OUTCOME_TOOL and item.status == "completed":
                    await self._record_outcome(item.arguments)  # the browser answers the tool itself
            elif isinstance(change, ch.ErrorReceived) and change.code == "conversation_already_has_active_response" \
                    and self.send is not None:
                self._deferred_response = True  # ours lost a race with one the upstream started: ask again after it

    # -- events ---------------------------------------------------------------------------------

    async def _session_changed(self, session: dict[str, Any]) -> None:
        if self._pending is not None and session.get("instructions") == self._pending[1]:
            persona, self._pending = self._pending[0], None
            if persona.id != self.persona.id:
                self.persona = persona
                await self.on_persona(persona)

    async def _response_done(self, change: ch.ResponseDone) -> None:
        if change.response.id == self.active_response:
            self.active_response = None
            self.idle.set()
        if self.send is None:
            return
        if change.status == "completed":
            await self._run_tools([i for i in change.output if i.type == "function_call"])
        if self._deferred_response and self.active_response is None:
            self._deferred_response = False
            await self.send({"type": "response.create"})

    async def _record_outcome(self, arguments: str | None) -> dict[str, Any]:
        outcome = parse_outcome(arguments, self.persona)
        self.outcome = outcome
        await self.on_outcome(outcome)
        return outcome

    async def _run_tools(self, calls: list[Any]) -> None:
        assert self.send is not None
        todo = [c for c in calls if c.call_id and c.call_id not in self._handled_calls]
        if not todo:
            return
        switch_to: Persona | None = None
        current = self._pending[0] if self._pending else self.persona
        for call in todo:
            self._handled_calls.add(call.call_id)
            name = call.name or ""
            result: dict[str, Any]
            if name == OUTCOME_TOOL:
                try:
                    outcome = await self._record_outcome(call.arguments)
                    result = {"recorded": True, "monthly_savings": outcome["monthly_savings"]}
                except ValueError as exc:
                    result = {"recorded": False, "error": str(exc)}
            elif name and name == current.handoff_tool and current.handoff_persona is not None:
                switch_to = current.handoff_persona
                result = {"transferred": True, "to": switch_to.name, "role": switch_to.role}
            else:
                result = {"error": f"unknown function {name!r}"}
            self.on_tool(name)
            await self.send({"type": "conversation.item.create",
                             "item": {"type": "function_call_output", "call_id": call.call_id,
                                      "output": json.dumps(result)}})
        if switch_to is not None:
            await self.switch_persona(switch_to)
        await self.request_response()

    def forget_response(self) -> None:
        """Events were missed (a sideband gap): the response thought active may have ended unseen."""
        self.active_response = None
        self.idle.set()

    # -- acting ---------------------------------------------------------------------------------

    async def request_response(self) -> None:
        """response.create now, or once the response in progress is done."""
        assert self.send is not None
        if self.active_response is not None:
            self._deferred_response = True
        else:
            await self.send({"type": "response.create"})

    async def switch_persona(self, persona: Persona) -> None:
        """Ask the upstream to speak as `persona` (a server-held call); it takes effect when confirmed."""
        assert self.send is not None
        current = self._pending[0] if self._pending else self.persona
        if persona.id == current.id:
            return
        # Two updates: OpenAI refuses a voice change once the session has spoken, and a refused
        # update changes nothing, so the voice goes alone after instructions and tools.
        session = self.session_for(persona)
        self._pending = (persona, session.get("instructions", ""))
        output = session.get("audio", {}).get("output") or {}
        voice = output.pop("voice", None)
        if not output:
            session.get("audio", {}).pop("output", None)
        await self.send({"type": "session.update", "session": session})
        if voice is not None:
            await self.send({"type": "session.update",
                             "session": {"type": "realtime", "audio": {"output": {"voice": voice}}}})

    async def escalate(self, *, wait: float = 5.0) -> Persona:
        """Hand the call to the current persona's supervisor now."""
        if self.send is None:
            raise EscalationError("not_server_call", "Only calls the server holds (POST /api/calls) can be "
                                                     "escalated by the server; a browser-direct call switches "
                                                     "persona itself.")
        async with self._escalating:  # two requests at once hand over once
            old = self._pending[0] if self._pending else self.persona
            target = old.handoff_persona
            if target is None:
                raise EscalationError("no_supervisor", f"{old.name} has nobody to hand the call to.")
            # Stop what the old persona is saying: the response being written (a cancel with nothing
            # active only earns an error event, which the caller's page would see), and what is queued
            # to play (a finished response may still be playing).
            active = self.active_response is not None
            if active:
                await self.send({"type": "response.cancel"})
            await self.send({"type": "output_audio_buffer.clear"})
            if active:
                try:
                    await asyncio.wait_for(self.idle.wait(), wait)
                except TimeoutError:
                    log.info("response still active after cancel; escalating anyway")
            await self.switch_persona(target)
            await self.send({"type": "conversation.item.create",
                             "item": {"type": "message", "role": "system",
                                      "content": [{"type": "input_text", "text": handoff_note(old, target)}]}})
            await self.request_response()
            return target
