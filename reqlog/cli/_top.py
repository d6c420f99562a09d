"""``reqlog top``: a live view of a followed file or of standard input, redrawn every second.

``uvicorn app:app | reqlog top`` or ``reqlog top app.log``: per route, requests per second,
4xx and 5xx rates and p50/p95/p99 over a sliding window, and the slowest recent requests.
Rich's :class:`~rich.live.Live` draws the screen (the ``cli`` extra); a reader thread parses
lines as they come, the main thread redraws, so a quiet input still refreshes and a burst does
not delay the screen. Everything shown from the log is escaped, and given to Rich as plain
``Text`` (never markup: a path holding ``[bold]`` is shown as it is).
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from ._engine import MissingExtra, Window, distribution_name
from ._events import ACCESS_EVENTS, Event, epoch, is_text, parse_json
from ._input import ReadStats, iter_batches
from ._safe import escape

if TYPE_CHECKING:
    from rich.console import RenderableType

ACCESS_LOGGER = "reqlog.access"
SLOWEST = 8


@dataclass(frozen=True, slots=True)
class Seen:
    """One access event as ``top`` keeps it."""

    arrived: float
    key: str
    status: int
    duration: float
    weight: float
    failed: bool
    what: str
    request_id: str


@dataclass
class RouteFigures:
    """One route over the window."""

    key: str
    count: float
    rps: float
    rate_4xx: float
    rate_5xx: float
    p50: float
    p95: float
    p99: float


def weighted_percentiles(values: list[tuple[float, float]], ps: Sequence[int]) -> list[float]:
    """Weighted nearest-rank percentiles of ``(duration, weight)`` pairs (the ``stats`` rule)."""
    if not values:
        return [0.0 for _ in ps]
    values.sort()
    total = math.fsum(w for _, w in values)
    out, cum, i = [], 0.0, 0
    for p in ps:
        target = p / 100 * total * (1 - 1e-12)
        while i < len(values) and (cum < target or i == 0):
            cum += values[i][1]
            i += 1
            # ties reach the rank together
            while i < len(values) and values[i][0] == values[i - 1][0]:
                cum += values[i][1]
                i += 1
        out.append(values[max(i - 1, 0)][0])
    return out


@dataclass
class State:
    """What the reader thread collected; the lock guards every field."""

    window_s: float
    time_window: Window
    clock: Callable[[], float] = time.monotonic
    seen: deque[Seen] = field(default_factory=deque)
    lines: int = 0
    events: int = 0
    ended: bool = False
    started: float = 0.0
    stats: ReadStats = field(default_factory=ReadStats)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def add_lines(self, batch: Sequence[bytes]) -> None:
        """Parse a batch of lines and keep the access events."""
        now = self.clock()
        kept: list[Seen] = []
        events = 0
        for line in batch:
            if not line.lstrip().startswith(b"{"):
                if line.strip():
                    is_text(line, self.stats)
                continue
            event = parse_json(line, self.stats)
            if event is None:
                continue
            events += 1
            if event.get("event") in ACCESS_EVENTS and event.get("logger") == ACCESS_LOGGER:
                seen = self._seen(event, now)
                if seen is not None:
                    kept.append(seen)
        with self.lock:
            self.lines += len(batch)
            self.events += events
            self.seen.extend(kept)

    def _seen(self, event: Event, now: float) -> Seen | None:
        window = self.time_window
        if not window.open:
            when = epoch(event.get("timestamp"))
            if when is None:
                return None
            if (window.since is not None and when < window.since) or (
                window.until is not None and when >= window.until
            ):
                return None
        name = str(event.get("event"))
        method = event.get("method") or ("WS" if name.startswith("websocket") else "-")
        route = event.get("route") or "(no route)"
        status = event.get("status_code")
        duration = event.get("duration_ms")
        rate = event.get("sample_rate")
        weight = 1 / rate if isinstance(rate, int | float) and 0 < rate < 1 else 1.0
        return Seen(
            arrived=now,
            key=f"{method} {route}",
            status=status if isinstance(status, int) else 0,
            duration=float(duration) if isinstance(duration, int | float) else 0.0,
            weight=weight,
            failed=name.endswith("_failed"),
            what=f"{method} {event.get('path') or route}",
            request_id=str(event.get("request_id") or "-"),
        )

    def snapshot(self) -> tuple[list[RouteFigures], RouteFigures | None, list[Seen], float]:
        """Figures over the window: per route, overall, the slowest requests; window used."""
        now = self.clock()
        with self.lock:
            cutoff = now - self.window_s
            while self.seen and self.seen[0].arrived < cutoff:
                self.seen.popleft()
            items = list(self.seen)
        span = max(min(self.window_s, now - self.started), 1.0)
        groups: dict[str, list[Seen]] = {}
        for item in items:
            groups.setdefault(item.key, []).append(item)
        routes = [_figures(key, group, span) for key, group in groups.items()]
        routes.sort(key=lambda r: (-r.count, r.key))
        overall = _figures("(all)", items, span) if items else None
        slowest = heapq.nlargest(SLOWEST, items, key=lambda s: s.duration)
        return routes, overall, slowest, span


def _figures(key: str, items: Sequence[Seen], span: float) -> RouteFigures:
    count = math.fsum(s.weight for s in items)
    c4 = math.fsum(s.weight for s in items if 400 <= s.status < 500 and not s.failed)
    c5 = math.fsum(s.weight for s in items if s.status >= 500 or s.failed)
    p50, p95, p99 = weighted_percentiles([(s.duration, s.weight) for s in items], (50, 95, 99))
    return RouteFigures(key, count, count / span, c4 / count, c5 / count, p50, p95, p99)


def _ms(value: float) -> str:
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.1f} ms"


def _rate(value: float) -> str:
    return "-" if value == 0 else f"{value:.1%}"


def render(state: State, rows: int) -> RenderableType:
    """The screen: a summary line, the routes table and the slowest recent requests."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    routes, overall, slowest, span = state.snapshot()
    with state.lock:
        lines, events, ended = state.lines, state.events, state.ended
    skipped = state.stats.malformed
    head = Text(
        f"reqlog top: {lines:,} lines, {events:,} events read;"
        f" last {span:.0f} s of access events"
        + (f"; {skipped:,} malformed lines skipped" if skipped else "")
        + ("; input ended" if ended else ""),
        style="bold",
    )
    table = Table(expand=False, pad_edge=False, box=None, header_style="bold")
    for name in ("route", "req/s", "4xx", "5xx", "p50", "p95", "p99"):
        table.add_column(name, justify="left" if name == "route" else "right", no_wrap=True)
    for r in [*routes[:rows], *([overall] if overall else [])]:
        style = "bold" if r is overall else ("red" if r.rate_5xx > 0.01 else "")
        table.add_row(
            Text(escape(r.key)),
            f"{r.rps:,.1f}",
            _rate(r.rate_4xx),
            _rate(r.rate_5xx),
            _ms(r.p50),
            _ms(r.p95),
            _ms(r.p99),
            style=style,
        )
    if not routes:
        table.add_row(Text("waiting for access events...", style="dim"), "", "", "", "", "", "")
    slow = Table(
        title="slowest recent requests",
        title_justify="left",
        box=None,
        pad_edge=False,
        header_style="bold",
    )
    for name in ("duration", "status", "request", "request ID"):
        slow.add_column(name, justify="right" if name in ("duration", "status") else "left")
    for s in slowest:
        slow.add_row(
            _ms(s.duration), str(s.status), Text(escape(s.what)), Text(escape(s.request_id))
        )
    return Group(head, Text(""), table, Text(""), slow)


def _reader(state: State, names: Sequence[str], from_start: bool) -> None:
    follow = bool(names)
    try:
        for batch in iter_batches(names, state.stats, follow=follow, from_end=not from_start):
            if batch:
                state.add_lines(batch)
    finally:
        with state.lock:
            state.ended = True


def run(
    names: Sequence[str],
    *,
    window_s: float,
    refresh: float,
    rows: int,
    from_start: bool,
    time_window: Window,
    out: TextIO,
    err: TextIO,
    clock: Callable[[], float] = time.monotonic,
    stop: threading.Event | None = None,
) -> int:
    """The ``top`` command: runs until interrupted (Ctrl-C) or *stop* is set."""
    try:
        from rich.console import Console
        from rich.live import Live
    except ImportError:
        msg = (
            "this command draws with Rich, which is not installed;"
            f" install it with: pip install '{distribution_name()}[cli]'"
        )
        raise MissingExtra(msg) from None
    state = State(window_s=window_s, time_window=time_window, clock=clock)
    reader = threading.Thread(target=_reader, args=(state, names, from_start), daemon=True)
    reader.start()
    console = Console(file=out, highlight=False, markup=False, emoji=False)
    stop = stop or threading.Event()
    try:
        with Live(
            render(state, rows),
            console=console,
            auto_refresh=False,
            screen=console.is_terminal,
            transient=False,
        ) as live:
            while not stop.wait(refresh):
                live.update(render(state, rows), refresh=True)
    except KeyboardInterrupt:
        pass
    for problem in state.stats.problems:
        print(f"reqlog: {escape(problem)}", file=err)
    return 0
