"""The legacy ``data.sampler`` hook against verl 0.7's own trainer code (the last verl with that hook).

verl 0.7 cannot be installed beside verl 0.9, so ``.ci/run`` unpacks it
without dependencies into a folder (``pip install --no-deps --target``) and
names it in ``PREROLL_VERL_LEGACY``; tests/verl_legacy_check.py runs there in
a fresh interpreter, on this interpreter's packages (verl 0.9's dependency
set: numpy 2, while verl 0.7 declares numpy<2). Skipped when the variable is
unset, unless ``PREROLL_REQUIRE_VERL=1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from verl_testing import REQUIRE, needs

needs("omegaconf")
needs("tensordict")
needs("torchdata")

LEGACY = os.environ.get("PREROLL_VERL_LEGACY", "")
if not LEGACY:
    if REQUIRE:
        raise RuntimeError("PREROLL_REQUIRE_VERL=1 but PREROLL_VERL_LEGACY (a folder holding verl 0.7.x) is unset")
    pytest.skip("PREROLL_VERL_LEGACY is unset (a folder with verl 0.7.x installed by pip --no-deps --target)",
                allow_module_level=True)

TESTS = Path(__file__).resolve().parent


def test_legacy_sampler_inside_verl_07_dataloader_fit_loop_and_checkpoint(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(LEGACY).resolve()), str(TESTS.parent), str(TESTS)])}
    out = subprocess.run([sys.executable, "-W", "ignore", str(TESTS / "verl_legacy_check.py"), str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["verl"].startswith("0.7.")
    # verl 0.7's create_rl_sampler built the class named in data.sampler, and its fit loop would call update
    assert seen["sampler"] == "PrerollCurriculumSampler" and seen["curriculum"] is True
    batches = seen["batches"]
    assert all(len(b) == 4 for b in batches)                                  # 4 distinct prompts per step
    assert len({i for b in batches for i in b}) == 12                          # one pass: no prompt twice
    # every rollout of every step reached the book (4 prompts x 2 rollouts x 3 steps), rewards intact
    assert seen["book"] == {"steps": 3, "rows": 12, "successes": sum(seen["solved"]), "attempts": 24.0}
    # verl 0.7's _save_checkpoint / _load_checkpoint (data.pt through StatefulDataLoader) carry the book
    assert seen["restored_global_steps"] == 3
    assert seen["restored_history_equal"] and seen["restored_global_rate_equal"] and seen["resumed_batch_matches"]
    # the sampler builds the neighbour graph at its first batch, so the resumed one (constructed by verl, then
    # restored from data.pt before its first batch) reads the saved graph instead of building another
    assert seen["graph_builds"] == [1, 1] and seen["restored_graph_equal"]
