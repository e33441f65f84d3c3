"""In-process rate of scoring prompts whose embeddings are already in the cache.

    PYTHONPATH=. python benchmarks/bench_cached_predict.py [--prompts 20000] [--dim 384] [--repeats 3]

What a re-scoring with a new history costs once the neural encoder's vectors
are cached: the SQLite lookup of every prompt's vector (no in-memory layer, as
``preroll score`` runs) and the value model's prediction (logistic head, the
distance-based widening of beliefs against the history, direct evidence), in
calls of 1,024 prompts. The vectors are random unit vectors stored under a
stand-in encoder of the bundled MiniLM's dimension, so the number does not
depend on how they were made; the history is the whole DAPO-Math context
(3,072 outcomes), the prompts the shared data's real ones. Prints prompts/s
per repeat, for the lookup alone and for lookup + prediction.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from bench_score import real_prompts

    from preroll.data import load_v0
    from preroll.data.paths import dapo_dir
    from preroll.encoders import CachedEncoder, Encoder
    from preroll.model.value_model import ValueModel

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=20_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()

    class StandIn(Encoder):
        name = f"stand-in-{a.dim}"

        def encode(self, texts, *, show_progress=False):
            v = np.random.default_rng(len(texts)).normal(size=(len(texts), a.dim)).astype(np.float32)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

    prompts = [t for t, _ in real_prompts()][:a.prompts]
    with tempfile.TemporaryDirectory() as cache:
        encoder = CachedEncoder(StandIn(), cache, memory_items=0)
        encoder.encode(prompts)
        model = ValueModel(encoder=encoder, head="logistic").fit(list(load_v0(dapo_dir() / "context.jsonl")))
        for rep in range(a.repeats):
            t = time.perf_counter()
            encoder.encode(prompts)
            lookup = time.perf_counter() - t
            t = time.perf_counter()
            for s in range(0, len(prompts), 1024):
                model.predict(prompts[s:s + 1024], policy="Qwen3-4B-Instruct")
            full = time.perf_counter() - t
            print(f"repeat {rep}: {len(prompts):,} prompts, lookup {len(prompts) / lookup:,.0f}/s, "
                  f"lookup + prediction {len(prompts) / full:,.0f}/s", flush=True)


if __name__ == "__main__":
    main()
