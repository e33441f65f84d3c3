"""Every user mistake found on a fresh install ends in one line and exit code 2, or in correct output.

Each case here once produced a traceback or a silent change; the tests assert
the behaviour, not only the absence of a crash.
"""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from cli_helpers import one_line_error, run_cli, write_jsonl
from preroll.cli.main import app
from preroll.data import RecordError, load_queries, load_records
from preroll.errors import ConfigError, InputError, NotFittedError, OutputError, PrerollError

runner = CliRunner()

HISTORY = [
    {"prompt": "what is 2+2", "successes": 1, "attempts": 1},
    {"prompt": "integrate x^2 from 0 to 1", "successes": 0, "attempts": 1},
    {"prompt": "what is 3+5", "successes": 1, "attempts": 1},
    {"prompt": "prove that sqrt 2 is irrational", "successes": 0, "attempts": 1},
]








@pytest.fixture
def files(tmp_path):
    ctx = write_jsonl(tmp_path / "history.jsonl", HISTORY)
    q = write_jsonl(tmp_path / "queries.jsonl", [{"prompt": "what is 7+1", "qid": 1}])
    return tmp_path, ctx, q


# -- predict: the minimal schema, and outputs that must not destroy inputs ------------------------

def test_predict_on_a_history_without_step_or_policy(files):
    tmp, ctx, q = files
    code, text = run_cli("predict", "--context", ctx, "--prompts", q, "--out", tmp / "p.jsonl", "--encoder", "lexical")
    assert code == 0, text
    row = json.loads((tmp / "p.jsonl").read_text())
    assert row["qid"] == 1 and 0 < row["p_success"] < 1


def test_predict_by_policy_scores_every_policy_with_partial_histories(tmp_path):
    """Two policies, prompts seen by only one of them: one row per query with a probability per policy."""
    rows = [{"prompt": f"{topic} question {i}", "policy": policy, "success_rate": rate}
            for i in range(8) for topic, policy, rate in (("algebra", "small", 0.2), ("algebra", "large", 0.9),
                                                          ("poetry", "small", 0.7))]
    rows += [{"prompt": f"geometry question {i}", "policy": "large", "success_rate": 0.8} for i in range(4)]
    ctx = write_jsonl(tmp_path / "h.jsonl", rows)
    q = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "algebra question 99", "qid": "a"},
                                      {"prompt": "poetry question 99", "qid": "b"}])
    code, text = run_cli("predict", "--context", ctx, "--prompts", q, "--out", tmp_path / "p.jsonl", "--by-policy",
                      "--encoder", "lexical")
    assert code == 0, text
    out = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["qid"] for r in out] == ["a", "b"]
    for r in out:
        assert set(r["p_success"]) == set(r["p_std"]) == {"small", "large"}
        assert all(0 < v < 1 for v in r["p_success"].values())
        assert r["best_policy"] == max(r["p_success"], key=r["p_success"].get)
    assert out[0]["p_success"]["large"] > out[0]["p_success"]["small"]
    single = write_jsonl(tmp_path / "one.jsonl", [{"prompt": "x", "policy": "small", "success_rate": 0.5},
                                             {"prompt": "y", "policy": "small", "success_rate": 0.1}])
    one_line_error(*run_cli("predict", "--context", single, "--prompts", q, "--out", tmp_path / "p2.jsonl",
                          "--by-policy", "--encoder", "lexical"), "at least two policies")


def test_out_equal_to_context_is_refused_and_the_history_survives(files):
    tmp, ctx, q = files
    before = ctx.read_bytes()
    one_line_error(*run_cli("predict", "--context", ctx, "--prompts", q, "--out", ctx, "--encoder", "lexical"),
                    "would overwrite the input")
    assert ctx.read_bytes() == before


def test_out_through_a_symlink_to_the_history_is_refused(files):
    tmp, ctx, q = files
    link = tmp / "link.jsonl"
    os.symlink(ctx, link)
    one_line_error(*run_cli("predict", "--context", ctx, "--prompts", q, "--out", link, "--force",
                          "--encoder", "lexical"), "would overwrite the input")


def test_existing_out_needs_force(files):
    tmp, ctx, q = files
    out = tmp / "p.jsonl"
    out.write_text("keep me\n")
    one_line_error(*run_cli("predict", "--context", ctx, "--prompts", q, "--out", out, "--encoder", "lexical"),
                    "already exists", "--force")
    assert out.read_text() == "keep me\n"
    code, text = run_cli("predict", "--context", ctx, "--prompts", q, "--out", out, "--encoder", "lexical", "--force")
    assert code == 0, text and json.loads(out.read_text())["qid"] == 1


def test_out_in_a_missing_folder_is_created(files):
    tmp, ctx, q = files
    out = tmp / "new" / "dir" / "p.jsonl"
    code, text = run_cli("predict", "--context", ctx, "--prompts", q, "--out", out, "--encoder", "lexical")
    assert code == 0, text and out.exists()


def test_out_gets_the_permissions_of_an_ordinary_file(files):
    """The atomic write goes through a private temporary file; the output must not stay private (mode 0600)."""
    tmp, ctx, q = files
    old = os.umask(0o022)
    try:
        out = tmp / "p.jsonl"
        code, text = run_cli("predict", "--context", ctx, "--prompts", q, "--out", out, "--encoder", "lexical")
        assert code == 0, text
        assert out.stat().st_mode & 0o777 == 0o644
        os.chmod(out, 0o640)  # a replaced output keeps the mode its owner gave it
        code, text = run_cli("predict", "--context", ctx, "--prompts", q, "--out", out, "--encoder", "lexical",
                          "--force")
        assert code == 0, text
        assert out.stat().st_mode & 0o777 == 0o640
        os.umask(0o077)
        fresh = tmp / "private.jsonl"
        assert run_cli("predict", "--context", ctx, "--prompts", q, "--out", fresh, "--encoder", "lexical")[0] == 0
        assert fresh.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_out_under_a_file_fails_before_any_work(files):
    tmp, ctx, q = files
    one_line_error(*run_cli("predict", "--context", ctx, "--prompts", q, "--out", ctx / "p.jsonl",
                          "--encoder", "lexical"), "--out")


def test_reward_range_with_equal_ends(files):
    tmp, ctx, q = files
    h = write_jsonl(tmp / "r.jsonl", [{"prompt": "a b", "reward": 1}])
    one_line_error(*run_cli("predict", "--context", h, "--prompts", q, "--out", tmp / "p.jsonl",
                          "--reward-range", "1", "1"), "--reward-range", "low < high")


def test_step_beyond_the_history_names_the_step_used(files):
    tmp, ctx, q = files
    h = write_jsonl(tmp / "s.jsonl", [{**r, "step": 10 if i % 2 else 20} for i, r in enumerate(HISTORY)])
    code, text = run_cli("predict", "--context", h, "--prompts", q, "--out", tmp / "p.jsonl", "--encoder", "lexical",
                      "--step", "256")
    assert code == 0, text
    assert "step 256 is not in the history" in text and "step 20" in text


def test_unknown_policy_is_one_line(files):
    tmp, ctx, q = files
    one_line_error(*run_cli("predict", "--context", ctx, "--prompts", q, "--out", tmp / "p.jsonl",
                          "--encoder", "lexical", "--policy", "nope"), "no history for policy")


def test_debug_shows_the_traceback(files):
    tmp, ctx, q = files
    result = runner.invoke(app, ["--debug", "predict", "--context", str(ctx), "--prompts", str(q),
                                 "--out", str(ctx), "--encoder", "lexical"])
    assert isinstance(result.exception, OutputError)


# -- loaders: silent changes ---------------------------------------------------------------------

def test_csv_fractional_step_is_refused_not_truncated(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("prompt,step,success_rate\nq one,16.7,0.5\n", encoding="utf-8")
    with pytest.raises(RecordError) as e:
        load_records(p)
    assert e.value.field == "step" and e.value.line == 2 and "whole number" in str(e.value)


@pytest.mark.parametrize("cell", ["inf", "nan", "-inf", "1e400"])
def test_csv_non_finite_step(tmp_path, cell):
    p = tmp_path / "h.csv"
    p.write_text(f"prompt,step,success_rate\nq one,{cell},0.5\n", encoding="utf-8")
    with pytest.raises(RecordError) as e:
        load_records(p)
    assert e.value.field == "step"


def test_huge_step_is_refused_with_its_field(tmp_path):
    p = write_jsonl(tmp_path / "h.jsonl", [{"prompt": "q", "step": 1e20, "success_rate": 0.5}])
    with pytest.raises(RecordError) as e:
        load_records(p)
    assert e.value.field == "step"


def test_weight_scales_the_evidence(tmp_path):
    p = write_jsonl(tmp_path / "h.jsonl", [{"prompt": "q", "successes": 3, "attempts": 4, "weight": 2}])
    (rec,) = load_records(p)
    assert (rec.successes, rec.attempts) == (6, 8)
    with pytest.raises(RecordError) as e:
        load_records(write_jsonl(tmp_path / "z.jsonl", [{"prompt": "q", "success_rate": 1, "weight": 0}]))
    assert e.value.field == "weight"


def test_query_infinity_is_refused_not_written_as_bare_nan(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text('{"prompt": "q", "score": Infinity}\n', encoding="utf-8")
    with pytest.raises(RecordError) as e:
        load_queries(p)
    assert e.value.field == "score" and e.value.line == 1


def test_prompt_with_line_separator_round_trips(files):
    tmp, ctx, _ = files
    q = write_jsonl(tmp / "q2.jsonl", [{"prompt": "first\u2028second"}, {"prompt": "third\u2029"}])
    assert [r["prompt"] for r in load_queries(q)] == ["first\u2028second", "third\u2029"]
    out = tmp / "p.jsonl"
    code, text = run_cli("predict", "--context", ctx, "--prompts", q, "--out", out, "--encoder", "lexical")
    assert code == 0, text
    assert [r["prompt"] for r in load_queries(out)] == ["first\u2028second", "third\u2029"]


def test_excel_csv_with_bom(tmp_path):
    p = tmp_path / "h.csv"
    p.write_bytes("prompt,success_rate\r\nq one,0.5\r\n".encode("utf-8-sig"))
    (rec,) = load_records(p)
    assert rec.prompt == "q one"


# -- feedback ------------------------------------------------------------------------------------

def test_feedback_twice_is_refused_unless_again(files):
    tmp, ctx, _ = files
    store = tmp / "store.db"
    code, text = run_cli("feedback", ctx, "--model", "m", "--store", store)
    assert code == 0, text
    one_line_error(*run_cli("feedback", ctx, "--model", "m", "--store", store), "already in", "--again")
    code, text = run_cli("feedback", ctx, "--model", "m", "--store", store, "--again")
    assert code == 0 and "history now 8" in text


def test_feedback_empty_model(files):
    tmp, ctx, _ = files
    one_line_error(*run_cli("feedback", ctx, "--model", "", "--store", tmp / "s.db"), "--model")


def test_feedback_non_sqlite_store(files):
    tmp, ctx, _ = files
    bad = tmp / "notes.db"
    bad.write_text("this is not a database " * 100)
    one_line_error(*run_cli("feedback", ctx, "--model", "m", "--store", bad), str(bad))


def test_feedback_store_equal_to_the_file(files):
    tmp, ctx, _ = files
    before = ctx.read_bytes()
    one_line_error(*run_cli("feedback", ctx, "--model", "m", "--store", ctx), "would overwrite the input")
    assert ctx.read_bytes() == before


def test_feedback_huge_step(tmp_path):
    h = write_jsonl(tmp_path / "h.jsonl", [{"prompt": "q", "step": 1e20, "success_rate": 0.5}])
    one_line_error(*run_cli("feedback", h, "--model", "m", "--store", tmp_path / "s.db"), "step")


def test_eval_missing_data_is_one_line(tmp_path):
    one_line_error(*run_cli("eval", "--data", tmp_path / "nowhere", "--out", tmp_path / "o"), "nowhere")


# -- the error family ----------------------------------------------------------------------------

def test_error_family():
    from preroll.encoders import EncoderLoadError
    from preroll.heads import TabPFNUnavailable
    from preroll.route import NotFittedError as RouteNotFitted
    from preroll.route import RouteConfigError, RouteError
    from preroll.schedule.errors import ScheduleInputError
    from preroll.serve.config import ConfigError as ServeConfigError

    assert issubclass(RecordError, InputError) and issubclass(ConfigError, InputError)
    assert not issubclass(ConfigError, RecordError) and not issubclass(ServeConfigError, RecordError)
    for cls in (RouteError, ScheduleInputError, EncoderLoadError, TabPFNUnavailable, OutputError, RouteConfigError):
        assert issubclass(cls, PrerollError), cls
    assert issubclass(RouteNotFitted, NotFittedError) and issubclass(RouteConfigError, ConfigError)


def test_not_fitted_is_one_type():
    from preroll.heads import make_head
    from preroll.model.value_model import ValueModel

    with pytest.raises(NotFittedError):
        ValueModel().predict(["x"])
    for name in ("logistic", "knn"):
        with pytest.raises(NotFittedError):
            make_head(name).predict([[0.0, 1.0]])


def test_install_hint_keeps_its_brackets(files):
    pytest.importorskip("sklearn")
    try:
        import tabpfn  # noqa: F401
        pytest.skip("tabpfn is installed")
    except ImportError:
        pass
    tmp, ctx, q = files
    one_line_error(*run_cli("predict", "--context", ctx, "--prompts", q, "--out", tmp / "p.jsonl",
                          "--encoder", "lexical", "--head", "tabpfn"), "pip install 'preroll[tabpfn]'")
