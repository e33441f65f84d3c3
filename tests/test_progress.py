"""Progress of long commands: the plain line when piped, the ETA from the first second, the eval's plan."""

from __future__ import annotations

import io
import time

import numpy as np

from preroll.cli.progress import WorkProgress


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_piped_progress_writes_a_plain_line_every_interval():
    clock, out = FakeClock(), io.StringIO()
    with WorkProgress("job", 100.0, stage="loading", stream=out, interval=10.0, clock=clock) as p:
        first = out.getvalue().splitlines()
        assert first == ["job:   0% loading, 0:00 elapsed, about 1:40 left"]  # an ETA before any progress
        clock.now += 5
        assert not p.tick()                          # not yet 10 s since the last line
        p.advance(20, "embedding prompts 640/2722")
        clock.now += 5
        assert p.tick()
        clock.now += 3
        assert not p.tick()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "\x1b" not in out.getvalue()   # plain text, no terminal codes
    assert lines[1].startswith("job:  20% embedding prompts 640/2722, 0:10 elapsed, about ")
    assert lines[-1] == "job: done in 0:13"


def test_eta_starts_at_the_plan_and_follows_the_observed_pace():
    clock = FakeClock()
    p = WorkProgress("job", 100.0, stream=io.StringIO(), clock=clock, tty=False)
    assert p.remaining() == 100.0                   # the prior pace: one second per unit
    clock.now += 30.0
    assert p.remaining() == 70.0                    # counts down while the first step runs
    clock.now += 120.0
    assert p.remaining() == 10.0                    # an overrunning step holds a tenth, never "0:00 left"
    p.advance(50)                                    # 50 units took 150 s: three times slower than planned
    slow = p.remaining()
    assert 100.0 < slow <= 150.0                    # moved toward 3 s/unit, the prior still weighing a little
    p.plan(200.0)                                    # a larger plan: more left
    assert p.remaining() > slow


def test_the_ticker_thread_writes_without_being_called():
    out = io.StringIO()
    with WorkProgress("job", 10.0, stream=out, interval=0.05, tty=False):
        deadline = time.monotonic() + 60.0  # returns as soon as a line is there
        while len(out.getvalue().splitlines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert len(out.getvalue().splitlines()) >= 3    # start, at least one periodic line, done


class Recorder:
    def __init__(self):
        self.total, self.done, self.stages = None, 0.0, []

    def plan(self, total):
        self.total = total

    def advance(self, units, stage=None):
        self.done += units
        if stage:
            self.stages.append(stage)


def test_quick_eval_on_a_tiny_real_subset_plans_its_work(dapo):
    from preroll.bench.value import run_eval

    from conftest import HashingEncoder

    rec = Recorder()
    report = run_eval(dapo, encoder=HashingEncoder(64), n_splits=2, limit=24, latest_only=True, heldout=False,
                      progress=rec, threads=1, log=lambda m: None)
    assert [(r["policy"], r["step"], r["cv"]["n"]) for r in report["rows"]] == [
        ("DeepSeek-R1-Distill-Qwen-1.5B", 256, 24), ("Qwen3-4B-Instruct", 256, 24)]
    assert all(r["heldout"] is None for r in report["rows"]) and report["mean_heldout_auc"] is None
    assert np.isfinite(report["mean_cv"]["brier"])
    assert rec.total is not None and np.isclose(rec.done, rec.total)   # the plan covers exactly the work done
    assert "fitting the text views" in rec.stages and any("fold 2/2" in s for s in rec.stages)


def test_full_eval_plan_covers_every_step_and_the_held_out_fits(dapo):
    from preroll.bench.value import run_eval

    from conftest import HashingEncoder

    rec = Recorder()
    report = run_eval(dapo, encoder=HashingEncoder(64), n_splits=2, limit=16, latest_only=False, heldout=True,
                      progress=rec, threads=1, log=lambda m: None)
    assert len(report["rows"]) == 6 and all(r["heldout"]["n"] == 32 for r in report["rows"])
    assert np.isclose(rec.done, rec.total)
    assert sum("whole history" in s for s in rec.stages) == 2
