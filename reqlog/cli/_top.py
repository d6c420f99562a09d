"""``reqlog top``: a live view of a followed file or of standard input, redrawn every second.

``uvicorn app:app | reqlog top`` or ``reqlog top app.log``: per route, requests per second,
4xx and 5xx rates and p50/p95/p99 over a sliding window, and the slowest recent requests.
Rich's :class:`~rich.live.Live` draws the screen (the ``cli`` extra); a reader thread parses
lines as they come, the main thread redraws, so a quiet input still refreshes and a burst does
not delay the screen. Everything shown from the log is escaped, and given to Rich as plain
``Text`` (never markup: a path holding ``[bold]`` is shown as it is).
"""

from __future__ import annotations

import bisect
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


@dataclass(slots=True)
class _Second:
    """One route's access events that arrived within one second."""

    durations: dict[float, list[float]] = field(default_factory=dict)  # weight -> durations
    count: float = 0.0
    c4: float = 0.0
    c5: float = 0.0

    def add(self, seen: Seen) -> None:
        found = self.durations.get(seen.weight)
        if found is None:
            self.durations[seen.weight] = [seen.duration]
        else:
            found.append(seen.duration)
        self.count += seen.weight
        if seen.status >= 500 or seen.failed:
            self.c5 += seen.weight
        elif 400 <= seen.status < 500:
            self.c4 += seen.weight


def weighted_percentiles(lists: dict[float, list[float]], ps: Sequence[int]) -> list[float]:
    """Weighted nearest-rank percentiles (the ``stats`` rule) of durations grouped by weight.

    Each weight's durations are sorted on their own (a C sort of floats); the weighted rank of
    a value is a few bisections, and a binary search per list finds the smallest value whose
    rank reaches ``p / 100`` of the total weight.
    """
    ordered = [(w, sorted(values)) for w, values in lists.items() if values]
    if not ordered:
        return [0.0 for _ in ps]
    if len(ordered) == 1:
        values = ordered[0][1]
        n = len(values)
        return [values[max((p * n + 99) // 100 - 1, 0)] for p in ps]
    total = math.fsum(w * len(values) for w, values in ordered)

    def rank(value: float) -> float:
        return math.fsum(w * bisect.bisect_right(values, value) for w, values in ordered)

    out = []
    for p in ps:
        target = p / 100 * total * (1 - 1e-12)
        best = math.inf
        for _, values in ordered:
            lo, hi = 0, len(values)
            while lo < hi:
                mid = (lo + hi) // 2
                if rank(values[mid]) >= target:
                    hi = mid
                else:
                    lo = mid + 1
            if lo < len(values):
                best = min(best, values[lo])
        out.append(best)
    return out


@dataclass
class State:
    """What the reader thread collected, in one-second slots; the lock guards every field.

    Keeping per-second, per-route lists (not every event) makes a redraw cheap: the window's
    lists are joined and sorted as plain floats, counts are sums of 60 numbers.
    """

    window_s: float
    time_window: Window
    clock: Callable[[], float] = time.monotonic
    seconds: deque[tuple[int, dict[str, _Second], list[tuple[float, int, Seen]]]] = field(
        default_factory=deque
    )
    lines: int = 0
    events: int = 0
    ended: bool = False
    started: float = 0.0
    stats: ReadStats = field(default_factory=ReadStats)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _order: int = 0

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
        second = int(now)
        with self.lock:
            self.lines += len(batch)
            self.events += events
            if kept:
                if not self.seconds or self.seconds[-1][0] != second:
                    self.seconds.append((second, {}, []))
                _, routes, slowest = self.seconds[-1]
                for seen in kept:
                    slot = routes.get(seen.key)
                    if slot is None:
                        slot = routes[seen.key] = _Second()
                    slot.add(seen)
                    self._order += 1
                    item = (seen.duration, self._order, seen)
                    if len(slowest) < SLOWEST:
                        heapq.heappush(slowest, item)
                    elif item > slowest[0]:
                        heapq.heapreplace(slowest, item)

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
            oldest = int(now - self.window_s)
            while self.seconds and self.seconds[0][0] < oldest:
                self.seconds.popleft()
            slots = list(self.seconds)
        span = max(min(self.window_s, now - self.started), 1.0)
        merged: dict[str, _Second] = {}
        everything = _Second()
        for _, routes, _ in slots:
            for key, slot in routes.items():
                target = merged.get(key)
                if target is None:
                    target = merged[key] = _Second()
                for into in (target, everything):
                    into.count += slot.count
                    into.c4 += slot.c4
                    into.c5 += slot.c5
                    for weight, values in slot.durations.items():
                        into.durations.setdefault(weight, []).extend(values)
        routes_out = [_figures(key, slot, span) for key, slot in merged.items()]
        routes_out.sort(key=lambda r: (-r.count, r.key))
        overall = _figures("(all)", everything, span) if merged else None
        candidates = [item for _, _, slowest in slots for item in slowest]
        slowest_out = [seen for _, _, seen in heapq.nlargest(SLOWEST, candidates)]
        return routes_out, overall, slowest_out, span


def _figures(key: str, slot: _Second, span: float) -> RouteFigures:
    count = slot.count or 1.0
    p50, p95, p99 = weighted_percentiles(slot.durations, (50, 95, 99))
    return RouteFigures(
        key, slot.count, slot.count / span, slot.c4 / count, slot.c5 / count, p50, p95, p99
    )


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
        + ("; input ended" if ended else "")
        + "".join(f"; {escape(problem)}" for problem in state.stats.problems[-2:]),
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
