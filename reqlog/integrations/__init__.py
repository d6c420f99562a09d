"""Optional integrations: each module imports its own dependency, installed with an extra.

- ``reqlog.integrations.httpx``: outgoing httpx requests carry the request ID
  (``reqlog-asgi[httpx]``).
- ``reqlog.integrations.celery``: the request ID reaches Celery tasks and their logs
  (``reqlog-asgi[celery]``).
- ``reqlog.integrations.otel``: ``trace_id``/``span_id`` on events, and ``configure(otlp=...)``
  (``reqlog-asgi[otel]``).
- ``reqlog.integrations.gunicorn``: gunicorn's own logs through reqlog
  (``reqlog-asgi[gunicorn]``).

Nothing here is imported by ``import reqlog``. The extras belong to the distribution
``reqlog-asgi`` (the import name is ``reqlog``).
"""

from __future__ import annotations


def missing(module: str, extra: str) -> ImportError:
    """The error raised when an integration's dependency is not installed."""
    hint = f"pip install 'reqlog-asgi[{extra}]'"
    return ImportError(f"reqlog.integrations.{extra} needs {module}: {hint}")
