"""``preroll bench schedule --context FILE``: the simulator on a user's own history (records schema)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from preroll.bench._schedule_data import load_snapshots
from preroll.cli.main import app

SMALL = ["--batch-prompts", "8", "--pool-factor", "4", "--budget", "4", "--replicates", "2",
         "--predictors", "oracle,history,constant", "--rules", "greedy,variance"]


def user_history(path, dapo, *, per_snapshot=40):
    """Two policies at two steps, cut from the bundled histories and written as a user would: JSONL rows of
    prompt, successes, attempts, policy and step (no ids; renamed policies). Half of each step-64 snapshot's
    prompts were also rolled out at step 16."""
    snaps = {(s.policy, s.step): s.records for s in load_snapshots(dapo / "context.jsonl")}
    half = per_snapshot // 2
    rows = []
    for policy in sorted({p for p, _ in snaps}):
        name = "mine-a" if policy.startswith("Qwen3") else "mine-b"
        early, late = snaps[(policy, 16)], snaps[(policy, 64)]
        early_texts = {r.prompt for r in early}
        both = [r for r in late if r.prompt in early_texts][:half]
        picked = {r.prompt for r in both}
        late_rows = both + [r for r in late if r.prompt not in early_texts][:per_snapshot - half]
        early_rows = [r for r in early if r.prompt in picked] + [r for r in early if r.prompt not in picked][
            :per_snapshot - half]
        for step, records in ((16, early_rows), (64, late_rows)):
            rows += [{"prompt": r.prompt, "successes": r.successes, "attempts": r.attempts, "policy": name,
                      "step": step} for r in records]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_users_history_is_simulated_per_policy_and_step(tmp_path, dapo):
    history = user_history(tmp_path / "history.jsonl", dapo)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["bench", "schedule", "--context", str(history), *SMALL, "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["context"] == str(history)
    assert {r["snapshot"] for r in result["allocation"]} == {"mine-a@16", "mine-a@64", "mine-b@16", "mine-b@64"}
    # the history predictor reads each policy's earlier step, matched by prompt text (the file has no ids)
    notes = " ".join(result["notes"])
    assert "history mine-a@64: 20/40 prompts seen at the earlier step" in notes
    assert "history mine-b@64: 20/40 prompts seen at the earlier step" in notes
    assert "history mine-a@16: no earlier step, not evaluated" in result["notes"]
    assert any(r["predictor"] == "history" for r in result["mse"])


def test_quick_on_a_users_history_takes_each_policys_latest_step(tmp_path, dapo):
    history = user_history(tmp_path / "history.jsonl", dapo)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["bench", "schedule", "--context", str(history), "--quick", *SMALL,
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "results.json").read_text())
    assert {r["snapshot"] for r in result["allocation"]} == {"mine-a@64", "mine-b@64"}


def test_a_pool_larger_than_a_snapshot_is_one_line(tmp_path, dapo):
    history = user_history(tmp_path / "history.jsonl", dapo, per_snapshot=20)
    res = CliRunner().invoke(app, ["bench", "schedule", "--context", str(history), "--predictors", "oracle",
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "has 20 prompts, fewer than the pool of 256" in " ".join(res.output.split())


def test_a_bad_row_in_a_users_history_names_file_line_and_field(tmp_path, dapo):
    history = user_history(tmp_path / "history.jsonl", dapo, per_snapshot=20)
    lines = history.read_text().splitlines()
    row = json.loads(lines[6])
    row["successes"] = 99
    lines[6] = json.dumps(row)
    history.write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(app, ["bench", "schedule", "--context", str(history), *SMALL,
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    message = " ".join(res.output.split())
    assert "history.jsonl" in message and "line 7" in message and "successes" in message
