"""Word error rate with a text normalizer suited to spoken-dialogue transcripts.

Speech recognizers write the same words in different ways ("$79", "79 dollars", "seventy-nine
dollars"; "don't" / "do not"). Scoring STT output against a script must not count those as
errors, so both sides are normalized to one canonical form first:

- lowercase, curly quotes folded, punctuation dropped (a decimal point inside a number stays);
- contractions expanded ("i'm" -> "i am", "can't" -> "cannot", "n't" -> " not");
- numbers become digits ("seventy nine" -> "79", "a hundred and five" -> "105", "1,200" -> "1200");
- money loses its unit: "$79", "79 dollars", "79 bucks" -> "79"; "per month" and "/mo" -> "a month";
- "%" -> "percent", "okay"/"ok" -> "okay", "all right" -> "alright".

No jiwer dependency: the edit distance is a few lines of dynamic programming.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

_CONTRACTIONS: Final[dict[str, str]] = {
    "can't": "cannot", "won't": "will not", "shan't": "shall not", "ain't": "is not",
    "i'm": "i am", "let's": "let us", "it's": "it is", "that's": "that is", "what's": "what is",
    "there's": "there is", "here's": "here is", "he's": "he is", "she's": "she is",
    "who's": "who is", "where's": "where is", "how's": "how is", "y'all": "you all",
    "gonna": "going to", "wanna": "want to", "gotta": "got to",
}  # fmt: skip
_SUFFIXES: Final = (("n't", " not"), ("'re", " are"), ("'ve", " have"), ("'ll", " will"), ("'d", " would"))

_UNITS: Final[dict[str, int]] = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS: Final[dict[str, int]] = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip
_SCALES: Final[dict[str, int]] = {"thousand": 1000, "million": 1_000_000, "billion": 1_000_000_000}
_MONEY_UNITS: Final = frozenset({"dollar", "dollars", "buck", "bucks", "usd"})
_PERIODS: Final = frozenset({"month", "year", "week", "day", "hour"})


def _is_number_word(w: str) -> bool:
    return w in _UNITS or w in _TENS or w == "hundred" or w in _SCALES


def _words_to_digits(words: list[str]) -> list[str]:
    """Replace runs of number words with digits; a run that cannot continue a number (like
    "seventy nine ninety nine") is split into separate numbers rather than summed."""
    out: list[str] = []
    i = 0
    n = len(words)
    while i < n:
        w = words[i]
        # "a hundred", "a thousand"
        if w == "a" and i + 1 < n and (words[i + 1] == "hundred" or words[i + 1] in _SCALES):
            words[i] = "one"
            w = "one"
        if not _is_number_word(w):
            out.append(w)
            i += 1
            continue
        total, current, started = 0, 0, False
        while i < n:
            w = words[i]
            if w in _UNITS:
                v = _UNITS[w]
                low = current % 100  # what the number ends with so far
                # a digit may follow nothing, "hundred"/"thousand" or a tens word; a teen only
                # the first two. Anything else starts a new number ("nineteen eighty four").
                fits = low == 0 or (v < 10 and low >= 20 and low % 10 == 0)
                if started and not fits:
                    break
                current += v
            elif w in _TENS:
                if started and current % 100 != 0:
                    break
                current += _TENS[w]
            elif w == "hundred":
                if not started or current % 100 == 0 or current >= 100:
                    break
                current *= 100
            elif w in _SCALES:
                if not started:
                    break
                total += max(current, 1) * _SCALES[w]
                current = 0
            elif w == "and" and started and i + 1 < n and (words[i + 1] in _UNITS or words[i + 1] in _TENS):
                # "one hundred and five": only inside a number after hundred/thousand
                if current % 100 != 0 and current != 0:
                    break
                i += 1
                continue
            else:
                break
            started = True
            i += 1
        if started:
            out.append(str(total + current))
        else:  # a scale word or "hundred" on its own
            out.append(words[i])
            i += 1
    return out


def normalize(text: str) -> str:
    """Canonical lowercase word string for WER scoring (see module docstring)."""
    t = text.lower().replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)  # 1,200 -> 1200
    t = re.sub(r"\$\s*(\d+(?:\.\d+)?)", r"\1", t)  # $79 -> 79 (the unit is dropped below anyway)
    t = t.replace("%", " percent ")
    t = re.sub(r"\s*/\s*(mo|month)\b", " a month", t)
    t = re.sub(r"\s*/\s*(yr|year)\b", " a year", t)
    t = t.replace("-", " ")
    words: list[str] = []
    for w in re.findall(r"[a-z0-9']+(?:\.\d+)?", t):
        w = w.strip("'")
        if not w:
            continue
        if w in _CONTRACTIONS:
            words.extend(_CONTRACTIONS[w].split())
            continue
        for suffix, repl in _SUFFIXES:
            if w.endswith(suffix) and len(w) > len(suffix):
                w = w[: -len(suffix)] + repl
                break
        words.extend(w.replace("'", "").split())
    words = _words_to_digits(words)
    out: list[str] = []
    for i, w in enumerate(words):
        prev = out[-1] if out else ""
        if w in _MONEY_UNITS and prev[:1].isdigit():
            continue  # "79 dollars" -> "79"
        if w == "per" and i + 1 < len(words) and words[i + 1] in _PERIODS:
            w = "a"  # "per month" -> "a month"
        elif w == "ok":
            w = "okay"
        elif w == "right" and prev == "all":
            out[-1] = "alright"
            continue
        elif w == "not" and prev == "can":
            out[-1] = "cannot"
            continue
        out.append(w)
    return " ".join(out)


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (substitution = insertion = deletion = 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(reference: str, hypothesis: str, *, normalize_text: bool = True) -> float:
    """Word error rate: word edits / reference words (normalized first unless told not to).

    An empty reference yields the number of hypothesis words (0.0 when both are empty).
    """
    if normalize_text:
        reference, hypothesis = normalize(reference), normalize(hypothesis)
    ref, hyp = reference.split(), hypothesis.split()
    return edit_distance(ref, hyp) / max(1, len(ref))
