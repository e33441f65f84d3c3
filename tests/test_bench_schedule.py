"""The scheduling simulator on a small real subset of the bundled data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from preroll.bench._schedule_data import earlier_snapshot, load_snapshots
from preroll.bench._schedule_predictors import history_overlap, history_prediction
from preroll.bench.schedule import ScheduleBenchConfig, headline, simulate, summarise, write_outputs
from preroll.cli.main import app


@pytest.fixture(scope="module")
def snapshots(dapo):
    return load_snapshots()


def test_snapshots_are_the_six_policy_steps(snapshots):
    assert len(snapshots) == 6
    assert all(len(s.records) == 512 for s in snapshots)
    first = next(s for s in snapshots if s.step == 16)
    assert earlier_snapshot(first, snapshots) is None
    later = next(s for s in snapshots if s.step == 64 and s.policy == first.policy)
    assert earlier_snapshot(later, snapshots).step == 16


def test_true_rates_come_from_the_beta_posterior(snapshots):
    snap = snapshots[0]
    rng = np.random.default_rng(0)
    draws = np.stack([snap.draw_rates(rng) for _ in range(400)])
    s, a = snap.successes, snap.attempts
    assert np.allclose(draws.mean(axis=0), (s + 1) / (a + 2), atol=0.04)
    assert (draws > 0).all() and (draws < 1).all()  # never the raw 0/10 or 10/10


def test_history_predictor_uses_the_earlier_step(snapshots):
    snap = next(s for s in snapshots if s.step == 256)
    prev = earlier_snapshot(snap, snapshots)
    pred = history_prediction(snap, snapshots)
    seen = dict(zip(prev.ids, prev.successes / prev.attempts, strict=True))
    shared = [i for i, pid in enumerate(snap.ids) if pid in seen]
    assert len(shared) == history_overlap(snap, snapshots) > 0
    assert all(pred[i] == seen[snap.ids[i]] for i in shared)
    others = [i for i in range(len(snap.ids)) if i not in set(shared)]
    assert np.allclose(pred[others], np.mean(prev.successes / prev.attempts))


def test_quick_simulation_on_real_rates(snapshots, tmp_path):
    cfg = ScheduleBenchConfig(budgets=[8], replicates=3, batch_prompts=32, seed=0,
                              predictors=["oracle", "noisy", "history", "constant"],
                              snapshots=["Qwen3-4B-Instruct@64"])
    result = simulate(cfg, snapshots=snapshots, log=lambda m: None)
    for row in result["allocation"]:
        assert row["rollouts"] == 8 * 32
        assert 0 <= row["informative"] <= row["groups"]
    summary = result["summary"]
    by = {(r["predictor"], r["rule"]): r for r in summary["allocation"]}
    # Real property on real rates: knowing the rates beats not knowing them.
    assert by[("oracle", "greedy")]["ratio_vs_uniform"] > by[("constant", "greedy")]["ratio_vs_uniform"]
    assert by[("oracle", "greedy")]["v0_utility"] > by[("oracle", "greedy")]["uniform_v0_utility"]
    assert by[("oracle", "greedy")]["wasted_share"] < summary["uniform"][0]["wasted_share"]
    assert summary["uniform"][0]["dapo_extra"] > 0
    mse = {r["predictor"]: r for r in summary["mse"]}
    assert mse["oracle"]["mse_fused_small"] < mse["oracle"]["mse_mean_small"]
    best = headline(summary, 8)
    assert {r["predictor"] for r in best} == {"oracle", "noisy", "history", "constant"}
    paths = write_outputs(result, tmp_path)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(paths["json"].read_text())["config"]["budgets"] == [8]
    md = paths["md"].read_text()
    assert "| oracle | greedy | 8 |" in md and "DAPO extra generation" in md


def test_fixed_group_mode_only_selects(snapshots):
    cfg = ScheduleBenchConfig(budgets=[8], replicates=2, batch_prompts=32, fixed_group=True,
                              predictors=["oracle"], rules=["greedy"], snapshots=["Qwen3-4B-Instruct@64"])
    result = simulate(cfg, snapshots=snapshots, log=lambda m: None)
    rows = [r for r in result["allocation"] if r["rule"] == "greedy"]
    assert all(r["groups"] == 32 for r in rows)  # 256 rollouts in groups of exactly 8


def test_summary_pairs_each_predictor_with_its_own_worlds():
    alloc = [
        {"snapshot": "a", "rep": 0, "budget": 8, "predictor": "-", "rule": "uniform", "informative": 10.0,
         "rollouts": 100.0, "groups": 12.0, "v0_utility": 9.0, "wasted": 20.0},
        {"snapshot": "b", "rep": 0, "budget": 8, "predictor": "-", "rule": "uniform", "informative": 30.0,
         "rollouts": 100.0, "groups": 12.0, "v0_utility": 9.0, "wasted": 20.0},
        {"snapshot": "b", "rep": 0, "budget": 8, "predictor": "history", "rule": "greedy", "informative": 45.0,
         "rollouts": 100.0, "groups": 20.0, "v0_utility": 9.0, "wasted": 10.0},
    ]
    s = summarise(alloc, [{"budget": 8, "extra": 0.5, "informative_per_1k": 1.0}], [])
    assert s["allocation"][0]["ratio_vs_uniform"] == pytest.approx(1.5)  # vs world b only


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="unknown predictors"):
        simulate(ScheduleBenchConfig(predictors=["psychic"]), log=lambda m: None)
    with pytest.raises(ValueError, match="budgets"):
        simulate(ScheduleBenchConfig(budgets=[0]), log=lambda m: None)


def test_cli_quick_run_writes_table_and_plot(tmp_path):
    res = CliRunner().invoke(app, ["bench", "schedule", "--quick", "--budget", "8", "--replicates", "2",
                                   "--predictors", "oracle,history", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "Rollout allocation" in res.output and "Baseline MSE" in res.output
    assert (tmp_path / "informative_vs_budget.png").exists()
    res = CliRunner().invoke(app, ["bench", "schedule", "--predictors", "nope", "--out", str(tmp_path)])
    assert res.exit_code != 0 and "unknown predictors" in res.output


def test_value_model_predictions_report_every_fold(snapshots):
    """The slow part of the benchmark (value-model CV) shows progress: one tick per fold, over all policies."""
    from preroll.bench._schedule_predictors import load_model_predictions

    import dataclasses

    small = [dataclasses.replace(s, records=s.records[:60]) for s in snapshots if s.step == 64]
    ticks = []
    preds = load_model_predictions(small, n_splits=3, encoder="lexical", log=lambda m: None,
                                   progress=lambda done, total: ticks.append((done, total)))
    n_policies = len({s.policy for s in small})
    assert n_policies == 2
    assert ticks == [(i, 3 * n_policies) for i in range(1, 3 * n_policies + 1)]
    assert set(preds) == {s.name for s in small}
