"""Scenario files: personas, prompts, tools, persona selection, validation, text normalisation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from openai.types.realtime import RealtimeSessionCreateRequest

from parley.apps.scenarios import (
    ScenarioError,
    UnknownPersonaError,
    format_money,
    get_persona,
    get_scenario,
    list_personas,
    list_scenarios,
    load_scenario,
    normalize_text,
    persona_for_instructions,
)

GA_VOICES = {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
NEGOTIATOR_YAML = Path(get_scenario("negotiator").path or "")


def test_negotiator_personas_are_listed() -> None:
    ids = [p.id for p in list_personas()]
    assert "negotiator/sarah" in ids and "negotiator/marco" in ids
    assert "negotiator" in [s.id for s in list_scenarios()]
    sarah, marco = get_persona("negotiator/sarah"), get_persona("negotiator/marco")
    assert (sarah.name, sarah.scenario_id, sarah.key) == ("Sarah", "negotiator", "sarah")
    assert marco.name == "Marco" and "supervisor" in marco.role.lower()
    assert sarah.voice in GA_VOICES and marco.voice in GA_VOICES and sarah.voice != marco.voice
    assert sarah.handoff_to == marco.id and sarah.handoff_persona is marco
    assert marco.handoff_to is None


def test_unknown_persona_is_a_clear_key_error() -> None:
    with pytest.raises(KeyError) as info:
        get_persona("negotiator/bob")
    assert isinstance(info.value, UnknownPersonaError)
    message = str(info.value)
    assert "negotiator/bob" in message and "negotiator/sarah" in message
    with pytest.raises(UnknownPersonaError):
        get_scenario("nope")


@pytest.mark.parametrize("persona_id", ["negotiator/sarah", "negotiator/marco"])
def test_session_config_is_a_valid_ga_session(persona_id: str) -> None:
    persona = get_persona(persona_id)
    config = persona.session_config()
    assert config["type"] == "realtime"
    assert config["instructions"] == persona.instructions
    assert config["audio"] == {"output": {"voice": persona.voice}}
    parsed = RealtimeSessionCreateRequest.model_validate(config)
    assert parsed.audio is not None and parsed.audio.output is not None
    assert parsed.audio.output.voice == persona.voice
    names = [t["name"] for t in config["tools"]]
    assert "record_outcome" in names
    outcome = next(t for t in config["tools"] if t["name"] == "record_outcome")
    props = outcome["parameters"]["properties"]
    assert {k: v["type"] for k, v in props.items()} == {
        "new_monthly_price": "number", "old_monthly_price": "number", "plan": "string",
        "term_months": "integer", "accepted_by": "string"}
    assert set(outcome["parameters"]["required"]) == set(props)
    # a copy: callers may edit it
    config["tools"].clear()
    assert persona.session_config()["tools"]


def test_sarah_can_transfer_and_marco_cannot() -> None:
    sarah_tools = [t["name"] for t in get_persona("negotiator/sarah").tools]
    marco_tools = [t["name"] for t in get_persona("negotiator/marco").tools]
    assert "transfer_to_supervisor" in sarah_tools
    assert "transfer_to_supervisor" not in marco_tools


def test_instructions_are_a_natural_prompt_with_the_facts() -> None:
    sarah = get_persona("negotiator/sarah").instructions
    marco = get_persona("negotiator/marco").instructions
    for text in (sarah, marco):
        assert not re.search(r"\[|\{|<|parley", text, re.I), "no machine tags in an OpenAI-bound prompt"
        for fact in ("Northwind Cable", "Internet 500 + TV Basic", "$129.99", "6 years", "Skyline Fiber", "$59.99",
                     "record_outcome"):
            assert fact in text
        assert "short" in text.lower()
    for price in ("$109.99", "$94.99", "$89.99"):
        assert price in sarah
    # Sarah doesn't know the supervisor's prices; Marco knows Sarah's ladder and his own floor.
    assert "$79.99" not in sarah and "$69.99" not in sarah
    for price in ("$89.99", "$79.99", "$69.99"):
        assert price in marco
    assert "transfer_to_supervisor" in sarah


def test_ladder_and_floors() -> None:
    sc = get_scenario("negotiator")
    assert [o.price for o in sc.offers] == [109.99, 94.99, 89.99, 79.99, 69.99]
    assert [o.term_months for o in sc.offers] == [12, 12, 12, 24, 24]
    assert get_persona("negotiator/sarah").floor == 89.99
    assert get_persona("negotiator/marco").floor == 69.99
    assert all(o.price > sc.account["competitor"]["price"] for o in sc.offers)


def test_card_data_for_the_ui() -> None:
    card = get_persona("negotiator/sarah").card()
    assert card["provider"] == "Northwind Cable"
    assert card["plan"] == "Internet 500 + TV Basic"
    assert card["monthly_bill"] == 129.99
    assert card["years_customer"] == 6
    assert card["competitor"]["name"] == "Skyline Fiber" and card["competitor"]["price"] == 59.99
    assert card["persona"]["name"] == "Sarah"
    assert [p["name"] for p in card["personas"]] == ["Sarah", "Marco"]
    json.dumps(card)  # serialisable as is


def test_persona_for_instructions_exact_and_whitespace() -> None:
    sarah, marco = get_persona("negotiator/sarah"), get_persona("negotiator/marco")
    assert persona_for_instructions(sarah.instructions) is sarah
    assert persona_for_instructions(marco.instructions) is marco  # mentions Sarah, but is Marco's
    squashed = " ".join(sarah.instructions.split())
    assert persona_for_instructions(squashed) is sarah
    assert persona_for_instructions("\n\n" + marco.instructions.replace("\n", "\r\n") + "  ") is marco


def test_persona_for_instructions_marker_sentence() -> None:
    sarah, marco = get_persona("negotiator/sarah"), get_persona("negotiator/marco")
    # an app may add context around the prompt, or write its own around the marker sentence
    assert persona_for_instructions("The customer's name is Dana.\n\n" + sarah.instructions) is sarah
    assert persona_for_instructions(marco.instructions + "\nThe customer sounds annoyed.") is marco
    assert persona_for_instructions("you are SARAH, a customer retention specialist at northwind cable!  Be nice.") is sarah
    assert persona_for_instructions("You are Marco, a retention supervisor at Northwind Cable. Take over.") is marco


@pytest.mark.parametrize("text", [None, "", "   ", "You are a helpful assistant.",
                                  "You are Sarah.", "Talk about Northwind Cable like Marco would."])
def test_persona_for_instructions_none(text: str | None) -> None:
    assert persona_for_instructions(text) is None


@pytest.mark.parametrize(("raw", "normalized"), [
    ("I'll CANCEL!!", "ill cancel"),
    ("That’s too expensive.", "thats too expensive"),
    ("fifty dollars", "50 dollars"),
    ("fifty nine ninety nine", "59.99"),
    ("a hundred and nine ninety nine", "109.99"),
    ("ninety four point nine nine", "94.99"),
    ("six years", "6 years"),
    ("twenty four months", "24 months"),
    ("$59.99/month for 500Mbps", "$59.99 month for 500 mbps"),
    ("Can you do $ 80?", "can you do $80"),
    ("one hundred twenty nine", "129"),
])
def test_normalize_text(raw: str, normalized: str) -> None:
    assert normalize_text(raw) == normalized


def test_format_money() -> None:
    assert format_money(129.99) == "$129.99"
    assert format_money(20.0) == "$20"
    assert format_money(129.99 - 94.99) == "$35"


# -- validation of scenario files ------------------------------------------------------------------

def _write_variant(tmp_path: Path, edit: object) -> Path:
    data = yaml.safe_load(NEGOTIATOR_YAML.read_text())
    assert callable(edit)
    edit(data)
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_shipped_file_loads(tmp_path: Path) -> None:
    sc = load_scenario(_write_variant(tmp_path, lambda d: None))
    assert [p.key for p in sc.personas] == ["sarah", "marco"]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["personas"]["sarah"].update(floor=85.0), "floor"),
    (lambda d: d["personas"]["sarah"].update(marker="You are Sarah, the best agent."), "marker"),
    (lambda d: d["personas"]["marco"]["lines"].update(accept=["Great, done at {price}."]), "all set"),
    (lambda d: d["personas"]["marco"]["lines"].update(closing=["Thanks {nobody}."]), "placeholder"),
    (lambda d: d["personas"]["marco"]["lines"].pop("exhausted"), "missing lines"),
    (lambda d: d["offers"].reverse(), "ordered"),
    (lambda d: d["personas"]["sarah"].update(tools=["record_outcome", "fly_to_moon"]), "unknown tools"),
    (lambda d: d["policy"]["intents"][0]["patterns"].append("(unclosed"), "bad pattern"),
])
def test_invalid_scenarios_are_rejected(tmp_path: Path, edit: object, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        load_scenario(_write_variant(tmp_path, edit))
