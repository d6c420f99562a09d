"""``make demo``: start the example app under a real uvicorn, send scripted requests, show the log.

``make serve`` (``--serve``) keeps the app running on http://127.0.0.1:8000 instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from reqlog import cli

ROOT = Path(__file__).resolve().parent.parent

REQUESTS: list[tuple[str, str, dict[str, str]]] = [
    ("a normal request", "/items/42", {}),
    ("a sync endpoint binding a field", "/orders/7", {}),
    ("a 404", "/items/not-a-number/nope", {}),
    ("an unhandled exception", "/boom", {}),
    ("a slow request", "/reports/9", {}),
    ("an authenticated user", "/me", {"Authorization": "Bearer token-ada"}),
    ("a secret in the query string", "/search?q=shoes&api_key=sk-live-123", {}),
    ("an upstream request ID", "/items/1", {"X-Request-ID": "4bf92f3577b34da6a3ce929d0e0e4736"}),
    ("a forged request ID (replaced)", "/items/2", {"X-Request-ID": "evil id"}),
    ("an excluded health check", "/health", {}),
]


def listening_socket() -> socket.socket:
    """A loopback socket on a free port, already listening: uvicorn serves it (``--fd``).

    Requests sent before uvicorn is ready wait in the backlog, so there is nothing to poll,
    and no other process can take the port meanwhile.
    """
    sock = socket.socket()
    # uvicorn wraps an inherited descriptor as AF_UNIX and so never sets TCP_NODELAY on the
    # connections; Linux copies it from the listening socket.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def get(url: str, headers: dict[str, str]) -> tuple[int, str | None]:
    """GET with the standard library (the demo needs nothing but reqlog, FastAPI and uvicorn)."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers.get("x-request-id")
    except urllib.error.HTTPError as error:  # 4xx and 5xx: still a response
        with error:
            return error.code, error.headers.get("x-request-id")


def demo() -> int:
    sock = listening_socket()
    port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.app:app", "--fd", str(sock.fileno())],
        pass_fds=[sock.fileno()],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    sock.close()  # uvicorn holds it now: if it dies, requests fail instead of waiting
    print(f"uvicorn is serving examples/app.py on 127.0.0.1:{port}; sending requests:\n")
    for label, path, headers in REQUESTS:
        try:
            status, rid = get(f"http://127.0.0.1:{port}{path}", headers)
        except OSError as exc:  # uvicorn died (its socket closed) or hung
            proc.kill()
            _, stderr = proc.communicate()
            sys.stderr.write(stderr.decode("utf-8", "replace"))
            sys.exit(f"the demo app did not answer {path} ({exc}); uvicorn's stderr is above")
        print(f"  {label:34} GET {path:45} -> {status}  request_id={rid}")
    proc.send_signal(signal.SIGTERM)
    try:
        stdout, stderr = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    print("\nWhat the service wrote to stdout, one JSON object per line:\n")
    sys.stdout.write(stdout.decode("utf-8", "replace"))
    if stderr.strip():
        print("\nstderr:\n")
        sys.stdout.write(stderr.decode("utf-8", "replace"))
    lines = stdout.decode().splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        log_file = Path(tmp) / "demo.log"
        log_file.write_bytes(stdout)
        print("\nThe same log, read back with `reqlog view` and `reqlog stats --by route`:\n")
        sys.stdout.flush()
        cli.main(["view", str(log_file)])
        print()
        cli.main(["stats", "--by", "route", str(log_file)])
    print(
        f"\n{len(lines)} log lines for {len(REQUESTS)} requests; uvicorn exited {proc.returncode}"
    )
    return 0


def serve() -> int:
    os.chdir(ROOT)
    os.execv(
        sys.executable, [sys.executable, "-m", "uvicorn", "examples.app:app", "--port", "8000"]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", action="store_true", help="keep the app running on :8000")
    args = parser.parse_args()
    return serve() if args.serve else demo()


if __name__ == "__main__":
    raise SystemExit(main())
