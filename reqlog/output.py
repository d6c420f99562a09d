"""Where rendered lines go: streams and files, the counters, failure reports, flush()."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, TypedDict

__all__ = [
    "FileSink",
    "Output",
    "OutputStats",
    "Sink",
    "StreamSink",
    "build_sinks",
    "flush",
    "output_stats",
]

#: How often one sink's failures may be reported on stderr.
REPORT_INTERVAL_S = 60.0


class OutputStats(TypedDict):
    """Counters since configure(): ``accepted == written + dropped`` once flushed."""

    accepted: int
    written: int
    dropped: int
    errors: int


class Sink:
    """One destination for rendered lines (bytes ending in a newline)."""

    name = "sink"

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Push buffered bytes out."""

    def close(self) -> None:
        """Release what the sink opened; streams it was handed stay open."""


class StreamSink(Sink):
    """A stream reqlog did not open: ``sys.stdout``, ``sys.stderr`` or a user's file object."""

    def __init__(self, stream: IO[Any], name: str | None = None) -> None:
        self.stream = stream
        self.name = name or getattr(stream, "name", None) or type(stream).__name__
        self._text = isinstance(stream, io.TextIOBase) or (
            not isinstance(stream, io.RawIOBase | io.BufferedIOBase) and hasattr(stream, "encoding")
        )

    def write(self, data: bytes) -> None:
        stream = self.stream
        if self._text:
            stream.write(data.decode("utf-8", "replace"))
        else:
            stream.write(data)
        stream.flush()

    def flush(self) -> None:
        self.stream.flush()


class FileSink(Sink):
    """A file reqlog opens for appending.

    Unbuffered ``O_APPEND`` writes, one ``write(2)`` per line: lines from several processes
    appending to one file land whole, never interleaved.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - closed by close()

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def close(self) -> None:
        self._file.close()


def build_sinks(spec: Any, option: str = "output") -> list[Sink]:
    """Turn an ``output=`` value into sinks, or raise ``ValueError`` naming the option."""
    if isinstance(spec, list | tuple):
        if not spec:
            msg = f"{option}: an empty list writes nowhere; pass at least one output"
            raise ValueError(msg)
        return [sink for item in spec for sink in build_sinks(item, option)]
    if spec == "stdout":
        return [StreamSink(sys.stdout, "stdout")]
    if spec == "stderr":
        return [StreamSink(sys.stderr, "stderr")]
    if isinstance(spec, str | os.PathLike):
        path = Path(spec)
        if str(spec) == "" or path.is_dir():
            msg = f"{option}: {str(spec)!r} is not a file path"
            raise ValueError(msg)
        if not path.parent.is_dir():
            msg = f"{option}: directory {str(path.parent)!r} does not exist"
            raise ValueError(msg)
        try:
            return [FileSink(path)]
        except OSError as exc:
            msg = f"{option}: cannot open {str(path)!r} for appending: {exc.strerror or exc}"
            raise ValueError(msg) from exc
    if hasattr(spec, "write"):
        return [StreamSink(spec)]
    msg = (
        f"{option}: expected 'stdout', 'stderr', a file path, a file object or a list of "
        f"those, got {spec!r}"
    )
    raise ValueError(msg)


class _Reporter:
    """Reports a failing sink on stderr at most once per interval, with what it suppressed."""

    def __init__(self, interval: float = REPORT_INTERVAL_S) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def report(self, key: str, what: str) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        more = self._suppressed.pop(key, 0)
        tail = f" ({more} more since the last report)" if more else ""
        _write_stderr(f"reqlog: {what}{tail}\n")


def _write_stderr(text: str) -> None:
    # The real stderr, byte-level: sys.stderr may be the very sink that is failing.
    with contextlib.suppress(OSError):
        os.write(2, text.encode("utf-8", "replace"))


class Output:
    """Fans each rendered line out to the sinks, counting, and never raising."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)
        self._lock = threading.Lock()
        self._reporter = _Reporter()
        self.accepted = 0
        self.written = 0
        self.dropped = 0
        self.errors = 0

    def write(self, line: bytes) -> None:
        with self._lock:
            self.accepted += 1
            failed = False
            for sink in self.sinks:
                try:
                    sink.write(line)
                except Exception as exc:  # noqa: BLE001 - a sink must never break the caller
                    failed = True
                    self.errors += 1
                    self._reporter.report(sink.name, f"cannot write to {sink.name}: {exc!r}")
            if failed:
                self.dropped += 1
            else:
                self.written += 1

    def report(self, key: str, what: str) -> None:
        """Report a logging failure (not a sink's) on stderr, rate-limited per key."""
        with self._lock:
            self.errors += 1
            self._reporter.report(key, what)

    def flush(self, timeout: float | None = None) -> bool:
        with self._lock:
            for sink in self.sinks:
                try:
                    sink.flush()
                except Exception as exc:  # noqa: BLE001
                    self.errors += 1
                    self._reporter.report(sink.name, f"cannot flush {sink.name}: {exc!r}")
        return True

    def stats(self) -> OutputStats:
        with self._lock:
            return OutputStats(
                accepted=self.accepted,
                written=self.written,
                dropped=self.dropped,
                errors=self.errors,
            )

    def close(self) -> None:
        self.flush()
        for sink in self.sinks:
            # Closing a broken sink has nothing left to report.
            with contextlib.suppress(Exception):
                sink.close()


def flush(timeout: float | None = None) -> bool:
    """Block until every event accepted so far is written; ``False`` if ``timeout`` ran out."""
    from reqlog import _config

    return _config.current_output().flush(timeout)


def output_stats() -> OutputStats:
    """Accepted, written, dropped and error counts of the current output."""
    from reqlog import _config

    return _config.current_output().stats()
