"""One rank of a real multi-process PrerollGRPOTrainer run on CPU, for tests/test_integration_trl.py.

Launched by ``torch.distributed.run --standalone --nproc_per_node 2`` (accelerate picks up the
launcher's environment and uses the gloo backend on CPU). Each rank trains a few GRPO steps of a
tiny random Llama and writes what it saw to ``OUT/rank<r>.json``: the book's choices, the prompts
its own reward function scored (its slice of the global batch), the book's history after training
and a digest of the saved book state. The test compares the ranks.

Usage: ``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/trl_multiprocess_run.py OUT
[--resume CHECKPOINT] [--max-steps N] [--save-steps N]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
from datasets import Dataset
from trl import GRPOConfig

from examples.tiny_policy import char_tokenizer, sample_items, tiny_model
from preroll.integrations.trl import PrerollGRPOTrainer
from preroll.online import OnlineSettings

G = 4                 # num_generations
PER_DEVICE = 6        # rows per rank per generation batch: a group of 4 straddles the two ranks
N = 30                # dataset prompts


class LocalRecorder:
    """Reward by completion parity; remembers the (local) prompts this rank scored, per call."""

    __name__ = "recorder"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, prompts, completions, **kwargs):
        self.calls.append(list(prompts))
        return [float(len(c) % 2) for c in completions]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--resume", default=None)
    parser.add_argument("--max-steps", type=int, default=4)
    parser.add_argument("--save-steps", type=int, default=0)
    a = parser.parse_args()
    out = Path(a.out)
    items = sample_items(N, np.random.default_rng(0))
    ds = Dataset.from_dict({"prompt": [it.prompt for it in items], "id": [f"q{i}" for i in range(N)]})
    tok = char_tokenizer()
    save = dict(save_strategy="steps", save_steps=a.save_steps) if a.save_steps else dict(save_strategy="no")
    args = GRPOConfig(output_dir=str(out / "trainer"), use_cpu=True, report_to="none", max_steps=a.max_steps,
                      per_device_train_batch_size=PER_DEVICE, num_generations=G, max_completion_length=5,
                      logging_steps=100, seed=0, disable_tqdm=True, **save)
    rec = LocalRecorder()
    tr = PrerollGRPOTrainer(model=tiny_model(tok, hidden=32), reward_funcs=rec, args=args, train_dataset=ds,
                            processing_class=tok, preroll=OnlineSettings(pool_factor=2))
    tr.train(resume_from_checkpoint=a.resume)
    rank = tr.accelerator.process_index
    state = out / f"book-rank{rank}.npz"
    tr.preroll_book.save(state)
    hist = tr.preroll_book.history()
    payload = {
        "rank": rank, "world": tr.accelerator.num_processes, "backend": str(tr.accelerator.state.backend),
        "G": G, "per_device": PER_DEVICE, "output_dir": args.output_dir,
        "choices": [{"step": c.step, "pool": c.pool.tolist(), "indices": c.indices.tolist()} for c in tr.preroll_log],
        "scored": rec.calls,
        "prompts": list(ds["prompt"]),
        "history": {k: np.asarray(v).tolist() for k, v in hist.items()},
        "book_sha256": hashlib.sha256(state.read_bytes()).hexdigest(),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(payload))


if __name__ == "__main__":
    main()
