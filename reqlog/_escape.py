"""One event, one line: the escaping the renderers apply, whatever an event contains.

orjson and structlog's console and logfmt renderers escape CR, LF and the other C0 controls,
but leave raw what a reader splitting lines the way Python's ``str.splitlines()`` does takes
for a line break too: U+0085 (NEL) and the other C1 controls, U+2028 and U+2029. Some input
they refuse outright: orjson raises on a lone surrogate (``"a\\ud800b"``, which ``json.loads``
happily makes of client input), logfmt on a key with a space. This module turns all of that
into backslash escapes, so that no event is ever split, forged or lost for what it contains.

The checks run in C (``bytes.isascii``, ``in``, ``str.isprintable``): a line of plain text pays
a scan of its bytes and nothing else. Only a line that holds one of these characters pays for
the rewriting.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

import orjson

__all__ = [
    "escape_json",
    "escape_key",
    "escape_multiline",
    "escape_text",
    "jsonable",
    "needs_json_escape",
    "safe_repr",
]


def _escape_of(code: int) -> str:
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


#: Characters console and logfmt write as a backslash escape: the C0 controls but tab, DEL,
#: the C1 controls (U+0085 among them), the line and paragraph separators, lone surrogates.
TEXT_ESCAPES: Final[dict[int, str]] = {
    code: _escape_of(code)
    for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *range(0xD800, 0xE000))
    if code != 0x09
}
_TEXT_RAW: Final = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_TEXT_RAW_BUT_LF: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _escaped(match: re.Match[str]) -> str:
    return TEXT_ESCAPES[ord(match.group())]


def escape_text(text: str) -> str:
    """``text`` with every character of ``TEXT_ESCAPES`` as a backslash escape.

    ``str.isprintable()`` is False for all of them (and for a few harmless ones, such as tab,
    which the rewrite then leaves alone): one pass in C for the common case. The rewrite is a
    regular expression with a callback per match, not ``str.translate``, which looks every
    character of the text up in the table.
    """
    return text if text.isprintable() else _TEXT_RAW.sub(_escaped, text)


def escape_multiline(text: str) -> str:
    """Like :func:`escape_text`, line feeds kept."""
    return text if text.isprintable() else _TEXT_RAW_BUT_LF.sub(_escaped, text)


#: Besides the non-printable ones, characters a key cannot hold as they are: the separators
#: of ``key=value`` pairs, quotes, and the backslash, so that an escape is never ambiguous.
_KEY_SPECIAL: Final = frozenset(' ="\\')


def escape_key(key: Any) -> str:
    """A key as console and logfmt can show it: text, with no space, ``=``, quote, backslash
    or non-printable character (those become ``\\x20``, ``\\x3d``... escapes)."""
    text: str = key if type(key) is str else safe_str(key)
    if text.isidentifier():
        return text
    if text.isprintable() and not _KEY_SPECIAL.intersection(text):
        return text
    return "".join(
        c if c.isprintable() and c not in _KEY_SPECIAL else _escape_of(ord(c)) for c in text
    )


def safe_repr(obj: Any) -> str:
    """``repr(obj)``; a user object whose ``__repr__`` raises costs its field, not the event."""
    try:
        return repr(obj)
    except Exception:  # noqa: BLE001
        return f"<unrepresentable {type(obj).__qualname__}>"


def safe_str(obj: Any) -> str:
    try:
        return str(obj)
    except Exception:  # noqa: BLE001
        return safe_repr(obj)


# --- JSON -------------------------------------------------------------------------------------

# In orjson's output (UTF-8, every C0 control already escaped), these bytes can only be
# characters inside strings: DEL, the C1 controls (C2 80..C2 9F), U+2028 and U+2029.
_JSON_C1: Final = re.compile(rb"\xc2[\x80-\x9f]")


def _c1_escaped(match: re.Match[bytes]) -> bytes:
    return b"\\u00%02x" % match.group()[1]


def needs_json_escape(data: bytes) -> bool:
    """Whether orjson's ``data`` may hold a character :func:`escape_json` rewrites.

    Scans in C, each a ``memchr``: DEL, then (only for a line that is not pure ASCII) the
    lead bytes of the C1 controls (C2) and of U+2028/U+2029 (E2). A false positive (``£`` is
    C2 A3, ``—`` is E2 80 94) only costs escape_json()'s own scans. The needles are
    integers on purpose: ``b"\\x7f" in data`` first tries the needle as an integer and raises
    and clears a TypeError inside CPython, some 3,800 instructions per line on 3.11.
    """
    return 0x7F in data or (not data.isascii() and (0xC2 in data or 0xE2 in data))


def escape_json(data: bytes) -> bytes:
    """orjson's ``data`` with DEL, C1 controls, U+2028 and U+2029 as ``\\uXXXX`` escapes.

    One search per kind, each in C: ``replace`` for the fixed sequences, a regular expression
    whose literal first byte (C2) lets it skip ahead like ``memchr`` for the C1 controls. A
    line whose non-ASCII text is only, say, curly quotes (E2 80 99) pays two scans.
    """
    if 0x7F in data:
        data = data.replace(b"\x7f", b"\\u007f")
    if 0xC2 in data:
        data = _JSON_C1.sub(_c1_escaped, data)
    if 0xE2 in data:
        data = data.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
    return data


#: orjson refuses containers nested deeper than 254 levels; past this depth a value is its repr.
_MAX_DEPTH: Final = 200
_INT_RANGE: Final = range(-(2**63), 2**64)


def jsonable(value: Any, default: Callable[[Any], Any], option: int, depth: int = 0) -> Any:
    """``value`` rebuilt from what orjson always serialises, for an event it refused.

    Strings keep their text with lone surrogates as ``\\udXXX`` escapes (the Python spelling,
    which every JSON parser reads back as text), dict keys become such strings, sets and
    tuples lists, integers past 64 bits their digits, and any other value orjson (with
    ``default``) cannot serialise alone its ``repr()``. Nested dicts stay dicts: an ECS event
    keeps its shape when one field holds a value orjson refuses.
    """
    kind = type(value)
    if kind is str:
        return _text(value)
    if value is None or kind is bool or kind is float:
        return value
    if kind is int:
        return value if value in _INT_RANGE else str(value)
    if depth >= _MAX_DEPTH:
        return _text(safe_repr(value))
    if isinstance(value, dict):
        return {
            _text(k if type(k) is str else safe_str(k)): jsonable(v, default, option, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, default, option, depth + 1) for v in value]
    if isinstance(value, str):
        return _text(str.__str__(value))
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    try:
        orjson.dumps(value, default=default, option=option)
    except (TypeError, orjson.JSONEncodeError):
        return _text(safe_repr(value))
    return value


def _text(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
