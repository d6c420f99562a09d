"""The request lifecycle beyond the app's own calls: clients that leave, and shutdown.

- :class:`InFlight`: the HTTP requests being served on one event loop, so that a client that
  leaves is seen even by an app that never reads (one timer per loop, not per request), and
  the lifespan shutdown can wait for the requests the server has just cancelled.
- :class:`ReadAhead`: reads a request's messages ahead of an app that is not reading.
- :func:`flush_at_shutdown`: the logs are flushed before the server hears shutdown is done.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final

from starlette.types import Message, Receive, Scope, Send

from reqlog import _state, output

__all__ = [
    "READ_AHEAD_BYTES",
    "SETTLE_TIMEOUT_S",
    "WATCH_INTERVAL_S",
    "InFlight",
    "ReadAhead",
    "expects_continue",
    "flush_at_shutdown",
]

# A request still running after one to two of these intervals gets its disconnect watch (see
# InFlight): cheaper than a timer per request, and a request that ends sooner needs none.
WATCH_INTERVAL_S: Final = 0.25
# What the disconnect watch reads ahead of an app that has not read the request body yet, at
# most: beyond it, the server's own flow control holds the client back, as it would without us.
READ_AHEAD_BYTES: Final = 65536
# At lifespan shutdown, how long to wait for requests the server has just cancelled to write
# their access events before the last flush.
SETTLE_TIMEOUT_S: Final = 1.0


class InFlight:
    """The HTTP requests being served on one event loop, for the disconnect watch and shutdown.

    Each request registers a ``watch`` callable while it runs. One timer per loop, not per
    request (a timer handle cost about 19k instructions to create and cancel, more than the
    rest of the watch together), ticks every ``WATCH_INTERVAL_S`` while requests are in
    flight and calls the watch of every request it already saw on its previous tick: a
    request is watched from between one and two intervals after it started, and a request
    that ends sooner costs a set insertion and removal. The timer stops when no request is in
    flight.
    """

    __slots__ = ("_older", "loop", "requests", "timer", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # Each request adds its watch when it starts and discards it when it ends.
        self.requests: set[Callable[[], None]] = set()
        self.timer: asyncio.TimerHandle | None = None
        self._older: set[Callable[[], None]] = set()
        # Set while the lifespan shutdown waits for the requests in flight to end.
        self.waiter: asyncio.Event | None = None

    def arm(self) -> None:
        # An empty context: the tick belongs to no request.
        tick, context = self._tick, contextvars.Context()
        self.timer = self.loop.call_later(WATCH_INTERVAL_S, tick, context=context)

    def _tick(self) -> None:
        requests = self.requests
        if not requests:
            self.timer = None
            self._older = set()
            return
        self.arm()
        for watch in self._older & requests:
            try:
                watch()
            except Exception as exc:  # noqa: BLE001 - the watch must never break the loop's timer
                _state.report("watch", f"disconnect watch failed: {exc!r}")
        self._older = set(requests)

    async def settled(self, timeout: float) -> None:
        """Wait until no request is in flight, for at most ``timeout`` seconds."""
        if not self.requests:
            return
        waiter = self.waiter = asyncio.Event()
        try:
            await asyncio.wait_for(waiter.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self.waiter = None


class ReadAhead:
    """Reads a request's messages ahead of an app that is not reading, to see the client go.

    The messages are handed back to the app, in order, when it calls ``receive()``; while a
    read is pending, the app waits for that same read instead of calling the server's
    ``receive()`` a second time. At most ``READ_AHEAD_BYTES`` of body are held: past that,
    reading stops until the app reads, and the server's flow control applies as before.
    """

    __slots__ = ("_buffer", "_error", "_held", "_receive", "_task", "disconnected")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._buffer: deque[Message] = deque()
        self._held = 0
        self._error: Exception | None = None
        self.disconnected = False
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            while self._held <= READ_AHEAD_BYTES:
                message = await self._receive()
                self._buffer.append(message)
                if message.get("type") == "http.disconnect":
                    self.disconnected = True
                    return
                self._held += len(message.get("body") or b"")
        except Exception as exc:  # noqa: BLE001 - handed to the app's next receive()
            self._error = exc

    async def receive(self) -> Message:
        """The app's ``receive()`` while reading ahead."""
        while True:
            if self._buffer:
                message = self._buffer.popleft()
                self._held -= len(message.get("body") or b"")
                return message
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if self._task.done():
                return await self._receive()
            # Waits for the pending read without cancelling it if the app's wait is
            # cancelled (Starlette's is_disconnected() does that on purpose).
            await asyncio.wait((self._task,))

    async def settle(self) -> None:
        """At the response's last message: let a read that already completed land, then stop.

        The server's ``receive()`` answers "disconnect" once the response is complete; that
        answer must not be taken for the client leaving.
        """
        if not self._task.done():
            await asyncio.sleep(0)
        self._task.cancel()

    def stop(self) -> None:
        self._task.cancel()


def expects_continue(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"expect" and value.lower() == b"100-continue":
            return True
    return False


def flush_at_shutdown(send: Send, settle: Callable[[], Awaitable[None]]) -> Send:
    """Wrap a lifespan ``send``: flush the logs before the server hears shutdown is complete.

    The server may exit right after (uvicorn re-raises SIGTERM, which skips atexit), so this
    is the last moment the background writer is sure to get: the flush is bounded in time,
    and the server's last lines after it are written synchronously. Before it, ``settle``
    gives the requests the server has just cancelled (uvicorn's ``--timeout-graceful-shutdown``)
    a bounded moment to write their access events, or they would come after the flush.
    """

    async def send_wrapper(message: Message) -> None:
        if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            await settle()
            _state.STATE.output.write_through(timeout=output.SHUTDOWN_FLUSH_TIMEOUT_S)
        await send(message)

    return send_wrapper
