"""The integrations' shared core: one prompt-to-text rule, one pool stream, the trainer's group size, and the
book saved to and restored from a checkpoint folder, local or remote (fsspec's in-memory filesystem stands in
for object storage)."""

from __future__ import annotations

import numpy as np
import pytest

from preroll.integrations.core import PoolStream, prompt_text, trainer_book_settings
from preroll.integrations.core.store import is_remote, load_state, save_state
from preroll.online import OnlineSettings, PromptBook
from preroll.online.errors import OnlineInputError

PROMPTS = [f"Compute {i} times {i + 3}." for i in range(40)]


def test_one_prompt_text_rule_for_strings_and_chat_messages():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Solve x^2=4."}]
    assert prompt_text(chat) == "Solve x^2=4."
    assert prompt_text("plain") == "plain"
    # few-shot turns are part of the prompt; system and developer instructions are not
    shots = [{"role": "developer", "content": "Answer in LaTeX."}, {"role": "user", "content": "1+1?"},
             {"role": "assistant", "content": "2"}, {"role": "user", "content": "2+2?"}]
    assert prompt_text(shots) == "1+1?\n2\n2+2?"
    assert prompt_text([{"role": "system", "content": "only system"}]) == "only system"
    assert prompt_text([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]) \
        == "What is it?"
    assert prompt_text(np.array([{"role": "user", "content": "from parquet"}], dtype=object)) == "from parquet"


def test_trl_and_verl_read_a_prompt_with_the_same_rule():
    from preroll.integrations.verl import message_text
    from preroll.integrations.verl.plan import prompt_text as verl_rule

    chat = [{"role": "system", "content": "Think."}, {"role": "user", "content": "What is 3 plus 10?"}]
    assert message_text(chat) == prompt_text(chat) and verl_rule is prompt_text
    pytest.importorskip("trl")
    from preroll.integrations.trl import trainer as trl_trainer

    assert trl_trainer.prompt_text is prompt_text


def test_pool_stream_covers_every_prompt_once_per_pass_takes_any_size_and_resumes():
    stream = PoolStream(10, size=4, seed=4)
    pools = [stream.next() for _ in range(5)]                  # 20 positions: two passes
    assert all(len(set(p.tolist())) == 4 for p in pools)
    assert sorted(np.concatenate(pools)[:10].tolist()) == list(range(10))
    assert len(stream.take(7)) == 7
    again = PoolStream(10, size=4, seed=4)
    again.load_state_dict(stream.state_dict())
    assert again.take(3).tolist() == stream.take(3).tolist()
    with pytest.raises(OnlineInputError, match="pool size"):
        stream.take(11)
    with pytest.raises(ValueError, match="seed=5"):
        PoolStream(10, size=4, seed=5).load_state_dict(stream.state_dict())


def test_pool_stream_reads_the_pool_state_verl_checkpoints_held_before():
    old = {"size": 10, "seed": 4, "epoch": 2, "cursor": 3, "order": list(range(10))}
    stream = PoolStream(10, seed=4)
    stream.load_state_dict(old)
    assert stream.position == 23


def test_group_size_follows_the_trainer_and_groups_of_one_are_refused():
    s = trainer_book_settings(OnlineSettings(), group_size=6, seed=9, group_size_field="rollout.n")
    assert (s.group_size, s.seed) == (6, 9)
    kept = trainer_book_settings(OnlineSettings(seed=1), group_size=6, seed=9, group_size_field="rollout.n")
    assert kept.seed == 1
    with pytest.raises(OnlineInputError, match=r"rollout\.n: is 1; .* at least 2"):
        trainer_book_settings(OnlineSettings(), group_size=1, seed=0, group_size_field="rollout.n")
    with pytest.raises(OnlineInputError, match=r"rollout\.n: is 6 but .* group_size=8"):
        trainer_book_settings(OnlineSettings(group_size=8), group_size=6, seed=0, group_size_field="rollout.n")


def _book():
    book = PromptBook(PROMPTS, settings=OnlineSettings(encoder="none"))
    book.record(0, [0, 1, 2], [[1.0, 0.0], [0.0, 0.0], [-2.0, 3.0]])
    return book


def test_book_and_pool_round_trip_through_a_remote_folder():
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    folder = "memory://bucket/run/global_step_3"
    assert is_remote(folder) and not is_remote("/tmp/x") and not is_remote("file:///tmp/x")
    book = _book()
    save_state(folder, book, {"position": 17}, book_file="b.npz", pool_file="p.json")
    assert fs.exists("/bucket/run/global_step_3/b.npz") and fs.exists("/bucket/run/global_step_3/p.json")
    loaded, pool = load_state(folder, PromptBook(PROMPTS, settings=OnlineSettings(encoder="none")),
                              book_file="b.npz", pool_file="p.json")
    assert pool == {"position": 17} and loaded.stats() == book.stats()
    np.testing.assert_array_equal(loaded.history()["successes"], book.history()["successes"])
    assert load_state("memory://bucket/elsewhere", book, book_file="b.npz", pool_file="p.json") is None


def test_verl_driver_saves_to_and_resumes_from_a_remote_folder():
    pytest.importorskip("fsspec")
    from preroll.integrations.verl import PrerollDriver, PrerollVerlConfig

    config = PrerollVerlConfig(settings={"encoder": "none", "seed": 0})
    driver = PrerollDriver(PROMPTS, config, group_size=4)
    plan = driver.plan(4, 4)
    driver.remember(["u0", "u1", "u2", "u3"], plan.indices)
    driver.record_trajectories(1, ["u0_0_0", "u0_1_0", "u1_0_0", "u1_1_0"], [1.0, 0.0, 1.0, 1.0])
    uploads = []

    def upload(local, url):
        from preroll.integrations.core.store import fsspec_upload

        uploads.append(url)
        fsspec_upload(local, url)

    driver.save("memory://ckpt/global_step_1", upload=upload)
    assert uploads == ["memory://ckpt/global_step_1/preroll_book.npz", "memory://ckpt/global_step_1/preroll_pool.json"]
    again = PrerollDriver(PROMPTS, config, group_size=4)
    assert again.load("memory://ckpt/global_step_1")
    assert again.uid_positions == driver.uid_positions
    assert again.plan(4, 4).indices.tolist() == driver.plan(4, 4).indices.tolist()
    assert again.book.settings.group_size == 4


def test_verl_settings_are_typed_and_group_size_is_the_trainers_n():
    from preroll.integrations.verl import PrerollDriver, PrerollVerlConfig

    config = PrerollVerlConfig.parse({"pool_factor": 3, "settings": {"encoder": "none", "explore": 0.0}})
    assert isinstance(config.settings, OnlineSettings) and config.settings.explore == 0.0
    with pytest.raises(OnlineInputError, match=r"trainer\.v1\.preroll\.settings\.explore"):
        PrerollVerlConfig.parse({"settings": {"explore": 3}})
    assert PrerollDriver(PROMPTS, config, group_size=16).book.settings.group_size == 16   # was 8 whatever n was
    assert PrerollDriver(PROMPTS, config, group_size=16).book.settings.pool_factor == 3
    with pytest.raises(OnlineInputError, match=r"rollout\.n: is 1"):
        PrerollDriver(PROMPTS, config, group_size=1)
    with pytest.raises(OnlineInputError, match=r"min_rollouts"):
        PrerollVerlConfig.parse({"mode": "allocate", "min_rollouts": 1})
