"""reqlog.integrations.celery: a task queued in a request logs under that request's ID."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog
from asgi_correlation_id.context import correlation_id
from fastapi import FastAPI

import reqlog
from tests.conftest import LogOutput

pytest.importorskip("celery")

from celery import Celery, signals
from celery.contrib.testing.worker import start_worker
from celery.utils.log import get_task_logger

from reqlog.integrations import celery as reqlog_celery

pytestmark = pytest.mark.anyio

RID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def celery_app() -> Iterator[Celery]:
    reqlog_celery.setup()
    app = Celery("tests", broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.broker_connection_retry_on_startup = False
    app.conf.broker_transport_options = {"polling_interval": 0.01}
    yield app
    for signal in (signals.before_task_publish, signals.task_prerun, signals.task_postrun):
        signal.disconnect(dispatch_uid=f"reqlog.integrations.celery.{signal.name}")
    signals.setup_logging.disconnect(dispatch_uid="reqlog.integrations.celery.setup_logging")


def _ship_task(app: Celery) -> Any:
    log = reqlog.get_logger("orders.tasks")
    task_log = get_task_logger("orders.tasks.stdlib")

    @app.task(name="orders.ship")  # type: ignore[untyped-decorator]
    def ship(order_id: int) -> str | None:
        log.info("shipping", order_id=order_id)
        task_log.info("shipped %s", order_id)
        return correlation_id.get()

    return ship


@pytest.mark.slow
async def test_real_worker_logs_the_request_id(log_output: LogOutput, celery_app: Celery) -> None:
    log_output.configure(level="INFO")
    ship = _ship_task(celery_app)
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware)

    @app.post("/orders/{order_id}/ship")
    def queue(order_id: int) -> dict[str, Any]:
        return {"seen": ship.delay(order_id).get(timeout=60, interval=0.01)}

    # A real worker thread on an in-memory broker: the ID crosses in the message headers.
    # (Stopping it takes ~2 s: its loop waits that long for messages between checks.)
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 123))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post("/orders/7/ship", headers={"X-Request-ID": RID})
        # A task queued outside any request gets an ID of its own.
        outside = ship.delay(8).get(timeout=60, interval=0.01)

    assert response.json() == {"seen": RID}
    assert outside
    assert outside != RID
    events = [e for e in log_output.events() if e["logger"].startswith("orders")]
    task_ids = {e["task_id"] for e in events}
    assert len(task_ids) == 2
    for event in events:
        event.pop("timestamp")
        event.pop("task_id")
        # pytest's log capture formats each record first, which leaves record.message set.
        event.pop("message", None)
    assert events == [
        {
            "event": "shipping",
            "order_id": 7,
            "request_id": RID,
            "task_name": "orders.ship",
            "logger": "orders.tasks",
            "level": "info",
        },
        {
            "event": "shipped 7",
            "request_id": RID,
            "task_name": "orders.ship",
            "logger": "orders.tasks.stdlib",
            "level": "info",
        },
        {
            "event": "shipping",
            "order_id": 8,
            "request_id": outside,
            "task_name": "orders.ship",
            "logger": "orders.tasks",
            "level": "info",
        },
        {
            "event": "shipped 8",
            "request_id": outside,
            "task_name": "orders.ship",
            "logger": "orders.tasks.stdlib",
            "level": "info",
        },
    ]
    [access] = log_output.access()
    assert access["request_id"] == RID
    # Nothing of a task stays behind in the worker's context, or here.
    assert structlog.contextvars.get_contextvars() == {}
    assert correlation_id.get() is None


async def test_eager_task_runs_inside_the_request(
    log_output: LogOutput, celery_app: Celery
) -> None:
    log_output.configure()
    celery_app.conf.task_always_eager = True
    ship = _ship_task(celery_app)
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware)
    after: list[str | None] = []

    @app.post("/ship")
    async def queue() -> dict[str, Any]:
        seen = ship.delay(1).get()
        # The request's own ID is back in place once the eager task is done.
        after.append(correlation_id.get())
        reqlog.get_logger("orders").info("queued")
        return {"seen": seen}

    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 123))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/ship", headers={"X-Request-ID": RID})

    assert response.json() == {"seen": RID}
    assert after == [RID]
    events = {e["event"]: e for e in log_output.events()}
    assert events["shipping"]["request_id"] == RID
    assert events["shipping"]["task_name"] == "orders.ship"
    assert "task_id" not in events["queued"]  # unbound when the task ended
    assert events["queued"]["request_id"] == RID


def test_worker_keeps_reqlogs_logging(celery_app: Celery) -> None:
    # Celery's worker sets up logging unless a setup_logging receiver exists; reqlog's
    # configures reqlog (from REQLOG_*) instead, and the root logger keeps its handler.
    signals.setup_logging.send(sender=None, loglevel=logging.INFO, logfile=None)
    assert reqlog._configure.is_configured()
    assert reqlog._state.STATE.handler in logging.getLogger().handlers


def test_setup_twice_connects_once(celery_app: Celery) -> None:
    reqlog_celery.setup(header="X_REQUEST_ID")
    receivers = [r for r in signals.task_prerun.receivers if "reqlog" in str(r[0])]
    assert len(receivers) == 1
    with pytest.raises(ValueError, match="header: expected a non-empty string"):
        reqlog_celery.setup(header="")
