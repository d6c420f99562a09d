"""Where rendered lines go: streams and files, the background writer, its bounds and counters.

A leaf module: it imports nothing of reqlog (structlog's ``_output.py`` is the model). Which
output is the current one, and ``reqlog.flush()``, are reqlog's live configuration
(``reqlog._state``).
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import io
import logging
import logging.handlers
import multiprocessing
import os
import select
import stat
import sys
import threading
import time
import weakref
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Final, Literal, NotRequired, TypedDict

__all__ = [
    "FileSink",
    "Output",
    "OutputStats",
    "Sink",
    "StreamSink",
    "build_sinks",
]

#: How often one sink's failures may be reported on stderr.
REPORT_INTERVAL_S = 60.0
#: The background queue's default bounds: in lines (about 4 MB of typical access events), and
#: in bytes, whatever the lines' size.
DEFAULT_QUEUE_SIZE: Final = 10_000
DEFAULT_QUEUE_BYTES: Final = 8 << 20
#: Share of the queue past which lines below warning are dropped: the rest is kept for
#: warnings and errors, so they are the last to go.
HIGH_WATER: Final = 0.9
#: Bounds on the automatic flushes: at interpreter exit, on lifespan shutdown, on SIGTERM.
#: They share one deadline, set by the first of them (Output.finish): shutdown waits for the
#: output at most this long in all, plus LATE_WAIT_S for a wait that starts after it.
EXIT_FLUSH_TIMEOUT_S: Final = 5.0
SHUTDOWN_FLUSH_TIMEOUT_S: Final = 5.0
SIGNAL_FLUSH_TIMEOUT_S: Final = 5.0
LATE_WAIT_S: Final = 1.0
#: How long the one report of lines given up at shutdown may wait for stderr.
REPORT_TIMEOUT_S: Final = 0.5
#: Largest write to a pipe that POSIX guarantees lands whole among other writers' writes.
PIPE_BUF: Final = getattr(select, "PIPE_BUF", 4096)
#: Largest single write to a regular file: whole lines, one ``write(2)`` each.
FILE_CHUNK_BYTES: Final = 1 << 20
#: How long the writer waits for more lines after a batch before it sleeps until woken: the
#: bound on how late a line is written under steady load, and what saves a wake-up per line.
LINGER_S: Final = 0.01
#: How often a file sink checks whether logrotate moved its file away.
REOPEN_CHECK_S: Final = 1.0

Overflow = Literal["drop", "block"]
_OVERFLOWS: Final = ("drop", "block")
_WARNING: Final = logging.WARNING
_INFO: Final = logging.INFO


class OutputStats(TypedDict):
    """Counters since configure(): ``accepted == written + dropped`` once flushed."""

    accepted: int
    written: int
    dropped: int
    errors: int
    #: With ``configure(otlp=...)``: the OpenTelemetry records' own counts (included above).
    otlp: NotRequired[OutputStats]


# --- sinks ------------------------------------------------------------------------------------


class Sink:
    """One destination for rendered lines (bytes ending in a newline).

    ``write`` receives one or more whole lines and writes them all or raises; ``chunk_bytes``
    tells the background writer how many bytes of whole lines it may hand over at once (the
    size up to which the destination keeps one write from interleaving with other processes').
    """

    name = "sink"
    chunk_bytes: int = PIPE_BUF

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Push buffered bytes out."""

    def take_back(self, size: int) -> None:
        """Remove the last ``size`` bytes written, the remains of a line a failed write tore,
        where the destination allows it (see :func:`_cut_tail`)."""

    def close(self) -> None:
        """Release what the sink opened; streams it was handed stay open."""


class PartialWriteError(OSError):
    """A write that failed after ``written`` bytes of its data (a disk that filled up)."""

    def __init__(self, cause: OSError, written: int) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.written = written


class StreamSink(Sink):
    """A stream reqlog did not open: ``sys.stdout``, ``sys.stderr`` or a user's file object.

    When the stream is a real file descriptor (the usual stdout of a server), lines go
    straight to it with ``os.write``, in chunks of whole lines no longer than ``PIPE_BUF`` on
    pipes and sockets: several worker processes sharing one stdout never tear each other's
    lines, and Python's own buffer of ``sys.stdout`` stays empty, so a reader that went away
    cannot make the interpreter's final flush fail. Other streams get ``write`` + ``flush``.
    """

    def __init__(self, stream: IO[Any] | None, name: str | None = None, *, owned: bool = False):
        self.stream = stream
        self.name = str(name or getattr(stream, "name", None) or type(stream).__name__)
        #: True for "stdout"/"stderr" given by name: reqlog may write from its own thread.
        self.owned = owned
        self.broken = stream is None
        self._text = isinstance(stream, io.TextIOBase) or (
            not isinstance(stream, io.RawIOBase | io.BufferedIOBase) and hasattr(stream, "encoding")
        )
        self._fd: int | None = None
        if owned and stream is not None:
            self._fd = _real_fd(stream)
        if self._fd is None:
            self.chunk_bytes = FILE_CHUNK_BYTES
        else:
            with contextlib.suppress(OSError):
                if stat.S_ISREG(os.fstat(self._fd).st_mode):
                    self.chunk_bytes = FILE_CHUNK_BYTES

    def write(self, data: bytes) -> None:
        if self.broken:
            msg = f"{self.name} is closed"
            raise BrokenPipeError(errno.EPIPE, msg)
        fd = self._fd
        if fd is None:
            stream: Any = self.stream  # not None: broken otherwise
            stream.write(data.decode("utf-8", "replace") if self._text else data)
            stream.flush()
            return
        try:
            # What print() left in Python's buffer goes first, so the order holds.
            if self.stream is not None and not self.stream.closed:
                self.stream.flush()
            _write_all(fd, data)
        except (BrokenPipeError, ValueError) as exc:
            self._mark_broken(fd)
            raise BrokenPipeError(errno.EPIPE, f"{self.name} is closed") from exc
        except OSError as exc:
            if exc.errno in (errno.EBADF, errno.EPIPE):
                self._mark_broken(fd)
            raise

    def take_back(self, size: int) -> None:
        if self._fd is not None and not self.broken:
            _cut_tail(self._fd, size)

    def _mark_broken(self, fd: int) -> None:
        # Nobody will ever read this pipe again. Point the descriptor at /dev/null so that
        # print() in the app and the interpreter's own flush of sys.stdout at exit do not
        # fail too (a BrokenPipeError there turns exit status 0 into 120).
        self.broken = True
        if fd in (1, 2):
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, fd)
                os.close(devnull)

    def flush(self) -> None:
        if self.stream is not None and not self.broken:
            self.stream.flush()


def _real_fd(stream: IO[Any]) -> int | None:
    try:
        fd = stream.fileno()
        os.fstat(fd)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    return fd


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``, or raise; PartialWriteError says how much was written before."""
    try:
        done = os.write(fd, data)  # almost always all of it, with no view to make
    except BlockingIOError:
        done = 0
    if done == len(data):
        return
    view = memoryview(data)
    while done < len(view):
        try:
            done += os.write(fd, view[done:])
        except BlockingIOError:
            # Someone made the descriptor non-blocking; this is the writer's thread: wait.
            select.select([], [fd], [], 1.0)
        except OSError as exc:
            if done:
                raise PartialWriteError(exc, done) from exc
            raise


def _cut_tail(fd: int, size: int) -> bool:
    """Cut the last ``size`` bytes off the regular file open at ``fd``, if it still ends
    with them (no other process appended since): the remains of a line torn by a write that
    failed half way (a full disk) would otherwise be glued to the next line written.

    ``True`` when it did. On a pipe or a terminal the bytes are gone; nothing to take back.
    """
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        position = os.lseek(fd, 0, os.SEEK_CUR)
        if os.fstat(fd).st_size != position or position < size:
            return False
        os.ftruncate(fd, position - size)
        os.lseek(fd, position - size, os.SEEK_SET)
    except OSError:
        return False
    return True


class _BinaryOpen:
    """Mixin for logging's file handlers: open unbuffered, in append mode, in bytes.

    Every ``write`` is then one ``write(2)`` on an ``O_APPEND`` descriptor: whole lines from
    several processes appending to one file land whole, never interleaved.
    """

    baseFilename: str

    def _open(self) -> Any:
        return open(self.baseFilename, "ab", buffering=0)


class _Plain(_BinaryOpen, logging.handlers.WatchedFileHandler):
    pass


class _BySize(_BinaryOpen, logging.handlers.RotatingFileHandler):
    pass


class _ByTime(_BinaryOpen, logging.handlers.TimedRotatingFileHandler):
    pass


class FileSink(Sink):
    """A file reqlog opens for appending, optionally rotated by size or by time.

    The renaming, numbering and pruning of old files is the standard library's
    (``RotatingFileHandler``, ``TimedRotatingFileHandler``); reqlog only decides when, and
    writes bytes. Like ``WatchedFileHandler``, it notices when an external logrotate moved
    the file away (device or inode changed) and reopens the path.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        rotate_bytes: int | None = None,
        rotate_when: str | None = None,
        backups: int = 0,
    ) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.rotate_bytes = rotate_bytes
        # The handler's stream is a binary FileIO, not the text stream typeshed expects.
        handler: Any
        if rotate_when is not None:
            handler = _ByTime(self.path, when=rotate_when, backupCount=backups, utc=True)
        elif rotate_bytes is not None:
            handler = _BySize(self.path, mode="ab", backupCount=backups)
        else:
            handler = _Plain(self.path, mode="ab")
        self._handler = handler
        self.chunk_bytes = min(FILE_CHUNK_BYTES, rotate_bytes or FILE_CHUNK_BYTES)
        self._size = self._current_size()
        self._next_check = time.monotonic() + REOPEN_CHECK_S

    def _current_size(self) -> int:
        stream = self._handler.stream
        return os.fstat(stream.fileno()).st_size if stream is not None else 0

    def write(self, data: bytes) -> None:
        handler = self._handler
        now = time.monotonic()
        if now >= self._next_check or handler.stream is None:
            self._next_check = now + REOPEN_CHECK_S
            self._reopen_if_needed()
        if isinstance(handler, _ByTime):
            if time.time() >= handler.rolloverAt:
                self._rollover()
        elif (
            self.rotate_bytes is not None
            and self._size
            and (self._size + len(data) > self.rotate_bytes)
        ):
            self._rollover()
        stream = handler.stream
        if stream is None:
            stream = handler.stream = handler._open()
            self._size = self._current_size()
        try:
            _write_all(stream.fileno(), data)
        except OSError:
            with contextlib.suppress(OSError):
                self._size = self._current_size()
            raise
        self._size += len(data)

    def take_back(self, size: int) -> None:
        stream = self._handler.stream
        if stream is not None and _cut_tail(stream.fileno(), size):
            self._size = self._current_size()

    def _reopen_if_needed(self) -> None:
        handler = self._handler
        if handler.stream is None:
            handler.stream = handler._open()
        elif isinstance(handler, logging.handlers.WatchedFileHandler):
            handler.reopenIfNeeded()
        else:
            try:
                moved = not os.path.samestat(os.stat(self.path), os.fstat(handler.stream.fileno()))
            except OSError:
                moved = True
            if moved:
                handler.stream.close()
                handler.stream = None
                handler.stream = handler._open()
        self._size = self._current_size()

    def _rollover(self) -> None:
        self._handler.doRollover()
        self._size = self._current_size()

    def close(self) -> None:
        self._handler.close()


def build_sinks(
    spec: Any,
    option: str = "output",
    *,
    rotate_bytes: int | None = None,
    rotate_when: str | None = None,
    backups: int = 0,
) -> list[Sink]:
    """Turn an ``output=`` value into sinks, or raise ``ValueError`` naming the option.

    ``rotate_bytes``, ``rotate_when`` and ``backups`` apply to the file paths among them.
    """
    if isinstance(spec, list | tuple):
        if not spec:
            msg = f"{option}: an empty list writes nowhere; pass at least one output"
            raise ValueError(msg)
        sinks: list[Sink] = []
        try:
            for item in spec:
                if isinstance(item, list | tuple):
                    msg = f"{option}: expected a flat list of outputs, got a nested {item!r}"
                    raise ValueError(msg)
                sinks += build_sinks(
                    item,
                    option,
                    rotate_bytes=rotate_bytes,
                    rotate_when=rotate_when,
                    backups=backups,
                )
        except Exception:
            for sink in sinks:
                sink.close()
            raise
        return sinks
    if spec == "stdout":
        return [StreamSink(sys.stdout, "stdout", owned=True)]
    if spec == "stderr":
        return [StreamSink(sys.stderr, "stderr", owned=True)]
    if isinstance(spec, str | os.PathLike):
        path = Path(spec)
        if str(spec) == "" or path.is_dir():
            msg = f"{option}: {str(spec)!r} is not a file path"
            raise ValueError(msg)
        if not path.parent.is_dir():
            msg = f"{option}: directory {str(path.parent)!r} does not exist"
            raise ValueError(msg)
        rotating = rotate_bytes is not None or rotate_when is not None
        if rotating and path.exists() and not path.is_file():
            # /dev/null, a FIFO: nothing to rotate, and renaming them would be wrong.
            rotate_bytes = rotate_when = None
            rotating = False
        if rotating:
            _refuse_rotation_across_processes("rotate_bytes" if rotate_bytes else "rotate_when")
        try:
            return [
                FileSink(path, rotate_bytes=rotate_bytes, rotate_when=rotate_when, backups=backups)
            ]
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


def _several_processes() -> str | None:
    """Why this process looks like one of several writing the same files, or ``None``."""
    concurrency = os.environ.get("WEB_CONCURRENCY", "")
    if concurrency.strip().isdigit() and int(concurrency) > 1:
        return f"WEB_CONCURRENCY={concurrency}"
    if (
        "gunicorn" in os.environ.get("SERVER_SOFTWARE", "")
        or "gunicorn" in Path(sys.argv[0] if sys.argv else "").name
    ):
        return "running under gunicorn, which can run and add worker processes"
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        value = None
        if arg in ("--workers", "-w") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--workers="):
            value = arg.partition("=")[2]
        if value is not None and value.isdigit() and int(value) > 1:
            return f"{arg.partition('=')[0]} {value} on the command line"
    if multiprocessing.parent_process() is not None and "--reload" not in argv:
        return "a child process started by multiprocessing (uvicorn --workers does this)"
    return None


def _refuse_rotation_across_processes(option: str) -> None:
    reason = _several_processes()
    if reason is None:
        return
    msg = (
        f"{option}: rotating a log file inside the process is unsafe when several processes "
        f"write it ({reason}): each would rename the file under the others and lines would be "
        "lost. Drop rotate_bytes/rotate_when and rotate externally with logrotate (without "
        "copytruncate): every process appends whole lines and reopens the file as soon as "
        "logrotate moves it. Or give each worker its own file."
    )
    raise ValueError(msg)


# --- failure reports ----------------------------------------------------------------------------


class _Reporter:
    """Reports a failing sink on stderr at most once per interval, with what it suppressed."""

    def __init__(self, interval: float = REPORT_INTERVAL_S) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def report(self, key: str, what: str) -> str | None:
        """The text to print now, or ``None`` when this key was reported too recently."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        more = self._suppressed.pop(key, 0)
        tail = f" ({more} more since the last report)" if more else ""
        return f"reqlog: {what}{tail}\n"


def _write_stderr(text: str, timeout: float | None = None) -> None:
    """Write to the real stderr, byte-level: sys.stderr may be the very sink that is failing.

    With ``timeout``, only if stderr can take the text within that many seconds: a pipe
    nobody reads must not hold up the caller (the shutdown). A write of up to PIPE_BUF bytes
    to a pipe that select() finds writable does not block.
    """
    data = text.encode("utf-8", "replace")
    with contextlib.suppress(OSError, ValueError):
        if timeout is not None:
            data = data[:PIPE_BUF]
            if not select.select([], [2], [], timeout)[1]:
                return
        os.write(2, data)


def _default_render(event: str, level: str, fields: dict[str, Any]) -> bytes:
    import orjson

    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    record = {"event": event, "level": level, "timestamp": now + "Z", "logger": "reqlog", **fields}
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


#: Renders reqlog's own events (``logs_dropped``) as the configured format would.
Render = Callable[[str, str, dict[str, Any]], bytes]


# --- the output ---------------------------------------------------------------------------------


class Output:
    """Fans each rendered line out to the sinks, counting, and never raising.

    Synchronous by default: ``write`` writes before it returns. With ``background=True`` it
    only appends to a bounded queue (a lock, a copy into one buffer) and one daemon thread
    writes what is queued in batches: one ``write(2)`` per chunk of whole lines. When the
    queue is full (``queue_size`` lines or ``queue_bytes`` bytes), ``overflow="drop"`` drops
    the line (lines below warning already once it is 90% full) and counts it; the writer then
    writes one ``logs_dropped`` warning with the count. ``overflow="block"`` makes the caller
    wait for room instead.

    The counters count events, not reqlog's own ``logs_dropped`` notices: ``dropped`` is the
    number of events missing from the output.
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        *,
        background: bool = False,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        overflow: Overflow = "drop",
        render: Render | None = None,
        report_interval: float = REPORT_INTERVAL_S,
    ) -> None:
        self.sinks = list(sinks)
        self.background = background
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.overflow = overflow
        self._render = render or _default_render
        # Reentrant: a SIGTERM handler that flushes may run while the main thread holds it.
        self._lock = threading.RLock()
        self._progress = threading.Condition(self._lock)  # flush() and blocked callers wait
        self._progress_waiters = 0
        # The writer sleeps on this plain lock (held while nobody rang): see _doze(). A
        # Condition would cost every line that wakes the writer a few thousand instructions of
        # Python-level bookkeeping, on both threads.
        self._bell = threading.Lock()
        self._bell.acquire()
        self._lingering = False
        self._reporter = _Reporter(report_interval)
        # The queue: the lines one after the other in one buffer, and where each ends. orjson
        # hands out its lines in 8 KB allocations whatever their length; copied here, a queued
        # line costs its bytes and 8 more (RSS measured in tests/test_e2e_output.py).
        self._buf = bytearray()
        self._ends = array("Q")
        self._soft_limit = max(1, int(queue_size * HIGH_WATER))
        self._soft_bytes = max(1, int(queue_bytes * HIGH_WATER))
        self._idle = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self._overflow_unreported = 0
        # logs_dropped notices not written yet, by reason: written after the next batch the
        # sinks take whole.
        self._owed: dict[str, int] = {}
        self._notice_in_flight = False
        self._last_batch_ok = True
        self._reports: list[str] = []
        # Shutdown (finish(), write_through()): a deadline shared by every later wait, and
        # whether reqlog gave up on the sinks.
        self._deadline: float | None = None
        self._through = False
        self._abandoned = False
        self.accepted = 0
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self._usual = False
        if background:
            _BACKGROUND.add(self)
        else:
            # write() is _write_now() itself: one call per event instead of two.
            self.write = self._write_now  # type: ignore[method-assign]

    # -- the caller's side ---------------------------------------------------------------------

    def write(self, line: bytes, level: int = _INFO) -> None:
        """Accept one rendered line; ``level`` decides what goes first when the queue fills.

        This is the background writer's side; a synchronous output's ``write`` is
        :meth:`_write_now` (bound in ``__init__``).
        """
        # Every event takes this path: the lock by acquire()/release() (half the cost of a
        # with statement), and one flag for the rare states (see _write_unusual).
        lock = self._lock
        lock.acquire()
        try:
            ends = self._ends
            buf = self._buf
            # _write_unusual() checks these again, and takes a first line of any size.
            if (
                not self._usual
                or len(ends) >= self._soft_limit
                or len(buf) + len(line) > self._soft_bytes
            ):
                self._write_unusual(line, level)
                return
            self.accepted += 1
            buf += line
            ends.append(len(buf))
            if self._idle:
                self._idle = False
                self._bell.release()
        finally:
            lock.release()

    def _write_unusual(self, line: bytes, level: int) -> None:
        """With the lock held: write() when the writer has not started, the queue is past a
        high-water mark, or the output is ending (given up on, or writing through)."""
        self.accepted += 1
        if self._abandoned:
            self.dropped += 1
            return
        count = len(self._ends)
        if (
            count
            and (count >= self._soft_limit or len(self._buf) + len(line) > self._soft_bytes)
            and not self._room(level, len(line))
        ):
            return
        # Not local aliases: _room() may have waited while the writer swapped them.
        self._buf += line
        self._ends.append(len(self._buf))
        if self._idle:
            self._idle = False
            self._bell.release()
        elif self._thread is None:
            self._start()
        if self._through and threading.current_thread() is not self._thread:
            self._wait_written(self.accepted, self._shutdown_deadline(None))

    def _check_usual(self) -> None:
        """Whether write() may take its short path: the writer started, and the output is not
        ending. Called wherever one of those changes."""
        self._usual = self._thread is not None and not (self._through or self._abandoned)

    def _full(self, size: int) -> bool:
        count = len(self._ends)
        # An empty queue takes any one line, however long: it is dropped no sooner than
        # the writer could have written it.
        return count >= self.queue_size or (count > 0 and len(self._buf) + size > self.queue_bytes)

    def _room(self, level: int, size: int) -> bool:
        # Called with the lock held, past a high-water mark.
        if self.overflow == "block":
            if threading.current_thread() is self._thread:
                self._drop_one()
                return False
            while self._full(size) and self._writer_alive() and not self._abandoned:
                self._wake_writer()
                self._wait_progress(0.5)
            if not self._full(size) and not self._abandoned:
                return True
        elif level >= _WARNING and not self._full(size):
            return True
        self._drop_one()
        return False

    def _drop_one(self) -> None:
        self.dropped += 1
        if self._abandoned:
            return
        self._overflow_unreported += 1
        if self._idle:
            self._wake_writer()

    def _write_now(self, line: bytes, level: int = _INFO) -> None:
        # Every event of a synchronous output takes this path: the lock by acquire()/release(),
        # as in write().
        lock = self._lock
        lock.acquire()
        try:
            self.accepted += 1
            ok = True
            for sink in self.sinks:
                try:
                    sink.write(line)
                except Exception as exc:  # noqa: BLE001 - a sink must never break the caller
                    ok = False
                    self.errors += 1
                    _take_back_torn(sink, exc, 0, [len(line)])
                    self._report_now(sink.name, f"cannot write to {sink.name}: {exc!r}")
            if ok:
                self.written += 1
            else:
                self.dropped += 1
        finally:
            lock.release()

    def report(self, key: str, what: str) -> None:
        """Report a logging failure (not a sink's) on stderr, rate-limited per key."""
        with self._lock:
            self.errors += 1
            text = self._reporter.report(key, what)
            if text is None:
                return
            if self.background and self._writer_alive():
                # stderr may be a stalled pipe: the writer's thread waits on it, not the caller.
                self._reports.append(text)
                if self._idle:
                    self._wake_writer()
                return
            # After giving up at shutdown, stderr may be the stalled pipe: a bounded attempt.
            timeout = REPORT_TIMEOUT_S if self._abandoned else None
        _write_stderr(text, timeout)

    def _report_now(self, key: str, what: str) -> None:
        text = self._reporter.report(key, what)
        if text is not None:
            _write_stderr(text)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every line accepted so far is written (or dropped); ``False`` on timeout.

        A ``logs_dropped`` notice due is waited for too, unless the sinks are failing.
        """
        if not self.background or threading.current_thread() is self._thread:
            with self._lock:
                for sink in self.sinks:
                    try:
                        sink.flush()
                    except Exception as exc:  # noqa: BLE001
                        self.errors += 1
                        self._report_now(sink.name, f"cannot flush {sink.name}: {exc!r}")
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            return self._wait_written(self.accepted, deadline, give_up=False)

    def _wait_written(self, target: int, deadline: float | None, *, give_up: bool = True) -> bool:
        """With the lock held: wait until the first ``target`` lines are written or dropped.

        ``deadline`` (``time.monotonic()``) bounds the wait; with ``give_up``, reqlog gives up
        on the sinks when it passes (shutdown).
        """
        while not self._abandoned and (
            self.written + self.dropped < target
            or self._overflow_unreported
            or self._notice_in_flight
            or (self._owed and self._last_batch_ok)
        ):
            if not self._writer_alive():
                if self._thread is None and self._ends:
                    self._start()
                else:
                    # Nobody to wait for: done, unless lines (not only a notice) are left.
                    return self.written + self.dropped >= target
            self._wake_writer()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                if give_up:
                    self._abandon()
                return False
            self._wait_progress(remaining)
        return True

    def finish(self, timeout: float | None = SHUTDOWN_FLUSH_TIMEOUT_S) -> bool:
        """The last flush, at the end of the process: ``False`` if reqlog gave up on the sinks.

        It waits at most ``timeout`` seconds, and never past the deadline set by the first
        finish() (lifespan shutdown, SIGTERM or interpreter exit, whichever comes first),
        except for a grace of ``LATE_WAIT_S`` given to a wait that starts after it. When the
        time runs out, every line not written yet is counted as dropped, the loss is reported
        once on stderr, and every later line is dropped and counted at once: whatever the
        sinks do (a pipe nobody reads, a hung file system), the process can end.
        """
        if not self.background or threading.current_thread() is self._thread:
            return self.flush(timeout)
        with self._lock:
            if self._abandoned:
                return False
            return self._wait_written(self.accepted, self._shutdown_deadline(timeout))

    def write_through(self, timeout: float | None = SHUTDOWN_FLUSH_TIMEOUT_S) -> None:
        """finish(), then make every later ``write()`` wait until its line is written.

        For the end of an application's life (lifespan shutdown): the server logs a few more
        lines, then may die of the SIGTERM it re-raises, which skips atexit and would lose
        whatever the writer thread had not written yet. No request is served any more, so
        waiting costs nothing that matters; the waits share finish()'s deadline.
        """
        if not self.background:
            return
        self.finish(timeout)
        with self._lock:
            self._through = True
            self._check_usual()

    def _shutdown_deadline(self, timeout: float | None) -> float | None:
        now = time.monotonic()
        if timeout is not None and self._deadline is None:
            self._deadline = now + timeout
        if self._deadline is None:
            return None
        late = now + (LATE_WAIT_S if timeout is None else min(timeout, LATE_WAIT_S))
        return max(self._deadline, late)

    def _abandon(self) -> None:
        """With the lock held: give up on the sinks; what is not written is dropped."""
        self._abandoned = True
        self._check_usual()
        pending = self.accepted - self.written - self.dropped
        self.dropped += pending
        self._buf, self._ends = bytearray(), array("Q")
        self._overflow_unreported = 0
        self._owed.clear()
        self._wake_writer()
        self._progress.notify_all()
        names = ", ".join(sink.name for sink in self.sinks)
        text = (
            f"reqlog: gave up on {names} at the shutdown deadline: {pending} lines not "
            f"written, counted as dropped ({self.dropped} dropped since configure())\n"
        )
        # The lock is held, and stderr may be stalled too: one bounded attempt.
        _write_stderr(text, timeout=REPORT_TIMEOUT_S)

    def stats(self) -> OutputStats:
        with self._lock:
            return OutputStats(
                accepted=self.accepted,
                written=self.written,
                dropped=self.dropped,
                errors=self.errors,
            )

    def close(self, timeout: float | None = EXIT_FLUSH_TIMEOUT_S) -> None:
        """Flush (within ``timeout``), stop the writer, close the files reqlog opened."""
        self.flush(timeout)
        thread = self._thread
        with self._lock:
            self._closing = True
            self._wake_writer()
        if thread is not None and thread is not threading.current_thread():
            thread.join(0.0 if timeout is None else min(timeout, 1.0))
        _BACKGROUND.discard(self)
        for sink in self.sinks:
            # Closing a broken sink has nothing left to report.
            with contextlib.suppress(Exception):
                sink.close()

    # -- the writer's side ---------------------------------------------------------------------

    def _start(self) -> None:
        if self._closing or self._abandoned:
            return
        self._thread = threading.Thread(target=self._run, name="reqlog-writer", daemon=True)
        self._thread.start()
        self._check_usual()

    def _writer_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        # One hold of the lock per batch, released only around the writes: under light load
        # every batch is a line or two, and each acquire/release pair is the writer's cost
        # per line (the caller's hand-off is cheap only if the writer's share is, too).
        lock = self._lock
        lock.acquire()
        try:
            while True:
                if not self._has_work():
                    # Linger before sleeping: lines arriving meanwhile need no wake-up call,
                    # which would cost the caller a thread switch per line; they are written
                    # together when the linger ends. flush() and close() cut it short.
                    self._doze(LINGER_S)
                while not self._has_work():
                    self._doze(None)
                if self._abandoned:
                    return
                data, ends = self._buf, self._ends
                self._buf, self._ends = bytearray(), array("Q")
                reports = self._reports
                if reports:
                    self._reports = []
                overflowed, self._overflow_unreported = self._overflow_unreported, 0
                self._notice_in_flight = overflowed > 0
                if self.overflow == "block" and self._progress_waiters:
                    self._progress.notify_all()
                closing = self._closing and not ends
                failed = errors = 0
                lock.release()
                try:
                    for text in reports:
                        _write_stderr(text)
                    if ends:
                        failed, errors = self._write_to_sinks(data, ends)
                finally:
                    lock.acquire()
                if ends:
                    self._count_batch(len(ends), failed, errors)
                if overflowed or self._owed:
                    lock.release()
                    try:
                        self._send_notices(overflowed)
                    finally:
                        lock.acquire()
                self._notice_in_flight = False
                if self._progress_waiters:
                    self._progress.notify_all()
                if self._abandoned or (closing and not self._ends):
                    return
        finally:
            lock.release()

    def _send_notices(self, overflowed: int) -> None:
        """The ``logs_dropped`` notices due after a batch: the queue's overflow, then those
        owed since a sink failed (once a batch went through whole)."""
        if overflowed:
            self._send_notice("queue_full", overflowed)
        with self._lock:
            owed = dict(self._owed) if self._last_batch_ok and not self._abandoned else {}
            self._notice_in_flight = bool(owed)
        for reason, count in owed.items():
            self._send_notice(reason, count, owed=True)

    def _doze(self, timeout: float | None) -> None:
        """With the lock held (once): sleep until rung (_wake_writer) or ``timeout`` seconds
        passed, the lock released meanwhile. ``None``: idle, until rung."""
        if timeout is None:
            self._idle = True
        else:
            self._lingering = True
        lock = self._lock
        lock.release()
        try:
            rang = self._bell.acquire(True, -1 if timeout is None else timeout)
        finally:
            lock.acquire()
        if not rang:
            if self._lingering:
                self._lingering = False  # the linger ended, nobody rang
            else:
                self._bell.acquire(False)  # rung just after the timeout: take the ring back

    def _wake_writer(self) -> None:
        """With the lock held: wake the writer if it lingers or sleeps."""
        if self._idle or self._lingering:
            self._idle = self._lingering = False
            self._bell.release()

    def _wait_progress(self, timeout: float | None) -> None:
        """With the lock held: wait for the writer to make progress (or ``timeout``)."""
        self._progress_waiters += 1
        try:
            self._progress.wait(timeout)
        finally:
            self._progress_waiters -= 1

    def _has_work(self) -> bool:
        return bool(
            self._ends
            or self._reports
            or self._closing
            or self._overflow_unreported
            or self._abandoned
        )

    def _notice(self, count: int, reason: str) -> bytes:
        fields = {"count": count, "reason": reason}
        try:
            return self._render("logs_dropped", "warning", fields)
        except Exception:  # noqa: BLE001 - the configured chain failed: plain JSON then
            return _default_render("logs_dropped", "warning", fields)

    def _send_notice(self, reason: str, count: int, *, owed: bool = False) -> None:
        """Write one ``logs_dropped`` notice; if a sink fails, it stays owed for later."""
        with self._lock:
            if self._abandoned:
                return
        line = self._notice(count, reason)
        failed, errors = self._write_to_sinks(line, array("Q", [len(line)]))
        with self._lock:
            self.errors += errors
            if failed:
                self._last_batch_ok = False
                if not owed:
                    self._owed[reason] = self._owed.get(reason, 0) + count
            elif owed:
                left = self._owed.get(reason, 0) - count
                if left > 0:
                    self._owed[reason] = left
                else:
                    self._owed.pop(reason, None)

    def _count_batch(self, count: int, failed: int, errors: int) -> None:
        """With the lock held: count a batch of ``count`` lines written to the sinks, of which
        ``failed`` did not make it whole; every line is counted once."""
        self.errors += errors
        done = count - failed
        self._last_batch_ok = not failed
        if self._abandoned:
            # _abandon() counted the whole batch as dropped; some of it made it.
            self.dropped -= done
            self.written += done
            return
        self.dropped += failed
        self.written += done
        if failed:
            self._owed["sink_error"] = self._owed.get("sink_error", 0) + failed

    def _write_to_sinks(self, data: bytes | bytearray, ends: array[int]) -> tuple[int, int]:
        """Write ``data`` (lines ending at ``ends``) to every sink; (lines lost, errors).

        A line counts as lost when a sink did not take it whole. A write that failed half way
        through a line (a disk that filled up) is taken back where the sink allows, so that
        the next line does not start on the same line as its remains.
        """
        failed: set[int] = set()
        errors = 0
        view = memoryview(data)  # chunks are copied out of it, not sliced into new buffers
        for sink in self.sinks:
            for first, last, start, end in _chunks(ends, sink.chunk_bytes):
                try:
                    sink.write(bytes(view[start:end]))
                except Exception as exc:  # noqa: BLE001 - a sink must never break the caller
                    errors += 1
                    whole = _take_back_torn(sink, exc, start, ends[first:last])
                    failed.update(range(first + whole, last))
                    with self._lock:
                        text = self._reporter.report(
                            sink.name, f"cannot write to {sink.name}: {exc!r}"
                        )
                    if text is not None:
                        _write_stderr(text)
            if not failed and not isinstance(sink, FileSink):
                with contextlib.suppress(Exception):
                    sink.flush()
        view.release()
        return len(failed), errors

    def _after_fork(self) -> None:
        # The writer thread did not survive fork(); the parent writes what it had queued.
        self._lock = threading.RLock()
        self._progress = threading.Condition(self._lock)
        self._progress_waiters = 0
        self._bell = threading.Lock()
        self._bell.acquire()
        self._lingering = False
        self._buf, self._ends = bytearray(), array("Q")
        self._reports = []
        self._thread = None
        self._idle = False
        self._overflow_unreported = 0
        self._owed = {}
        self._notice_in_flight = False
        self._last_batch_ok = True
        self._deadline = None
        self._through = self._abandoned = False
        self.accepted = self.written = self.dropped = self.errors = 0
        self._usual = False


def _chunks(ends: array[int], limit: int) -> list[tuple[int, int, int, int]]:
    """Whole lines grouped into chunks of at most ``limit`` bytes (a longer line goes alone):
    (first line, last line + 1, first byte, last byte + 1) of each. Each chunk's end is found
    by bisection: the cost grows with the chunks, not with the lines of a large batch."""
    count = len(ends)
    if count and ends[-1] <= limit:  # the usual batch: one chunk
        return [(0, count, 0, ends[-1])]
    chunks: list[tuple[int, int, int, int]] = []
    first = start = 0
    while first < count:
        last = max(bisect.bisect_right(ends, start + limit, first), first + 1)
        chunks.append((first, last, start, ends[last - 1]))
        first, start = last, ends[last - 1]
    return chunks


def _take_back_torn(sink: Sink, exc: BaseException, start: int, ends: Sequence[int]) -> int:
    """How many of the lines ending at ``ends`` (offsets into the data, the chunk beginning
    at ``start``) the failed write took whole; the bytes of a line it tore are taken back."""
    written = exc.written if isinstance(exc, PartialWriteError) else 0
    if not written:
        return 0
    reached = start + written
    whole = bisect.bisect_right(ends, reached)
    torn = reached - (ends[whole - 1] if whole else start)
    if torn:
        sink.take_back(torn)
    return whole


_BACKGROUND: weakref.WeakSet[Output] = weakref.WeakSet()


def _reinit_after_fork() -> None:
    for output in list(_BACKGROUND):
        output._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)
