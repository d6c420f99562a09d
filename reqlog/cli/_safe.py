"""Text taken from a log, made safe to write to a terminal.

Logs hold what clients sent: a request path such as ``/x\\x1b]0;pwned\\x07\\x1b[2J`` would set
the terminal's title and clear its screen if written as it is. Every command passes text from
a log through :func:`escape` before writing it: control characters (C0, DEL, C1), the Unicode
line and paragraph separators and the bidirectional overrides (which reorder what is shown)
become visible escapes such as ``\\x1b`` and ``\\u2028``. Nothing else changes.
"""

from __future__ import annotations

import re
from typing import Any

# C0 and DEL, C1 (U+0085 NEL included), U+2028/U+2029, bidi embeddings, overrides, isolates.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """*text* with every unsafe character written as an escape (``\\x1b``, ``\\u2028``)."""
    return UNSAFE.sub(_escaped, text) if UNSAFE.search(text) else text


def safe(value: Any) -> str:
    """``str(value)``, escaped (``None`` becomes ``-``)."""
    return "-" if value is None else escape(value if isinstance(value, str) else str(value))


# What valid JSON may hold raw inside strings (C0 must already be escaped there, and outside
# strings only JSON's own whitespace appears).
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _json_escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def escape_json(text: str) -> str:
    """Valid JSON text with the unsafe characters JSON allows raw (DEL, C1, U+2028...) escaped.

    The result is the same JSON value: inside a string ``\\u2028`` means U+2028, and these
    characters cannot appear outside strings in valid JSON.
    """
    return _JSON_UNSAFE.sub(_json_escaped, text) if _JSON_UNSAFE.search(text) else text
