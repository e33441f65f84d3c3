"""Outputs never destroy what preroll did not write: ``fit --force``, ``score --force`` and its manifest.

Each case once deleted a user's files (a folder emptied by ``fit --save u --force``; files outside
``--out`` named by a crafted ``_manifest.json``) or left a run that blocked its own correction.
"""

from __future__ import annotations

import csv
import json
import os

import pytest
from typer.testing import CliRunner

from cli_helpers import one_line_error, run_cli, write_jsonl
from preroll.cli.main import app
from preroll.model.persist import MANIFEST as MODEL_MANIFEST
from preroll.score.state import MANIFEST

runner = CliRunner()


def _history(n: int = 24, policies=("a",)) -> list[dict]:
    return [{"prompt": f"problem {i}: compute {i} * {i % 7} plus {i % 3}", "successes": (i * 7) % 5,
             "attempts": 4 + (i % 2), "policy": pol, "step": 1}
            for pol in policies for i in range(n)]








@pytest.fixture
def ctx(tmp_path):
    return write_jsonl(tmp_path / "h.jsonl", _history())


@pytest.fixture
def model(tmp_path, ctx):
    code, text = run_cli("fit", "--context", ctx, "--save", tmp_path / "model", "--encoder", "stats")
    assert code == 0, text
    return tmp_path / "model"


@pytest.fixture
def pool(tmp_path):
    return write_jsonl(tmp_path / "pool.jsonl", [{"prompt": f"what is {i} + {i}?", "k": i} for i in range(30)])


# -- fit --force --------------------------------------------------------------------------------------

def test_fit_force_never_empties_a_users_folder(tmp_path, ctx):
    user = tmp_path / "u"
    (user / "sub").mkdir(parents=True)
    (user / "notes.txt").write_text("mine")
    (user / "sub" / "data.csv").write_text("a,b\n")
    code, text = run_cli("fit", "--context", ctx, "--save", user, "--encoder", "stats", "--force")
    one_line_error(code, text, "not a preroll model folder")
    assert (user / "notes.txt").read_text() == "mine" and (user / "sub" / "data.csv").exists()


def test_fit_force_replaces_only_the_models_own_files(tmp_path, ctx, model):
    (model / "README.md").write_text("my notes on this model")
    (model / "extra").mkdir()
    (model / "extra" / "x.bin").write_bytes(b"\0\1")
    before = json.loads((model / MODEL_MANIFEST).read_text())["model_id"]
    other = write_jsonl(tmp_path / "h2.jsonl", _history(30))
    code, text = run_cli("fit", "--context", other, "--save", model, "--encoder", "stats", "--force")
    assert code == 0, text
    assert json.loads((model / MODEL_MANIFEST).read_text())["model_id"] != before
    assert (model / "README.md").read_text() == "my notes on this model" and (model / "extra" / "x.bin").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model.")]  # no staging left behind


def test_fit_force_refuses_a_file_target(tmp_path, ctx):
    target = tmp_path / "keep.txt"
    target.write_text("mine")
    code, text = run_cli("fit", "--context", ctx, "--save", target, "--encoder", "stats", "--force")
    one_line_error(code, text, "not a folder")
    assert target.read_text() == "mine"


# -- score --force and the manifest -------------------------------------------------------------------

def _scored(model, pool, out):
    code, text = run_cli("score", "--model", model, "--input", pool, "--out", out, "--format", "jsonl",
                      "--no-progress", "--workers", "1")
    assert code == 0, text
    return json.loads((out / MANIFEST).read_text())


@pytest.mark.parametrize("how", ["relative", "absolute", "symlinked-report"])
def test_score_force_never_deletes_outside_the_output(tmp_path, model, pool, how):
    out = tmp_path / "out"
    manifest = _scored(model, pool, out)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "report.json").write_text("precious")
    (elsewhere / "histogram.png").write_text("precious")
    part = next(iter(manifest["parts"]))
    if how == "relative":
        manifest["parts"][part]["file"] = "../victim.txt"
    elif how == "absolute":
        manifest["parts"][part]["file"] = str(victim)
    else:
        for name in ("report.json", "histogram.png"):
            (out / "_report" / name).unlink()
        (out / "_report").rmdir()
        os.symlink(elsewhere, out / "_report")
    (out / MANIFEST).write_text(json.dumps(manifest))
    code = runner.invoke(app, ["score", "--model", str(model), "--input", str(pool), "--out", str(out),
                                     "--format", "jsonl", "--no-progress", "--force", "--workers", "1"]
                               ).exit_code
    assert victim.read_text() == "precious"
    assert (elsewhere / "report.json").read_text() == "precious"
    assert (elsewhere / "histogram.png").read_text() == "precious"
    assert code == 2


@pytest.mark.parametrize("damage", [
    lambda m: m["parts"][next(iter(m["parts"]))].pop("file"),
    lambda m: m["parts"][next(iter(m["parts"]))].update(file=7),
    lambda m: m.update(parts=[1, 2]),
    lambda m: m.update(written=["../../etc/passwd"]),
    lambda m: m.update(version="x"),
])
def test_a_damaged_manifest_is_one_line_and_deletes_nothing(tmp_path, model, pool, damage):
    out = tmp_path / "out"
    manifest = _scored(model, pool, out)
    damage(manifest)
    (out / MANIFEST).write_text(json.dumps(manifest))
    before = sorted(p.name for p in out.rglob("*"))
    for flag in ("--force", "--resume"):
        code, text = run_cli("score", "--model", model, "--input", pool, "--out", out, "--format", "jsonl",
                          "--no-progress", flag, "--workers", "1")
        one_line_error(code, text, "manifest")
    assert sorted(p.name for p in out.rglob("*")) == before


def test_score_force_removes_the_earlier_runs_files_and_keeps_strangers(tmp_path, model, pool):
    out = tmp_path / "out"
    _scored(model, pool, out)
    (out / "part-user-notes.txt").write_text("mine")  # not a name preroll writes or recorded
    code, text = run_cli("score", "--model", model, "--input", pool, "--out", out, "--format", "parquet",
                      "--no-progress", "--force", "--workers", "1")
    assert code == 0, text
    assert not list(out.glob("part-*.jsonl")) and list(out.glob("part-*.parquet"))
    assert (out / "part-user-notes.txt").read_text() == "mine"


def test_a_failed_start_does_not_block_the_corrected_command(tmp_path, pool):
    two = write_jsonl(tmp_path / "two.jsonl", _history(policies=("a", "b")))
    code, text = run_cli("fit", "--context", two, "--save", tmp_path / "m2", "--encoder", "stats")
    assert code == 0, text
    out = tmp_path / "out"
    base = ["score", "--model", tmp_path / "m2", "--input", pool, "--out", out, "--no-progress", "--workers", "1"]
    code, text = run_cli(*base)
    line = one_line_error(code, text, "--policy", "a, b")
    assert "policy=" not in line
    code, text = run_cli(*base, "--policy", "zzz")
    one_line_error(code, text, "--policy", "zzz")
    code, text = run_cli(*base, "--policy", "b")
    assert code == 0, text
    # A start that fails after the output was opened (a bad row in the first chunk) blocks nothing either.
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": ""}])
    out2 = tmp_path / "out2"
    code, text = run_cli("score", "--model", tmp_path / "m2", "--input", bad, "--out", out2, "--no-progress",
                      "--policy", "a", "--workers", "1")
    one_line_error(code, text, "bad.jsonl")
    code, text = run_cli("score", "--model", tmp_path / "m2", "--input", pool, "--out", out2, "--no-progress",
                      "--policy", "b", "--workers", "1")
    assert code == 0, text


def test_predict_names_the_cli_flag_for_a_missing_policy(tmp_path, pool):
    two = write_jsonl(tmp_path / "two.jsonl", _history(policies=("a", "b")))
    code, text = run_cli("predict", "--context", two, "--prompts", pool, "--out", tmp_path / "p.jsonl",
                      "--encoder", "stats")
    line = one_line_error(code, text, "--policy")
    assert "policy=" not in line


def test_score_reads_csv_pools_like_predict(tmp_path, model):
    pool = tmp_path / "pool.csv"
    with pool.open("w", encoding="utf-8-sig", newline="") as fh:  # Excel's "CSV UTF-8": BOM and CRLF
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(["prompt", "source"])
        for i in range(12):
            w.writerow([f"what is {i},{i} + 1?\nsecond line", "csv"])
        w.writerow(["x" * 200_000, "long"])  # beyond the csv module's default field limit
    out = tmp_path / "out"
    code, text = run_cli("score", "--model", model, "--input", pool, "--out", out, "--format", "jsonl",
                      "--no-progress", "--workers", "1")
    assert code == 0, text
    rows = [json.loads(x) for p in sorted(out.glob("part-*.jsonl")) for x in p.read_text().splitlines()]
    assert len(rows) == 13 and rows[0]["prompt"] == "what is 0,0 + 1?\nsecond line" and rows[0]["source"] == "csv"
    assert len(rows[-1]["prompt"]) == 200_000
    semi = tmp_path / "semi.csv"
    semi.write_text("prompt;level\r\nwhat is 1+1;3\r\n", encoding="utf-8")
    code, text = run_cli("score", "--model", model, "--input", semi, "--out", tmp_path / "o2", "--format", "jsonl",
                      "--no-progress", "--workers", "1")
    assert code == 0, text
    rows = [json.loads(x) for p in sorted((tmp_path / "o2").glob("part-*.jsonl")) for x in p.read_text().splitlines()]
    assert rows[0]["prompt"] == "what is 1+1" and rows[0]["level"] == "3"


def test_an_output_is_never_renamed_over_a_device_or_fifo(tmp_path, ctx, pool):
    """``--out /dev/null --force`` (as root) once replaced the device node by a regular file."""
    import stat

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code, text = run_cli("predict", "--context", ctx, "--prompts", pool, "--out", fifo, "--force", "--encoder", "stats")
    one_line_error(code, text, "not a regular file")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
