"""Each input that once gave a traceback (or invalid output) now gives one line and exit code 2.

The cases come from a probe of the CLI: a one-row history, a bad ``--head``/``--encoder``, a damaged
model folder under ``score --workers 2``, a 300-deep ``--keep``, a 5,000-digit integer or a 100k-deep
array in a JSONL row, a 200,000-character CSV prompt, Infinity in a query field, Parquet timestamp /
decimal / binary columns, ``eval --limit 0``, and a bare ``NaN`` in ``score --format jsonl`` output.
"""

from __future__ import annotations

import csv
import datetime
import decimal
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli_helpers import one_line_error, run_cli, write_jsonl


HISTORY = [{"prompt": f"problem {i}: compute {i} * {i % 7}", "successes": i % 3, "attempts": 3} for i in range(24)]








@pytest.fixture
def ctx(tmp_path):
    return write_jsonl(tmp_path / "h.jsonl", HISTORY)


@pytest.fixture
def q(tmp_path):
    return write_jsonl(tmp_path / "q.jsonl", [{"prompt": "what is 1 + 1?"}])


def _predict(tmp_path, ctx, q, *extra):
    return run_cli("predict", "--context", ctx, "--prompts", q, "--out", tmp_path / "out.jsonl", *extra)


def test_one_row_history_with_the_lexical_encoder(tmp_path, q):
    one = write_jsonl(tmp_path / "one.jsonl", HISTORY[:1])
    one_line_error(*_predict(tmp_path, one, q, "--encoder", "lexical"), "at least 2 prompts")


@pytest.mark.parametrize("args, needle", [
    (("--encoder", "stats", "--head", "bogus"), "--head"),
    (("--encoder", ""), "--encoder"),
    (("--encoder", "stats+"), "--encoder"),
    (("--encoder", "stats", "--by-policy", "--head", "tabpfn"), "--head"),
])
def test_bad_model_options_fail_before_any_work(tmp_path, ctx, q, args, needle):
    one_line_error(*_predict(tmp_path, ctx, q, *args), needle)
    code, text = run_cli("fit", "--context", ctx, "--save", tmp_path / "m", *[a for a in args if a != "--by-policy"])
    if "--by-policy" not in args:
        one_line_error(code, text, needle)
        assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("line, needle", [
    ('{"prompt": "x", "v": ' + "9" * 5000 + "}", "4,300 digits"),
    ('{"prompt": "x", "v": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
])
def test_jsonl_rows_python_cannot_hold(tmp_path, ctx, line, needle):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(line + "\n")
    one_line_error(*_predict(tmp_path, ctx, bad, "--encoder", "stats"), "bad.jsonl, line 1", needle)
    hist = tmp_path / "badh.jsonl"
    hist.write_text(json.dumps(HISTORY[0]) + "\n" + line.replace('"x"', '"y", "successes": 1, "attempts": 1') + "\n")
    one_line_error(*_predict(tmp_path, hist, ctx, "--encoder", "stats"), "badh.jsonl, line 2")


def test_a_long_csv_prompt_is_read(tmp_path, ctx):
    pool = tmp_path / "q.csv"
    with pool.open("w", newline="") as fh:
        csv.writer(fh).writerows([["prompt"], ["x" * 200_000]])
    code, text = _predict(tmp_path, ctx, pool, "--encoder", "stats")
    assert code == 0, text
    assert len(json.loads((tmp_path / "out.jsonl").read_text())["prompt"]) == 200_000


@pytest.mark.parametrize("value", ["Infinity", "[1, -Infinity]", '{"a": NaN}', "[1e999]"])
def test_a_non_finite_query_field_is_refused_before_the_fit(tmp_path, ctx, value):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "v": ' + value + "}\n")
    one_line_error(*_predict(tmp_path, ctx, bad, "--encoder", "stats"), "bad.jsonl, line 1", "'v'", "finite")


@pytest.mark.parametrize("column", [
    pa.array([datetime.datetime(2020, 1, 1)] * 3),
    pa.array([decimal.Decimal("1.5")] * 3, pa.decimal128(5, 2)),
    pa.array([b"\xff\x00"] * 3, pa.binary()),
])
def test_parquet_query_columns_json_cannot_hold_are_refused_before_the_fit(tmp_path, ctx, column):
    pool = tmp_path / "q.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b", "c"], "odd": column}), pool)
    one_line_error(*_predict(tmp_path, ctx, pool, "--encoder", "stats"), "q.parquet, line 1", "'odd'")
    assert "context:" not in _predict(tmp_path, ctx, pool, "--encoder", "stats")[1]  # nothing was fitted


@pytest.mark.parametrize("limit", ["0", "-5"])
def test_eval_refuses_a_limit_below_one(tmp_path, limit):
    code, text = run_cli("eval", "--limit", limit, "--out", tmp_path / "ev")
    assert code == 2 and "--limit" in text and "Traceback" not in text
    assert not (tmp_path / "ev").exists()


def _model(tmp_path, ctx):
    code, text = run_cli("fit", "--context", ctx, "--save", tmp_path / "m", "--encoder", "stats")
    assert code == 0, text
    return tmp_path / "m"


def test_score_keep_nested_300_deep(tmp_path, ctx, q):
    model = _model(tmp_path, ctx)
    keep = "(" * 300 + "p_success > 0.1" + ")" * 300
    one_line_error(*run_cli("score", "--model", model, "--input", q, "--out", tmp_path / "o", "--keep", keep,
                          "--no-progress"), "--keep")


def test_score_a_damaged_model_with_workers(tmp_path, ctx, q):
    model = _model(tmp_path, ctx)
    state = model / "state.pkl"
    state.write_bytes(state.read_bytes()[:-50])
    one_line_error(*run_cli("score", "--model", model, "--input", q, "--out", tmp_path / "o", "--workers", "2",
                          "--no-progress"), "state.pkl")
    manifest = json.loads((model / "manifest.json").read_text())
    del manifest["encoder"]
    (model / "manifest.json").write_text(json.dumps(manifest))
    one_line_error(*run_cli("score", "--model", model, "--input", q, "--out", tmp_path / "o", "--workers", "2",
                          "--no-progress"), "manifest.json", "encoder")


def test_score_jsonl_output_never_holds_a_bare_nan(tmp_path, ctx):
    model = _model(tmp_path, ctx)
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"prompt": "a", "v": NaN, "w": [Infinity, 1]}\n{"prompt": "b", "v": 2}\n')
    code, text = run_cli("score", "--model", model, "--input", pool, "--out", tmp_path / "o", "--format", "jsonl",
                      "--no-progress", "--workers", "1")
    assert code == 0, text
    lines = [ln for p in sorted((tmp_path / "o").glob("part-*.jsonl")) for ln in p.read_text().splitlines()]
    rows = [json.loads(ln, parse_constant=lambda c: pytest.fail(f"bare {c} in the output")) for ln in lines]
    assert rows[0]["v"] is None and rows[0]["w"] == [None, 1] and rows[1]["v"] == 2


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_history_above_the_row_limit_is_refused_before_any_work(tmp_path, q, suffix):
    """A 1M-row history once ran > 7 min to 12 GB with nothing shown; above the limit it is one line, at once."""
    rows = HISTORY * 3
    path = tmp_path / f"h{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, rows)
    elif suffix == ".csv":
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    line = one_line_error(*run_cli("fit", "--context", path, "--save", tmp_path / "m", "--encoder", "stats",
                                 "--max-history-rows", "50"), "72 rows", "--max-history-rows")
    assert "context:" not in line and not (tmp_path / "m").exists()
    one_line_error(*_predict(tmp_path, path, q, "--encoder", "stats", "--max-history-rows", "50"), "72 rows")
    code, text = _predict(tmp_path, path, q, "--encoder", "stats", "--max-history-rows", "0")
    assert code == 0, text


def test_by_policy_gp_head_on_a_policy_with_one_prompt(tmp_path, q):
    """The GP head started its length-scale at the median of no distances (NaN) and sklearn raised."""
    hist = write_jsonl(tmp_path / "h.jsonl", [{"prompt": "same", "successes": i % 2, "attempts": 1,
                                          "policy": "ab"[i % 2]} for i in range(2)])
    code, text = _predict(tmp_path, hist, q, "--encoder", "stats", "--by-policy", "--head", "gp")
    assert code == 0, text
    row = json.loads((tmp_path / "out.jsonl").read_text())
    assert set(row["p_success"]) == {"a", "b"} and all(0.05 <= v <= 0.95 for v in row["p_success"].values())


def test_score_parquet_output_of_an_empty_object_field(tmp_path, ctx):
    """Found by the fuzzer: a JSONL field holding {} became a child-less struct Parquet cannot write."""
    model = _model(tmp_path, ctx)
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"prompt": "what is 2 + 2?", "meta": {}}])
    one_line_error(*run_cli("score", "--model", model, "--input", pool, "--out", tmp_path / "o", "--no-progress",
                          "--workers", "1"), "pool.jsonl, line 1", "--format jsonl")
    code, text = run_cli("score", "--model", model, "--input", pool, "--out", tmp_path / "o2", "--no-progress",
                      "--workers", "1", "--format", "jsonl")
    assert code == 0, text
