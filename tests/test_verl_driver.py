"""The verl integration's verl-free parts: regrouping rewards by uid, pools, plans, config, persistence.

These run without verl installed; tests/test_integration_verl.py runs the same
code against verl's own classes.
"""

from __future__ import annotations

import numpy as np
import pytest

from preroll.integrations.verl import (
    PoolWalker,
    PrerollDriver,
    PrerollVerlConfig,
    final_session_rows,
    group_by_uid,
    index_positions,
    message_text,
    outcomes_from_trajectories,
    sequence_scores,
)
from preroll.online.errors import OnlineInputError

PROMPTS = [f"Compute {i} times {i + 3}." for i in range(40)]
SETTINGS = {"encoder": "none", "seed": 0}


def test_group_by_uid_keeps_first_appearance_order_and_all_rollouts():
    uids = ["b", "a", "b", "c", "a", "b"]
    out = group_by_uid(uids, [1, 0, 0, 1, 1, 1], positions=[7, 3, 7, 9, 3, 7])
    assert out.indices.tolist() == [7, 3, 9]
    assert [r.tolist() for r in out.rewards] == [[1, 0, 1], [0, 1], [1]]
    assert out.rollouts == 6


def test_group_by_uid_refuses_a_uid_at_two_positions():
    with pytest.raises(OnlineInputError, match=r"positions\[2\].*uid 'x'"):
        group_by_uid(["x", "y", "x"], [1, 1, 0], positions=[4, 5, 6])


def test_group_by_uid_counts_unknown_uids_instead_of_guessing():
    out = group_by_uid(["u1", "u2", "u1"], [1, 0, 0], uid_positions={"u1": 12})
    assert out.indices.tolist() == [12] and out.unmatched == 1
    assert out.rewards[0].tolist() == [1, 0]


def test_final_session_rows_take_the_last_output_of_each_session():
    keys = ["u1_0_0", "u1_0_1", "u1_1_0", "u2_0_2", "u2_0_0", "u2_0_1"]
    rows, uids = final_session_rows(keys)
    assert rows.tolist() == [1, 2, 3] and uids.tolist() == ["u1", "u1", "u2"]
    with pytest.raises(OnlineInputError, match=r"keys\[1\]"):
        final_session_rows(["u1_0_0", "u1-0"])


def test_trajectories_drop_padding_rows():
    keys = ["a_0_0", "a_1_0", "pad_0_0", "b_0_0"]
    out = outcomes_from_trajectories(keys, [1.0, 0.0, 5.0, 1.0], {"a": 0, "b": 1, "pad": 2},
                                     padding=[False, False, True, False])
    assert out.indices.tolist() == [0, 1] and [r.tolist() for r in out.rewards] == [[1, 0], [1]]


def test_sequence_scores_sum_masked_tokens_and_ragged_rows():
    dense = np.array([[0, 0, 1.0], [0, 0.5, 9.0]])
    assert sequence_scores(dense, np.array([[1, 1, 1], [1, 1, 0]])).tolist() == [1.0, 0.5]
    assert sequence_scores([np.array([0, 1.0]), np.array([0.25])]).tolist() == [1.0, 0.25]


def test_pool_walker_covers_every_prompt_once_per_pass_and_resumes():
    walker = PoolWalker(10, seed=4)
    pools = [walker.take(4) for _ in range(5)]                  # 20 positions: two passes
    assert all(len(set(p.tolist())) == 4 for p in pools)       # never a repeat inside a pool
    first_pass = np.concatenate(pools)[:10]
    assert sorted(first_pass.tolist()) == list(range(10))
    state = walker.state_dict()
    again = PoolWalker(10, seed=4)
    again.load_state_dict(state)
    assert again.take(7).tolist() == walker.take(7).tolist()
    with pytest.raises(OnlineInputError, match="pool size"):
        walker.take(11)


def test_select_plan_chooses_batch_from_pool_and_allocate_plan_spends_the_budget():
    driver = PrerollDriver(PROMPTS, PrerollVerlConfig(pool_factor=3, settings=SETTINGS))
    plan = driver.plan(5, rollout_n=8)
    assert len(plan) == 5 and plan.pool_size == 15 and plan.rollout_n is None
    alloc = PrerollDriver(PROMPTS, PrerollVerlConfig(mode="allocate", pool_factor=3, min_rollouts=2,
                                                     max_rollouts=16, settings=SETTINGS))
    plan = alloc.plan(5, rollout_n=8)
    assert plan.rollouts == 40 and (plan.rollout_n >= 2).all() and (plan.rollout_n <= 16).all()
    assert len(plan.indices) == len(set(plan.indices.tolist()))
    refill = alloc.plan(2, rollout_n=8, refill=True)
    assert len(refill) == 2 and refill.rollout_n is None


def test_book_learns_from_recorded_steps_and_steers_the_next_plan():
    """Prompts that always fail get recorded as dead and stop filling the exploit share of the batch."""
    driver = PrerollDriver(PROMPTS, PrerollVerlConfig(pool_factor=4, settings={**SETTINGS, "explore": 0.0,
                                                                               "revisit": 0.0}))
    hopeless = set(range(0, 40, 2))
    for step in range(1, 9):
        plan = driver.plan(5, rollout_n=4)
        uids = [f"s{step}-{k}" for k in range(len(plan))]
        driver.remember(uids, plan.indices)
        keys, scores = [], []
        for uid, pos in zip(uids, plan.indices):
            for session in range(4):
                keys.append(f"{uid}_{session}_0")
                scores.append(0.0 if pos in hopeless else float(session % 2))
        metrics = driver.record_trajectories(step, keys, scores)
        assert metrics["preroll/unmatched_groups"] == 0
    late = [driver.plan(5, rollout_n=4).indices for _ in range(4)]
    share = np.mean([p in hopeless for pool in late for p in pool.tolist()])
    assert share < 0.3                   # a uniform draw would give 0.5


def test_config_errors_name_the_key():
    with pytest.raises(OnlineInputError, match=r"trainer\.v1\.preroll\.pool_factor"):
        PrerollVerlConfig.parse({"pool_factor": 0})
    with pytest.raises(OnlineInputError, match=r"trainer\.v1\.preroll\.colour"):
        PrerollVerlConfig.parse({"colour": "red"})
    with pytest.raises(OnlineInputError, match=r"min_rollouts 8 > max_rollouts 4"):
        PrerollVerlConfig.parse({"min_rollouts": 8, "max_rollouts": 4})
    with pytest.raises(OnlineInputError, match=r"settings\.drift_decay"):
        PrerollVerlConfig.parse({"settings": {"drift_decay": 3.0}}).online_settings()


def test_index_positions_refuse_missing_and_repeated_ids():
    assert index_positions([{"index": 10}, {"index": 3}]) == {10: 0, 3: 1}
    with pytest.raises(OnlineInputError, match=r"extra_info\[1\]: has no 'index'"):
        index_positions([{"index": 1}, {}])
    with pytest.raises(OnlineInputError, match=r"extra_info\[2\]: index 4 repeats row 0"):
        index_positions([{"index": 4}, {"index": 5}, {"index": 4}])


def test_message_text_leaves_out_system_turns():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Solve x^2=4."}]
    assert message_text(chat) == "Solve x^2=4."
    assert message_text("plain") == "plain"
    assert message_text([{"role": "system", "content": "only system"}]) == "only system"


def test_driver_save_load_gives_the_same_next_plan(tmp_path):
    driver = PrerollDriver(PROMPTS, PrerollVerlConfig(settings=SETTINGS))
    plan = driver.plan(4, 8)
    driver.remember(["u0", "u1", "u2", "u3"], plan.indices)
    driver.record_trajectories(1, ["u0_0_0", "u0_1_0", "u1_0_0"], [1.0, 0.0, 1.0])
    driver.save(tmp_path)
    again = PrerollDriver(PROMPTS, PrerollVerlConfig(settings=SETTINGS))
    assert again.load(tmp_path)
    assert again.uid_positions == driver.uid_positions == {"u2": int(plan.indices[2]), "u3": int(plan.indices[3])}
    assert again.plan(4, 8).indices.tolist() == driver.plan(4, 8).indices.tolist()
    assert not PrerollDriver(PROMPTS, PrerollVerlConfig(settings=SETTINGS)).load(tmp_path / "empty")


def test_verl_classes_say_how_to_install_verl(monkeypatch):
    import sys

    import preroll.integrations.verl as integration

    # without verl (None in sys.modules makes `import verl` fail, also where verl is installed)
    monkeypatch.setitem(sys.modules, "verl", None)
    for name in ("preroll.integrations.verl.trainer", "preroll.integrations.verl.sampler"):
        monkeypatch.delitem(sys.modules, name, raising=False)

    with pytest.raises(ImportError, match=r"pip install 'preroll\[verl\]'"):
        integration.PrerollPPOTrainer
    with pytest.raises(ImportError, match=r"pip install 'preroll\[verl\]'"):
        integration.PrerollCurriculumSampler
