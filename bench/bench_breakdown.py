"""Where reqlog's instructions go, per request and per app event, part by part (callgrind).

One process under callgrind (see bench/callgrind.py) runs, each between two marks:

- *in place*: N requests through the bare app, through reqlog's defaults, and through reqlog's
  defaults with the access event switched off (levelled by the configured policy, not
  written). Their differences split reqlog's overhead exactly into the middleware's part and
  the event's part;
- *isolated*: each part called N times on the inputs it had in a real request (recorded from
  one): making a request ID, entering and leaving the context, the route template, the level
  policy, the access event through the configured policy (the fused path), the app event,
  every processor of the generic chain on an app event (for reference: the fused path runs
  the same steps inline or through the same objects), the hand-off to the background writer
  (flushed, so the writer thread's work counts).
  Each is measured beside the same loop calling a do-nothing function on the same arguments,
  and that loop's count is subtracted.

What the isolated parts leave unexplained of the in-place figures is shown by difference (the
coroutine, closures and wrappers of the middleware; the dispatch around the chain). The parts
are reached through reqlog's internals (named in the table): when a refactoring moves them, this
breakdown says which one it could not find and is updated with it.

    python -m bench.bench_breakdown           # the tables, in Markdown
    python -m bench.bench_breakdown --drive   # what runs under callgrind (internal)
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from bench import callgrind
from bench.apps import _routes, bare, reqlog_defaults
from bench.bench_requests import _drive

__all__ = ["run"]

REQUESTS = 500
CALLS = 2000
#: The capture options, each measured in place on its own (the request is a GET: no body).
CAPTURE = ("log_request_body", "log_response_body", "log_headers")


def _noop(*args: Any, **kwargs: Any) -> Any:
    return None


def _identity(logger: Any, method_name: str, event_dict: Any) -> Any:
    return event_dict


def _name(processor: Any) -> str:
    inner = getattr(processor, "processors", None)  # WhenPresent
    if inner is not None:
        return f"{type(processor).__name__}({', '.join(_name(p) for p in inner)})"
    return getattr(processor, "__qualname__", None) or type(processor).__name__


@contextmanager
def _patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    own = name in vars(owner)  # else a method of the class: leave no attribute behind
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        if own:
            setattr(owner, name, saved)
        else:
            delattr(owner, name)


class Recorded:
    """What one real request handed to each part, kept to call the parts again in isolation."""

    def __init__(self, app: Any) -> None:
        from reqlog import _emit, context
        from reqlog._logger import get_logger
        from reqlog._state import STATE
        from reqlog.middleware import RequestLoggingMiddleware

        self.app = app
        asyncio.run(_drive(app, 1))  # builds the middleware stack
        layer = app.middleware_stack
        while not isinstance(layer, RequestLoggingMiddleware):
            layer = layer.app
        self.middleware: RequestLoggingMiddleware = layer
        self.access: dict[str, Any] = {}
        self.routed_scope: dict[str, Any] = {}
        self.chain_inputs: list[tuple[Any, dict[str, Any]]] = []
        self.context: context.RequestContext | None = None
        inner_app = layer.app

        async def keep_scope(scope: Any, receive: Any, send: Any) -> None:
            await inner_app(scope, receive, send)
            self.routed_scope = scope

        def keep_access(level: int, event: str, fields: dict[str, Any]) -> None:
            self.access = dict(fields)
            self.context = context.CURRENT.get()
            with self._recording_chain():
                _emit.emit_access(level, event, fields)

        # The generic chain, one processor at a time (the fused path runs them inline).
        assert STATE.access is not None
        recording = _access_log(STATE.access, keep_access)
        with _patched(layer, "app", keep_scope), _patched(STATE, "access", recording):
            asyncio.run(_drive(app, 1))
        self.access_chain = self.chain_inputs
        self.chain_inputs = []
        token = context.CURRENT.set(self.context)
        try:
            with self._recording_chain():
                get_logger("app").info("loading_item", item_id=42)
        finally:
            context.CURRENT.reset(token)
        self.app_chain = self.chain_inputs

    @contextmanager
    def _recording_chain(self) -> Iterator[None]:
        from reqlog._state import STATE

        chain = list(STATE.processors)

        def recording(processor: Any) -> Any:
            def record(logger: Any, method_name: str, event_dict: Any) -> Any:
                snapshot = dict(event_dict) if isinstance(event_dict, dict) else event_dict
                self.chain_inputs.append((processor, snapshot))
                return processor(logger, method_name, event_dict)

            return record

        STATE.processors[:] = [recording(p) for p in chain]
        try:
            yield
        finally:
            STATE.processors[:] = chain


def _access_log(configured: Any, emit: Any, request: Any = None) -> Any:
    """An AccessLog levelling as ``configured`` does, emitting through ``emit`` (and
    ``request``, the one-call path, when given)."""
    from reqlog._access import AccessLog

    return AccessLog(configured.levels, configured.slow or _no_slowness(), emit, request)


def _no_slowness() -> Any:
    from reqlog.processors import SlowRequests

    return SlowRequests(None, None)


@dataclass(frozen=True)
class Stretch:
    """One measured part: ``run(n)`` does it n times, ``baseline(n)`` the same loop, idle."""

    name: str
    what: str
    count: int
    run: Callable[[int], Any]
    baseline: Callable[[int], Any] | None = None


def _calls(unit: Callable[[], Any]) -> Callable[[int], None]:
    def repeat(n: int) -> None:
        for _ in range(n):
            unit()

    return repeat


def _isolated(
    name: str, what: str, unit: Callable[[], Any], baseline: Callable[[], Any]
) -> Stretch:
    return Stretch(name, what, CALLS, _calls(unit), _calls(baseline))


def _capture_apps() -> dict[str, Any]:
    """The app with reqlog's middleware capturing one thing each (reqlog already configured)."""
    from fastapi import FastAPI

    from reqlog import RequestLoggingMiddleware

    apps = {}
    for option in CAPTURE:
        app = _routes(FastAPI())
        options: dict[str, Any] = {option: True}
        app.add_middleware(RequestLoggingMiddleware, **options)
        apps[option] = app
    return apps


def _stretches(recorded: Recorded) -> list[Stretch]:
    import reqlog
    from reqlog import _emit
    from reqlog._routes import route_template
    from reqlog._state import STATE
    from reqlog.middleware import _leave

    mw = recorded.middleware
    scope = recorded.routed_scope
    request_id = recorded.access.get("request_id") or "0" * 32
    access = recorded.access
    access_logger = _emit.ACCESS
    output = STATE.output
    line = b'{"event":"request_completed"}' * 12 + b"\n"  # an access line's length
    bare_app = bare()

    def requests(app: Any, *switched_off: tuple[Any, str, Any]) -> Callable[[int], Any]:
        """``n`` requests through ``app``, with each (owner, name, replacement) patched in."""

        def serve(n: int) -> Any:
            with ExitStack() as stack:
                for owner, name, replacement in switched_off:
                    stack.enter_context(_patched(owner, name, replacement))
                return asyncio.run(_drive(app, n))

        return serve

    configured = STATE.access
    assert configured is not None
    silent = _access_log(configured, _noop, _noop)  # levels the event, writes nothing
    no_event = (STATE, "access", silent)
    fixed_id = (mw, "_generator", lambda: request_id)
    fields = {k: v for k, v in access.items() if k not in ("request_id", "client_ip", "event")}

    def policy(n: int) -> None:
        with _patched(STATE, "access", silent):
            for _ in range(n):
                mw._completed(dict(fields))

    stretches = [
        Stretch("bare", "the bare app", REQUESTS, requests(bare_app)),
        Stretch("reqlog", "reqlog defaults", REQUESTS, requests(recorded.app)),
        Stretch(
            "no_event",
            "reqlog, access event off (levelled, not written)",
            REQUESTS,
            requests(recorded.app, no_event),
        ),
        Stretch(
            "no_event_no_id",
            "... and a fixed request ID (`_generator` a constant)",
            REQUESTS,
            requests(recorded.app, no_event, fixed_id),
        ),
        *(
            Stretch(f"capture:{option}", f"reqlog with `{option}=True`", REQUESTS, requests(app))
            for option, app in _capture_apps().items()
        ),
        _isolated(
            "identify",
            "a new request ID (`RequestLoggingMiddleware._generator`)",
            mw._generator,
            _noop,
        ),
        _isolated(
            "context",
            "enter and leave the context (`_enter`/`_leave`: RequestContext, structlog "
            "snapshot, reqlog's and asgi-correlation-id's context variables, Sentry hook)",
            lambda: _leave(mw._enter(scope, request_id, scope["client"][0])),
            lambda: _noop(_noop(scope, request_id)),
        ),
        _isolated(
            "route",
            "route template (`_routes.route_template`)",
            lambda: route_template(scope, "", recorded.app),
            lambda: _noop(scope, "", recorded.app),
        ),
        Stretch(
            "policy",
            "level and slowness (`_completed` without the event)",
            CALLS,
            policy,
            _calls(lambda: _noop(dict(access))),
        ),
        _isolated(
            "emit",
            "access event, whole (`AccessLog.request`, the fused path, hand-off included)",
            lambda: configured.request(*fields.values()),
            lambda: _noop(*fields.values()),
        ),
        _isolated(
            "handoff",
            "writer hand-off (`Output.write` to the background writer, flushed)",
            lambda: output.write(line),
            lambda: _noop(line),
        ),
    ]
    # The default chain's processors one by one (the fused path calls the same objects for the
    # time stamp, redaction and rendering, and does the one-key steps inline).
    for prefix, chain in (("app", recorded.app_chain),):
        for index, (processor, event_dict) in enumerate(chain):

            def unit(p: Any = processor, e: Any = event_dict) -> Any:
                return p(access_logger, "info", dict(e))

            def baseline(e: Any = event_dict) -> Any:
                return _identity(access_logger, "info", dict(e))

            stretches.append(_isolated(f"{prefix}:{index}", _name(processor), unit, baseline))
    app_log = reqlog.get_logger("app")
    stretches.append(
        _isolated(
            "app_event",
            "app event, whole (`log.info` through structlog's bound logger, hand-off included)",
            lambda: app_log.info("loading_item", item_id=42),
            lambda: _noop("loading_item", item_id=42),
        )
    )
    return stretches


def drive() -> None:
    """Under callgrind: each stretch and its baseline between two marks; what ran, on stdout."""
    import reqlog
    from reqlog import context

    recorded = Recorded(reqlog_defaults())
    ran: list[dict[str, Any]] = []
    token = context.CURRENT.set(recorded.context)  # app events run inside the request
    try:
        for stretch in _stretches(recorded):
            for label, func in (("run", stretch.run), ("baseline", stretch.baseline)):
                if func is None:
                    continue
                func(min(stretch.count, 50))  # warm up
                reqlog.flush()
                callgrind.mark()  # ends what ran between two measurements
                func(stretch.count)
                reqlog.flush()  # the writer thread's share counts too
                callgrind.mark()
                ran.append({"name": stretch.name, "what": stretch.what, "of": label})
                ran[-1]["count"] = stretch.count
    finally:
        context.CURRENT.reset(token)
    print(json.dumps(ran))


def run() -> dict[str, Any]:
    """Instructions per request (in place) or per call (isolated) of each part."""
    reason = callgrind.available()
    if reason is not None:
        return {"skipped": reason}
    try:
        segments, stdout = callgrind.run(["bench.bench_breakdown", "--drive"])
    except RuntimeError as exc:
        return {"skipped": str(exc)}
    ran = json.loads(stdout.strip().splitlines()[-1])
    # Segments alternate: what ran before a measurement (start-up, warm-up), the measurement.
    parts: dict[str, dict[str, Any]] = {}
    for entry, count in zip(ran, segments[1::2], strict=True):
        part = parts.setdefault(entry["name"], {"what": entry["what"], "instructions": 0.0})
        sign = -1 if entry["of"] == "baseline" else 1
        part["instructions"] += sign * count / entry["count"]
    return {"requests": REQUESTS, "calls": CALLS, "parts": parts}


def _k(value: float, sign: bool = False) -> str:
    return f"{value / 1000:+.1f}k" if sign else f"{value / 1000:.1f}k"


def section(results: dict[str, Any]) -> list[str]:
    """The breakdown as Markdown: per request, then per app event."""
    lines = [
        "## Where reqlog's instructions go (bench_breakdown)",
        "",
        "One process under callgrind. *In place*: "
        f"{results.get('requests', REQUESTS)} requests through the app as in the table above, "
        "with one part of reqlog switched off at a time: the difference is what that part costs "
        "where it runs. *Alone*: the part called "
        f"{results.get('calls', CALLS)} times on the inputs it had in a real request, minus the "
        "same loop calling a do-nothing function. *By difference*: what the parts measured do "
        "not account for.",
        "",
    ]
    if "skipped" in results:
        return [*lines, f"Skipped: {results['skipped']}."]
    parts = results["parts"]

    def cost(name: str) -> float:
        value: float = parts[name]["instructions"]
        return value

    overhead = cost("reqlog") - cost("bare")
    middleware = cost("no_event") - cost("bare")
    event = cost("reqlog") - cost("no_event")
    request_id = cost("no_event") - cost("no_event_no_id")
    context = cost("context")
    rows: list[tuple[str, float, str]] = [
        ("**reqlog's overhead over the bare app**", overhead, "in place"),
        ("**the middleware** (the access event off)", middleware, "in place"),
        (
            "&nbsp;&nbsp;request ID: making a new one (the header scan and the scope copy are "
            "in the rest)",
            request_id,
            f"in place; alone {_k(cost('identify'))}",
        ),
        (
            "&nbsp;&nbsp;context: RequestContext, structlog snapshot, 2 context variables, "
            "Sentry hook; enter and leave",
            context,
            "alone",
        ),
        ("&nbsp;&nbsp;route template", cost("route"), "alone"),
        ("&nbsp;&nbsp;level and slowness policy", cost("policy"), "alone"),
        (
            "&nbsp;&nbsp;the rest: coroutine, header scan, scope copy, the responder object and "
            "its receive/send, ID echo, clock",
            middleware - request_id - context - cost("route") - cost("policy"),
            "by difference",
        ),
        (
            "**the access event** (fused: `AccessLog.request`)",
            event,
            f"in place; alone {_k(cost('emit'))}",
        ),
        ("&nbsp;&nbsp;writer hand-off (`Output.write`, writer thread)", cost("handoff"), "alone"),
    ]
    lines += [
        "| part | instructions/request | share of the overhead | measured |",
        "|---|---:|---:|---|",
    ]
    for label, value, how in rows:
        lines.append(f"| {label} | {_k(value)} | {value / overhead:.0%} | {how} |")
    capture = [(option, cost(f"capture:{option}") - cost("reqlog")) for option in CAPTURE]
    lines += [
        "",
        "Capture, each option alone on top of the defaults (in place; the request is a GET "
        "without a body, the response 42 bytes of JSON):",
        "",
        "| option | instructions/request | x the defaults' overhead |",
        "|---|---:|---:|",
        *(f"| `{o}=True` | {_k(v, sign=True)} | {v / overhead:.2f}x |" for o, v in capture),
    ]
    app_event = cost("app_event")
    lines += [
        "",
        'An app event inside a request (`log.info("loading_item", item_id=42)`):',
        "",
        "| part | instructions/event | share | measured |",
        "|---|---:|---:|---|",
    ]
    handoff = cost("handoff")
    app_rows = [
        ("**the app event, whole** (the fused path)", app_event, "alone"),
        ("&nbsp;&nbsp;writer hand-off (`Output.write`, writer thread)", handoff, "alone"),
        ("&nbsp;&nbsp;the chain's steps, fused", app_event - handoff, "by difference"),
    ]
    for label, value, how in app_rows:
        lines.append(f"| {label} | {_k(value)} | {value / app_event:.0%} | {how} |")
    lines += [
        "",
        "For reference, the generic chain's processors one by one on the same event (alone; "
        "the fused path does the one-key steps inline and calls the same time stamper, "
        "Redactor and renderer, so these add up to more than it costs):",
        "",
        "| processor | instructions/event |",
        "|---|---:|",
    ]
    for name, part in parts.items():
        if name.startswith("app:"):
            lines.append(f"| `{part['what']}` | {_k(part['instructions'])} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--drive", action="store_true", help="run the stretches (internal)")
    args = parser.parse_args()
    if args.drive:
        drive()
        return
    print("\n".join(section(run())))


if __name__ == "__main__":
    main()
