"""Request-scoped context: threads, background tasks, concurrency, and nothing left behind."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog
from fastapi import BackgroundTasks, Depends

import reqlog
from tests.conftest import LogOutput
from tests.test_middleware import call_asgi, client_for, make_app


async def test_sync_endpoint_and_dependency_bind_into_the_access_event(
    log_output: LogOutput,
) -> None:
    log_output.configure()
    app = make_app()
    log = reqlog.get_logger("app")

    def current_tenant() -> str:  # a sync dependency: runs in the threadpool
        reqlog.bind(tenant="acme")
        return "acme"

    @app.get("/orders/{oid}")
    def read_order(oid: int, tenant: str = Depends(current_tenant)) -> dict[str, Any]:
        reqlog.bind_user(user_id=99)
        reqlog.bind(order_id=oid)
        log.info("order_loaded")
        return {"tenant": tenant}

    async with client_for(app) as client:
        await client.get("/orders/5")
    loaded, completed = log_output.events()
    for event in (loaded, completed):
        assert (event["tenant"], event["user_id"], event["order_id"]) == ("acme", "99", 5)
    assert completed["event"] == "request_completed"
    assert loaded["request_id"] == completed["request_id"]


async def test_background_tasks_log_with_the_request_context(log_output: LogOutput) -> None:
    log_output.configure()
    app = make_app()
    log = reqlog.get_logger("jobs")

    def send_email(to: str) -> None:
        log.info("email_sent", to=to)

    async def audit() -> None:
        log.info("audited")

    @app.post("/signup")
    async def signup(tasks: BackgroundTasks) -> dict[str, str]:
        reqlog.bind_user(user_id="u1")
        tasks.add_task(send_email, "ada@example.com")
        tasks.add_task(audit)
        return {}

    async with client_for(app) as client:
        response = await client.post("/signup")
    rid = response.headers["x-request-id"]
    events = log_output.events()
    # The access event belongs to the response (written at its last byte); the tasks run
    # after it and keep the request's context.
    assert [(e["event"], e["request_id"], e["user_id"]) for e in events] == [
        ("request_completed", rid, "u1"),
        ("email_sent", rid, "u1"),
        ("audited", rid, "u1"),
    ]


async def test_concurrent_requests_never_see_each_other(log_output: LogOutput) -> None:
    log_output.configure()
    app = make_app()
    log = reqlog.get_logger("app")

    @app.get("/work/{n}")
    async def work(n: int) -> dict[str, int]:
        reqlog.bind(n=n)
        await asyncio.sleep(0.001 * (n % 5))
        log.info("step", seen=reqlog.get_request_id())
        return {"n": n}

    @app.get("/sync/{n}")
    def sync_work(n: int) -> dict[str, int]:
        reqlog.bind(n=n)
        log.info("step", seen=reqlog.get_request_id())
        return {"n": n}

    async with client_for(app) as client:
        responses = await asyncio.gather(
            *(client.get(f"/{'work' if n % 2 else 'sync'}/{n}") for n in range(40))
        )
    ids = {int(r.json()["n"]): r.headers["x-request-id"] for r in responses}
    assert len(set(ids.values())) == 40
    events = log_output.events()
    assert len(events) == 80
    for event in events:
        assert ids[event["n"]] == event["request_id"]
        if event["event"] == "step":
            assert event["seen"] == event["request_id"]


async def test_keep_alive_requests_in_one_task_do_not_leak(log_output: LogOutput) -> None:
    """Two requests served in one task, as a server may do on a keep-alive connection."""
    log_output.configure()
    app = make_app()
    log = reqlog.get_logger("app")
    structlog.contextvars.bind_contextvars(deployment="blue")  # bound by outer code: kept

    @app.get("/first")
    async def first() -> dict[str, str]:
        structlog.contextvars.bind_contextvars(leaky="yes")
        reqlog.bind(also="request-only")
        return {}

    @app.get("/second")
    async def second() -> dict[str, str]:
        log.info("in_second")
        return {}

    await call_asgi(app, path="/first")
    await call_asgi(app, path="/second")
    log.info("outside")
    in_second, outside = [e for e in log_output.events() if e["event"] != "request_completed"]
    assert "leaky" not in in_second
    assert "also" not in in_second
    assert in_second["deployment"] == "blue"
    assert outside == {
        "event": "outside",
        "deployment": "blue",
        "logger": "app",
        "level": "info",
        "timestamp": outside["timestamp"],
    }
    assert structlog.contextvars.get_contextvars() == {"deployment": "blue"}


def test_bind_outside_a_request_uses_structlog_contextvars(log_output: LogOutput) -> None:
    log_output.configure()
    reqlog.bind(job="nightly")
    reqlog.get_logger("cron").info("run")
    assert log_output.events()[0]["job"] == "nightly"
    assert reqlog.get_request_id() is None


@pytest.mark.parametrize("explicit", [True, False])
async def test_explicit_event_fields_win_over_bound_ones(
    log_output: LogOutput, explicit: bool
) -> None:
    log_output.configure()
    app = make_app()
    log = reqlog.get_logger("app")

    @app.get("/")
    async def root() -> dict[str, str]:
        reqlog.bind(step="bound")
        if explicit:
            log.info("e", step="explicit")
        else:
            log.info("e")
        return {}

    await call_asgi(app)
    assert log_output.events()[0]["step"] == ("explicit" if explicit else "bound")
