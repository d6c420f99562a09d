"""Small structlog processors and access-event policies: redaction, sampling, levels, slowness."""

from __future__ import annotations

import binascii
import contextlib
import dataclasses
import functools
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import accumulate, compress, count, islice
from operator import itemgetter
from typing import Any, Protocol
from urllib.parse import unquote_plus

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = [
    "AWS_ACCESS_KEY_ID",
    "BASIC_CREDENTIALS",
    "BEARER_TOKEN",
    "CARD_NUMBER",
    "DEFAULT_KEYS",
    "DEFAULT_MAX_SCAN_CHARS",
    "DEFAULT_PATTERNS",
    "DEFAULT_QUERY_KEYS",
    "DEFAULT_TEXT_KEYS",
    "GITHUB_TOKEN",
    "GITLAB_TOKEN",
    "GOOGLE_API_KEY",
    "JWT",
    "PRIVATE_KEY",
    "SLACK_TOKEN",
    "SLACK_WEBHOOK",
    "STRIPE_KEY",
    "URL_PASSWORD",
    "AddStaticFields",
    "IsoTimeStamper",
    "Redactor",
    "Sampler",
    "SlowRequestOutput",
    "SlowRequests",
    "StatusLevels",
    "WhenPresent",
    "add_logger_name",
    "drop_cut_token",
    "luhn_valid",
    "normalize_key",
    "parse_level",
    "sample_rate_value",
    "sample_score",
]

_LEVEL_NAMES = {
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "notset": logging.NOTSET,
}


def parse_level(value: Any, option: str = "level") -> int:
    """A level name (any case) or number, as the standard library's numbers."""
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        if value in _LEVEL_NAMES.values():
            return value
    elif isinstance(value, str):
        text = value.strip().lower()
        if text in _LEVEL_NAMES:
            return _LEVEL_NAMES[text]
        if text.isdigit() and int(text) in _LEVEL_NAMES.values():
            return int(text)
    names = ", ".join(n.upper() for n in ("debug", "info", "warning", "error", "critical"))
    msg = f"{option}: expected a level name ({names}) or number, got {value!r}"
    raise ValueError(msg)


_STATUS_CLASS = re.compile(r"([1-5])xx", re.IGNORECASE)


class StatusLevels:
    """Chooses the access event's level from its status code (and whether it was slow).

    Default: info for 1xx-3xx, warning for 4xx, error for 5xx; a slow request is at least a
    warning. ``mapping`` keys are status codes (``404``) or classes (``"4xx"``); an exact code
    wins over its class. A callable ``(status_code, slow) -> level`` replaces the rule whole.
    """

    def __init__(
        self,
        mapping: Mapping[int | str, int | str] | Callable[[int, bool], int | str] | None = None,
    ) -> None:
        self._func: Callable[[int, bool], int | str] | None = None
        table: dict[int, int] = {}
        for code in range(100, 600):
            table[code] = (
                logging.ERROR if code >= 500 else logging.WARNING if code >= 400 else logging.INFO
            )
        if callable(mapping):
            self._func = mapping
        elif mapping is not None:
            if not isinstance(mapping, Mapping):
                msg = f"status_levels: expected a mapping or a callable, got {mapping!r}"
                raise ValueError(msg)
            exact: dict[int, int] = {}
            for key, level in mapping.items():
                lvl = parse_level(level, f"status_levels[{key!r}]")
                if isinstance(key, int) and not isinstance(key, bool) and 100 <= key <= 599:
                    exact[key] = lvl
                elif isinstance(key, str) and (m := _STATUS_CLASS.fullmatch(key.strip())):
                    base = int(m.group(1)) * 100
                    for code in range(base, base + 100):
                        table[code] = lvl
                else:
                    msg = (
                        "status_levels: keys are status codes (100-599) or classes like '4xx', "
                        f"got {key!r}"
                    )
                    raise ValueError(msg)
            table.update(exact)
        self._table = table

    def table(self) -> dict[int, int] | None:
        """Status code -> level, when a table decides (``None`` when a callable does): for
        callers that look the level up themselves (reqlog's access event). A code missing
        from it is an error; a slow request is at least a warning."""
        return None if self._func is not None else self._table

    def __call__(self, status_code: int, slow: bool = False) -> int:
        if self._func is not None:
            try:
                return parse_level(self._func(status_code, slow), "status_levels()")
            except Exception:  # noqa: BLE001 - a user's callable must not break the request
                pass
        level = self._table.get(status_code, logging.ERROR)
        if slow and level < logging.WARNING:
            return logging.WARNING
        return level


class SlowRequests:
    """Thresholds that make an access event slow: one default, and per route template."""

    def __init__(self, default_ms: float | None, routes: Mapping[str, float] | None) -> None:
        self.default_ms = _threshold(default_ms, "slow_request_ms")
        self.routes: dict[str, float] = {}
        if routes is not None:
            if not isinstance(routes, Mapping):
                msg = f"slow_routes: expected a mapping of route template to ms, got {routes!r}"
                raise ValueError(msg)
            for route, ms in routes.items():
                if not isinstance(route, str) or not route.startswith("/"):
                    msg = (
                        f"slow_routes: keys are route templates like '/items/{{id}}', got {route!r}"
                    )
                    raise ValueError(msg)
                value = _threshold(ms, f"slow_routes[{route!r}]")
                if value is not None:
                    self.routes[route] = value
        self.enabled = self.default_ms is not None or bool(self.routes)

    def threshold(self, route: str | None) -> float | None:
        """The threshold that applies to ``route``, or ``None`` when none does."""
        if route is not None and self.routes:
            per_route = self.routes.get(route)
            if per_route is not None:
                return per_route
        return self.default_ms


def _threshold(value: Any, option: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        msg = f"{option}: expected a positive number of milliseconds, got {value!r}"
        raise ValueError(msg)
    return float(value)


class AddStaticFields:
    """Processor: adds fixed fields (``service``) to every event that lacks them."""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.fields = dict(fields)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        for key, value in self.fields.items():
            event_dict.setdefault(key, value)
        return event_dict


# --- redaction ------------------------------------------------------------------------------
#
# Everything the Redactor does costs time linear in the text it is given, whatever the text:
#
# - The built-in value patterns run on Python's ``re``, written so that the engine cannot
#   backtrack across start positions: each starts with a literal or a character class (the
#   engine skips to candidate positions in C), a lookbehind right after its first characters
#   refuses to start inside a token (so ``eyJeyJeyJ...`` is one attempt, not one per
#   position), and every repeat is possessive or bounded (a failed attempt never rescans
#   what it read). tests/test_redaction.py drives each with adversarial inputs and
#   bench/bench_redaction.py measures them against benign text of the same length.
# - Patterns a user adds run on RE2 (the ``google-re2`` package), which runs every pattern
#   it accepts in time linear in the text searched; a pattern it refuses (look-around,
#   backreferences) is refused when the Redactor is built. ``re`` cannot promise that for an
#   arbitrary pattern, and RE2 costs about a microsecond more per call than ``re``, which is
#   why the built-in patterns, on every event's hot path, stay on ``re``.
# - Text longer than ``max_scan_chars`` is cut at a token boundary before any pattern runs,
#   and the cut is written into the value.
# - Where Python has to look at a match (a secret name's value, a card-like number to check,
#   a name never seen), it costs a microsecond where a character costs nanoseconds: the
#   names before ``=`` and ``:`` are found and classified at C level, and one value gets a
#   budget of such looks proportional to its length, past which it is cut the same way (at a
#   place that depends on the text alone).
# - ``sre`` finds a literal start about fifty times faster than a character class (measured):
#   the patterns start with literals where they can, and the ones that cannot (card numbers,
#   ``Bearer`` in any case) are searched in a copy mapped to classes or lowered.
#
# Results are remembered only where they cannot depend on where a string was found: a string
# known clean as free text is remembered as such, a string known clean as a query string
# separately, and key classifications per key.

#: Separators ignored when keys are compared, after lowercasing: ``API-Key``, ``api_key``,
#: ``apiKey``, ``api.key`` and ``api[key]`` are all ``apikey``.
_KEY_SEPARATORS = "-_. []"

#: What reqlog redacts by default (OWASP Logging Cheat Sheet: never log passwords, session
#: identifiers, access tokens, secrets, keys, payment card data, national IDs). Matching is on
#: the normalised key (lowercase, separators removed); ``*word*`` matches a key containing the
#: word, ``*word`` a key ending in it, a bare ``word`` only that key, and ``!word`` is a word
#: that names no secret although it contains one (removed before the others are applied).
DEFAULT_KEYS: frozenset[str] = frozenset(
    {
        # long, unambiguous words: anywhere in the key
        "*password*",
        "*passwd*",
        "*passphrase*",
        "*secret*",
        "*apikey*",
        "*authorization*",
        "*cookie*",
        "*privatekey*",
        "*creditcard*",
        "*cardnumber*",
        # short or common words: at the end of the key only (``token_count`` is no secret)
        "*token",
        "*pwd",
        "*jwt",
        "*csrf",
        "*xsrf",
        "*sessionid",
        "*sessid",
        "*credential",
        "*credentials",
        "*accesskey",
        "*signingkey",
        "*encryptionkey",
        "*authkey",
        "*ccnumber",
        "*cvv",
        "*cvv2",
        "*cvc",
        "*cvc2",
        "*securitycode",
        "*ssn",
        "*socialsecuritynumber",
        "*accountnumber",
        # ambiguous as part of a longer word: only the key itself
        "auth",
        "session",
        "sid",
        "pin",
        "pan",
        "iban",
        "otp",
        # words that hold one of the words above but name no secret: ``secretary_email`` and
        # ``cookie_consent`` are plain, ``secretary_password`` is still a secret
        "!secretary",
        "!secretariat",
        "!passwordless",
        "!cookieconsent",
        "!cookiepolicy",
        "!cookiebanner",
        "!cookiepreferences",
        "!authorizationendpoint",
        "!authorizationurl",
    }
)

#: Keys whose string values are free text, searched for secret-looking values (at any depth).
DEFAULT_TEXT_KEYS: frozenset[str] = frozenset(
    {
        "event",
        "message",
        "msg",
        "error",
        "error_message",
        "exception",
        "exc_text",
        "stack",
        "traceback",
        "body",
        "request_body",
        "response_body",
        # header values get the same search: a Bearer token in a custom header, a secret
        # parameter in a Referer or Location URL
        "headers",
        "request_headers",
        "response_headers",
    }
)

#: Keys holding a raw query string (``a=1&b=2``), parsed and redacted parameter by parameter.
DEFAULT_QUERY_KEYS: frozenset[str] = frozenset({"query", "query_string"})

#: How many characters of one value are searched at most; past it the value is cut.
DEFAULT_MAX_SCAN_CHARS = 65_536

#: ``Bearer <token>``, any case: the token is replaced, the word ``Bearer`` stays.
BEARER_TOKEN = re.compile(
    r"[Bb](?<![A-Za-z0-9_][Bb])[Ee][Aa][Rr][Ee][Rr]\s++(?P<secret>[A-Za-z0-9\-._~+/%]++=*+)"
)
#: HTTP Basic credentials, ``Basic <base64 of user:password>``: replaced only when the base64
#: decodes to printable text holding a colon, so ``basic usage`` is left alone.
BASIC_CREDENTIALS = re.compile(
    r"[Bb](?<![A-Za-z0-9_][Bb])[Aa][Ss][Ii][Cc]\s++(?P<secret>[A-Za-z0-9+/]{4,}+={0,2}+)"
)
#: A JSON Web Token: base64url parts joined by dots, the first a JSON object (``eyJ`` is
#: ``{"``); JWE's five parts too.
JWT = re.compile(
    r"eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]++\.[A-Za-z0-9_-]++\.[A-Za-z0-9_-]*+"
    r"(?:\.[A-Za-z0-9_-]++)*+"
)
#: An AWS access key ID (long-term ``AKIA...`` or temporary ``ASIA...``).
AWS_ACCESS_KEY_ID = re.compile(r"A(?<![A-Za-z0-9]A)[KS]IA[A-Z0-9]{16}(?![A-Za-z0-9])")
#: A GitHub token: ``ghp_``, ``gho_``, ``ghu_``, ``ghs_``, ``ghr_`` and ``github_pat_``.
GITHUB_TOKEN = re.compile(r"g(?<![A-Za-z0-9_]g)(?:h[pousr]|ithub_pat)_[A-Za-z0-9_]{30,}+")
#: A GitLab token: personal, deploy, runner, trigger, feed, OAuth... (``glpat-...``).
GITLAB_TOKEN = re.compile(
    r"g(?<![A-Za-z0-9_-]g)l(?:pat|dt|rt|ptt|ft|soat|cbt|imt|oas|agent)-[A-Za-z0-9_.-]{20,}+"
)
#: A Slack token (``xoxb-``, ``xoxp-``, ``xoxa-``...) or the secret path of a Slack webhook.
SLACK_TOKEN = re.compile(r"x(?<![A-Za-z0-9_-]x)ox[abeoprs]-[A-Za-z0-9-]{10,}+")
#: The secret path of a Slack incoming webhook (``hooks.slack.com/services/T.../B.../...``).
SLACK_WEBHOOK = re.compile(
    r"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9_/-]++)"
)
#: A Stripe secret or restricted key (``sk_live_``, ``rk_test_``...) or webhook secret.
STRIPE_KEY = re.compile(r"[rsw](?<![A-Za-z0-9_][rsw])(?:k_(?:live|test)|hsec)_[A-Za-z0-9]{16,}+")
#: A Google API key (``AIza`` and 35 more characters).
GOOGLE_API_KEY = re.compile(r"AIza(?<![A-Za-z0-9_-]AIza)[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])")
#: A PEM private key block: what lies between ``-----BEGIN ... PRIVATE KEY-----`` and the
#: ``-----END`` line is replaced, or everything after the BEGIN line when the END was cut off.
PRIVATE_KEY = re.compile(
    r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----(?P<secret>(?:[^-]++|-(?!----END))*+)"
)
#: A payment card number: 13 to 19 digits starting 2-6, optionally grouped by single spaces
#: or hyphens, not glued to letters or digits. Matches are redacted only if the Luhn check
#: passes (on the whole, or on whole groups of it, for a card followed by its CVV), so most
#: long numbers (and epoch milliseconds, which start with 1) are left alone.
CARD_NUMBER = re.compile(r"[2-6](?<![0-9A-Za-z-][2-6])(?:[ -]?[0-9]){12,18}(?![0-9A-Za-z-])")
#: The password in a URL's user information: ``postgres://app:[REDACTED]@db/orders``.
URL_PASSWORD = re.compile(r"://[^\s/?#@:]*+:(?P<secret>[^\s/?#]+)@")

DEFAULT_PATTERNS: tuple[re.Pattern[str], ...] = (
    PRIVATE_KEY,
    JWT,
    AWS_ACCESS_KEY_ID,
    GITHUB_TOKEN,
    GITLAB_TOKEN,
    SLACK_TOKEN,
    SLACK_WEBHOOK,
    STRIPE_KEY,
    GOOGLE_API_KEY,
    BEARER_TOKEN,
    BASIC_CREDENTIALS,
    URL_PASSWORD,
    CARD_NUMBER,
)

# ``name=value``, ``name: value``, ``"name": "value"``... in free text: a name (at most 64
# characters, not starting inside another name), its closing quote, the separator. The value
# is looked at only when the name is a secret key, so most candidates cost one dict lookup.
#
# It is searched in the text reversed, with ``:`` written as ``=``: the search then starts at
# a literal ``=``, which the engine finds in C, instead of trying a name at every position;
# the names come out reversed and are classified through a cache of their own.
_NAME = r"A-Za-z0-9_%+.\-\[\]"


@functools.lru_cache(maxsize=16)
def _assignment_patterns(shortest: int) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Names of at least ``shortest`` characters (no shorter one can be a secret key) with
    their separators, in reversed text: one pattern capturing the names only, one capturing
    separator and name (for ``split``, which then keeps every character)."""
    name = rf"([{_NAME}]{{{shortest},64}}+)(?![{_NAME}])"
    separator = r"=[ \t]*+(?:[\"']\\?)?"
    return re.compile(separator + name), re.compile(f"({separator}){name}")


@functools.lru_cache(maxsize=16)
def _value_patterns(censor: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The value after a secret name, in free text and in a query string.

    In free text: quoted (to its closing quote, or to the end of the line when the quote is
    never closed: a cut value is still hidden), an escaped quote of JSON inside a string, or
    a bare word (after an auth scheme such as ``Bearer``, which stays). In a query string: to
    the next ``&``. A value that starts with ``censor`` (replaced already) does not match, at
    once: read to its end again for each name that follows it, it would cost its length each
    time.
    """
    done = f"(?!{re.escape(censor)})"
    text = re.compile(
        rf"""(?:(?<=:)=)?[ \t]*+(?:
            "{done}((?:[^"\\\n]++|\\.)*+)
          | '{done}((?:[^'\\\n]++|\\.)*+)
          | \\"{done}((?:[^"\\\n]++|\\[^"\n])*+)
          | (?:(?i:bearer|basic|token|digest|negotiate|ntlm|aws4-hmac-sha256)[ \t]++)?+
            {done}([^\s"'<>&;,(){{}}\[\]=:][^\s"'<>&;,(){{}}\[\]]*+)
        )""",
        re.VERBOSE,
    )
    return text, re.compile(rf"{done}([^&]++)")


# Cutting a value: what may be the front of a secret at the cut is dropped, a token (letters,
# digits, base64 and URL punctuation) and then any digits, spaces and hyphens before it (the
# first groups of a card number).
_CUT_TOKEN = re.compile(r"[^\s\"'<>()\[\]{},;&|]*+")
_CUT_DIGITS = re.compile(r"[0-9\s-]*+")
_CUT_NOTE_ROOM = 48

_DIGIT_MARKS = bytes(1 if 48 <= c <= 57 else 0 for c in range(256))

# Card numbers are searched in a copy of the text mapped to classes (``2`` for the digits a
# card starts with, ``0`` for the others, ``a`` for ASCII letters, space and hyphen as they
# are, ``.`` for the rest, one byte per character), where the pattern starts with a literal.
# CARD_NUMBER on the text and _CARD_MAPPED on the copy match the same spans.
_CARD_CLASSES = bytearray(b"." * 256)
for _code in range(256):
    _char = chr(_code)
    if _char in "23456":
        _CARD_CLASSES[_code] = ord("2")
    elif _char.isdigit() and _char.isascii():
        _CARD_CLASSES[_code] = ord("0")
    elif _char.isascii() and _char.isalpha():
        _CARD_CLASSES[_code] = ord("a")
    elif _char in " -":
        _CARD_CLASSES[_code] = _code
_CARD_MAP = bytes(_CARD_CLASSES)
del _CARD_CLASSES, _code, _char
_CARD_MAPPED = re.compile(rb"2(?<![02a-]2)(?:[ -]?[02]){12,18}(?![02a-])")
# Bearer and Basic in an ASCII text lowered once: a literal start for the engine to find.
_BEARER_LOWER = re.compile(r"bearer(?<![a-z0-9_]bearer)\s++([a-z0-9\-._~+/%]++=*+)")
_BASIC_LOWER = re.compile(r"basic(?<![a-z0-9_]basic)\s++([a-z0-9+/]{4,}+={0,2}+)")
_LUHN_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)
_LUHN_TABLE = bytes.maketrans(b"0123456789", b"0246813579")
_RE_FLAGS = re.IGNORECASE | re.MULTILINE | re.DOTALL | re.UNICODE | re.ASCII

_PLAIN, _SECRET, _TEXT, _QUERY = 0, 1, 2, 3
_SECRETS = frozenset({_SECRET})
_SCALARS = frozenset({int, float, bool, type(None)})
_flat_types = frozenset({str, int, float, bool, type(None)}).issuperset
# Bounds on the per-Redactor caches, so that events with ever-new keys or messages cannot
# grow them without end; when full they start over.
_MAX_CACHED_KEYS = 4096
_MAX_CACHED_TEXTS = 2048
_MAX_CACHED_SHAPES = 1024
_MAX_CACHED_TEXT_LENGTH = 256


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn checksum that payment card numbers carry."""
    if not digits.isascii():
        total = sum(_LUHN_DOUBLED[int(c)] if i % 2 else int(c) for i, c in enumerate(digits[::-1]))
        return total % 10 == 0
    # Summed as bytes, at C level: every other digit (from the right) doubled by a table.
    reverse = digits[::-1].encode("ascii")
    doubled = reverse[1::2].translate(_LUHN_TABLE)
    return (sum(reverse[::2]) + sum(doubled) - 48 * len(reverse)) % 10 == 0


def normalize_key(key: str) -> str:
    """The form keys are compared in: lowercase, without ``-``, ``_``, ``.``, spaces, brackets."""
    # str.replace six times costs a quarter of one str.translate with a deletion table.
    key = key.lower()
    for separator in _KEY_SEPARATORS:
        if separator in key:
            key = key.replace(separator, "")
    return key


def drop_cut_token(text: str) -> str:
    """``text``, cut by a size cap, without what may be the front of a secret at its end.

    The last token (letters, digits, base64 and URL punctuation: half a JWT, ``passw``,
    ``token=ab``) is dropped, then any digits, spaces and hyphens before it (the first groups
    of a card number). Linear: the end is read backwards once.

    >>> drop_cut_token("card 4111 1111 1111 11")
    'card'
    """
    reverse = text[::-1]
    end = _CUT_TOKEN.match(reverse).end()  # type: ignore[union-attr]  # matches "" at worst
    end = _CUT_DIGITS.match(reverse, end).end()  # type: ignore[union-attr]
    return text[: len(text) - end]


def _card_number(text: str) -> bool:
    digits = text.replace(" ", "").replace("-", "")
    if luhn_valid(digits):
        return True
    # A card number followed or preceded by another group (``4111 1111 1111 1111 123``, its
    # CVV): any run of whole groups holding 13 to 19 digits that passes the check.
    if not 1 <= len(text) - len(digits) <= 5:
        return False
    groups = re.split(r"[ -]", text)
    for first in range(len(groups)):
        run = ""
        for group in groups[first:]:
            run += group
            if len(run) > 19:
                break
            if len(run) >= 13 and luhn_valid(run):
                return True
    return False


def _basic_credentials(token: str) -> bool:
    try:
        decoded = binascii.a2b_base64(token + "=" * (-len(token) % 4), strict_mode=True)
        text = decoded.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return ":" in text and text.isprintable()


def _digits(text: str) -> int:
    """How many ASCII digits ``text`` holds, counted at C level (digits become 1, the rest 0)."""
    return text.encode("latin-1", "ignore").translate(_DIGIT_MARKS).count(1)


# What lets a text skip a built-in pattern without running it: characters one of which every
# match holds (the gate: a short text holding none of any pattern's is done at once), literals
# one of which every match holds (a C-level ``in`` rules most strings out), or a minimum count
# of digits; and the check a match must pass to be replaced.
_BuiltIn = tuple[str, tuple[str, ...], int, Callable[[str], bool] | None]
_BUILT_IN: dict[re.Pattern[str], _BuiltIn] = {
    BEARER_TOKEN: ("bB", ("earer", "EARER"), 0, None),
    BASIC_CREDENTIALS: ("bB", ("asic", "ASIC"), 0, _basic_credentials),
    JWT: ("J", ("eyJ",), 0, None),
    AWS_ACCESS_KEY_ID: ("I", ("AKIA", "ASIA"), 0, None),
    GITHUB_TOKEN: ("_", ("gh", "github_pat_"), 0, None),
    GITLAB_TOKEN: ("-", ("gl",), 0, None),
    SLACK_TOKEN: ("-", ("xox",), 0, None),
    SLACK_WEBHOOK: ("/", ("hooks.slack.com",), 0, None),
    STRIPE_KEY: ("_", ("k_live_", "k_test_", "whsec_"), 0, None),
    GOOGLE_API_KEY: ("I", ("AIza",), 0, None),
    PRIVATE_KEY: ("Y", ("PRIVATE KEY",), 0, None),
    CARD_NUMBER: ("", (), 13, _card_number),
    URL_PASSWORD: ("@", ("://",), 0, None),
}
# Texts up to this length are checked against the gates first.
_GATED_LENGTH = 256
_BUILT_IN_SOURCES = {pattern.pattern: pattern for pattern in _BUILT_IN}


# A finder yields, in order and without overlaps, each place where Python had to look at a
# match: the span to replace, and whether to replace it (a card number failing the Luhn check:
# False). Each costs one unit of the value's findings budget.
_Finder = Callable[[str], Iterator[tuple[int, int, bool]]]


class _ValuePattern:
    """One value pattern: the cheap checks that let most strings skip it, and its finder."""

    __slots__ = ("find", "gate", "hints", "min_digits", "needs")

    def __init__(self, pattern: str | re.Pattern[str], option: str) -> None:
        if isinstance(pattern, str):
            pattern = _BUILT_IN_SOURCES.get(pattern, pattern)
        built_in = _BUILT_IN.get(pattern) if isinstance(pattern, re.Pattern) else None
        self.gate = ""  # none: the pattern is tried on every text
        self.hints: tuple[str, ...] = ()
        self.min_digits = 0
        # Whether ``find`` can find anything in a text: a cheaper call, or None.
        self.needs: Callable[[str], bool] | None = None
        self.find: _Finder
        if built_in is not None and isinstance(pattern, re.Pattern):
            self.gate, self.hints, self.min_digits, validate = built_in
            if pattern is CARD_NUMBER:
                self.find = _find_card_numbers
                self.needs = _holds_card_number
            elif pattern is BEARER_TOKEN:
                self.find = _lowered_finder(pattern, _BEARER_LOWER, validate)
            elif pattern is BASIC_CREDENTIALS:
                self.find = _lowered_finder(pattern, _BASIC_LOWER, validate)
            else:
                self.find = _regex_finder(pattern, validate)
        else:
            self.find = _re2_finder(_linear_time(pattern, option))


def _regex_finder(regex: re.Pattern[str], validate: Callable[[str], bool] | None) -> _Finder:
    group = regex.groupindex.get("secret", 0)

    def find(text: str) -> Iterator[tuple[int, int, bool]]:
        for match in regex.finditer(text):
            start, end = match.span(group)
            if start < 0:  # the group did not take part: the whole match
                start, end = match.span()
            yield start, end, start < end and (validate is None or validate(text[start:end]))

    return find


def _lowered_finder(
    regex: re.Pattern[str], lower: re.Pattern[str], validate: Callable[[str], bool] | None
) -> _Finder:
    """``Bearer`` and ``Basic``, any case: searched from a literal start in the lowered text."""
    on_text = _regex_finder(regex, validate)

    def find(text: str) -> Iterator[tuple[int, int, bool]]:
        if not text.isascii():  # lowering may move characters: search the text itself
            yield from on_text(text)
            return
        for match in lower.finditer(text.lower()):
            start, end = match.span(1)
            yield start, end, validate is None or validate(text[start:end])

    return find


def _holds_card_number(text: str) -> bool:
    """Whether _find_card_numbers() finds anything in ``text``: the same search, without the
    generator and the replacing around it (request and trace IDs hold thirteen digits or more,
    scattered, and never a card number)."""
    return _CARD_MAPPED.search(text.encode("latin-1", "replace").translate(_CARD_MAP)) is not None


def _find_card_numbers(text: str) -> Iterator[tuple[int, int, bool]]:
    classes = text.encode("latin-1", "replace").translate(_CARD_MAP)
    for match in _CARD_MAPPED.finditer(classes):
        start, end = match.span()
        yield start, end, _card_number(text[start:end])


def _replace(
    text: str, found: Iterator[tuple[int, int, bool | None]], censor: str, budget: int
) -> tuple[str, int, int]:
    """``text`` with what ``found`` says replaced by ``censor``; the budget left, and how many
    characters were cut because it ran out (then the budget left is -1: the next finding in
    any later pass cuts too) or ``found`` said so (``None``: cut here)."""
    pieces: list[str] = []
    last = 0
    for start, end, secret in found:
        if budget <= 0 or secret is None:
            # Out of findings: what was not looked at is cut, never passed on unsearched.
            head = "".join(pieces) + text[last:start]
            kept = drop_cut_token(head)
            left = budget if secret is None and budget > 0 else -1
            return kept, left, len(text) - start + len(head) - len(kept)
        budget -= 1
        if secret:
            pieces += (text[last:start], censor)
            last = end
    if not pieces:
        return text, budget, 0
    pieces.append(text[last:])
    return "".join(pieces), budget, 0


# How many matches Python may look at in one value: 16, and one per 128 characters. Each costs
# a microsecond or so, where a character of ordinary text costs a few nanoseconds: text packed
# with matches (thousands of ``password=x``, of names never seen, of card-like numbers) would
# otherwise cost many times what ordinary text of its length does.
_FINDINGS = 16
_CHARS_PER_FINDING = 128


def _linear_time(pattern: str | re.Pattern[str], option: str) -> Any:
    """``pattern`` compiled by RE2, or ``ValueError`` saying why it cannot run in linear time."""
    import re2  # only patterns users add need it: imported when the first one is compiled

    if isinstance(pattern, re.Pattern):
        source, flags = pattern.pattern, pattern.flags
    else:
        source, flags = pattern, 0
    if flags & ~_RE_FLAGS:
        msg = (
            f"Redactor({option}=...): {pattern!r} uses flags RE2 has no equivalent for "
            f"({re.RegexFlag(flags & ~_RE_FLAGS)!r}); write them inline or leave them out"
        )
        raise ValueError(msg)
    options = re2.Options()
    options.log_errors = False
    options.case_sensitive = not flags & re.IGNORECASE
    inline = ("(?m)" if flags & re.MULTILINE else "") + ("(?s)" if flags & re.DOTALL else "")
    try:
        return re2.compile(inline + source, options)
    except re2.error as exc:
        msg = (
            f"Redactor({option}=...): {pattern!r} cannot run in linear time: RE2 refuses it "
            f"({exc}). Patterns run on RE2, which has no look-around, backreferences, "
            "possessive or atomic groups; rewrite it without them"
        )
        raise ValueError(msg) from None


def _re2_finder(regex: Any) -> _Finder:
    group = regex.groupindex.get("secret", 0)

    def find(text: str) -> Iterator[tuple[int, int, bool]]:
        # RE2 searches UTF-8 bytes: encode once (lone surrogates too, which a str search
        # would refuse) and turn byte offsets into character offsets as the matches come.
        data = text.encode("utf-8", "surrogatepass")
        ascii_only = len(data) == len(text)
        chars = at = 0  # character offset of byte offset ``at``
        for match in regex.finditer(data):
            start, end = match.span(group)
            if start < 0:
                start, end = match.span()
            if not ascii_only:
                try:
                    chars += len(data[at:start].decode("utf-8", "surrogatepass"))
                    span = len(data[start:end].decode("utf-8", "surrogatepass"))
                except UnicodeDecodeError:  # a match inside a character: hide the rest
                    yield chars, len(text), True
                    return
                at = end
                start, end = chars, chars + span
                chars = end
            yield start, end, start < end

    return find


#: A Redactor's plan for one event shape: what _walk_event() does to each key that is not
#: plain, and the plain keys' values (a tuple) from an event.
_Shape = tuple[tuple[tuple[Any, Callable[[Any], Any]], ...], Callable[[Any], tuple[Any, ...]]]


def _values_getter(keys: Sequence[Any]) -> Callable[[Any], tuple[Any, ...]]:
    """A function returning a mapping's values under ``keys`` as a tuple, at C level."""
    if not keys:
        return _no_values
    # itemgetter returns a tuple for two keys or more: one key is asked twice.
    return itemgetter(*keys, *keys) if len(keys) == 1 else itemgetter(*keys)


def _no_values(mapping: Any) -> tuple[Any, ...]:
    return ()


class _KeyKinds(dict[Any, int]):
    """Key -> what to do with its value, computed once per distinct key (``__missing__``)."""

    def __init__(self, classify: Callable[[Any], int]) -> None:
        super().__init__()
        self.classify = classify

    def __missing__(self, key: Any) -> int:
        kind = self.classify(key)
        if len(self) >= _MAX_CACHED_KEYS:
            self.clear()
        self[key] = kind
        return kind


class Redactor:
    """Processor: replaces secrets anywhere in the event with ``censor``, copying on write.

    *Keys*: a value whose key names a secret is replaced whole, at any depth of dicts, lists
    and tuples, in ``(name, value)`` pairs such as ASGI header lists, parameter by parameter
    in query strings (``query``), and after ``name=`` or ``"name":`` in free text. Keys are
    compared normalised: lowercase, without ``-``, ``_``, ``.``, spaces and brackets, so
    ``API-Key``, ``api_key``, ``apiKey`` and ``X-Api-Key`` all end in ``apikey``. A key
    written ``*word*`` matches keys containing the word, ``*word`` keys ending in it, a bare
    ``word`` only itself, and ``!word`` is a word that makes no key secret: ``*token``
    catches ``access_token`` and ``X-CSRF-Token`` but not ``token_count``;
    ``*authorization*`` never matches ``author``; ``!secretary`` keeps ``secretary_email``.
    ``None`` and booleans are kept (``has_password=True`` hides nothing).

    *Values*: strings under free-text keys (``event``, ``error_message``, ``exception``,
    ``stack``, bodies, header mappings...), strings nested in any dict, list or tuple, and
    query strings are searched for ``patterns``: private keys, JWTs, AWS, GitHub, GitLab,
    Slack, Stripe and Google credentials, bearer tokens, HTTP Basic credentials, passwords in
    URLs, Luhn-valid card numbers. At most ``max_scan_chars`` characters of one value are
    searched: a longer value is cut there (at a token boundary) and ends with
    ``...[cut: N more characters]``; so is a value packed with more matches than its length
    warrants (thousands of ``password=x``). Top-level fields under other keys (IDs, paths,
    the timestamp) are never rewritten by a pattern.

    ``keys`` replaces :data:`DEFAULT_KEYS`, ``extra_keys`` adds to them; ``patterns`` replaces
    :data:`DEFAULT_PATTERNS`, ``extra_patterns`` adds to them. A pattern with a group named
    ``secret`` has only that group replaced, otherwise the whole match. Patterns you add run
    on RE2, in time linear in the text; one RE2 cannot run (look-around, backreferences) is
    refused with ``ValueError``.

    The caller's objects are never changed: a nested dict, list or tuple holding a secret is
    copied (with every container on the way to it), the rest is shared; an event without
    secrets is returned as it came. Like every structlog processor, it sets keys on the event
    dict it is handed (structlog builds a new one per call).

    >>> Redactor(extra_keys=["x-tenant-signature"], censor="***")
    Redactor(...)
    """

    def __init__(
        self,
        keys: Iterable[str] | None = None,
        extra_keys: Iterable[str] = (),
        patterns: Iterable[str | re.Pattern[str]] | None = None,
        extra_patterns: Iterable[str | re.Pattern[str]] = (),
        censor: str = "[REDACTED]",
        *,
        text_keys: Iterable[str] | None = None,
        query_keys: Iterable[str] | None = None,
        max_depth: int = 32,
        max_scan_chars: int = DEFAULT_MAX_SCAN_CHARS,
    ) -> None:
        if not isinstance(censor, str):
            msg = f"Redactor(censor=...): expected a string, got {censor!r}"
            raise ValueError(msg)
        if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1:
            msg = f"Redactor(max_depth=...): expected a positive integer, got {max_depth!r}"
            raise ValueError(msg)
        if (
            isinstance(max_scan_chars, bool)
            or not isinstance(max_scan_chars, int)
            or max_scan_chars < 4 * _CUT_NOTE_ROOM
        ):
            msg = (
                "Redactor(max_scan_chars=...): expected a number of characters of at least "
                f"{4 * _CUT_NOTE_ROOM}, got {max_scan_chars!r}"
            )
            raise ValueError(msg)
        self.censor = censor
        self._censor_bytes = censor.encode("utf-8")
        self.max_depth = max_depth
        self.max_scan_chars = max_scan_chars
        key_specs = [
            *(_names(DEFAULT_KEYS if keys is None else keys, "keys")),
            *_names(extra_keys, "extra_keys"),
        ]
        exact: set[str] = set()
        suffixes: set[str] = set()
        contains: set[str] = set()
        plain: set[str] = set()
        for spec in key_specs:
            word = normalize_key(spec.lstrip("!").strip("*"))
            if not word:
                msg = f"Redactor(keys=...): {spec!r} names no key"
                raise ValueError(msg)
            if spec.startswith("!"):
                plain.add(word)
            elif spec.startswith("*") and spec.endswith("*") and len(spec) > 1:
                contains.add(word)
            elif spec.startswith("*"):
                suffixes.add(word)
            else:
                exact.add(word)
        self._exact = frozenset(exact)
        self._suffixes = tuple(sorted(suffixes))
        self._contains = tuple(sorted(contains))
        # Longest first, so that a word holding another is removed whole. One compiled
        # search each instead of a loop of ``in``: a key is classified in well under a
        # microsecond, which matters when a text holds thousands of names never seen before.
        self._plain_words = _words_pattern(sorted(plain, key=lambda w: (-len(w), w)))
        self._contains_words = _words_pattern(sorted(contains))
        self._text_keys = frozenset(
            normalize_key(k)
            for k in _names(DEFAULT_TEXT_KEYS if text_keys is None else text_keys, "text_keys")
        )
        self._query_keys = frozenset(
            normalize_key(k)
            for k in _names(DEFAULT_QUERY_KEYS if query_keys is None else query_keys, "query_keys")
        )
        given = [
            *_patterns(DEFAULT_PATTERNS if patterns is None else patterns, "patterns"),
            *_patterns(extra_patterns, "extra_patterns"),
        ]
        self.patterns: tuple[str | re.Pattern[str], ...] = tuple(p for p, _ in given)
        self._patterns = tuple(_ValuePattern(p, option) for p, option in given)
        self._gates = frozenset("".join(p.gate for p in self._patterns))
        self._ungated = tuple(p for p in self._patterns if not p.gate)
        # Every pattern's hints in one search: a short text holding none of them (most header
        # values, IDs, small body fields) skips the hinted patterns after one C-level call
        # instead of an ``in`` per hint in Python. None when no pattern has hints.
        hints = sorted({hint for p in self._patterns for hint in p.hints})
        self._any_hint = re.compile("|".join(map(re.escape, hints))) if hints else None
        self._has_keys = bool(self._exact or self._suffixes or self._contains)
        self._text_values, self._query_values = _value_patterns(censor)
        words = (*self._exact, *self._suffixes, *self._contains)
        self._assignment_names, self._assignment_parts = _assignment_patterns(
            min(map(len, words), default=1)
        )
        self._kinds = _KeyKinds(self._classify)
        self._reversed_kinds = _KeyKinds(self._classify_reversed)
        self._clean_text: set[str] = set()
        self._clean_query: set[str] = set()
        self._shapes: dict[tuple[Any, ...], _Shape] = {}

    def __repr__(self) -> str:
        return (
            f"Redactor(keys={len(self._exact) + len(self._suffixes) + len(self._contains)}, "
            f"patterns={len(self.patterns)}, censor={self.censor!r})"
        )

    # -- classification ------------------------------------------------------------------------

    def _classify(self, key: Any) -> int:
        if isinstance(key, bytes):
            key = key.decode("latin-1")
        if not isinstance(key, str):
            return _PLAIN
        if "%" in key or "+" in key:
            key = unquote_plus(key)  # a query parameter's name, as the application reads it
        return self._classify_name(normalize_key(key))

    def _classify_reversed(self, name: str) -> int:
        """A name found in free text, reversed (as the search finds it)."""
        name = name[::-1]
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        return self._classify_name(normalize_key(name))

    def _classify_name(self, name: str) -> int:
        if self._plain_words.search(name):
            name = self._plain_words.sub(" ", name)
        if (
            name in self._exact
            or name.endswith(self._suffixes)
            or self._contains_words.search(name)
        ):
            return _SECRET
        if name in self._query_keys:
            return _QUERY
        if name in self._text_keys:
            return _TEXT
        return _PLAIN

    def is_secret_key(self, key: str | bytes) -> bool:
        """Whether values under ``key`` are redacted whole."""
        return self._kinds[key] == _SECRET

    # -- the processor -------------------------------------------------------------------------

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        # The common event holds only strings and numbers, and its keys come in the same
        # order every time it is logged from the same place: the keys that need a look
        # (secret, free-text and query keys) are remembered per key tuple, and the values
        # are checked for containers by C-level calls, never touched one by one in Python.
        shape = self._shapes.get(tuple(event_dict))
        if shape is None:
            shape = self._learn_shape(event_dict)
        plan, plain_values = shape
        if not _flat_types(map(type, event_dict.values())) and not _flat_types(
            map(type, plain_values(event_dict))
        ):
            return self._walk_event(event_dict)
        # The plain keys hold flat values, which _walk_event() leaves alone: what it does to
        # the other keys (containers too: captured headers and bodies are under free-text
        # keys), without visiting the plain ones.
        for key, redact_value in plan:
            value = event_dict[key]
            new = redact_value(value)
            if new is not value:
                event_dict[key] = new
        return event_dict

    def plan(
        self, keys: Iterable[Any], *, containers: bool = False
    ) -> tuple[tuple[Any, Callable[[Any], Any]], ...]:
        """What this Redactor does to an event with these keys (in this order) whose values
        are all flat (strings, numbers, booleans, None): the keys it looks at, each with the
        function that returns the value to write (the same object when nothing changes).

        Applying the plan is exactly what calling the Redactor does on such an event, so a
        caller that knows an event's keys ahead (reqlog's access event, built by the
        middleware) can skip working out its shape on every call. The other keys are left
        as they are. With ``containers``, the values may be anything (captured headers and
        bodies): the plan then names every key, and walks what it holds.

        >>> [key for key, _ in Redactor().plan(["request_id", "query", "password", "event"])]
        ['query', 'password', 'event']
        """
        kinds = self._kinds
        if containers:
            walking = self._walking_actions()
            return tuple((key, walking[kinds[key]]) for key in keys)
        actions = {_TEXT: self._text_value, _SECRET: self._mask, _QUERY: self._query_string}
        return tuple((key, actions[kinds[key]]) for key in keys if kinds[key] != _PLAIN)

    def _walking_actions(self) -> dict[int, Callable[[Any], Any]]:
        """What _walk_event() does to a value, by the kind of its key."""
        return {
            _PLAIN: self._walk_plain,
            _TEXT: self._walk_text,
            _SECRET: self._mask,
            _QUERY: self._walk_query,
        }

    def _walk_plain(self, value: Any) -> Any:
        # Top-level values under plain keys: strings and numbers as they are, containers walked.
        cls = type(value)
        if cls is str or cls in _SCALARS or isinstance(value, str | bytes):
            return value
        return self._walk(value, 1)

    def _text_value(self, value: Any) -> Any:
        # A message seen before without secrets, or a number, is written as it is.
        if value in self._clean_text or type(value) is not str:
            return value
        return self._scan(value)

    def _query_string(self, value: Any) -> Any:
        if value in self._clean_query or type(value) is not str:
            return value
        return self.redact_query(value)

    def _walk_text(self, value: Any) -> Any:
        # _walk(value, 1), with a text known clean returned at once and a dict (captured
        # headers, a JSON body) walked without the dispatch.
        cls = type(value)
        if cls is str:
            if value in self._clean_text:
                return value
            return self._cached(value, self._clean_text, query=False)
        if cls is dict:
            return self._walk_mapping(value, 1)
        return self._walk(value, 1)

    def _walk_query(self, value: Any) -> Any:
        # _query_value(), with a query string known clean returned at once.
        if type(value) is str:
            clean = self._clean_query
            return value if value in clean else self._cached(value, clean, query=True)
        return self._query_value(value)

    def _learn_shape(self, event_dict: EventDict) -> _Shape:
        keys = tuple(event_dict)
        kinds = self._kinds
        walking = self._walking_actions()
        shape = (
            tuple((key, walking[kinds[key]]) for key in keys if kinds[key] != _PLAIN),
            _values_getter([key for key in keys if kinds[key] == _PLAIN]),
        )
        if len(self._shapes) >= _MAX_CACHED_SHAPES:
            self._shapes.clear()
        self._shapes[keys] = shape
        return shape

    def _walk_event(self, event_dict: EventDict) -> EventDict:
        kinds = self._kinds
        changes: list[tuple[str, Any]] | None = None
        for key, value in event_dict.items():
            kind = kinds[key]
            if kind == _PLAIN:
                cls = type(value)
                if cls is str or cls in _SCALARS:
                    continue
                # Top-level fields under other keys (IDs, paths) are not searched; what
                # they hold in containers is.
                new = self._walk_plain(value)
            elif kind == _TEXT:
                new = self._walk(value, 1)
            elif kind == _SECRET:
                new = self._mask(value)
            else:
                new = self._query_value(value)
            if new is not value:
                if changes is None:
                    changes = []
                changes.append((key, new))
        if changes is not None:
            event_dict.update(changes)
        return event_dict

    # -- public helpers ------------------------------------------------------------------------

    def redact(self, value: Any) -> Any:
        """``value`` with its secrets redacted: the same object when it holds none.

        For structures logged outside the chain, such as a parsed request body: keys are
        looked at, and every string in it is searched like free text.
        """
        return self._walk(value, 0)

    def redact_text(self, text: str) -> str:
        """``text`` with secret-looking values (tokens, keys, card numbers, ``password=...``)
        replaced."""
        return self._scan(text)

    def redact_query(self, query: str) -> str:
        """A query string with each secret parameter's value replaced, and secret-looking
        values (tokens, keys...) in the others.

        >>> Redactor().redact_query("q=shoes&api%5Fkey=abc&token=x&token=y")
        'q=shoes&api%5Fkey=[REDACTED]&token=[REDACTED]&token=[REDACTED]'
        """
        return self._cached(query, self._clean_query, query=True)

    # -- searching text ------------------------------------------------------------------------

    def _scan(self, text: str) -> str:
        """Free text with its secret-looking values replaced."""
        return self._cached(text, self._clean_text, query=False)

    def _cached(self, text: str, clean: set[str], *, query: bool) -> str:
        # Only "this string is clean" is remembered, per way of searching (free text, query):
        # the same string found under another kind of key is searched again.
        if not text:
            return text
        short = len(text) <= _MAX_CACHED_TEXT_LENGTH
        if short and text in clean:
            return text
        result = self._search(text, query=query)
        if result == text:
            if short:
                if len(clean) >= _MAX_CACHED_TEXTS:
                    clean.clear()
                clean.add(text)
            return text
        return result

    def _search(self, text: str, *, query: bool) -> str:
        cut = 0
        if len(text) > self.max_scan_chars:
            kept = drop_cut_token(text[: self.max_scan_chars - _CUT_NOTE_ROOM])
            cut = len(text) - len(kept)
            text = kept
        budget = _FINDINGS + len(text) // _CHARS_PER_FINDING
        censor = self.censor
        result = text
        if self._has_keys and ("=" in result or ":" in result):
            # The names before ``=`` and ``:``, found and classified at C level (``findall`` in
            # the reversed text, ``map`` over the cache of names): Python looks only at secret
            # names and names never seen, when there are any.
            reverse = result[::-1].replace(":", "=")
            names = self._assignment_names.findall(reverse)
            if names:
                kinds = set(map(self._reversed_kinds.get, set(names)))  # None: never seen
                if _SECRET in kinds or None in kinds:
                    values = self._query_values if query else self._text_values
                    found = self._find_assignments(result, names, budget, values)
                    result, budget, dropped = _replace(result, found, censor, budget)
                    cut += dropped
        patterns = self._patterns
        hintless = None  # the text, while it is known to hold no pattern's hint
        if len(result) <= _GATED_LENGTH:
            if self._gates.isdisjoint(result):
                patterns = self._ungated  # most short texts: no pattern's gate character in them
            elif self._any_hint is not None and self._any_hint.search(result) is None:
                hintless = result
        # The hints, inlined: most strings are ruled out by these C-level checks alone, and a
        # method call per pattern and string is a noticeable share of the cost.
        for pattern in patterns:
            hints = pattern.hints
            if hints:
                if result is hintless:
                    # Unchanged since it was found to hold none of the hints (a replacement
                    # makes a new string): the loop below would find none either.
                    continue
                for hint in hints:
                    if hint in result:
                        break
                else:
                    continue
            min_digits = pattern.min_digits
            if min_digits and (len(result) < min_digits or _digits(result) < min_digits):
                continue
            needs = pattern.needs
            if needs is not None and not needs(result):
                continue  # find() would find nothing: the text stays as it is
            result, budget, dropped = _replace(result, pattern.find(result), censor, budget)
            cut += dropped
        if query and ("%" in result or "+" in result):
            result, budget, dropped = _replace(result, self._find_encoded(result), censor, budget)
            cut += dropped
        if cut:
            return f"{result}...[cut: {cut} more characters]"
        return result

    def _find_assignments(
        self, text: str, names: list[str], budget: int, values: re.Pattern[str]
    ) -> Iterator[tuple[int, int, bool | None]]:
        """The value after each secret name (``token=...``, ``"password": "..."``), given the
        names found in the text reversed (last first).

        Python classifies each distinct name once (at most ``budget`` of them: the text is cut
        where the next one first appears) and looks at the occurrences of secret names only.
        Where the cut falls depends on the text alone, never on what the caches hold.
        """
        total = len(names)
        in_order = names[::-1]
        distinct = dict.fromkeys(in_order)
        classify = self._reversed_kinds.__getitem__
        kind_of = {name: classify(name) for name in islice(distinct, budget)}
        # The cut: the first occurrence of the first name past the budget.
        past = next(islice(distinct, budget, None), None)
        stop = total if past is None else in_order.index(past)
        # Where the secret names stand (a name past the cut is None: not a secret); only the
        # first budget + 1 of them can matter, so the rest is never looked at.
        is_secret = map(_SECRETS.__contains__, map(kind_of.get, in_order))
        secrets = list(islice(compress(count(), is_secret), budget + 1))
        if len(secrets) > budget:  # the budget runs out on a finding: no need to go past it
            stop = min(stop, secrets[budget] + 1)
        wanted = stop + 1 if stop < total else stop
        starts = self._assignment_starts(text, wanted, total)
        censor = self.censor
        last = 0
        for index in secrets:
            if index >= stop:
                break
            name_start, value_start = starts[index]
            if name_start < last:
                continue  # inside a value already replaced
            value = values.match(text, value_start)
            if value is None:
                continue
            start, end = value.span(value.lastindex or 0)
            if start == end or text.startswith(censor, start):
                continue
            yield start, end, True
            last = end
        if stop < total:
            yield max(starts[stop][0], last), 0, None  # cut here: too many names to look at

    def _assignment_starts(self, text: str, wanted: int, total: int) -> list[tuple[int, int]]:
        """Where the first ``wanted`` names (in text order) and their values start.

        The names of a prefix of the text are those of the whole whose separator lies in it:
        only a prefix long enough is split (at C level, per name), doubled until it is, so a
        text cut early costs no work per name past the cut.
        """
        # Where the names would end if they were spread evenly, and some.
        end = min(len(text), len(text) * wanted // total * 5 // 4 + 256)
        while True:
            reverse = text[:end][::-1].replace(":", "=")
            parts = self._assignment_parts.split(reverse)  # text, separator, name, text...
            if len(parts) // 3 >= wanted or end >= len(text):
                break
            end *= 2
        offsets = list(accumulate(map(len, parts)))  # where each part ends, in ``reverse``
        found = len(parts) // 3
        return [
            (end - offsets[3 * index + 2], end - offsets[3 * index])  # name, value
            for index in range(found - 1, max(found - 1 - wanted, -1), -1)
        ]

    def _find_encoded(self, query: str) -> Iterator[tuple[int, int, bool]]:
        """Percent-encoded query values whose decoded form holds a secret (``q=Bearer%20x``):
        replaced whole."""
        length = len(query)
        at = 0
        percent = plus = -1
        while at < length:
            if percent < at:
                percent = query.find("%", at)
                percent = length if percent < 0 else percent
            if plus < at:
                plus = query.find("+", at)
                plus = length if plus < 0 else plus
            hit = min(percent, plus)
            if hit >= length:
                return
            start = query.rfind("&", 0, hit) + 1
            end = query.find("&", hit)
            end = length if end < 0 else end
            name, separator, value = query[start:end].partition("=")
            value_start = start + len(name) + 1
            if separator and value_start <= hit:
                decoded = unquote_plus(value)
                yield value_start, end, self._scan(decoded) != decoded
            else:
                yield start, start, False
            at = end + 1

    # -- walking -------------------------------------------------------------------------------

    def _mask(self, value: Any) -> Any:
        if value is None or value is True or value is False:
            return value
        if isinstance(value, bytes | bytearray):
            return self._censor_bytes
        if type(value) is list or type(value) is tuple:
            # Repeated values, such as several Set-Cookie headers: one censor each, so the
            # count still shows.
            masked = [self._mask_one(item) for item in value]
            return masked if type(value) is list else tuple(masked)
        return self.censor

    def _mask_one(self, value: Any) -> Any:
        if value is None or value is True or value is False:
            return value
        if isinstance(value, bytes | bytearray):
            return self._censor_bytes
        return self.censor

    def _query_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact_query(str(value))
        if isinstance(value, bytes):
            text = value.decode("latin-1")
            redacted = self.redact_query(text)
            return value if redacted == text else redacted.encode("latin-1", "replace")
        return self._walk(value, 1)

    def _scan_bytes(self, value: bytes) -> bytes:
        text = value.decode("latin-1")
        redacted = self._scan(text)
        return value if redacted is text else redacted.encode("latin-1", "replace")

    def _walk(self, value: Any, depth: int) -> Any:
        cls = type(value)
        if cls is str:
            return self._scan(value)
        if cls in _SCALARS:
            return value
        if cls is dict:
            return self._walk_mapping(value, depth)
        if cls is list or cls is tuple:
            return self._walk_sequence(value, depth)
        if cls is bytes:
            return self._scan_bytes(value)
        if isinstance(value, str):
            return self._scan(str(value))
        if isinstance(value, Mapping):
            return self._walk_mapping(value, depth)
        if isinstance(value, list | tuple):
            return self._walk_sequence(value, depth)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            # orjson writes dataclasses field by field: redact them the same way.
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
            redacted = self._walk_mapping(fields, depth)
            return value if redacted is fields else redacted
        return value

    def _walk_mapping(self, mapping: Mapping[Any, Any], depth: int) -> Any:
        if depth > self.max_depth:
            return self.censor
        kinds = self._kinds
        clean = self._clean_text
        out: dict[Any, Any] | None = None
        for key, value in mapping.items():
            kind = kinds[key]
            if kind == _SECRET:
                new = self._mask(value)
            elif kind == _QUERY:
                new = self._query_value(value)
            elif type(value) is str:
                # _walk() -> _scan() -> _cached() inline for a text known clean: headers and
                # small bodies are mostly such texts, and three calls each cost more than that.
                if value in clean:
                    continue
                new = self._cached(value, clean, query=False)  # _scan(), inline
            elif type(value) in _SCALARS:
                continue
            else:
                new = self._walk(value, depth + 1)
            if new is not value:
                if out is None:
                    out = dict(mapping)
                out[key] = new
        return mapping if out is None else out

    def _walk_sequence(self, seq: list[Any] | tuple[Any, ...], depth: int) -> Any:
        if depth > self.max_depth:
            return self.censor
        if len(seq) == 2:
            # A (name, value) pair, as in ASGI header lists: [(b"authorization", b"...")].
            name = seq[0]
            if (
                (isinstance(name, str) and isinstance(seq, tuple)) or isinstance(name, bytes)
            ) and self._kinds[name] == _SECRET:
                masked = self._mask(seq[1])
                if masked is seq[1]:
                    return seq
                return (name, masked) if isinstance(seq, tuple) else [name, masked]
        clean = self._clean_text
        out: list[Any] | None = None
        for index, item in enumerate(seq):
            cls = type(item)
            if cls is str:
                if item in clean:  # _walk(), inline for a text known clean (_walk_mapping)
                    continue
                new = self._cached(item, clean, query=False)  # _scan(), inline
            elif cls in _SCALARS:
                continue
            else:
                new = self._walk(item, depth + 1)
            if new is not item:
                if out is None:
                    out = list(seq)
                out[index] = new
        if out is None:
            return seq
        return tuple(out) if isinstance(seq, tuple) else out


def _words_pattern(words: Iterable[str]) -> re.Pattern[str]:
    """A pattern finding any of ``words`` (none: a pattern that never matches)."""
    return re.compile("|".join(map(re.escape, words)) or "(?!)")


def _names(values: Iterable[str], option: str) -> list[str]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        msg = f"Redactor({option}=...): expected a list of key names, got {values!r}"
        raise ValueError(msg)
    names = list(values)
    for name in names:
        if not isinstance(name, str):
            msg = f"Redactor({option}=...): key names are strings, got {name!r}"
            raise ValueError(msg)
    return names


def _patterns(
    values: Iterable[str | re.Pattern[str]], option: str
) -> list[tuple[str | re.Pattern[str], str]]:
    """The patterns of one option, checked: each a str or a compiled str pattern that can
    match something (``ValueError`` otherwise; RE2's own checks come when it compiles them)."""
    if isinstance(values, str | bytes | re.Pattern) or not isinstance(values, Iterable):
        msg = f"Redactor({option}=...): expected a list of regular expressions, got {values!r}"
        raise ValueError(msg)
    checked: list[tuple[str | re.Pattern[str], str]] = []
    for value in values:
        if isinstance(value, re.Pattern) and isinstance(value.pattern, str):
            compiled = value
        elif isinstance(value, str):
            try:
                compiled = re.compile(value)
            except re.error as exc:
                msg = f"Redactor({option}=...): {value!r} is not a valid regular expression: {exc}"
                raise ValueError(msg) from None
        else:
            msg = f"Redactor({option}=...): expected str or compiled str patterns, got {value!r}"
            raise ValueError(msg)
        if compiled.search("") is not None:
            msg = f"Redactor({option}=...): {value!r} matches the empty string"
            raise ValueError(msg)
        checked.append((value, option))
    return checked


# --- sampling -------------------------------------------------------------------------------

_HEX8 = re.compile(r"[0-9a-fA-F]{8}")


def sample_score(request_id: str) -> float:
    """Where a request ID falls in ``[0, 1)``: the same on every replica and every run.

    IDs starting with 8 hex digits (UUIDs, reqlog's own IDs) use them directly, so anyone can
    recompute the decision (``int(request_id[:8], 16) / 2**32``); other IDs are hashed.
    """
    head = request_id[:8]
    if _HEX8.fullmatch(head):
        return int(head, 16) / 2**32
    digest = hashlib.blake2b(request_id.encode("utf-8", "replace"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Sampler:
    """Processor: keeps ``rate`` of the successful, fast ``request_completed`` events.

    Everything else always passes: other events, ``request_failed``, status 400 and above,
    slow or incomplete responses, anything logged above info, and access events without a
    request ID. The decision is :func:`sample_score` of the request ID, so replicas and reruns
    agree, and a request's other events can be kept or dropped with it. A kept sampled event
    carries ``sample_rate``: count it ``1 / sample_rate`` times to estimate the real traffic.
    ``rate=0`` keeps none of them: only the errors, the slow and the incomplete requests (and
    every other event) are written, which is what a busy service often wants.
    """

    def __init__(self, rate: float) -> None:
        self.rate = sample_rate_value(rate, "sample_rate")

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        if event_dict.get("event") != "request_completed":
            return event_dict
        status = event_dict.get("status_code")
        if (
            type(status) is not int
            or status >= 400
            or event_dict.get("slow")
            or event_dict.get("response_incomplete")
            or event_dict.get("level", "info") not in ("info", "debug")
        ):
            return event_dict
        request_id = event_dict.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            return event_dict
        if sample_score(request_id) < self.rate:
            event_dict["sample_rate"] = self.rate
            return event_dict
        raise structlog.DropEvent


def sample_rate_value(value: Any, option: str = "sample_rate") -> float:
    """A sample rate in ``[0, 1]`` from a number or a string; ``ValueError`` names the option.

    0 keeps no successful, fast request (errors, slow and incomplete ones are always kept);
    1 keeps all of them.
    """
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0.0 <= value <= 1.0  # also rejects NaN
    ):
        msg = f"{option}: expected a number from 0 to 1, got {value!r}"
        raise ValueError(msg)
    return float(value)


# --- the slow-request channel ---------------------------------------------------------------


class _Writer(Protocol):
    def write(self, line: bytes) -> None: ...


class SlowRequestOutput:
    """Processor: also writes slow ``request_completed`` events to a second output.

    It sits just before the renderer, after redaction, and renders a slow event itself with
    ``render`` (the same renderer as the main output, or one suited to the second output, such
    as uncoloured console text for a file). Every other event costs one dict lookup.
    """

    def __init__(self, output: _Writer, render: Sequence[Processor]) -> None:
        self.output = output
        self.render = tuple(render)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        if event_dict.get("slow") is True and event_dict.get("event") == "request_completed":
            try:
                line: Any = dict(event_dict)  # renderers may pop keys: keep the main event whole
                for step in self.render:
                    line = step(logger, method_name, line)
                if isinstance(line, str):
                    line = line.encode("utf-8", "replace") + b"\n"
                self.output.write(line)
            except Exception as exc:  # noqa: BLE001 - the main output must still get the event
                report = getattr(self.output, "report", None)
                if report is not None:
                    report("slow_output", f"could not write a slow request: {exc!r}")
        return event_dict


# --- cheaper versions of common steps -------------------------------------------------------


class IsoTimeStamper:
    """Processor: ``timestamp``, ISO 8601 in UTC, exactly as structlog's
    ``TimeStamper(fmt="iso", utc=True)`` writes it (``2024-05-01T12:00:00.123456Z``, no
    fraction on a whole second).

    structlog's builds a ``datetime`` for every event; this one formats the date and time
    once per second and only appends the microseconds, which matters in a chain whose whole
    budget is a few microseconds. It reads ``time.time()`` on each call, so freezegun works.
    """

    __slots__ = ("_cache", "key")

    def __init__(self, key: str = "timestamp") -> None:
        self.key = key
        # The second (its decimal digits) whose date and time are formatted, and that text;
        # never the "" that the digits of a time before the first second leave (stamp()).
        self._cache: tuple[str, str] = ("x", "")

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        event_dict[self.key] = self.stamp()
        return event_dict

    def stamp(self) -> str:
        """The timestamp for now, as ``__call__`` puts it on an event.

        The microseconds since the epoch, ``round(time.time() * 1_000_000)``, are written out
        once in decimal: the last six digits are the fraction, the others the second that
        keys the date and time formatted once per second. No big-integer division, no format
        specification: the same text as dividing, for about half the work.
        """
        micros = round(time.time() * 1_000_000)
        digits = f"{micros}"
        second = digits[:-6]
        cached_second, prefix = self._cache
        if second != cached_second:
            if micros < 1_000_000:  # before 1970-01-01T00:00:01: the fraction needs arithmetic
                whole, micro = divmod(micros, 1_000_000)
                start = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
                return f"{start}.{micro:06d}Z" if micro else f"{start}Z"
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(second)))
            self._cache = (second, prefix)
        fraction = digits[-6:]
        return f"{prefix}Z" if fraction == "000000" else f"{prefix}.{fraction}Z"


class WhenPresent:
    """Processor: runs ``processors`` only for events that have one of ``keys``.

    The exception and stack renderers do nothing unless ``exc_info`` or ``stack_info`` is
    present; skipping them on the other events saves a call each.
    """

    def __init__(self, keys: Iterable[str], processors: Sequence[Processor]) -> None:
        self.keys = tuple(keys)
        self.processors = tuple(processors)

    def __repr__(self) -> str:
        return f"WhenPresent({self.keys!r}, {list(self.processors)!r})"

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        for key in self.keys:
            if key in event_dict:
                break
        else:
            return event_dict
        result: Any = event_dict
        for processor in self.processors:
            result = processor(logger, method_name, result)
        return result


def add_logger_name(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor: ``logger``, the logger's name (a stdlib record's, when there is one).

    structlog's ``stdlib.add_logger_name`` fails on wrapped loggers without a ``name``, such
    as ``PrintLogger`` and ``WriteLogger``; this one leaves the key out for them, so the chain
    from :func:`reqlog.default_processors` works with any structlog logger.
    """
    record = event_dict.get("_record")
    # An app's own field named _record is not a record: it must not cost the event.
    if isinstance(record, logging.LogRecord):
        name: Any = record.name
    else:
        name = getattr(logger, "name", None)
    if name is not None:
        event_dict["logger"] = name
    return event_dict
