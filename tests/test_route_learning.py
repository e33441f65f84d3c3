"""Learning curves of the routing benchmarks (``preroll bench route --learning-curve``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import HashingEncoder
from hypothesis import given, settings, strategies as st
from typer.testing import CliRunner

from preroll.bench import route_learning as rl
from preroll.bench.route_learning import CurvePoint


def test_fractions_are_sorted_distinct_and_in_range():
    assert rl.check_fractions([1, 0.25, 0.5, 0.25]) == [0.25, 0.5, 1.0]
    for bad in ([0.0, 1.0], [0.5, 1.5], [-0.1], []):
        with pytest.raises(ValueError):
            rl.check_fractions(bad)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), fracs=st.lists(st.floats(0.01, 1.0), min_size=1, max_size=5), seed=st.integers(0, 99))
def test_subsets_nest_and_have_the_asked_size(n, fracs, seed):
    rows = np.arange(1000, 1000 + n)
    fracs = rl.check_fractions(fracs)
    subs = rl.nested_subsets(rows, fracs, seed)
    for f, sub in zip(fracs, subs):
        assert len(sub) == max(1, int(round(f * n))) and len(set(sub.tolist())) == len(sub)
        assert set(sub.tolist()) <= set(rows.tolist())
    for small, large in zip(subs, subs[1:]):
        assert set(small.tolist()) <= set(large.tolist())


def test_trend_is_the_slope_per_doubling_of_the_fold_means():
    # Fold means 1, 2, 3 at 100, 200, 400 prompts: exactly one point per doubling.
    pts = [CurvePoint(fold=f, fraction=frac, n_history=n, router=v + d, knn=0.5 * v + d, fit_s=1.0)
           for f, d in ((0, -0.5), (1, 0.5))
           for frac, n, v in ((0.25, 100, 1.0), (0.5, 200, 2.0), (1.0, 400, 3.0))]
    trend = rl.per_doubling(pts)
    assert trend.per_doubling == pytest.approx(1.0) and trend.at(800) == pytest.approx(4.0)
    assert rl.per_doubling(pts, "knn").per_doubling == pytest.approx(0.5)
    rows = rl.summarise(pts)
    assert [r["router"] for r in rows] == pytest.approx([1.0, 2.0, 3.0])
    assert rows[0]["router_per_fold"] == pytest.approx([0.5, 1.5]) and rows[0]["router_std"] == pytest.approx(0.5)
    assert rl.per_doubling([p for p in pts if p.fraction == 1.0]) is None


def test_table_curve_refits_on_nested_shares_of_each_fold(tmp_path):
    from preroll.bench.llmrouter import load_llmrouter
    from preroll.bench.route_multi import MultiBenchConfig, fold_indices

    data = load_llmrouter()
    prompts = [data.prompts[i] for i in np.sort(np.random.default_rng(0).permutation(len(data))[:240])]
    cfg = MultiBenchConfig(folds=3, max_folds=2, max_prompts=240, encoder=HashingEncoder())
    pts = rl.table_curve(cfg, [1.0, 0.5])
    assert [(p.fold, p.fraction) for p in pts] == [(0, 0.5), (0, 1.0), (1, 0.5), (1, 1.0)]
    full = {p.fold: p.n_history for p in pts if p.fraction == 1.0}
    half = {p.fold: p.n_history for p in pts if p.fraction == 0.5}
    tests = fold_indices(prompts, 3, 0)
    assert full == {f: 240 - len(tests[f]) for f in (0, 1)}
    assert all(half[f] == round(full[f] / 2) for f in full)
    # Gains are points over the best single model: bounded by the score range, finite.
    assert all(np.isfinite([p.router, p.knn]).all() and -100 <= p.router <= 100 for p in pts)
    res = rl.curve_result(pts, "gain", {"fractions": [0.5, 1.0]})
    json.dumps(res)
    png = rl.plot_curve(res, tmp_path / "c.png")
    assert png.stat().st_size > 1000


def test_cli_learning_curve_on_the_mmlu_pair(tmp_path):
    from preroll.cli.main import app

    out = tmp_path / "lc"
    r = CliRunner().invoke(app, ["bench", "route", "--learning-curve", "0.5,1", "--max-prompts", "300",
                                 "--encoder", "stats", "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "learning-curve.json").read_text())
    assert [row["fraction"] for row in res["summary"]] == [0.5, 1.0]
    assert all(0.0 <= p["router"] <= 2.0 for p in res["points"])  # APGR: the oracle's is above 1
    assert (out / "learning-curve.png").is_file() and "per doubling" in r.output


def test_cli_refuses_a_bad_fraction_in_one_line():
    from preroll.cli.main import app

    r = CliRunner().invoke(app, ["bench", "route", "--models", "9", "--learning-curve", "0.5,2"])
    assert r.exit_code == 2 and "history fractions must lie in (0, 1]" in r.output
    r = CliRunner().invoke(app, ["bench", "route", "--learning-curve", "half"])
    assert r.exit_code == 2 and "expected numbers separated by commas" in r.output


def test_nine_model_outputs_never_go_into_the_data_folder(tmp_path):
    import shutil

    from preroll.bench.llmrouter import llmrouter_dir
    from preroll.cli.main import app

    data = tmp_path / "llmrouter-9"
    shutil.copytree(llmrouter_dir(), data)
    for extra in ([], ["--learning-curve", "1"]):
        r = CliRunner().invoke(app, ["bench", "route", "--models", "9", "--data", str(data), "--out", str(data),
                                     *extra])
        assert r.exit_code != 0 and "would overwrite the input" in r.output
    assert sorted(p.name for p in data.iterdir()) == sorted(p.name for p in llmrouter_dir().iterdir())
