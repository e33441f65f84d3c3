"""The V_0.5 fused baseline: a predicted prior shrunk toward a few real rollouts.

Why: with 4 rollouts the group mean, GRPO's baseline, has variance p(1-p)/4,
up to 0.0625; a value model's prediction has no sampling noise but may be
biased. V_0.5 (arXiv 2603.10848) fuses the two with a weight that minimises
the estimate's MSE, tests online whether the prior can be trusted, and buys
more rollouts only where that lowers the MSE enough. What we implement, for
one prompt with prior mean m and k rewards r_1..r_k in [0, 1] (sum s):

    empirical mean     x = s / k
    noise of x         v = q (1 - q) / k,  q = (x + m) / 2
                       (Bernoulli variance at a point between data and prior:
                       stays > 0 when all k rewards agree)
    prior error        tau2 = E[(m - p)^2], estimated online (below)
    deviation test     T = |x - m| / sqrt(m (1 - m) / k + tau2), the score
                       statistic under "the prior is right up to tau2"; the
                       prior is rejected for this prompt when T > z
                       (default z = 2.58, two-sided 1%)
    prompt's tau2      tau2_i = tau2 if kept, max(tau2, (x - m)^2 - v) if
                       rejected (its own bias estimate replaces the pooled one)
    shrinkage weight   w = v / (v + tau2_i) on the prior
    estimate           p^ = w m + (1 - w) x
    estimated MSE      (1-w)^2 v + w^2 tau2_i = v tau2_i / (v + tau2_i)

w minimises (1-w)^2 v + w^2 tau2_i: trust the prior exactly as much as its
error is small against the rollouts' noise. A rejected prior is shrunk
toward rather than dropped: on the shared data a hard switch to the group
mean loses more on false alarms (frequent with 4 Bernoulli rollouts) than it
saves on real ones; docs/schedule.md has the comparison.

tau2 ("bias estimated online"), first that applies:
  1. ``bias_var`` given (e.g. from a :class:`BiasTracker` over past steps);
  2. a batch of >= ``min_batch`` prompts: the method-of-moments estimate
     tau2 = max(floor, mean_i[(x_i - m_i)^2 - v_i]), because
     E[(x - m)^2] = tau2 + v; with per-prompt ``prior_var`` (a value model's
     Beta variance) the shape is kept and only its scale is fitted:
     tau2_i = kappa * prior_var_i, kappa = sum[(x-m)^2 - v] / sum prior_var;
  3. ``prior_var`` alone;
  4. a single prompt with nothing else: max(floor, (x - m)^2 - v).

:class:`SequentialBaseline` is the budget controller: starting from
``min_rollouts`` (4) it adds one rollout while the predicted MSE drop
MSE(k) - MSE(k+1) exceeds ``cost`` (the MSE reduction one rollout must buy),
up to ``max_rollouts`` (16).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from preroll.beliefs import BetaPrediction
from preroll.schedule.errors import ScheduleInputError


@dataclass(frozen=True)
class FusedEstimate:
    """Everything the fusion computed, per prompt (arrays, or 0-d for one prompt)."""

    estimate: np.ndarray
    weight: np.ndarray      # weight on the prior
    empirical: np.ndarray   # plain group mean (the prior where k = 0)
    n: np.ndarray           # rollouts seen
    noise_var: np.ndarray   # v = sigma2 / k
    bias_var: np.ndarray    # tau2 used
    rejected: np.ndarray    # prior failed the deviation test
    mse: np.ndarray         # estimated MSE of ``estimate``


def _as_prior(prior, prior_var):
    if isinstance(prior, BetaPrediction):
        if prior_var is None:
            prior_var = prior.var
        prior = prior.p_success
    m = np.asarray(prior, dtype=float)
    if m.ndim > 1:
        raise ScheduleInputError(f"must be a number or a 1-D array (got shape {m.shape})", field="prior")
    flat = m.reshape(-1)
    bad = ~np.isfinite(flat) | (flat < 0) | (flat > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ScheduleInputError(f"is {flat[i]!r}, not a probability in [0, 1]", field="prior",
                                 index=None if m.ndim == 0 else i)
    if prior_var is not None:
        pv = np.broadcast_to(np.asarray(prior_var, dtype=float), m.shape).reshape(-1)
        bad = ~np.isfinite(pv) | (pv < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ScheduleInputError(f"is {pv[i]!r} (must be finite and >= 0)", field="prior_var",
                                     index=None if m.ndim == 0 else i)
        prior_var = pv
    return m, prior_var


def _reward_stats(rewards, n_prompts: int, scalar: bool):
    """Successes and counts per prompt from 1-D (one prompt), 2-D or ragged rewards."""
    def check(arr: np.ndarray, row: int | None):
        bad = ~np.isfinite(arr) | (arr < 0) | (arr > 1)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            where = f"rewards[{row}][{j}]" if row is not None else f"rewards[{j}]"
            raise ScheduleInputError(f"{where} is {arr[j]!r}: rewards must lie in [0, 1] "
                                     "(rescale +-1 rewards with (r + 1) / 2)", field=None)

    if scalar:
        try:
            arr = np.asarray(rewards, dtype=float)
        except (TypeError, ValueError):
            raise ScheduleInputError("one prompt (a scalar prior) takes a flat sequence of rewards",
                                     field="rewards") from None
        if arr.ndim > 1:
            raise ScheduleInputError(f"one prompt (a scalar prior) takes a flat sequence of rewards, "
                                     f"got shape {arr.shape}; pass one prior per row", field="rewards")
        arr = arr.reshape(-1)
        check(arr, None)
        return np.array([arr.sum()]), np.array([arr.size], dtype=float)
    if isinstance(rewards, np.ndarray) and rewards.ndim == 2:
        arr = rewards.astype(float)
        if arr.shape[0] != n_prompts:
            raise ScheduleInputError(f"has {arr.shape[0]} rows for {n_prompts} priors", field="rewards")
        for i in np.flatnonzero((~np.isfinite(arr) | (arr < 0) | (arr > 1)).any(axis=1))[:1]:
            check(arr[i], int(i))
        return arr.sum(axis=1), np.full(n_prompts, arr.shape[1], dtype=float)
    rows = list(rewards)
    if len(rows) != n_prompts:
        raise ScheduleInputError(f"has {len(rows)} rows for {n_prompts} priors", field="rewards")
    s = np.zeros(n_prompts)
    k = np.zeros(n_prompts)
    for i, row in enumerate(rows):
        arr = np.asarray(row, dtype=float).reshape(-1)
        check(arr, i)
        s[i], k[i] = arr.sum(), arr.size
    return s, k


def _check_positive(name, value, *, allow_inf=False):
    v = float(value)
    if np.isnan(v) or v < 0 or (np.isinf(v) and not allow_inf):
        raise ScheduleInputError(f"must be a number >= 0 (got {value!r})", field=name)
    return v


def fuse_stats(m: np.ndarray, s: np.ndarray, k: np.ndarray, *, prior_var=None, bias_var=None,
               z: float = 2.58, min_batch: int = 8, min_bias_var: float = 1e-4) -> FusedEstimate:
    """Vectorised fusion from sufficient statistics (successes ``s`` of ``k``).

    Validated input only; :func:`fuse` is the checked entry point.
    """
    m = np.asarray(m, dtype=float).reshape(-1)
    has = k > 0
    kk = np.where(has, k, 1.0)
    x = np.where(has, s / kk, m)
    q = (x + m) / 2.0
    v = np.where(has, q * (1.0 - q) / kk, np.inf)
    dev2 = (x - m) ** 2
    vh = np.where(has, v, 0.0)
    if bias_var is not None:
        tau2 = np.broadcast_to(np.asarray(bias_var, dtype=float), m.shape).astype(float)
    elif has.sum() >= min_batch:
        excess = (dev2 - vh)[has]
        if prior_var is not None and prior_var[has].sum() > 0:
            kappa = max(excess.sum(), 0.0) / prior_var[has].sum()
            tau2 = kappa * prior_var
        else:
            tau2 = np.full(m.shape, max(excess.mean(), 0.0))
    elif prior_var is not None:
        tau2 = prior_var.astype(float)
    else:
        tau2 = np.where(has, dev2 - vh, 0.0)
    tau2 = np.maximum(tau2, min_bias_var)
    null_sd = np.sqrt(m * (1.0 - m) / kk + tau2)
    rejected = has & (np.sqrt(dev2) > z * null_sd)
    tau2_i = np.where(rejected, np.maximum(tau2, dev2 - vh), tau2)
    w = np.ones_like(m)
    w[has] = v[has] / (v[has] + tau2_i[has])
    est = w * m + (1.0 - w) * x
    mse = np.where(has, (1 - w) ** 2 * vh + w ** 2 * tau2_i, tau2_i)
    tau2 = tau2_i
    return FusedEstimate(estimate=est, weight=w, empirical=x, n=k, noise_var=np.where(has, v, np.inf),
                         bias_var=tau2, rejected=rejected, mse=mse)


def fuse(prior, rewards, *, prior_var=None, bias_var=None, z: float = 2.58,
         min_batch: int = 8, min_bias_var: float = 1e-4) -> FusedEstimate:
    """V_0.5 fusion with all intermediate quantities (see the module docstring).

    ``prior``: a probability, an array of them, or a BetaPrediction (whose
    variance becomes ``prior_var``). ``rewards``: for one prompt a sequence
    of k rewards in [0, 1]; for a batch a 2-D array (prompts x k) or a list
    of per-prompt sequences of any lengths.
    """
    m, prior_var = _as_prior(prior, prior_var)
    scalar = m.ndim == 0
    mm = m.reshape(-1)
    s, k = _reward_stats(rewards, mm.size, scalar)
    z = _check_positive("z", z, allow_inf=True)
    min_bias_var = _check_positive("min_bias_var", min_bias_var)
    if bias_var is not None:
        bv = np.asarray(bias_var, dtype=float)
        if (~np.isfinite(bv) | (bv < 0)).any():
            raise ScheduleInputError(f"must be finite and >= 0 (got {bias_var!r})", field="bias_var")
    out = fuse_stats(mm, s, k, prior_var=prior_var, bias_var=bias_var, z=z,
                     min_batch=min_batch, min_bias_var=min_bias_var)
    if scalar:
        out = FusedEstimate(*(np.asarray(getattr(out, f)[0]) for f in FusedEstimate.__dataclass_fields__))
    return out


def fused_baseline(prior, rewards, *, prior_var=None, bias_var=None, z: float = 2.58,
                   min_batch: int = 8, min_bias_var: float = 1e-4):
    """The V_0.5 baseline: fused estimate of the success rate.

    Returns a float for one prompt (scalar ``prior``, 1-D ``rewards``) and an
    array for a batch. Formulas: module docstring of
    :mod:`preroll.schedule.fused`.
    """
    out = fuse(prior, rewards, prior_var=prior_var, bias_var=bias_var, z=z,
               min_batch=min_batch, min_bias_var=min_bias_var)
    return float(out.estimate) if out.estimate.ndim == 0 else out.estimate


class BiasTracker:
    """Online estimate of the prior's squared error tau2 across training steps.

    Each ``update`` adds the batch's moment estimate mean[(x - m)^2 - v] to
    an exponentially weighted mean (weight ``decay`` on the past), because the
    value model's bias drifts as the policy trains.
    """

    def __init__(self, decay: float = 0.9, initial: float | None = None) -> None:
        self.decay = decay
        self.initial = initial

    def update(self, prior, rewards) -> "BiasTracker":
        """Fold one batch (priors and their rewards, as for :func:`fuse`) into the estimate."""
        if not 0.0 <= self.decay < 1.0:
            raise ScheduleInputError(f"must be in [0, 1) (got {self.decay!r})", field="decay")
        m, _ = _as_prior(prior, None)
        mm = m.reshape(-1)
        s, k = _reward_stats(rewards, mm.size, m.ndim == 0)
        has = k > 0
        if has.any():
            x = s[has] / k[has]
            q = (x + mm[has]) / 2.0
            v = q * (1.0 - q) / k[has]
            batch = float(np.mean((x - mm[has]) ** 2 - v))
            prev = getattr(self, "bias_var_", self.initial)
            self.bias_var_ = batch if prev is None else self.decay * prev + (1 - self.decay) * batch
        return self

    @property
    def bias_var(self) -> float | None:
        """Current tau2 estimate (None before any update without ``initial``)."""
        v = getattr(self, "bias_var_", self.initial)
        return None if v is None else max(float(v), 0.0)


class SequentialBaseline:
    """V_0.5's rollout controller: one more rollout only where it pays.

    After each rollout the fused estimate's MSE is predicted for k and k+1
    rollouts with the same per-rollout variance sigma2 = k v and the prompt's
    tau2_i: gain = MSE(k) - MSE(k+1) with MSE(j) = (sigma2/j) tau2_i /
    (sigma2/j + tau2_i). A rejected prior has a large tau2_i, so its gain is
    close to the group mean's sigma2 / (k (k+1)): that is where the extra
    rollouts go. Roll again iff k < min_rollouts, or k < max_rollouts and
    gain > cost.
    ``cost`` is in MSE units: the error reduction one rollout must buy.
    """

    def __init__(self, *, cost: float, min_rollouts: int = 4, max_rollouts: int = 16,
                 z: float = 2.58, min_batch: int = 8, min_bias_var: float = 1e-4) -> None:
        self.cost = cost
        self.min_rollouts = min_rollouts
        self.max_rollouts = max_rollouts
        self.z = z
        self.min_batch = min_batch
        self.min_bias_var = min_bias_var

    def _validate(self) -> None:
        _check_positive("cost", self.cost)
        if int(self.min_rollouts) < 1 or int(self.max_rollouts) < int(self.min_rollouts):
            raise ScheduleInputError(f"need 1 <= min_rollouts <= max_rollouts (got {self.min_rollouts}, "
                                     f"{self.max_rollouts})", field="max_rollouts")

    def expected_gain(self, est: FusedEstimate) -> np.ndarray:
        """Predicted MSE drop from one more rollout, per prompt."""
        k = np.asarray(est.n, dtype=float)
        sigma2 = np.where(k > 0, np.asarray(est.noise_var) * np.maximum(k, 1), 0.25)
        tau2 = np.asarray(est.bias_var)
        v0 = sigma2 / np.maximum(k, 1)
        v1 = sigma2 / (k + 1)
        gain = v0 * tau2 / (v0 + tau2) - v1 * tau2 / (v1 + tau2)
        return np.where(k > 0, gain, np.inf)

    def should_continue(self, prior, rewards, **fuse_kw) -> bool | np.ndarray:
        """Whether to draw one more rollout (per prompt for a batch)."""
        self._validate()
        est = fuse(prior, rewards, z=self.z, min_batch=self.min_batch, min_bias_var=self.min_bias_var, **fuse_kw)
        k = np.asarray(est.n)
        go = (k < self.min_rollouts) | ((k < self.max_rollouts) & (self.expected_gain(est) > self.cost))
        return bool(go) if go.ndim == 0 else go

    def run(self, prior, draw: Callable[[], float], **fuse_kw) -> tuple[FusedEstimate, list[float]]:
        """Drive one prompt: call ``draw()`` for rewards until the rule stops."""
        rewards: list[float] = []
        while self.should_continue(prior, rewards, **fuse_kw):
            rewards.append(float(draw()))
        return fuse(prior, rewards, z=self.z, min_batch=self.min_batch,
                    min_bias_var=self.min_bias_var, **fuse_kw), rewards

    def run_batch(self, prior, reward_matrix: np.ndarray, *, prior_var=None,
                  bias_var=None) -> tuple[FusedEstimate, np.ndarray]:
        """Drive a batch on pre-drawn rewards (prompts x max_rollouts).

        tau2 is estimated once from the first ``min_rollouts`` of every prompt
        (unless ``bias_var`` is given) and then held fixed, as a trainer would
        after its first round. Returns the final estimates and rollouts used.
        """
        self._validate()
        m, prior_var = _as_prior(prior, prior_var)
        m = m.reshape(-1)
        r = np.asarray(reward_matrix, dtype=float)
        if r.ndim != 2 or r.shape[0] != m.size or r.shape[1] < self.max_rollouts:
            raise ScheduleInputError(f"must be (prompts={m.size}) x (>= {self.max_rollouts}) rewards, "
                                     f"got shape {r.shape}", field="reward_matrix")
        kw: dict[str, Any] = dict(z=self.z, min_batch=self.min_batch, min_bias_var=self.min_bias_var)
        k = np.full(m.size, int(self.min_rollouts), dtype=float)
        s = r[:, : self.min_rollouts].sum(axis=1)
        # Pooled tau2 from the first round, before any per-prompt rejection.
        pooled = fuse_stats(m, s, k, prior_var=prior_var, bias_var=bias_var,
                            **{**kw, "z": np.inf}).bias_var
        tau2 = pooled
        est = fuse_stats(m, s, k, bias_var=tau2, **kw)
        while True:
            go = (k < self.max_rollouts) & (self.expected_gain(est) > self.cost)
            if not go.any():
                break
            idx = np.flatnonzero(go)
            s[idx] += r[idx, k[idx].astype(int)]
            k[idx] += 1
            est = fuse_stats(m, s, k, bias_var=tau2, **kw)
        return est, k.astype(int)
