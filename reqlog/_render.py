"""Renderers: an event as one line of JSON, console text or logfmt, whatever it holds.

What makes any value safe to write (escaping, lone surrogates, keys) is in
:mod:`reqlog._escape`; the renderers here call it. Each returns bytes ending in a newline
(the output's) or text without one (``default_processors()``, the standard library's).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, cast

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from reqlog import _escape

__all__ = [
    "JSON_OPTIONS",
    "RENDERING",
    "ConsoleLines",
    "EscapeControls",
    "JSONRenderer",
    "LogfmtLine",
    "json_default",
    "renderers",
]


def json_default(obj: Any) -> Any:
    if isinstance(obj, set | frozenset):
        return list(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    return _safe_repr(obj)


_safe_repr = _escape.safe_repr

JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z


class JSONRenderer:
    """Processor: the event as one line of JSON (orjson), as bytes or text.

    orjson escapes the C0 controls, so CR, LF and ESC in a path or a message cannot break the
    one-object-per-line promise; DEL, the C1 controls (U+0085 among them), U+2028 and U+2029,
    which it leaves raw and ``str.splitlines()`` splits on, are escaped after it. Values
    orjson cannot serialise become ``repr()``; should serialisation still fail (a lone
    surrogate, integers past 64 bits, cycles), the event is written with those values made
    serialisable (``reqlog._escape.jsonable``) rather than lost.
    """

    __slots__ = ("_option", "_str_keys_option", "as_text")

    def __init__(self, *, as_text: bool = False) -> None:
        self.as_text = as_text
        self._option = JSON_OPTIONS if as_text else JSON_OPTIONS | orjson.OPT_APPEND_NEWLINE
        # Keys are strings in almost every event, and orjson serialises such a dict a third
        # faster without OPT_NON_STR_KEYS (which then changes nothing): tried first, the
        # option is added only when orjson refuses a key.
        self._str_keys_option = self._option & ~orjson.OPT_NON_STR_KEYS

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        try:
            data = orjson.dumps(event_dict, default=json_default, option=self._str_keys_option)
        except TypeError:  # orjson.JSONEncodeError is one
            data = self._odd(event_dict)
        # _escape.needs_json_escape(), inlined: for a pure-ASCII line, two memchr-speed
        # scans and no call.
        if 0x7F in data or (not data.isascii() and (0xC2 in data or 0xE2 in data)):
            data = _escape.escape_json(data)
        return data.decode() if self.as_text else data

    def _odd(self, event_dict: EventDict) -> bytes:
        """An event with a key that is not a string, or a value orjson refuses."""
        try:
            return orjson.dumps(event_dict, default=json_default, option=self._option)
        except TypeError:
            safe = _escape.jsonable(event_dict, json_default, JSON_OPTIONS)
            return orjson.dumps(safe, default=json_default, option=self._option)


def encode_line(logger: WrappedLogger, method_name: str, text: Any) -> bytes:
    # backslashreplace: a lone surrogate that reached here is written as \udXXX, not lost.
    return str(text).encode("utf-8", "backslashreplace") + b"\n"


class _Shown:
    """A value the console shows as the text it holds: ConsoleRenderer ``repr()``s values."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__


_PLAIN: Final = (int, float, bool, type(None))


class EscapeControls:
    """Processor for the console format: nothing in a key or a value can end the line or
    reach the terminal raw.

    A string holding a control character, a line separator or a lone surrogate is shown as
    its ``repr()``, which escapes them all (``'/a\\nforged'``); any other value that is not a
    number, a boolean or None is shown as its repr with those characters escaped, and a
    ``__repr__`` that raises costs that field only. Keys that are not plain words are escaped
    too (``\\x20`` for a space, ``\\x3d`` for ``=``), so a key never costs the event either.
    ``keep_newlines_in`` keys (tracebacks) keep their line feeds: ConsoleLines indents them.
    """

    __slots__ = ("keep",)

    def __init__(self, keep_newlines_in: Iterable[str] = ()) -> None:
        self.keep = frozenset(keep_newlines_in)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        odd_keys = False
        for key, value in event_dict.items():
            if type(key) is not str or not key.isidentifier():
                odd_keys = True
            kind = type(value)
            if kind is str:
                if not value.isprintable():
                    if key in self.keep:
                        event_dict[key] = _escape.escape_multiline(value)
                    else:
                        event_dict[key] = _Shown(repr(value))
            elif kind not in _PLAIN:
                event_dict[key] = _Shown(_escape.escape_text(_safe_repr(value)))
        return _escaped_keys(event_dict) if odd_keys else event_dict


def _escaped_keys(event_dict: EventDict) -> EventDict:
    escaped: EventDict = {}
    for key, value in event_dict.items():
        name = _escape.escape_key(key)
        while name in escaped:  # two keys that escape alike: both kept
            name += "_"
        escaped[name] = value
    return escaped


class SafeRenderer:
    """A text renderer that renders every event, whatever its keys and values hold.

    Should the renderer fail (an object whose ``__str__`` raises, a user processor that put a
    number where it wants text), every value becomes escaped text and the event is rendered
    anyway.
    """

    __slots__ = ("renderer",)

    def __init__(self, renderer: Processor) -> None:
        self.renderer = renderer

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        try:
            return self.renderer(logger, method_name, event_dict)
        except Exception:  # noqa: BLE001
            return self._fallback(logger, method_name, event_dict)

    def _fallback(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        safe = {
            _escape.escape_key(k): v
            if isinstance(v, str)
            else _escape.escape_text(_escape.safe_str(v))
            for k, v in event_dict.items()
        }
        return self.renderer(logger, method_name, safe)


class LogfmtLine(SafeRenderer):
    """structlog's LogfmtRenderer, made to write any event as one line.

    Keys that are not plain words are escaped first (the renderer refuses a key with a space,
    and a ``=`` or a quote would make the pair ambiguous), values other than strings, numbers,
    booleans and None become their ``str()`` (one that raises costs that field only); the
    renderer quotes values and
    writes their line feeds as ``\\n``; what it leaves raw (CR, ESC, the other controls, line
    separators, lone surrogates) is escaped in the finished line, in one pass that a line of
    printable text skips.
    """

    __slots__ = ()

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        odd_keys = False
        for key, value in event_dict.items():
            if type(key) is not str or not key.isidentifier():
                odd_keys = True
            kind = type(value)
            if kind is not str and kind not in _PLAIN:
                # What the renderer would do, but a __str__ that raises costs only its field.
                event_dict[key] = _escape.safe_str(value)
        if odd_keys:
            event_dict = _escaped_keys(event_dict)
        line = cast(str, super().__call__(logger, method_name, event_dict))
        return _escape.escape_text(line)


class ConsoleLines(SafeRenderer):
    """structlog's ConsoleRenderer, every line of an event after its first indented by two
    spaces.

    The first line of an event starts with its timestamp (or its ``[level]``); a traceback's
    lines, however the exception message was crafted, start with a space. A reader can always
    tell where the next event begins.
    """

    __slots__ = ()

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        try:
            # A copy: ConsoleRenderer pops the fields it places, the fallback needs them all.
            text = cast(str, self.renderer(logger, method_name, dict(event_dict)))
        except Exception:  # noqa: BLE001
            text = self._fallback(logger, method_name, event_dict)
        return text.replace("\n", "\n  ") if "\n" in text else text


def renderers(fmt: str, colors: bool, as_text: bool) -> list[Processor]:
    """The last processors: the event as a line (bytes ending in a newline, or text)."""
    if fmt == "json":
        return [JSONRenderer(as_text=as_text)]
    steps: list[Processor]
    if fmt == "logfmt":
        steps = [
            LogfmtLine(
                structlog.processors.LogfmtRenderer(key_order=["timestamp", "level", "event"])
            )
        ]
    else:
        steps = [
            ConsoleLines(
                structlog.dev.ConsoleRenderer(
                    colors=colors,
                    exception_formatter=structlog.dev.plain_traceback,
                )
            )
        ]
    if not as_text:
        steps.append(encode_line)
    return steps


#: The processors that start rendering: reqlog's steps before the renderer run before them.
RENDERING: Final = (
    EscapeControls,
    JSONRenderer,
    SafeRenderer,
    structlog.processors.LogfmtRenderer,
    structlog.dev.ConsoleRenderer,
)
