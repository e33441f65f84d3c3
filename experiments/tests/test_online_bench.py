"""The online benchmark runs end to end in quick mode and its numbers hang together."""

from __future__ import annotations

import numpy as np
import pytest


def test_fit_world_reproduces_the_measured_statistics():
    from experiments.online_world import fit_world, load_rates

    table, texts = load_rates()
    fit = fit_world(table)
    assert fit.shift_per_step > 0                     # both policies improve
    assert abs(fit.fitted["start_share_0"] - fit.measured["start_share_0"]) < 0.05
    assert abs(fit.fitted["start_share_1"] - fit.measured["start_share_1"]) < 0.05
    r_meas = np.mean([q["r"] for q in fit.measured["same_prompt_correlation"]])
    r_fit = np.mean([q["r"] for q in fit.fitted["same_prompt_correlation"]])
    assert abs(r_meas - r_fit) < 0.05


def test_quick_benchmark_runs(tmp_path):
    from experiments.online_replay import OnlineBenchConfig, measure_overhead, simulate, write_outputs

    cfg = OnlineBenchConfig(variants=2, batch=16, epochs=3, max_anchors=200, quick=True)
    result = simulate(cfg, log=lambda m: None)
    rows = {r["sampler"]: r for r in result["samplers"]}
    assert set(rows) == set(cfg.samplers)
    assert rows["uniform"]["x_uniform_all"] == pytest.approx(1.0)
    assert rows["oracle"]["x_uniform_all"] > 1.2          # the ceiling is well above uniform
    assert rows["dapo"]["rollouts_per_step"] > rows["uniform"]["rollouts_per_step"]   # DAPO pays for dropped groups
    assert result["prediction"]["book"]["after_epoch1_seen"]["auc"] > 0.6
    result["overhead"] = vars(measure_overhead(n_prompts=500, pool=64, batch=16, history_rows=200, steps=2,
                                               workdir=tmp_path))
    paths = write_outputs(result, tmp_path)
    assert paths["png"].stat().st_size > 0 and paths["json"].exists()
