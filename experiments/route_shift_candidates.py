"""Candidates for the router's default under shift, measured from one router fit per fold.

Why one fit: every candidate here is built from the parts of the default
per-model heads (each model's logistic and kNN head of ``head="ensemble"``)
plus cheap extras computed from the same fitted history: the kNN rate at a
fixed topic-sized ``k``, and per-model *topic rates* (each model's mean score
in each k-means topic of the history, shrunk to its base rate; the per-model
form of :class:`preroll.route.parts.ClusterPart`). One fold's parts are
saved once (``fold-*.npz``); every candidate, guard setting and model subset
is then a cheap sweep over them, so the comparison costs one ensemble fit per
fold, not one per variant.

Model sets (the per-model heads are independent, so a subset's router is the
nine-model router's columns):

* ``nine``: LLMRouter's nine priced models (the held-out target: +4.5 points
  at ``lam = 0``, the best single model's quality at <= 25% of its price);
* ``small``: the six 7-9B models (:data:`SMALL_MODELS`, priced 0.1-0.2 per
  million tokens, mean scores 0.18-0.56, the best three within 4 points): a
  RouterDC-like proxy (RouterDC routes among seven 7B models), where no model
  dominates and the differences are task-level. Cluster-out folds are its
  out-of-distribution case, random and reweighted folds in-distribution.
  (A first proxy, the nine without the two weakest, made the nine's choices
  at ``lam = 0`` exactly -- those two are never chosen -- so it measured
  nothing new; it was replaced before the small set's numbers were read.)

Baselines beside the candidates: ``topics20-best`` (route each prompt to its
nearest history topic's best model: a task-only router) and ``task-oracle``
(each test topic's best model read off the test rows themselves, 20 k-means
topics of all texts: an in-sample bound on what task-level routing could
give, not a router).

Gated candidates (third round): the topic part weighed per query, only where the query is within the
history's depth (:func:`gate_weight`); ``augment`` adds the topic-centre similarities the topic-radius gate
reads to folds saved before it.

Selection rule (:data:`SELECTION_RULE`), fixed before any result was read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from preroll.bench import route_shift as rs

SELECTION_RULE = """\
Third round (gated topic rates), fixed before any gated candidate's number was read. Score of a candidate: its
worst gain at lam = 0 over every (model set, protocol, fold seed) run, model sets nine and small, protocols
random, cluster5, cluster10, reweight, selection fold seeds 0, 1, 5. The current default (ensemble + guard 0.1)
stays unless a candidate's worst case beats its worst case by more than 0.5 points AND its mean over the nine
models' runs is not below the default's; among the candidates that qualify, those within 0.5 points of the best
worst case tie, and the tie goes to the simplest (fewest parts, then no gate / the depth gate before the topic
gate before the soft weight, then no guard). Baselines (topics20-best) are reported, not candidates. Fold
seeds 505 and 606 stay unread until the choice is committed; then the default and the choice are read once.
(Second round's rule: the same without the nine-mean condition, default ensemble + guard 0.25, held-out
seeds 303 and 404, since read.)"""

CALIB_RULE = """\
Calibration round (unequal part weights, a shrunk kNN part, the guard's z below 1), fixed before any of its
candidates' numbers was read. Runs: model sets nine and small, protocols random, cluster5, cluster10, reweight,
selection fold seeds 0, 1, 5 (the second round's saved fits, augmented). A candidate replaces the default
(ensemble + guard 0.1, z = 1) only if (1) its worst gain at lam = 0 over those 24 runs is not below the
default's worst by more than 0.25 points AND (2) its median nine-model cost to match the best single model
(over the 12 nine-model runs; "never" counts as above every price) is lower than the default's by at least 3
percentage points. Among the candidates that qualify, those whose median cost to match is within 3 points of
the lowest tie, and the tie goes to the simplest (fewest parts, then fewest settings changed from the default,
then the lower median cost to match). Fold seeds 707 and 808 are evaluated once, after the choice is committed:
the default against the choice, with the nine-model cost to match."""

SELECTION_SEEDS = (0, 1, 5)
HELD_OUT_SEEDS = (505, 606)           # 303 and 404 were read in the second round
TOPIC_KS = (10, 20, 40)
TOPIC_PRIOR = 10.0           # pseudo-rows shrinking a topic's rate to the model's base rate
KNN_TOPIC_K = 200
GUARD_QUANTILES = (0.1, 0.25)
TASK_TOPICS = 20


#: Gates on the topic parts, simplest first: where a gate's weight is 0 a topic part drops out of the mixture.
GATES = ("depth0.1", "depth0.25", "topic0.1", "soft")


@dataclass(frozen=True)
class Candidate:
    """A per-model belief: the mixture of ``parts``, the guard at ``guard`` (``None``: off).

    ``gate`` (``None``: equal weights): the topic parts' weight per query, the other parts weigh 1 --
    ``depth<q>``: 1 where the query's highest similarity to the history is at or above the guard's ``q``
    threshold (near), else 0; ``topic<q>``: 1 where the query is at least as close to its topic's centre as
    the ``q`` quantile of the topic's own history members, else 0; ``soft``: linear from 0 at the guard's 0.1
    threshold to 1 at its 0.25 threshold.
    """

    parts: tuple[str, ...]
    guard: float | None = None
    baseline: bool = False
    gate: str | None = None
    weights: tuple[float, ...] | None = None     # per part (None: equal); calibration round
    knn_shrink: float = 1.0                       # kNN part's deviation from the model's base rate kept (1: as fitted)
    z: float = 1.0                                # the guard's confident rule on far queries

    def __post_init__(self) -> None:
        if self.gate is not None and self.gate not in GATES:
            raise ValueError(f"unknown gate {self.gate!r}")
        if self.weights is not None and len(self.weights) != len(self.parts):
            raise ValueError("one weight per part")

    @property
    def settings_changed(self) -> int:
        """Settings that differ from the default's (equal weights, kNN as fitted, z = 1)."""
        return int(self.weights is not None) + int(self.knn_shrink != 1.0) + int(self.z != 1.0)

    @property
    def complexity(self) -> tuple[int, int, int]:
        return len(self.parts), 0 if self.gate is None else 1 + GATES.index(self.gate), int(self.guard is not None)


CANDIDATES: dict[str, Candidate] = {
    "ensemble+guard0.1 (default)": Candidate(("logistic", "knn"), 0.1),
    "ensemble": Candidate(("logistic", "knn")),
    "ensemble+guard0.25": Candidate(("logistic", "knn"), 0.25),
    "ensemble+topics20": Candidate(("logistic", "knn", "topics20")),
    "ensemble+topics20+guard0.25": Candidate(("logistic", "knn", "topics20"), 0.25),
    "ensemble+topics20+guard0.1": Candidate(("logistic", "knn", "topics20"), 0.1),
    "ensemble+topics10": Candidate(("logistic", "knn", "topics10")),
    "ensemble+topics40": Candidate(("logistic", "knn", "topics40")),
    "logistic+knn200": Candidate(("logistic", "knn200")),
    "logistic+knn200+guard0.25": Candidate(("logistic", "knn200"), 0.25),
    "logistic+knn+knn200+topics20": Candidate(("logistic", "knn", "knn200", "topics20")),
    # third round: topic rates only where the query is within the history's depth
    "ensemble+topics10@depth0.1+guard0.1": Candidate(("logistic", "knn", "topics10"), 0.1, gate="depth0.1"),
    "ensemble+topics20@depth0.1+guard0.1": Candidate(("logistic", "knn", "topics20"), 0.1, gate="depth0.1"),
    "ensemble+topics40@depth0.1+guard0.1": Candidate(("logistic", "knn", "topics40"), 0.1, gate="depth0.1"),
    "ensemble+topics20@depth0.25+guard0.1": Candidate(("logistic", "knn", "topics20"), 0.1, gate="depth0.25"),
    "ensemble+topics20@topic0.1+guard0.1": Candidate(("logistic", "knn", "topics20"), 0.1, gate="topic0.1"),
    "ensemble+topics20@soft+guard0.1": Candidate(("logistic", "knn", "topics20"), 0.1, gate="soft"),
    "topics20-best": Candidate(("topics20",), baseline=True),
}
MODEL_SETS = ("nine", "small")

#: Calibration round: the default first (the rule compares against it), then cheaper-to-trust beliefs.
#: ``w`` weighs logistic:kNN; ``shrink`` keeps that fraction of the kNN rate's deviation from the model's
#: history base rate (one fixed factor: the saved fits hold no out-of-fold kNN rates of the history, so a
#: per-model factor fitted there would need a refit of every fold); ``z`` is the guard's confident rule.
CALIB_CANDIDATES: dict[str, Candidate] = {
    "ensemble+guard0.1 (default)": Candidate(("logistic", "knn"), 0.1),
    "logistic+guard0.1": Candidate(("logistic",), 0.1),
    "ensemble w2:1+guard0.1": Candidate(("logistic", "knn"), 0.1, weights=(2.0, 1.0)),
    "ensemble w3:1+guard0.1": Candidate(("logistic", "knn"), 0.1, weights=(3.0, 1.0)),
    "ensemble knn-shrink0.5+guard0.1": Candidate(("logistic", "knn"), 0.1, knn_shrink=0.5),
    "ensemble knn-shrink0.75+guard0.1": Candidate(("logistic", "knn"), 0.1, knn_shrink=0.75),
    "ensemble+guard0.1 z0.5": Candidate(("logistic", "knn"), 0.1, z=0.5),
    "ensemble+guard0.1 z0.25": Candidate(("logistic", "knn"), 0.1, z=0.25),
    "ensemble w2:1+guard0.1 z0.5": Candidate(("logistic", "knn"), 0.1, weights=(2.0, 1.0), z=0.5),
}

#: Calibration round, second stage (added after the first stage's numbers were read, under the same
#: :data:`CALIB_RULE`, which compares each candidate with the default alone): the kNN part recalibrated per
#: model on the history by leave-one-out (:func:`knn_recalibration`; needs folds fitted with it).
CALIB_LOO_CANDIDATES: dict[str, Candidate] = {
    "ensemble+guard0.1 (default)": Candidate(("logistic", "knn"), 0.1),
    "ensemble knn-loo-shrink+guard0.1": Candidate(("logistic", "knn-loo-shrink"), 0.1),
    "ensemble knn-loo-platt+guard0.1": Candidate(("logistic", "knn-loo-platt"), 0.1),
}


#: The RouterDC-like set: the nine's 7-9B models (one fixed set on every fold).
SMALL_MODELS = ("llama3-chatqa-1.5-8b", "qwen2.5-7b-instruct", "mistral-7b-instruct-v0.3", "gemma-2-9b-it",
                "llama-3.1-8b-instruct", "codegemma-7b")


# ------------------------------------------------------------------ one fold's parts


def fold_parts(data, specs, fold: rs.ShiftFold, encoder, task_labels: np.ndarray) -> dict[str, np.ndarray]:
    """Fit the default per-model heads on the fold's history; every part's test predictions and what the sweep needs."""

    from preroll.heads.knn import nearest
    from preroll.route import Router
    from preroll.route.depth import DepthGuard, far_threshold, max_similarity

    t0 = time.perf_counter()
    tr, te = fold.train, fold.test
    p_te = [data.prompts[i] for i in te]
    r = Router(models=specs, encoder=encoder, head="ensemble", rule="utility", lam=0.0, guard=False)
    r.fit(data.histories(tr))
    fit_s = time.perf_counter() - t0
    X_te = r.embed(p_te)
    m = len(specs)
    knn0 = r.heads_[0].heads_[1]
    H = knn0.X_                                  # unit rows of the history's unique prompts (all models saw all)
    Q = (X_te / np.maximum(np.linalg.norm(X_te, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    out: dict[str, np.ndarray] = {}
    P = {k: np.empty((len(te), m)) for k in ("logistic", "knn", "knn200")}
    conc = {k: np.empty(m) for k in ("logistic", "knn", "knn200")}
    idx, sim = nearest(Q, H, KNN_TOPIC_K, return_similarity=True)
    zeros = np.zeros(len(Q), dtype=int)
    S = np.empty((len(H), m))
    A = np.empty((len(H), m))
    for j, head in enumerate(r.heads_):
        log, knn = head.heads_
        if len(knn.X_) != len(H):
            raise ValueError("every model must have seen every history prompt for the shared parts")
        P["logistic"][:, j] = log.predict(X_te).p_success
        conc["logistic"][j] = log.concentration_
        P["knn"][:, j] = knn.predict(X_te).p_success
        conc["knn"][j] = knn.concentration_
        P["knn200"][:, j] = knn._rates(idx, sim, knn.s_, knn.a_, knn.g_, knn.base_, zeros)
        conc["knn200"][j] = knn.concentration_
        S[:, j], A[:, j] = knn.s_, knn.a_
    out.update(knn_recalibration(H, S, A, [head.heads_[1] for head in r.heads_]))
    base = S.sum(0) / A.sum(0)
    for K in TOPIC_KS:
        t = topic_parts(H, Q, S, A, base, K)
        P[f"topics{K}"], conc[f"topics{K}"] = t.pop("p"), t.pop("c")
        out.update({f"{k}{K}": v for k, v in t.items()})
    for k, v in P.items():
        out[f"p_{k}"] = v
        out[f"c_{k}"] = conc[k]
    out["sim"] = max_similarity(X_te, H, h_unit=True)
    for q in GUARD_QUANTILES:
        out[f"far_below_{q:g}"] = np.array(far_threshold(H, DepthGuard(far_quantile=q)))
    ev = r.evidence_
    out.update(ev_prompts=np.asarray(ev.prompts, float), ev_rate_sum=np.asarray(ev.rate_sum, float),
               ev_varies=np.asarray(ev.varies, bool), base_rate=np.asarray(r.base_rate_, float),
               mean_cost=np.asarray(r.history_mean_cost_, float), C=r.costs(p_te), Y=data.scores[te],
               hist_mean=np.nanmean(data.scores[tr], axis=0), task=task_labels[te], rows=te,
               fit_s=np.array(fit_s), total_s=np.array(time.perf_counter() - t0))
    return out


SHRINK_GRID = np.linspace(0.0, 1.5, 31)


def knn_recalibration(H: np.ndarray, S: np.ndarray, A: np.ndarray, knns: Sequence[Any]) -> dict[str, np.ndarray]:
    """Per-model recalibration of the kNN part, fitted on the history by leave-one-out (calibration round).

    Each history prompt's kNN rate from the other history prompts (the head's own ``k``, weights and prior;
    one neighbour search serves every model); then, per model, by binomial log-loss on those rates:
    ``knn_shrink_fit`` the fraction ``t`` of the rate's deviation from the model's base rate to keep
    (:data:`SHRINK_GRID`), and ``knn_platt`` the ``(a, b)`` of ``sigmoid(a + b * logit(rate))``.
    """
    from scipy.optimize import minimize

    from preroll.heads.knn import nearest
    from preroll.heads.selection import binomial_log_loss

    n, m = S.shape
    kmax = max(int(k.k_) for k in knns)
    idx, sim = nearest(H, H, min(kmax + 1, n), return_similarity=True)
    own = idx == np.arange(n)[:, None]
    own[~own.any(axis=1), -1] = True                       # self not among the nearest (ties): drop the farthest
    keep = ~own
    idx = idx[keep].reshape(n, -1)
    sim = sim[keep].reshape(n, -1)
    zeros = np.zeros(n, dtype=int)
    shrink, platt, loo = np.empty(m), np.empty((m, 2)), np.empty((n, m))
    for j, knn in enumerate(knns):
        k = int(knn.k_)
        r = knn._rates(idx[:, :k], sim[:, :k], S[:, j], A[:, j], zeros, knn.base_, zeros)
        loo[:, j] = r
        base = float(knn.base_[0])
        loss = [binomial_log_loss(S[:, j], A[:, j], base + t * (r - base)).sum() for t in SHRINK_GRID]
        shrink[j] = SHRINK_GRID[int(np.argmin(loss))]
        x = np.log(r / (1 - r))

        def nll(ab: np.ndarray, x: np.ndarray = x, j: int = j) -> float:
            q = 1 / (1 + np.exp(-(ab[0] + ab[1] * x)))
            return float(binomial_log_loss(S[:, j], A[:, j], q).sum())

        platt[j] = minimize(nll, np.array([0.0, 1.0]), method="Nelder-Mead").x
    return {"knn_shrink_fit": shrink, "knn_platt": platt, "knn_k": np.array([int(k.k_) for k in knns])}


def topic_parts(H: np.ndarray, Q: np.ndarray, S: np.ndarray, A: np.ndarray, base: np.ndarray, K: int
                ) -> dict[str, np.ndarray]:
    """Per-model topic rates of ``K`` k-means topics of the unit history rows ``H``, and how central each query is.

    ``p``/``c``: each test row's topic rates (shrunk to ``base`` by :data:`TOPIC_PRIOR` rows) and their
    concentration; ``tsim``: the query's cosine similarity to its topic's centre; ``tq``: the fraction of
    that topic's history members less similar to the centre than the query (0: beyond the topic's edge).
    """
    from sklearn.cluster import KMeans

    from preroll.heads.calibration import fit_concentration

    m = S.shape[1]
    km = KMeans(K, n_init=3, random_state=0).fit(H)
    num, den = np.zeros((K, m)), np.zeros((K, m))
    np.add.at(num, km.labels_, S)
    np.add.at(den, km.labels_, A)
    rates = (num + TOPIC_PRIOR * base) / (den + TOPIC_PRIOR)
    lab = km.predict(Q.astype(km.cluster_centers_.dtype))
    cu = km.cluster_centers_ / np.maximum(np.linalg.norm(km.cluster_centers_, axis=1, keepdims=True), 1e-12)
    h_sim = np.einsum("ij,ij->i", H, cu[km.labels_])
    q_sim = np.einsum("ij,ij->i", Q, cu[lab])
    tq = np.empty(len(Q))
    for g in range(K):
        rows = lab == g
        members = np.sort(h_sim[km.labels_ == g])
        tq[rows] = np.searchsorted(members, q_sim[rows]) / max(len(members), 1)
    conc = np.array([fit_concentration(rates[km.labels_, j], S[:, j], A[:, j]) for j in range(m)])
    return {"p": rates[lab], "c": conc, "tsim": q_sim, "tq": tq}


def augment(folds_dir: Path, root: str | None = None, *, max_prompts: int = 3000, folds: int = 5,
            cache_dir: str | None = None, encoder: str = "minilm+lexical+stats", reverse: bool = False,
            progress: Callable[[str], None] = print) -> None:
    """Add ``tsim{K}``/``tq{K}`` to folds saved before they were (the history's embedding is rebuilt, no head fit).

    The fold is rebuilt as ``fit`` built it; its test rows and topic rates must equal the saved ones, else it refuses.
    ``reverse``: last fold first (a second process on the same folder meets the first in the middle).
    """
    from preroll.bench.llmrouter import load_llmrouter
    from preroll.bench.route import random_subset
    from preroll.encoders import fresh_views, get_encoder

    data = random_subset(load_llmrouter(root), max_prompts, 0)
    X_text = rs.text_embeddings(data.prompts, "minilm", cache_dir)
    built: dict[tuple[str, int], list[rs.ShiftFold]] = {}
    for p in sorted(Path(folds_dir).glob("fold-*.npz"), reverse=reverse):
        with np.load(p) as z:
            f = {k: z[k] for k in z.files}
        if f"tq{TOPIC_KS[-1]}" in f:
            continue
        _, proto, seed, fold_no = p.stem.split("-")
        key = (proto, int(seed[1:]))
        if key not in built:
            built[key] = rs.build_folds(proto, data.prompts, X_text, folds, key[1])
        fold = built[key][int(fold_no[1:])]
        if not np.array_equal(np.asarray(fold.test), f["rows"]):
            raise ValueError(f"{p.name}: the rebuilt fold's test rows differ from the saved ones")
        hist = data.histories(fold.train)
        all_prompts = list(dict.fromkeys(r.prompt for n in data.models for r in hist[n]))
        enc = fresh_views(get_encoder(encoder, cache_dir=cache_dir))
        enc.fit(all_prompts)
        H = _unit(np.asarray(enc.encode(all_prompts), np.float32))
        Q = _unit(np.asarray(enc.encode([data.prompts[i] for i in fold.test]), np.float32))
        row = {q: i for i, q in enumerate(all_prompts)}
        S, A = np.zeros((len(H), len(data.models))), np.zeros((len(H), len(data.models)))
        for j, n in enumerate(data.models):
            for r in hist[n]:
                S[row[r.prompt], j] += r.successes
                A[row[r.prompt], j] += r.attempts
        base = S.sum(0) / A.sum(0)
        for K in TOPIC_KS:
            t = topic_parts(H, Q, S, A, base, K)
            if not np.allclose(t["p"], f[f"p_topics{K}"], atol=1e-6):
                raise ValueError(f"{p.name}: rebuilt topics{K} rates differ from the saved ones")
            f[f"tsim{K}"], f[f"tq{K}"] = t["tsim"], t["tq"]
        tmp = p.with_suffix(".tmp.npz")
        np.savez(tmp, **f)
        tmp.replace(p)
        progress(f"augmented {p.name}")


def _unit(X: np.ndarray) -> np.ndarray:
    return (X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def run_parts(root: str | None, out: Path, seeds: Sequence[int], protocols: Sequence[str], *,
              max_prompts: int = 3000, max_folds: int = 2, folds: int = 5, encoder: str = "minilm+lexical+stats",
              cache_dir: str | None = None, output_tokens: int = 256,
              progress: Callable[[str], None] = print) -> None:
    """Write ``fold-<protocol>-s<seed>-f<fold>.npz`` under ``out`` for each fold not written yet (resumable)."""
    from preroll.bench.llmrouter import load_llmrouter
    from preroll.bench.route import random_subset
    from preroll.encoders import get_encoder

    data = random_subset(load_llmrouter(root), max_prompts, 0)
    specs = data.model_specs(output_tokens)
    X_text = rs.text_embeddings(data.prompts, "minilm", cache_dir)
    _, t = rs._text_ids(data.prompts)
    task = rs.text_clusters(X_text, TASK_TOPICS, 0)[t]
    enc = get_encoder(encoder, cache_dir=cache_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "models.json").write_text(json.dumps(data.models))
    for seed in seeds:
        for proto in protocols:
            for fold in rs.build_folds(proto, data.prompts, X_text, folds, seed)[:max_folds]:
                path = out / f"fold-{proto}-s{seed}-f{fold.fold}.npz"
                if path.exists():
                    continue
                progress(f"{proto} seed {seed} fold {fold.fold}: {len(fold.train)} history / {len(fold.test)} test")
                parts = fold_parts(data, specs, fold, enc, task)
                tmp = path.with_suffix(".tmp.npz")
                np.savez(tmp, **parts)
                tmp.replace(path)
                progress(f"  fit {float(parts['fit_s']):.0f} s, all parts {float(parts['total_s']):.0f} s")


# ------------------------------------------------------------------ the sweep


def gate_weight(f: dict[str, np.ndarray], gate: str, part: str) -> np.ndarray:
    """Per test row, the weight of topic part ``part`` under ``gate`` (see :class:`Candidate`)."""
    if gate.startswith("depth"):
        return (f["sim"] >= f[f"far_below_{float(gate[5:]):g}"]).astype(float)
    if gate.startswith("topic"):
        return (f[f"tq{part[6:]}"] >= float(gate[5:])).astype(float)
    lo, hi = float(f["far_below_0.1"]), float(f["far_below_0.25"])
    return np.clip((f["sim"] - lo) / max(hi - lo, 1e-9), 0.0, 1.0)


def belief(f: dict[str, np.ndarray], parts: Sequence[str], gate: str | None = None,
           weights: Sequence[float] | None = None, knn_shrink: float = 1.0):
    """The mixture of the parts' Beta beliefs, held to the history's evidence (as the Router does).

    Equal weights, except that a ``gate`` weighs each topic part per query (:func:`gate_weight`), and
    ``weights`` (one per part) weigh the parts unequally. ``knn_shrink``: the kNN part keeps that fraction of
    its deviation from each model's history base rate.
    """
    from preroll.beliefs import BetaPrediction
    from preroll.heads.humble import Evidence, humble

    def mean_of(p: str) -> np.ndarray:
        if p == "knn" and knn_shrink != 1.0:
            return f["base_rate"] + knn_shrink * (f["p_knn"] - f["base_rate"])
        if p == "knn-loo-shrink":                     # per-model factor fitted on the history (leave-one-out)
            return np.clip(f["base_rate"] + f["knn_shrink_fit"] * (f["p_knn"] - f["base_rate"]), 1e-4, 1 - 1e-4)
        if p == "knn-loo-platt":
            x = np.log(f["p_knn"] / (1 - f["p_knn"]))
            return np.clip(1 / (1 + np.exp(-(f["knn_platt"][:, 0] + f["knn_platt"][:, 1] * x))), 1e-4, 1 - 1e-4)
        return f[f"p_{p}"]

    def conc_of(p: str) -> np.ndarray:
        return f["c_knn" if p.startswith("knn-loo") else f"c_{p}"]

    preds = [BetaPrediction.from_mean_concentration(mean_of(p), np.broadcast_to(conc_of(p), f["p_knn"].shape))
             for p in parts]
    n = len(f["Y"])
    w = np.stack([(1.0 if weights is None else float(weights[i]))
                  * (gate_weight(f, gate, p) if gate is not None and p.startswith("topics") else np.ones(n))
                  for i, p in enumerate(parts)])[:, :, None]                 # (parts, rows, 1)
    w = w / w.sum(axis=0, keepdims=True)
    mean = (w * np.stack([b.p_success for b in preds])).sum(axis=0)
    second = (w * np.stack([b.var + b.p_success ** 2 for b in preds])).sum(axis=0)
    mix = BetaPrediction.from_mean_var(mean, second - mean ** 2)
    return humble(mix, Evidence(f["ev_prompts"], f["ev_rate_sum"], f["ev_varies"]))


def candidate_picks(f: dict[str, np.ndarray], cand: Candidate, cols: np.ndarray, grid: Sequence[float]):
    """Chosen column (index into ``cols``) per test row at each ``lam`` of ``grid``."""
    from preroll.route import rules

    b = belief(f, cand.parts, cand.gate, cand.weights, cand.knn_shrink)
    P = np.clip(b.p_success[:, cols], 0, 1)
    sd = b.std[:, cols]
    C = f["C"][:, cols]
    far = f["sim"] < f[f"far_below_{cand.guard:g}"] if cand.guard is not None else None
    out = []
    for lam in grid:
        plain = rules.choose("utility", P, C, float(lam))
        if far is None or not far.any():
            out.append(plain)
            continue
        d = rules.default_model(f["base_rate"][cols], f["mean_cost"][cols], float(lam))
        conf = rules.rank_confident(P, sd, C, float(lam), d, z=cand.z)[:, 0]
        out.append(np.where(far, conf, plain))
    return out


def task_oracle(Y: np.ndarray, task: np.ndarray) -> np.ndarray:
    """Each test topic's best column on the test rows themselves (an in-sample bound, not a router)."""
    pick = np.empty(len(Y), dtype=int)
    for g in np.unique(task):
        rows = task == g
        pick[rows] = int(np.nanargmax(np.nanmean(Y[rows], axis=0)))
    return pick


def load_folds(dirs: Sequence[Path]) -> dict[tuple[str, int], list[dict[str, np.ndarray]]]:
    runs: dict[tuple[str, int], list[dict[str, np.ndarray]]] = {}
    for d in dirs:
        for p in sorted(Path(d).glob("fold-*.npz")):
            if p.stem.endswith(".tmp"):                  # a fold being written (fit or augment)
                continue
            _, proto, seed, _fold = p.stem.split("-")
            with np.load(p) as z:
                runs.setdefault((proto, int(seed[1:])), []).append({k: z[k] for k in z.files})
    return runs


def evaluate(runs: dict[tuple[str, int], list[dict[str, np.ndarray]]], names: Sequence[str],
             candidates: dict[str, Candidate] = CANDIDATES, grid_n: int = 61) -> dict[str, Any]:
    """Per (model set, protocol, seed): each candidate's pooled gain, its se, the paired se against the default,
    cost to match, share of the most chosen model, the graded slice; the baselines' gains."""
    from preroll.route import rules

    default = next(iter(candidates))
    table = []
    for (proto, seed), folds in sorted(runs.items()):
        m = folds[0]["Y"].shape[1]
        for mset in MODEL_SETS:
            cols = np.arange(m) if mset == "nine" else np.array([j for j, n in enumerate(names) if n in SMALL_MODELS])
            Y = np.concatenate([f["Y"][:, cols] for f in folds])
            C = np.concatenate([f["C"][:, cols] for f in folds])
            best = np.concatenate([np.full(len(f["Y"]), int(np.nanargmax(f["hist_mean"][cols]))) for f in folds])
            graded = rs.graded_rows(Y)
            c0 = candidates[default]
            P0 = np.concatenate([belief(f, c0.parts, c0.gate, c0.weights, c0.knn_shrink).p_success[:, cols]
                                 for f in folds])
            grid = rules.default_grid("utility", P0, C, n=grid_n)
            rows = np.arange(len(Y))
            entry: dict[str, Any] = {"set": mset, "protocol": proto, "seed": seed, "n": len(Y),
                                     "oracle_gain": float(np.nanmean(np.nanmax(Y, 1)) - np.nanmean(Y[rows, best])),
                                     "methods": {}}
            d_default = None
            for name, cand in candidates.items():
                per = [candidate_picks(f, cand, cols, grid) for f in folds]
                picks = [np.concatenate([p[i] for p in per]) for i in range(len(grid))]
                res = rs.pooled_metrics(picks, Y, C, best, graded)
                res.pop("curve")
                d = Y[rows, picks[0]] - Y[rows, best]
                if d_default is None:
                    d_default = d
                diff = d - d_default
                res["paired_se_vs_default"] = float(np.std(diff) / np.sqrt(len(diff)))
                res["top_share"] = float(np.bincount(picks[0], minlength=len(cols)).max() / len(Y))
                entry["methods"][name] = res
            task = np.concatenate([f["task"] for f in folds])
            entry["task_oracle_gain"] = float(np.nanmean(Y[rows, task_oracle(Y, task)] - Y[rows, best]))
            table.append(entry)
    return {"runs": table, "summary": summarise(table, candidates)}


def summarise(table: list[dict[str, Any]], candidates: dict[str, Candidate]) -> list[dict[str, Any]]:
    out = []
    for name, cand in candidates.items():
        g = {f"{e['set']}/{e['protocol']}/s{e['seed']}": e["methods"][name]["gain"] for e in table}
        ctm = [e["methods"][name]["cost_to_match"] for e in table if e["set"] == "nine"]
        out.append({"name": name, "baseline": cand.baseline, "complexity": list(cand.complexity),
                    "worst": min(g.values()), "worst_run": min(g, key=g.get), "mean": float(np.mean(list(g.values()))),
                    "worst_nine": min(v for k, v in g.items() if k.startswith("nine")),
                    "worst_small": min(v for k, v in g.items() if k.startswith("small")),
                    "mean_nine": float(np.mean([v for k, v in g.items() if k.startswith("nine")])),
                    "mean_small": float(np.mean([v for k, v in g.items() if k.startswith("small")])),
                    "worst_ctm_nine": None if any(c is None for c in ctm) else max(ctm),
                    "median_ctm_nine": float(np.median([np.inf if c is None else c for c in ctm])),
                    "top_share_mean": float(np.mean([e["methods"][name]["top_share"] for e in table]))})
    return out


def choose(summary: list[dict[str, Any]], candidates: dict[str, Candidate], bar: float = 0.005) -> str:
    """:data:`SELECTION_RULE` applied to a summary (gains as fractions: ``bar`` 0.005 is half a point)."""
    default = next(iter(candidates))
    by = {e["name"]: e for e in summary if not e["baseline"]}
    beat = [n for n, e in by.items() if e["worst"] > by[default]["worst"] + bar
            and e.get("mean_nine", 0.0) >= by[default].get("mean_nine", 0.0)]
    if not beat:
        return default
    top = max(by[n]["worst"] for n in beat)
    tied = [n for n in beat if by[n]["worst"] >= top - bar]
    return min(tied, key=lambda n: (candidates[n].complexity, -by[n]["worst"]))


def choose_calib(summary: list[dict[str, Any]], candidates: dict[str, Candidate],
                 gain_bar: float = 0.0025, cost_bar: float = 0.03) -> str:
    """:data:`CALIB_RULE` applied to a summary (fractions: ``gain_bar`` 0.0025 is a quarter point, ``cost_bar``
    0.03 three points of the best single model's price)."""
    default = next(iter(candidates))
    by = {e["name"]: e for e in summary if not e["baseline"]}
    d = by[default]
    ok = [n for n, e in by.items() if n != default and e["worst"] >= d["worst"] - gain_bar
          and np.isfinite(e["median_ctm_nine"]) and e["median_ctm_nine"] <= d["median_ctm_nine"] - cost_bar]
    if not ok:
        return default
    low = min(by[n]["median_ctm_nine"] for n in ok)
    tied = [n for n in ok if by[n]["median_ctm_nine"] <= low + cost_bar]
    return min(tied, key=lambda n: (len(candidates[n].parts), candidates[n].settings_changed, by[n]["median_ctm_nine"]))


def part_ece(runs: dict[tuple[str, int], list[dict[str, np.ndarray]]],
             beliefs: Sequence[tuple[str, ...]] = (("logistic", "knn"), ("logistic", "knn", "topics20"), ("logistic",),
                                                   ("knn",), ("knn200",), ("topics20",))) -> dict[str, dict[str, float]]:
    """Per-model ECE (mean over the nine models) of each belief, per (protocol, seed): calibration under shift."""
    out: dict[str, dict[str, float]] = {}
    for (proto, seed), folds in sorted(runs.items()):
        Y = np.concatenate([f["Y"] for f in folds])
        for parts in beliefs:
            P = np.concatenate([belief(f, parts).p_success for f in folds])
            out.setdefault("+".join(parts), {})[f"{proto}/s{seed}"] = float(np.mean(
                [rs.expected_calibration_error(P[:, j], Y[:, j]) for j in range(Y.shape[1])]))
    return out


def candidate_ece(runs: dict[tuple[str, int], list[dict[str, np.ndarray]]],
                  candidates: dict[str, Candidate]) -> dict[str, dict[str, float]]:
    """Per-model ECE (mean over the nine models) of each candidate's belief, per (protocol, seed)."""
    out: dict[str, dict[str, float]] = {}
    for (proto, seed), folds in sorted(runs.items()):
        Y = np.concatenate([f["Y"] for f in folds])
        for name, c in candidates.items():
            P = np.concatenate([belief(f, c.parts, c.gate, c.weights, c.knn_shrink).p_success for f in folds])
            out.setdefault(name, {})[f"{proto}/s{seed}"] = float(np.mean(
                [rs.expected_calibration_error(P[:, j], Y[:, j]) for j in range(Y.shape[1])]))
    return out


def print_report(res: dict[str, Any]) -> None:
    table = res["runs"]
    for e in table:
        print(f"\n{e['set']} {e['protocol']} s{e['seed']}: n={e['n']}, oracle +{100 * e['oracle_gain']:.1f}, "
              f"task oracle +{100 * e['task_oracle_gain']:.2f}")
        for name, m in e["methods"].items():
            ctm = "never" if m["cost_to_match"] is None else f"{100 * m['cost_to_match']:.0f}%"
            gg = "-" if m["graded_gain"] is None else f"{100 * m['graded_gain']:+.1f}(n={m['graded_n']})"
            print(f"  {name:32s} {100 * m['gain']:+6.2f} ± {100 * m['gain_se']:.2f} (paired {100 * m['paired_se_vs_default']:.2f})"
                  f"  ctm {ctm:>5s}  top {100 * m['top_share']:3.0f}%  graded {gg}")
    print("\nsummary (points): worst / mean over all runs; nine worst / mean; small worst / mean; worst ctm nine; "
          "mean top share")
    for s in sorted(res["summary"], key=lambda s: -s["worst"]):
        w = "never" if s["worst_ctm_nine"] is None else f"{100 * s['worst_ctm_nine']:.0f}%"
        med = "never" if not np.isfinite(s["median_ctm_nine"]) else f"{100 * s['median_ctm_nine']:.1f}%"
        print(f"  {s['name']:32s} {100 * s['worst']:+6.2f} ({s['worst_run']}) / {100 * s['mean']:+5.2f};  "
              f"{100 * s['worst_nine']:+6.2f} / {100 * s['mean_nine']:+5.2f};  {100 * s['worst_small']:+6.2f} / "
              f"{100 * s['mean_small']:+5.2f};  {w};  median ctm nine {med};  {100 * s['top_share_mean']:.0f}%")


def _print_ece(ece: dict[str, dict[str, float]]) -> None:
    print("\nper-model ECE (mean over the nine models), topics known (random, reweight) / held out (cluster):")
    for name, per in ece.items():
        known = [v for k, v in per.items() if k.startswith(("random", "reweight"))]
        out = [v for k, v in per.items() if k.startswith("cluster")]
        print(f"  {name:32s} {np.mean(known) if known else float('nan'):.3f} / {np.mean(out) if out else float('nan'):.3f}")


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit")
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--seeds", default="0")
    f.add_argument("--protocols", default=",".join(rs.PROTOCOLS))
    f.add_argument("--max-prompts", type=int, default=3000)
    f.add_argument("--max-folds", type=int, default=2)
    f.add_argument("--cache-dir", default=None)
    g = sub.add_parser("augment")
    g.add_argument("dir", type=Path)
    g.add_argument("--max-prompts", type=int, default=3000)
    g.add_argument("--cache-dir", default=None)
    g.add_argument("--reverse", action="store_true")
    e = sub.add_parser("eval")
    e.add_argument("dirs", nargs="+", type=Path)
    e.add_argument("--seeds", default=None)
    e.add_argument("--json", type=Path, default=None)
    e.add_argument("--round", choices=("third", "calib", "calib-loo"), default="third",
                   help="candidates and rule: the third round's (gated topic rates) or the calibration round's")
    a = ap.parse_args(argv)
    if a.cmd == "fit":
        run_parts(None, a.out, [int(s) for s in a.seeds.split(",")], rs.check_protocols(a.protocols.split(",")),
                  max_prompts=a.max_prompts, max_folds=a.max_folds, cache_dir=a.cache_dir,
                  progress=lambda s: print(s, flush=True))
        return
    if a.cmd == "augment":
        augment(a.dir, max_prompts=a.max_prompts, cache_dir=a.cache_dir, reverse=a.reverse, progress=lambda s: print(s, flush=True))
        return
    runs = load_folds(a.dirs)
    if a.seeds:
        keep = {int(s) for s in a.seeds.split(",")}
        runs = {k: v for k, v in runs.items() if k[1] in keep}
    names = json.loads((a.dirs[0] / "models.json").read_text())
    if a.round.startswith("calib"):
        cands = CALIB_CANDIDATES if a.round == "calib" else CALIB_LOO_CANDIDATES
        res = evaluate(runs, names, cands)
        res["ece"] = candidate_ece(runs, cands)
        print_report(res)
        _print_ece(res["ece"])
        print(f"\nchoice by the calibration rule: {choose_calib(res['summary'], cands)}")
        if a.json:
            a.json.write_text(json.dumps(res, indent=1))
        return
    res = evaluate(runs, names)
    res["ece"] = part_ece(runs)
    print_report(res)
    _print_ece(res["ece"])
    print(f"\nchoice by the selection rule: {choose(res['summary'], CANDIDATES)}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
