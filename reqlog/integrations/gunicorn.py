"""gunicorn: its own logs (master and workers) through reqlog, one line per record.

.. code-block:: sh

    gunicorn app:app -k uvicorn_worker.UvicornWorker \\
        --logger-class reqlog.integrations.gunicorn.Logger

Without this logger class, an app that calls ``reqlog.configure()`` already gets every log of
its workers through reqlog; but gunicorn's master logs in its own plain format (it configures
logging before it imports the app), and with ``--preload`` uvicorn's worker class points
``uvicorn.error`` at gunicorn's (by then removed) handlers after reqlog took them over, so
uvicorn's lines are lost. This logger class takes gunicorn's loggers over in the master
(configuring reqlog from ``REQLOG_*`` and gunicorn's ``--log-level`` until the app configures
it), and again in each worker right after the fork.

Access lines: uvicorn's worker logs them on ``uvicorn.access``, which
``RequestLoggingMiddleware`` turns off: its ``request_completed`` event replaces them.
gunicorn's ``--access-logfile``/``--error-logfile`` are not used: reqlog's ``output`` decides.
"""

from __future__ import annotations

import os
from typing import Any

try:
    from gunicorn.glogging import Logger as _GunicornLogger
except ImportError as exc:  # pragma: no cover - exercised without the extra
    from reqlog.integrations import missing

    raise missing("gunicorn", "gunicorn") from exc

from reqlog import _configure
from reqlog._state import STATE
from reqlog._stdlib import take_server_loggers

__all__ = ["Logger"]


def _take_over() -> None:
    """Send the server loggers' records to reqlog's handler on the root logger, once each."""
    if STATE.handler is None:
        return  # reqlog is not routing the standard library (stdlib=False): leave them be
    take_server_loggers()


class Logger(_GunicornLogger):  # type: ignore[misc]
    """gunicorn's ``logger_class``: gunicorn's and uvicorn's loggers go through reqlog.

    gunicorn still sets the ``gunicorn.error`` level from ``--log-level``; reqlog's own
    ``level`` applies on top.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        if not _configure.is_configured():
            if os.environ.get("REQLOG_LEVEL"):
                _configure.configure()
            else:
                _configure.configure(level=str(cfg.loglevel).upper())
        _take_over()

    def close_on_exec(self) -> None:
        # gunicorn calls this in each worker right after the fork, before the app is loaded:
        # the one logger hook that runs there, after the worker class (uvicorn's) has pointed
        # uvicorn's loggers at gunicorn's handlers and turned their propagation off.
        super().close_on_exec()
        _take_over()
