"""One verl 0.9 v1 training step on the CPU with the preroll trainer, through verl's real TransferQueue.

What runs is verl's own code: ``PPOTrainer.step`` -> ``prepare_step`` -> the
preroll ``_next_train_batch`` -> verl's ``_submit_batch_to_rollout`` (prompt
tags into the TransferQueue) -> ``AgentLoopWorkerTQ.generate_sequences`` /
``_run_prompt`` (reads ``__rollout_n__``) / ``_agent_loop_postprocess``
(trajectory keys, fields and tags into the TransferQueue) -> the sync
``ReplayBuffer.sample`` -> ``_balance_batch`` (adds verl's padding rows) ->
``_compute_old_log_prob`` (bypass mode: the rollout log-probs) ->
``_compute_advantage`` (GRPO over each uid's final session outputs) -> the
preroll read-back of ``rm_scores`` into the prompt book.

What stands in for the GPU parts: the LLM (an agent loop registered with
verl's ``@register`` that scripts responses and rewards instead of calling a
server), the actor worker group (asked only for its data-parallel layout:
one rank) and the actor update (not run). TransferQueue runs under a local
Ray (about 15 s to start and stop on this machine).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from verl_testing import SETTINGS, bare_trainer, needs, verl_config, write_parquet

needs("verl")
tq = needs("transfer_queue")
ray = needs("ray")
torch = needs("torch")

from omegaconf import OmegaConf  # noqa: E402
from verl.experimental.agent_loop.agent_loop import (  # noqa: E402
    AgentLoopBase,
    AgentLoopMetrics,
    AgentLoopOutput,
    register,
)
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ  # noqa: E402
from verl.utils.dataset.rl_dataset import get_dataset_class  # noqa: E402

AGENT = "preroll_scripted_test_agent"


def scripted_reward(index: int, session: int) -> float:
    """The reward the scripted rollout of session ``session`` of dataset row ``index`` earns (mixed per prompt)."""
    return float((index * 7 + session * 3) % 5 < 2)


def scripted_turns(index: int) -> int:
    """Odd rows are two-turn sessions (two outputs, the reward on both as verl copies it)."""
    return 2 if index % 2 else 1


@register(AGENT)
class ScriptedAgentLoop(AgentLoopBase):
    """The LLM's place in verl's agent loop: fixed token ids, a scripted reward and rollout log-probs."""

    async def run(self, sampling_params, **kwargs):
        index, session = int(kwargs["index"]), int(kwargs["session_id"])
        reward = scripted_reward(index, session)
        outputs = []
        for turn in range(scripted_turns(index)):
            length = 3 + (index + session + turn) % 4
            outputs.append(AgentLoopOutput(
                prompt_ids=[101, 7 + index % 50, 102], response_ids=[200 + turn] * length,
                response_mask=[1] * length, response_logprobs=[-0.5] * length, num_turns=2 * (turn + 1),
                metrics=AgentLoopMetrics(),
                reward_score=reward if turn == scripted_turns(index) - 1 else None,
                extra_fields={"reward_extra_info": {"acc": reward}} if turn == scripted_turns(index) - 1 else {}))
        return outputs


class InProcessAgentLoop:
    """verl's ``AgentLoopManagerTQ.generate_sequences`` without a Ray actor: one ``AgentLoopWorkerTQ``.

    The worker is verl's class (not a copy); its constructor is skipped because
    it loads the model config and tools, so the attributes its generation path
    reads are set here. ``generate_sequences`` waits for the background
    sessions, as the next ``ReplayBuffer.sample`` would.
    """

    def __init__(self, config, tokenizer):
        worker = object.__new__(AgentLoopWorkerTQ.__ray_metadata__.modified_class)
        worker.config, worker.tokenizer, worker.processor, worker.hf_model_type = config, tokenizer, None, None
        worker.llm_client, worker.teacher_client, worker.reward_loop_worker_handles = None, None, None
        worker.dataset_cls, worker.tools, worker.mm_processor_kwargs = get_dataset_class(config.data), [], {}
        worker.distillation_enabled, worker.background_tasks = False, set()
        self.worker = worker

    def generate_sequences(self, batch):
        async def run():
            await self.worker.generate_sequences(batch)
            while self.worker.background_tasks:
                await asyncio.gather(*list(self.worker.background_tasks))

        asyncio.run(run())


@pytest.fixture(scope="module")
def transfer_queue():
    started_here = not ray.is_initialized()
    if started_here:         # a local cluster of our own ("local": never a RAY_ADDRESS from the environment)
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        # one storage unit: the default two plus the controller did not start under num_cpus=2 on 2 cores
        tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
        yield tq
        tq.close()
    finally:
        if started_here:
            ray.shutdown()


def _cpu_trainer(tmp_path):
    parquet = write_parquet(tmp_path / "train.parquet")
    cfg = verl_config(parquet, tmp_path, {"mode": "allocate", "pool_factor": 2, "min_rollouts": 2, "max_rollouts": 8,
                                          "settings": SETTINGS},
                      adv_estimator="grpo")
    cfg.algorithm.rollout_correction.bypass_mode = True       # old log-probs = rollout log-probs (no actor pass)
    cfg.actor_rollout_ref.actor.ppo_mini_batch_size = 8       # batch multiple 8 x 4 = 32 trajectories
    cfg.actor_rollout_ref.rollout.agent.default_agent_loop = AGENT
    trainer = bare_trainer(cfg)
    trainer.tokenizer.eos_token = "[SEP]"     # verl pads with EOS; a chat LLM's tokenizer has one, BERT's has not
    trainer.agent_loop_manager = InProcessAgentLoop(cfg, trainer.tokenizer)
    trainer.reward_loop_manager = SimpleNamespace(reward_loop_worker_handles=["rewards come from the agent loop"])
    trainer.actor_rollout_wg = SimpleNamespace(_dispatch_info={"actor": [0]})   # one data-parallel rank
    trainer.checkpoint_manager = SimpleNamespace(sleep_replicas=lambda: None)
    trainer.curr_step_profile = False
    trainer._update_actor = lambda batch, metrics: batch                         # the GPU part
    return trainer


def test_one_v1_step_feeds_per_prompt_groups_to_grpo_and_the_book(transfer_queue, tmp_path):
    trainer = _cpu_trainer(tmp_path)
    # an earlier step with success rates 0/6 .. 6/6 across the prompts, so the book's allocation is uneven
    rows = list(range(len(trainer.train_dataset)))
    trainer.preroll.book.record(0, rows, [[1.0] * (p % 7) + [0.0] * (6 - p % 7) for p in rows])
    metrics, timing = {}, {}
    batch = trainer.step(metrics, timing)                 # PrerollPPOTrainer.step -> verl's PPOTrainer.step

    plan = trainer.preroll.last_plan_
    assert plan.rollouts == 8 * 4 and len(set(plan.rollout_n.tolist())) > 1     # per-prompt n, verl's budget
    real = [k for k, tag in zip(batch.keys, batch.tags) if not tag.get("is_padding", False)]
    padding = [k for k, tag in zip(batch.keys, batch.tags) if tag.get("is_padding", False)]
    positions = {int(p): int(n) for p, n in zip(plan.indices, plan.rollout_n)}
    assert len(real) == sum(n * scripted_turns(1000 + p) for p, n in positions.items())
    assert padding and len(batch) % 32 == 0               # verl's _balance_batch padded to the mini-batch multiple

    # verl's agent loop ran __rollout_n__ sessions per prompt: sessions per uid = the plan's n
    data = tq.kv_batch_get(keys=real, partition_id="train", select_fields=["uid", "index", "advantages", "rm_scores"])
    index_of_uid = {u: int(i) for u, i in zip(list(data["uid"]), list(data["index"]))}
    sessions = {}
    for key in real:
        uid, session, _ = key.rsplit("_", 2)
        sessions.setdefault(uid, set()).add(int(session))
    assert {index_of_uid[u] - 1000: len(s) for u, s in sessions.items()} == positions

    # verl's GRPO advantage: each uid is one group of its n sessions, every output of a session shares its value
    expected = {}
    for uid, ses in sessions.items():
        rewards = torch.tensor([scripted_reward(index_of_uid[uid], s) for s in sorted(ses)])
        mean, std = (rewards.mean(), rewards.std()) if len(rewards) > 1 else (torch.tensor(0.0), torch.tensor(1.0))
        expected.update({f"{uid}_{s}": a for s, a in zip(sorted(ses), ((rewards - mean) / (std + 1e-6)).tolist())})
    got = [row[0].item() for row in data["advantages"].unbind()]
    want = [expected[key.rsplit("_", 1)[0]] for key in real]
    assert got == pytest.approx(want, abs=1e-5) and any(abs(a) > 0.1 for a in want)

    # the book got one reward per session, credited to the dataset row the plan chose
    hist = trainer.preroll.book.history()
    step1 = hist["step"] == 1
    seen = dict(zip(hist["index"][step1].tolist(),
                    zip(hist["successes"][step1].tolist(), hist["attempts"][step1].tolist())))
    assert seen == {p: (sum(scripted_reward(1000 + p, s) for s in range(n)), n) for p, n in positions.items()}
    assert metrics["preroll/groups"] == len(positions) and metrics["preroll/rollouts"] == 32
    assert metrics["preroll/unmatched_groups"] == 0 and not trainer.preroll.uid_positions
    tq.kv_clear(keys=batch.keys, partition_id="train")
