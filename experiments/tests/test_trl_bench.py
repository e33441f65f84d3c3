"""The closed-loop TRL benchmark's own pieces (``python -m experiments.trl_closed_loop``): the held-out reward
estimate, the paired differences and the book-settings option."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from experiments.trl_task import char_tokenizer, exact_match_reward, sample_items, sampled_reward, tiny_model  # noqa: E402


def _bench_module():
    import experiments.trl_closed_loop as module

    return module


def test_sampled_reward_is_seeded_and_leaves_the_training_rng_alone():
    tok = char_tokenizer()
    model = tiny_model(tok, hidden=16, seed=0)
    items = sample_items(12, np.random.default_rng(0), (1, 3))
    torch.manual_seed(5)
    before = torch.get_rng_state().clone()
    a = sampled_reward(model, tok, items, samples=3, seed=1)
    assert torch.equal(torch.get_rng_state(), before)        # evaluation does not move the training stream
    b = sampled_reward(model, tok, items, samples=3, seed=1)
    assert a.shape == (12,) and np.array_equal(a, b)
    assert set(np.unique(a * 3)) <= {0.0, 1.0, 2.0, 3.0}     # a mean of 3 exact-match rewards per item


def test_exact_match_reward_stops_at_eos():
    assert exact_match_reward(["12<eos>9", "13", "12"], ["12", "12", "1"]) == [1.0, 0.0, 0.0]


def test_book_option_parses_values_and_names_a_bad_field():
    bench = _bench_module()
    import argparse

    parser = argparse.ArgumentParser()
    assert bench.book_fields(["explore=0.0", "revisit=0.05"], parser) == {"explore": 0.0, "revisit": 0.05}
    with pytest.raises(SystemExit):
        bench.book_fields(["explore=2"], parser)          # out of [0, 1]
    with pytest.raises(SystemExit):
        bench.book_fields(["no_such_field=1"], parser)
    with pytest.raises(SystemExit):
        bench.book_fields(["explore"], parser)


def test_group_counter_counts_trained_groups_per_prompt_and_their_spread():
    from experiments.trl_loop import GroupCounter, RunResult

    result = RunResult("uniform", 0)
    counter = GroupCounter(2, result)
    # two groups of two: "a" informative (1, 0), "b" dead (1, 1)
    counter(["a", "a", "b", "b"], ["1", "2", "1", "1"], ["1", "1", "1", "1"])
    counter(["a", "a", "c", "c"], ["1", "2", "2", "1"], ["1", "1", "1", "1"])
    assert result.trained_groups == {"a": [2, 2], "b": [1, 0], "c": [1, 1]}
    assert (result.groups, result.dead_groups) == (4, 1)
    cov = result.coverage(n_train=5, top=1)
    assert cov["prompts"] == 2 and cov["max"] == 2 and cov["top_share"] == pytest.approx(2 / 3)
    assert cov["mean_visits"] == pytest.approx(4 / 3)
    # dapo's trainer reports which of the generated groups it kept
    kept = RunResult("dapo", 0)
    dapo = GroupCounter(2, kept, count_training=False)
    dapo(["a", "a", "b", "b"], ["1", "2", "1", "1"], ["1", "1", "1", "1"])
    assert kept.trained_groups == {}
    dapo.trained([0])
    assert kept.trained_groups == {"a": [1, 1]}


def test_by_length_splits_held_out_reward_and_informative_groups_by_task_length():
    from experiments.trl_loop import LoopConfig, RunResult, by_length, task_data

    cfg = LoopConfig(n_train=6, n_heldout=10, k_max=3)
    train, heldout = task_data(cfg)
    held_k = np.array([it.k for it in heldout])
    a = RunResult("preroll", 0, final_items=[float(it.k == 1) for it in heldout],
                  trained_groups={train[0].prompt: [3, 2], train[1].prompt: [1, 0]})
    b = RunResult("preroll", 1, final_items=[0.0] * len(heldout), trained_groups={train[0].prompt: [1, 1]})
    other = RunResult("uniform", 0, final_items=[1.0] * len(heldout))
    out = by_length([a, b, other], cfg, "preroll")
    # seed 0 solves every k = 1 item and seed 1 none; a length with no held-out item has no mean
    expected = [(0.5 if k == 1 else 0.0) if (held_k == k).any() else np.nan for k in (1, 2, 3)]
    assert out["heldout"] == pytest.approx(expected, nan_ok=True)
    informative = np.zeros(3)
    informative[train[0].k - 1] += 1.5              # (2 + 1) informative groups over two seeds
    assert out["informative"] == pytest.approx(informative.tolist())
    assert by_length([other], cfg, "preroll") == {}


def test_against_uniform_over_the_run_pairs_seeds_and_finds_the_first_evaluation_at_uniforms_late_level():
    from experiments.trl_loop import RunResult, against_uniform_over_the_run

    ro = [0, 100, 200, 300, 400]
    uniform = RunResult("uniform", 0, rollouts=ro, heldout_sampled=[0.2, 0.22, 0.24, 0.30, 0.28])
    ahead = RunResult("preroll", 0, rollouts=ro, heldout_sampled=[0.2, 0.26, 0.295, 0.30, 0.30])
    behind = RunResult("preroll", 1, rollouts=ro, heldout_sampled=[0.2, 0.21, 0.22, 0.23, 0.24])
    uniform1 = RunResult("uniform", 1, rollouts=ro, heldout_sampled=[0.2, 0.22, 0.24, 0.26, 0.28])
    rows = against_uniform_over_the_run([uniform, ahead, behind, uniform1], "preroll")
    assert [r["seed"] for r in rows] == [0, 1]
    # uniform's last-quarter level on seed 0: mean of the evaluations at >= 300 rollouts = 0.29
    assert rows[0]["rollouts_to_reach"] == 200
    assert rows[0]["curve_gap"] == pytest.approx((0.26 + 0.295 + 0.30 + 0.30 - 0.22 - 0.24 - 0.30 - 0.28) / 4)
    assert rows[1]["rollouts_to_reach"] is None and rows[1]["curve_gap"] < 0


def test_held_out_items_never_appear_in_the_pre_training_stream():
    from experiments.trl_loop import LoopConfig, pretrain_exclude, task_data
    from experiments.trl_task import pretrain_batches

    cfg = LoopConfig()
    train, heldout = task_data(cfg)
    held = {it.prompt for it in heldout}
    assert pretrain_exclude(cfg) == held and not held & {it.prompt for it in train}
    seen = {it.prompt for batch in pretrain_batches(cfg.pretrain_steps, 64, 0, (1, cfg.k_max), pretrain_exclude(cfg))
            for it in batch}
    assert not seen & held
    # without the exclusion the same stream shows many of them (short items repeat): the exclusion is what holds
    unguarded = {it.prompt for batch in pretrain_batches(cfg.pretrain_steps, 64, 0, (1, cfg.k_max)) for it in batch}
    assert len(unguarded & held) > 20


def test_group_counter_counts_generated_tokens():
    from experiments.trl_loop import GroupCounter, RunResult

    counter = GroupCounter(2, RunResult("uniform", 0))
    counter(["a", "a"], ["1", "22"], ["1", "1"], completion_ids=[[5, 1], [6, 6, 1]])
    counter(["b", "b"], ["1", "2"], ["1", "1"], completion_ids=[[5], [1]])
    assert counter.tokens == 7 and counter.rollouts == 4


def test_paired_tests_pair_seeds_and_count_rollouts_and_tokens_to_uniforms_level():
    from experiments.trl_loop import RunResult, paired_tests

    ro = [0, 100, 200, 300, 400]
    runs = []
    for seed in range(6):
        u = [0.2, 0.22, 0.24, 0.26, 0.28]
        p = [0.2, 0.25, 0.28, 0.29, 0.30 + 0.001 * seed]
        runs.append(RunResult("uniform", seed, rollouts=ro, tokens=[5 * r for r in ro], seconds=[r / 10 for r in ro],
                              heldout=[0.1] * 5, heldout_sampled=u, groups=10, dead_groups=5))
        runs.append(RunResult("preroll", seed, rollouts=ro, tokens=[4 * r for r in ro], seconds=[r / 20 for r in ro],
                              heldout=[0.1] * 5, heldout_sampled=p, groups=10, dead_groups=2))
    tests = paired_tests(runs, "preroll")
    final = tests["final_heldout_reward"]
    assert final["n"] == 6 and final["method_better_on"] == 6 and final["mean_diff"] > 0
    assert final["wilcoxon_p"] == pytest.approx(2 / 2 ** 6)           # exact: all six differences positive
    # uniform's late level (mean of its evaluations at >= 300 rollouts) is 0.27: preroll first reaches it at 200,
    # uniform itself at 400
    reach = tests["rollouts_to_reach_baseline_level"]
    assert reach["method"] == [200.0] * 6 and reach["baseline"] == [400.0] * 6 and reach["method_better_on"] == 6
    assert tests["tokens_to_reach_baseline_level"]["method"] == [800.0] * 6
    assert tests["tokens_to_reach_baseline_level"]["baseline"] == [2000.0] * 6
    assert tests["zero_signal_share"]["mean_diff"] == pytest.approx(-0.3)
    # a run that never reaches the level ranks last: one evaluation interval past its budget
    slow = [RunResult(r.method, r.seed, rollouts=ro, tokens=r.tokens, seconds=r.seconds, heldout=r.heldout,
                      heldout_sampled=[0.2] * 5 if r.method == "preroll" else r.heldout_sampled) for r in runs]
    assert paired_tests(slow, "preroll")["rollouts_to_reach_baseline_level"]["method"] == [500.0] * 6


def test_results_of_processes_run_side_by_side_merge_once_per_method_and_seed():
    from experiments.trl_loop import LoopConfig, RunResult, merge_results

    a = ([RunResult("uniform", 100), RunResult("preroll", 100)], LoopConfig(seeds=(100,), methods=("uniform", "preroll")))
    b = ([RunResult("preroll", 104), RunResult("uniform", 104)], LoopConfig(seeds=(104,), methods=("uniform", "preroll")))
    runs, cfg = merge_results([a, b])
    assert cfg.seeds == (100, 104) and cfg.methods == ("uniform", "preroll")
    assert [(r.method, r.seed) for r in runs] == [("uniform", 100), ("preroll", 100), ("uniform", 104),
                                                  ("preroll", 104)]
    with pytest.raises(ValueError, match="appears twice"):
        merge_results([a, a])
    with pytest.raises(ValueError, match="different settings"):
        merge_results([a, (b[0], LoopConfig(seeds=(104,), learning_rate=3e-4))])


def test_closed_loop_held_out_reward_is_seeded_and_paired():
    """The benchmark's held-out reward: same items and sampling stream for every method, so differences pair up."""
    from experiments.trl_loop import RunResult, paired_difference

    tok = char_tokenizer()
    model = tiny_model(tok, seed=0)
    items = sample_items(12, np.random.default_rng(0), (1, 3))
    a = sampled_reward(model, tok, items, samples=3, seed=5)
    b = sampled_reward(model, tok, items, samples=3, seed=5)
    assert a.shape == (12,) and np.array_equal(a, b) and ((a >= 0) & (a <= 1)).all()
    assert np.allclose(a * 3, np.round(a * 3))            # a mean of three 0/1 rewards per item
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    sampled_reward(model, tok, items, samples=2, seed=9)
    assert torch.rand(1) == before                         # the trainer's random stream is left as it was
    runs = [RunResult("uniform", 0, final_items=[0.0, 0.5, 1.0, 0.5]),
            RunResult("preroll", 0, final_items=[0.5, 0.5, 1.0, 1.0])]
    (pair,) = paired_difference(runs, "preroll")
    assert pair["seed"] == 0 and pair["diff"] == pytest.approx(0.25) and pair["se"] > 0
