"""Request IDs: which inbound values are accepted, and new ones made (UUID4s, in batches)."""

from __future__ import annotations

import os
import re
from typing import Final

__all__ = ["MAX_ID_LENGTH", "is_safe", "is_valid_request_id", "new_request_id"]

_REQUEST_ID = re.compile(
    r"[0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
#: Whatever a custom validator accepts, a request ID is at most this long and printable ASCII
#: without spaces: it goes into every log line and back out in a response header.
MAX_ID_LENGTH: Final = 128
_SAFE_ID = re.compile(r"[\x21-\x7e]{1,128}")


def is_valid_request_id(value: str) -> bool:
    """The default validator: a UUID (with or without hyphens) or 32 hex digits, nothing else.

    ``uuid.UUID()`` is looser (braces, ``urn:uuid:`` prefixes, surrounding whitespace and a
    leading newline all parse), so a regular expression matches the whole value instead.

    >>> is_valid_request_id("0123456789abcdef0123456789abcdef"), is_valid_request_id("{1}")
    (True, False)
    """
    return len(value) <= 36 and _REQUEST_ID.fullmatch(value) is not None


def is_safe(value: str) -> bool:
    """Whether ``value`` may be a request ID at all: 1 to 128 printable ASCII characters."""
    return _SAFE_ID.fullmatch(value) is not None


# Request IDs are UUID4s made 256 at a time from one os.urandom() call: building a
# uuid.UUID object per request cost more than the rest of the ID handling. The version and
# variant bits of all 256 are set at once, on the batch as one integer: a mask keeps every
# bit but those (byte 6's high nibble, byte 8's two high bits), then they are set.
_ID_BATCH = 256
_KEEP: Final = int.from_bytes(bytes([0xFF] * 6 + [0x0F, 0xFF, 0x3F] + [0xFF] * 7) * _ID_BATCH)
_SET: Final = int.from_bytes(bytes([0] * 6 + [0x40, 0, 0x80] + [0] * 7) * _ID_BATCH)
_spare_ids: list[str] = []


def new_request_id() -> str:
    """A new random request ID: a UUID4 as 32 lower-case hex digits."""
    try:
        return _spare_ids.pop()
    except IndexError:
        pass
    raw = int.from_bytes(os.urandom(16 * _ID_BATCH))
    # Cut into IDs by hex() itself (a space after every 16 bytes) and split(): C loops, half
    # the cost of slicing the digits 256 times in Python.
    _spare_ids.extend(((raw & _KEEP) | _SET).to_bytes(16 * _ID_BATCH).hex(" ", 16).split(" "))
    return _spare_ids.pop()


if hasattr(os, "register_at_fork"):
    # A forked worker must not hand out the IDs its parent also holds.
    os.register_at_fork(after_in_child=_spare_ids.clear)
