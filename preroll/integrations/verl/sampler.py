"""``PrerollCurriculumSampler``: the prompt book behind verl's legacy ``data.sampler`` hook (verl 0.6-0.7).

verl 0.6 and 0.7 build the training dataloader with a user sampler
(``data.sampler.class_path`` / ``class_name``, constructed as
``cls(data_source=dataset, data_config=config.data)``) and, when it subclasses
``AbstractCurriculumSampler``, calls ``sampler.update(batch=DataProto)`` after
every step. verl 0.8 removed that hook (on 0.9 use ``PrerollPPOTrainer``); the
class still constructs on 0.8+ as a plain torch ``Sampler``.

The sampler yields dataset positions batch by batch: each batch is the book's
selection out of a pool of ``pool_factor`` x ``train_batch_size``. Rewards come
back through ``update``: ``token_level_scores`` summed per rollout, grouped by
``uid``, mapped to positions through the dataset's ``extra_info.index`` (which
must be unique). The trainer's rollout.n stays fixed: ``mode`` must be
``select``. verl requires ``data.dataloader_num_workers=0`` with a curriculum
sampler, so each batch is chosen after the previous step's update.
"""

from __future__ import annotations

from preroll.integrations.verl._require import require_verl
from preroll.integrations.verl.driver import PrerollDriver, PrerollVerlConfig
from preroll.integrations.verl.outcomes import outcomes_from_dataproto
from preroll.integrations.verl.plan import index_positions, message_text
from preroll.online.errors import OnlineInputError

require_verl()

try:        # verl <= 0.7
    from verl.experimental.dataset.sampler import AbstractCurriculumSampler as _Base
except ImportError:     # verl >= 0.8: no curriculum hook; a torch Sampler with the same methods
    from torch.utils.data import Sampler as _Base

CONFIG_PATH = "data.sampler.preroll"


def _get(config, key, default=None):
    return config.get(key, default) if hasattr(config, "get") else getattr(config, key, default)


class PrerollCurriculumSampler(_Base):
    """Yields each batch's dataset positions as chosen by the prompt book; learns from ``update(batch)``."""

    def __init__(self, data_source, data_config) -> None:
        sampler_config = _get(data_config, "sampler", None) or {}
        self.config = PrerollVerlConfig.parse(_get(sampler_config, "preroll", None), where=CONFIG_PATH)
        if self.config.mode != "select":
            raise OnlineInputError("the data.sampler hook keeps the trainer's rollout.n; per-prompt n needs the "
                                   "v1 trainer (trainer.v1.trainer_mode=preroll)", field=f"{CONFIG_PATH}.mode")
        self.data_source = data_source
        self.batch_size = int(_get(data_config, "gen_batch_size", None) or _get(data_config, "train_batch_size"))
        frame = getattr(data_source, "dataframe", None)
        if frame is None:
            raise OnlineInputError(f"{type(data_source).__name__} has no 'dataframe' (verl's RLHFDataset)",
                                   field="data_source")
        prompts = [message_text(p) for p in frame[getattr(data_source, "prompt_key", "prompt")]]
        if "extra_info" not in frame.column_names:
            raise OnlineInputError("the training data has no extra_info column; set extra_info.index to a unique "
                                   "id per row", field="data.train_files")
        self.index_positions = index_positions(frame["extra_info"])
        # The neighbour graph is built on the first batch, not here: StatefulDataLoader resumes a sampler by
        # constructing it and then restoring a state that holds the graph (load_state_dict, before any batch).
        self.driver = PrerollDriver(prompts, self.config, seed=int(_get(data_config, "seed", None) or 0),
                                    prepare=False)
        self.step_ = 0
        self.metrics_: dict[str, float] = {}

    def __len__(self) -> int:
        return (len(self.data_source) // self.batch_size) * self.batch_size

    def __iter__(self):
        self.driver.prepare()       # runs at the first batch (a generator), after any restore
        for _ in range(len(self.data_source) // self.batch_size):
            yield from (int(i) for i in self.driver.plan(self.batch_size, 1).indices)

    def update(self, batch) -> None:
        """Record a finished step (verl's DataProto after reward computation)."""
        self.step_ += 1
        outcomes = outcomes_from_dataproto(batch, index_positions=self.index_positions)
        self.metrics_ = self.driver.record_outcomes(self.step_, outcomes)

    # StatefulDataLoader saves and restores a sampler that has these two methods.
    def state_dict(self) -> dict:
        return {"book": self.driver.book.state_dict(), "walker": self.driver.walker.state_dict(), "step": self.step_}

    def load_state_dict(self, state: dict) -> None:
        # Into the book the constructor built (its state and settings replaced, its graph too when the state
        # holds one): a second book would read the warm start again and hash every prompt again, to be overwritten.
        self.driver.book.load_state_dict(state["book"])
        self.driver.walker.load_state_dict(state["walker"])
        self.step_ = int(state["step"])
