"""Run by tests/test_verl_legacy_sampler.py in a fresh interpreter whose path starts with verl 0.7.x.

verl 0.7 and 0.9 cannot share one site-packages, so the legacy ``data.sampler``
path is checked here against verl 0.7's own code: ``RayPPOTrainer._create_dataloader``
(which calls ``create_rl_sampler`` on ``data.sampler.class_path``), the
``AbstractCurriculumSampler`` test and ``sampler.update(batch=...)`` of its fit
loop, its DataProto, and its ``_save_checkpoint`` / ``_load_checkpoint``
(``data.pt`` through ``StatefulDataLoader``). Prints one JSON line of what it saw.
Arguments: a scratch folder.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from omegaconf import OmegaConf

import verl
from verl import DataProto
from verl.experimental.dataset.sampler import AbstractCurriculumSampler
from verl.trainer.ppo.ray_trainer import RayPPOTrainer
from verl_testing import SETTINGS, data_config, tokenizer, write_parquet

ROLLOUT_N = 2


def legacy_trainer(cfg):
    """verl 0.7's RayPPOTrainer with only what ``_create_dataloader`` and the checkpoint methods read (no workers)."""
    trainer = object.__new__(RayPPOTrainer)
    trainer.config, trainer.tokenizer, trainer.processor = cfg, tokenizer(), None
    trainer.use_critic, trainer.global_steps = False, 0
    trainer.actor_rollout_wg = SimpleNamespace(save_checkpoint=lambda *a, **k: None,
                                               load_checkpoint=lambda *a, **k: None)
    RayPPOTrainer._create_dataloader(trainer, None, None, None, None)
    return trainer


def main(scratch: Path) -> dict:
    import preroll.online.book as book_module

    builds: list[int] = []            # neighbour graphs built (the book's lexical encoder needs one)
    build = book_module.neighbour_graph
    book_module.neighbour_graph = lambda *a, **k: builds.append(1) or build(*a, **k)
    parquet = write_parquet(scratch / "train.parquet")
    cfg = OmegaConf.load(Path(verl.__file__).parent / "trainer/config/_generated_ppo_trainer.yaml")
    OmegaConf.set_struct(cfg, False)
    cfg.data = OmegaConf.merge(cfg.data, data_config(parquet, train_batch_size=4, val_batch_size=4, sampler={
        "class_path": "pkg://preroll.integrations.verl.sampler", "class_name": "PrerollCurriculumSampler",
        "preroll": {"pool_factor": 3, "settings": {**SETTINGS, "encoder": "lexical"}}}))
    cfg.trainer.default_local_dir, cfg.trainer.resume_mode = str(scratch / "ckpt"), "auto"
    trainer = legacy_trainer(cfg)
    sampler = trainer.train_dataloader.sampler
    seen = {"verl": verl.__version__, "sampler": type(sampler).__name__,
            "curriculum": isinstance(sampler, AbstractCurriculumSampler), "batches": [], "solved": []}
    it = iter(trainer.train_dataloader)
    for step in range(1, 4):                                   # verl 0.7's fit loop, minus generation
        batch = DataProto.from_single_dict(next(it))
        batch.non_tensor_batch["uid"] = np.array([str(uuid.uuid4()) for _ in range(len(batch))], dtype=object)
        batch = batch.repeat(repeat_times=ROLLOUT_N, interleave=True)
        index = batch.non_tensor_batch["index"]
        solved = np.array([float(i % 3 == 0) for i in index], dtype=np.float32)   # rows 0 mod 3 always solved
        scores = torch.zeros(len(batch), 5)
        scores[:, -1] = torch.tensor(solved)
        batch = batch.union(DataProto.from_single_dict({"token_level_scores": scores}))
        if isinstance(trainer.train_dataloader.sampler, AbstractCurriculumSampler):   # as RayPPOTrainer.fit does
            trainer.train_dataloader.sampler.update(batch=batch)
        seen["batches"].append(sorted(int(i) for i in set(index.tolist())))
        seen["solved"].append(float(solved.sum()))
        trainer.global_steps = step
    stats = sampler.driver.book.stats()
    hist = sampler.driver.book.history()
    seen["book"] = {"steps": stats.steps, "rows": stats.rows, "successes": float(hist["successes"].sum()),
                    "attempts": float(hist["attempts"].sum())}
    RayPPOTrainer._save_checkpoint(trainer)
    seen["graph_builds"] = [len(builds)]
    next_batch = next(it)["index"].tolist()

    fresh = legacy_trainer(cfg)
    RayPPOTrainer._load_checkpoint(fresh)                      # data.pt -> StatefulDataLoader -> sampler state
    seen["restored_global_steps"] = fresh.global_steps
    # StatefulDataLoader applies a loaded state when the next iterator starts (verl's fit loop does that)
    resumed = next(iter(fresh.train_dataloader))["index"].tolist()
    restored = fresh.train_dataloader.sampler.driver.book
    seen["graph_builds"].append(len(builds))           # the resume read the saved graph: none built
    seen["restored_graph_equal"] = bool(np.array_equal(restored._graph[0], sampler.driver.book._graph[0]))
    seen["restored_history_equal"] = all(np.array_equal(restored.history()[k], hist[k]) for k in hist)
    seen["restored_global_rate_equal"] = restored.stats().global_rate == stats.global_rate
    seen["resumed_batch_matches"] = resumed == next_batch
    return seen


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
