"""The 500 a failed request gets, as the app would send it, with the request ID on it."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.middleware.errors import ServerErrorMiddleware
from starlette.responses import PlainTextResponse
from starlette.types import Message, Receive, Scope, Send

from reqlog import _foreign, _state
from reqlog._headers import with_header

__all__ = ["is_cancellation", "send_error_response"]


async def send_error_response(
    app: Any, exc: Exception, scope: Scope, receive: Receive, send: Send
) -> None:
    """Send the 500 the application itself would send, through reqlog's ``send``.

    Starlette's ``ServerErrorMiddleware`` sits outside every user middleware and writes the
    500 straight to the server, where no request-ID header can be added. So reqlog builds that
    same response here (the app's 500/``Exception`` handler, or the debug page in debug mode)
    by running Starlette's own ``ServerErrorMiddleware`` on the exception; the outer one then
    sees a response already started and only re-raises.
    """

    async def closing_send(message: Message) -> None:
        # The exception goes on to the server, which then closes the connection (uvicorn
        # does): say so, or a keep-alive client sends its next request into a closing socket.
        if message["type"] == "http.response.start":
            message = with_header(message, b"connection", b"close")
        await send(message)

    if app is None or not hasattr(app, "exception_handlers"):
        # Not Starlette: answer as the server would, with the ID.
        await PlainTextResponse("Internal Server Error", status_code=500)(
            scope, receive, closing_send
        )
        return
    handler, debug = _foreign.server_error_handler(app)

    async def reraise(scope: Scope, receive: Receive, send: Send) -> None:
        raise exc

    try:
        await ServerErrorMiddleware(reraise, handler=handler, debug=debug)(
            scope, receive, closing_send
        )
    except Exception as raised:  # noqa: BLE001 - the app's handler must not hide the original
        if raised is not exc:
            # The app's own error handler failed: the server will answer with its own 500.
            _state.report("error_handler", f"the application's 500 handler raised {raised!r}")
    _foreign.mark_answered(exc)


def is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is the server cancelling the request's task (asyncio's or anyio's)."""
    if isinstance(exc, asyncio.CancelledError):
        return True
    try:
        import anyio

        return isinstance(exc, anyio.get_cancelled_exc_class())
    except Exception:  # noqa: BLE001 - outside an async backend
        return False
