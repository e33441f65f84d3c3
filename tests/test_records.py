"""Record schema and loaders: every bad row is refused with file, line and field."""

import json

import numpy as np
import pytest

from preroll.data import RecordError, load_queries, load_records, load_v0, make_outcome
from preroll.data.paths import dapo_dir


def write(tmp_path, name, text, mode="w"):
    p = tmp_path / name
    if mode == "wb":
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def test_three_outcome_shapes_normalise():
    assert make_outcome({"prompt": "a", "successes": 7, "attempts": 10}).success_rate == 0.7
    r = make_outcome({"prompt": "a", "success_rate": 0.25})
    assert (r.successes, r.attempts) == (0.25, 1.0)
    r = make_outcome({"prompt": "a", "reward": 0.4, "attempts": 10}, reward_range=(-1, 1))
    assert (r.successes, r.attempts) == (7.0, 10.0)


@pytest.mark.parametrize("line,field,needle", [
    ('{"prompt": "x", "success_rate": NaN}', "success_rate", "finite"),
    ('{"prompt": "x", "success_rate": 1.5}', "success_rate", "[0, 1]"),
    ('{"prompt": "x", "successes": 11, "attempts": 10}', "successes", "> 10 attempts"),
    ('{"prompt": "  ", "success_rate": 0.5}', "prompt", "empty"),
    ('{"prompt": "x", "sucesses": 1, "attempts": 2}', "sucesses", "unknown field"),
    ('{"success_rate": 0.5}', "prompt", "missing"),
    ('{"prompt": "x", "reward": 0.5}', "reward", "reward range"),
])
def test_jsonl_errors_name_file_line_field(tmp_path, line, field, needle):
    p = write(tmp_path, "h.jsonl", '{"prompt": "ok", "success_rate": 0.5}\n' + line + "\n")
    with pytest.raises(RecordError) as e:
        load_records(p)
    assert e.value.line == 2 and e.value.field == field and e.value.path == str(p)
    assert needle in str(e.value) and "line 2" in str(e.value)


def test_malformed_json_and_non_utf8(tmp_path):
    p = write(tmp_path, "bad.jsonl", '{"prompt": "ok", "success_rate": 0.5}\n{"prompt": \n')
    with pytest.raises(RecordError, match="line 2.*malformed JSON"):
        load_records(p)
    p = write(tmp_path, "latin.jsonl", b'{"prompt": "ok", "success_rate": 0.5}\n{"prompt": "caf\xe9"}\n', mode="wb")
    with pytest.raises(RecordError, match="line 2.*UTF-8"):
        load_records(p)


def test_csv_and_parquet_agree_with_jsonl(tmp_path):
    rows = [{"prompt": "p1", "successes": 3, "attempts": 4, "policy": "a", "step": 5},
            {"prompt": "p2", "successes": 0, "attempts": 4, "policy": "a", "step": 5}]
    j = write(tmp_path, "h.jsonl", "\n".join(json.dumps(r) for r in rows))
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(tmp_path / "h.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "h.parquet")
    ref = load_records(j)
    assert load_records(tmp_path / "h.csv") == ref == load_records(tmp_path / "h.parquet")


def test_csv_error_names_row(tmp_path):
    p = write(tmp_path, "h.csv", "prompt,successes,attempts\na,1,2\nb,x,2\n")
    with pytest.raises(RecordError) as e:
        load_records(p)
    assert (e.value.line, e.value.field) == (3, "successes")


def test_queries_pass_through_and_require_prompt(tmp_path):
    p = write(tmp_path, "q.jsonl", '{"prompt": "a", "id": 7, "meta": {"k": 1}}\n')
    assert load_queries(p) == [{"prompt": "a", "id": 7, "meta": {"k": 1}}]
    p = write(tmp_path, "q2.jsonl", '{"prompt": "a"}\n{"id": 3}\n')
    with pytest.raises(RecordError, match="line 2.*'prompt'"):
        load_queries(p)


def test_v0_importer_on_the_bundled_data():
    recs = load_v0(dapo_dir() / "queries.jsonl")
    assert len(recs) == 192
    raw = [json.loads(x) for x in (dapo_dir() / "queries.jsonl").read_text().splitlines()]
    rates = np.array([r.success_rate for r in recs])
    assert np.allclose(rates, [(r["score"] + 1) / 2 for r in raw], atol=1e-9)
    assert all(r.attempts == 10 and r.policy and r.step in (16, 64, 256) for r in recs)
