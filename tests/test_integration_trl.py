"""PrerollGRPOTrainer: real GRPO steps on CPU with a tiny random LM and a local character tokenizer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trl")
torch = pytest.importorskip("torch")
from datasets import Dataset  # noqa: E402
from trl import GRPOConfig  # noqa: E402

from examples.tiny_policy import char_tokenizer, sample_items, tiny_model  # noqa: E402
from preroll.integrations.trl import PrerollGRPOTrainer, PrerollTRLError, PrerollTRLSettings  # noqa: E402
from preroll.online import OnlineSettings  # noqa: E402

G = 4          # num_generations
B = 3          # prompts per generation batch
N = 30         # dataset prompts


def parity_reward(completions, **kwargs):
    """0/1 from the completion's length: varies within a group, so groups carry signal."""
    return [float(len(c) % 2) for c in completions]


class Recorder:
    """A reward function that remembers, per call, which prompts it scored (in global order)."""

    __name__ = "recorder"

    def __init__(self):
        self.calls: list[tuple[list[str], list[float]]] = []

    def __call__(self, prompts, completions, **kwargs):
        rewards = parity_reward(completions)
        self.calls.append((list(prompts), rewards))
        return rewards


def dataset(with_ids: bool = False) -> Dataset:
    items = sample_items(N, np.random.default_rng(0))
    cols = {"prompt": [it.prompt for it in items], "answer": [it.answer for it in items]}
    if with_ids:
        cols["id"] = [f"q{i}" for i in range(N)]
    return Dataset.from_dict(cols)


def config(tmp_path, **kw) -> GRPOConfig:
    base = dict(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", max_steps=4,
                per_device_train_batch_size=B * G, num_generations=G, max_completion_length=5,
                logging_steps=100, save_strategy="no", seed=0, disable_tqdm=True)
    base.update(kw)
    return GRPOConfig(**base)


def trainer(tmp_path, reward_funcs=parity_reward, ds=None, preroll=None, **kw) -> PrerollGRPOTrainer:
    tok = char_tokenizer()
    return PrerollGRPOTrainer(model=tiny_model(tok, hidden=32), reward_funcs=reward_funcs, args=config(tmp_path, **kw),
                              train_dataset=ds if ds is not None else dataset(), processing_class=tok,
                              preroll=preroll)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Four GRPO steps with a recording reward function and an event log of the book's calls."""
    rec = Recorder()
    tr = trainer(tmp_path_factory.mktemp("run"), reward_funcs=rec, ds=dataset(with_ids=True),
                 preroll=OnlineSettings(pool_factor=3))
    events: list[tuple[str, int]] = []
    book = tr.preroll_book
    select, record = book.select, book.record

    def logged_select(pool, n):
        events.append(("select", int(tr.state.global_step)))
        return select(pool, n)

    def logged_record(step, indices, rewards):
        events.append(("record", int(step)))
        return record(step, indices, rewards)

    book.select, book.record = logged_select, logged_record
    tr.train()
    return tr, rec, events


def test_book_records_every_step_for_exactly_the_generated_prompts(trained):
    tr, rec, _ = trained
    prompts = tr.train_dataset["prompt"]
    hist = tr.preroll_book.history()
    assert len(rec.calls) == 4 and sorted(set(hist["step"])) == [0, 1, 2, 3]
    for step, (scored, rewards) in enumerate(rec.calls):
        # what the reward function scored is the book's choice, each prompt num_generations times in a row
        choice = tr.preroll_log[step]
        assert choice.step == step
        assert scored == [prompts[i] for i in np.repeat(choice.indices, G)]
        rows = hist["step"] == step
        assert sorted(hist["index"][rows].tolist()) == sorted(choice.indices.tolist())
        for idx, succ, att in zip(hist["index"][rows], hist["successes"][rows], hist["attempts"][rows]):
            pos = [k for k, p in enumerate(scored) if p == prompts[idx]]
            assert att == G and succ == pytest.approx(sum(rewards[k] for k in pos))
    assert list(hist["id"][:B]) == [f"q{i}" for i in hist["index"][:B]]   # ids from the dataset's id column


def test_each_batch_is_chosen_from_a_pool_of_pool_factor_times_b(trained):
    tr, _, _ = trained
    pools = [c.pool for c in tr.preroll_log]
    for c in tr.preroll_log:
        assert len(c.pool) == 3 * B == len(set(c.pool.tolist()))
        assert len(c.indices) == B and set(c.indices.tolist()) <= set(c.pool.tolist())
    # consecutive pools walk one permutation of the dataset: no candidate repeats within a pass
    first_pass = np.concatenate(pools[:3])
    assert len(set(first_pass.tolist())) == len(first_pass)


def test_choice_for_a_batch_sees_the_rewards_of_the_previous_batch(trained):
    # no dataloader lag: select(k), record(k), select(k+1), record(k+1), ...
    _, _, events = trained
    assert events == [(kind, k) for k in range(4) for kind in ("select", "record")]



@pytest.mark.parametrize("kw, every", [(dict(num_iterations=2), 2),
                                       (dict(steps_per_generation=2, per_device_train_batch_size=B * G // 2), 2),
                                       (dict(gradient_accumulation_steps=2, per_device_train_batch_size=B * G // 2), 1)])
def test_one_choice_per_generation_batch_when_generations_are_reused_or_split(tmp_path, kw, every):
    # TRL reuses a generation for num_iterations steps and splits one over steps_per_generation steps: the book
    # chooses and records once per generation batch, at the step that generated it, with all G rollouts
    rec = Recorder()
    tr = trainer(tmp_path, reward_funcs=rec, **kw)
    tr.train()
    steps = list(range(0, 4, every))
    assert [c.step for c in tr.preroll_log] == steps and len(rec.calls) == len(steps)
    hist = tr.preroll_book.history()
    assert sorted(set(hist["step"].tolist())) == steps and set(hist["attempts"].tolist()) == {G}
    for c, (scored, _) in zip(tr.preroll_log, rec.calls):
        assert scored == [tr.train_dataset["prompt"][i] for i in np.repeat(c.indices, G)]


@pytest.mark.parametrize("selection", ["value", "coverage"])
def test_resume_gives_the_same_next_choices(tmp_path, selection, monkeypatch):
    import preroll.online.book as book_module

    graphs = []     # neighbour graphs built: one for the fresh run, none for the resume (the saved one is loaded)
    build = book_module.neighbour_graph
    monkeypatch.setattr(book_module, "neighbour_graph", lambda *a, **k: graphs.append(1) or build(*a, **k))
    book = OnlineSettings(selection=selection)
    full = trainer(tmp_path / "a", max_steps=3, save_strategy="steps", save_steps=2, preroll=book)
    full.train()
    assert len(graphs) == 1
    ckpt = tmp_path / "a" / "out" / "checkpoint-2"
    assert (ckpt / "preroll_book.npz").exists() and (ckpt / "preroll_pool.json").exists()
    resumed = trainer(tmp_path / "b", max_steps=3, preroll=book)
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert len(graphs) == 1
    np.testing.assert_array_equal(resumed.preroll_book._graph[0], full.preroll_book._graph[0])
    a = {c.step: c for c in full.preroll_log}
    b = {c.step: c for c in resumed.preroll_log}
    assert sorted(b) == [2]
    for step in (2,):
        np.testing.assert_array_equal(a[step].pool, b[step].pool)
        np.testing.assert_array_equal(a[step].indices, b[step].indices)
    # the resumed book continued the saved one: same history as the uninterrupted run
    ha, hb = full.preroll_book.history(), resumed.preroll_book.history()
    np.testing.assert_array_equal(ha["index"], hb["index"])
    np.testing.assert_array_equal(ha["successes"], hb["successes"])


def test_resume_from_a_checkpoint_without_a_book_is_an_error(tmp_path):
    ckpt = tmp_path / "checkpoint-2"
    ckpt.mkdir()
    tr = trainer(tmp_path)
    with pytest.raises(PrerollTRLError, match="preroll_book.npz"):
        tr.preroll_load(ckpt)


def test_dataset_without_prompt_column_is_an_error(tmp_path):
    ds = Dataset.from_dict({"question": ["c1=", "c2=", "c3="]})
    with pytest.raises(PrerollTRLError, match="no 'prompt' column"):
        trainer(tmp_path, ds=ds)


def test_duplicate_ids_are_an_error(tmp_path):
    ds = dataset(with_ids=True)
    ids = list(ds["id"])
    ids[7] = ids[2]
    ds = ds.remove_columns("id").add_column("id", ids)
    with pytest.raises(PrerollTRLError, match=r"column 'id' row 7: duplicates id 'q2'"):
        trainer(tmp_path, ds=ds)


def _quickstart():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "trl_quickstart.py"
    if str(path.parent) not in sys.path:                # as when run as a script: it imports tiny_policy beside it
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("trl_quickstart_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _every_group_recorded(tr, steps: int) -> dict:
    """The book holds one row per generated group, at the step that generated it; returns the history."""
    hist = tr.preroll_book.history()
    assert [c.step for c in tr.preroll_log] == list(range(steps))
    for c in tr.preroll_log:
        rows = hist["step"] == c.step
        assert sorted(hist["index"][rows].tolist()) == sorted(c.indices.tolist())
    assert tr.preroll_book.informative_groups_ + tr.preroll_book.dead_groups_ == sum(len(c.indices)
                                                                                       for c in tr.preroll_log)
    return hist


def test_trl_quickstart_with_only_the_class_swapped_trains_and_records_every_group(tmp_path, capsys):
    # TRL's quickstart reward -abs(20 - len(completion)): negative, unbounded, no reward_range declared
    ex = _quickstart()
    assert ex.main(["--steps", "3"]) == 0
    assert "3 steps, 12 groups recorded" in capsys.readouterr().out
    tr = ex.build(str(tmp_path / "out"), steps=3)
    assert tr.preroll_book.settings.reward_range is None
    tr.train()
    hist = _every_group_recorded(tr, 3)
    lo, hi = tr.preroll_book.reward_scale
    assert lo < hi <= 0   # the learnt scale is the weighted rewards' own range
    assert ((hist["successes"] >= 0) & (hist["successes"] <= hist["attempts"])).all()


def test_format_plus_accuracy_rewards_with_weights_need_no_declaration(tmp_path):
    ex = _quickstart()
    seen = []

    def accuracy(completions, answer, **kwargs):
        r = ex.accuracy_reward(completions, answer)
        seen.append((ex.format_reward(completions), r))
        return r

    accuracy.__name__ = "accuracy_reward"
    tr = ex.build(str(tmp_path / "out"), steps=3, rewards="format+accuracy")
    tr.reward_funcs[1] = accuracy
    assert tr.reward_weights.tolist() == [0.5, 1.0]
    tr.train()
    hist = _every_group_recorded(tr, 3)
    totals = np.concatenate([0.5 * np.asarray(f) + np.asarray(a) for f, a in seen])
    lo, hi = tr.preroll_book.reward_scale
    assert (lo, hi) == (totals.min(), totals.max())   # the weighted sum's range, learnt
    # a group's successes are its weighted rewards mapped from the final learnt range (stored ones re-expressed)
    span = hi - lo if hi > lo else 1.0
    for c, (f, a) in zip(tr.preroll_log, seen):
        step_total = (0.5 * np.asarray(f) + np.asarray(a)).reshape(-1, G)
        rows = np.flatnonzero(hist["step"] == c.step)
        for i, group in zip(c.indices, step_total):
            row = rows[hist["index"][rows] == i][0]
            assert hist["successes"][row] == pytest.approx(((group - lo) / span).sum())


def test_a_constant_reward_is_logged_once_not_an_error(tmp_path, caplog):
    def constant(completions, **kwargs):
        return [3.0] * len(completions)

    tr = trainer(tmp_path, reward_funcs=constant)
    with caplog.at_level("WARNING", logger="preroll.online.book"):
        tr.train()
    said = [r for r in caplog.records if "every reward so far equals 3" in r.getMessage()]
    assert len(said) == 1
    _every_group_recorded(tr, 4)
    assert tr.preroll_book.informative_groups_ == 0 and tr.preroll_book.reward_scale == (3.0, 3.0)


def test_a_declared_reward_range_is_still_enforced(tmp_path):
    calls = []

    def late_bad_reward(completions, **kwargs):
        calls.append(1)
        return [1.5 if len(calls) == 2 else 1.0] + [0.0] * (len(completions) - 1)

    tr = trainer(tmp_path, reward_funcs=late_bad_reward, preroll=OnlineSettings(reward_range=(0, 1)))
    with pytest.raises(PrerollTRLError, match=r"step 1: weighted reward 1.5 .* outside the declared reward_range "
                                              r"\[0, 1\]"):
        tr.train()
    assert tr.preroll_book.stats().steps == 1


def test_group_size_must_match_num_generations(tmp_path):
    with pytest.raises(PrerollTRLError, match=r"num_generations: is 4 but the book.s settings say group_size=8"):
        trainer(tmp_path, preroll=PrerollTRLSettings(book=OnlineSettings(group_size=8)))
    tr = trainer(tmp_path)
    assert tr.preroll_book.settings.group_size == G and tr.preroll_book.settings.seed == 0


# -- several processes: two real ranks on CPU (torchrun, gloo) ----------------------------------------------------

MULTI = Path(__file__).with_name("trl_multiprocess_run.py")


def _launch(out: Path, *extra: str) -> list[dict]:
    """Run the two-rank GRPO script; return each rank's report (rank order)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(MULTI.parents[1]), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(MULTI),
           str(out), *extra]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return _launch(tmp_path_factory.mktemp("mp") / "full", "--save-steps", "2")


def test_two_ranks_keep_identical_books_and_each_rolls_out_its_slice(two_ranks):
    r0, r1 = two_ranks
    assert (r0["world"], r1["world"]) == (2, 2) and r0["backend"] == "gloo"
    assert r0["choices"] == r1["choices"] and len(r0["choices"]) == 4
    assert r0["book_sha256"] == r1["book_sha256"] and r0["history"] == r1["history"]
    prompts, G, L = r0["prompts"], r0["G"], r0["per_device"]
    for step, choice in enumerate(r0["choices"]):
        rows = [prompts[i] for i in np.repeat(choice["indices"], G)]
        # rank r rolled out rows r*L .. (r+1)*L - 1 of the book's choice (a group straddles the two ranks)
        assert r0["scored"][step] == rows[:L] and r1["scored"][step] == rows[L:2 * L]
    # the book counts every rollout of a group, both ranks' halves gathered
    hist = r0["history"]
    assert len(hist["index"]) == 4 * len(r0["choices"][0]["indices"]) and set(hist["attempts"]) == {float(G)}


def test_two_ranks_resume_with_the_same_next_choices(two_ranks, tmp_path_factory):
    ranks, factory = two_ranks, tmp_path_factory
    ckpt = Path(ranks[0]["output_dir"]) / "checkpoint-2"
    assert (ckpt / "preroll_book.npz").exists() and (ckpt / "preroll_pool.json").exists()
    # transformers 5.10 cannot load an optimizer state on several CPU processes (torch.load with map_location
    # 'cpu:0'); the book and pool do not depend on it, so the resume starts from a copy without it
    copy = factory.mktemp("ckpt") / "checkpoint-2"
    shutil.copytree(ckpt, copy)
    (copy / "optimizer.pt").unlink()
    resumed = _launch(factory.mktemp("mp") / "resumed", "--resume", str(copy))
    assert [c["step"] for c in resumed[0]["choices"]] == [2, 3]
    assert resumed[0]["choices"] == resumed[1]["choices"] == ranks[0]["choices"][2:]
    assert resumed[0]["book_sha256"] == resumed[1]["book_sha256"]
    assert resumed[0]["history"]["index"] == ranks[0]["history"]["index"]
