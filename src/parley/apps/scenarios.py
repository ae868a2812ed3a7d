"""Practice scenarios: personas, their prompts and tools, and the scripted policy of the local engine.

Each scenario is a YAML file, ``parley/apps/<scenario>/scenario.yaml``. A persona is addressed as
``"<scenario>/<persona>"`` (e.g. ``"negotiator/sarah"``). One persona serves both upstreams:

* OpenAI (or any real model): ``persona.session_config()`` is the GA session config to send
  (instructions, voice, tools); the server adds transcription and turn detection.
* Parley's local engine: the engine receives the same instructions in the session, finds the
  persona with `persona_for_instructions`, and the scripted responder
  (`parley.apps.negotiator.responder`) follows the scenario's ``policy`` and offer ladder.

Persona selection from instructions never needs a machine tag in the prompt: each persona names a
``marker``, an ordinary sentence of its instructions (for Sarah: "You are Sarah, a customer
retention specialist at Northwind Cable."). Instructions select a persona when they are the
persona's instructions (whitespace-insensitive) or when they contain its marker sentence
(ignoring case, punctuation and whitespace, as `normalize_text` does), so an app may append context to the prompt.
"""

from __future__ import annotations

import copy
import functools
import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "Intent",
    "OfferStep",
    "Persona",
    "Policy",
    "Scenario",
    "ScenarioError",
    "UnknownPersonaError",
    "format_money",
    "get_persona",
    "get_scenario",
    "list_personas",
    "list_scenarios",
    "load_scenario",
    "normalize_text",
    "persona_for_instructions",
]

# Line kinds every persona must define (see scenario.yaml); `handover`, `handover_waiting` and
# `no_handover` only for personas that can hand over, `supervisor_self` only for those that cannot.
REQUIRED_LINES = (
    "intro", "smalltalk", "smalltalk_offer", "reprompt", "reprompt_offer", "inaudible", "exhausted",
    "exhausted_cancel", "confirm", "accept", "already_accepted", "closing", "goodbye", "goodbye_offer",
    "already_lower", "details_no_offer",
)
ACTIONS = ("accept", "handover", "offer", "details", "goodbye", "smalltalk")


class ScenarioError(ValueError):
    """A scenario file is missing something or contradicts itself."""


class UnknownPersonaError(KeyError):
    """No persona has this id."""

    def __str__(self) -> str:  # KeyError would print the repr of its argument
        return str(self.args[0]) if self.args else "unknown persona"


# -- text helpers shared by the loader and the scripted responder --------------------------------

_UNITS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
          "eight": 8, "nine": 9}
_TEENS = {"ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
          "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}
_NUMBER_WORDS = {**_UNITS, **_TEENS, **_TENS, "hundred": 100}


def _parse_number(tokens: list[str], i: int) -> tuple[int, int, str] | None:
    """Parse number words at tokens[i:]; returns (value, next index, kind of the first word)."""
    n = len(tokens)
    value = 0
    last: str | None = None
    j = i
    first_kind = ""
    if tokens[j] == "a" and j + 1 < n and tokens[j + 1] == "hundred":
        value, last, first_kind = 1, "unit", "unit"
        j += 1
    while j < n:
        t = tokens[j]
        if t in _UNITS and last in (None, "tens", "hundred"):
            value += _UNITS[t]
            kind = "unit"
        elif t in _TEENS and last in (None, "hundred"):
            value += _TEENS[t]
            kind = "teen"
        elif t in _TENS and last in (None, "hundred"):
            value += _TENS[t]
            kind = "tens"
        elif t == "hundred" and last in (None, "unit", "teen") and value < 100:
            value = max(value, 1) * 100
            kind = "hundred"
        elif t == "and" and last == "hundred" and j + 1 < n and tokens[j + 1] in _NUMBER_WORDS:
            j += 1
            continue
        else:
            break
        first_kind = first_kind or kind
        last = kind
        j += 1
    if last is None:
        return None
    return value, j, first_kind


def _words_to_digits(tokens: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    n = len(tokens)
    while i < n:
        parsed = _parse_number(tokens, i) if tokens[i] in _NUMBER_WORDS or tokens[i] == "a" else None
        if parsed is None:
            out.append(tokens[i])
            i += 1
            continue
        value, j, _ = parsed
        number: float = value
        if j + 1 < n and tokens[j] == "point" and tokens[j + 1] in _NUMBER_WORDS:
            # "fifty nine point nine nine" / "fifty nine point ninety nine"
            digits = ""
            k = j + 1
            while k < n and tokens[k] in _UNITS:
                digits += str(_UNITS[tokens[k]])
                k += 1
            if not digits:
                frac = _parse_number(tokens, k)
                if frac is not None and frac[0] < 100:
                    digits, k = f"{frac[0]:02d}", frac[1]
            if digits:
                number = float(f"{value}.{digits}")
                j = k
        elif value >= 10 and j < n:
            # "fifty nine ninety nine" -> 59.99, "a hundred and nine ninety nine" -> 109.99
            cents = _parse_number(tokens, j)
            if cents is not None and 10 <= cents[0] <= 99 and cents[2] in ("tens", "teen"):
                number = value + cents[0] / 100
                j = cents[1]
        out.append(f"{number:.2f}" if number != int(number) else str(int(number)))
        i = j
    return out


def normalize_text(text: str) -> str:
    """Words as the scripted policy matches them (robust to how speech-to-text writes them).

    Lower case, apostrophes removed ("I'll" -> "ill"), other punctuation as spaces (dots kept
    inside numbers, "$" kept), number words as digits ("fifty nine ninety nine" -> "59.99",
    "six years" -> "6 years"), single spaces.
    """
    s = text.casefold().replace("\u2019", "'").replace("\u2018", "'").replace("'", "")
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)
    s = re.sub(r"[^a-z0-9$.%]+", " ", s)
    s = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", s)
    s = re.sub(r"\$\s+(?=\d)", "$", s)
    s = re.sub(r"(?<=[a-z])(?=\d)|(?<=\d)(?=[a-z])", " ", s)  # "500mbps" -> "500 mbps"
    return " ".join(_words_to_digits(s.split()))


def _norm_ws(text: str) -> str:
    return " ".join(text.split())


def format_money(amount: float) -> str:
    """$129.99, $20 (whole dollars without cents)."""
    cents = round(amount * 100)
    if cents % 100 == 0:
        return f"${cents // 100}"
    return f"${cents // 100}.{cents % 100:02d}"


# -- the model -------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class OfferStep:
    """One rung of the offer ladder."""

    id: str
    price: float
    term_months: int
    lines: tuple[str, ...]
    includes: str


@dataclass(frozen=True, eq=False)
class Intent:
    name: str
    action: str
    patterns: tuple[re.Pattern[str], ...]
    leads: tuple[str, ...] = ()
    blocks_accept: bool = False
    requires_offer: bool = False  # only means something when an offer is on the table ("no")
    line: str | None = None  # the persona line kind it answers with (smalltalk/goodbye actions)

    def matches(self, normalized: str) -> bool:
        return any(p.search(normalized) for p in self.patterns)


@dataclass(frozen=True, eq=False)
class Policy:
    """The scripted policy of the local engine (see the `policy` section of a scenario file)."""

    intents: tuple[Intent, ...]
    accept_blockers: tuple[re.Pattern[str], ...]
    weak_accept: re.Pattern[str]
    markers: Mapping[str, str]
    ask_range: tuple[float, float]

    def intent(self, name: str) -> Intent | None:
        return next((i for i in self.intents if i.name == name), None)


@dataclass(frozen=True, eq=False)
class Scenario:
    id: str
    title: str
    description: str
    account: Mapping[str, Any]
    offers: tuple[OfferStep, ...]  # highest price first
    policy: Policy
    tools: Mapping[str, dict[str, Any]]
    path: Path | None = None
    personas: list[Persona] = field(default_factory=list)

    @property
    def monthly_bill(self) -> float:
        return float(self.account["monthly_bill"])

    def card(self) -> dict[str, Any]:
        """What the app shows the user before and during the call."""
        acct = self.account
        comp = acct.get("competitor") or {}
        return {
            "scenario": self.id,
            "title": self.title,
            "description": self.description,
            "provider": acct.get("provider"),
            "plan": acct.get("plan"),
            "plan_details": acct.get("plan_details"),
            "monthly_bill": acct.get("monthly_bill"),
            "years_customer": acct.get("years_customer"),
            "contract": acct.get("contract"),
            "competitor": {"name": comp.get("name"), "price": comp.get("price"), "offer": comp.get("offer")},
            "personas": [{"id": p.id, "name": p.name, "role": p.role} for p in self.personas],
        }

    def persona(self, key: str) -> Persona:
        for p in self.personas:
            if p.key == key or p.id == key:
                return p
        raise UnknownPersonaError(f"scenario {self.id!r} has no persona {key!r} "
                                  f"(known: {', '.join(p.key for p in self.personas)})")

    def template_values(self) -> dict[str, str]:
        """Account facts for the placeholders of policy lines."""
        acct = self.account
        comp = acct.get("competitor") or {}
        return {
            "provider": str(acct.get("provider", "")),
            "plan": str(acct.get("plan", "")),
            "bill": format_money(float(acct.get("monthly_bill", 0))),
            "years": str(acct.get("years_customer", "")),
            "competitor": str(comp.get("name", "")),
            "competitor_price": format_money(float(comp.get("price", 0))),
            "competitor_offer": str(comp.get("offer", "")),
        }


@dataclass(frozen=True, eq=False)
class Persona:
    id: str  # "negotiator/sarah"
    scenario_id: str
    key: str  # "sarah"
    name: str
    role: str
    voice: str
    instructions: str
    greeting: str
    tools: list[dict[str, Any]]
    marker: str
    scenario: Scenario
    floor: float | None = None  # lowest price this persona may offer
    handoff_tool: str | None = None
    handoff_to: str | None = None  # persona id
    lines: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def session_config(self) -> dict[str, Any]:
        """The GA session config for this persona (the server adds transcription and VAD)."""
        return {
            "type": "realtime",
            "instructions": self.instructions,
            "audio": {"output": {"voice": self.voice}},
            "tools": copy.deepcopy(self.tools),
            "tool_choice": "auto",
        }

    def card(self) -> dict[str, Any]:
        """The scenario card plus who is on the line."""
        return {**self.scenario.card(), "persona": {"id": self.id, "name": self.name, "role": self.role,
                                                   "voice": self.voice}}

    @property
    def handoff_persona(self) -> Persona | None:
        return get_persona(self.handoff_to) if self.handoff_to else None

    def __repr__(self) -> str:
        return f"Persona({self.id!r})"


# -- loading -----------------------------------------------------------------------------------------


def _str(d: Mapping[str, Any], key: str, where: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v.strip():
        raise ScenarioError(f"{where}: '{key}' must be a non-empty string")
    return v.strip()


def _lines(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(x, str) and x.strip() for x in value):
        raise ScenarioError(f"{where}: expected a non-empty list of strings")
    return tuple(" ".join(x.split()) for x in value)


def _compile(patterns: Any, where: str) -> tuple[re.Pattern[str], ...]:
    if patterns is None:
        return ()
    if not isinstance(patterns, list):
        raise ScenarioError(f"{where}: patterns must be a list")
    out = []
    for p in patterns:
        try:
            out.append(re.compile(str(p)))
        except re.error as e:
            raise ScenarioError(f"{where}: bad pattern {p!r}: {e}") from e
    return tuple(out)


_SAMPLE = {"price": "$1.99", "term": "12", "savings": "$5", "ask": "$50", "floor": "$1", "name": "X",
           "supervisor": "Y"}


def _check_template(text: str, values: Mapping[str, str], where: str) -> None:
    try:
        text.format(**values, **_SAMPLE)
    except (KeyError, IndexError, ValueError) as e:
        raise ScenarioError(f"{where}: bad placeholder in {text!r}: {e}") from e


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate one scenario file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ScenarioError(f"{path}: {e}") from e
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: not a mapping")
    sid = _str(data, "id", str(path))
    where = f"scenario {sid!r}"
    account = data.get("account") or {}
    if not isinstance(account, dict) or "monthly_bill" not in account:
        raise ScenarioError(f"{where}: 'account' with 'monthly_bill' is required")

    tools: dict[str, dict[str, Any]] = {}
    for name, tool in (data.get("tools") or {}).items():
        if not isinstance(tool, dict) or tool.get("type") != "function" or tool.get("name") != name:
            raise ScenarioError(f"{where}: tool {name!r} must be a GA function tool named {name!r}")
        tools[name] = tool

    offers = []
    for i, o in enumerate(data.get("offers") or []):
        w = f"{where} offer {i}"
        try:
            price, term = float(o["price"]), int(o["term_months"])
        except (KeyError, TypeError, ValueError) as e:
            raise ScenarioError(f"{w}: needs a numeric price and term_months") from e
        offers.append(OfferStep(id=str(o.get("id", f"offer{i}")), price=price, term_months=term,
                                lines=_lines(o.get("lines"), f"{w} lines"),
                                includes=" ".join(str(o.get("includes", "")).split())))
    if any(a.price <= b.price for a, b in itertools.pairwise(offers)):
        raise ScenarioError(f"{where}: offers must be ordered from the highest price down, without repeats")
    bill = float(account["monthly_bill"])
    comp_price = float((account.get("competitor") or {}).get("price", -1))
    for o in offers:
        if o.price >= bill or abs(o.price - comp_price) < 0.005:
            raise ScenarioError(f"{where}: offer {o.id} must be below the bill and differ from the competitor's price")

    pol = data.get("policy") or {}
    intents = []
    for i, it in enumerate(pol.get("intents") or []):
        w = f"{where} intent {i}"
        name = _str(it, "name", w)
        action = _str(it, "action", w)
        if action not in ACTIONS:
            raise ScenarioError(f"{w}: action {action!r} is not one of {', '.join(ACTIONS)}")
        leads = _lines(it["leads"], f"{w} leads") if it.get("leads") else ()
        intents.append(Intent(name=name, action=action, patterns=_compile(it.get("patterns"), w), leads=leads,
                              blocks_accept=bool(it.get("blocks_accept", False)),
                              requires_offer=bool(it.get("requires_offer", False)),
                              line=str(it["line"]) if it.get("line") else None))
    markers = {k: str(v) for k, v in (pol.get("markers") or {}).items()}
    for needed in ("accept", "confirm", "exhausted_question"):
        if needed not in markers:
            raise ScenarioError(f"{where}: policy.markers.{needed} is required")
    ask_range = pol.get("ask_range") or [0, bill]
    policy = Policy(
        intents=tuple(intents),
        accept_blockers=_compile(pol.get("accept_blockers"), f"{where} accept_blockers"),
        weak_accept=re.compile(str(pol.get("weak_accept") or r"\b(ok|okay)\b")),
        markers=markers,
        ask_range=(float(ask_range[0]), float(ask_range[1])),
    )

    scenario = Scenario(id=sid, title=str(data.get("title", sid)), description=" ".join(str(data.get("description", "")).split()),
                        account=account, offers=tuple(offers), policy=policy, tools=tools, path=path)
    values = scenario.template_values()
    for o in offers:
        for t in (*o.lines, o.includes):
            _check_template(t, values, f"{where} offer {o.id}")
    for it in intents:
        for t in it.leads:
            _check_template(t, values, f"{where} intent {it.name}")

    raw_personas = data.get("personas") or {}
    if not isinstance(raw_personas, dict) or not raw_personas:
        raise ScenarioError(f"{where}: 'personas' is required")
    prices = {round(o.price * 100) for o in offers}
    for key, p in raw_personas.items():
        w = f"{where} persona {key!r}"
        instructions = str(p.get("instructions") or "").strip()
        marker = _str(p, "marker", w)
        if not instructions or normalize_text(marker) not in normalize_text(instructions):
            raise ScenarioError(f"{w}: the instructions must contain the marker sentence {marker!r}")
        tool_names = p.get("tools") or []
        missing = [t for t in tool_names if t not in tools]
        if missing:
            raise ScenarioError(f"{w}: unknown tools {missing}")
        floor = float(p["floor"]) if p.get("floor") is not None else None
        if floor is not None and round(floor * 100) not in prices:
            raise ScenarioError(f"{w}: floor {floor} is not a price on the offer ladder")
        handoff = p.get("handoff") or {}
        handoff_tool = handoff.get("tool")
        handoff_to = f"{sid}/{handoff['to']}" if handoff.get("to") else None
        if handoff_to and handoff["to"] not in raw_personas:
            raise ScenarioError(f"{w}: hands off to unknown persona {handoff['to']!r}")
        if handoff_tool and handoff_tool not in tool_names:
            raise ScenarioError(f"{w}: handoff tool {handoff_tool!r} must be one of its tools")
        raw_lines = p.get("lines") or {}
        lines = {k: _lines(v, f"{w} lines.{k}") for k, v in raw_lines.items()}
        required = [*REQUIRED_LINES, *(("handover", "handover_waiting", "no_handover") if handoff_to
                                     else ("supervisor_self",))]
        required += [it.line for it in intents if it.line]
        absent = [k for k in required if k not in lines]
        if absent:
            raise ScenarioError(f"{w}: missing lines {absent}")
        for kind, texts in lines.items():
            for t in texts:
                _check_template(t, values, f"{w} lines.{kind}")
        for kind, marker_key in (("accept", "accept"), ("confirm", "confirm"),
                                 *((("exhausted", "exhausted_question"), ("exhausted_cancel", "exhausted_question"))
                                   if handoff_to else ())):
            m = normalize_text(markers[marker_key])
            for t in lines[kind]:
                if m not in normalize_text(t):
                    raise ScenarioError(f"{w}: every '{kind}' line must contain {markers[marker_key]!r}: {t!r}")
        voice = _str(p, "voice", w)
        scenario.personas.append(Persona(
            id=f"{sid}/{key}", scenario_id=sid, key=str(key), name=_str(p, "name", w), role=_str(p, "role", w),
            voice=voice, instructions=instructions, greeting=_str(p, "greeting", w),
            tools=[copy.deepcopy(tools[t]) for t in tool_names], marker=marker, scenario=scenario,
            floor=floor, handoff_tool=handoff_tool, handoff_to=handoff_to, lines=lines,
        ))
    return scenario


def _scenario_files() -> Iterator[Path]:
    root = resources.files("parley.apps")
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            candidate = entry / "scenario.yaml"
            if candidate.is_file():
                yield Path(str(candidate))


@functools.cache
def _registry() -> tuple[dict[str, Scenario], dict[str, Persona]]:
    scenarios: dict[str, Scenario] = {}
    personas: dict[str, Persona] = {}
    markers: dict[str, str] = {}
    for path in _scenario_files():
        sc = load_scenario(path)
        if sc.id in scenarios:
            raise ScenarioError(f"two scenarios named {sc.id!r}")
        scenarios[sc.id] = sc
        for p in sc.personas:
            m = normalize_text(p.marker)
            if m in markers:
                raise ScenarioError(f"personas {markers[m]} and {p.id} share the marker {p.marker!r}")
            markers[m] = p.id
            personas[p.id] = p
    return scenarios, personas


def list_scenarios() -> list[Scenario]:
    return list(_registry()[0].values())


def get_scenario(scenario_id: str) -> Scenario:
    try:
        return _registry()[0][scenario_id]
    except KeyError:
        raise UnknownPersonaError(f"unknown scenario {scenario_id!r} "
                                  f"(known: {', '.join(_registry()[0]) or 'none'})") from None


def list_personas() -> list[Persona]:
    return list(_registry()[1].values())


def get_persona(persona_id: str) -> Persona:
    """A persona by id, "negotiator/sarah"."""
    personas = _registry()[1]
    try:
        return personas[persona_id]
    except KeyError:
        raise UnknownPersonaError(f"unknown persona {persona_id!r} "
                                  f"(known: {', '.join(personas) or 'none'})") from None


@functools.lru_cache(maxsize=256)
def persona_for_instructions(text: str | None) -> Persona | None:
    """The persona whose instructions a session carries, or None.

    First an exact match after whitespace normalisation; otherwise the persona whose marker
    sentence occurs in the text (compared after `normalize_text`), the earliest one if
    several do. So an app may add context before or after a persona's prompt and still get the
    persona from the local engine.
    """
    if not text or not text.strip():
        return None
    personas = list_personas()
    flat = _norm_ws(text)
    for p in personas:
        if _norm_ws(p.instructions) == flat:
            return p
    norm = normalize_text(text)
    best: tuple[int, Persona] | None = None
    for p in personas:
        pos = norm.find(normalize_text(p.marker))
        if pos >= 0 and (best is None or pos < best[0]):
            best = (pos, p)
    return best[1] if best else None
