"""What reqlog reads from inside Starlette where no public API says it, in one place.

Each function here depends on how Starlette's code is written, not on what it promises;
tests/test_starlette_internals.py fails loudly when that changes.
"""

from __future__ import annotations

import functools
import sys
from types import TracebackType
from typing import Any

from starlette.background import BackgroundTask

__all__ = ["background_task_name", "building_lazily"]

_TASK_CALL = BackgroundTask.__call__.__code__


def background_task_name(traceback: TracebackType | None) -> str | None:
    """The function of the ``BackgroundTask`` an exception came out of, by its qualified name.

    Starlette runs a response's background tasks one after the other inside the app call and
    lets the first exception out; the exception says nothing of which task raised. Its
    traceback does: the innermost ``BackgroundTask.__call__`` frame holds the task as ``self``.
    """
    task = None
    while traceback is not None:
        frame = traceback.tb_frame
        if frame.f_code is _TASK_CALL:
            task = frame.f_locals.get("self")
        traceback = traceback.tb_next
    func: Any = getattr(task, "func", None)
    while isinstance(func, functools.partial):
        func = func.func
    if func is None:
        return None
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    return name if isinstance(name, str) else type(func).__qualname__


def building_lazily(depth: int) -> bool:
    """Whether the code ``depth`` frames above this function's caller is a Starlette app
    building its middleware stack on its first ASGI call (``Starlette.__call__`` ->
    ``build_middleware_stack``). A middleware's ``__init__`` asks with ``depth=1``.

    Starlette creates the user's middleware on the first call it gets, which is the lifespan
    startup when the server runs the lifespan protocol: an exception raised then, before the
    app has spoken the protocol, reads to uvicorn (``--lifespan auto``) as "lifespan
    unsupported", and the server starts serving 500s. Knowing the build is lazy lets the
    middleware report the error as a failed startup instead.
    """
    try:
        frame = sys._getframe(depth + 1)
    except (AttributeError, ValueError):  # not CPython, or no such frame
        return False
    caller = frame.f_back
    return (
        frame.f_code.co_name == "build_middleware_stack"
        and caller is not None
        and caller.f_code.co_name == "__call__"
    )
