"""The MMLU loader and ``preroll bench route`` on small real subsets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import HashingEncoder

from preroll.data import RecordError
from preroll.bench.mmlu import load_contaminated, load_mmlu, read_responses
from preroll.data.paths import mmlu_dir
from preroll.route import ModelSpec, UnknownModelError

HEADER = "prompt,small-model,big-model\n"


def _write(root, name, text):
    (root / "responses").mkdir(parents=True, exist_ok=True)
    path = root / "responses" / name
    path.write_text(text, encoding="utf-8")
    return path


def test_bundled_mmlu_loads_with_contaminated_prompts_excluded():
    data = load_mmlu()
    assert len(data.models) == 2 and data.correct.shape == (len(data), 2)
    assert data.correct.dtype == bool
    assert len(set(data.subjects)) == 57
    contaminated = load_contaminated(mmlu_dir() / "contaminated_prompts.jsonl")
    assert data.n_excluded > 0
    assert not contaminated & set(data.prompts)
    full = load_mmlu(exclude_contaminated=False)
    assert len(full) == len(data) + data.n_excluded


def test_model_names_come_from_the_header(tmp_path):
    _write(tmp_path, "mmlu_a.csv", HEADER + '"Q1\nA. x\nAnswer:",True,False\nQ2,false,TRUE\n')
    (tmp_path / "contaminated_prompts.jsonl").write_text('{"eval_prompt": "Q2", "train_prompt": "other"}\n')
    data = load_mmlu(tmp_path)
    assert data.models == ["small-model", "big-model"]
    assert data.prompts == ["Q1\nA. x\nAnswer:"] and data.subjects == ["a"]
    assert data.correct.tolist() == [[True, False]]
    assert data.n_excluded == 1
    hist = data.histories()
    assert set(hist) == {"small-model", "big-model"}
    assert hist["big-model"][0].successes == 0.0 and hist["small-model"][0].attempts == 1.0


def test_malformed_row_names_file_line_and_field(tmp_path):
    # The bad row starts on line 4: the first prompt spans lines 2-3.
    path = _write(tmp_path, "mmlu_a.csv", HEADER + '"Q1\nAnswer:",True,False\nQ2,True,maybe\n')
    with pytest.raises(RecordError) as err:
        read_responses(path)
    assert err.value.line == 4 and err.value.field == "big-model"
    assert "mmlu_a.csv" in str(err.value) and "'maybe'" in str(err.value)
    path = _write(tmp_path, "mmlu_b.csv", HEADER + "Q1,True\n")
    with pytest.raises(RecordError, match="line 2.*expected 3 values"):
        read_responses(path)
    path = _write(tmp_path, "mmlu_c.csv", "question,small\nQ,True\n")
    with pytest.raises(RecordError, match="line 1.*'prompt'"):
        read_responses(path)


def test_files_must_agree_on_models(tmp_path):
    _write(tmp_path, "mmlu_a.csv", HEADER + "Q1,True,False\n")
    _write(tmp_path, "mmlu_b.csv", "prompt,small-model,other\nQ2,True,False\n")
    (tmp_path / "contaminated_prompts.jsonl").write_text("")
    with pytest.raises(RecordError, match="mmlu_b.csv.*differ"):
        load_mmlu(tmp_path)


def test_contaminated_file_errors(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"eval_prompt": "a"}\n{"idx": 3}\n')
    with pytest.raises(RecordError, match="line 2.*eval_prompt"):
        load_contaminated(p)
    p.write_text('{"eval_prompt": "a"}\nnot json\n')
    with pytest.raises(RecordError, match="line 2.*malformed JSON"):
        load_contaminated(p)


def _specs(data, weak_cost=1.0, strong_cost=10.0):
    return [ModelSpec(name=data.models[0], cost_per_call=weak_cost),
            ModelSpec(name=data.models[1], cost_per_call=strong_cost)]


def test_bench_on_a_small_subset(tmp_path):
    from preroll.bench.route import RouteBenchConfig, plot_frontier, run_route_bench

    data = load_mmlu()
    cfg = RouteBenchConfig(models=_specs(data), max_prompts=500, encoder=HashingEncoder(256), mlp=False,
                           knn_ks=(10, 40), random_repeats=10)
    res = run_route_bench(cfg)
    rows = {r["name"]: r for r in res["summary"]}
    split = res["splits"][0]
    assert split["n_history"] + split["n_eval"] == 500
    hist_eval_overlap = split["n_history"] + split["n_eval"]
    assert hist_eval_overlap == res["n_prompts"]
    random = next(r for n, r in rows.items() if n.startswith("random"))
    oracle = rows["oracle"]
    assert abs(random["apgr"] - 0.5) < 0.1
    for name, r in rows.items():
        if r["apgr"] is not None and name != "oracle":
            assert r["apgr"] <= oracle["apgr"]
            assert r["aiq"] <= oracle["aiq"] + 1e-12
    strong_only = next(r for n, r in rows.items() if n.endswith("(strong)"))
    assert strong_only["share_for_target"] == 1.0
    # AIQ of a random mix is the mean of the two accuracies (a straight line between them)
    assert random["aiq"] == pytest.approx((split["weak_acc"] + split["strong_acc"]) / 2, abs=0.02)
    png = plot_frontier(res, tmp_path / "f.png")
    assert png.stat().st_size > 10_000


def test_split_keeps_identical_prompts_together():
    from preroll.bench.route import split_prompts

    prompts = ["a", "b", "a", "c", "d", "b", "e", "f"]
    hist, ev = split_prompts(prompts, 0.5, seed=3)
    assert not {prompts[i] for i in hist} & {prompts[i] for i in ev}
    assert sorted(np.r_[hist, ev].tolist()) == list(range(len(prompts)))


def test_bench_refuses_unknown_model():
    from preroll.bench.route import RouteBenchConfig, run_route_bench

    cfg = RouteBenchConfig(models=[ModelSpec(name="gpt-x", cost_per_call=1.0),
                                   ModelSpec(name="gpt-4-1106-preview", cost_per_call=2.0)],
                           max_prompts=100, encoder=HashingEncoder(256))
    with pytest.raises(UnknownModelError, match="'gpt-x'"):
        run_route_bench(cfg)


def test_cli_writes_table_json_and_png(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import preroll.bench.route as bench
    from preroll.cli.main import app

    seen = []
    monkeypatch.setattr(bench, "resolve_encoder", lambda spec, cache_dir: seen.append(spec) or HashingEncoder(256))

    data = load_mmlu(subjects=["anatomy"])
    out = tmp_path / "out"
    args = ["bench", "route", "--protocol", "random", "--max-prompts", "300", "--encoder", "lexical", "--no-mlp",
            "--out", str(out)]
    for m, c in zip(data.models, ("0.5", "20")):
        args += ["--cost", f"{m}={c}"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert seen == ["lexical"]
    assert "APGR" in res.output and "oracle" in res.output
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["max_prompts"] == 300
    assert (out / "frontier.png").stat().st_size > 10_000
    bad = CliRunner().invoke(app, ["bench", "route", "--cost", "onlyone=1", "--out", str(out)])
    assert bad.exit_code != 0 and "two models" in bad.output
