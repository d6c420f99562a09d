"""Body and header capture: bounded copies of what passes through, summarised for the access event.

The middleware hands each request a :class:`Capture` when capture is on for its path. The capture
wraps ``receive`` and ``send`` and keeps, per direction, a copy of at most ``body_max_bytes`` bytes
as the app reads its body and as it sends its response: the messages themselves pass on untouched,
in the same chunks, with no delay. Nothing is read ahead, so an app that never reads its body is
never blocked by reqlog.

Nothing is parsed while the request runs. When the access event is built, :meth:`Capture.fields`
turns the copies into values the ``Redactor`` can walk: parsed JSON, form bodies as mappings,
other text as text, and a ``"<N bytes type>"`` summary for everything else, including any body
that does not parse as its declared type (a raw dump is where secrets hide).
"""

from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

import orjson
from starlette.routing import compile_path
from starlette.types import Message, Receive, Scope, Send

from reqlog.processors import drop_cut_token

__all__ = ["Capture", "CaptureOptions", "describe_body", "header_mapping"]

# How a body is turned into a value for the log, decided from its declared type.
_JSON: Final = "json"
_NDJSON: Final = "ndjson"
_FORM: Final = "form"
_MULTIPART: Final = "multipart"
_TEXT: Final = "text"
_SUMMARY: Final = "summary"

_TEXT_TYPES: Final = frozenset(
    {
        "application/xml",
        "application/javascript",
        "application/ecmascript",
        "application/graphql",
        "application/yaml",
        "application/x-yaml",
        "application/sql",
    }
)
_NDJSON_TYPES: Final = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)
_IDENTITY_ENCODINGS: Final = frozenset({"", "identity"})

# Parameters of a Content-Type or Content-Disposition value: name=token or name="quoted".
_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    """What the middleware was asked to capture; validated once, at middleware creation."""

    log_request_body: bool
    log_response_body: bool
    body_max_bytes: int
    log_headers: bool
    paths_exact: frozenset[str] = frozenset()
    paths_prefixes: tuple[str, ...] = ()
    paths_templates: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def create(
        cls,
        *,
        log_request_body: object,
        log_response_body: object,
        body_max_bytes: object,
        log_headers: object,
        paths: tuple[frozenset[str], tuple[str, ...]] = (frozenset(), ()),
    ) -> CaptureOptions | None:
        """Validated options, or ``None`` when nothing is captured (the middleware's fast path).

        Raises ``ValueError`` naming the option for a value of the wrong kind.
        """
        for name, value in (
            ("log_request_body", log_request_body),
            ("log_response_body", log_response_body),
            ("log_headers", log_headers),
        ):
            if not isinstance(value, bool):
                msg = f"{name}: expected True or False, got {value!r}"
                raise ValueError(msg)
        if (
            isinstance(body_max_bytes, bool)
            or not isinstance(body_max_bytes, int)
            or body_max_bytes <= 0
        ):
            msg = f"body_max_bytes: expected a positive number of bytes, got {body_max_bytes!r}"
            raise ValueError(msg)
        assert isinstance(log_request_body, bool)
        assert isinstance(log_response_body, bool)
        assert isinstance(log_headers, bool)
        exact, prefixes = paths
        templates = []
        for path in sorted(p for p in exact if "{" in p):
            # A route template ("/users/{user_id}/orders"), compiled by Starlette's own router
            # code: the decision is made when the request starts, before routing has run.
            try:
                templates.append(compile_path(path)[0])
            except (AssertionError, ValueError) as exc:
                msg = f"capture_paths: {path!r} is not a valid route template: {exc}"
                raise ValueError(msg) from None
        if not (log_request_body or log_response_body or log_headers):
            return None
        return cls(
            log_request_body,
            log_response_body,
            body_max_bytes,
            log_headers,
            frozenset(p for p in exact if "{" not in p),
            prefixes,
            tuple(templates),
        )

    def applies(self, path: str) -> bool:
        """Whether capture is on for this path (every path unless ``capture_paths`` was given)."""
        if not (self.paths_exact or self.paths_prefixes or self.paths_templates):
            return True
        return (
            path in self.paths_exact
            or (bool(self.paths_prefixes) and path.startswith(self.paths_prefixes))
            or any(template.match(path) for template in self.paths_templates)
        )


class _Body:
    """One direction's body: the byte count, and a copy of at most ``limit`` bytes.

    Its headers are read at the first chunk: a request without a body (most GETs) never
    parses its content type. ``headers`` is a list the caller no longer changes (a copy of the
    request's, the response's as sent), so reading it late reads what was there at the start.
    """

    __slots__ = ("data", "encoding", "headers", "kind", "limit", "mime", "params", "total")

    def __init__(self, headers: list[Sequence[bytes]], max_bytes: int) -> None:
        self.headers = headers
        self.limit = max_bytes
        self.kind = ""  # not read yet
        self.mime = self.encoding = ""
        self.params: dict[str, str] = {}
        self.data = bytearray()
        self.total = 0

    def _read_headers(self) -> None:
        content_type = b""
        encoding = b""
        try:
            for name, value in self.headers:
                lowered = name.lower()
                if lowered == b"content-type":
                    content_type = value
                elif lowered == b"content-encoding":
                    encoding = value
            self.mime, self.params = _parse_content_type(content_type.decode("latin-1"))
            self.encoding = encoding.decode("latin-1").strip().lower()
            self.kind = _kind(self.mime, self.encoding)
        except Exception:  # noqa: BLE001 - headers that are not ASGI's bytes: count, don't copy
            self.mime, self.params, self.encoding, self.kind = "", {}, "", _SUMMARY
        # A body that will only be summarised needs its size, not its bytes.
        if self.kind == _SUMMARY:
            self.limit = 0

    def feed(self, chunk: bytes) -> None:
        if not self.kind:
            self._read_headers()
        self.total += len(chunk)
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk if len(chunk) <= room else memoryview(chunk)[:room]

    def describe(self) -> tuple[Any, bool]:
        if not self.kind:
            self._read_headers()
        return describe_body(
            bytes(self.data), self.total, self.mime, self.params, self.encoding, self.kind
        )


class Capture:
    """One request's capture: wraps ``receive`` and ``send``, then builds the event fields.

    >>> import asyncio
    >>> options = CaptureOptions.create(
    ...     log_request_body=True, log_response_body=True, body_max_bytes=64, log_headers=False
    ... )
    >>> capture = Capture(options, {"headers": [(b"content-type", b"application/json")]})
    >>> async def receive():
    ...     return {"type": "http.request", "body": b'{"sku": "A1"}', "more_body": False}
    >>> receive = capture.wrap_receive(receive)  # and send = capture.wrap_send(send)
    >>> message = asyncio.run(receive())  # the app reads its body through it
    >>> capture.fields(report=print)  # once the response is done
    {'request_bytes': 13, 'request_body': {'sku': 'A1'}}
    """

    __slots__ = (
        *("options", "request", "request_headers", "response", "response_headers"),
        *("server_receive", "server_send"),
    )

    def __init__(self, options: CaptureOptions, scope: Scope) -> None:
        self.options = options
        self.request_headers: list[Sequence[bytes]] = scope["headers"]
        self.response_headers: list[Sequence[bytes]] | None = None
        self.request: _Body | None = None
        if options.log_request_body:
            # A copy: the content type read at the first chunk is the one the request came with.
            self.request = _Body(list(self.request_headers), options.body_max_bytes)
        self.response: _Body | None = None

    # The wrappers are bound methods of the capture (no closures made per request), like the
    # middleware's own responder object.

    def wrap_receive(self, receive: Receive) -> Receive:
        """``receive`` that copies what the app reads; the original when bodies are not logged."""
        if self.request is None:
            return receive
        self.server_receive = receive
        return self._receive

    async def _receive(self) -> Message:
        message = await self.server_receive()
        if message["type"] == "http.request":
            chunk = message.get("body")
            if chunk:
                assert self.request is not None
                self.request.feed(chunk)
        return message

    def wrap_send(self, send: Send) -> Send:
        """``send`` that notes the response headers and copies the body after each chunk left."""
        options = self.options
        if not (options.log_response_body or options.log_headers):
            return send
        self.server_send = send
        return self._send

    async def _send(self, message: Message) -> None:
        message_type = message["type"]
        if message_type == "http.response.start":
            headers = list(message.get("headers") or ())
            self.response_headers = headers
            if self.options.log_response_body:
                self.response = _Body(headers, self.options.body_max_bytes)
        await self.server_send(message)
        if message_type == "http.response.body" and self.response is not None:
            chunk = message.get("body")
            if chunk:
                self.response.feed(chunk)

    def fields(self, report: Callable[[str, str], None]) -> dict[str, Any]:
        """The access event's capture fields; parsing happens here, never while data flows.

        ``report(key, what)`` is told of headers that could not be read (reqlog's stderr
        report); the event goes on without them.
        """
        fields: dict[str, Any] = {}
        options = self.options
        if options.log_headers:
            fields["request_headers"] = _safely(header_mapping, self.request_headers, report)
            if self.response_headers is not None:
                fields["response_headers"] = _safely(header_mapping, self.response_headers, report)
        request = self.request
        if request is not None:
            fields["request_bytes"] = request.total
            if request.total:
                value, truncated = _describe_safely(request)
                fields["request_body"] = value
                if truncated:
                    fields["request_body_truncated"] = True
        response = self.response
        if response is not None and response.total:
            value, truncated = _describe_safely(response)
            fields["response_body"] = value
            if truncated:
                fields["response_body_truncated"] = True
        return fields


def _safely(
    mapping: Callable[[Any], dict[str, Any]], headers: Any, report: Callable[[str, str], None]
) -> dict[str, Any] | None:
    try:
        return mapping(headers)
    except Exception as exc:  # noqa: BLE001 - logging never breaks the app
        report("capture", f"could not log the headers: {exc!r}")
        return None


def header_mapping(headers: Iterable[Sequence[bytes]]) -> dict[str, str | list[str]]:
    """ASGI headers as ``{lower-case name: value}``; a repeated header's values as a list.

    The ``Redactor`` then finds ``authorization``, ``cookie``, every ``set-cookie``... by key.
    """
    mapping: dict[str, str | list[str]] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        existing = mapping.get(name)
        if existing is None:
            mapping[name] = value
        elif isinstance(existing, list):
            existing.append(value)
        else:
            mapping[name] = [existing, value]
    return mapping


# --- describing a body ----------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    mime, _, rest = value.partition(";")
    params = {}
    for match in _PARAM.finditer(";" + rest):
        raw = match.group(2).strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[match.group(1).lower()] = raw
    return mime.strip().lower(), params


def _kind(mime: str, encoding: str) -> str:
    if encoding not in _IDENTITY_ENCODINGS:
        return _SUMMARY  # compressed: the bytes mean nothing without decompressing them
    if mime == "application/json" or mime.endswith("+json"):
        return _JSON
    if mime in _NDJSON_TYPES:
        return _NDJSON
    if mime == "application/x-www-form-urlencoded":
        return _FORM
    if mime == "multipart/form-data":
        return _MULTIPART
    if mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith("+xml"):
        return _TEXT
    return _SUMMARY


def _summary(total: int, mime: str, *notes: str) -> str:
    described = f"{total} bytes"
    if mime:
        described += f" {mime}"
    return "<" + ", ".join((described, *notes)) + ">"


def _describe_safely(body: _Body) -> tuple[Any, bool]:
    try:
        return body.describe()
    except Exception:  # noqa: BLE001 - logging never breaks the app; the raw bytes stay out
        return _summary(body.total, body.mime, "unreadable"), body.total > len(body.data)


def describe_body(
    data: bytes,
    total: int,
    mime: str,
    params: dict[str, str],
    encoding: str = "",
    kind: str | None = None,
) -> tuple[Any, bool]:
    """The value logged for a body, and whether the cap cut it.

    ``data`` is the captured prefix of a body of ``total`` bytes. JSON is parsed, forms become
    ``{field: value or [values]}``, multipart bodies ``{field: value}`` with file parts
    summarised, other text is decoded; binary, compressed and unparsable bodies become a
    ``"<N bytes type>"`` summary and are never logged raw.

    >>> describe_body(b'{"a": 1}', 8, "application/json", {})
    ({'a': 1}, False)
    >>> describe_body(b"\\x89PNG", 2048, "image/png", {})
    ('<2048 bytes image/png>', False)
    """
    if kind is None:
        kind = _kind(mime, encoding)
    if kind == _SUMMARY:
        if encoding not in _IDENTITY_ENCODINGS:
            return _summary(total, mime, encoding), False
        return _summary(total, mime), False
    truncated = total > len(data)
    charset = params.get("charset", "utf-8")
    if kind == _JSON:
        if truncated:
            return _summary(total, mime, "truncated"), True
        parsed = _parse_json(data, charset)
        if parsed is _INVALID:
            return _summary(total, mime, "invalid"), False
        return parsed, False
    if kind == _NDJSON:
        lines = data.split(b"\n")
        if truncated:
            lines.pop()  # cut by the cap: not JSON
        values = []
        for line in lines:
            if line.strip():
                parsed = _parse_json(line, charset)
                if parsed is _INVALID:
                    return _summary(total, mime, "invalid"), truncated
                values.append(parsed)
        return values, truncated
    if kind == _FORM:
        form = _parse_form(data, charset, truncated)
        if form is None:
            return _summary(total, mime, "invalid"), truncated
        return form, truncated
    if kind == _MULTIPART:
        fields = _parse_multipart(data, params.get("boundary", ""), truncated)
        if fields is None:
            return _summary(total, mime, "invalid"), truncated
        return fields, truncated
    text = _decode(data, charset, final=not truncated)
    if truncated:
        # The cap may have cut a secret in two: its front (12 digits of a card number, half a
        # token) would slip past the patterns that find the whole. The last token goes.
        text = drop_cut_token(text)
    return text, truncated


class _Invalid:
    pass


_INVALID: Final = _Invalid()


def _parse_json(data: bytes, charset: str) -> Any:
    try:
        if charset != "utf-8" and codecs.lookup(charset).name != "utf-8":
            value = orjson.loads(data.decode(charset))
        else:
            value = orjson.loads(data)
    except (LookupError, ValueError):  # orjson.JSONDecodeError, UnicodeDecodeError
        return _INVALID
    # orjson renders at most 254 levels: a deeper body would make the renderer fall back to
    # repr() of the whole event. Only bodies with many brackets are walked.
    if data.count(b"[") + data.count(b"{") > _MAX_DEPTH and _too_deep(value):
        return _INVALID
    return value


_MAX_DEPTH: Final = 64


def _too_deep(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > _MAX_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _decode(data: bytes, charset: str, *, final: bool) -> str:
    try:
        decoder = codecs.getincrementaldecoder(charset)("replace")
    except LookupError:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
    # Not final: a character the cap cut in half is left out rather than shown as garbage.
    return str(decoder.decode(data, final=final))


def _add(mapping: dict[str, Any], key: str, value: Any) -> None:
    existing = mapping.get(key, _INVALID)
    if existing is _INVALID:
        mapping[key] = value
    elif isinstance(existing, list):
        existing.append(value)
    else:
        mapping[key] = [existing, value]


def _parse_form(data: bytes, charset: str, truncated: bool) -> dict[str, Any] | None:
    if truncated:
        # The last field was cut by the cap: a half value (of a card number, say) slips past
        # pattern redaction, and a half key (``passw``) past key redaction. Leave it out.
        cut = data.rfind(b"&")
        data = data[:cut] if cut >= 0 else b""
    try:
        text = data.decode(charset, "replace")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=True,
            encoding=charset,
            errors="replace",
        )
    except (ValueError, LookupError):
        return None
    form: dict[str, Any] = {}
    for key, value in pairs:
        _add(form, key, value)
    return form


def _parse_multipart(data: bytes, boundary: str, truncated: bool) -> dict[str, Any] | None:
    """Fields of a (possibly cut) ``multipart/form-data`` body; file parts as summaries.

    A small parser of the captured prefix rather than python-multipart (an optional dependency
    of Starlette, and a streaming parser that wants the whole body): it only needs each part's
    headers and size, and must cope with a body that the cap cut anywhere.
    """
    if not boundary or len(boundary) > 200:
        return None
    delimiter = b"--" + boundary.encode("latin-1")
    segments = data.split(delimiter)
    if len(segments) < 2:
        return None
    fields: dict[str, Any] = {}
    closed = False
    last = len(segments) - 1
    for index, segment in enumerate(segments[1:], start=1):
        if segment.startswith(b"--"):
            closed = True
            break
        complete = index < last
        if not segment.startswith(b"\r\n"):
            return None if complete else fields
        head, separator, content = segment[2:].partition(b"\r\n\r\n")
        if not separator:
            if complete:
                return None
            break  # the cap cut this part's headers
        if complete:
            if not content.endswith(b"\r\n"):
                return None
            content = content[:-2]
        disposition, part_type = "", ""
        for line in head.split(b"\r\n"):
            name, colon, value = line.partition(b":")
            if not colon:
                return None if complete else fields
            lowered = name.strip().lower()
            if lowered == b"content-disposition":
                disposition = value.decode("utf-8", "replace")
            elif lowered == b"content-type":
                part_type = value.decode("latin-1")
        _, disposition_params = _parse_content_type(disposition)
        field = disposition_params.get("name")
        if field is None:
            return None if complete else fields
        filename = disposition_params.get("filename")
        mime, params = _parse_content_type(part_type)
        if filename is not None or (mime and _kind(mime, "") not in (_TEXT, _JSON)):
            part_mime = mime or "application/octet-stream"
            notes = [] if filename is None else [f"filename={filename}"]
            if complete:
                summary = _summary(len(content), part_mime, *notes)
            else:  # cut by the cap: its size is unknown
                summary = "<" + ", ".join([part_mime, "truncated", *notes]) + ">"
            _add(fields, field, summary)
        elif complete:
            _add(fields, field, _decode(content, params.get("charset", "utf-8"), final=True))
        # A text field the cap cut is left out, like the last field of a cut form.
    if not closed and not truncated:
        return None
    return fields
