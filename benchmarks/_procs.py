"""Child processes of the serve benchmarks (``load_serve.py``, ``serve_kill9.py``): a free port, waiting until a
child answers, and stopping every child however the run ends.

Why shared: both scripts start fake backends and ``preroll serve`` as subprocesses (so the load generator does
not share an interpreter with the server) and must never leave one running, even when a phase fails.
"""

from __future__ import annotations

import socket
import subprocess
import time

import httpx


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, timeout: float, what: str) -> None:
    """Return once ``url`` answers below 500 (an answer needing a token counts: the server is up); exit with a
    message if ``proc`` (``what``) dies first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with status {proc.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} did not answer {url} within {timeout:.0f}s")


def stop(procs: list[subprocess.Popen], grace: float = 20.0) -> None:
    """SIGTERM every child, then SIGKILL whichever has not exited after ``grace`` seconds."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

