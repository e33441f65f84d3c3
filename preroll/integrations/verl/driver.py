"""The preroll side of a verl run: config, the prompt book, the pool walker and the uid bookkeeping.

No verl import: the trainer (``trainer.py``) and the legacy sampler
(``sampler.py``) only move arrays between verl's structures and this class, so
everything that decides or records is testable and timeable on a CPU.
"""

from __future__ import annotations

import os
import time
from typing import Literal, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from preroll.integrations.core import MIN_GROUP_SIZE, trainer_book_settings
from preroll.integrations.core.store import RemoteGraph, Uploader, load_state, save_state
from preroll.integrations.verl.outcomes import StepOutcomes, outcomes_from_trajectories
from preroll.integrations.verl.plan import PoolWalker, RolloutPlan, plan_allocate, plan_select
from preroll.online import OnlineSettings, PromptBook
from preroll.online.errors import OnlineInputError

#: Where the trainer reads its options in verl's config (``+trainer.v1.preroll.mode=allocate`` on the command line).
CONFIG_PATH = "trainer.v1.preroll"
BOOK_FILE = "preroll_book.npz"
POOL_FILE = "preroll_pool.json"


class PrerollVerlConfig(BaseModel):
    """Options of the preroll verl integration (``trainer.v1.preroll`` / ``data.sampler.preroll``).

    mode: ``select`` keeps verl's fixed ``rollout.n`` and lets the book choose
    the batch's prompts out of a pool of ``pool_factor`` x batch size;
    ``allocate`` spreads the same total (batch size x rollout.n) over the pool
    with per-prompt n in [min_rollouts, max_rollouts] (verl's ``__rollout_n__``;
    at least 2: a group of one carries no signal).
    settings: :class:`preroll.online.OnlineSettings` (a mapping of its fields in
    verl's config: reward_range, encoder, drift_decay, explore, seed, ...),
    validated when the config is parsed. Its ``group_size`` follows verl's
    ``rollout.n`` and its ``seed`` verl's ``data.seed`` unless set.
    book_path: a folder (local path or fsspec URL) holding a saved book to start from.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["select", "allocate"] = "select"
    pool_factor: int = Field(default=4, ge=1)
    min_rollouts: int = Field(default=2, ge=MIN_GROUP_SIZE)
    max_rollouts: int = Field(default=32, ge=MIN_GROUP_SIZE)
    rule: str = "greedy"
    book_path: str | None = None
    settings: OnlineSettings = Field(default_factory=OnlineSettings)

    @model_validator(mode="after")
    def _bounds(self) -> "PrerollVerlConfig":
        if self.min_rollouts > self.max_rollouts:
            raise ValueError(f"min_rollouts {self.min_rollouts} > max_rollouts {self.max_rollouts}")
        return self

    @classmethod
    def parse(cls, raw: Mapping | None, where: str = CONFIG_PATH) -> "PrerollVerlConfig":
        """From a plain or OmegaConf mapping; an error names the config key."""
        raw = _plain(raw) or {}
        try:
            return cls(**raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise OnlineInputError(err["msg"], field=f"{where}.{loc}" if loc else where) from None
        except TypeError as exc:
            raise OnlineInputError(str(exc), field=where) from None

    def online_settings(self, where: str = CONFIG_PATH, *, group_size: int | None = None,
                        seed: int | None = None) -> OnlineSettings:
        """The book's settings: ``pool_factor`` from here unless the settings set it; with ``group_size`` (verl's
        rollout.n) and ``seed`` (verl's data.seed) applied unless set (:func:`trainer_book_settings`)."""
        s = self.settings
        if "pool_factor" not in s.model_fields_set:
            s = s.model_copy(update={"pool_factor": self.pool_factor})
        if group_size is not None:
            s = trainer_book_settings(s, group_size=group_size, seed=seed,
                                      group_size_field="actor_rollout_ref.rollout.n")
        return s


def _plain(raw):
    """OmegaConf containers -> dicts/lists (without importing omegaconf here)."""
    if raw is None:
        return None
    if hasattr(raw, "_metadata") and hasattr(raw, "_content"):        # an OmegaConf container
        from omegaconf import OmegaConf

        return OmegaConf.to_container(raw, resolve=True)
    return dict(raw)


class PrerollDriver:
    """Plans each verl batch with the prompt book and records its rewards.

    Parameters
    ----------
    prompts: the training dataset's prompt texts, in dataset order.
    config: :class:`PrerollVerlConfig`.
    seed: seed of the pool shuffles (verl's ``data.seed``).
    group_size: verl's ``rollout.n``: the book scores prompts for this group size (None: the settings' own).
    prepare: embed the dataset and build the neighbour graph now (when the trainer is built, not inside the first
    step). False when a saved book is about to replace this one (a resume): the saved graph is loaded instead of
    built (minutes at a million prompts); call :meth:`prepare` once the book is final.
    """

    def __init__(self, prompts: Sequence[str], config: PrerollVerlConfig | None = None, *, seed: int = 0,
                 book: PromptBook | None = None, embeddings: np.ndarray | None = None,
                 group_size: int | None = None, prepare: bool = True) -> None:
        self.config = config or PrerollVerlConfig()
        if book is None:
            settings = self.config.online_settings(group_size=group_size,
                                                   seed=seed if group_size is not None else None)
            book = PromptBook(prompts, settings=settings, embeddings=embeddings)
            if prepare:
                book.prepare()
        self.book = book
        self.walker = PoolWalker(len(self.book), seed=seed)
        self.uid_positions: dict[str, int] = {}
        self.remote_graph = RemoteGraph()    # where remote saves put the graph: later ones copy it there
        self.last_plan_: RolloutPlan | None = None
        self.plan_seconds_ = 0.0

    # -- before rollout -----------------------------------------------------------------------

    def plan(self, n_prompts: int, rollout_n: int, *, refill: bool = False) -> RolloutPlan:
        """The next batch: ``n_prompts`` prompts (select), or ``n_prompts * rollout_n`` rollouts spread (allocate).

        ``refill`` (verl replacing failed or filtered groups one prompt at a
        time) always selects: a refill replaces prompts, it is not a budget.
        """
        start = time.perf_counter()
        pool = self.walker.take(min(len(self.book), self.config.pool_factor * int(n_prompts)))
        if self.config.mode == "allocate" and not refill:
            plan = plan_allocate(self.book, pool, int(n_prompts) * int(rollout_n),
                                 min_rollouts=self.config.min_rollouts, max_rollouts=self.config.max_rollouts,
                                 rule=self.config.rule)
        else:
            plan = plan_select(self.book, pool, int(n_prompts))
        self.last_plan_ = plan
        self.plan_seconds_ = time.perf_counter() - start
        return plan

    def remember(self, uids: Sequence[str], positions: Sequence[int]) -> None:
        """The uid verl gave each submitted prompt, so its rollouts can be credited to the right dataset row."""
        for uid, pos in zip(uids, positions, strict=True):
            self.uid_positions[str(uid)] = int(pos)

    # -- after the step -------------------------------------------------------------------------

    def record_outcomes(self, step: int, outcomes: StepOutcomes) -> dict[str, float]:
        """Record one step's groups in the book; returns metrics for verl's logger (``preroll/...``)."""
        start = time.perf_counter()
        if len(outcomes):
            self.book.record(step, outcomes.indices, outcomes.rewards)
        record_seconds = time.perf_counter() - start
        dead = sum(1 for r in outcomes.rewards if r.size > 1 and np.ptp(r) == 0)
        stats = self.book.stats()
        metrics = {
            "preroll/groups": float(len(outcomes)),
            "preroll/rollouts": float(outcomes.rollouts),
            "preroll/informative_share": (len(outcomes) - dead) / len(outcomes) if len(outcomes) else float("nan"),
            "preroll/unmatched_groups": float(outcomes.unmatched),
            "preroll/global_rate": float(stats.global_rate),
            "preroll/prompts_seen": float(stats.prompts_seen),
            "preroll/plan_ms": 1e3 * self.plan_seconds_,
            "preroll/record_ms": 1e3 * record_seconds,
        }
        for reason, count in stats.selections.items():
            metrics[f"preroll/selections_{reason}"] = float(count)
        if self.last_plan_ is not None:
            metrics["preroll/pool_size"] = float(self.last_plan_.pool_size)
        return metrics

    def record_trajectories(self, step: int, keys: Sequence[str], scores: Sequence[float],
                            padding: Sequence[bool] | None = None) -> dict[str, float]:
        """Record a v1 step from its TransferQueue keys and per-row rewards; forgets the uids it credited."""
        outcomes = outcomes_from_trajectories(keys, scores, self.uid_positions, padding=padding)
        metrics = self.record_outcomes(step, outcomes)
        done = {str(k).rsplit("_", 2)[0] for k in keys}
        for uid in done:
            self.uid_positions.pop(uid, None)
        return metrics

    def prepare(self) -> None:
        """Embeddings and the neighbour graph of the book now (nothing to do when a loaded book brought its graph)."""
        self.book.prepare()

    # -- persistence ----------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike, *, upload: Uploader | None = None) -> None:
        """Book (``preroll_book.npz``) and pool state (``preroll_pool.json``) into ``folder``: a local path (each
        file written atomically) or any fsspec URL (``upload`` replaces fsspec, e.g. verl's hdfs copy)."""
        state = {"walker": self.walker.state_dict(), "uid_positions": self.uid_positions}
        save_state(folder, self.book, state, book_file=BOOK_FILE, pool_file=POOL_FILE, upload=upload,
                   graph=self.remote_graph)

    def load(self, folder: str | os.PathLike) -> bool:
        """Restore what :meth:`save` wrote in ``folder`` (local path or fsspec URL); False when it holds no book."""
        loaded = load_state(folder, self.book, book_file=BOOK_FILE, pool_file=POOL_FILE, graph=self.remote_graph)
        if loaded is None:
            return False
        self.book, state = loaded
        if state is not None:
            self.walker.load_state_dict(state["walker"])
            self.uid_positions = {str(k): int(v) for k, v in state.get("uid_positions", {}).items()}
        return True
