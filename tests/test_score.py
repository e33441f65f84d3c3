"""`preroll score`: streaming a pool through a saved model, resuming after a kill, filters, the report."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from preroll.data import load_v0
from preroll.data.errors import RecordError
from preroll.data.paths import dapo_dir
from preroll.model.persist import save_model
from preroll.model.value_model import ValueModel
from preroll.score import KeepExpressionError, OutputDirError, ScoreOptions, parse_keep, score_dataset
from preroll.score.state import MANIFEST


REPO = Path(__file__).resolve().parents[1]
ODD = ["emoji 🧮 and ZWJ 👩‍👩‍👧", "RTL: احسب ٢+٢", "combining e\u0301 and NUL\u0000 byte",
       "line\u2028separator", "求 $x^2=4$ 的解。", "tab\tand \"quotes\" and \\backslash"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A model on the fast fitted stats view, on two snapshots of real history."""
    recs = [r for r in load_v0(dapo_dir() / "context.jsonl") if r.policy == "Qwen3-4B-Instruct"]
    vm = ValueModel(encoder="stats", cache_dir=False).fit(recs[:200] + recs[512:712])
    return save_model(vm, tmp_path_factory.mktemp("model") / "m")


@pytest.fixture(scope="module")
def pool_rows():
    prompts = list(json.loads((dapo_dir() / "prompts.json").read_text()).items())[:600]
    rows = [{"id": key, "prompt": text, "source": ["dapo", "aime", "amc"][i % 3], "level": i % 5,
             "meta": {"tags": ["a", "b"], "note": None}} for i, (key, text) in enumerate(prompts)]
    for i, text in enumerate(ODD):
        rows[i * 50]["prompt"] = text + " " + rows[i * 50]["prompt"]
        rows[i * 50]["ünïcødé key ✓"] = text
    return rows


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def read_jsonl_dir(out):
    rows = []
    for part in sorted(out.glob("part-*.jsonl")):
        rows += [json.loads(line) for line in part.read_text(encoding="utf-8").split("\n") if line]
    return rows


def read_parquet_dir(out):
    return pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("part-*.parquet"))], promote_options="default")


def test_jsonl_in_jsonl_out_keeps_every_field(model_dir, pool_rows, tmp_path):
    src = write_jsonl(tmp_path / "pool.jsonl", pool_rows)
    summary = score_dataset(model_dir, src, tmp_path / "out", ScoreOptions(out_format="jsonl", chunk_rows=128))
    out = read_jsonl_dir(tmp_path / "out")
    assert summary.rows == len(pool_rows) and summary.parts == 5
    assert [{k: v for k, v in r.items() if k not in ("p_success", "p_std", "alpha", "beta")} for r in out] == pool_rows
    p = np.array([r["p_success"] for r in out])
    assert np.all((p > 0) & (p < 1)) and p.std() > 0.01  # real, varied predictions
    a, b = np.array([r["alpha"] for r in out]), np.array([r["beta"] for r in out])
    np.testing.assert_allclose(p, a / (a + b))
    # No raw U+2028 in the output: a reader splitting on str.splitlines() sees one row per line.
    text = "".join(p.read_text(encoding="utf-8") for p in sorted((tmp_path / "out").glob("part-*.jsonl")))
    assert len(text.splitlines()) == len(pool_rows)


def test_predictions_match_the_model_and_the_parquet_path(model_dir, pool_rows, tmp_path):
    from preroll.model.persist import load_model

    jsonl = write_jsonl(tmp_path / "pool.jsonl", pool_rows)
    parquet = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(pool_rows), parquet)
    score_dataset(model_dir, jsonl, tmp_path / "a", ScoreOptions(chunk_rows=200))
    score_dataset(model_dir, parquet, tmp_path / "b", ScoreOptions(chunk_rows=97))
    a, b = read_parquet_dir(tmp_path / "a"), read_parquet_dir(tmp_path / "b")
    assert a.column("id").to_pylist() == b.column("id").to_pylist() == [r["id"] for r in pool_rows]
    assert b.column("ünïcødé key ✓").to_pylist() == [r.get("ünïcødé key ✓") for r in pool_rows]
    expected = load_model(model_dir).predict([r["prompt"] for r in pool_rows])
    np.testing.assert_array_equal(a.column("alpha").to_numpy(), expected.alpha)
    np.testing.assert_array_equal(b.column("beta").to_numpy(), expected.beta)


def test_sharded_directory_with_keep_and_report(model_dir, pool_rows, tmp_path):
    src = tmp_path / "shards"
    write_jsonl(src / "a" / "part-0.jsonl", pool_rows[:250])
    pq.write_table(pa.Table.from_pylist(pool_rows[250:]), src / "b.parquet")
    write_jsonl(src / "_ignored" / "x.jsonl", [{"prompt": "never read"}])
    keep = "0.4 <= p_success <= 0.6 and p_std < 0.5"
    summary = score_dataset(model_dir, src, tmp_path / "out", ScoreOptions(keep=keep, chunk_rows=100))
    table = read_parquet_dir(tmp_path / "out")
    p = table.column("p_success").to_numpy()
    assert np.all((p >= 0.4) & (p <= 0.6))
    report = json.loads((tmp_path / "out" / "_report" / "report.json").read_text())
    assert report["rows"] == len(pool_rows) and report["kept"] == table.num_rows == summary.report["kept"]
    assert 0 < report["kept"] < len(pool_rows)
    assert report["inputs"] == ["a/part-0.jsonl", "b.parquet"]
    by_source = report["by_source"]
    assert set(by_source) == {"dapo", "aime", "amc"}
    assert sum(v["kept"] for v in by_source.values()) == report["kept"]
    assert sum(v["kept"] + v["dropped"] for v in by_source.values()) == len(pool_rows)
    assert sum(report["histogram"]["all"]) == len(pool_rows)
    assert (tmp_path / "out" / "_report" / "histogram.png").stat().st_size > 5_000


def test_existing_output_needs_resume_or_force_and_never_overlaps_input(model_dir, pool_rows, tmp_path):
    src = write_jsonl(tmp_path / "data" / "pool.jsonl", pool_rows[:100])
    out = tmp_path / "out"
    score_dataset(model_dir, src, out, ScoreOptions(chunk_rows=40))
    with pytest.raises(OutputDirError, match="--resume"):
        score_dataset(model_dir, src, out, ScoreOptions(chunk_rows=40))
    again = score_dataset(model_dir, src, out, ScoreOptions(chunk_rows=40), resume=True)
    assert again.rows == 0 and again.parts_skipped == 3
    with pytest.raises(OutputDirError, match="differs in keep"):
        score_dataset(model_dir, src, out, ScoreOptions(chunk_rows=40, keep="p_success > 0.5"), resume=True)
    forced = score_dataset(model_dir, src, out, ScoreOptions(chunk_rows=40, keep="p_success > 0.5"), force=True)
    assert forced.rows == 100
    with pytest.raises(OutputDirError, match="overlaps the input"):
        score_dataset(model_dir, tmp_path / "data", tmp_path / "data" / "scored")
    with pytest.raises(OutputDirError, match="overlaps the input"):
        score_dataset(model_dir, src, src)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep-me.txt").write_text("x")
    with pytest.raises(OutputDirError, match="never deleted"):
        score_dataset(model_dir, src, foreign, force=True)
    assert (foreign / "keep-me.txt").exists()


def test_bad_rows_give_one_line_errors_naming_file_and_line(model_dir, tmp_path):
    src = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "fine"}, {"prompt": "  "}])
    with pytest.raises(RecordError, match=r"bad.jsonl, line 2, field 'prompt': prompt is empty"):
        score_dataset(model_dir, src, tmp_path / "o1")
    src = tmp_path / "surrogate.jsonl"
    src.write_text('{"prompt": "ok"}\n{"prompt": "half \\ud800 pair"}\n', encoding="utf-8")
    with pytest.raises(RecordError, match=r"line 2, field 'prompt': holds an unpaired surrogate"):
        score_dataset(model_dir, src, tmp_path / "o2")
    src = write_jsonl(tmp_path / "taken.jsonl", [{"prompt": "x", "p_success": 0.3}])
    with pytest.raises(RecordError, match="already has a 'p_success' column"):
        score_dataset(model_dir, src, tmp_path / "o3")


def test_cli_errors_are_one_line(model_dir, tmp_path):
    from typer.testing import CliRunner

    from preroll.cli.main import app

    src = write_jsonl(tmp_path / "pool.jsonl", [{"prompt": "a"}, {"prompt": "b"}])
    for args, needle in [
        (["--keep", "0.1 <= p_sucess"], "unknown column 'p_sucess'"),
        (["--keep", "__import__('os')"], "unexpected character"),
        (["--format", "csv"], "--format must be one of"),
        (["--model", str(tmp_path)], "not a preroll model directory"),
    ]:
        argv = ["score", "--model", str(model_dir), "--input", str(src), "--out", str(tmp_path / "o"),
                "--no-progress", *args]
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and needle in lines[0], result.stderr
        assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("expression, rows", [
    ("0.1 <= p_success <= 0.9", [True, True, False, False]),
    ("p_success > 0.5 or p_std >= 0.3", [False, True, True, True]),
    ("not (p_success < 0.5) and alpha != 1", [False, True, True, False]),
    ("(p_success >= .2) AND beta < 1e1", [True, True, False, False]),
])
def test_keep_grammar(expression, rows):
    cols = {"p_success": np.array([0.2, 0.6, 0.95, 0.05]), "p_std": np.array([0.1, 0.1, 0.1, 0.3]),
            "alpha": np.array([1.0, 2.0, 3.0, 1.0]), "beta": np.array([4.0, 1.0, 40.0, 1.0])}
    assert parse_keep(expression).mask(cols).tolist() == rows


@pytest.mark.parametrize("expression, message", [
    ("", "empty expression"),
    ("p_success", "expected a comparison"),
    ("p_success <= ", "expected a number or a column"),
    ("0.1 < 0.2", "needs a column"),
    ("p_succes > 0.1", "unknown column 'p_succes'"),
    ("p_success > 0.1; import os", "unexpected character ';'"),
    ("(p_success > 0.1", "expected ')'"),
    ("p_success > 0.1 0.2", "unexpected '0.2'"),
    ("prompt.__class__ > 1", "unexpected character '.'"),
    ("prompt > 1", "unknown column 'prompt'"),
])
def test_keep_grammar_refuses_bad_expressions(expression, message):
    with pytest.raises(KeepExpressionError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        parse_keep(expression)
    assert "\n" not in str(info.value) and "at character" in str(info.value)


def test_keep_bounds_for_the_plot():
    assert parse_keep("0.1 <= p_success <= 0.9").bounds() == (0.1, 0.9)
    assert parse_keep("p_success > 0.2 and 0.7 >= p_success").bounds() == (0.2, 0.7)
    assert parse_keep("p_success > 0.2 or p_success < 0.1").bounds() is None


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child nobody has reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_resume_after_kill_gives_identical_output(model_dir, pool_rows, tmp_path):
    """Kill a scoring process mid-run (SIGKILL), resume it, compare with an uninterrupted run byte for byte."""
    src = write_jsonl(tmp_path / "pool.jsonl", pool_rows[:240])
    options = dict(keep="p_success >= 0.3", out_format="jsonl", chunk_rows=4)
    reference = tmp_path / "reference"
    score_dataset(model_dir, src, reference, ScoreOptions(**options))

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "preroll.cli.main", "score", "--model", str(model_dir), "--input", str(src),
           "--out", str(out), "--keep", options["keep"], "--format", "jsonl", "--chunk-rows", "4", "--no-progress",
           "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    done = 0
    workers: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            done = len(json.loads((out / MANIFEST).read_text())["parts"])
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            done = 0
        if done >= 5:
            workers = _children(proc.pid)
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    manifest = json.loads((out / MANIFEST).read_text())
    assert 5 <= len(manifest["parts"]) < 60 and not manifest["complete"]

    resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    ref_parts = sorted(p.name for p in reference.glob("part-*"))
    assert sorted(p.name for p in out.glob("part-*")) == ref_parts and len(ref_parts) == 60
    for name in ref_parts:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert not list(out.glob(".*.tmp"))
    ref_report = json.loads((reference / "_report" / "report.json").read_text())
    out_report = json.loads((out / "_report" / "report.json").read_text())
    assert out_report == ref_report
    # The killed run's worker processes notice their parent is gone (they poll every 0.5 s) and exit.
    alive = workers
    deadline = time.monotonic() + 20
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in workers if _running(pid)]
    assert workers and not alive, "worker processes of the killed run are still alive"


def test_worker_processes_write_the_same_output(model_dir, pool_rows, tmp_path):
    """Two scoring processes: the same parts byte for byte, the same report, whatever finishes first."""
    src = write_jsonl(tmp_path / "pool.jsonl", pool_rows[:300])
    options = ScoreOptions(keep="p_success >= 0.3", out_format="jsonl", chunk_rows=32)
    one = score_dataset(model_dir, src, tmp_path / "one", options, workers=1)
    two = score_dataset(model_dir, src, tmp_path / "two", options, workers=2)
    parts = sorted(p.name for p in (tmp_path / "one").glob("part-*"))
    assert len(parts) == 10 and sorted(p.name for p in (tmp_path / "two").glob("part-*")) == parts
    for name in parts:
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    assert two.report == one.report and two.rows == one.rows == 300


def test_ray_backend_matches_local(model_dir, pool_rows, tmp_path):
    pytest.importorskip("ray.data")
    src = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(pool_rows[:300]), src)
    options = ScoreOptions(keep="p_success >= 0.3", batch_rows=64)
    local = score_dataset(model_dir, src, tmp_path / "local", options)
    remote = score_dataset(model_dir, src, tmp_path / "ray", options, ray=True, ray_concurrency=2)
    a = read_parquet_dir(tmp_path / "local").sort_by("id")
    b = read_parquet_dir(tmp_path / "ray").sort_by("id")
    assert a.num_rows == b.num_rows == local.report["kept"] == remote.report["kept"]
    assert a.column("id").to_pylist() == b.column("id").to_pylist()
    np.testing.assert_array_equal(a.column("p_success").to_numpy(), b.column("p_success").to_numpy())
    assert remote.report["by_source"] == local.report["by_source"]
    again = score_dataset(model_dir, src, tmp_path / "ray", options, ray=True, ray_concurrency=2, resume=True)
    assert again.rows == 0
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(2):
        pq.write_table(pa.Table.from_pylist(pool_rows[i * 150:(i + 1) * 150]), shards / f"shard-{i}.parquet")
    sharded = score_dataset(model_dir, shards, tmp_path / "ray-shards", options, ray=True, ray_concurrency=2)
    c = read_parquet_dir(tmp_path / "ray-shards").sort_by("id")
    assert sharded.report["kept"] == local.report["kept"]
    np.testing.assert_array_equal(c.column("p_success").to_numpy(), a.column("p_success").to_numpy())


def test_chunk_size_must_be_positive_in_the_library_call_too(tmp_path):
    from preroll.errors import InputError
    from preroll.score.sources import discover_inputs, iter_chunks

    src = tmp_path / "pool.jsonl"
    src.write_text('{"prompt": "a"}\n', encoding="utf-8")
    [f] = discover_inputs(src)
    with pytest.raises(InputError, match="chunk_rows must be positive"):
        iter_chunks(0, f, 0)
    assert [len(c) for c in iter_chunks(0, f, 10)] == [1]
