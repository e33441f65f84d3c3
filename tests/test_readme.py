"""The README's quickstarts run as written.

Each quickstart is the fenced block that follows a ``<!-- quickstart: NAME -->``
marker (the serve one is a shell block followed by a Python block). The test
runs them from a scratch folder that sees the repository's ``examples/``, so
what a new user copies is what CI executes: a README edit that breaks a
command breaks this test.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def quickstart(name: str) -> list[tuple[str, str]]:
    """The (language, code) blocks after the marker for ``name``, up to the next marker or heading."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"<!-- quickstart: {name} -->")
    end = min([i for i in (text.find("<!-- quickstart:", start + 1), text.find("\n#", start)) if i > 0]
              or [len(text)])
    return re.findall(r"```(\w+)\n(.*?)```", text[start:end], flags=re.S)


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1")
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "home").mkdir()
    return work


def _run_shell(code: str, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_curate_quickstart(tmp_path):
    [(lang, code)] = quickstart("curate")
    assert lang == "bash"
    work = _workdir(tmp_path)
    done = _run_shell(code, work, _env(tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    scored = work / "runs" / "scored"
    assert (scored / "_manifest.json").exists()
    assert any(p.suffix in (".parquet", ".jsonl") for p in scored.iterdir())


def test_trl_quickstart(tmp_path):
    pytest.importorskip("trl")
    blocks = quickstart("trl")
    [(lang, code)] = [b for b in blocks if b[0] == "bash"]
    done = _run_shell(code, _workdir(tmp_path), _env(tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_serve_quickstart(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("openai")
    blocks = quickstart("serve")
    [shell] = [c for lang, c in blocks if lang == "bash"]
    [client] = [c for lang, c in blocks if lang == "python"]
    ports = [int(p) for p in re.findall(r"--port (\d+)", shell)]
    if not all(_free(p) for p in ports):
        pytest.skip(f"a quickstart port is in use: {ports}")
    work, env = _workdir(tmp_path), _env(tmp_path)
    proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", shell], cwd=work, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        health = f"http://127.0.0.1:{ports[-1]}/health"
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(health, timeout=2):
                    break
            except OSError:
                if proc.poll() not in (None, 0) or time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail(f"the proxy never answered {health}:\n{proc.communicate()[0][-3000:]}")
                time.sleep(1)
        done = subprocess.run([sys.executable, "-c", client], cwd=work, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        model, _, reply = done.stdout.strip().partition(" ")
        assert model in ("small", "large", "small-model", "large-model"), done.stdout
        assert "7 * 8" in reply, done.stdout
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
