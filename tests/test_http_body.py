"""The JSON nesting bound of `parley.http.body`, against the real nesting of any JSON value:
brackets and escapes inside strings must neither hide depth nor add to it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.http.body import json_depth_error, parse_json
from parley.http.errors import ApiError

_tricky_text = st.text(alphabet=st.sampled_from('[]{}"\\ au/\n\x00é'), max_size=12)
_values = st.recursive(st.none() | st.booleans() | st.integers() | _tricky_text,
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_tricky_text, inner, max_size=3),
                       max_leaves=40)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


@given(_values, st.integers(0, 8), st.booleans())
@settings(max_examples=500, deadline=None)
def test_the_bound_is_the_real_nesting(value: Any, limit: int, ascii: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii)
    assert (json_depth_error(text.encode("utf-8", "surrogatepass"), limit) is None) == (depth(value) <= limit), text


def _nest(levels: int, around: tuple[str, str]) -> str:
    """`[before, [before, ... 1 ..., after], after]`, `levels` deep (built as text: too deep to dump)."""
    before, after = json.dumps(around[0]), json.dumps(around[1])
    return f"[{before}," * levels + "1" + f",{after}]" * levels


@pytest.mark.parametrize("text", [
    _nest(100, ("]]]]", "[[[[")),  # strings whose brackets would cancel the depth if counted
    _nest(100, ('\\"]]', "\\")),  # escaped quotes and backslashes around them
    _nest(2_000, ("}", "{")),
])
def test_brackets_in_strings_hide_no_depth(text: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse_json(text)
    assert refused.value.code == "invalid_json" and "deeper than 64" in refused.value.message


@pytest.mark.parametrize("text", ['"\\"' + "[" * 5_000, "[" * 5_000 + "}" * 5_000, '["' + "[" * 5_000])
def test_text_that_is_not_json_fails_before_any_recursion(text: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse_json(text)
    assert refused.value.code == "invalid_json"
