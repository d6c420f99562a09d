"""Small structlog processors and access-event policies: redaction, sampling, levels, slowness."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import unquote_plus

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = [
    "BEARER_TOKEN",
    "CARD_NUMBER",
    "DEFAULT_KEYS",
    "DEFAULT_PATTERNS",
    "DEFAULT_QUERY_KEYS",
    "DEFAULT_TEXT_KEYS",
    "JWT",
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

#: Separators ignored when keys are compared, after lowercasing: ``API-Key``, ``api_key``,
#: ``apiKey``, ``api.key`` and ``api[key]`` are all ``apikey``.
_KEY_SEPARATORS = str.maketrans("", "", "-_. []")

#: What reqlog redacts by default (OWASP Logging Cheat Sheet: never log passwords, session
#: identifiers, access tokens, secrets, keys, payment card data, national IDs). Matching is on
#: the normalised key (lowercase, separators removed); ``*word*`` matches a key containing the
#: word, ``*word`` a key ending in it, a bare ``word`` only that key.
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
    }
)

#: Keys holding a raw query string (``a=1&b=2``), parsed and redacted parameter by parameter.
DEFAULT_QUERY_KEYS: frozenset[str] = frozenset({"query", "query_string"})

#: ``Bearer <token>`` in free text; the token is replaced, the word ``Bearer`` stays.
BEARER_TOKEN = re.compile(r"(?i:\bbearer\s+(?P<secret>[A-Za-z0-9\-._~+/]+=*))")
#: A JSON Web Token: three base64url parts, the first two JSON objects (``eyJ`` is ``{"``).
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
#: A payment card number: 13 to 19 digits starting 2-6, optionally grouped by single spaces
#: or hyphens, not glued to letters or digits. Matches are redacted only if the Luhn check
#: passes, so most long numbers (and epoch milliseconds, which start with 1) are left alone.
CARD_NUMBER = re.compile(r"(?<![0-9A-Za-z-])[2-6](?:[ -]?[0-9]){12,18}(?![0-9A-Za-z-])")
#: The password in a URL's user information: ``postgres://app:[REDACTED]@db/orders``.
URL_PASSWORD = re.compile(r"://[^/\s:@]*:(?P<secret>[^/\s@]+)@")

DEFAULT_PATTERNS: tuple[re.Pattern[str], ...] = (BEARER_TOKEN, JWT, CARD_NUMBER, URL_PASSWORD)

# A parameter of a URL's query inside free text (``GET /cb?code=1&token=abc``).
_URL_PARAM = re.compile(r"(?<=[?&;])([^=&;#\s\"'<>]+)=([^&;#\s\"'<>]*)")
_DIGIT_MARKS = bytes(1 if 48 <= c <= 57 else 0 for c in range(256))

_PLAIN, _SECRET, _TEXT, _QUERY = 0, 1, 2, 3
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
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def normalize_key(key: str) -> str:
    """The form keys are compared in: lowercase, without ``-``, ``_``, ``.``, spaces, brackets."""
    return key.lower().translate(_KEY_SEPARATORS)


class _ValuePattern:
    """One compiled value pattern plus the cheap checks that let most strings skip it."""

    __slots__ = ("hints", "min_digits", "regex", "replace", "validate")

    def __init__(self, regex: re.Pattern[str], censor: str) -> None:
        self.regex = regex
        # Literal substrings one of which every match contains: a C-level ``in`` rules most
        # strings out before the (much slower) regular expression engine runs.
        self.hints: tuple[str, ...] = ()
        self.min_digits = 0
        self.validate: Callable[[str], bool] | None = None
        if regex is BEARER_TOKEN:
            self.hints = ("earer", "EARER")
        elif regex is JWT:
            self.hints = ("eyJ",)
        elif regex is URL_PASSWORD:
            self.hints = ("://",)
        elif regex is CARD_NUMBER:
            self.min_digits = 13
            self.validate = _card_number
        has_secret_group = "secret" in regex.groupindex

        def replace(match: re.Match[str]) -> str:
            text = match.group(0)
            if self.validate is not None and not self.validate(text):
                return text
            if has_secret_group and match.group("secret") is not None:
                start, end = match.span("secret")
                base = match.start()
                return text[: start - base] + censor + text[end - base :]
            return censor

        self.replace = replace

    def apply(self, text: str) -> str:
        if self.hints:
            for hint in self.hints:
                if hint in text:
                    break
            else:
                return text
        if self.min_digits and (len(text) < self.min_digits or _digits(text) < self.min_digits):
            return text
        return self.regex.sub(self.replace, text)


def _digits(text: str) -> int:
    """How many ASCII digits ``text`` holds, counted at C level (digits become 1, the rest 0)."""
    return text.encode("latin-1", "ignore").translate(_DIGIT_MARKS).count(1)


def _card_number(text: str) -> bool:
    return luhn_valid(text.replace(" ", "").replace("-", ""))


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
    and tuples, in ``(name, value)`` pairs such as ASGI header lists, and parameter by parameter
    in query strings (``query``). Keys are compared normalised: lowercase, without ``-``, ``_``,
    ``.``, spaces and brackets, so ``API-Key``, ``api_key``, ``apiKey`` and ``X-Api-Key`` all
    end in ``apikey``. A key written ``*word*`` matches keys containing the word, ``*word`` keys
    ending in it, and a bare ``word`` only itself: ``*token`` catches ``access_token`` and
    ``X-CSRF-Token`` but not ``token_count``; ``*authorization*`` never matches ``author``.
    ``None`` and booleans are kept (``has_password=True`` hides nothing).

    *Values*: strings under free-text keys (``event``, ``error_message``, ``exception``,
    ``stack``, bodies...; at any depth below them) are searched for ``patterns``: bearer tokens,
    JWTs, Luhn-valid card numbers, passwords in URLs, and secret parameters of URLs.

    ``keys`` replaces :data:`DEFAULT_KEYS`, ``extra_keys`` adds to them; ``patterns`` replaces
    :data:`DEFAULT_PATTERNS`, ``extra_patterns`` adds to them. A pattern with a group named
    ``secret`` has only that group replaced, otherwise the whole match.

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
    ) -> None:
        if not isinstance(censor, str):
            msg = f"Redactor(censor=...): expected a string, got {censor!r}"
            raise ValueError(msg)
        if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1:
            msg = f"Redactor(max_depth=...): expected a positive integer, got {max_depth!r}"
            raise ValueError(msg)
        self.censor = censor
        self._censor_bytes = censor.encode("utf-8")
        self.max_depth = max_depth
        key_specs = [
            *(_names(DEFAULT_KEYS if keys is None else keys, "keys")),
            *_names(extra_keys, "extra_keys"),
        ]
        exact: set[str] = set()
        suffixes: set[str] = set()
        contains: set[str] = set()
        for spec in key_specs:
            word = normalize_key(spec.strip("*"))
            if not word:
                msg = f"Redactor(keys=...): {spec!r} names no key"
                raise ValueError(msg)
            if spec.startswith("*") and spec.endswith("*") and len(spec) > 1:
                contains.add(word)
            elif spec.startswith("*"):
                suffixes.add(word)
            else:
                exact.add(word)
        self._exact = frozenset(exact)
        self._suffixes = tuple(sorted(suffixes))
        self._contains = tuple(sorted(contains))
        self._text_keys = frozenset(
            normalize_key(k)
            for k in _names(DEFAULT_TEXT_KEYS if text_keys is None else text_keys, "text_keys")
        )
        self._query_keys = frozenset(
            normalize_key(k)
            for k in _names(DEFAULT_QUERY_KEYS if query_keys is None else query_keys, "query_keys")
        )
        compiled = [
            *_compile(DEFAULT_PATTERNS if patterns is None else patterns, "patterns"),
            *_compile(extra_patterns, "extra_patterns"),
        ]
        self.patterns: tuple[re.Pattern[str], ...] = tuple(compiled)
        self._patterns = tuple(_ValuePattern(p, censor) for p in compiled)
        self._kinds = _KeyKinds(self._classify)
        self._clean: set[str] = set()
        self._shapes: dict[tuple[Any, ...], tuple[tuple[Any, int], ...]] = {}

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
        return self._classify_name(normalize_key(key))

    def _classify_name(self, name: str) -> int:
        if name in self._exact or name.endswith(self._suffixes):
            return _SECRET
        for word in self._contains:
            if word in name:
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
        special = self._shapes.get(tuple(event_dict))
        if special is None:
            special = self._learn_shape(event_dict)
        if _flat_types(map(type, event_dict.values())):
            clean = self._clean
            for key, kind in special:
                value = event_dict[key]
                if kind == _SECRET:
                    new = self._mask(value)
                elif value in clean:  # a message or query seen before, without secrets
                    continue
                elif kind == _TEXT:
                    new = self._scan(value) if type(value) is str else value
                else:
                    new = self._query_value(value)
                if new is not value:
                    event_dict[key] = new
            return event_dict
        return self._walk_event(event_dict)

    def _learn_shape(self, event_dict: EventDict) -> tuple[tuple[Any, int], ...]:
        kinds = self._kinds
        shape = tuple(event_dict)
        special = tuple((key, kinds[key]) for key in shape if kinds[key] != _PLAIN)
        if len(self._shapes) >= _MAX_CACHED_SHAPES:
            self._shapes.clear()
        self._shapes[shape] = special
        return special

    def _walk_event(self, event_dict: EventDict) -> EventDict:
        kinds = self._kinds
        changes: list[tuple[str, Any]] | None = None
        for key, value in event_dict.items():
            kind = kinds[key]
            if kind == _PLAIN:
                cls = type(value)
                if cls is str or cls in _SCALARS:
                    continue
                new = self._walk(value, False, 1)
            elif kind == _TEXT:
                new = self._walk(value, True, 1)
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

        For structures logged outside the chain, such as a parsed request body.
        """
        return self._walk(value, False, 0)

    def redact_text(self, text: str) -> str:
        """``text`` with the value patterns (bearer tokens, JWTs, card numbers...) replaced."""
        return self._scan(text)

    def redact_query(self, query: str) -> str:
        """A query string with each secret parameter's value replaced.

        >>> Redactor().redact_query("q=shoes&api%5Fkey=abc&token=x&token=y")
        'q=shoes&api%5Fkey=[REDACTED]&token=[REDACTED]&token=[REDACTED]'
        """
        if not query or "=" not in query:
            return query
        kinds = self._kinds
        parts = query.split("&")
        changed = False
        for index, part in enumerate(parts):
            raw_name, sep, value = part.partition("=")
            if not sep or not value:
                continue
            name = unquote_plus(raw_name) if "%" in raw_name or "+" in raw_name else raw_name
            if kinds[name] == _SECRET:
                parts[index] = f"{raw_name}={self.censor}"
                changed = True
        return "&".join(parts) if changed else query

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
            if value in self._clean:
                return value
            return self._scan(self.redact_query(value))
        if isinstance(value, bytes):
            text = value.decode("latin-1")
            redacted = self._scan(self.redact_query(text))
            return value if redacted == text else redacted.encode("latin-1", "replace")
        return self._walk(value, False, 1)

    def _scan(self, text: str) -> str:
        if not text:
            return text
        clean = self._clean
        short = len(text) <= _MAX_CACHED_TEXT_LENGTH
        if short and text in clean:
            return text
        result = text
        # _ValuePattern.apply, inlined: most strings are ruled out by the C-level checks
        # alone, and a method call per pattern and string is a noticeable share of the cost.
        for pattern in self._patterns:
            hints = pattern.hints
            if hints:
                for hint in hints:
                    if hint in result:
                        break
                else:
                    continue
            min_digits = pattern.min_digits
            if min_digits and (len(result) < min_digits or _digits(result) < min_digits):
                continue
            result = pattern.regex.sub(pattern.replace, result)
        if "?" in result and "=" in result:
            result = _URL_PARAM.sub(self._url_param, result)
        if result == text:
            if short:
                if len(clean) >= _MAX_CACHED_TEXTS:
                    clean.clear()
                clean.add(text)
            return text
        return result

    def _url_param(self, match: re.Match[str]) -> str:
        raw_name = match.group(1)
        name = unquote_plus(raw_name) if "%" in raw_name or "+" in raw_name else raw_name
        if match.group(2) and self._kinds[name] == _SECRET:
            return f"{raw_name}={self.censor}"
        return match.group(0)

    def _walk(self, value: Any, scan: bool, depth: int) -> Any:
        cls = type(value)
        if cls is str:
            return self._scan(value) if scan else value
        if cls in _SCALARS:
            return value
        if cls is dict:
            return self._walk_mapping(value, scan, depth)
        if cls is list or cls is tuple:
            return self._walk_sequence(value, scan, depth)
        if isinstance(value, str):
            return self._scan(str(value)) if scan else value
        if isinstance(value, Mapping):
            return self._walk_mapping(value, scan, depth)
        if isinstance(value, list | tuple):
            return self._walk_sequence(value, scan, depth)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            # orjson writes dataclasses field by field: redact them the same way.
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
            redacted = self._walk_mapping(fields, scan, depth)
            return value if redacted is fields else redacted
        return value

    def _walk_mapping(self, mapping: Mapping[Any, Any], scan: bool, depth: int) -> Any:
        if depth > self.max_depth:
            return self.censor
        kinds = self._kinds
        out: dict[Any, Any] | None = None
        for key, value in mapping.items():
            kind = kinds[key]
            if kind == _PLAIN:
                cls = type(value)
                if cls in _SCALARS or (cls is str and not scan):
                    continue
                new = self._walk(value, scan, depth + 1)
            elif kind == _TEXT:
                new = self._walk(value, True, depth + 1)
            elif kind == _SECRET:
                new = self._mask(value)
            else:
                new = self._query_value(value)
            if new is not value:
                if out is None:
                    out = dict(mapping)
                out[key] = new
        return mapping if out is None else out

    def _walk_sequence(self, seq: list[Any] | tuple[Any, ...], scan: bool, depth: int) -> Any:
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
        out: list[Any] | None = None
        for index, item in enumerate(seq):
            cls = type(item)
            if cls in _SCALARS or (cls is str and not scan):
                continue
            new = self._walk(item, scan, depth + 1)
            if new is not item:
                if out is None:
                    out = list(seq)
                out[index] = new
        if out is None:
            return seq
        return tuple(out) if isinstance(seq, tuple) else out


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


def _compile(values: Iterable[str | re.Pattern[str]], option: str) -> list[re.Pattern[str]]:
    if isinstance(values, str | bytes | re.Pattern) or not isinstance(values, Iterable):
        msg = f"Redactor({option}=...): expected a list of regular expressions, got {values!r}"
        raise ValueError(msg)
    compiled: list[re.Pattern[str]] = []
    for value in values:
        if isinstance(value, re.Pattern) and isinstance(value.pattern, str):
            compiled.append(value)
        elif isinstance(value, str):
            try:
                compiled.append(re.compile(value))
            except re.error as exc:
                msg = f"Redactor({option}=...): {value!r} is not a valid regular expression: {exc}"
                raise ValueError(msg) from None
        else:
            msg = f"Redactor({option}=...): expected str or compiled str patterns, got {value!r}"
            raise ValueError(msg)
        if compiled[-1].search("") is not None:
            msg = f"Redactor({option}=...): {value!r} matches the empty string"
            raise ValueError(msg)
    return compiled


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
        self._cache: tuple[int, str] = (-1, "")

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        second, micro = divmod(round(time.time() * 1_000_000), 1_000_000)
        cached_second, prefix = self._cache
        if second != cached_second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._cache = (second, prefix)
        event_dict[self.key] = f"{prefix}.{micro:06d}Z" if micro else f"{prefix}Z"
        return event_dict


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
    name = record.name if record is not None else getattr(logger, "name", None)
    if name is not None:
        event_dict["logger"] = name
    return event_dict
