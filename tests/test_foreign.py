"""reqlog/_foreign.py reads other projects' insides: these fail loudly when one changes them."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask, BackgroundTasks
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reqlog import _foreign


def send_mail(to: str) -> None:
    raise RuntimeError(to)


async def audit() -> None:
    raise KeyError("audit")


@pytest.mark.parametrize(
    ("task", "name"),
    [
        (BackgroundTask(send_mail, "a@example.com"), "send_mail"),
        (BackgroundTask(audit), "audit"),
        (BackgroundTask(functools.partial(send_mail, "b@example.com")), "send_mail"),
    ],
)
async def test_background_task_name_is_found_in_the_traceback(
    task: BackgroundTask, name: str
) -> None:
    tasks = BackgroundTasks([BackgroundTask(lambda: None), task])
    with pytest.raises(Exception) as caught:  # noqa: PT011 - any of the tasks' exceptions
        await tasks()
    assert _foreign.background_task_name(caught.value.__traceback__) == name


def test_no_task_no_name() -> None:
    with pytest.raises(ValueError, match="not in a task") as caught:
        raise ValueError("not in a task")
    assert _foreign.background_task_name(caught.value.__traceback__) is None


class Probe:
    """A middleware that records whether Starlette is building its stack lazily."""

    seen: ClassVar[list[bool]] = []

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # One frame up is this __init__'s caller: the code that created the middleware.
        Probe.seen.append(_foreign.building_lazily(1))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def test_lazy_build_is_recognised() -> None:
    Probe.seen = []
    Starlette(middleware=[Middleware(Probe)]).build_middleware_stack()
    app = Starlette(middleware=[Middleware(Probe)])

    async def receive() -> Message:
        return {"type": "lifespan.shutdown"}

    sent: list[Any] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "lifespan", "state": {}}, receive, send)
    assert Probe.seen == [False, True]
