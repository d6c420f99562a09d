"""The DuckDB engine behind ``stats``, ``report``, ``trace``, ``errors``, ``diff`` and ``sql``.

DuckDB does the reading: JSON-lines parsing, gzip, globs, parallel scans, aggregates and
quantiles. What is reqlog's own lives here, as SQL built once per run:

- which lines are events and which events are access events (``logger`` ``reqlog.access``
  and one of :data:`ACCESS_EVENTS`);
- one set of column names for the flat, ECS and OpenTelemetry schemas, derived from the field
  maps in :mod:`reqlog.schemas` (a dotted name is read both as a top-level key and as nested
  objects, as ECS and OTel writers differ);
- the weight of a sampled event (``1 / sample_rate``) and weighted nearest-rank percentiles;
- the lines that are not events (text, malformed or truncated JSON), counted.

Every command reads ``lines``: each line, unified, read with an explicit column list so DuckDB
parses only what it needs. ``sql`` gets two views for the user's queries: ``requests`` (access
events, typed columns) and ``events`` (every event, the same columns plus ``json``, the whole
event, for anything else).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import os
import shutil
import sys
import tempfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from reqlog.schemas import ECS_FIELDS, OTEL_FIELDS

if TYPE_CHECKING:
    import duckdb

ACCESS_LOGGER = "reqlog.access"
ACCESS_EVENTS = ("request_completed", "request_failed", "websocket_closed", "websocket_failed")
FAILED_EVENTS = ("request_failed", "websocket_failed")

#: The unified columns: reqlog's flat name and its DuckDB type. ``timestamp`` is kept as text
#: (``ts`` is the parsed time); ``exception`` is text too: JSON for a structured traceback, or
#: the traceback as written by the console, ECS and OTel formats.
FIELDS: Mapping[str, str] = {
    "timestamp": "VARCHAR",
    "level": "VARCHAR",
    "event": "VARCHAR",
    "logger": "VARCHAR",
    "service": "VARCHAR",
    "request_id": "VARCHAR",
    "method": "VARCHAR",
    "path": "VARCHAR",
    "route": "VARCHAR",
    "query": "VARCHAR",
    "status_code": "BIGINT",
    "duration_ms": "DOUBLE",
    "client_ip": "VARCHAR",
    "user_agent": "VARCHAR",
    "http_version": "VARCHAR",
    "response_bytes": "BIGINT",
    "user_id": "VARCHAR",
    "sample_rate": "DOUBLE",
    "slow": "BOOLEAN",
    "outcome": "VARCHAR",
    "error_type": "VARCHAR",
    "error_message": "VARCHAR",
    "exception": "VARCHAR",
}

#: Where a schema changes the unit as well as the name (see ``schemas._duration_ns``).
_UNITS: Mapping[str, str] = {"event.duration": "{} / 1e6"}


SCHEMA_MAPS: Mapping[str, Mapping[str, str]] = {"ecs": ECS_FIELDS, "otel": OTEL_FIELDS}
ALL_SCHEMAS = frozenset(SCHEMA_MAPS)


def _aliases(flat: str, schemas: frozenset[str] = ALL_SCHEMAS) -> list[str]:
    """The other names of a flat field in *schemas*: ECS, then OTel (from reqlog.schemas)."""
    names = []
    for schema in ("ecs", "otel"):
        name = SCHEMA_MAPS[schema].get(flat) if schema in schemas else None
        if name and name != flat and name not in names:
            names.append(name)
    return names


# A line of a schema the plan leaves out is noticed by one of these names, which the
# schema's access events always carry (ECS: the time; OTel: what identifies a request).
_MARKERS: Mapping[str, tuple[str, ...]] = {
    "ecs": (ECS_FIELDS["timestamp"],),
    "otel": (OTEL_FIELDS["method"], OTEL_FIELDS["route"], OTEL_FIELDS["path"]),
}


def sniff(head: bytes) -> frozenset[str]:
    """The schemas other than flat whose marker names appear as keys in a log's first bytes."""
    return frozenset(
        schema
        for schema, markers in _MARKERS.items()
        if any(f'"{name}":'.encode() in head for name in markers)
    )


def _q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    """A quoted SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


# Missing extra -------------------------------------------------------------------------------


class MissingExtra(RuntimeError):
    """DuckDB is not installed; the message says how to install it."""


def distribution_name() -> str:
    """The distribution that provides ``reqlog`` (its name on the package index)."""
    from importlib.metadata import packages_distributions

    names = packages_distributions().get("reqlog") or []
    return names[0] if names else "reqlog-asgi"


def require_duckdb() -> ModuleType:
    """Import DuckDB, or raise :class:`MissingExtra` saying how to install it."""
    try:
        import duckdb
    except ImportError:
        dist = distribution_name()
        msg = (
            "this command reads logs with DuckDB, which is not installed;"
            f" install it with: pip install '{dist}[cli]'"
        )
        raise MissingExtra(msg) from None
    return duckdb


# Inputs --------------------------------------------------------------------------------------

_GZIP_MAGIC = b"\x1f\x8b"
STDIN = "-"


SNIFF_BYTES = 256 << 10


@dataclass(frozen=True)
class Source:
    """One file (or a glob for DuckDB to expand), its compression and the schemas it holds."""

    path: str
    compression: str
    schemas: frozenset[str] = ALL_SCHEMAS


@dataclass
class Inputs:
    """The files to read and what went wrong finding them."""

    sources: list[Source] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    temporary: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """True when there is nothing to read."""
        return not self.sources

    def cleanup(self) -> None:
        """Remove the copy of standard input, if one was made."""
        for path in self.temporary:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.temporary.clear()


def _reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return text[0].lower() + text[1:] if text else type(exc).__name__


def resolve(names: Sequence[str]) -> Inputs:
    """Each input's compression (from its content) and schemas (from its first lines).

    A name holding ``*``, ``?`` or ``[`` that is not an existing file is a glob for DuckDB to
    expand (``'logs/*.jsonl.gz'``; compression then follows the file names, and every schema
    is read). Standard input (no name, or ``-``) is copied to a temporary file: DuckDB reads
    its input more than once.
    """
    inputs = Inputs()
    for name in names or [STDIN]:
        path = name
        if name == STDIN:
            path = _spool_stdin()
            inputs.temporary.append(path)
        elif not os.path.exists(name) and any(c in name for c in "*?["):
            inputs.sources.append(Source(name, "auto"))
            continue
        try:
            with open(path, "rb") as fh:
                gz = fh.read(2) == _GZIP_MAGIC
            head = _head(path, gz)
        except OSError as exc:
            inputs.problems.append(f"{name}: {_reason(exc)}")
            continue
        inputs.sources.append(Source(path, "gzip" if gz else "uncompressed", sniff(head)))
    return inputs


def _head(path: str, gz: bool) -> bytes:
    """The first bytes of a file, decompressed; what a damaged gzip stream gave."""
    if not gz:
        with open(path, "rb") as fh:
            return fh.read(SNIFF_BYTES)
    with gzip.open(path, "rb") as fh:
        try:
            return fh.read(SNIFF_BYTES)
        except (EOFError, OSError, zlib.error):
            return b""


def _spool_stdin() -> str:
    fd, path = tempfile.mkstemp(prefix="reqlog-stdin-", suffix=".jsonl")
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
    return path


# SQL -----------------------------------------------------------------------------------------


def _struct_type(tree: dict[str, Any]) -> str:
    parts = []
    for key, sub in tree.items():
        inner = _struct_type(sub) if isinstance(sub, dict) else sub
        parts.append(f"{_q(key)} {inner}")
    return "STRUCT(" + ", ".join(parts) + ")"


@dataclass(frozen=True)
class _Plan:
    """How each unified column is read: the raw columns to ask for and expressions over them."""

    columns: dict[str, str]
    expressions: dict[str, str]
    options: dict[str, list[str]]
    guarded: frozenset[str]
    #: True for a line of a schema the plan leaves out (then the full plan is needed).
    alien: str

    def in_sql(self, flat: str, values: Sequence[str]) -> str:
        """``unified(flat) IN values``, written so that the common case is one cheap test.

        ``coalesce(a, b, c) IN v`` is ``a IN v OR (a IS NULL AND (b IN v OR ...))``: a flat
        log decides on its own column and never evaluates the aliases. A guarded column (text
        that holds an object in ECS) compares raw, as no wanted value starts with ``{``.
        """
        listed = "(" + ", ".join(_lit(v) for v in values) + ")"
        expr = ""
        options = self.options[flat]
        for i in range(len(options) - 1, -1, -1):
            if i == 0 and flat in self.guarded:
                own = _q(flat)
                test_in, test_null = (
                    f"{own} IN {listed}",
                    f"({own} IS NULL OR starts_with({own}, '{{'))",
                )
            else:
                test_in, test_null = f"{options[i]} IN {listed}", f"{options[i]} IS NULL"
            expr = test_in if not expr else f"({test_in} OR ({test_null} AND {expr}))"
        return expr

    def null_sql(self, flat: str) -> str:
        """``unified(flat) IS NULL`` on the raw columns (every option is missing)."""
        tests = []
        for i, option in enumerate(self.options[flat]):
            if i == 0 and flat in self.guarded:
                own = _q(flat)
                tests.append(f"({own} IS NULL OR starts_with({own}, '{{'))")
            else:
                tests.append(f"{option} IS NULL")
        return " AND ".join(tests)


def _typed_plan(schemas: frozenset[str] = ALL_SCHEMAS) -> _Plan:
    """Raw columns for ``read_json(columns=...)`` and one expression per unified column.

    Every flat name is a column; every ECS/OTel name is read as a dotted top-level key (OTel,
    ECS's ``log.level``) and as nested objects (ECS). A nested root that is also a flat name
    (``event``, ``service``, ``user_agent``, ``exception``) is read as text: an object there is
    the ECS/OTel form and is taken apart with ``json_extract_string``.
    """
    columns: dict[str, str] = {}
    trees: dict[str, dict[str, Any]] = {}
    aliases = {flat: _aliases(flat, schemas) for flat in FIELDS}
    for flat, kind in FIELDS.items():
        columns[flat] = kind
    markers = [name for schema in sorted(ALL_SCHEMAS - schemas) for name in _MARKERS[schema]]
    for name in markers:
        columns.setdefault(name, "VARCHAR")
    for flat, names in aliases.items():
        for name in names:
            kind = "DOUBLE" if name in _UNITS else FIELDS[flat]
            columns.setdefault(name, kind)
            root, *rest = name.split(".")
            if rest and root not in FIELDS:
                node = trees.setdefault(root, {})
                for part in rest[:-1]:
                    node = node.setdefault(part, {})
                node[rest[-1]] = kind
    for root, tree in trees.items():
        columns[root] = _struct_type(tree)
    nested_roots = {n.split(".")[0] for names in aliases.values() for n in names if "." in n}

    expressions = {}
    all_options: dict[str, list[str]] = {}
    guarded = set()
    for flat, kind in FIELDS.items():
        own = _q(flat)
        if flat in nested_roots and kind == "VARCHAR":
            own = f"CASE WHEN NOT starts_with({own}, '{{') THEN {own} END"
            guarded.add(flat)
        options = all_options[flat] = [own]
        for name in aliases[flat]:
            unit = _UNITS.get(name, "{}")
            options.append(unit.format(_q(name)))
            root, *rest = name.split(".")
            if not rest:
                continue
            if root in FIELDS:
                path = "$." + ".".join(_q(p) for p in rest)
                value = f"json_extract_string({_q(root)}, {_lit(path)})"
                cast = f"TRY_CAST({value} AS {'DOUBLE' if name in _UNITS else kind})"
                nested = f"CASE WHEN starts_with({_q(root)}, '{{') THEN {cast} END"
            else:
                nested = ".".join(_q(p) for p in [root, *rest])
            options.append(unit.format(nested))
        expressions[flat] = options[0] if len(options) == 1 else f"coalesce({', '.join(options)})"
    alien = " OR ".join(f"{_q(name)} IS NOT NULL" for name in markers) or "false"
    return _Plan(columns, expressions, all_options, frozenset(guarded), f"({alien})")


def _nested_roots() -> frozenset[str]:
    """Flat names that an ECS/OTel name nests under (``event`` for ECS's ``event.duration``)."""
    return frozenset(n.split(".")[0] for f in FIELDS for n in _aliases(f) if "." in n) & set(FIELDS)


def _json_plan() -> tuple[str, dict[str, str]]:
    """The paths to extract from ``json`` (a whole event), and one expression per column.

    Every name is looked up in one ``json_extract_string`` call (the event is parsed once),
    giving ``__v``: ``$."name"`` for a top-level key, ``$.a.b`` for nested objects.
    """
    paths: list[str] = []
    slots: dict[str, list[tuple[int, str]]] = {}
    guarded = _nested_roots()
    for flat in FIELDS:
        names = [flat, *_aliases(flat)]
        for name in names:
            candidates = [f"$.{_q(name)}"]
            if "." in name:
                candidates.append("$." + ".".join(_q(p) for p in name.split(".")))
            for path in candidates:
                slots.setdefault(flat, []).append((len(paths), _UNITS.get(name, "{}")))
                paths.append(path)
    listed = "[" + ", ".join(_lit(p) for p in paths) + "]"
    expressions = {}
    for flat, kind in FIELDS.items():
        options = []
        for index, unit in slots[flat]:
            value = f"__v[{index + 1}]"
            if flat == "exception":
                options.append(f"TRY_CAST(json_extract(json, {_lit(paths[index])}) AS VARCHAR)")
                continue
            if flat in guarded:
                value = f"CASE WHEN NOT starts_with({value}, '{{') THEN {value} END"
            if unit != "{}":
                value = unit.format(f"TRY_CAST({value} AS DOUBLE)")
            elif kind != "VARCHAR":
                value = f"TRY_CAST({value} AS {kind})"
            options.append(value)
        expressions[flat] = options[0] if len(options) == 1 else f"coalesce({', '.join(options)})"
    return listed, expressions


def _weight(rate: str) -> str:
    return f"CASE WHEN {rate} > 0 AND {rate} < 1 THEN 1.0 / {rate} ELSE 1.0 END"


def _is_access(event: str, logger: str) -> str:
    names = ", ".join(_lit(e) for e in ACCESS_EVENTS)
    return f"({event} IN ({names}) AND {logger} = {_lit(ACCESS_LOGGER)})"


@dataclass(frozen=True)
class Window:
    """``--since`` / ``--until`` as seconds since the epoch (``until`` is exclusive)."""

    since: float | None = None
    until: float | None = None

    def sql(self, ts: str = "ts") -> str:
        """A condition on *ts*; ``TRUE`` when the window is open on both sides."""
        parts = []
        if self.since is not None:
            parts.append(f"{ts} >= to_timestamp({self.since!r})")
        if self.until is not None:
            parts.append(f"{ts} < to_timestamp({self.until!r})")
        return " AND ".join(parts) or "TRUE"

    @property
    def open(self) -> bool:
        """True when neither bound is set."""
        return self.since is None and self.until is None


# Connection ----------------------------------------------------------------------------------


class Logs:
    """A DuckDB connection with a ``lines`` view over the inputs (and, for ``sql``, views).

    Use as a context manager; temporary copies (standard input) are removed at exit.
    """

    #: The parsed time of a row of ``lines``.
    ts_sql = "TRY_CAST(timestamp AS TIMESTAMPTZ)"
    #: The weight of a row of ``lines``: how many requests it stands for.
    weight_sql = _weight("sample_rate")

    def __init__(
        self,
        names: Sequence[str],
        window: Window | None = None,
        *,
        threads: int | None = None,
        fast: bool = False,
        views: bool = False,
    ) -> None:
        self.duckdb = require_duckdb()
        self.inputs = resolve(names)
        self.window = window or Window()
        self._windowed = False
        #: Read each file with only the schemas found in its first lines (stats, report).
        self.fast = fast
        #: Define the ``requests`` and ``events`` views for a user's SQL (``sql``; the other
        #: commands read ``lines``, and binding ``events`` costs a few tens of ms).
        self.with_views = views
        # No progress bar: DuckDB draws one on stdout for long queries, into --json output.
        self.con: duckdb.DuckDBPyConnection = self.duckdb.connect()
        self.con.execute("SET enable_progress_bar = false")
        self.con.execute("SET TimeZone = 'UTC'")
        if threads is not None:
            self.con.execute(f"SET threads = {int(threads)}")
        self._define()

    @property
    def access_sql(self) -> str:
        """The condition on a row of ``lines`` for an access event inside the time window."""
        if self._windowed:
            return "is_access"
        return f"is_access AND {self.window.sql(self.ts_sql)}"

    def __enter__(self) -> Logs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and remove temporary files."""
        self.con.close()
        self.inputs.cleanup()

    @property
    def problems(self) -> list[str]:
        """Inputs that could not be read (one line each)."""
        return self.inputs.problems

    def _groups(self) -> dict[tuple[str, frozenset[str]], list[str]]:
        """Files by compression and by the schemas read from them (one reader call each)."""
        groups: dict[tuple[str, frozenset[str]], list[str]] = {}
        for source in self.inputs.sources:
            schemas = source.schemas if self.fast else ALL_SCHEMAS
            groups.setdefault((source.compression, schemas), []).append(source.path)
        return groups

    @staticmethod
    def _reader(reader: str, files: Sequence[str], compression: str, options: str) -> str:
        listed = "[" + ", ".join(_lit(f) for f in files) + "]"
        # A glob's compression is DuckDB's default guess, from the file names.
        chosen = "" if compression == "auto" else f", compression={_lit(compression)}"
        return (
            f"SELECT * FROM {reader}({listed}, format='newline_delimited',"
            f" ignore_errors=true{chosen}{options})"
        )

    def _lines_sql(self) -> str:
        """Every line DuckDB saw (blank lines aside), unified; non-events have no event.

        Each group of files is read with the plan of its schemas, all giving the same columns.
        """
        parts = []
        for (compression, schemas), files in self._groups().items():
            plan = _typed_plan(schemas)
            columns = "{" + ", ".join(f"{_lit(k)}: {_lit(v)}" for k, v in plan.columns.items())
            source = self._reader("read_json", files, compression, f", columns={columns}}}")
            parts.append(f"SELECT {self._unified(plan)} FROM ({source})")
        if not parts:
            plan = _typed_plan()
            empty = ", ".join(f"NULL::{kind} AS {_q(k)}" for k, kind in plan.columns.items())
            parts.append(f"SELECT {self._unified(plan)} FROM (SELECT {empty} WHERE false)")
        return " UNION ALL ".join(parts)

    @staticmethod
    def _unified(plan: _Plan) -> str:
        unified = ", ".join(f"{expr} AS {_q(name)}" for name, expr in plan.expressions.items())
        access = (
            f"({plan.in_sql('event', ACCESS_EVENTS)} AND {plan.in_sql('logger', [ACCESS_LOGGER])})"
        )
        failed = plan.in_sql("event", FAILED_EVENTS)
        return (
            f"{unified}, coalesce({access}, false) AS is_access,"
            f" {plan.null_sql('event')} AS junk, coalesce({failed}, false) AS is_failed,"
            f" {plan.alien} AS alien"
        )

    def _objects(self) -> str:
        parts = [
            self._reader("read_json_objects", files, compression, "")
            for (compression, _), files in self._groups().items()
        ]
        return " UNION ALL ".join(parts) or "SELECT NULL::JSON AS json WHERE false"

    def _define(self) -> None:
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW lines AS {self._lines_sql()}")
        if not self.with_views:
            return
        self.con.execute(
            "CREATE OR REPLACE TEMP VIEW requests AS"
            f" SELECT CAST({self.ts_sql} AS TIMESTAMP) AS ts,"
            " * EXCLUDE (is_access, junk, is_failed, alien),"
            f" {self.weight_sql} AS weight FROM lines WHERE {self.access_sql}"
        )
        paths, json_plan = _json_plan()
        extracted = ", ".join(f"{expr} AS {_q(name)}" for name, expr in json_plan.items())
        self.con.execute(
            "CREATE OR REPLACE TEMP VIEW events AS"
            " SELECT CAST(TRY_CAST(timestamp AS TIMESTAMPTZ) AS TIMESTAMP) AS ts, *,"
            f" {_is_access('event', 'logger')} AS access FROM ("
            f" SELECT {extracted}, json FROM ("
            f"  SELECT json, json_extract_string(json, {paths}) AS __v FROM ({self._objects()})"
            "   WHERE json_type(json) = 'OBJECT'))"
            f" WHERE event IS NOT NULL AND {self.window.sql(self.ts_sql)}"
        )

    @property
    def narrowed(self) -> bool:
        """True when some file is read without every schema's names (see :meth:`widen`)."""
        return self.fast and any(s.schemas != ALL_SCHEMAS for s in self.inputs.sources)

    def widen(self) -> None:
        """Read every file with every schema's names, from now on.

        A file's schemas are guessed from its first 256 KiB; a line further on in another
        schema is noticed (``alien``) and the command asks again with this.
        """
        self.fast = False
        self._define()

    def objects_sql(self) -> str:
        """Every line that is a JSON value, as ``json`` (DuckDB's ``read_json_objects``)."""
        return self._objects()

    def materialize(self, columns: Sequence[str]) -> None:
        """Read the input once into memory for several queries: ``lines`` then reads the copy.

        Kept: the unified *columns* of access events in the window, of events with an
        exception, and of the lines that are not events (to count them).
        """
        listed = ", ".join(_q(c) for c in columns)
        select = (
            f"SELECT {listed}, {self.ts_sql} AS ts, {self.weight_sql} AS weight, alien FROM lines"
            f" WHERE ({self.access_sql}) OR junk OR alien"
            f" OR (exception IS NOT NULL AND {self.window.sql(self.ts_sql)})"
        )
        # Written by every thread at once, in no particular order: keeping the files' order
        # makes DuckDB write the copy on one thread. Queries over it that need an order say so.
        self.con.execute("SET preserve_insertion_order = false")
        self.con.execute(f"CREATE TEMP TABLE kept AS {select}")
        if self.narrowed and self.query("SELECT count(*) FROM kept WHERE alien")[0][0]:
            self.widen()
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE kept AS {select}")
        self.con.execute("RESET preserve_insertion_order")
        self.con.execute("CREATE OR REPLACE TEMP VIEW lines AS SELECT * FROM kept")
        # The copy has the time parsed, the weight computed and the window applied.
        self.ts_sql, self.weight_sql, self._windowed = "ts", "weight", True

    def skipped_lines(self) -> int:
        """How many lines are not events (text, malformed or truncated JSON): one more scan."""
        return int(self.query("SELECT count(*) FROM lines WHERE junk")[0][0])

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run *sql*, return every row."""
        return self.con.execute(sql, params or []).fetchall()

    def rows(self, sql: str, params: Sequence[Any] | None = None) -> Iterator[dict[str, Any]]:
        """Run *sql*, yield rows as dicts."""
        cursor = self.con.execute(sql, params or [])
        names = [d[0] for d in cursor.description or []]
        while batch := cursor.fetchmany(2048):
            for row in batch:
                yield dict(zip(names, row, strict=True))


def epoch_seconds(value: Any) -> float | None:
    """Seconds since the epoch from a query's ``epoch(...)`` (or a datetime), else ``None``.

    Queries return times as numbers: DuckDB releases before 1.2 need pytz to hand out
    TIMESTAMPTZ values, and the ``requests``/``events`` views give ``ts`` as TIMESTAMP (UTC).
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        seconds: float = value.timestamp()
        return seconds
    return None
