"""Decision latency of the nine-model router, one prompt per call: from ready embeddings and end to end.

Fits the default (joint) router on fold 0's training prompts of ``preroll bench route --models 9``
(on-disk embedding cache at ``$PREROLL_CACHE``), then times, one held-out prompt at a time,

* ``route_embeddings``: the part of a decision that is not the encoder pass;
* ``route()``: the whole decision, encoder included, on texts the encoder has never seen (a suffix makes each
  prompt new, so every call encodes and writes the cache, as a server does for a new prompt).

Usage: ``python benchmarks/route_decide_latency.py [ENCODER]`` (default ``minilm+lexical+stats``). Run it with
``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1`` on a quiet machine: percentiles on shared cores are noise.
"""

import os
import sys
import time

import numpy as np

from preroll.bench.llmrouter import load_llmrouter
from preroll.bench.route_multi import fold_indices, latency_summary, route_latency
from preroll.encoders import get_encoder
from preroll.route import Router

N_PROMPTS, WARM_UP = 300, 20
encoder = sys.argv[1] if len(sys.argv) > 1 else "minilm+lexical+stats"

data = load_llmrouter()
test = fold_indices(data.prompts, 5, 0)[0]
train = np.setdiff1d(np.arange(len(data)), test)
router = Router(models=data.model_specs(256), encoder=get_encoder(encoder), lam=0.0).fit(data.histories(train))
prompts = [data.prompts[i] for i in test[:N_PROMPTS]]
X = router.embed(prompts)


def percentiles(summary: dict) -> str:
    return (f"p50 {summary['p50']:.2f} ms, p90 {summary['p90']:.2f} ms, p99 {summary['p99']:.2f} ms "
            f"(n={summary['n']})")


times = []
for i in range(len(prompts)):
    t0 = time.perf_counter()
    router.route_embeddings(X[i:i + 1], prompts[i:i + 1])
    times.append((time.perf_counter() - t0) * 1000)
print(f"{encoder}: route_embeddings, one prompt per call: {percentiles(latency_summary(times[WARM_UP:]))}; "
      f"load average {os.getloadavg()[0]:.1f}")

end_to_end = route_latency(router, prompts, warm_up=WARM_UP)
print(f"{encoder}: route() end to end, one unseen prompt per call: {percentiles(end_to_end)}; "
      f"load average {os.getloadavg()[0]:.1f}")
