"""Decision latency of the nine-model router from ready embeddings, one prompt per call.

Fits the default (joint) router on fold 0's training prompts of ``preroll bench route --models 9``
(MiniLM, on-disk embedding cache at ``$PREROLL_CACHE``), then times ``route_embeddings`` on one held-out
prompt at a time: the part of a decision that is not the encoder pass.
"""

import os
import time

import numpy as np

from preroll.bench.llmrouter import load_llmrouter
from preroll.bench.route_multi import fold_indices
from preroll.encoders import get_encoder
from preroll.route import Router

N_PROMPTS, WARM_UP = 300, 20

data = load_llmrouter()
test = fold_indices(data.prompts, 5, 0)[0]
train = np.setdiff1d(np.arange(len(data)), test)
router = Router(models=data.model_specs(256), encoder=get_encoder("minilm"), lam=0.0).fit(data.histories(train))
prompts = [data.prompts[i] for i in test[:N_PROMPTS]]
X = router.embed(prompts)
times = []
for i in range(len(prompts)):
    t0 = time.perf_counter()
    router.route_embeddings(X[i:i + 1], prompts[i:i + 1])
    times.append((time.perf_counter() - t0) * 1000)
t = np.array(times[WARM_UP:])
print(f"route_embeddings, one prompt per call: p50 {np.percentile(t, 50):.2f} ms, p90 {np.percentile(t, 90):.2f} ms, "
      f"p99 {np.percentile(t, 99):.2f} ms (n={len(t)}); load average {os.getloadavg()[0]:.1f}")
