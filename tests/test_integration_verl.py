"""The verl integration against verl 0.9's own classes (skipped without verl: ``pip install 'preroll[verl]'``).

Exercised here on the CPU, with real verl 0.9 objects: verl's RLHFDataset on a
parquet file and its collate_fn, TensorDict batches built by verl's
tensordict_utils, DataProto batches repeated per rollout as verl's legacy
trainer does, jagged ``rm_scores`` as verl's agent loop writes them, verl's
trainer registry reached through ``VERL_USE_EXTERNAL_MODULES``, the documented
overrides composed with verl's Hydra config, the trainer's replay buffer and
dataloader set-up from verl's generated default config, and the checkpoint
through verl's ``_save_checkpoint`` / ``_load_checkpoint``. A whole v1 step
through the TransferQueue is in tests/test_verl_v1_step.py; the legacy hook
against verl 0.7 in tests/test_verl_legacy_sampler.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from verl_testing import SETTINGS, bare_trainer, data_config, needs, tokenizer, verl_config, write_parquet

needs("verl")
needs("transfer_queue")
torch = needs("torch")

from tensordict import NonTensorData, NonTensorStack  # noqa: E402
from transfer_queue import KVBatchMeta  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn  # noqa: E402

from preroll.integrations.verl import (  # noqa: E402
    PrerollDriver,
    PrerollVerlConfig,
    outcomes_from_dataproto,
)
from preroll.integrations.verl import trainer as verl_trainer  # noqa: E402
from preroll.integrations.verl.sampler import PrerollCurriculumSampler  # noqa: E402
from preroll.online import OnlineSettings  # noqa: E402
from preroll.online.errors import OnlineInputError  # noqa: E402


@pytest.fixture(scope="module")
def parquet(tmp_path_factory) -> Path:
    return write_parquet(tmp_path_factory.mktemp("verl") / "train.parquet")


@pytest.fixture(scope="module")
def dataset(parquet) -> RLHFDataset:
    return RLHFDataset(data_files=str(parquet), tokenizer=tokenizer(), config=data_config(parquet))


def _rollout_rows(td, i):
    """One prompt as verl's AgentLoopWorkerTQ.generate_sequences hands it to _run_prompt (same type dispatch)."""
    prompt = {}
    for k, v in td.items():
        if isinstance(v, torch.Tensor):
            prompt[k] = v[i]
        elif isinstance(v, NonTensorStack):
            prompt[k] = v[i].data
        elif isinstance(v, NonTensorData):
            prompt[k] = v.data
    return prompt


def test_trainer_registers_through_verl_external_modules():
    """The documented start-up path: verl imports the module named in VERL_USE_EXTERNAL_MODULES."""
    code = ("import verl\nfrom verl.trainer.ppo.v1 import get_trainer_cls\n"
            "cls = get_trainer_cls('preroll')\nprint(cls.__module__, cls.__name__)\n")
    env = {**os.environ, "VERL_USE_EXTERNAL_MODULES": "preroll.integrations.verl.trainer",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "preroll.integrations.verl.trainer PrerollPPOTrainer"


def test_batch_for_the_agent_loop_carries_uid_and_rollout_n(dataset):
    driver = PrerollDriver(verl_trainer.dataset_prompts(dataset),
                           PrerollVerlConfig(mode="allocate", pool_factor=3, min_rollouts=2, max_rollouts=12,
                                             settings=SETTINGS))
    plan = driver.plan(n_prompts=6, rollout_n=4)
    td, uids = verl_trainer.build_batch(dataset, plan, global_steps=5)
    assert len(td) == len(plan) and plan.rollouts == 24
    seen_n = []
    for i in range(len(td)):
        prompt = _rollout_rows(td, i)
        n = prompt.pop("__rollout_n__", 999)           # exactly how verl's _run_prompt reads it
        seen_n.append(int(n))
        assert prompt["uid"] == uids[i]
        assert prompt["global_steps"] == 5
        # the row is the planned dataset row: its extra_info.index is 1000 + position
        assert prompt["index"] == 1000 + int(plan.indices[i])
        assert prompt["raw_prompt"][-1]["content"] == f"What is {plan.indices[i]} plus {plan.indices[i] + 7}?"
    assert seen_n == plan.rollout_n.tolist()


def test_select_batch_leaves_rollout_n_to_verl(dataset):
    driver = PrerollDriver(verl_trainer.dataset_prompts(dataset), PrerollVerlConfig(settings=SETTINGS))
    plan = driver.plan(n_prompts=8, rollout_n=4)
    td, _ = verl_trainer.build_batch(dataset, plan, global_steps=1)
    assert len(td) == 8 and "__rollout_n__" not in td.keys()
    assert plan.pool_size == 32 and len(set(plan.indices.tolist())) == 8


def _trajectories(uids, n_per_uid, rng, turns=1):
    """Keys, nested rm_scores and per-session rewards as verl's agent loop stores a finished group."""
    keys, rows, truth = [], [], {}
    for uid, n in zip(uids, n_per_uid):
        truth[uid] = []
        for session in range(n):
            reward = float(rng.integers(0, 2))
            truth[uid].append(reward)
            for out in range(turns):
                length = int(rng.integers(3, 9))
                scores = torch.zeros(length)
                scores[-1] = reward                              # reward on the last response token
                keys.append(f"{uid}_{session}_{out}")
                rows.append(scores)
    order = rng.permutation(len(keys))                          # the replay buffer does not keep order
    keys = [keys[i] for i in order]
    nested = torch.nested.as_nested_tensor([rows[i] for i in order], layout=torch.jagged)
    return keys, nested, truth


def test_step_records_rewards_per_uid_from_jagged_rm_scores(dataset, monkeypatch):
    driver = PrerollDriver(verl_trainer.dataset_prompts(dataset),
                           PrerollVerlConfig(mode="allocate", pool_factor=2, max_rollouts=8, settings=SETTINGS))
    plan = driver.plan(n_prompts=4, rollout_n=4)
    td, uids = verl_trainer.build_batch(dataset, plan, global_steps=1)
    driver.remember(uids, plan.indices)
    rng = np.random.default_rng(0)
    keys, nested, truth = _trajectories(list(uids), plan.rollout_n, rng, turns=2)
    pad_keys = [f"{uuid.uuid4()}_{i}_0" for i in range(3)]     # verl's synthetic padding rows
    meta = KVBatchMeta(keys=keys + pad_keys, tags=[{}] * len(keys) + [{"is_padding": True}] * 3,
                       partition_id="train")

    def kv_batch_get(keys, partition_id, select_fields):
        assert partition_id == "train" and select_fields == ["rm_scores"]
        assert not set(keys) & set(pad_keys)
        return {"rm_scores": nested}

    monkeypatch.setattr(verl_trainer.tq, "kv_batch_get", kv_batch_get)
    got_keys, scores = verl_trainer.trajectory_scores(meta)
    metrics = driver.record_trajectories(1, got_keys, scores)

    hist = driver.book.history()
    by_pos = dict(zip(hist["index"].tolist(), zip(hist["successes"].tolist(), hist["attempts"].tolist())))
    for uid, pos in zip(uids, plan.indices):
        assert by_pos[int(pos)] == (sum(truth[uid]), len(truth[uid]))   # one reward per session, not per turn
    assert metrics["preroll/groups"] == len(plan) and metrics["preroll/rollouts"] == plan.rollouts
    assert metrics["preroll/unmatched_groups"] == 0 and not driver.uid_positions


def test_dataproto_from_verl_repeat_groups_by_uid(dataset):
    """The legacy trainer's layout: prompts repeated n times (interleaved), token_level_scores per rollout."""
    positions = [5, 17, 2]
    batch = DataProto.from_single_dict(collate_fn([dataset[i] for i in positions]))
    batch.non_tensor_batch["uid"] = np.array([str(uuid.uuid4()) for _ in positions], dtype=object)
    n = 4
    batch = batch.repeat(repeat_times=n, interleave=True)
    rng = np.random.default_rng(1)
    rewards = rng.integers(0, 2, size=len(positions) * n).astype(np.float32)
    scores = torch.zeros(len(rewards), 10)
    mask = torch.zeros(len(rewards), 10)
    for r in range(len(rewards)):
        end = int(rng.integers(2, 10))
        mask[r, :end] = 1
        scores[r, end - 1] = float(rewards[r])
    batch = batch.union(DataProto.from_single_dict({"token_level_scores": scores, "response_mask": mask}))

    frame = dataset.dataframe
    from preroll.integrations.verl import index_positions

    out = outcomes_from_dataproto(batch, index_positions=index_positions(frame["extra_info"]))
    assert out.indices.tolist() == positions
    for g, row in enumerate(out.rewards):
        assert row.tolist() == rewards[g * n:(g + 1) * n].tolist()


def test_legacy_sampler_yields_book_choices_and_learns(dataset, parquet):
    config = data_config(parquet, train_batch_size=4,
                          sampler={"class_path": "pkg://preroll.integrations.verl.sampler",
                                   "class_name": "PrerollCurriculumSampler",
                                   "preroll": {"pool_factor": 3, "settings": SETTINGS}})
    from verl.utils.import_utils import load_extern_type

    # as verl < 0.9's create_rl_sampler builds it from data.sampler.class_path / class_name
    sampler_cls = load_extern_type(config.sampler.class_path, config.sampler.class_name)
    assert sampler_cls is PrerollCurriculumSampler
    sampler = sampler_cls(data_source=dataset, data_config=config)
    from torchdata.stateful_dataloader import StatefulDataLoader

    loader = StatefulDataLoader(dataset=dataset, batch_size=4, num_workers=0, drop_last=True, collate_fn=collate_fn,
                                sampler=sampler)
    it = iter(loader)
    for step in range(3):
        batch_dict = next(it)
        assert len(set(batch_dict["index"].tolist())) == 4
        batch = DataProto.from_single_dict(batch_dict)
        batch.non_tensor_batch["uid"] = np.array([str(uuid.uuid4()) for _ in range(4)], dtype=object)
        batch = batch.repeat(repeat_times=2, interleave=True)
        # every prompt below index 1024 is always solved, the rest never: dead groups either way
        solved = np.array([float(i < 1024) for i in batch.non_tensor_batch["index"]], dtype=np.float32)
        batch = batch.union(DataProto.from_single_dict({"token_level_scores": torch.tensor(solved)[:, None]}))
        sampler.update(batch)
    stats = sampler.driver.book.stats()
    assert stats.steps == 3 and stats.rows == 12 and stats.dead_groups == 12
    state = sampler.state_dict()
    again = PrerollCurriculumSampler(data_source=dataset, data_config=config)
    again.load_state_dict(state)
    assert again.driver.book.stats() == stats
    assert list(again.driver.plan(4, 1).indices) == list(sampler.driver.plan(4, 1).indices)


def test_legacy_sampler_resume_builds_one_book_and_reads_the_warm_start_once(dataset, parquet, tmp_path,
                                                                           monkeypatch):
    """StatefulDataLoader resumes a sampler by constructing it (which builds the book and reads its warm start)
    and then calling load_state_dict: that restores into the same book, no second build and read."""
    import preroll.online.book as book_module
    from preroll.online import PromptBook

    preroll = {"pool_factor": 3, "settings": SETTINGS}
    earlier = PrerollCurriculumSampler(data_source=dataset, data_config=data_config(parquet, train_batch_size=4,
                                                                                    sampler={"preroll": preroll}))
    earlier.driver.book.record(0, [0, 1, 2], [[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    warm = earlier.driver.book.save(tmp_path / "earlier_run.npz")
    preroll["settings"] = {**SETTINGS, "warm_start": str(warm)}
    config = data_config(parquet, train_batch_size=4, sampler={"preroll": preroll})
    reads, builds = [], []
    read, init = book_module.read_evidence, PromptBook.__init__

    def counted_read(*args, **kwargs):
        reads.append(args[0])
        return read(*args, **kwargs)

    def counted_init(self, *args, **kwargs):
        builds.append(1)
        init(self, *args, **kwargs)

    monkeypatch.setattr(book_module, "read_evidence", counted_read)
    monkeypatch.setattr(PromptBook, "__init__", counted_init)
    sampler = PrerollCurriculumSampler(data_source=dataset, data_config=config)
    sampler.driver.book.record(1, [3, 4], [[1.0, 0.0], [0.0, 0.0]])
    state = sampler.state_dict()
    resumed = PrerollCurriculumSampler(data_source=dataset, data_config=config)
    assert (len(reads), len(builds)) == (2, 2)      # one per constructed sampler
    book = resumed.driver.book
    resumed.load_state_dict(state)
    assert (len(reads), len(builds)) == (2, 2)      # the restore read and built nothing more
    assert resumed.driver.book is book and book.stats() == sampler.driver.book.stats()
    assert np.array_equal(book.warm_a_, sampler.driver.book.warm_a_) and book.warm_a_.sum() > 0
    assert list(resumed.driver.plan(4, 1).indices) == list(sampler.driver.plan(4, 1).indices)


def test_legacy_sampler_resume_builds_no_neighbour_graph(dataset, parquet, monkeypatch):
    """The graph is built at the first batch, not in the constructor: a resumed sampler (constructed, then
    restored from a state holding the graph) never builds one; a fresh one builds it once."""
    builds = _count_graph_builds(monkeypatch)
    config = data_config(parquet, train_batch_size=4,
                         sampler={"preroll": {"settings": {**SETTINGS, "encoder": "lexical"}}})
    sampler = PrerollCurriculumSampler(data_source=dataset, data_config=config)
    first = [i for _, i in zip(range(4), iter(sampler))]
    assert len(builds) == 1 and len(set(first)) == 4
    sampler.driver.book.record(1, first[:2], [[1.0, 0.0], [1.0, 1.0]])
    state = sampler.state_dict()
    resumed = PrerollCurriculumSampler(data_source=dataset, data_config=config)
    resumed.load_state_dict(state)
    nxt = [i for _, i in zip(range(4), iter(resumed))]
    assert len(builds) == 1
    assert np.array_equal(resumed.driver.book._graph[0], sampler.driver.book._graph[0])
    assert nxt == [i for _, i in zip(range(4), iter(sampler))]


def test_legacy_sampler_refuses_per_prompt_n(dataset, parquet):
    config = data_config(parquet, sampler={"preroll": {"mode": "allocate"}})
    with pytest.raises(OnlineInputError, match=r"data\.sampler\.preroll\.mode"):
        PrerollCurriculumSampler(data_source=dataset, data_config=config)


def test_trainer_setup_batches_and_checkpoint(parquet, tmp_path):
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    cfg = verl_config(parquet, tmp_path, {"mode": "allocate", "pool_factor": 2, "max_rollouts": 8,
                                           "settings": SETTINGS})
    trainer = bare_trainer(cfg)
    assert trainer.trainer_mode == "sync" and type(trainer.replay_buffer) is ReplayBuffer
    td = trainer._next_train_batch()                 # a main batch: per-prompt n, budget 8 x 4
    n = [int(x) for x in list(td["__rollout_n__"])]
    assert sum(n) == 32 and trainer._preroll_batch_prompts == len(td)
    assert set(trainer.preroll.uid_positions) == set(list(td["uid"]))
    refill = trainer._next_train_batch(3)            # verl refilling failed groups: fixed n
    assert len(refill) == 3 and "__rollout_n__" not in refill.keys()

    trainer.preroll.book.record(1, [0, 1], [[1.0, 0.0], [1.0, 1.0]])
    folder = tmp_path / "ckpt" / "global_step_1"
    trainer.preroll.save(folder)
    fresh = bare_trainer(cfg)
    assert fresh.preroll.load(folder)
    assert fresh.preroll.book.stats() == trainer.preroll.book.stats()
    assert fresh.preroll.walker.state_dict() == trainer.preroll.walker.state_dict()
    assert fresh.preroll.uid_positions == trainer.preroll.uid_positions


def test_trainer_config_errors_name_the_key(parquet, tmp_path):
    cfg = verl_config(parquet, tmp_path, {"mode": "sometimes"})
    with pytest.raises(OnlineInputError, match=r"trainer\.v1\.preroll\.mode"):
        bare_trainer(cfg)
    cfg = verl_config(parquet, tmp_path, {"settings": {"reward_range": [1, 0]}})
    with pytest.raises(OnlineInputError, match=r"trainer\.v1\.preroll\.settings"):
        bare_trainer(cfg)
    cfg = verl_config(parquet, tmp_path, {"mode": "allocate"})
    cfg.algorithm.filter_groups = {"enable": True, "metric": "acc"}
    with pytest.raises(OnlineInputError, match="filter_groups"):
        bare_trainer(cfg)


# The override list of docs/verl.md ("Configuration"), minus the rest of a normal GRPO run.
DOC_OVERRIDES = ["algorithm.adv_estimator=grpo", "data.train_files=train.parquet", "data.val_files=test.parquet",
                 "data.train_batch_size=512", "actor_rollout_ref.rollout.n=8", "trainer.v1.trainer_mode=preroll",
                 "+trainer.v1.preroll.mode=allocate", "+trainer.v1.preroll.pool_factor=4",
                 "+trainer.v1.preroll.min_rollouts=2", "+trainer.v1.preroll.max_rollouts=32",
                 "+trainer.v1.preroll.settings={reward_range:[0,1],encoder:lexical}"]


def _compose(overrides):
    """verl's own Hydra config (``verl/trainer/config/ppo_trainer.yaml``), as ``main_ppo`` composes it."""
    import verl
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(verl.__file__).parent / "trainer/config"), version_base=None):
        return compose(config_name="ppo_trainer", overrides=overrides)


def test_documented_overrides_compose_with_verls_hydra_config():
    from hydra.errors import ConfigCompositionException

    cfg = _compose(DOC_OVERRIDES)
    assert cfg.trainer.use_v1 is True                    # the v1 trainer is verl 0.9's default
    from verl.trainer.ppo.v1 import get_trainer_cls

    assert get_trainer_cls(cfg.trainer.v1.trainer_mode) is verl_trainer.PrerollPPOTrainer  # as TaskRunnerV1 does
    parsed = PrerollVerlConfig.parse(cfg.trainer.v1.preroll)
    assert (parsed.mode, parsed.pool_factor, parsed.min_rollouts, parsed.max_rollouts) == ("allocate", 4, 2, 32)
    assert parsed.settings == OnlineSettings(reward_range=(0, 1), encoder="lexical")
    assert parsed.online_settings().reward_range == (0.0, 1.0)
    # the preroll block is not in verl's schema: without the leading '+' Hydra refuses the key
    with pytest.raises(ConfigCompositionException):
        _compose([o.lstrip("+") for o in DOC_OVERRIDES])


def test_checkpoint_through_verls_save_and_resume(parquet, tmp_path):
    """verl's _save_checkpoint / _load_checkpoint (data.pt, latest_checkpointed_iteration.txt, resume_mode auto)."""
    saved = []

    class ActorGroup:             # the FSDP worker group's place: records what verl asked it to save and load
        def save_checkpoint(self, local_path, remote_path, global_steps, max_ckpt_to_keep=None):
            step_dir = Path(local_path).parent
            # preroll's files are in place before verl writes its own and marks the step as the latest
            saved.append(((step_dir / "preroll_book.npz").exists(), (step_dir / "preroll_pool.json").exists(),
                          (step_dir.parent / "latest_checkpointed_iteration.txt").exists()))

        def load_checkpoint(self, local_path, del_local_after_load=False):
            saved.append(("load", Path(local_path).parent.name))

    cfg = verl_config(parquet, tmp_path, {"mode": "allocate", "pool_factor": 2, "max_rollouts": 8,
                                          "settings": SETTINGS}, adv_estimator="grpo")
    cfg.trainer.resume_mode = "auto"
    trainer = bare_trainer(cfg)
    trainer.actor_rollout_wg = ActorGroup()
    trainer._next_train_batch()
    trainer.preroll.book.record(1, [0, 1], [[1.0, 0.0], [1.0, 1.0]])
    trainer.global_steps = 3
    trainer._save_checkpoint()
    ckpt = Path(cfg.trainer.default_local_dir)
    assert saved == [(True, True, False)]
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text() == "3"
    assert (ckpt / "global_step_3" / "data.pt").exists()

    fresh = bare_trainer(cfg)
    fresh.actor_rollout_wg = ActorGroup()
    fresh._load_checkpoint()                             # verl finds global_step_3, then preroll restores its book
    assert fresh.global_steps == 3 and saved[-1] == ("load", "global_step_3")
    assert fresh.preroll.book.stats() == trainer.preroll.book.stats()
    assert fresh.preroll.walker.state_dict() == trainer.preroll.walker.state_dict()
    assert fresh.preroll.uid_positions == trainer.preroll.uid_positions
    assert list(fresh.preroll.plan(8, 4).indices) == list(trainer.preroll.plan(8, 4).indices)


def _count_graph_builds(monkeypatch) -> list[int]:
    import preroll.online.book as book_module

    builds: list[int] = []
    build = book_module.neighbour_graph
    monkeypatch.setattr(book_module, "neighbour_graph", lambda *a, **k: builds.append(1) or build(*a, **k))
    return builds


class _Actor:
    """The FSDP worker group's place in verl's _save_checkpoint / _load_checkpoint."""

    def save_checkpoint(self, *args, **kwargs):
        pass

    def load_checkpoint(self, *args, **kwargs):
        pass


def test_resume_loads_the_saved_book_and_graph_instead_of_building_them(parquet, tmp_path, monkeypatch):
    """A trainer that resumes (verl's resume_mode auto or resume_path) or starts from book_path reads the saved
    book, neighbour graph included, when it is built: no embedding and no graph build (minutes at 1M prompts)."""
    builds = _count_graph_builds(monkeypatch)
    lexical = {**SETTINGS, "encoder": "lexical"}
    cfg = verl_config(parquet, tmp_path, {"settings": lexical}, adv_estimator="grpo")
    cfg.trainer.resume_mode = "auto"
    trainer = bare_trainer(cfg)                      # nothing to resume: the book is built, once
    trainer.actor_rollout_wg = _Actor()
    trainer._load_checkpoint()
    assert len(builds) == 1 and trainer.preroll.book._graph is not None
    trainer._next_train_batch()
    trainer.preroll.book.record(1, [0, 1, 2], [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    trainer.global_steps = 2
    trainer._save_checkpoint()
    saved = trainer.preroll.book.stats()
    folder = Path(cfg.trainer.default_local_dir) / "global_step_2"

    resumed = bare_trainer(cfg)                      # verl's init: _init_dataloader ... _load_checkpoint
    resumed.actor_rollout_wg = _Actor()
    resumed._load_checkpoint()
    assert len(builds) == 1 and resumed.global_steps == 2
    assert resumed.preroll.book.stats() == saved
    assert np.array_equal(resumed.preroll.book._graph[0], trainer.preroll.book._graph[0])
    assert list(resumed.preroll.plan(8, 4).indices) == list(trainer.preroll.plan(8, 4).indices)

    cfg.trainer.resume_mode, cfg.trainer.resume_from_path = "resume_path", str(folder)
    again = bare_trainer(cfg)
    again.actor_rollout_wg = _Actor()
    again._load_checkpoint()
    assert len(builds) == 1 and again.global_steps == 2 and again.preroll.book.stats() == saved

    started = bare_trainer(verl_config(parquet, tmp_path / "next", {"settings": lexical, "book_path": str(folder)}))
    assert len(builds) == 1 and started.preroll.book.stats() == saved


def test_resume_from_a_checkpoint_without_a_book_falls_back_to_book_path(parquet, tmp_path, monkeypatch, caplog):
    builds = _count_graph_builds(monkeypatch)
    lexical = {**SETTINGS, "encoder": "lexical"}
    first = bare_trainer(verl_config(parquet, tmp_path / "first", {"settings": lexical}))
    first.preroll.book.record(1, [0, 1], [[1.0, 0.0], [1.0, 1.0]])
    first.preroll.save(tmp_path / "start")
    cfg = verl_config(parquet, tmp_path, {"settings": lexical, "book_path": str(tmp_path / "start")},
                      adv_estimator="grpo")
    folder = Path(cfg.trainer.default_local_dir) / "global_step_4"
    folder.mkdir(parents=True)                     # a checkpoint written without the preroll trainer
    cfg.trainer.resume_mode, cfg.trainer.resume_from_path = "resume_path", str(folder)
    trainer = bare_trainer(cfg)
    trainer.actor_rollout_wg = _Actor()
    with caplog.at_level("WARNING"):
        trainer._load_checkpoint()
    assert len(builds) == 1                         # the first trainer's; the second read book_path's graph
    assert trainer.global_steps == 4 and trainer.preroll.book.stats() == first.preroll.book.stats()
    assert "no preroll book in" in caplog.text and "starts from" in caplog.text


def test_remote_checkpoint_mirror_and_resume_from_a_remote_book_path(parquet, tmp_path):
    """With trainer.default_hdfs_dir set, verl mirrors the actor's checkpoint there; the book goes there too, and
    ``book_path`` starts a run from it (fsspec's in-memory filesystem stands in for object storage)."""
    fsspec = pytest.importorskip("fsspec")
    remotes = []

    class ActorGroup:
        def save_checkpoint(self, local_path, remote_path, global_steps, max_ckpt_to_keep=None):
            remotes.append(remote_path)

    cfg = verl_config(parquet, tmp_path, {"settings": SETTINGS}, adv_estimator="grpo")
    cfg.trainer.default_hdfs_dir = "memory://remote-ckpt/run1"
    trainer = bare_trainer(cfg)
    trainer.actor_rollout_wg = ActorGroup()
    trainer._next_train_batch()
    trainer.preroll.book.record(1, [0, 1], [[1.0, 0.0], [-3.0, 2.0]])
    trainer.global_steps = 2
    trainer._save_checkpoint()
    assert remotes == ["memory://remote-ckpt/run1/global_step_2/actor"]
    fs = fsspec.filesystem("memory")
    assert fs.exists("/remote-ckpt/run1/global_step_2/preroll_book.npz")
    assert fs.exists("/remote-ckpt/run1/global_step_2/preroll_pool.json")

    cfg2 = verl_config(parquet, tmp_path / "second", {"settings": SETTINGS,
                                                       "book_path": "memory://remote-ckpt/run1/global_step_2"})
    fresh = bare_trainer(cfg2)
    assert fresh.preroll.book.stats() == trainer.preroll.book.stats()
    assert fresh.preroll.walker.state_dict() == trainer.preroll.walker.state_dict()


def test_book_group_size_is_rollout_n(parquet, tmp_path):
    cfg = verl_config(parquet, tmp_path, {"settings": SETTINGS})
    cfg.actor_rollout_ref.rollout.n = 6
    assert bare_trainer(cfg).preroll.book.settings.group_size == 6    # was 8 whatever rollout.n was
    cfg.actor_rollout_ref.rollout.n = 1
    with pytest.raises(OnlineInputError, match=r"rollout\.n: is 1"):
        bare_trainer(cfg)


def test_trl_and_verl_give_the_same_prompt_ids_for_the_same_rows(dataset, parquet):
    """One dataset (chat prompts with a system turn), read by each trainer's own loader: the same book ids."""
    pytest.importorskip("trl")
    import pandas as pd
    from datasets import Dataset

    from preroll.integrations.trl.trainer import _dataset_prompts
    from preroll.online import PromptBook

    frame = pd.read_parquet(parquet)
    rows = [[dict(m) for m in p] for p in frame["prompt"]]
    assert any(m["role"] == "system" for m in rows[0])
    trl_prompts, _ = _dataset_prompts(Dataset.from_dict({"prompt": rows}), "id")
    verl_prompts = verl_trainer.dataset_prompts(dataset)
    assert trl_prompts == verl_prompts
    settings = OnlineSettings(encoder="none")
    assert PromptBook(trl_prompts, settings=settings).ids == PromptBook(verl_prompts, settings=settings).ids


def test_trainer_registers_through_verls_plugin_entry_point(tmp_path):
    """The ``verl.plugins`` entry point declared in pyproject.toml, found by verl's own discovery at ``import verl``
    (a dist-info built from that declaration stands in for the installed package's metadata)."""
    import tomllib

    import verl

    repo = Path(__file__).resolve().parents[1]
    declared = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["entry-points"]
    assert 'group="verl.plugins"' in (Path(verl.__file__).read_text())     # the group verl 0.9 reads
    plugins = declared["verl.plugins"]
    assert plugins == {"preroll": "preroll.integrations.verl.trainer"}
    dist = tmp_path / "preroll_plugin_check-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: preroll-plugin-check\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[verl.plugins]\n" + "".join(f"{k} = {v}\n" for k, v in plugins.items()))
    code = ("import verl\nfrom verl.trainer.ppo.v1 import get_trainer_cls\n"
            "try:\n    cls = get_trainer_cls('preroll')\nexcept Exception as exc:\n    print('unregistered')\n"
            "else:\n    print(cls.__module__, cls.__name__)\n")
    env = {k: v for k, v in os.environ.items() if k != "VERL_USE_EXTERNAL_MODULES"}
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{repo}"
    found = {}
    for policy in ("auto", "none"):
        out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True,
                             env={**env, "VERL_USE_EXTERNAL_PLUGINS": policy}, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        found[policy] = out.stdout.strip().splitlines()[-1]
    assert found["auto"] == "preroll.integrations.verl.trainer PrerollPPOTrainer"
    # with verl's plugin discovery off, only an installed preroll (editable, declaring it too) could register it
    if found["none"] != "unregistered":
        pytest.fail(f"registered without plugin discovery: {found['none']}")
