"""``reqlog sql``: any SQL over the logs, for the questions the other commands do not ask.

Two views: ``requests`` (one row per access event: the unified columns of the flat, ECS and
OTel schemas, ``ts`` as a time and ``weight``, the requests a sampled event stands for) and
``events`` (every event: the same columns, ``access``, and ``json``, the whole event, for any
other field: ``json->>'item_id'``). Output is a table, CSV or JSON lines; every value from the
logs is escaped on the way to the terminal.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Sequence
from typing import Any, TextIO

import orjson

from ._engine import Logs, Window
from ._safe import escape_json, safe

MAX_CELL = 120


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e15 else repr(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dict | list):
        return orjson.dumps(value, default=str).decode()
    return str(value)


def table(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An aligned text table; long cells are cut, every cell is escaped."""
    cells = [[safe(_cell(v))[:MAX_CELL] for v in row] for row in rows]
    head = [safe(n) for n in names]
    widths = [max([len(head[i]), *(len(r[i]) for r in cells)]) for i in range(len(head))]
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in rows) and bool(rows)
        for i in range(len(head))
    ]

    def line(items: Sequence[str]) -> str:
        return "  ".join(
            (c.rjust(w) if num else c.ljust(w))
            for c, w, num in zip(items, widths, numeric, strict=True)
        ).rstrip()

    out = [line(head), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells)
    out.append(f"({len(rows):,} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def run(
    query: str,
    names: Sequence[str],
    *,
    fmt: str,
    window: Window,
    threads: int | None,
    out: TextIO,
    err: TextIO,
) -> int:
    """The ``sql`` command."""
    with Logs(names, window, threads=threads, views=True) as logs:
        for problem in logs.problems:
            print(f"reqlog: {safe(problem)}", file=err)
        try:
            cursor = logs.con.execute(query)
            columns = [d[0] for d in cursor.description or []]
            rows = cursor.fetchall()
        except logs.duckdb.Error as exc:
            print(f"reqlog sql: {safe(str(exc))}", file=err)
            return 1
    if fmt == "json":
        for row in rows:
            doc = dict(zip(columns, row, strict=True))
            text = orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
            out.write(escape_json(text) + "\n")
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([safe(c) for c in columns])
        for row in rows:
            writer.writerow(["" if v is None else safe(_cell(v)) for v in row])
        out.write(buffer.getvalue())
    else:
        print(table(columns, rows), file=out)
    return 0
