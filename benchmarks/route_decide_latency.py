"""Decision latency of the nine-model router, one prompt per call: from ready embeddings and end to end.

Fits the default router on fold 0's training prompts of ``preroll bench route --models 9``
(on-disk embedding cache at ``$PREROLL_CACHE``), then times, one held-out prompt at a time,

* ``route_embeddings``: the part of a decision that is not the encoder pass;
* ``route()``: the whole decision, encoder included, on texts the encoder has never seen (a suffix makes each
  prompt new, so every call encodes and writes the cache, as a server does for a new prompt).

With ``--explore``: the same router with exploration on (``Router(explore=...)``), after ``Router.observe`` of
2,000 bandit outcomes on training prompts (so every decision also pays for the online correction over them):
``route()`` end to end on unseen prompts, and ``observe`` per outcome right after its prompt was routed (the
server's case: the embedding is remembered) and on prompts never routed (an encoder pass each).

With ``--bandit-log``: the router is fitted on one outcome per training prompt, of a model drawn at random (a
live router's kind of history), so ``head="auto"`` is the shared-difficulty model instead of the per-model heads.

Usage: ``python benchmarks/route_decide_latency.py [ENCODER] [--explore] [--bandit-log]`` (default
``minilm+lexical+stats``). Run it with
``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1`` on a quiet machine: percentiles on shared cores are noise.
"""

import os
import sys
import time

import numpy as np

from preroll.bench.llmrouter import load_llmrouter
from preroll.bench.route_multi import fold_indices, latency_summary, route_latency
from preroll.encoders import get_encoder
from preroll.route import ExploreSettings, Router

N_PROMPTS, WARM_UP = 300, 20
args = [a for a in sys.argv[1:] if a not in ("--explore", "--bandit-log")]
explore = "--explore" in sys.argv[1:]
bandit_log = "--bandit-log" in sys.argv[1:]
encoder = args[0] if args else "minilm+lexical+stats"

data = load_llmrouter()
test = fold_indices(data.prompts, 5, 0)[0]
train = np.setdiff1d(np.arange(len(data)), test)
settings = ExploreSettings(first_refit=10 ** 9) if explore else None  # refits are timed apart (background)
histories = data.histories(train)
if bandit_log:  # one outcome per prompt, of a model drawn at random
    answered_by = np.random.default_rng(1).integers(0, len(data.models), len(train))
    histories = {name: data.histories(train[answered_by == j])[name] for j, name in enumerate(data.models)}
router = Router(models=data.model_specs(256), encoder=get_encoder(encoder), lam=0.0,
                explore=settings).fit(histories)
print(f"head: {'difficulty' if getattr(router, 'joint_', None) is not None else 'ensemble'} "
      f"(bandit log: {router.bandit_log_})")
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

if explore:
    rng = np.random.default_rng(0)
    fed = rng.choice(train, 2000, replace=False)
    names = data.models
    picks = rng.integers(0, len(names), len(fed))
    router.observe([data.prompts[i] for i in fed], [names[j] for j in picks], data.scores[fed, picks])
    stamp = f"{time.time_ns()}"
    route_ms, observe_ms = [], []
    for i, p in enumerate(prompts):
        q = f"{p}\n[{stamp}-{i}]"
        t0 = time.perf_counter()
        [d] = router.route([q])
        route_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        router.observe([q], [d.model], [float(data.scores[test[i], names.index(d.model)])])
        observe_ms.append((time.perf_counter() - t0) * 1000)
    cold = [f"{p}\n[cold-{stamp}-{i}]" for i, p in enumerate(prompts[:100])]
    t0 = time.perf_counter()
    for q in cold:
        router.observe([q], [names[0]], [1.0])
    cold_ms = (time.perf_counter() - t0) * 1000 / len(cold)
    st_ = router.explore_state_   # the exploration overhead alone: online correction + Thompson + bounds
    Xr = router.embed(prompts)
    Xu = Xr / np.linalg.norm(Xr, axis=1, keepdims=True)
    C = router.costs(prompts)
    over = []
    for i in range(len(prompts)):
        b = router.predict_beta_embeddings(Xr[i:i + 1])
        a_, b_ = np.array(b.alpha), np.array(b.beta)
        t0 = time.perf_counter()
        st_.correct(a_, b_, Xu[i:i + 1])
        st_.choose(type(b)(a_, b_), C[i:i + 1], np.argmax(a_ / (a_ + b_), axis=1), 0.0, np.ones(len(names), bool), True,
                   prompts[i:i + 1])
        over.append((time.perf_counter() - t0) * 1000)
    print(f"explore overhead per decision ({st_.buffer.n} outcomes in the online correction): "
          f"{percentiles(latency_summary(over[WARM_UP:]))}")
    stats = router.explore_stats()
    print(f"{encoder}, explore on (2,000 outcomes observed since the fit): route() end to end, one unseen prompt "
          f"per call: {percentiles(latency_summary(route_ms[WARM_UP:]))}; observe after route: mean "
          f"{np.mean(observe_ms):.3f} ms, p99 {np.percentile(observe_ms, 99):.3f} ms; observe of a never-routed "
          f"prompt: mean {cold_ms:.2f} ms; explored {stats['explored']} of {stats['decisions']}; "
          f"load average {os.getloadavg()[0]:.1f}")
