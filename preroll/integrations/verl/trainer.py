"""``PrerollPPOTrainer``: verl's v1 synchronous PPO/GRPO trainer with the prompt book choosing what to roll out.

Importing this module registers the trainer under ``trainer.v1.trainer_mode=preroll``
(verl's ``@register_trainer``). verl builds the trainer inside its Ray task
runner, so the module must be imported there. preroll declares it as a
``verl.plugins`` entry point (pyproject.toml), which verl >= 0.9 loads whenever
``verl`` is imported, in every process where preroll is installed: nothing to
set. ``VERL_USE_EXTERNAL_MODULES=preroll.integrations.verl.trainer`` still works
(e.g. with ``VERL_USE_EXTERNAL_PLUGINS=none``). See docs/verl.md.

What changes against verl's ``sync`` trainer, and nothing else:

1. **Before rollout** (``_next_train_batch``): a pool of ``pool_factor`` x
   batch prompts is drawn; the book selects the batch (``mode: select``) or
   spreads batch x rollout.n rollouts over the pool (``mode: allocate``, written
   to each prompt's ``__rollout_n__``, which verl's agent loop reads).
2. **After the step** (``step``): each trajectory's reward (``rm_scores``
   summed) is read back from the TransferQueue, grouped by uid and recorded in
   the book; ``preroll/*`` metrics go to verl's logger.
3. **Checkpoints**: the book and the pool position are saved beside verl's
   ``data.pt``, mirrored to ``trainer.default_hdfs_dir/global_step_N`` when verl
   mirrors its checkpoints there (``hdfs://`` through verl's own copy, other
   URLs through fsspec), and restored on resume.
"""

from __future__ import annotations

import logging
import os
import uuid

import numpy as np

from preroll.integrations.verl._require import require_verl

require_verl()

import transfer_queue as tq  # noqa: E402  (verl dependency)
from verl.trainer.ppo.v1.trainer_base import register_trainer  # noqa: E402
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync  # noqa: E402
from verl.utils import tensordict_utils as tu  # noqa: E402
from verl.utils.dataset.rl_dataset import collate_fn  # noqa: E402

from preroll.integrations.core.store import has_state  # noqa: E402
from preroll.integrations.verl.driver import BOOK_FILE, CONFIG_PATH, PrerollDriver, PrerollVerlConfig  # noqa: E402
from preroll.integrations.verl.outcomes import sequence_scores  # noqa: E402
from preroll.integrations.verl.plan import RolloutPlan, message_text  # noqa: E402
from preroll.online.errors import OnlineInputError  # noqa: E402

logger = logging.getLogger(__name__)
TRAINER_NAME = "preroll"


def dataset_prompts(dataset) -> list[str]:
    """Prompt texts of a verl ``RLHFDataset`` (its ``prompt_key`` column), in dataset order."""
    frame = getattr(dataset, "dataframe", None)
    key = getattr(dataset, "prompt_key", "prompt")
    if frame is None:
        raise OnlineInputError(f"{type(dataset).__name__} has no 'dataframe'; the preroll trainer needs verl's "
                               "RLHFDataset (or a subclass) to read the prompts", field="data.custom_cls")
    return [message_text(p) for p in frame[key]]


def build_batch(dataset, plan: RolloutPlan, global_steps: int):
    """The TensorDict verl's agent loop expects for the planned prompts, plus their uids.

    Rows come from ``dataset[i]`` and verl's own ``collate_fn``, exactly as the
    dataloader would have produced them; ``__rollout_n__`` is set per prompt
    when the plan has per-prompt n.
    """
    batch_dict = collate_fn([dataset[int(i)] for i in plan.indices])
    uids = np.array([str(uuid.uuid4()) for _ in range(len(plan))], dtype=object)
    batch_dict["uid"] = uids
    if plan.rollout_n is not None:
        batch_dict["__rollout_n__"] = np.array([int(n) for n in plan.rollout_n], dtype=object)
    batch = tu.get_tensordict(batch_dict)
    tu.assign_non_tensor_data(batch, "global_steps", global_steps)
    return batch, uids


def trajectory_scores(batch_meta) -> tuple[list[str], np.ndarray]:
    """Keys and summed rewards of the real (non-padding) trajectories of a finished v1 step."""
    keys = [k for k, tag in zip(batch_meta.keys, batch_meta.tags) if not tag.get("is_padding", False)]
    if not keys:
        return [], np.zeros(0)
    data = tq.kv_batch_get(keys=keys, partition_id=batch_meta.partition_id, select_fields=["rm_scores"])
    return keys, sequence_scores(list(data["rm_scores"]))


def remote_upload(local: str, url: str) -> None:
    """Copy a finished local file (or a file already in the same store, by URL) to a remote folder the way verl
    copies its own checkpoints.

    ``hdfs://`` goes through verl's ``hdfs_io`` (the ``hdfs`` command line, as
    verl's checkpoint managers do: ``-put``, or ``-cp`` from an ``hdfs://`` source); any other URL through fsspec.
    """
    if url.startswith("hdfs://"):
        from verl.utils import hdfs_io

        hdfs_io.makedirs(url.rsplit("/", 1)[0], exist_ok=True)
        if not hdfs_io.copy(local, url):
            raise OSError(f"could not copy {local} to {url}")
        return
    from preroll.integrations.core.store import fsspec_upload

    fsspec_upload(local, url)


@register_trainer(TRAINER_NAME)
class PrerollPPOTrainer(PPOTrainerSync):
    """verl's synchronous v1 trainer whose batches are chosen by :class:`preroll.online.PromptBook`."""

    def _build_replay_buffer(self):
        # verl reads ``trainer_mode`` both to find this class and, afterwards, as "sync or async"
        # (replay buffer, refill, checkpoint of in-flight prompts). This trainer runs the sync loop.
        self.trainer_mode = "sync"
        self.preroll_config = PrerollVerlConfig.parse(self.config.trainer.v1.get(TRAINER_NAME, None))
        if self.preroll_config.mode == "allocate":
            filter_groups = self.config.algorithm.get("filter_groups", None)
            if filter_groups is not None and filter_groups.get("enable", False):
                raise OnlineInputError("mode 'allocate' varies the prompts per batch; verl's group filtering "
                                       "(algorithm.filter_groups) counts fixed batches: use mode 'select'",
                                       field=f"{CONFIG_PATH}.mode")
        return super()._build_replay_buffer()

    def _init_dataloader(self):
        super()._init_dataloader()
        # The book a resume or ``book_path`` starts from is loaded instead of built: building embeds the dataset
        # and computes the neighbour graph (minutes at a million prompts), which the saved book holds already.
        start = self._preroll_start_folder()
        self.preroll = PrerollDriver(dataset_prompts(self.train_dataset), self.preroll_config,
                                     seed=int(self.config.data.get("seed", None) or 0),
                                     group_size=int(self.config.actor_rollout_ref.rollout.n), prepare=start is None)
        self._preroll_loaded_from: str | None = None
        if start is not None:
            if not self.preroll.load(start):
                raise OnlineInputError(f"{start}: holds no preroll book", field=f"{CONFIG_PATH}.book_path")
            self._preroll_loaded_from = start
            self.preroll.prepare()        # nothing to do unless the saved graph file was missing
        self._preroll_batch_prompts: int | None = None
        self._preroll_metrics: dict[str, float] = {}

    def _preroll_resume_folder(self) -> str | None:
        """The checkpoint folder verl's ``_load_checkpoint`` will resume from (its own rules), or None."""
        trainer = self.config.trainer
        if trainer.resume_mode == "auto" and trainer.get("default_local_dir", None):
            from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path

            folder = find_latest_ckpt_path(os.path.abspath(trainer.default_local_dir))
        elif trainer.resume_mode == "resume_path" and isinstance(trainer.resume_from_path, str):
            folder = trainer.resume_from_path
        else:
            return None
        return os.path.abspath(folder) if folder else None

    def _preroll_start_folder(self) -> str | None:
        """Where the book starts from: the checkpoint being resumed when it holds a book, else ``book_path``."""
        resume = self._preroll_resume_folder()
        if resume is not None and has_state(resume, book_file=BOOK_FILE):
            return resume
        return self.preroll_config.book_path or None

    # -- before rollout ---------------------------------------------------------------------------

    def _next_train_batch(self, num_prompts: int | None = None):
        refill = num_prompts is not None
        n_prompts = num_prompts if refill else self.config.data.train_batch_size
        plan = self.preroll.plan(n_prompts, self.config.actor_rollout_ref.rollout.n, refill=refill)
        batch, uids = build_batch(self.train_dataset, plan, self.global_steps)
        self.preroll.remember(uids, plan.indices)
        if not refill:
            self._preroll_batch_prompts = len(plan)
        return batch

    def _step_once(self, metrics, timing_raw, sample_batch_size):
        # With per-prompt n the batch holds as many prompts as the book gave rollouts to.
        if self.preroll_config.mode == "allocate" and self._preroll_batch_prompts is not None:
            sample_batch_size = self._preroll_batch_prompts
        return super()._step_once(metrics, timing_raw, sample_batch_size)

    # -- after the step ---------------------------------------------------------------------------

    def step(self, metrics, timing_raw):
        batch = super().step(metrics, timing_raw)
        keys, scores = trajectory_scores(batch)
        metrics.update(self.preroll.record_trajectories(self.global_steps, keys, scores))
        return batch

    # -- checkpoints ------------------------------------------------------------------------------

    def _save_checkpoint(self):
        step_folder = f"global_step_{self.global_steps}"
        self.preroll.save(os.path.join(self.config.trainer.default_local_dir, step_folder))
        remote = self.config.trainer.get("default_hdfs_dir", None)
        if remote:                           # where verl mirrors the actor's checkpoint, the book goes too
            self.preroll.save(f"{str(remote).rstrip('/')}/{step_folder}", upload=remote_upload)
        super()._save_checkpoint()           # after the book: verl then marks the step as the latest checkpoint

    def _load_checkpoint(self):
        super()._load_checkpoint()
        if self.global_steps <= 0:
            return
        if self.config.trainer.resume_mode == "resume_path":
            folder = os.path.abspath(self.config.trainer.resume_from_path)
        else:
            folder = os.path.abspath(os.path.join(self.config.trainer.default_local_dir,
                                                  f"global_step_{self.global_steps}"))
        if folder == self._preroll_loaded_from:     # read when the trainer was built
            return
        if self.preroll.load(folder):
            self._preroll_loaded_from = folder
            self.preroll.prepare()
        elif self._preroll_loaded_from is None:
            logger.warning("no preroll book in %s: the prompt book starts empty", folder)
        else:
            logger.warning("no preroll book in %s: the prompt book starts from %s", folder, self._preroll_loaded_from)
