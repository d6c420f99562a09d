"""Griffe extension for the API reference: docstring ``>>>`` examples rendered as code.

reqlog's docstrings use plain doctest-style examples, as structlog's do. Markdown would read
``>>>`` as nested block quotes and ``x["key"]`` as a link, so each run of example lines (the
prompts and the output lines after them) is wrapped in a ``pycon`` fence before rendering.
"""

from __future__ import annotations

from typing import Any

import griffe


def fence_examples(text: str) -> str:
    out: list[str] = []
    in_example = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith((">>>", "...")) and not in_example:
            out.append("```pycon")
            in_example = True
        elif in_example and not stripped:
            out.append("```")
            in_example = False
        out.append(line.strip() if in_example else line)
    if in_example:
        out.append("```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Wrap every docstring's ``>>>`` examples in fenced code blocks."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_examples(obj.docstring.value)
