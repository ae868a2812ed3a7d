"""Responders: the scripted scenario policy, the generic fallback, and the chat-completions bridge."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parley.apps.negotiator.responder import Reply, ScenarioResponder
from parley.apps.scenarios import Persona, get_persona
from parley.engine.responders.base import (
    FunctionCall,
    Responder,
    ResponderError,
    ResponseChunk,
    ResponseRequest,
    TextDelta,
)
from parley.engine.responders.chat import ChatResponder, chat_messages
from parley.engine.responders.generic import GenericResponder

try:
    from support.chat_server import ChatServerURL, run_chat_server
except ImportError:  # tests/ imported as a package
    from tests.chat_server import ChatServerURL, run_chat_server  # type: ignore[no-redef]

SARAH = "negotiator/sarah"
MARCO = "negotiator/marco"
LADDER = [109.99, 94.99, 89.99, 79.99, 69.99]
FLOOR = {"Sarah": 89.99, "Marco": 69.99}
PRICE = re.compile(r"\$(\d+\.\d\d)")


def user(text: str | None, typed: bool = False) -> dict[str, Any]:
    part = {"type": "input_text", "text": text} if typed else {"type": "input_audio", "transcript": text}
    return {"type": "message", "role": "user", "content": [part]}


def assistant(text: str, audio: bool = True) -> dict[str, Any]:
    part = {"type": "output_audio", "transcript": text} if audio else {"type": "output_text", "text": text}
    return {"type": "message", "role": "assistant", "content": [part]}


def ladder_prices(text: str) -> list[float]:
    return [p for p in (float(x) for x in PRICE.findall(text)) if p in LADDER]


async def collect(responder: Responder, request: ResponseRequest) -> list[ResponseChunk]:
    return [chunk async for chunk in responder.respond(request)]


@dataclass
class Turn:
    text: str
    calls: list[FunctionCall]
    chunks: list[ResponseChunk]
    persona: Persona


@dataclass
class Call:
    """What the engine's session does around a responder: items in, items out, session.update."""

    responder: Responder = field(default_factory=ScenarioResponder)
    persona: Persona = field(default_factory=lambda: get_persona(SARAH))
    tools: bool = True
    modalities: tuple[str, ...] = ("audio",)
    tool_choice: str | dict[str, Any] = "auto"
    items: list[dict[str, Any]] = field(default_factory=list)
    n_calls: int = 0

    def request(self) -> ResponseRequest:
        return ResponseRequest(instructions=self.persona.instructions, items=list(self.items),
                               tools=self.persona.tools if self.tools else [], tool_choice=self.tool_choice,
                               output_modalities=self.modalities, voice=self.persona.voice)

    async def respond(self) -> Turn:
        persona = self.persona
        chunks = await collect(self.responder, self.request())
        text = "".join(c.text for c in chunks if isinstance(c, TextDelta))
        calls = [c for c in chunks if isinstance(c, FunctionCall)]
        if text:
            self.items.append(assistant(text, audio=self.modalities == ("audio",)))
        for c in calls:
            self.n_calls += 1
            self.items.append({"type": "function_call", "name": c.name, "arguments": c.arguments,
                               "call_id": c.call_id or f"call_{self.n_calls}"})
        return Turn(text, calls, chunks, persona)

    async def say(self, text: str | None) -> Turn:
        self.items.append(user(text))
        return await self.respond()

    def tool_output(self, output: str) -> None:
        call_id = self.items[-1]["call_id"]
        self.items.append({"type": "function_call_output", "call_id": call_id, "output": output})

    def switch(self, persona_id: str) -> None:  # session.update with the persona's instructions
        self.persona = get_persona(persona_id)


# -- the scripted negotiation ------------------------------------------------------------------


async def test_full_negotiation_by_voice() -> None:
    call = Call()
    sarah, marco = get_persona(SARAH), get_persona(MARCO)

    greeting = await call.respond()
    assert greeting.text == sarah.greeting and not greeting.calls

    t = await call.say("hi um I'd like to lower my bill")
    assert ladder_prices(t.text) == [109.99] and not t.calls

    t = await call.say("skyline fiber is offering five hundred megs for fifty nine ninety nine")
    assert ladder_prices(t.text) == [94.99]
    assert "Skyline" in t.text or "TV" in t.text  # answers the competitor, not just the price

    t = await call.say("that's still way too much lower it or I'm canceling")
    assert ladder_prices(t.text) == [89.99]

    t = await call.say("I want to talk to your supervisor")
    assert "Marco" in t.text and ladder_prices(t.text) == []
    assert [c.name for c in t.calls] == ["transfer_to_supervisor"]
    assert json.loads(t.calls[0].arguments)["reason"]

    # the server hands over: session.update with Marco's config, the tool's output, response.create
    call.switch(MARCO)
    call.tool_output('{"transferred_to": "Marco"}')
    t = await call.respond()
    assert t.persona is marco
    assert "this is Marco" in t.text
    assert ladder_prices(t.text) == [79.99]  # continues where Sarah stopped
    assert not t.calls

    t = await call.say("yeah okay I'll take it")
    assert ladder_prices(t.text) == [79.99] and "24 months" in t.text
    assert [c.name for c in t.calls] == ["record_outcome"]
    assert json.loads(t.calls[0].arguments) == {
        "new_monthly_price": 79.99, "old_monthly_price": 129.99, "plan": "Internet 500 + TV Basic",
        "term_months": 24, "accepted_by": "Marco"}
    # streamed: several word-sized text deltas first, the call last
    kinds = [type(c).__name__ for c in t.chunks]
    assert kinds[-1] == "FunctionCall" and kinds.count("TextDelta") > 5
    assert kinds.index("FunctionCall") == len(kinds) - 1

    call.tool_output('{"ok": true}')
    t = await call.respond()
    assert t.text and not t.calls and ladder_prices(t.text) == []
    assert "account" in t.text.lower()

    t = await call.say("great thanks bye")
    assert "calling" in t.text.lower() and not t.calls


async def test_marco_continues_without_a_tool_round_trip() -> None:
    # A server that updates the session and asks for a response right after Sarah's turn.
    call = Call()
    await call.respond()
    await call.say("my bill is too high")
    await call.say("no")
    t = await call.say("can I speak to your manager")
    assert [c.name for c in t.calls] == ["transfer_to_supervisor"]
    call.switch(MARCO)
    t = await call.respond()
    assert "Marco" in t.text and ladder_prices(t.text) == [89.99]


async def test_sarah_offers_her_supervisor_at_her_floor_and_yes_transfers() -> None:
    call = Call()
    await call.respond()
    offers = [ladder_prices((await call.say(u)).text) for u in ("too expensive", "no", "nope, lower")]
    assert offers == [[109.99], [94.99], [89.99]]
    t = await call.say("can you do any better")
    assert ladder_prices(t.text) == [89.99] and "supervisor" in t.text and t.text.endswith("?")
    t = await call.say("yes please")
    assert [c.name for c in t.calls] == ["transfer_to_supervisor"]


async def test_no_to_the_supervisor_keeps_the_offer_open() -> None:
    call = Call()
    await call.respond()
    for u in ("too expensive", "no", "no", "can you do better"):
        await call.say(u)
    t = await call.say("no")
    assert not t.calls and ladder_prices(t.text) == [89.99]


async def test_vague_yes_gets_a_confirmation_first() -> None:
    call = Call()
    await call.respond()
    await call.say("I want a lower bill")
    t = await call.say("okay")
    assert "confirm" in t.text and not t.calls and ladder_prices(t.text) == [109.99]
    t = await call.say("yes")
    assert [c.name for c in t.calls] == ["record_outcome"]
    assert json.loads(t.calls[0].arguments)["accepted_by"] == "Sarah"
    assert json.loads(t.calls[0].arguments)["new_monthly_price"] == 109.99
    # after the deal: no new offers, no second outcome
    t = await call.say("actually can you lower it more")
    assert not t.calls and ladder_prices(t.text) == [109.99]


async def test_accepting_a_named_earlier_offer() -> None:
    call = Call()
    await call.respond()
    await call.say("too expensive")
    await call.say("no")
    t = await call.say("fine I'll take the one hundred nine ninety nine one")
    assert json.loads(t.calls[0].arguments)["new_monthly_price"] == 109.99


async def test_first_response_without_user_is_the_greeting_for_each_persona() -> None:
    for pid in (SARAH, MARCO):
        persona = get_persona(pid)
        t = await Call(persona=persona).respond()
        assert t.text == persona.greeting


async def test_user_speaking_first_gets_an_introduction() -> None:
    call = Call()
    # one greeting, not two ("Hi, this is Sarah with Northwind Cable. Hi there!")
    t = await call.say("hello")
    assert t.text.startswith("Thanks for calling Northwind Cable, this is Sarah.") and t.text.count("Hi") <= 1, t.text
    call = Call()
    t = await call.say("hello I want to cancel")
    assert t.text.startswith("Thanks for calling Northwind Cable, this is Sarah.") and ladder_prices(t.text) == [109.99]


async def test_a_greeting_cut_short_by_a_barge_in_still_introduced_her() -> None:
    # The user talked over "Thanks for calling Northwind Cable, this is Sarah...": the truncated
    # greeting holds only what was heard, and her answer must not start with a second introduction.
    call = Call()
    call.items += [assistant("Thanks for calling Northwind Cable,"), user("my bill is too expensive")]
    t = await call.respond()
    assert "this is Sarah" not in t.text and ladder_prices(t.text) == [109.99], t.text
    # another persona's words are no introduction of hers
    call = Call()
    call.items += [assistant("Hi, this is Marco"), user("my bill is too expensive")]
    assert "this is Sarah" in (await call.respond()).text
    # nor are Sarah's words, cut short after the user spoke, Marco's greeting ("Hi, this is Marco...")
    call = Call(persona=get_persona(MARCO))
    call.items += [user("my bill is too high"), assistant("Hi, this"), {"type": "message", "role": "system",
                   "content": [{"type": "input_text", "text": "Sarah has transferred this call to you."}]}]
    t = await call.respond()
    assert "this is Marco" in t.text, t.text


async def test_marco_as_supervisor_does_not_hand_over_again() -> None:
    call = Call(persona=get_persona(MARCO))
    call.items += [assistant(get_persona(SARAH).greeting), user("too expensive"),
                   assistant("I can bring your bill down to $109.99 a month for the next 12 months.")]
    t = await call.say("I want a supervisor")
    assert "Marco" in t.text and ladder_prices(t.text) == [94.99] and not t.calls
    t = await call.say("get me your manager")
    assert "supervisor" in t.text and ladder_prices(t.text) == [89.99] and not t.calls


# -- robustness to speech-to-text ------------------------------------------------------------------

OFFER_ON_TABLE = [assistant("Thanks for calling Northwind Cable, this is Sarah. How can I help you today?"),
                  user("my bill is too high"),
                  assistant("I can bring your bill down to $109.99 a month for the next 12 months. How does that sound?")]


def plan(utterance: str | None, items: list[dict[str, Any]] | None = None, persona: str = SARAH,
         **kw: Any) -> Reply:
    p = get_persona(persona)
    base = OFFER_ON_TABLE if items is None else items
    request = ResponseRequest(instructions=p.instructions, items=[*base, user(utterance)], tools=p.tools, **kw)
    return ScenarioResponder().plan(request)


@pytest.mark.parametrize(("utterance", "intent"), [
    ("I WANT TO CANCEL", "cancel"),
    ("i'm cancelling my service", "cancel"),
    ("im canceling", "cancel"),
    ("cancel", "cancel"),
    ("Lower my bill, or I'll cancel.", "cancel"),
    ("I'm going to switch to Skyline", "cancel"),
    ("can i speak to a supervisor", "supervisor"),
    ("I want to talk to your manager", "supervisor"),
    ("let me talk to someone else", "supervisor"),
    ("get me your boss", "supervisor"),
    ("is there somebody who can actually help me", "supervisor"),
    ("Skyline Fiber has 500 Mbps for $59.99", "competitor"),
    ("sky line fibre is fifty nine ninety nine", "competitor"),
    ("another company offered me a better price", "competitor"),
    ("ive been a customer for six years", "loyalty"),
    ("I've been loyal for 6 years", "loyalty"),
    ("can you do fifty dollars", "price_ask"),
    ("how about $50", "price_ask"),
    ("what about 75 bucks a month", "price_ask"),
    ("what does that include", "details"),
    ("is there a contract", "details"),
    ("what's the catch", "details"),
    ("no", "decline"),
    ("nope still too much", "decline"),
    ("that's not good enough", "decline"),
    ("yes", "accept"),
    ("Yeah, I'll take it.", "accept"),
    ("sure, let's do it", "accept"),
    ("ok sounds good", "accept"),
    ("it's a deal", "accept"),
    ("bye", "goodbye"),
    ("hello", "hello"),
    ("how are you doing", "how_are_you"),
    ("the purple elephant", "unknown"),
])
def test_intents_survive_stt_variations(utterance: str, intent: str) -> None:
    assert plan(utterance).intent == intent


@pytest.mark.parametrize("utterance", ["yes but that's still too expensive", "ok can you do better",
                                       "yeah no", "okay but I might cancel", "sure, what's included?"])
def test_a_yes_with_pushback_is_not_an_acceptance(utterance: str) -> None:
    reply = plan(utterance)
    assert reply.kind != "accept" and not reply.calls


def test_a_cancel_threat_dominates_and_gets_an_offer() -> None:
    reply = plan("I've been with you six years, skyline is cheaper, lower my bill or I'm cancelling")
    assert reply.intent == "cancel" and reply.kind == "offer" and reply.offer is not None
    assert reply.offer.price == 94.99


def test_price_ask_below_the_floor_is_refused_politely() -> None:
    reply = plan("can you do forty nine dollars")
    assert reply.offer is not None and reply.offer.price == 94.99
    assert "$49" in reply.text


def test_failed_transcription_gets_a_reprompt() -> None:
    for transcript in (None, "", "   "):
        reply = plan(transcript)
        assert reply.kind == "inaudible" and not ladder_prices(reply.text)


def test_several_user_turns_since_the_last_reply_are_read_together() -> None:
    items = [*OFFER_ON_TABLE, user("hmm")]
    reply = plan("I want to cancel", items=items)
    assert reply.intent == "cancel"


# -- state from the items ------------------------------------------------------------------------


def test_resumed_conversation_continues_the_ladder() -> None:
    # A stored transcript (e.g. from a previous connection), read by a brand-new responder.
    items = [assistant("Thanks for calling Northwind Cable, this is Sarah. How can I help you today?"),
             user("hi i want a lower bill"),
             assistant("I can put you on a 12-month promotion at $109.99 a month for the same plan."),
             user("that's too much"),
             assistant("Let me try this. $94.99 a month, locked in for 12 months.", audio=False)]
    reply = plan("no", items=items)
    assert reply.offer is not None and reply.offer.price == 89.99
    assert "this is Sarah" not in reply.text  # she introduced herself already
    marco = plan("still too much", items=items, persona=MARCO)
    assert "Marco" in marco.text and marco.offer is not None and marco.offer.price == 89.99


def test_an_offer_cut_off_by_barge_in_was_not_made() -> None:
    # conversation.item.truncate removes the transcript of what the user never heard
    items = [*OFFER_ON_TABLE, user("no"), assistant("")]
    reply = plan("no", items=items)
    assert reply.offer is not None and reply.offer.price == 94.99


def test_beta_style_assistant_text_is_read() -> None:
    items = [user("too expensive"),
             {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "Sure: $109.99 a month."}]}]
    assert plan("no", items=items).offer.price == 94.99  # type: ignore[union-attr]


def test_sarah_after_marco_offered_lower_never_offers_below_her_floor() -> None:
    items = [*OFFER_ON_TABLE, user("no"), assistant("This is Marco. I can do $79.99 a month for 24 months.")]
    reply = plan("no", items=items)
    assert reply.kind == "exhausted" and not [p for p in ladder_prices(reply.text) if p not in (79.99,)]


def test_transfer_output_while_still_sarah() -> None:
    items = [*OFFER_ON_TABLE, user("supervisor please"),
             assistant("Let me get my supervisor, Marco. One moment please."),
             {"type": "function_call", "name": "transfer_to_supervisor", "arguments": "{}", "call_id": "c1"},
             {"type": "function_call_output", "call_id": "c1", "output": "ok"}]
    p = get_persona(SARAH)
    reply = ScenarioResponder().plan(ResponseRequest(instructions=p.instructions, items=items, tools=p.tools))
    assert "Marco" in reply.text and not reply.calls


# -- tools and modalities -------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [{"tool_choice": "none"}, {"tools": []},
                                {"tool_choice": {"type": "function", "name": "something_else"}}])
async def test_no_calls_when_tools_are_off(kw: dict[str, Any]) -> None:
    p = get_persona(SARAH)
    fields: dict[str, Any] = {"instructions": p.instructions, "items": [*OFFER_ON_TABLE, user("I'll take it")],
                              "tools": p.tools, **kw}
    chunks = await collect(ScenarioResponder(), ResponseRequest(**fields))
    text = "".join(c.text for c in chunks if isinstance(c, TextDelta))
    assert "all set" in text and not [c for c in chunks if isinstance(c, FunctionCall)]


async def test_forced_tool_choice_allows_the_call() -> None:
    p = get_persona(SARAH)
    request = ResponseRequest(instructions=p.instructions, items=[*OFFER_ON_TABLE, user("deal")], tools=p.tools,
                              tool_choice={"type": "function", "name": "record_outcome"})
    chunks = await collect(ScenarioResponder(), request)
    assert [c.name for c in chunks if isinstance(c, FunctionCall)] == ["record_outcome"]


async def test_text_modality_behaves_the_same() -> None:
    audio, text = Call(), Call(modalities=("text",))
    for c in (audio, text):
        await c.respond()
    for u in ("too expensive", "no", "ok", "yes"):
        a, t = await audio.say(u), await text.say(u)
        assert a.text == t.text and [c.name for c in a.calls] == [c.name for c in t.calls]
    assert text.items[-2]["content"][0]["type"] == "output_text"


async def test_scenario_reply_is_deterministic() -> None:
    p = get_persona(SARAH)
    request = ResponseRequest(instructions=p.instructions, items=[*OFFER_ON_TABLE, user("no")], tools=p.tools)
    first = await collect(ScenarioResponder(), request)
    second = await collect(ScenarioResponder(), request)
    assert first == second


async def test_wording_varies_between_turns() -> None:
    call = Call()
    await call.respond()
    texts = [(await call.say("hmm")).text for _ in range(4)]
    assert len(set(texts)) > 1


async def test_cancellation_stops_the_stream() -> None:
    p = get_persona(SARAH)
    request = ResponseRequest(instructions=p.instructions, items=[*OFFER_ON_TABLE, user("no")], tools=p.tools)
    total = len(await collect(ScenarioResponder(), request))
    got: list[ResponseChunk] = []
    started = asyncio.Event()

    async def consume() -> None:
        async for chunk in ScenarioResponder().respond(request):
            got.append(chunk)
            started.set()
            await asyncio.sleep(0.01)

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert 0 < len(got) < total


# -- floors are never crossed, whatever the user says ------------------------------------------------

UTTERANCES = ["too expensive", "no", "lower", "I'll cancel", "skyline is 59.99", "six years", "supervisor",
              "can you do 50 dollars", "how about eighty", "what's included", "okay", "yes", "I'll take it",
              "hmm", "", "bye", "hello", "no thanks", "still too much", "can you do 95", "I'll take the 109.99"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(UTTERANCES), min_size=1, max_size=14), st.booleans())
def test_floors_are_never_crossed(utterances: list[str], answer_tools: bool) -> None:
    responder = ScenarioResponder()
    persona = get_persona(SARAH)
    items: list[dict[str, Any]] = []
    offered: list[float] = []
    outcomes = 0

    def turn() -> None:
        nonlocal outcomes, persona
        p = persona
        reply = responder.plan(ResponseRequest(instructions=p.instructions, items=list(items), tools=p.tools))
        items.append(assistant(reply.text))
        for price in ladder_prices(reply.text):
            if price not in offered:
                assert price >= FLOOR[p.name], f"{p.name} offered {price}"
                assert not offered or price < min(offered), "offers only go down"
                offered.append(price)
        for i, c in enumerate(reply.calls):
            call_id = f"c{len(items)}_{i}"
            items.append({"type": "function_call", "name": c.name, "arguments": c.arguments, "call_id": call_id})
            if c.name == "record_outcome":
                outcomes += 1
                assert json.loads(c.arguments)["new_monthly_price"] in offered
            if c.name == "transfer_to_supervisor":
                persona = get_persona(MARCO)
            if answer_tools:
                items.append({"type": "function_call_output", "call_id": call_id, "output": "ok"})
                turn()

    turn()
    for u in utterances:
        items.append(user(u))
        turn()
    assert outcomes <= 1
    assert all(price >= 69.99 for price in offered)


# -- the generic fallback -------------------------------------------------------------------------


async def test_unknown_instructions_get_the_generic_assistant() -> None:
    responder = ScenarioResponder()
    request = ResponseRequest(instructions="You are a helpful assistant.", items=[])
    text = "".join(c.text for c in await collect(responder, request) if isinstance(c, TextDelta))
    assert "offline" in text and "Sarah" not in text
    request = ResponseRequest(instructions="You are a helpful assistant.", items=[user("what can you do?")])
    text = "".join(c.text for c in await collect(responder, request) if isinstance(c, TextDelta))
    assert "chat model" in text and "scripted" in text
    request = ResponseRequest(instructions="", items=[user("the weather is nice today")])
    chunks = await collect(responder, request)
    text = "".join(c.text for c in chunks if isinstance(c, TextDelta))
    assert "the weather is nice today" in text and len(chunks) > 3
    assert not [c for c in chunks if isinstance(c, FunctionCall)]


async def test_generic_assistant_reprompts_on_empty_transcript_and_uses_a_custom_hint() -> None:
    g = GenericResponder(hint="Set PARLEY_CHAT_URL.")
    text = g.reply(ResponseRequest(instructions="", items=[user(None)]))
    assert "catch" in text
    text = g.reply(ResponseRequest(instructions="", items=[user("help")]))
    assert "Set PARLEY_CHAT_URL." in text


# -- ChatResponder against a real OpenAI-compatible server ------------------------------------------


@pytest.fixture(scope="module")
def chat_url() -> Iterator[ChatServerURL]:
    with run_chat_server() as url:
        yield url


WEATHER_TOOL: dict[str, Any] = {"type": "function", "name": "get_weather", "description": "Current weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


async def test_chat_streams_text(chat_url: ChatServerURL) -> None:
    responder = ChatResponder(chat_url, model="test-model")
    request = ResponseRequest(instructions="Be brief.", items=[user("hello there")], max_output_tokens=64)
    chunks = await collect(responder, request)
    await responder.aclose()
    assert all(isinstance(c, TextDelta) for c in chunks) and len(chunks) > 2
    assert "".join(c.text for c in chunks if isinstance(c, TextDelta)) == "You said: hello there"
    body = chat_url.requests[-1]
    assert body["model"] == "test-model" and body["stream"] is True and body["max_tokens"] == 64
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]
    assert "tools" not in body


async def test_chat_maps_items_to_messages(chat_url: ChatServerURL) -> None:
    items = [
        user("typed hello", typed=True),
        assistant("Hi! How can I help?"),
        user(None),  # transcription failed
        assistant("Sorry, could you repeat that?", audio=False),
        user("weather in Paris please"),
        {"type": "function_call", "name": "get_weather", "arguments": '{"city": "Paris"}', "call_id": "call_w1"},
        {"type": "function_call_output", "call_id": "call_w1", "output": '{"temp_c": 21}'},
    ]
    async with ChatResponder(chat_url, model="m") as responder:
        chunks = await collect(responder, ResponseRequest(instructions="Sys.", items=items, tools=[WEATHER_TOOL]))
    text = "".join(c.text for c in chunks if isinstance(c, TextDelta))
    assert text == 'The get_weather result is: {"temp_c": 21}'
    assert chat_url.requests[-1]["messages"] == [
        {"role": "system", "content": "Sys."},
        {"role": "user", "content": "typed hello"},
        {"role": "assistant", "content": "Hi! How can I help?"},
        {"role": "user", "content": "(inaudible)"},
        {"role": "assistant", "content": "Sorry, could you repeat that?"},
        {"role": "user", "content": "weather in Paris please"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_w1", "content": '{"temp_c": 21}'},
    ]


def test_chat_messages_group_calls_and_drop_unanswered_ones() -> None:
    items = [user("two things"),
             assistant("Let me check both."),
             {"type": "function_call", "name": "a", "arguments": "{}", "call_id": "ca"},
             {"type": "function_call", "name": "b", "arguments": "", "call_id": "cb"},
             {"type": "function_call_output", "call_id": "ca", "output": "A"},
             {"type": "function_call_output", "call_id": "cb", "output": "B"},
             {"type": "function_call", "name": "c", "arguments": "{}", "call_id": "never_answered"},
             {"type": "function_call_output", "call_id": "orphan", "output": "X"}]
    msgs = chat_messages(None, items)
    assert msgs[1]["content"] == "Let me check both."
    assert [c["id"] for c in msgs[1]["tool_calls"]] == ["ca", "cb"]
    assert msgs[1]["tool_calls"][1]["function"]["arguments"] == "{}"
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "tool", "user"]
    assert "X" in msgs[-1]["content"]


async def test_chat_streams_a_tool_call(chat_url: ChatServerURL) -> None:
    async with ChatResponder(chat_url, model="m") as responder:
        chunks = await collect(responder, ResponseRequest(
            instructions="", items=[user("What's the weather in Paris?")], tools=[WEATHER_TOOL]))
    calls = [c for c in chunks if isinstance(c, FunctionCall)]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Paris"}
    assert calls[0].call_id and calls[0].call_id.startswith("call_")
    body = chat_url.requests[-1]
    assert body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather for a city", "parameters": WEATHER_TOOL["parameters"]}}]
    assert body["tool_choice"] == "auto"


async def test_chat_tool_choice_mapping(chat_url: ChatServerURL) -> None:
    async with ChatResponder(chat_url, model="m") as responder:
        chunks = await collect(responder, ResponseRequest(
            instructions="", items=[user("weather in Rome")], tools=[WEATHER_TOOL], tool_choice="none"))
        assert chat_url.requests[-1]["tool_choice"] == "none"
        assert not [c for c in chunks if isinstance(c, FunctionCall)]
        chunks = await collect(responder, ResponseRequest(
            instructions="", items=[user("tell me something")], tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "name": "get_weather"}))
        assert chat_url.requests[-1]["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
        assert [c.name for c in chunks if isinstance(c, FunctionCall)] == ["get_weather"]


async def test_chat_sends_the_api_key(chat_url: ChatServerURL) -> None:
    async with ChatResponder(chat_url, api_key="sk-test-123", model="m") as responder:
        await collect(responder, ResponseRequest(instructions="", items=[user("hi")]))
    assert chat_url.headers[-1]["authorization"] == "Bearer sk-test-123"


async def test_chat_accepts_a_non_streaming_answer(chat_url: ChatServerURL) -> None:
    async with ChatResponder(chat_url, model="no-stream") as responder:
        chunks = await collect(responder, ResponseRequest(instructions="", items=[user("hi")]))
    assert "".join(c.text for c in chunks if isinstance(c, TextDelta)) == "You said: hi"


@pytest.mark.parametrize(("model", "expected"), [("error-500", "HTTP 500.*simulated failure"),
                                                 ("error-401", "HTTP 401"),
                                                 ("broken-stream", "simulated stream failure")])
async def test_chat_errors_raise_responder_error(chat_url: ChatServerURL, model: str, expected: str) -> None:
    async with ChatResponder(chat_url, model=model) as responder:
        with pytest.raises(ResponderError, match=expected):
            await collect(responder, ResponseRequest(instructions="", items=[user("hi")]))


async def test_chat_connection_refused_raises_responder_error() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    async with ChatResponder(f"http://127.0.0.1:{port}/v1", model="m", timeout=2) as responder:
        with pytest.raises(ResponderError, match=f"127.0.0.1:{port}"):
            await collect(responder, ResponseRequest(instructions="", items=[user("hi")]))


async def test_chat_timeout_raises_responder_error(chat_url: ChatServerURL) -> None:
    async with ChatResponder(chat_url, model="slow-2", timeout=0.3) as responder:
        with pytest.raises(ResponderError, match="timed out"):
            await collect(responder, ResponseRequest(instructions="", items=[user("hi")]))


async def test_chat_cancellation_is_not_an_error(chat_url: ChatServerURL) -> None:
    async with ChatResponder(chat_url, model="slow-3", timeout=10) as responder:
        task = asyncio.create_task(collect(responder, ResponseRequest(instructions="", items=[user("hi")])))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_chat_server_works_with_the_openai_sdk(chat_url: ChatServerURL) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=chat_url, api_key="test")
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "ping"}])
    assert reply.choices[0].message.content == "You said: ping"
    stream: Any = client.chat.completions.create(
        model="m", stream=True, messages=[{"role": "user", "content": "weather in Oslo"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_TOOL["parameters"]}}])
    args = "".join(c.choices[0].delta.tool_calls[0].function.arguments or ""
                   for c in stream if c.choices and c.choices[0].delta.tool_calls)
    assert json.loads(args) == {"city": "Oslo"}


def test_generic_echo_keeps_one_full_stop() -> None:
    request = ResponseRequest(instructions="You are a helpful assistant.", items=[
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "My package arrives on Thursday."}]}])
    reply = GenericResponder().reply(request)
    assert reply.startswith("I heard: My package arrives on Thursday. I'm") and ".." not in reply
