"""The demo application: a small FastAPI service logged by reqlog.

Run it with ``make serve`` (or ``uvicorn examples.app:app``) and watch the JSON lines.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection

import reqlog

reqlog.configure(service="demo", slow_request_ms=250)

log = reqlog.get_logger(__name__)
library_log = logging.getLogger("inventory.client")  # a third-party library's stdlib logger

USERS = {"token-ada": "ada", "token-grace": "grace"}


class BearerAuth(AuthenticationBackend):
    """Starlette authentication: reqlog picks the user up from ``scope["user"]`` on its own."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        scheme, _, token = conn.headers.get("authorization", "").partition(" ")
        user = USERS.get(token) if scheme.lower() == "bearer" else None
        return (AuthCredentials(["authenticated"]), SimpleUser(user)) if user else None


app = FastAPI(title="reqlog demo")
app.add_middleware(AuthenticationMiddleware, backend=BearerAuth())
app.add_middleware(reqlog.RequestLoggingMiddleware, exclude_paths=["/health"])


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> dict[str, int]:
    log.info("loading_item", item_id=item_id)
    library_log.info("cache miss for item %s", item_id)
    return {"id": item_id}


@app.get("/orders/{order_id}")
def read_order(order_id: int) -> dict[str, int]:
    # A sync endpoint runs in the threadpool: bound fields still reach request_completed.
    reqlog.bind(order_id=order_id)
    log.info("order_loaded")
    return {"order": order_id}


@app.get("/me")
async def me() -> dict[str, str | None]:
    log.info("profile_viewed")
    return {"request_id": reqlog.get_request_id()}


@app.get("/search")
async def search(q: str = "") -> dict[str, list[str]]:
    log.info("searching", q=q)
    return {"results": [q]}


@app.get("/reports/{report_id}")
async def slow_report(report_id: int) -> dict[str, int]:
    await asyncio.sleep(0.3)
    return {"report": report_id}


@app.get("/boom")
async def boom() -> None:
    raise RuntimeError("the database is on fire")
