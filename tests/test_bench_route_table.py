"""``preroll bench route`` on a user's own labelled routing table (the llmrouter-9 layout, any number of models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from preroll.bench.route_labels import labelled_split
from preroll.cli.main import app


def user_table(root, llmrouter, *, n_prompts=120):
    """Three of the bundled models under the user's own names and prices, on the first prompts: a small real
    table in the documented layout (train.jsonl rows {id, prompt, scores}, models.json prices)."""
    bundled = list(json.loads((llmrouter / "models.json").read_text()))
    rename = {bundled[1]: "small", bundled[2]: "medium", bundled[-1]: "large"}
    root.mkdir()
    prices = {"small": 0.1, "medium": 0.5, "large": 2.0}
    (root / "models.json").write_text(json.dumps({m: {"input_price_per_mtok": p, "output_price_per_mtok": p}
                                                  for m, p in prices.items()}))
    with (llmrouter / "train.jsonl").open() as fh, (root / "train.jsonl").open("w") as out:
        for _, line in zip(range(n_prompts), fh):
            row = json.loads(line)
            scores = {new: row["scores"][old] for old, new in rename.items() if old in row["scores"]}
            out.write(json.dumps({"id": row["id"], "prompt": row["prompt"], "scores": scores}) + "\n")
    return root


ARGS = ["--protocol", "random", "--encoder", "lexical", "--no-independent", "--no-mlp", "--latency-prompts", "0",
        "--folds", "2"]


def test_a_users_table_is_routed_with_its_own_models_and_prices(tmp_path, llmrouter):
    table = user_table(tmp_path / "mine", llmrouter)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["bench", "route", "--data", str(table), *ARGS, "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results-table.json").read_text())   # named for a user's table, not "nine"
    assert saved["models"] == ["small", "medium", "large"] and saved["n_prompts"] == 120   # no --models needed
    assert len(saved["folds"]) == 2
    assert "3 priced models, 120 prompts" in " ".join(result.output.split())
    assert sorted(p.name for p in out.iterdir()) == ["frontier-table.png", "results-table.json"]


@pytest.mark.filterwarnings("error::RuntimeWarning")   # one fold of 120 prompts leaves topics without a held-out row
def test_the_bundled_nine_keep_their_output_names(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["bench", "route", "--models", "table", "--max-prompts", "120", *ARGS,
                                      "--max-folds", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["frontier-nine.png", "results-nine.json"]
    saved = json.loads((out / "results-nine.json").read_text())
    assert len(saved["models"]) == 9
    topics = saved["topics"]
    shown = [r["topic"] for r in topics["rows"][:-1]]
    assert sorted(shown + topics["no_held_out"]) == list(range(topics["n_topics"]))
    assert all(r["n"] > 0 for r in topics["rows"]) and topics["rows"][-1]["n"] == 60   # one fold of two


def test_a_users_learning_curve_is_named_for_a_table(tmp_path, llmrouter):
    table = user_table(tmp_path / "mine", llmrouter)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["bench", "route", "--data", str(table), *ARGS, "--learning-curve", "0.5,1",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["learning-curve-table.json", "learning-curve-table.png"]


def test_a_bad_score_in_a_users_table_is_one_line(tmp_path, llmrouter):
    table = user_table(tmp_path / "mine", llmrouter, n_prompts=10)
    lines = (table / "train.jsonl").read_text().splitlines()
    row = json.loads(lines[3])
    row["scores"]["medium"] = 1.5
    lines[3] = json.dumps(row)
    (table / "train.jsonl").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["bench", "route", "--data", str(table), *ARGS, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = " ".join(result.output.split())
    assert "train.jsonl" in message and "line 4" in message and "scores.medium" in message


@pytest.mark.parametrize("models", ["3", "llmrouter"])
def test_models_names_a_kind_of_table(tmp_path, models):
    result = CliRunner().invoke(app, ["bench", "route", "--models", models, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "choose 2 or table" in result.output


STREAM = ["--stream", "--encoder", "lexical", "--no-full-info"]


@pytest.mark.parametrize(("encoder", "features"), [("minilm+lexical+stats", "minilm"), ("lexical", "hashed"),
                                                   ("lexical+stats", "hashed"), ("/models/e5 + stats", "/models/e5")])
def test_stream_baselines_read_the_chosen_encoders_parts_that_need_no_fit(encoder, features):
    from preroll.bench.route_stream import baseline_features

    assert baseline_features(encoder) == features


def test_stream_on_a_users_table_gives_the_baselines_the_chosen_encoder(tmp_path, llmrouter, monkeypatch):
    import preroll.bench.route_stream as stream

    seen = []
    real = stream._features
    monkeypatch.setattr(stream, "_features", lambda prompts, encoder, cache_dir: seen.append(encoder)
                        or real(prompts, encoder, cache_dir))
    table = user_table(tmp_path / "mine", llmrouter)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["bench", "route", "--data", str(table), *STREAM, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert seen == ["hashed"]                   # --encoder lexical: not MiniLM (lexical needs a fit)
    saved = json.loads((out / "results-stream-seed0.json").read_text())
    assert saved["models"] == ["small", "medium", "large"] and saved["info"]["baselines"]["features"] == "hashed"
    assert any(r["method"].startswith("LinUCB") for r in saved["rows"])


@pytest.mark.parametrize(("flag", "value", "field", "expected"),
                         [("--anneal-after", "40", "anneal_after", 40), ("--anneal-after", "0", "anneal_after", None),
                          ("--contenders-z", "1.5", "contenders_z", 1.5),
                          ("--contenders-z", "-1", "contenders_z", None), ("--head", "joint", "head", "joint"),
                          ("--warmup", "150", "warmup", 150), ("--warmup", "0", "warmup", None),
                          ("--max-gap", "512", "max_gap", 512), ("--max-gap", "0", "max_gap", None)])
def test_stream_flags_reach_the_routers_settings(tmp_path, llmrouter, monkeypatch, flag, value, field, expected):
    import preroll.route as route

    routers = []

    class Recording(route.Router):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            routers.append(self)

    monkeypatch.setattr(route, "Router", Recording)
    table = user_table(tmp_path / "mine", llmrouter)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["bench", "route", "--data", str(table), *STREAM, flag, value,
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    explorers = [r for r in routers if r.explore]
    saved = json.loads((out / "results-stream-seed0.json").read_text())
    if field == "head":   # the explore and full-information routers' head
        assert len(explorers) == 1 and explorers[0].head == expected and saved["config"]["head"] == expected
        return
    assert len(explorers) == 1 and getattr(explorers[0].explore, field) == expected
    assert saved["info"]["explore router"]["settings"][field] == expected


def test_stream_anneal_after_is_validated(tmp_path):
    result = CliRunner().invoke(app, ["bench", "route", *STREAM, "--anneal-after", "-1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "Traceback" not in result.output and "--anneal-after" in result.output


@pytest.mark.parametrize("explore", [[], ["--warmup", "0", "--max-share", "0"]])
def test_stream_splits_the_last_requests_into_what_was_learnt_and_what_exploring_cost(tmp_path, llmrouter, explore):
    table = user_table(tmp_path / "mine", llmrouter)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["bench", "route", "--data", str(table), *STREAM, *explore, "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results-stream-seed0.json").read_text())
    row = next(r for r in saved["rows"] if r["method"] == "explore router")
    assert saved["greedy_quality_last"] - saved["explore_cost_last"] == pytest.approx(row["quality_last"])
    if explore:   # nothing explored: the greedy choices are the choices
        assert saved["explored_last_share"] == 0.0 and saved["explore_cost_last"] == 0.0
    else:   # exploring moved some requests off the greedy choice, and that changed what they scored
        assert saved["explored_last_share"] > 0.0 and saved["explore_cost_last"] != 0.0
    assert "its greedy choices" in " ".join(result.output.split())


# -- --stream --labels N: routers fitted on labels, then live on traffic unlike them --------------------------

@settings(max_examples=60, deadline=None)
@given(texts=st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h", "ä\u200bö", "x y"]), min_size=4,
                      max_size=40),
       history=st.integers(1, 30), holdout=st.floats(0.0, 0.6), seed=st.integers(0, 5))
def test_a_random_split_keeps_every_row_once_and_no_text_on_both_sides(texts, history, holdout, seed):
    split = labelled_split(texts, seed, history=history, source="random", holdout=holdout)
    parts = [split.history, split.stream, split.held]
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(texts)))
    labelled = {texts[i] for i in split.history}
    assert not labelled & {texts[i] for i in np.concatenate([split.stream, split.held])}
    assert len(labelled) <= min(history, int(0.75 * len(set(texts))))
    assert split.new_topics == () and split.new_share == 0.0


def test_a_topic_split_keeps_two_topics_out_of_the_labels(llmrouter):
    from preroll.bench.llmrouter import load_llmrouter
    from preroll.bench.route import random_subset
    from preroll.bench.route_shift import text_clusters, text_embeddings

    data = random_subset(load_llmrouter(None), 500, 0)
    split = labelled_split(data.prompts, 2, history=150)
    topic = np.asarray(text_clusters(text_embeddings(data.prompts, "lexical"), 5, 2))
    at = {t: i for i, t in enumerate(dict.fromkeys(data.prompts))}
    row_topic = np.array([topic[at[p]] for p in data.prompts])
    assert len(split.history) == 150 and not np.isin(row_topic[split.history], split.new_topics).any()
    traffic = np.concatenate([split.stream, split.held])
    assert split.new_share == pytest.approx(np.isin(row_topic[traffic], split.new_topics).mean())
    assert 0 < split.new_share < 1 and len(split.held) == int(0.2 * len(traffic))
    with pytest.raises(ValueError, match="unknown label source"):
        labelled_split(data.prompts, 2, source="clusters")


def test_a_stream_from_labels_fits_every_method_on_them_first(llmrouter):
    from preroll.bench.route_stream import LABELS_ONLY, StreamBenchConfig, run_stream_bench

    res = run_stream_bench(StreamBenchConfig(max_prompts=400, encoder="lexical", baseline_encoder="hashed",
                                             last=100, labels=150, explore={"first_refit": 64}))
    assert res["labels"]["n"] == 150 and len(res["labels"]["new_topics"]) == 2
    assert res["n_stream"] + res["frozen"]["n"] == 400 - 150
    methods = [r["method"] for r in res["rows"]]
    assert methods[:3] == ["explore router", LABELS_ONLY, "full-information router"]
    info = res["info"]["explore router"]
    # Fitted on labels: no blind warm-up over an empty history, and the refits read the labels too.
    assert info["warmup_explored"] == 0 and info["decisions"] == res["n_stream"]
    assert 0 <= res["frozen"]["labels_only_router"] <= 1
    # Thompson without context starts from the labels' means: with 150 outcomes per model, a model far behind
    # on them is never drawn (from flat priors, every model is tried).
    thompson = next(r for r in res["rows"] if r["method"] == "Thompson without context")
    assert len(thompson["picks"]) < len(res["models"])


def test_the_cli_starts_a_stream_from_a_users_labels(tmp_path, llmrouter):
    table = user_table(tmp_path / "mine", llmrouter, n_prompts=200)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["bench", "route", "--data", str(table), *STREAM, "--labels", "60",
                                      "--labels-from", "random", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "from labels of 60 prompts" in result.output and "fitted on labels, never updated" in result.output
    saved = json.loads((out / "results-stream-seed0.json").read_text())
    assert saved["labels"] == {"n": 60, "from": "random", "new_topics": [], "new_share": 0.0}
    assert saved["n_stream"] + saved["frozen"]["n"] == 140


def test_an_unknown_label_source_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(app, ["bench", "route", *STREAM, "--labels", "60", "--labels-from", "clusters",
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "choose topics or random" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()
