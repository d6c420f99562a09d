"""Reading log lines: files (plain or gzip), stdin, in large blocks, following growing files.

Everything here works on bytes and hands out *batches* (lists of lines without their newline)
so that the per-line work of the commands stays a tight loop over a list. Problems with the
input (a missing file, a truncated gzip stream, a line too long to be a log event) are recorded
in :class:`ReadStats` and reported once at the end; they never stop the other inputs.
"""

from __future__ import annotations

import gzip
import os
import sys
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, cast

BLOCK_SIZE = 1 << 20
#: Longest line considered; longer ones are skipped (and counted) instead of eating memory.
MAX_LINE = 4 << 20
_GZIP_MAGIC = b"\x1f\x8b"
STDIN = "-"


@dataclass
class ReadStats:
    """What happened while reading: counts of lines and the problems met."""

    lines: int = 0
    events: int = 0
    non_json: int = 0
    malformed: int = 0
    oversized: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, other: ReadStats) -> None:
        """Add the counts and problems of another part of the input."""
        self.lines += other.lines
        self.events += other.events
        self.non_json += other.non_json
        self.malformed += other.malformed
        self.oversized += other.oversized
        self.problems.extend(other.problems)

    def problem(self, message: str) -> None:
        """Record a problem with one input; reported on stderr at the end."""
        self.problems.append(message)

    def summary(self) -> list[str]:
        """Lines for stderr: the problems, then the skipped-line counts."""
        out = list(self.problems)
        if self.malformed:
            out.append(f"skipped {self.malformed:,} malformed line(s)")
        if self.oversized:
            out.append(f"skipped {self.oversized:,} line(s) longer than {MAX_LINE:,} bytes")
        return out

    @property
    def nothing_read(self) -> bool:
        """True when the inputs gave no usable line at all although something was wrong."""
        bad = self.problems or self.malformed or self.oversized
        return bool(bad) and self.events == 0 and self.non_json == 0


class _Source:
    """One input being read in blocks; keeps the partial last line between reads."""

    def __init__(self, name: str, fh: BinaryIO, *, followable: bool, stats: ReadStats) -> None:
        self.name = name
        self.fh = fh
        self.followable = followable
        self.stats = stats
        self.carry = b""
        self.skipping = False  # inside an oversized line, dropping bytes up to its newline
        self.eof = False

    def read_chunk(self, *, final: bool) -> bytes | None:
        """Return the next complete lines as one block (newlines kept, the last one included).

        ``b""`` when no complete line is ready, ``None`` at the end. With *final* the partial
        last line is handed out at end of input (a file not being followed); otherwise it is
        kept until its newline arrives.
        """
        try:
            block = b"" if self.eof else self._read()
        except EOFError:
            self.stats.problem(f"{self.name}: gzip stream is truncated; read what was there")
            block = b""
            self.eof = True
        except (OSError, zlib.error) as exc:
            self.stats.problem(f"{self.name}: {_reason(exc)}")
            block = b""
            self.eof = True
        if not block:
            if not final:
                return None if self.eof else b""
            self.eof = True
            tail, self.carry = self.carry, b""
            if tail and not self.skipping:
                self.stats.lines += 1
                return tail + b"\n"
            return None
        cut = block.rfind(b"\n") + 1
        if self.skipping:
            if not cut:
                return b""
            block = block[block.find(b"\n") + 1 :]
            cut = block.rfind(b"\n") + 1
            self.skipping = False
        if not cut:
            self.carry += block
            if len(self.carry) > MAX_LINE:
                self.carry = b""
                self.skipping = True
                self.stats.oversized += 1
            return b""
        chunk = self.carry + block[:cut] if self.carry else block[:cut]
        self.carry = block[cut:]
        self.stats.lines += chunk.count(b"\n")
        return chunk

    def _read(self) -> bytes:
        read1 = getattr(self.fh, "read1", None)
        if read1 is not None:
            data: bytes = read1(BLOCK_SIZE)
            return data
        return self.fh.read(BLOCK_SIZE)

    def rotated(self) -> bool:
        """True when the followed path now names another file, or the file was truncated."""
        try:
            st = os.stat(self.name)
        except OSError:
            return False
        own = os.fstat(self.fh.fileno())
        return st.st_ino != own.st_ino or st.st_size < self.fh.tell()

    def close(self) -> None:
        if self.fh is not sys.stdin.buffer:
            self.fh.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if exc.strerror[0].isupper() else exc.strerror
    return str(exc) or type(exc).__name__


def _open(name: str, stats: ReadStats) -> _Source | None:
    if name == STDIN:
        stdin = sys.stdin.buffer
        return _Source("<stdin>", stdin, followable=False, stats=stats)
    try:
        raw: BinaryIO = open(name, "rb")  # noqa: SIM115 - closed by _Source.close
    except OSError as exc:
        stats.problem(f"{name}: {_reason(exc)}")
        return None
    try:
        magic = raw.read(2)
        raw.seek(0)
    except OSError as exc:
        raw.close()
        stats.problem(f"{name}: {_reason(exc)}")
        return None
    if magic == _GZIP_MAGIC:
        gz = cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb"))
        return _Source(name, gz, followable=False, stats=stats)
    return _Source(name, raw, followable=True, stats=stats)


def iter_chunks(
    names: Sequence[str],
    stats: ReadStats,
    *,
    follow: bool = False,
    interval: float = 0.2,
    from_end: bool = False,
) -> Iterator[bytes]:
    """Yield blocks of complete lines from each input in turn (stdin when *names* is empty).

    With *follow*, after reaching the end of every input keep polling the plain files for
    new lines (like ``tail -F``: a truncated or replaced file is read again from its start)
    and yield ``b""`` after each idle poll, so callers can flush. Runs until interrupted.
    With *from_end* as well, followed files are read from their current end (``tail -f -n 0``).
    """
    followed: list[_Source] = []
    for name in names or [STDIN]:
        source = _open(name, stats)
        if source is None:
            continue
        keep = follow and source.followable
        if keep and from_end:
            source.fh.seek(0, os.SEEK_END)
        while (chunk := source.read_chunk(final=not keep)) is not None:
            if not chunk and keep:
                break
            if chunk:
                yield chunk
        if keep:
            followed.append(source)
        else:
            source.close()
    while followed:
        got = False
        for i, source in enumerate(followed):
            chunk = source.read_chunk(final=False)
            if chunk:
                got = True
                yield chunk
            elif source.rotated():
                source.close()
                reopened = _open(source.name, stats)
                if reopened is not None:
                    followed[i] = reopened
                    got = True
        if not got:
            yield b""
            time.sleep(interval)


def iter_batches(
    names: Sequence[str],
    stats: ReadStats,
    *,
    follow: bool = False,
    interval: float = 0.2,
    from_end: bool = False,
) -> Iterator[list[bytes]]:
    """Like :func:`iter_chunks`, split into lines (without their ``\\n`` or ``\\r\\n``)."""
    for chunk in iter_chunks(names, stats, follow=follow, interval=interval, from_end=from_end):
        lines = chunk.split(b"\n")
        lines.pop()
        if b"\r" in chunk:
            lines = [line.rstrip(b"\r") for line in lines]
        yield lines
