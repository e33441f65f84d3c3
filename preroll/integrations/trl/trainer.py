"""``PrerollGRPOTrainer``: TRL's GRPO trainer whose prompts are chosen by a preroll prompt book.

Where the choice happens, and why there is no lag
-------------------------------------------------
TRL feeds generation batches from a dataloader that accelerate fetches one
batch ahead (and worker processes fetch further ahead). A sampler that asked
the book for its choices would therefore choose batch k+1 before the rewards
of batch k are known, and how far ahead depends on the dataloader settings.

So the choice is taken out of the dataloader: TRL's own sampler still runs and
sets the pace (batches per epoch, resume skipping), but its rows only tell the
trainer *that* a generation batch is due and which columns it carries. At
generation time (``_generate_and_score_completions``, train mode) the trainer
draws the next candidate pool, asks ``book.select`` for the B prompts, and
replaces the rows with those prompts, each repeated ``num_generations`` times in
TRL's own layout. The rewards of that batch are recorded (``book.record``) as
soon as TRL has gathered them, before the next generation. The choice for
generation batch k thus sees the rewards of every batch before k: the lag is
zero batches, whatever the prefetch depth (tested).

Several processes
-----------------
Every rank holds the same book and the same pool stream, calls ``select``
exactly once per generation batch, and takes its own contiguous slice of the
global batch (rank r: rows r*L .. (r+1)*L-1, as accelerate's batch sharding
does). Rewards are recorded from TRL's gathered ``rewards_per_func`` (all
ranks' rollouts, in rank order), so every rank applies the same update and the
books stay identical without any extra communication.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from transformers import TrainerCallback
from trl import GRPOTrainer

from preroll.integrations.core import PoolStream, prompt_text, trainer_book_settings
from preroll.integrations.core.store import RemoteGraph, load_state, save_state
from preroll.integrations.trl.errors import PrerollTRLError
from preroll.integrations.trl.rewards import check_weights, groups_for_book, weighted_rewards
from preroll.integrations.trl.settings import PrerollTRLSettings, make_trl_settings
from preroll.online import OnlineInputError, OnlineSettings, PromptBook


@dataclass(frozen=True)
class GenerationChoice:
    """One generation batch: the trainer step it was made at, the candidate pool and what the book chose."""

    step: int
    pool: np.ndarray
    indices: np.ndarray
    reason: np.ndarray
    p_success: np.ndarray


class _PrepareBook(TrainerCallback):
    """Builds the book's embeddings and neighbour graph at the start of ``train``: after a resume has loaded the
    saved book (and its graph), before the first step. Nothing to do when the loaded book brought its graph."""

    def __init__(self, trainer: "PrerollGRPOTrainer") -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.preroll_book.prepare()


def _dataset_prompts(train_dataset, id_column: str, explicit_id_column: bool = False
                     ) -> tuple[list[str], list | None]:
    from datasets import Dataset

    if train_dataset is None:
        raise PrerollTRLError("PrerollGRPOTrainer needs a train_dataset with a 'prompt' column "
                              "(the book keeps a memory per dataset prompt)")
    if not isinstance(train_dataset, Dataset):
        raise PrerollTRLError(f"PrerollGRPOTrainer needs a map-style datasets.Dataset (got "
                              f"{type(train_dataset).__name__}): the book chooses prompts by dataset index")
    if "prompt" not in train_dataset.column_names:
        raise PrerollTRLError(f"train_dataset has no 'prompt' column (columns: {train_dataset.column_names})")
    prompts = [prompt_text(check_prompt(p, row)) for row, p in enumerate(train_dataset["prompt"])]
    if id_column not in train_dataset.column_names:
        if explicit_id_column:
            raise PrerollTRLError(f"id_column {id_column!r} is not a train_dataset column "
                                  f"(columns: {train_dataset.column_names})")
        return prompts, None
    return prompts, list(train_dataset[id_column])


def check_prompt(prompt, row: int):
    """A dataset prompt the trainer can tokenize: text, or chat messages (dicts with text ``content``).

    Checked for every row when the trainer is built: a ``None`` or a number otherwise passes and
    stops training at the first step, inside the tokenizer, far from the row that caused it.
    """
    def bad(why: str) -> PrerollTRLError:
        return PrerollTRLError(f"train_dataset row {row}, column 'prompt': {why}")

    if isinstance(prompt, str):
        if not prompt.strip():
            raise bad("the prompt is empty")
        return prompt
    if not isinstance(prompt, list) or not prompt:
        got = "an empty list" if isinstance(prompt, list) else type(prompt).__name__
        raise bad(f"must be a string or a list of chat messages, got {got}")
    for i, message in enumerate(prompt):
        if not isinstance(message, dict) or "content" not in message:
            raise bad(f"message {i} must be a mapping with 'role' and 'content', got {type(message).__name__}")
        content = message["content"]
        if not isinstance(content, (str, list)):
            raise bad(f"message {i}: 'content' must be text or a list of content blocks, "
                      f"got {type(content).__name__}")
    return prompt


class PrerollGRPOTrainer(GRPOTrainer):
    """A drop-in :class:`trl.GRPOTrainer` that keeps a :class:`preroll.online.PromptBook` over the train dataset.

    Same constructor as ``GRPOTrainer`` plus ``preroll=`` (``None``, an
    :class:`~preroll.online.OnlineSettings` or a :class:`PrerollTRLSettings`).
    Each generation batch's B prompts are chosen by ``book.select`` from a
    pool of ``pool_factor * B`` candidates (consecutive windows of a seeded
    permutation of the dataset); every batch's rewards are recorded with
    ``book.record`` at the trainer's ``global_step``. The book's success of a
    rollout is TRL's weighted reward sum mapped to [0, 1] from ``reward_range`` when declared, else from the
    range of weighted sums seen so far (any reward works without a declaration).
    The book and the pool position are saved in every checkpoint and restored
    on resume. See docs/trl.md.
    """

    def __init__(self, *args, preroll: OnlineSettings | PrerollTRLSettings | None = None, **kwargs) -> None:
        self.preroll_settings = make_trl_settings(preroll)
        train_dataset = kwargs.get("train_dataset", args[3] if len(args) > 3 else None)
        prompts, ids = _dataset_prompts(train_dataset, self.preroll_settings.id_column,
                                        "id_column" in self.preroll_settings.model_fields_set)
        super().__init__(*args, **kwargs)
        book_settings = self._book_settings()
        names = list(self.reward_func_names)
        check_weights(self.reward_weights.cpu().numpy(), names)
        n_prompts = self.args.generation_batch_size // self.num_generations
        if n_prompts > len(prompts):
            raise PrerollTRLError(f"a generation batch needs {n_prompts} distinct prompts, the train_dataset has "
                                  f"{len(prompts)}")
        try:
            self.preroll_book = PromptBook(prompts, ids, settings=book_settings)
        except OnlineInputError as exc:
            where = f"train_dataset column {self.preroll_settings.id_column!r}" if exc.field == "ids" else "train_dataset"
            row = f" row {exc.index}" if exc.index is not None else ""
            raise PrerollTRLError(f"{where}{row}: {exc.reason}") from None
        # The embeddings and the neighbour graph are built when training starts (_PrepareBook), not here: a resume
        # loads the saved book, graph included, after the constructor, and building first would be wasted
        # (minutes at a million prompts).
        self.add_callback(_PrepareBook(self))
        self._preroll_remote_graph = RemoteGraph()    # saves to URLs copy the graph file the last one put there
        self.preroll_prompts_per_batch = n_prompts
        self.preroll_pool = PoolStream(len(prompts), book_settings.pool_factor * n_prompts, book_settings.seed)
        self.preroll_log: deque[GenerationChoice] = deque(maxlen=self.preroll_settings.log_size)
        self._preroll_rows: np.ndarray | None = None   # global dataset index of each rollout of the current batch

    def _book_settings(self) -> OnlineSettings:
        try:
            return trainer_book_settings(self.preroll_settings.book, group_size=self.num_generations,
                                         seed=int(self.args.seed), group_size_field="num_generations")
        except OnlineInputError as exc:
            raise PrerollTRLError(str(exc)) from None

    # -- choosing and recording -------------------------------------------------------------

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            self._preroll_rows = None
            return super()._generate_and_score_completions(inputs)
        inputs = self._preroll_choose(inputs)
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self._preroll_rows = None

    def _preroll_choose(self, inputs: list[dict]) -> list[dict]:
        """Replace the dataloader's rows by the book's choice, in TRL's layout (each prompt G times in a row)."""
        local = len(inputs)
        world = self.accelerator.num_processes
        total = local * world
        if total % self.num_generations:
            raise PrerollTRLError(f"generation batch of {total} rows is not a multiple of num_generations "
                                  f"{self.num_generations}")
        n = total // self.num_generations
        pool = self.preroll_pool.next()
        selection = self.preroll_book.select(pool, n)
        rows = np.repeat(selection.indices, self.num_generations)
        self._preroll_rows = rows
        self.preroll_log.append(GenerationChoice(step=int(self.state.global_step), pool=pool,
                                                 indices=selection.indices, reason=selection.reason,
                                                 p_success=selection.p_success))
        mine = rows[self.accelerator.process_index * local:(self.accelerator.process_index + 1) * local]
        keys = list(inputs[0].keys())
        fetched = {int(i): self.train_dataset[int(i)] for i in np.unique(mine)}
        return [{k: fetched[int(i)][k] for k in keys if k in fetched[int(i)]} for i in mine]

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self._preroll_rows is not None:
            self._preroll_record(rewards_per_func.detach().float().cpu().numpy())
        return rewards_per_func

    def _preroll_record(self, rewards_per_func: np.ndarray) -> None:
        rows = self._preroll_rows
        if len(rows) != len(rewards_per_func):
            raise PrerollTRLError(f"{len(rewards_per_func)} gathered rewards for {len(rows)} chosen rollouts "
                                  "(the global batch layout is not the one the book chose)")
        step = int(self.state.global_step)
        total = weighted_rewards(rewards_per_func, self.reward_weights.cpu().numpy())
        book = self.preroll_book
        indices, groups = groups_for_book(rows, total, book.settings.reward_range, step, book.ids)
        if indices:
            book.record(step, indices, groups)
        stats = book.stats()
        self._metrics["train"]["preroll/global_rate"].append(stats.global_rate)
        self._metrics["train"]["preroll/prompts_seen"].append(float(stats.prompts_seen))

    # -- checkpoints ------------------------------------------------------------------------

    def _save_checkpoint(self, model, trial):
        # The book goes into checkpoint-N/ *before* TRL's own files: whatever copies or uploads the folder once
        # TRL has written it (push_to_hub with hub_strategy="checkpoint", a sync job watching trainer_state.json)
        # finds the book there.
        if self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            self.preroll_save(folder)
        super()._save_checkpoint(model, trial)

    def preroll_save(self, folder: str | os.PathLike) -> None:
        """Write the book and the pool position into ``folder`` (a local path or any fsspec URL)."""
        save_state(folder, self.preroll_book, self.preroll_pool.state_dict(),
                   book_file=self.preroll_settings.book_file, pool_file=self.preroll_settings.pool_file,
                   graph=self._preroll_remote_graph)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            self.preroll_load(checkpoint)

    def preroll_load(self, checkpoint: str | os.PathLike) -> None:
        """Restore the book and the pool position from a checkpoint folder (local path or fsspec URL) written by
        this trainer."""
        names = dict(book_file=self.preroll_settings.book_file, pool_file=self.preroll_settings.pool_file)
        try:
            loaded = load_state(checkpoint, self.preroll_book, **names, graph=self._preroll_remote_graph)
            if loaded is None or loaded[1] is None:
                raise PrerollTRLError(f"{checkpoint}: no {names['book_file']} / {names['pool_file']} in this "
                                      "checkpoint (not written by PrerollGRPOTrainer?): resuming would restart the "
                                      "prompt book empty")
            book, pool = loaded
            self.preroll_pool.load_state_dict(pool)
            self.preroll_book = book
        except (OnlineInputError, ValueError, KeyError, OSError) as exc:
            raise PrerollTRLError(f"{checkpoint}: cannot resume the prompt book: {exc}") from None
