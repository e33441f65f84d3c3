"""Decision latency of the nine-model router from ready embeddings, one prompt per call (fold 0 of bench route --models 9)."""
import time, numpy as np
from preroll.bench.llmrouter import load_llmrouter
from preroll.bench.route_multi import fold_indices
from preroll.encoders import get_encoder
from preroll.route import Router
data = load_llmrouter(); specs = data.model_specs(256)
te = fold_indices(data.prompts, 5, 0)[0]; tr = np.setdiff1d(np.arange(len(data)), te)
r = Router(models=specs, encoder=get_encoder("minilm", cache_dir=None), lam=0.0).fit(data.histories(tr))
p_te = [data.prompts[i] for i in te[:300]]
X = r.embed(p_te)
ts = []
for i in range(300):
    t = time.perf_counter(); r.route_embeddings(X[i:i+1], p_te[i:i+1]); ts.append((time.perf_counter() - t) * 1000)
ts = np.array(ts[20:])
import os
print("route_embeddings one prompt: p50 %.2f p90 %.2f p99 %.2f ms (n=%d), load %s" % (np.percentile(ts,50), np.percentile(ts,90), np.percentile(ts,99), len(ts), os.getloadavg()))
