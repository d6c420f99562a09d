"""The demo a newcomer runs first (``make demo``): it starts, answers, and shows its log."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from examples import demo

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_make_demo_shows_one_access_event_per_request() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REQLOG_")}
    result = subprocess.run(
        [sys.executable, "examples/demo.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    statuses = [int(s) for s in re.findall(r"^  .{34} GET \S+\s+-> (\d+)", out, re.MULTILINE)]
    assert statuses == [200, 200, 404, 500, 200, 200, 200, 200, 200, 200]
    events = [orjson.loads(line) for line in out.splitlines() if line.startswith("{")]
    access = [e for e in events if e["logger"] == "reqlog.access"]
    # One access event per request but the excluded health check, in order.
    paths = [path.split("?")[0] for _, path, _ in demo.REQUESTS if path != "/health"]
    assert [e["path"] for e in access] == paths
    assert [e["event"] for e in access].count("request_failed") == 1
    assert "query" in access[6]
    assert access[6]["query"] == "q=shoes&api_key=[REDACTED]"
    assert not [line for line in out.splitlines() if "sk-live-123" in line and "->" not in line]
    assert "The same log, read back with `reqlog view`" in out
    assert re.search(r"\d+ log lines for 10 requests; uvicorn exited -15$", out.rstrip())
