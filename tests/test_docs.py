"""The documentation: every python block in docs/*.md and README.md runs, every docstring
example in reqlog/ runs and shows what it says, and the site builds.

A block preceded by ``<!-- no-exec: why -->`` is skipped (it needs a server, or a part not
there yet); the reason is part of the marker so it can be reviewed.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import inspect
import io
import json
import os
import pkgutil
import re
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import structlog

import reqlog
from reqlog import schemas

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
README = ROOT / "README.md"

_FENCE = re.compile(r"^```(?:python|py)\s*$")
_NO_EXEC = re.compile(r"^<!--\s*no-exec\b.*-->\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    code: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.path.name}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if _FENCE.match(lines[i]):
            start = i
            previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            skip = previous.strip() if _NO_EXEC.match(previous.strip()) else None
            i += 1
            body: list[str] = []
            while i < len(lines) and lines[i].rstrip() != "```":
                body.append(lines[i])
                i += 1
            blocks.append(Block(path, start + 1, "\n".join(body) + "\n", skip))
        i += 1
    return blocks


BLOCKS = [b for p in [*PAGES, *([README] if README.exists() else [])] for b in python_blocks(p)]


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_code_block_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if block.skip is not None:
        pytest.skip(block.skip)
    # Each block runs alone, in a fresh namespace and an empty directory (files it writes land
    # there); the shared autouse fixture resets reqlog before and after.
    monkeypatch.chdir(tmp_path)
    # A real module: frameworks resolve annotations through sys.modules[__module__].
    module = types.ModuleType("docs_example")
    monkeypatch.setitem(sys.modules, "docs_example", module)
    exec(compile(block.code, str(block.path) + f":{block.line}", "exec"), module.__dict__)
    reqlog.flush()


def _docstring_examples() -> list[doctest.DocTest]:
    """The ``>>>`` examples of every module of reqlog (its own objects', not imported ones)."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    found: list[doctest.DocTest] = []
    for info in pkgutil.walk_packages(reqlog.__path__, "reqlog."):
        if info.name == "reqlog.__main__":
            continue  # runs the command when imported as __main__ only, but has no examples
        module = importlib.import_module(info.name)
        found += [test for test in finder.find(module) if test.examples]
    return sorted(found, key=lambda test: test.name)


DOCTESTS = _docstring_examples()


@pytest.mark.parametrize("example", DOCTESTS, ids=[test.name for test in DOCTESTS])
def test_docstring_example_runs(
    example: doctest.DocTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a reader would run it: reqlog configured (to memory here), ``reqlog``, ``io`` and
    # ``structlog`` imported, in an empty directory; the autouse fixture resets afterwards.
    monkeypatch.chdir(tmp_path)
    reqlog.configure(output=io.BytesIO(), format="json")
    example.globs = {**example.globs, "reqlog": reqlog, "io": io, "structlog": structlog}
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    runner.run(example, out=report.append, clear_globs=False)
    assert runner.failures == 0, "".join(report)


def test_docstring_examples_are_found() -> None:
    # Guards the finder, as test_the_docs_have_python_blocks guards the Markdown extractor.
    names = {test.name for test in DOCTESTS}
    assert {"reqlog._configure.configure", "reqlog.middleware.RequestLoggingMiddleware"} <= names
    assert len(DOCTESTS) >= 15


def test_the_docs_have_python_blocks() -> None:
    # Guards the extractor: a change of fence style must not make the test above vacuous.
    assert len(BLOCKS) >= 10


def test_every_page_is_in_the_nav() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = set(re.findall(r"^\s+- [^:]+: (\S+\.md)\s*$", config, flags=re.MULTILINE))
    assert nav == {p.name for p in PAGES}


def test_configuration_page_documents_every_option() -> None:
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    configure_options = inspect.signature(reqlog.configure).parameters
    middleware_options = [
        name
        for name in inspect.signature(reqlog.RequestLoggingMiddleware.__init__).parameters
        if name not in ("self", "app")
    ]
    missing = [
        name for name in [*configure_options, *middleware_options] if f"| `{name}` |" not in page
    ]
    assert missing == []


def _table_rows(page: str, heading: str) -> dict[str, list[str]]:
    section = page.split(heading, 1)[1].split("\n#", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if re.fullmatch(r"`\w+`", cells[0]) and len(cells) >= 3:
            rows[cells[0].strip("`")] = [c.strip("`") for c in cells[1:]]
    return rows


def test_schema_field_table_matches_the_mappings() -> None:
    page = (DOCS / "events.md").read_text(encoding="utf-8")
    rows = _table_rows(page, "### Field names by schema")
    for flat in {*schemas.ECS_FIELDS, *schemas.OTEL_FIELDS}:
        ecs, otel = rows[flat][0], rows[flat][1]
        assert ecs == schemas.ECS_FIELDS.get(flat, flat), flat
        assert otel == schemas.OTEL_FIELDS.get(flat, flat), flat
    for flat, (ecs, otel, *_) in rows.items():
        assert ecs == schemas.ECS_FIELDS.get(flat, flat), flat
        assert otel == schemas.OTEL_FIELDS.get(flat, flat), flat


pytest_plugins = ["pytester"]


@pytest.mark.skipif(not hasattr(reqlog, "Redactor"), reason="the Redactor is not on this branch")
def test_testing_page_fixture_example_passes(pytester: pytest.Pytester) -> None:
    (block,) = [
        b for b in python_blocks(DOCS / "testing.md") if "def test_login_is_logged" in b.code
    ]
    pytester.makepyfile(test_example=block.code)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:asyncio")
    result.assert_outcomes(passed=1)


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed (docs extra)"
)
@pytest.mark.slow
def test_site_builds(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "api" / "index.html").exists()


# -- the examples print what the pages say they print -------------------------------------------

_VOLATILE = {"request_id", "timestamp", "duration_ms"}


def json_blocks(path: Path) -> list[list[dict[str, object]]]:
    """The ```json blocks of a page, each as its list of events (one object per line)."""
    text = path.read_text(encoding="utf-8")
    blocks = re.findall(r"^```json\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    return [[json.loads(line) for line in block.splitlines() if line.strip()] for block in blocks]


def _run_example(tmp_path: Path, code: str, module: str, driver: str) -> list[dict[str, object]]:
    """Run a page's example as the module ``module``, then ``driver``; the JSON lines it wrote."""
    (tmp_path / f"{module}.py").write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REQLOG_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    result = subprocess.run(
        [sys.executable, "-c", driver],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return [json.loads(line) for line in result.stdout.splitlines()]


def _same_shape(shown: list[dict[str, object]], printed: list[dict[str, object]]) -> None:
    """The same events, fields in the same order, equal but for IDs, times and durations."""
    assert [list(e) for e in printed] == [list(e) for e in shown]
    for seen, expected in zip(printed, shown, strict=True):
        assert {k: v for k, v in seen.items() if k not in _VOLATILE} == {
            k: v for k, v in expected.items() if k not in _VOLATILE
        }


_CURL = """
import asyncio, httpx
import {module} as example

async def drive() -> None:
    transport = httpx.ASGITransport(app=example.app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.get({path!r}, headers={{"user-agent": "curl/8.5.0"}})

asyncio.run(drive())
"""


def _setup_block(path: Path) -> str:
    blocks = [b for b in python_blocks(path) if "add_middleware" in b.code and "@app.get" in b.code]
    return blocks[0].code


@pytest.mark.parametrize(
    ("page", "module", "path"),
    [(README, "app", "/items/42?token=abc"), (DOCS / "quickstart.md", "main", "/items/3")],
    ids=["README", "quickstart"],
)
def test_the_first_example_prints_the_lines_shown(
    tmp_path: Path, page: Path, module: str, path: str
) -> None:
    printed = _run_example(
        tmp_path, _setup_block(page), module, _CURL.format(module=module, path=path)
    )
    printed = [e for e in printed if e["logger"] != "httpx"]  # the driver's own client
    shown = json_blocks(page)[0]
    _same_shape(shown, printed)
    assert printed[0]["request_id"] == printed[1]["request_id"]


def test_quickstart_script_without_a_server_prints_three_lines(tmp_path: Path) -> None:
    page = DOCS / "quickstart.md"
    [script] = [b for b in python_blocks(page) if "asyncio.run(main())" in b.code]
    printed = _run_example(tmp_path, script.code, "script", "import script")
    first_two, httpx_line = json_blocks(page)[:2]
    # The page's first two lines came from curl; this script's client is httpx.
    assert printed[1].pop("user_agent") == f"python-httpx/{httpx.__version__}"
    first_two = [dict(first_two[0]), {k: v for k, v in first_two[1].items() if k != "user_agent"}]
    _same_shape([*first_two, *httpx_line], printed)


_LOOKS_LIKE_PYTHON = re.compile(
    r"^\s*(?:import \w|from [\w.]+ import )|\b(?:reqlog|uvicorn|logging)\.\w+\(", re.MULTILINE
)


def test_python_in_the_docs_is_labelled_python() -> None:
    """A Python example fenced as text would escape test_code_block_runs: none may."""
    fence = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
    hidden = []
    for page in [*PAGES, README]:
        for language, code in fence.findall(page.read_text(encoding="utf-8")):
            if language in ("python", "py") or not _LOOKS_LIKE_PYTHON.search(code):
                continue
            try:
                compile(code, page.name, "exec")
            except SyntaxError:
                continue  # shell commands, configuration files
            hidden.append(f"{page.name}: {code.splitlines()[0]}")
    assert hidden == []


def test_make_targets_in_the_docs_exist() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.MULTILINE))
    named = {
        target
        for page in [*PAGES, README]
        for target in re.findall(r"\bmake ([a-z][\w-]*)", page.read_text(encoding="utf-8"))
    }
    assert named
    assert named <= targets
