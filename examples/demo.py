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
import time
from pathlib import Path

import httpx

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"uvicorn exited early with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("uvicorn did not start listening in time")


def uvicorn_command(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "examples.app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def demo() -> int:
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        uvicorn_command(port), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    wait_until_listening(port, proc)
    print(f"uvicorn is serving examples/app.py on 127.0.0.1:{port}; sending requests:\n")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for label, path, headers in REQUESTS:
            response = client.get(path, headers=headers)
            rid = response.headers.get("x-request-id")
            print(f"  {label:34} GET {path:45} -> {response.status_code}  request_id={rid}")
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
    os.execv(sys.executable, [*uvicorn_command(8000)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", action="store_true", help="keep the app running on :8000")
    args = parser.parse_args()
    return serve() if args.serve else demo()


if __name__ == "__main__":
    raise SystemExit(main())
