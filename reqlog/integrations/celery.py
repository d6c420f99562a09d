"""Celery: a task queued during a request runs, and logs, under that request's ID.

>>> from reqlog.integrations.celery import setup
>>> setup()  # once, in the web app and in the worker (e.g. where the Celery app is made)

What it connects, on Celery's signals:

- ``before_task_publish``: the current request ID travels in the task message's headers
  (``CORRELATION_ID``, the header asgi-correlation-id's Celery extension used, so either side
  may still run that).
- ``task_prerun``: the task binds that ID as ``request_id`` (plus ``task_id`` and
  ``task_name``) for every event it logs, through structlog's context variables, and sets
  asgi-correlation-id's ``correlation_id`` (and its Sentry tag) as that extension did. A task
  queued outside any request gets a fresh ID, so its logs still group together.
- ``task_postrun``: all of it is undone, whatever the task did.
- ``setup_logging``: Celery's worker leaves the root logger alone, so its own logs and the
  task loggers (``celery.utils.log.get_task_logger``) go through reqlog's output too; the
  worker calls ``reqlog.configure()`` (from ``REQLOG_*``) unless the app did already.

asgi-correlation-id 5 no longer ships its Celery extension; this is that extension, made to
restore rather than clear the IDs (an eager task runs inside the request that queued it) and
to bind the fields reqlog's events carry.
"""

from __future__ import annotations

import contextvars
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

try:
    from celery import signals
except ImportError as exc:  # pragma: no cover - exercised without the extra
    from reqlog.integrations import missing

    raise missing("celery", "celery") from exc

import structlog
from asgi_correlation_id.context import correlation_id
from asgi_correlation_id.extensions.sentry import get_sentry_extension

from reqlog import _configure
from reqlog.context import get_request_id

__all__ = ["setup"]

_DEFAULT_HEADER = "CORRELATION_ID"
_Tokens = tuple[contextvars.Token[str | None], Mapping[str, contextvars.Token[Any]]]


def _new_id() -> str:
    return uuid.uuid4().hex


class _Hooks:
    """The signal receivers; one instance, replaced by a later setup()."""

    def __init__(self, header: str, generator: Callable[[], str]) -> None:
        self.header = header
        self.generator = generator
        self.sentry = get_sentry_extension()
        self.lock = threading.Lock()
        self.tokens: dict[str, _Tokens] = {}

    def publish(self, headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if headers is None or headers.get(self.header):
            return
        rid = get_request_id() or correlation_id.get()
        if rid:
            headers[self.header] = rid

    def prerun(self, task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
        request = getattr(task, "request", None)
        rid = request.get(self.header) if request is not None else None
        # An eager task runs in the caller's context: the request it was queued from.
        rid = rid or get_request_id() or correlation_id.get() or self.generator()
        cid_token = correlation_id.set(rid)
        self.sentry(rid)
        fields = {"request_id": rid, "task_id": task_id, "task_name": getattr(task, "name", None)}
        bound = structlog.contextvars.bind_contextvars(**fields)
        if task_id is not None:
            with self.lock:
                self.tokens[task_id] = (cid_token, bound)

    def postrun(self, task_id: str | None = None, **kwargs: Any) -> None:
        if task_id is None:
            return
        with self.lock:
            tokens = self.tokens.pop(task_id, None)
        if tokens is None:
            return
        cid_token, bound = tokens
        try:
            structlog.contextvars.reset_contextvars(**bound)
            correlation_id.reset(cid_token)
        except ValueError:
            # Tokens made in another context (a pool that switches contexts): clear instead.
            structlog.contextvars.unbind_contextvars(*bound)
            correlation_id.set(None)

    def setup_logging(self, **kwargs: Any) -> None:
        if not _configure.is_configured():
            _configure.configure()


_HOOKS: _Hooks | None = None


def setup(
    *,
    header: str = _DEFAULT_HEADER,
    generator: Callable[[], str] = _new_id,
    configure_logging: bool = True,
) -> None:
    """Carry request IDs into Celery tasks and bind them there; safe to call more than once.

    ``header`` is the task message header that carries the ID; ``generator`` makes one for a
    task queued outside a request; ``configure_logging=False`` leaves Celery's worker to set
    up logging itself (it then replaces the root logger's handlers, reqlog's among them).
    """
    global _HOOKS
    if not isinstance(header, str) or not header:
        msg = f"header: expected a non-empty string, got {header!r}"
        raise ValueError(msg)
    if not callable(generator):
        msg = f"generator: expected a callable, got {generator!r}"
        raise ValueError(msg)
    hooks = _Hooks(header, generator)
    # A fixed dispatch_uid per signal: a second setup() replaces the first, never adds to it.
    for signal, receiver in (
        (signals.before_task_publish, hooks.publish),
        (signals.task_prerun, hooks.prerun),
        (signals.task_postrun, hooks.postrun),
        # Any receiver here stops Celery from taking over the root logger: connect none
        # unless asked to.
        (signals.setup_logging, hooks.setup_logging if configure_logging else None),
    ):
        uid = f"reqlog.integrations.celery.{signal.name}"
        signal.disconnect(dispatch_uid=uid)
        if receiver is not None:
            signal.connect(receiver, weak=False, dispatch_uid=uid)
    _HOOKS = hooks
