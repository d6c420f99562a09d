"""The package as users get it: its name, its extras, and the wheel installed in a fresh venv.

The slow test builds the sdist and, from it, the wheel (``python -m build``, as ``make dist``),
checks both as the package index would (``twine check --strict``), installs the wheel with the
``demo`` extra into a new virtual environment, and runs the quickstart's app from there under a
real uvicorn: a module missing from the wheel, or a dependency missing from pyproject.toml,
fails it. Its dependencies come from pip's cache (or the package index when the cache is cold).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tomllib
import zipfile
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

import reqlog
from tests.conftest import listening_socket
from tests.test_docs import python_blocks

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
NAME: str = PYPROJECT["project"]["name"]
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
# Where the project tells people what to install.
TEXTS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "reqlog").rglob("*.py")),
    ROOT / "Makefile",
]


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return match.group(0).lower().replace("_", "-")


def test_the_distribution_name_is_not_the_import_name() -> None:
    # `reqlog` on the package index is an unrelated project (checked with `pip index versions`).
    assert NAME == "reqlog-asgi"
    assert PYPROJECT["project"]["scripts"] == {"reqlog": "reqlog.cli:main"}


def test_version_comes_from_the_installed_distribution() -> None:
    assert reqlog.__version__ == PYPROJECT["project"]["version"]


def test_every_install_hint_names_the_distribution() -> None:
    """No page, message or docstring tells anyone to `pip install reqlog` or `reqlog[extra]`."""
    wrong: list[str] = []
    hint = re.compile(r"pip install\s+(?:-\S+\s+)*['\"]?([A-Za-z][\w.-]*)(\[[\w,]+\])?")
    for path in TEXTS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
            for match in hint.finditer(line):
                name = match.group(1)
                if name.lower().startswith("reqlog") and name != NAME:
                    wrong.append(where)
            # An extra spelled with the import name, e.g. ``reqlog[otel]``.
            if re.search(r"(?<![\w/.-])reqlog\[(?:" + "|".join(EXTRAS) + r")\b", line):
                wrong.append(where)
    assert wrong == []


def _extras_table() -> dict[str, list[str]]:
    page = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    section = page.split("### Extras", 1)[1].split("\n#", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if re.fullmatch(r"`[\w-]+`", cells[0]) and len(cells) >= 3:
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_every_extra_is_in_the_one_table_with_what_it_installs() -> None:
    rows = _extras_table()
    assert set(rows) == set(EXTRAS)
    for extra, requirements in EXTRAS.items():
        installs = rows[extra][0].lower()
        for requirement in requirements:
            name = _requirement_name(requirement)
            if name == NAME:  # an extra that includes others: say which
                included = re.search(r"\[([\w,-]+)\]", requirement)
                assert included, requirement
                for other in included.group(1).split(","):
                    assert f"`{other}`" in installs, (extra, other)
            elif extra not in ("dev", "bench"):  # those two list their tools in prose
                assert name in installs, (extra, name)


@pytest.mark.slow
def test_the_built_wheel_runs_the_quickstart_in_a_fresh_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), "."])
    assert "Successfully built" in build
    [wheel] = dist.glob("*.whl")
    [sdist] = dist.glob("*.tar.gz")
    assert wheel.name == f"reqlog_asgi-{reqlog.__version__}-py3-none-any.whl"
    _run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)])

    # Every module of the source tree is in the wheel, with the typing marker and the license.
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "reqlog").rglob("*.py")}
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = HeaderParser().parsestr(
            archive.read(f"reqlog_asgi-{reqlog.__version__}.dist-info/METADATA").decode()
        )
    assert sources | {"reqlog/py.typed"} <= names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "examples/"))]
    assert any(n.endswith("dist-info/licenses/LICENSE") for n in names)
    assert metadata["Name"] == NAME
    assert set(metadata.get_all("Provides-Extra") or []) == set(EXTRAS)

    # A fresh venv with the wheel and the demo extra, nothing from this checkout.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    _run([*pip, "install", "--quiet", f"{wheel}[demo]"])
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REQLOG_", "PYTHON"))}
    where = _run(
        [str(python), "-c", "import reqlog; print(reqlog.__file__, reqlog.__version__)"],
        cwd=app_dir,
        env=env,
    )
    assert where.split() == [
        str(venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}")
        + "/site-packages/reqlog/__init__.py",
        reqlog.__version__,
    ]

    # The quickstart's app, as the page shows it, under uvicorn from that venv.
    setup = python_blocks(ROOT / "docs" / "quickstart.md")[0]
    assert "app.add_middleware(reqlog.RequestLoggingMiddleware)" in setup.code
    (app_dir / "main.py").write_text(setup.code, encoding="utf-8")
    events = _serve_once(python, app_dir, env)
    rid = events[-1]["request_id"]
    in_request = [(e["event"], e["logger"]) for e in events if e.get("request_id") == rid]
    assert in_request == [("loading_item", "main"), ("request_completed", "reqlog.access")]
    completed = events[-1]
    assert (completed["route"], completed["status_code"], completed["query"]) == (
        "/items/{item_id}",
        200,
        "token=[REDACTED]",
    )
    assert {e["service"] for e in events} == {"orders"}

    # The console script reads what the app wrote.
    log = app_dir / "app.log"
    log.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    reqlog_command = [str(venv / "bin" / "reqlog"), "view", "--color", "never", str(log)]
    shown = _run(reqlog_command, cwd=app_dir, env=env)
    assert "GET /items/3?token=[REDACTED] -> 200" in shown


def _serve_once(python: Path, app_dir: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    """``uvicorn main:app`` from ``python``'s venv: one request, then SIGTERM; its events."""
    sock = listening_socket()
    proc = subprocess.Popen(
        [str(python), "-m", "uvicorn", "main:app", "--fd", str(sock.fileno())],
        pass_fds=[sock.fileno()],
        cwd=app_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/items/3?token=abc"
    sock.close()
    try:
        response = httpx.get(url, timeout=60)  # waits in the backlog until uvicorn is up
        assert response.json() == {"id": 3}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert err == b"", err.decode()
    events = [orjson.loads(line) for line in out.splitlines()]
    return [e for e in events if e["logger"] != "uvicorn.error"]


def _run(command: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_the_install_sections_name_every_dependency() -> None:
    quickstart = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    install = quickstart.split("## Install", 1)[1].split("### Extras", 1)[0].lower()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    readme_install = readme.split("## Install", 1)[1].split("\n## ", 1)[0].lower()
    names = [_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]]
    assert [n for n in names if n not in install] == []
    assert [n for n in names if n not in readme_install] == []
    words = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight"]
    assert f"its {words[len(names)]} dependencies" in install
