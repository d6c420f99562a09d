"""Properties of the Redactor, checked by hypothesis over generated text.

Every test runs derandomized (the same examples each run, so the suite is deterministic);
``HYPOTHESIS_PROFILE=explore`` searches afresh with many more examples.
"""

from __future__ import annotations

import string
import time
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from reqlog.processors import (
    BASIC_CREDENTIALS,
    BEARER_TOKEN,
    CARD_NUMBER,
    DEFAULT_PATTERNS,
    Redactor,
    _find_card_numbers,
    _holds_card_number,
    _ValuePattern,
)
from tests.redaction_corpus import SECRETS, leaked

# The hypothesis profiles (derandomized by default) are registered in tests/conftest.py.
R = "[REDACTED]"
# What surrounds a secret in real text, and the characters the patterns care about most.
_PUNCTUATION = " \n\t=:&?;,'\"\\/-_.@%+#[]{}()<>"
_TRICKY = string.ascii_letters + string.digits + _PUNCTUATION + "é€😀\x00\u2028"
text = st.text(alphabet=st.sampled_from(_TRICKY), max_size=120) | st.text(max_size=60)
separator = st.sampled_from([" ", "\n", ", ", "; ", " | ", "\t"])
secrets = st.sampled_from(SECRETS)


@given(before=text, secret=secrets, after=text, left=separator, right=separator)
def test_a_secret_in_arbitrary_text_is_never_written(
    before: str, secret: tuple[str, str], after: str, left: str, right: str
) -> None:
    shape, value = secret
    redactor = Redactor()
    written = redactor.redact_text(before + left + value + right + after)
    assert not leaked(value, written), shape


@given(name=st.sampled_from(["token", "password", "api_key", "client_secret", "sid"]), value=text)
def test_a_secret_parameter_of_a_query_is_never_written(name: str, value: str) -> None:
    value = value.replace("&", "").replace("#", "")
    if not value.strip() or value == R:
        return
    query = f"q=1&{name}={value}&page=2"
    assert Redactor().redact_query(query) == f"q=1&{name}={R}&page=2"


@given(value=text)
def test_redaction_is_idempotent(value: str) -> None:
    redactor = Redactor()
    once = redactor.redact_text(value)
    assert redactor.redact_text(once) == once
    query = redactor.redact_query(value)
    assert redactor.redact_query(query) == query


@given(value=text, secret=secrets)
def test_the_output_is_never_longer_than_its_censors_make_it(
    value: str, secret: tuple[str, str]
) -> None:
    # Only replacements make a text longer, by at most one censor each.
    original = value + " " + secret[1] + " " + value
    written = Redactor().redact_text(original)
    assert len(written) <= len(original) + written.count(R) * len(R)


@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["text", "query", "plain", "nested", "header"]),
            st.sampled_from(
                ["api_key=K2", "token=abc", "q=1&password=x", "a=1", "note: hi", "Bearer x"]
            )
            | text,
        ),
        max_size=12,
    )
)
def test_a_result_never_depends_on_what_was_redacted_before(steps: list[tuple[str, str]]) -> None:
    shared = Redactor()

    def event(kind: str, value: str) -> dict[str, Any]:
        key = {"text": "event", "query": "query", "plain": "note"}.get(kind)
        if key is not None:
            return {key: value}
        if kind == "nested":
            return {"payload": {"note": value}}
        return {"request_headers": {"referer": value}}

    for kind, value in steps:
        fresh = Redactor()(None, "info", event(kind, value))
        assert shared(None, "info", event(kind, value)) == fresh


@settings(max_examples=40)
@given(
    names=st.lists(st.text(alphabet="abcdefgkmnprstxyz_", min_size=3, max_size=9), min_size=1),
    repeat=st.integers(1, 300),
    secret=secrets,
    at=st.floats(0, 1),
)
def test_a_text_packed_with_names_is_cut_the_same_way_whatever_the_caches_hold(
    names: list[str], repeat: int, secret: tuple[str, str], at: float
) -> None:
    # Long texts of many names spend the findings budget: where they are cut must depend on
    # the text alone, and a secret in them is replaced or cut, never written.
    body = " ".join(f"{name}{index}=v" for index in range(repeat) for name in names)
    middle = int(len(body) * at)
    text = body[:middle] + " " + secret[1] + " " + body[middle:]
    fresh = Redactor().redact_text(text)
    warm = Redactor()
    warm.redact_text(text[middle:])
    warm.redact_text(text[: len(text) // 3])
    assert warm.redact_text(text) == fresh
    assert not leaked(secret[1], fresh), secret[0]


card_text = st.text(alphabet=st.sampled_from("0123456789 -aZ.é"), max_size=80)


@example(value="id 4111-1111 1111-1 ok")  # the shortest card number, with separators
@given(value=card_text)
def test_the_card_search_finds_what_card_number_matches(value: str) -> None:
    # Card numbers are searched in a copy of the text mapped to character classes, for speed:
    # it must find exactly the spans the documented pattern finds.
    fast = [(start, end) for start, end, _ in _find_card_numbers(value)]
    assert fast == [match.span() for match in CARD_NUMBER.finditer(value)]
    assert _holds_card_number(value) == bool(fast)  # the check that lets a text skip it


scheme_text = st.text(alphabet=st.sampled_from("BbEeAaRrSsIiCc QWx=+/_.-~%9\t\n"), max_size=60)


@given(value=scheme_text)
def test_the_lowered_search_finds_what_bearer_and_basic_match(value: str) -> None:
    for pattern in (BEARER_TOKEN, BASIC_CREDENTIALS):
        fast = [(start, end) for start, end, _ in _ValuePattern(pattern, "patterns").find(value)]
        assert fast == [match.span("secret") for match in pattern.finditer(value)]


# -- linear time -----------------------------------------------------------------------------

_PREFIXES = [
    "eyJ",
    "eyJa.",
    "bearer ",
    "Basic ",
    "4",
    "4 ",
    "4-",
    "?a=",
    "=?a",
    "a=",
    "a:",
    "pwd=",
    '"password": "',
    "://a:",
    "AKIA",
    "ghp_",
    "glpat-",
    "xoxb-",
    "sk_live_",
    "AIza",
    "-----BEGIN PRIVATE KEY-----",
    '\\"',
    "%",
]


@settings(max_examples=25)
@given(pieces=st.lists(st.sampled_from(_PREFIXES), min_size=1, max_size=4))
def test_text_built_from_pattern_prefixes_is_redacted_in_linear_time(pieces: list[str]) -> None:
    # Repeating a mix of the patterns' prefixes is what makes a backtracking engine go
    # quadratic. The cost must stay within a generous multiple of benign text of the same
    # length (the 3x claim is measured in bench/bench_redaction.py, not here).
    unit = "".join(pieces)
    hostile = (unit * (16_384 // len(unit) + 1))[:16_384]
    benign = ("The order 4711 shipped to Lyon at 14:32, status=ok; " * 400)[:16_384]
    redactor = Redactor()

    def cost(value: str) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            redactor.redact_text(value)
            redactor.redact_query(value)
            best = min(best, time.process_time() - started)
        return best

    assert cost(hostile) < 20 * cost(benign) + 0.03


class _Text(str):
    """A str subclass: the Redactor walks it like a str, whatever the key."""


_EVENT_KEYS = [
    *("event", "request_headers", "response_body", "query", "password", "authorization"),
    *("request_id", "path", "user", "n"),
]
_leaves = (
    text
    | secrets.map(lambda secret: secret[1])
    | st.integers()
    | st.none()
    | st.booleans()
    | text.map(_Text)
    | text.map(str.encode)
)
_values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.sampled_from(_EVENT_KEYS) | text, inner, max_size=3)
    ),
    max_leaves=8,
)


@given(events=st.lists(st.dictionaries(st.sampled_from(_EVENT_KEYS), _values), max_size=4))
def test_the_planned_event_is_the_walked_event(events: list[dict[str, Any]]) -> None:
    """The Redactor's plan per key tuple (which skips plain keys with flat values) does to
    an event exactly what walking it key by key does, whatever shapes it saw before."""
    planned, walking = Redactor(), Redactor()
    for event in events:
        walked = walking._walk_event(dict(event))
        for _ in range(2):  # the shape learned, then the shape known
            assert planned(None, "info", dict(event)) == walked
        # and the plan a caller applies itself (reqlog's access event with capture fields)
        applied = dict(event)
        for key, redact_value in planned.plan(event, containers=True):
            applied[key] = redact_value(applied[key])
        assert applied == walked


_short_texts = st.lists(
    text | st.sampled_from(_PREFIXES) | secrets.map(lambda secret: secret[1]), max_size=5
).map("".join)


@example(value="4111111111111111.p@", censor="://u:", extra=(), reverse=True)
@given(
    value=_short_texts,
    censor=st.sampled_from(["[REDACTED]", "eyJ", "://", "://u:", "4111111111111", "AKIA"]),
    extra=st.sampled_from([(), (r"tok[0-9]+",), (r"x",)]),
    reverse=st.booleans(),
)
def test_the_one_search_for_every_hint_never_skips_a_match(
    value: str, censor: str, extra: tuple[str, ...], reverse: bool
) -> None:
    """A short text with none of the patterns' hints skips the hinted patterns after one
    search: the result is the one checking each hint gives, with censors and patterns (the
    card number's before the others') that can bring a hint into the text mid-way."""
    patterns = DEFAULT_PATTERNS[::-1] if reverse else DEFAULT_PATTERNS
    fast = Redactor(censor=censor, patterns=patterns, extra_patterns=extra)
    slow = Redactor(censor=censor, patterns=patterns, extra_patterns=extra)
    slow._any_hint = None  # each hint checked on its own, as before the one search
    for query in (False, True):
        assert fast._search(value, query=query) == slow._search(value, query=query)
