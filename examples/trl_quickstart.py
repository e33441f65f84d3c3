"""TRL's GRPO quickstart with one change: ``GRPOTrainer`` -> ``PrerollGRPOTrainer``.

TRL's quickstart trains on ``trl-lib/tldr`` with a reward that is negative and
unbounded, ``-abs(20 - len(completion))``, and no declaration of its range.
This script is the same program, offline and CPU-sized: the model is a tiny
Llama built from a config, the tokenizer a local character tokenizer (both in
``tiny_policy.py`` beside this file), the prompts a small in-memory dataset (no
hub). The book learns the reward's scale from the rewards it sees.

    HF_HUB_OFFLINE=1 python examples/trl_quickstart.py --steps 4
    HF_HUB_OFFLINE=1 python examples/trl_quickstart.py --rewards format+accuracy

``--rewards format+accuracy`` runs the common two-term setup instead: a format
reward (the completion is digits only, the answer's format) and an accuracy
reward (exact answer), weighted 0.5 and 1.0 through ``reward_weights``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def reward_len(completions, **kwargs):
    """TRL quickstart's reward, verbatim."""
    return [-abs(20 - len(completion)) for completion in completions]


def format_reward(completions, **kwargs):
    """1 when the completion has the answer's format (digits only), else 0."""
    return [1.0 if c.strip().isdigit() else 0.0 for c in completions]


def accuracy_reward(completions, answer, **kwargs):
    """1 when the completion is exactly the answer, else 0."""
    return [1.0 if c.strip() == a else 0.0 for c, a in zip(completions, answer)]


def build(output_dir: str, *, steps: int = 4, rewards: str = "quickstart", n_prompts: int = 32):
    """The quickstart's trainer (``PrerollGRPOTrainer`` in place of ``GRPOTrainer``), offline and tiny."""
    import numpy as np
    from datasets import Dataset
    from trl import GRPOConfig

    from tiny_policy import char_tokenizer, sample_items, tiny_model   # examples/tiny_policy.py, beside this file
    from preroll.integrations.trl import PrerollGRPOTrainer

    items = sample_items(n_prompts, np.random.default_rng(0))
    dataset = Dataset.from_dict({"prompt": [it.prompt for it in items], "answer": [it.answer for it in items]})
    tokenizer = char_tokenizer()
    model = tiny_model(tokenizer, hidden=32)
    if rewards == "quickstart":
        reward_funcs, weights = reward_len, None
    elif rewards == "format+accuracy":
        reward_funcs, weights = [format_reward, accuracy_reward], [0.5, 1.0]
    else:
        raise ValueError(f"--rewards must be quickstart or format+accuracy, got {rewards!r}")
    training_args = GRPOConfig(output_dir=output_dir, max_steps=steps, per_device_train_batch_size=16,
                               num_generations=4, max_completion_length=8, reward_weights=weights,
                               use_cpu=True, report_to="none", logging_steps=100, save_strategy="no",
                               disable_tqdm=True)
    return PrerollGRPOTrainer(model=model, reward_funcs=reward_funcs, args=training_args, train_dataset=dataset,
                              processing_class=tokenizer)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rewards", default="quickstart", choices=("quickstart", "format+accuracy"))
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="preroll-quickstart-") as tmp:
        trainer = build(str(Path(tmp) / "out"), steps=a.steps, rewards=a.rewards)
        trainer.train()
    stats = trainer.preroll_book.stats()
    lo, hi = stats.reward_scale
    print(f"{stats.steps} steps, {stats.informative_groups + stats.dead_groups} groups recorded "
          f"({stats.dead_groups} zero-signal), {stats.prompts_seen} prompts seen; rewards seen in [{lo:g}, {hi:g}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
