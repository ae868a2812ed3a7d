"""The scripted responder of the local engine: plays a scenario persona by the scenario's policy.

The persona comes from the session's instructions (`persona_for_instructions`); instructions that
match no persona go to a fallback (the `GenericResponder`). Everything the policy needs to know
about the call so far is read back from the conversation items, never kept per session: which
offers were made (their prices in earlier assistant turns), whether an offer was accepted (a
`record_outcome` call or the confirmation line), whether this persona has introduced itself,
whether the agent just asked a question. So a replayed or resumed conversation, or one whose
persona changed with a `session.update` (Sarah -> Marco), continues where it left off; an offer
the user never heard (its transcript removed by a truncate after barge-in) counts as not made.

The reply is deterministic for given items; variants of a line are picked by the turn number.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from parley.apps.scenarios import (
    Intent,
    OfferStep,
    Persona,
    Scenario,
    format_money,
    list_personas,
    normalize_text,
    persona_for_instructions,
)
from parley.engine.responders.base import (
    FunctionCall,
    Responder,
    ResponseChunk,
    ResponseRequest,
    is_message,
    stream_text,
)
from parley.engine.responders.generic import GenericResponder
from parley.protocol.items import item_text

OUTCOME_TOOL = "record_outcome"

_MONEY = re.compile(r"\$\s?(\d{1,4}(?:\.\d{1,2})?)")
_NUMBER = re.compile(r"(?<![\d.])\$?(\d{1,4}(?:\.\d{1,2})?)(?![\d.])( (?:\w+))?")
_NOT_PRICE_UNITS = {"year", "years", "yr", "yrs", "month", "months", "mbps", "meg", "megs", "megabits",
                    "gig", "gigs", "gigabit", "percent", "%", "channel", "channels", "day", "days", "box",
                    "boxes", "tv", "tvs", "times", "minutes", "hours", "weeks", "am", "pm", "th", "st", "nd"}
_TAKES_OFFER = re.compile(r"\b(take|deal|accept|sign|lock|go with)\b")


@dataclass(frozen=True)
class Reply:
    """What the persona says (and calls) in one response."""

    text: str
    calls: tuple[FunctionCall, ...] = ()
    kind: str = ""  # what the policy did: greeting, offer, accept, handover, ... (for tests and logs)
    offer: OfferStep | None = None  # the offer made or accepted in this reply
    intent: str = ""  # the user's intent the reply answers ("" when there were no new words)


@dataclass
class DialogueState:
    """The call so far, as far as the policy cares, rebuilt from the conversation items."""

    turn: int = 0  # assistant messages so far
    offers: list[OfferStep] = field(default_factory=list)  # offers made, ladder order
    accepted: OfferStep | None = None
    introduced: bool = False  # this persona has said its name
    any_assistant: bool = False
    any_user: bool = False
    last_assistant: str = ""  # normalised words of the latest assistant message
    user_since: list[str] | None = None  # user turns after the agent's last turn (None: none)
    handoff_called: bool = False
    latest: dict[str, Any] | None = None
    call_names: dict[str, str] = field(default_factory=dict)  # call_id -> function name

    @property
    def lowest(self) -> OfferStep | None:
        return self.offers[-1] if self.offers else None

    @property
    def pending(self) -> OfferStep | None:
        """The offer on the table (the lowest one made), unless one was accepted."""
        return None if self.accepted else self.lowest


def _stable(s: str) -> int:
    return zlib.crc32(s.encode())


def _step_at(scenario: Scenario, price: float) -> OfferStep | None:
    return next((o for o in scenario.offers if abs(o.price - price) < 0.005), None)


def read_state(persona: Persona, items: Sequence[dict[str, Any]]) -> DialogueState:
    """Rebuild the dialogue state of `persona` from conversation items."""
    sc = persona.scenario
    st = DialogueState()
    made: set[str] = set()
    accept_marker = normalize_text(sc.policy.markers["accept"])
    name = re.escape(persona.name.casefold())
    intro = re.compile(rf"\b(this is|im|i am|my name is|its) {name}\b|\b{name} (here|speaking)\b")
    greeting = normalize_text(persona.greeting).split()
    for item in items:
        kind = item.get("type", "message")
        if is_message(item, "assistant"):
            text = item_text(item)
            norm = normalize_text(text)
            st.turn += 1
            st.any_assistant = True
            st.last_assistant = norm
            st.user_since = None
            prices = [float(m) for m in _MONEY.findall(text)]
            for price in prices:
                step = _step_at(sc, price)
                if step is not None:
                    made.add(step.id)
            if accept_marker in norm:
                steps = [s for s in (_step_at(sc, p) for p in prices) if s is not None]
                st.accepted = steps[-1] if steps else st.accepted
            # Her greeting (the call's first words, before the user's) introduces her even when a
            # barge-in cut it before her name: "Hi, this is Sarah" right after "Thanks for calling
            # Northwind Cable" reads wrong.
            words = norm.split()
            greeted = st.turn == 1 and not st.any_user and words and words == greeting[:len(words)]
            if intro.search(norm) or greeted:
                st.introduced = True
        elif is_message(item, "user"):
            st.any_user = True
            if st.user_since is None:
                st.user_since = []
            st.user_since.append(item_text(item))
        elif kind == "function_call":
            fname = str(item.get("name") or "")
            if item.get("call_id"):
                st.call_names[str(item["call_id"])] = fname
            st.user_since = None
            if fname == OUTCOME_TOOL:
                try:
                    args = json.loads(item.get("arguments") or "{}")
                    step = _step_at(sc, float(args.get("new_monthly_price")))
                except (ValueError, TypeError, AttributeError):
                    step = None
                if step is not None:
                    st.accepted = step
                    made.add(step.id)
            elif persona.handoff_tool and fname == persona.handoff_tool:
                st.handoff_called = True
        st.latest = item
    st.offers = [o for o in sc.offers if o.id in made]
    return st


def tool_allowed(request: ResponseRequest, name: str) -> bool:
    """Whether the request lets the responder call the function `name`."""
    choice = request.tool_choice
    if choice == "none":
        return False
    if isinstance(choice, dict):
        forced = choice.get("name") or (choice.get("function") or {}).get("name")
        if forced and forced != name:
            return False
    return any(t.get("type", "function") == "function" and t.get("name") == name for t in request.tools)


def user_price(scenario: Scenario, norm: str) -> float | None:
    """A price the user names ("can you do 50", "fifty dollars"), if any."""
    lo, hi = scenario.policy.ask_range
    comp = float((scenario.account.get("competitor") or {}).get("price", -1))
    for m in _NUMBER.finditer(norm):
        value = float(m.group(1))
        unit = (m.group(2) or "").strip()
        if unit in _NOT_PRICE_UNITS or not lo <= value <= hi or abs(value - comp) < 0.005:
            continue
        return value
    return None


class ScenarioResponder:
    """Plays the scenario persona the instructions select; anything else goes to `fallback`."""

    def __init__(self, fallback: Responder | None = None) -> None:
        self.fallback: Responder = fallback if fallback is not None else GenericResponder()

    def warm_up(self) -> None:
        """Load the scenarios' YAML and patterns now, not on a first turn."""
        list_personas()

    async def respond(self, request: ResponseRequest) -> AsyncIterator[ResponseChunk]:
        persona = persona_for_instructions(request.instructions)
        if persona is None:
            async for chunk in self.fallback.respond(request):
                yield chunk
            return
        reply = self.plan(request, persona)
        async for delta in stream_text(reply.text):
            yield delta
        for call in reply.calls:
            yield call

    # -- the policy ---------------------------------------------------------------------------

    def plan(self, request: ResponseRequest, persona: Persona | None = None) -> Reply:
        """The reply `persona` (default: the one the instructions select) gives to `request`."""
        persona = persona or persona_for_instructions(request.instructions)
        if persona is None:
            raise LookupError("the instructions select no scenario persona")
        return _Turn(persona, request).reply()


class _Turn:
    """One response of one persona: state, line picking and the decision."""

    def __init__(self, persona: Persona, request: ResponseRequest) -> None:
        self.persona = persona
        self.sc = persona.scenario
        self.policy = self.sc.policy
        self.request = request
        self.st = read_state(persona, request.items)

    # lines ---------------------------------------------------------------------------------------

    def values(self, step: OfferStep | None = None, ask: float | None = None) -> dict[str, str]:
        v = self.sc.template_values()
        step = step or self.st.accepted or self.st.lowest
        if step is not None:
            v["price"] = format_money(step.price)
            v["term"] = str(step.term_months)
            v["savings"] = format_money(self.sc.monthly_bill - step.price)
        else:
            v["price"] = v["bill"]
            v["term"] = "12"
            v["savings"] = "$0"
        v["ask"] = format_money(ask) if ask is not None else ""
        v["floor"] = format_money(self.persona.floor) if self.persona.floor is not None else ""
        v["name"] = self.persona.name
        target = self.persona.handoff_persona
        v["supervisor"] = target.name if target else ""
        return v

    def pick(self, options: Sequence[str], salt: str) -> str:
        return options[(self.st.turn + _stable(salt)) % len(options)]

    def line(self, kind: str, step: OfferStep | None = None, ask: float | None = None) -> str:
        return self.pick(self.persona.lines[kind], kind).format(**self.values(step, ask))

    def offer_line(self, step: OfferStep) -> str:
        return self.pick(step.lines, step.id).format(**self.values(step))

    def next_offer(self) -> OfferStep | None:
        lowest = self.st.lowest
        floor = self.persona.floor
        for step in self.sc.offers:
            if lowest is not None and step.price >= lowest.price - 0.005:
                continue
            if floor is not None and step.price < floor - 0.005:
                return None
            return step
        return None

    # decisions ---------------------------------------------------------------------------------

    def reply(self) -> Reply:
        st = self.st
        latest = st.latest
        if latest is not None and latest.get("type") == "function_call_output":
            return self.after_tool(st.call_names.get(str(latest.get("call_id")), ""))
        if st.user_since is None:
            if not st.any_user and not st.introduced:
                return Reply(self.persona.greeting, kind="greeting")
            return self.proceed()
        heard = " ".join(t for t in st.user_since if t.strip())
        if not heard:
            return self.intro(Reply(self.line("inaudible"), kind="inaudible"))
        return self.intro(self.answer(normalize_text(heard)))

    def intro(self, reply: Reply) -> Reply:
        """Prefix the persona's introduction if it hasn't spoken yet in this call."""
        if self.st.introduced:
            return reply
        return replace(reply, text=f"{self.line('intro')} {reply.text}")

    def proceed(self) -> Reply:
        """No new words from the user: a persona taking over continues the negotiation."""
        st = self.st
        if not st.introduced:
            if st.any_assistant:  # taking over from a colleague: introduce yourself, continue the ladder
                return self.intro(self.make_offer(None))
            return Reply(self.persona.greeting, kind="greeting")
        if st.pending is not None:
            return Reply(self.line("smalltalk_offer"), kind="nudge")
        return Reply(self.line("smalltalk"), kind="nudge")

    def after_tool(self, name: str) -> Reply:
        if name == OUTCOME_TOOL:
            return Reply(self.line("closing"), kind="closing")
        if self.persona.handoff_tool and name == self.persona.handoff_tool:
            # The server answered the transfer but the session still plays this persona.
            return Reply(self.line("handover_waiting"), kind="handover_waiting")
        return self.proceed()

    def answer(self, norm: str) -> Reply:
        """The reply to the user's latest words (normalised)."""
        intent, reply = self._decide(norm)
        return replace(reply, intent=intent)

    def _decide(self, norm: str) -> tuple[str, Reply]:
        st = self.st
        policy = self.policy
        matched: list[Intent] = [i for i in policy.intents if i.matches(norm)]
        names = {i.name for i in matched}
        ask = user_price(self.sc, norm)
        named_offer = _step_at(self.sc, ask) if ask is not None else None
        if named_offer is not None and named_offer not in st.offers:
            named_offer = None
        price_ask = policy.intent("price_ask")
        if ask is not None and named_offer is None and price_ask is not None:
            matched = [i for i in policy.intents if i.name in names or i is price_ask]
        blocked = any(i.blocks_accept for i in matched) or any(p.search(norm) for p in policy.accept_blockers)
        pending = st.pending
        exhausted_q = bool(self.persona.handoff_to) and normalize_text(
            policy.markers["exhausted_question"]) in st.last_assistant
        confirm_q = normalize_text(policy.markers["confirm"]) in st.last_assistant
        to_supervisor = "The customer wants more than this agent's lowest offer."

        accept = next((i for i in matched if i.action == "accept"), None)
        if pending is not None and not blocked:
            if accept is not None:
                if exhausted_q and not _TAKES_OFFER.search(norm):  # "yes" to "shall I get my supervisor?"
                    return "accept", self.handover(to_supervisor)
                return "accept", self.accept(named_offer or pending)
            if policy.weak_accept.search(norm) and "goodbye" not in names:
                if exhausted_q:
                    return "accept", self.handover(to_supervisor)
                if confirm_q:
                    return "accept", self.accept(pending)
                return "accept", Reply(self.line("confirm", pending), kind="confirm", offer=pending)
        if exhausted_q and pending is not None and "decline" in names and names <= {"decline", "smalltalk", "loyalty"}:
            # "no" to "do you want me to get my supervisor?"
            return "decline", Reply(self.line("no_handover", pending), kind="no_handover", offer=pending)

        main = next((i for i in matched if i.action != "accept" and (pending or not i.requires_offer)), None)
        if main is None:
            if accept is not None or policy.weak_accept.search(norm):
                return "smalltalk", Reply(self.line("smalltalk_offer" if pending else "smalltalk"), kind="smalltalk")
            return "unknown", Reply(self.line("reprompt_offer" if pending else "reprompt"), kind="reprompt")
        if main.action == "handover":
            return main.name, self.handover()
        if main.action == "offer":
            return main.name, self.make_offer(main, ask)
        if main.action == "details":
            step = st.accepted or st.lowest
            if step is None:
                return main.name, Reply(self.line("details_no_offer"), kind="details")
            return main.name, Reply(step.includes.format(**self.values(step)), kind="details", offer=step)
        if main.action == "goodbye":
            return main.name, Reply(self.line("goodbye_offer" if pending else "goodbye"), kind="goodbye")
        return main.name, Reply(self.line("smalltalk_offer" if pending else main.line or "smalltalk"), kind="smalltalk")

    def make_offer(self, intent: Intent | None, ask: float | None = None) -> Reply:
        st = self.st
        if st.accepted is not None:
            return Reply(self.line("already_accepted", st.accepted), kind="already_accepted")
        lowest = st.lowest
        if ask is not None and intent is not None and intent.name == "price_ask" and lowest is not None \
                and ask >= lowest.price - 0.005:
            return Reply(self.line("already_lower", lowest), kind="already_lower", offer=lowest)
        step = self.next_offer()
        if step is None:
            if intent is not None and intent.name == "cancel":
                return Reply(self.line("exhausted_cancel", lowest), kind="exhausted", offer=lowest)
            lead = self.pick(intent.leads, intent.name).format(**self.values(lowest, ask)) \
                if intent is not None and intent.leads and intent.name != "price_ask" else ""
            text = f"{lead} {self.line('exhausted', lowest)}".strip()
            return Reply(text, kind="exhausted", offer=lowest)
        parts = []
        if intent is not None and intent.leads and not (intent.name == "price_ask" and ask is not None
                                                        and ask >= step.price - 0.005):
            parts.append(self.pick(intent.leads, intent.name).format(**self.values(step, ask)))
        parts.append(self.offer_line(step))
        return Reply(" ".join(parts), kind="offer", offer=step)

    def handover(self, reason: str = "The customer asked for a supervisor.") -> Reply:
        persona = self.persona
        if persona.handoff_to is None:
            # Nobody above this persona: say so and keep negotiating.
            offer = self.make_offer(None)
            if not self.st.introduced:  # the introduction says who is speaking
                return offer
            return replace(offer, text=f"{self.line('supervisor_self')} {offer.text}")
        kind = "handover_waiting" if self.st.handoff_called else "handover"
        calls: tuple[FunctionCall, ...] = ()
        if persona.handoff_tool and tool_allowed(self.request, persona.handoff_tool):
            calls = (FunctionCall(persona.handoff_tool, json.dumps({"reason": reason})),)
        return Reply(self.line(kind), calls, kind=kind)

    def accept(self, step: OfferStep) -> Reply:
        text = self.line("accept", step)
        calls: tuple[FunctionCall, ...] = ()
        if tool_allowed(self.request, OUTCOME_TOOL):
            args = {
                "new_monthly_price": step.price,
                "old_monthly_price": self.sc.monthly_bill,
                "plan": str(self.sc.account.get("plan", "")),
                "term_months": step.term_months,
                "accepted_by": self.persona.name,
            }
            calls = (FunctionCall(OUTCOME_TOOL, json.dumps(args)),)
        return Reply(text, calls, kind="accept", offer=step)
