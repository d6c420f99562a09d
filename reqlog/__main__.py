"""``python -m reqlog``: the ``reqlog`` command line tool."""

from __future__ import annotations

from reqlog.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
