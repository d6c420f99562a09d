"""Every integration is optional: reqlog works without its dependency, and says what to install."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import importlib, importlib.abc, io, sys

    blocked = sys.argv[1]

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == blocked or name.startswith(blocked + "."):
                raise ImportError(name)
            return None

    sys.meta_path.insert(0, Block())
    import reqlog
    out = io.StringIO()
    reqlog.configure(output=out, format="json")
    reqlog.get_logger("t").info("still_logging")
    assert "still_logging" in out.getvalue()
    try:
        importlib.import_module(sys.argv[2])
    except ImportError as exc:
        print(exc)
    """
)


@pytest.mark.parametrize(
    ("blocked", "module", "extra"),
    [
        ("httpx", "reqlog.integrations.httpx", "httpx"),
        ("celery", "reqlog.integrations.celery", "celery"),
        ("opentelemetry", "reqlog.integrations.otel", "otel"),
        ("gunicorn", "reqlog.integrations.gunicorn", "gunicorn"),
    ],
)
def test_missing_dependency(blocked: str, module: str, extra: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REQLOG_")}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, blocked, module],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"pip install 'reqlog-asgi[{extra}]'")


def test_import_reqlog_imports_no_integration() -> None:
    code = (
        "import sys, reqlog; reqlog.configure(trace_context=False); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('httpx', 'celery', 'gunicorn', 'opentelemetry') or m.startswith('reqlog.integrations')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
