"""The online prompt book: what a GRPO trainer has learnt about each prompt, and what to roll out next.

A real run shows every prompt again epoch after epoch, and its previous
outcomes predict its next ones; its neighbours' outcomes and the policy's
overall drift inform prompts not yet seen. The book keeps one posterior that
uses all three (see docs/online.md for the formulas):

- **own outcomes**, discounted by ``drift_decay`` per step of age and shifted
  by the global drift since they were observed (in logit space);
- **semantic neighbours**: a similarity-weighted average of the neighbours'
  drift-adjusted rates over a k-NN graph computed once from cached
  embeddings; it is the prior mean of a prompt, with a concentration fitted
  by beta-binomial maximum likelihood on first observations;
- **the global level**: a logit offset tracked from each step's residuals
  (observed minus predicted), which moves every belief when the policy
  improves; it also is the prior of a prompt without neighbours.

Everything on the hot path is a handful of numpy operations over the
requested indices; the per-prompt state is a few arrays of dataset length, and
the history (one row per prompt and step) is kept for durability and audits.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from preroll.beliefs import BetaPrediction
from preroll.outputs import atomic_open
from preroll.online.errors import OnlineInputError
from preroll.online.neighbours import neighbour_graph, neighbour_sums, reverse_weights
from preroll.online.settings import OnlineSettings, make_settings
from preroll.online.types import REASONS, BookStats, Selection
from preroll.online.validate import check_indices, check_rewards, check_step, prompt_ids
from preroll.online.warm import WarmEvidence, WarmReport, apply_evidence, read_evidence

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

logger = logging.getLogger(__name__)

FORMAT = "preroll.online.PromptBook"
VERSION = 1
#: A saved book's neighbour graph lives beside it in ``<book file name>.graph-<sha256 prefix>.npz``.
GRAPH_INFIX = ".graph-"
#: Prior concentration before enough first observations exist to fit it (about two attempts' worth).
DEFAULT_CONCENTRATION = 2.0
#: Graph edges (of seen prompts) one neighbour refit may pass over per step, amortised (~0.1 s on one core).
NEIGHBOUR_REFIT_EDGES = 4_000_000
#: First observations needed before the prior concentration is fitted.
MIN_FIT_ROWS = 64
#: First observations kept for that fit (the most recent ones: the prior's quality changes as the book learns).
FIT_WINDOW = 4096
_EPS = 1e-4
#: Rates are clipped to [eps, 1 - eps] before a logit shift: a 0/8 record moves by at most ~8 * eps successes.
_EPS_OWN = 1e-3

#: What is kept of each first observation to refit the prior (its neighbour sums, shift, global rate, outcome).
_FIRST_FIT = ("nb_num", "nb_den", "nb_global", "shift", "level_rate", "successes", "attempts", "warm_a", "warm_z")
#: Candidate weights of one warm-start attempt in the prior (relative to one neighbour attempt of weight 1).
WARM_GRID = (0.0, 0.1, 0.2, 0.35, 0.6, 1.0)
#: The weight before it is fitted.
WARM_WEIGHT = 0.35
#: Candidate slopes of the warm standing in logit space (< 1: another policy's standing says less than its
#: spread suggests); fitted with the weight.
WARM_SLOPE_GRID = (0.4, 0.6, 0.8, 1.0)
#: What is kept of each revisit (a prompt recorded again) to refit the drift discount on.
_REVISIT_FIT = ("prior_mean", "concentration", "rate", "attempts_then", "age", "successes", "attempts")
#: Candidate drift discounts per step of age.
#: Candidate shrinkage (pseudo-attempts of the global rate) of the neighbour average.
SHRINK_GRID = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: Candidate prior concentrations (log-spaced): how far a new prompt's rate scatters around its prior mean.
CONCENTRATION_GRID = tuple(np.geomspace(0.1, 100.0, 31))
#: New first observations needed before the prior's shrinkage and concentration are refitted.
HYPER_EVERY_ROWS = 256
DECAY_GRID = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 1.0)
_PER_PROMPT = ("s_", "a_", "last_", "level_at_", "dead_streak_", "pending_", "nb_num_", "nb_den_")
_COUNTERS = ("steps_", "rows_", "informative_groups_", "dead_groups_", "revisits_informative_",
             "revisits_dead_", "refits_", "steps_since_refit_")


def _logit(p):
    p = np.clip(p, _EPS_OWN, 1 - _EPS_OWN)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class PromptBook:
    """Per-prompt outcome history of one training run, and beliefs and choices built on it.

    Parameters
    ----------
    prompts:
        The dataset's prompt texts; a prompt is addressed by its position (dataset index).
    ids:
        Stable prompt ids (a dataset ``id`` column); default sha256 of the text.
    settings:
        :class:`OnlineSettings` (or a dict of its fields).
    embeddings:
        Optional precomputed embeddings (one row per prompt) for the neighbour part;
        by default they are computed once with ``settings.encoder`` (neural encoders
        through the on-disk embedding cache).
    """

    # The counters (_COUNTERS), set by name in _reset and load_state_dict.
    steps_: int
    rows_: int
    informative_groups_: int
    dead_groups_: int
    revisits_informative_: int
    revisits_dead_: int
    refits_: int
    steps_since_refit_: int

    def __init__(self, prompts: Sequence[str], ids: Sequence[str | int] | None = None,
                 settings: OnlineSettings | dict | None = None, *, embeddings: np.ndarray | None = None) -> None:
        self.settings = make_settings(settings)
        self.ids = prompt_ids(prompts, ids)
        self.prompts = list(prompts)
        n = len(self.prompts)
        if embeddings is not None:
            embeddings = np.asarray(embeddings, dtype=np.float32)
            if embeddings.ndim != 2 or len(embeddings) != n or not np.isfinite(embeddings).all():
                raise OnlineInputError(f"must be a finite array with one row per prompt ({n}), got shape "
                                       f"{embeddings.shape}", field="embeddings")
        self._embeddings = embeddings
        self._graph: tuple[np.ndarray, np.ndarray] | None = None
        self._reverse: csr_matrix | None = None   # the graph's weights by neighbour, built on the first refit
        self._graph_sha256: str | None = None      # of _graph, computed when it is first saved
        self._graph_file: Path | None = None       # a file holding _graph (the last one saved or loaded)
        self._reset(n)
        if self.settings.warm_start is not None:
            self.warm_start(self.settings.warm_start)

    # -- state ----------------------------------------------------------------------------

    def _reset(self, n: int) -> None:
        self.s_ = np.zeros(n)                       # decayed successes, as of step last_
        self.a_ = np.zeros(n)                       # decayed attempts, as of step last_
        self.last_ = np.full(n, -1, np.int64)       # step of the prompt's last outcome (-1: never seen)
        self.level_at_ = np.zeros(n)                # attempt-weighted global level (logit) when observed
        self.dead_streak_ = np.zeros(n, np.int32)   # consecutive zero-variance groups, most recent last
        self.pending_ = np.zeros(n, np.int8)        # 1: chosen as a revisit, outcome not recorded yet
        self.nb_num_ = np.zeros(n)                  # similarity-weighted neighbour successes-rate sum ...
        self.nb_den_ = np.full(n, np.nan)           # ... and weight sum, at level nb_level_ (nan before a refit)
        self.nb_level_ = 0.0
        self.nb_global_ = 0.5                       # the global rate at that refit
        self.neighbour_prior_ = float(self.settings.neighbour_prior)   # fitted with the concentration
        self.level_: float | None = None            # global logit level; None before the first record
        self.last_step_: int | None = None
        self.concentration_ = DEFAULT_CONCENTRATION
        self.drift_decay_ = float(self.settings.drift_decay)   # refitted on revisits when settings.fit_drift
        self.selections_ = {r: 0 for r in REASONS}
        self.reward_lo_: float | None = None        # smallest and largest reward seen (the learnt scale) ...
        self.reward_hi_: float | None = None        # ... None before the first record
        self._constant_logged = False
        for name in _COUNTERS:
            setattr(self, name, 0)
        self._hist: dict[str, np.ndarray] = {"step": np.zeros(0, np.int64), "index": np.zeros(0, np.int32),
                      "successes": np.zeros(0), "attempts": np.zeros(0)}
        self._fit: dict[str, np.ndarray] = {key: np.zeros(0) for key in _FIRST_FIT}
        self._fit_rows_since_ = 0
        self._revisit_fit: dict[str, np.ndarray] = {key: np.zeros(0) for key in _REVISIT_FIT}
        self._rng = np.random.default_rng(self.settings.seed)
        self.warm_a_ = np.zeros(n)      # warm-start attempts per prompt (before this run; see warm_start)
        self.warm_z_ = np.zeros(n)      # their logit rate relative to their source's level
        self.warm_level_ = 0.0          # pooled warm logit level: the global level before the first record
        self.warm_weight_ = WARM_WEIGHT  # weight of one warm attempt in the prior, fitted on first observations
        self.warm_slope_ = 1.0           # slope of the warm standing (logit), fitted with it

    def __len__(self) -> int:
        return len(self.prompts)

    # -- beliefs --------------------------------------------------------------------------

    def _prior_mean(self, idx: np.ndarray, shrink: float | None = None) -> np.ndarray:
        """Prior mean of each prompt before its own outcomes: neighbours, shifted to the current level."""
        lam = self.neighbour_prior_ if shrink is None else shrink
        if self.level_ is None:
            return self._with_warm(idx, np.full(len(idx), 0.5), np.full(len(idx), lam), self.warm_level_)
        num, den = self.nb_num_[idx], self.nb_den_[idx]
        nb = (num + lam * self.nb_global_) / (np.nan_to_num(den) + lam)
        shifted = _sigmoid(_logit(nb) + self.level_ - self.nb_level_)
        m = np.where(np.isnan(den), _sigmoid(self.level_), shifted)
        return self._with_warm(idx, m, np.nan_to_num(den) + lam, self.level_)

    def _with_warm(self, idx: np.ndarray, m: np.ndarray, mass: np.ndarray, level: float) -> np.ndarray:
        """Mix a warm start into the prior mean ``m`` (of weight ``mass``): each warm attempt weighs
        ``warm_weight_``, at its relative standing moved to the current level."""
        wa = self.warm_weight_ * self.warm_a_[idx]
        if not wa.any():
            return m
        return (m * mass + wa * _sigmoid(self.warm_slope_ * self.warm_z_[idx] + level)) / (mass + wa)

    def _own(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Own evidence: drift-adjusted rate and effective (decayed) attempts; 0 attempts if never seen."""
        seen = self.last_[idx] >= 0
        age = np.where(seen, (self.last_step_ or 0) - self.last_[idx], 0)
        weight = np.where(seen, self.a_[idx] * self.drift_decay_ ** age, 0.0)
        # The observed rate itself (no pseudo-counts: the prior supplies those, once), moved by the global
        # drift since it was observed; an all-0 or all-1 record stays (almost) at its edge.
        raw = self.s_[idx] / np.maximum(self.a_[idx], 1e-12)
        level = self.level_ if self.level_ is not None else 0.0
        rate = np.where(seen, _sigmoid(_logit(raw) + level - self.level_at_[idx]), 0.5)
        return rate, weight

    def _belief(self, idx: np.ndarray) -> BetaPrediction:
        m0 = self._prior_mean(idx)
        c0 = self.concentration_
        rate, weight = self._own(idx)
        return BetaPrediction(alpha=m0 * c0 + rate * weight, beta=(1.0 - m0) * c0 + (1.0 - rate) * weight)

    def predict(self, indices: Sequence[int] | None = None) -> BetaPrediction:
        """Belief over each prompt's success rate at the next step (all prompts when ``indices`` is None)."""
        idx = np.arange(len(self)) if indices is None else check_indices(indices, len(self), "indices")
        return self._belief(idx)

    @property
    def global_rate(self) -> float:
        """The policy's current overall success rate as tracked by the book (0.5 before any record)."""
        return float(_sigmoid(self.level_)) if self.level_ is not None else 0.5

    # -- recording ------------------------------------------------------------------------

    def record(self, step: int, indices: Sequence[int], rewards: Sequence[Sequence[float]]) -> None:
        """Ingest one finished trainer step: ``rewards[i]`` are the rollout rewards of dataset index ``indices[i]``."""
        step = check_step(step, self.last_step_)
        idx = check_indices(indices, len(self), "indices")
        total, a, gmin, gmax = check_rewards(rewards, len(idx), self.settings.reward_range)
        if idx.size == 0:
            return
        s = self._successes(total, a, float(gmin.min()), float(gmax.max()))
        # Merge repeats of an index within the step (a prompt drawn twice is one larger group);
        # the merged group is dead when all its rollouts agree.
        uidx, inv = np.unique(idx, return_inverse=True)
        s = np.bincount(inv, weights=s, minlength=len(uidx))
        a = np.bincount(inv, weights=a, minlength=len(uidx))
        lo = np.full(len(uidx), np.inf)
        hi = np.full(len(uidx), -np.inf)
        np.minimum.at(lo, inv, gmin)
        np.maximum.at(hi, inv, gmax)
        dead = lo == hi
        idx = uidx

        new_step = self.last_step_ is None or step > self.last_step_
        # 1. Pre-record beliefs: the residuals move the global level, first observations fit the prior.
        belief = self._belief(idx)
        first = self.last_[idx] < 0
        self._remember_first(idx[first], s[first], a[first])
        self._remember_revisit(idx[~first], step, s[~first], a[~first])
        level = self._update_level(belief.p_success, s, a)
        # 2. Own evidence, decayed to this step, plus this step's outcomes.
        seen = ~first
        age = np.where(seen, step - self.last_[idx], 0)
        keep = np.where(seen, self.drift_decay_ ** age, 0.0)
        old_a = self.a_[idx] * keep
        new_a = old_a + a
        self.level_at_[idx] = (self.level_at_[idx] * old_a + level * a) / new_a
        self.s_[idx] = self.s_[idx] * keep + s
        self.a_[idx] = new_a
        self.last_[idx] = step
        # 3. Dead streaks and what revisits yielded.
        self.dead_streak_[idx] = np.where(dead, self.dead_streak_[idx] + 1, 0)
        pending = self.pending_[idx] == 1
        self.revisits_dead_ += int((pending & dead).sum())
        self.revisits_informative_ += int((pending & ~dead).sum())
        self.pending_[idx] = 0
        self.dead_groups_ += int(dead.sum())
        self.informative_groups_ += int((~dead).sum())
        # 4. The durable history.
        self._append_history(step, idx, s, a)
        self.last_step_ = step
        if new_step:
            self.steps_ += 1
            self.steps_since_refit_ += 1
        if self.settings.refit_every and self.steps_since_refit_ >= self.settings.refit_every:
            self.refit()

    # -- the reward's scale -------------------------------------------------------------------

    @property
    def reward_scale(self) -> tuple[float, float] | None:
        """``(lo, hi)``: rewards map linearly to successes (r - lo) / (hi - lo); None before any reward.

        The declared ``settings.reward_range`` when there is one, else the smallest
        and largest reward recorded so far (``lo == hi`` while every reward was equal).
        """
        if self.settings.reward_range is not None:
            return self.settings.reward_range
        if self.reward_lo_ is None or self.reward_hi_ is None:
            return None
        return (self.reward_lo_, self.reward_hi_)

    @staticmethod
    def _span(lo: float, hi: float) -> float:
        return hi - lo if hi > lo else 1.0

    def _successes(self, total: np.ndarray, a: np.ndarray, lo_new: float, hi_new: float) -> np.ndarray:
        """Summed successes of each group: its rewards mapped to [0, 1] on the declared or the learnt scale.

        Why a learnt scale, and why the running min/max: GRPO rewards are
        whatever the user wrote (TRL's quickstart reward is ``-abs(20 - len)``;
        format + accuracy sums reach 2 or 3), and a declaration the user must get
        right before step 0 is what stopped such runs. The map is linear, so when
        a new reward widens the range, every stored success (per prompt, decayed
        identically to its attempts, and in the history) is re-expressed on the
        new range *exactly*: sum (r - lo) / span = (raw sum - lo * attempts) / span.
        While every reward seen was one value (span 0), successes are 0 and every
        group is dead, which is what that reward gives GRPO; this is logged once.
        """
        if self.settings.reward_range is not None:
            lo, hi = self.settings.reward_range
            return (total - lo * a) / (hi - lo)
        if self.reward_lo_ is None or self.reward_hi_ is None:
            self.reward_lo_, self.reward_hi_ = lo_new, hi_new
        elif lo_new < self.reward_lo_ or hi_new > self.reward_hi_:
            self._rescale(min(lo_new, self.reward_lo_), max(hi_new, self.reward_hi_))
        lo, hi = float(self.reward_lo_), float(self.reward_hi_)
        if hi == lo and not self._constant_logged:
            self._constant_logged = True
            logger.warning("prompt book: every reward so far equals %g, so every group is zero-signal (no GRPO "
                           "gradient) and the book cannot tell prompts apart; it keeps recording and learns the "
                           "reward's scale as soon as two rewards differ", lo)
        return np.clip((total - lo * a) / self._span(lo, hi), 0.0, a)

    def _rescale(self, lo: float, hi: float) -> None:
        """Re-express every stored success on the widened range ``[lo, hi]`` (exact: the map is linear)."""
        old_lo, old_hi = float(self.reward_lo_ or 0.0), float(self.reward_hi_ or 0.0)
        old_span, span = self._span(old_lo, old_hi), self._span(lo, hi)

        def remap(succ, att):
            return np.clip((succ * old_span + (old_lo - lo) * att) / span, 0.0, att)

        self.s_ = remap(self.s_, self.a_)
        n = self.rows_
        self._hist["successes"][:n] = remap(self._hist["successes"][:n], self._hist["attempts"][:n])
        if old_hi > old_lo:
            self._fit["successes"] = remap(self._fit["successes"], self._fit["attempts"])
            self._revisit_fit["successes"] = remap(self._revisit_fit["successes"], self._revisit_fit["attempts"])
            self._revisit_fit["rate"] = np.clip((self._revisit_fit["rate"] * old_span + old_lo - lo) / span, 0.0, 1.0)
        else:
            # The first two distinct rewards: until now there was no scale, so the global level and what was kept
            # to fit the prior on meant nothing. Restart them from the re-expressed history.
            att = self._hist["attempts"][:n]
            rate = (self._hist["successes"][:n].sum() + 0.5) / (att.sum() + 1.0)
            self.level_ = float(_logit(rate))
            self.level_at_[self.last_ >= 0] = self.level_
            self._fit = {key: np.zeros(0) for key in _FIRST_FIT}
            self._fit_rows_since_ = 0
            self._revisit_fit = {key: np.zeros(0) for key in _REVISIT_FIT}
        self.reward_lo_, self.reward_hi_ = lo, hi

    def _update_level(self, p_pred: np.ndarray, s: np.ndarray, a: np.ndarray) -> float:
        """Track the policy's overall level: one damped Newton step of a common logit offset on this step's outcomes;
        returns the new level.

        Residuals are taken against the book's own predictions for the prompts
        actually rolled out, so the level is not biased by which prompts were
        chosen (a batch of mid-difficulty prompts does not pull it to 0.5).
        """
        if self.level_ is None:
            self.level_ = float(_logit((s.sum() + 0.5) / (a.sum() + 1.0)))
            return self.level_
        grad = float((s - a * p_pred).sum())
        hess = float((a * p_pred * (1 - p_pred)).sum()) + 1e-9
        self.level_ = float(self.level_ + self.settings.level_gain * np.clip(grad / hess, -2.0, 2.0))
        return self.level_

    def _remember_first(self, idx: np.ndarray, s: np.ndarray, a: np.ndarray) -> None:
        # Before the first record the prior says nothing (0.5), unless a warm start gave it a level and standings:
        # then the first step's outcomes are the first evidence of how far to trust them.
        warm = self.level_ is None and bool(self.warm_a_.any())
        if idx.size == 0 or (self.level_ is None and not warm):
            return
        # (at the first record, with a warm start: the level this step's outcomes are about to set, as in
        # _update_level)
        level = float(_logit((s.sum() + 0.5) / (a.sum() + 1.0))) if self.level_ is None else self.level_
        new = {"nb_num": self.nb_num_[idx], "nb_den": self.nb_den_[idx],
               "nb_global": np.full(len(idx), self.nb_global_), "shift": np.full(len(idx), level - self.nb_level_),
               "level_rate": np.full(len(idx), float(_sigmoid(level))), "successes": s, "attempts": a,
               "warm_a": self.warm_a_[idx], "warm_z": self.warm_z_[idx]}
        for key in _FIRST_FIT:
            self._fit[key] = np.concatenate([self._fit[key], new[key]])[-FIT_WINDOW:]
        self._fit_rows_since_ += len(idx)

    def _prior_fit_due(self) -> bool:
        """Refit the prior every HYPER_EVERY_ROWS new first observations, and once as soon as MIN_FIT_ROWS exist.

        Why the second case: a small dataset (or a small batch) gathers first
        observations slowly; counting to HYPER_EVERY_ROWS alone would leave the
        prior at its starting concentration for the whole run (a 96-prompt
        dataset never gets there). ``rows kept - rows since the last fit`` is
        what the last fit saw: below MIN_FIT_ROWS it fitted nothing.
        """
        kept = len(self._fit["attempts"])
        fitted_before = kept - self._fit_rows_since_ >= MIN_FIT_ROWS
        return self._fit_rows_since_ >= HYPER_EVERY_ROWS or (kept >= MIN_FIT_ROWS and not fitted_before)

    def _fit_prior(self) -> None:
        """Fit the neighbour shrinkage and the prior concentration on first observations (beta-binomial likelihood).

        Why both: how much a prompt's neighbours say about it depends on the
        dataset and the encoder (near-duplicates vs loosely related problems),
        and how far a new prompt scatters around what they say is the prior's
        honest spread. A grid keeps it cheap and deterministic.
        """
        f = self._fit
        if len(f["attempts"]) < MIN_FIT_ROWS:
            return
        n = np.maximum(np.round(f["attempts"]), 1)
        k = np.clip(np.round(f["successes"]), 0, n)
        has_nb = ~np.isnan(f["nb_den"])
        c = np.asarray(CONCENTRATION_GRID)[:, None]
        has_warm = (f["warm_a"] > 0).any()

        def loglik(lam, omega, slope, c=c):
            nb = (f["nb_num"] + lam * f["nb_global"]) / (np.nan_to_num(f["nb_den"]) + lam)
            m0 = np.where(has_nb, _sigmoid(_logit(nb) + f["shift"]), f["level_rate"])
            mass = np.nan_to_num(f["nb_den"]) + lam
            wa = omega * f["warm_a"]
            warm_rate = _sigmoid(slope * f["warm_z"] + _logit(f["level_rate"]))
            m = np.clip((m0 * mass + wa * warm_rate) / (mass + wa), _EPS, 1 - _EPS)
            ll = _betabinom_loglik(k, n, m * c, (1 - m) * c).sum(axis=1)
            j = int(np.argmax(ll))
            return float(ll[j]), float(c[j, 0])

        # Two stages (coordinate ascent; a joint grid would be 30x the work on the training loop): the
        # neighbour shrinkage, then the warm weight and slope, each with the concentration.
        best = (-np.inf, self.neighbour_prior_, self.concentration_, self.warm_weight_, self.warm_slope_)
        for lam in (SHRINK_GRID if has_nb.any() else (self.neighbour_prior_,)):
            ll, conc = loglik(lam, self.warm_weight_, self.warm_slope_)
            if ll > best[0]:
                best = (ll, lam, conc, self.warm_weight_, self.warm_slope_)
        if has_warm:
            for omega in WARM_GRID:
                for slope in WARM_SLOPE_GRID:
                    # every other concentration: 24 points of the warm grid cost what 8 would at full detail
                    ll, conc = loglik(best[1], omega, slope, c[::2])
                    if ll > best[0]:
                        best = (ll, best[1], conc, omega, slope)
        _, self.neighbour_prior_, self.concentration_, self.warm_weight_, self.warm_slope_ = best

    def _remember_revisit(self, idx: np.ndarray, step: int, s: np.ndarray, a: np.ndarray) -> None:
        if idx.size == 0 or self.level_ is None:
            return
        rate, _ = self._own(idx)
        new = {"prior_mean": self._prior_mean(idx), "concentration": np.full(len(idx), self.concentration_),
               "rate": rate, "attempts_then": self.a_[idx].copy(), "age": (step - self.last_[idx]).astype(float),
               "successes": s, "attempts": a}
        for key in _REVISIT_FIT:
            self._revisit_fit[key] = np.concatenate([self._revisit_fit[key], new[key]])[-FIT_WINDOW:]

    def _fit_drift_decay(self) -> None:
        """Choose the drift discount that best predicts revisited prompts' new groups (beta-binomial likelihood).

        Why: how fast a prompt's old outcomes go stale depends on the run
        (learning rate, data); a fixed discount makes the belief over- or
        under-confident, and the selection objective reads its spread.
        """
        f = self._revisit_fit
        if len(f["age"]) < MIN_FIT_ROWS:
            return
        n = np.maximum(np.round(f["attempts"]), 1).astype(int)
        k = np.clip(np.round(f["successes"]), 0, n).astype(int)
        m0, c0 = f["prior_mean"], f["concentration"]
        best, best_ll = self.drift_decay_, -np.inf
        for d in DECAY_GRID:
            w = f["attempts_then"] * d ** f["age"]
            ll = _betabinom_loglik(k, n, m0 * c0 + f["rate"] * w, (1 - m0) * c0 + (1 - f["rate"]) * w).sum()
            if ll > best_ll:
                best, best_ll = d, ll
        self.drift_decay_ = float(best)

    def _append_history(self, step: int, idx: np.ndarray, s: np.ndarray, a: np.ndarray) -> None:
        n = self.rows_ + len(idx)
        cap = len(self._hist["step"])
        if n > cap:
            grow = max(n, 2 * cap, 1024)
            for key, arr in self._hist.items():
                new = np.zeros(grow, arr.dtype)
                new[:self.rows_] = arr[:self.rows_]
                self._hist[key] = new
        sl = slice(self.rows_, n)
        self._hist["step"][sl] = step
        self._hist["index"][sl] = idx
        self._hist["successes"][sl] = s
        self._hist["attempts"][sl] = a
        self.rows_ = n

    def history(self) -> dict[str, np.ndarray]:
        """The recorded rows (copies): step, dataset index, prompt id, successes, attempts."""
        out = {k: v[:self.rows_].copy() for k, v in self._hist.items()}
        out["id"] = np.array(self.ids, dtype=object)[out["index"]] if self.rows_ else np.zeros(0, object)
        return out

    # -- warm start -----------------------------------------------------------------------

    def warm_start(self, evidence: WarmEvidence | str | Path) -> WarmReport:
        """Carry outcomes observed before this run into the prior of the prompts they cover.

        ``evidence``: a :class:`~preroll.online.warm.WarmEvidence` (ids, successes,
        attempts and a source label per row), or a file read by
        :func:`preroll.online.warm.read_evidence` (a saved book, a JSONL/CSV/Parquet
        of outcomes or pass rates, a saved value model). Within each source the
        rows are turned into a logit standing relative to that source's own level
        (another policy, or an earlier step of this one, may be stronger or
        weaker overall; what carries over is which prompts are harder), and the
        prior mean of a covered prompt mixes that standing, moved to the book's
        current level, with its neighbours'. How much one warm attempt weighs is
        fitted by beta-binomial likelihood on the run's first observations of
        prompts, with the prior's concentration (from ``WARM_WEIGHT``; 0 if the
        evidence does not predict). Call it before the first ``record``.
        """
        if self.rows_:
            raise OnlineInputError("must be called before the first record (the prior is fitted on first "
                                   "observations made after it)", field="warm_start")
        if not isinstance(evidence, WarmEvidence):
            evidence = read_evidence(evidence, self)
        report, a, z, level = apply_evidence(evidence, self.ids)
        self.warm_a_, self.warm_z_, self.warm_level_ = a, z, level
        return report

    # -- neighbours -----------------------------------------------------------------------

    def prepare(self) -> "PromptBook":
        """Embed the dataset and build the neighbour graph now (else the first ``record`` does it).

        Call it when the trainer is built, so the first step is not the slow one:
        a lexical fit plus one prompts x prompts cosine product (seconds for 10k prompts,
        ~30 s for 20k on 2 busy cores). The graph is part of the saved state, so a
        resumed book never recomputes it.
        """
        self._neighbour_graph()
        return self

    def _neighbour_graph(self) -> tuple[np.ndarray, np.ndarray] | None:
        if str(self.settings.encoder).strip().lower() == "none":
            return None
        if self._graph is None:
            emb = self._embeddings
            if emb is None:
                emb = embed_prompts(self.prompts, self.settings.encoder)
            self._set_graph(neighbour_graph(emb, self.settings.neighbours, seed=self.settings.seed))
        return self._graph

    def _set_graph(self, graph: tuple[np.ndarray, np.ndarray]) -> None:
        """A new graph: what was derived from the old one (weights, digest, file) no longer holds."""
        self._graph = graph
        self._reverse = None
        self._graph_sha256 = None
        self._graph_file = None

    def refit(self) -> None:
        """Recompute neighbour sums over the graph (a gather) and refit the prior and the drift discount."""
        self.steps_since_refit_ = 0
        if self.level_ is None:
            return
        graph = self._neighbour_graph()
        seen = np.flatnonzero(self.last_ >= 0)
        if graph is not None and self._reverse is None:
            self._reverse = reverse_weights(graph[0], graph[1], self.settings.neighbour_power)
        if graph is not None and self.refits_ % self._neighbour_interval(seen, self._reverse) == 0:
            # Only prompts with outcomes contribute: the cost grows with what was seen, not with the dataset.
            rate, weight = self._own(seen)
            self.nb_num_, self.nb_den_ = neighbour_sums(graph[0], graph[1], rate, weight,
                                                        power=self.settings.neighbour_power,
                                                        reverse=self._reverse, seen=seen)
            self.nb_level_ = float(self.level_)
            self.nb_global_ = self.global_rate
        if self._prior_fit_due():
            self._fit_prior()
            self._fit_rows_since_ = 0
        if self.settings.fit_drift:
            self._fit_drift_decay()
        self.refits_ += 1

    @staticmethod
    def _neighbour_interval(seen: np.ndarray, reverse: csr_matrix) -> int:
        """Refits between two recomputations of the neighbour sums: 1 until the seen prompts' graph edges pass
        ``NEIGHBOUR_REFIT_EDGES``, then proportionally more.

        Why: the sums cost one pass over the seen prompts' edges; with a
        million prompts seen (32M edges) that is ~1 s, five times the per-step
        budget. Between recomputations the neighbour prior still follows the
        global level (it is stored with the level it was computed at), and a
        seen prompt's own outcomes outweigh it. Counting edges, not seconds,
        keeps a resumed book's choices identical.
        """
        edges = int((reverse.indptr[seen + 1] - reverse.indptr[seen]).sum()) if len(seen) else 0
        return max(1, -(-edges // NEIGHBOUR_REFIT_EDGES))

    # -- choosing -------------------------------------------------------------------------

    def select(self, pool: Sequence[int], n: int) -> Selection:
        """Choose ``n`` distinct dataset indices out of ``pool`` (fixed-n trainers: pool of pool_factor * n)."""
        from preroll.online.policy import choose

        idx = check_indices(pool, len(self), "pool", distinct=True)
        n = _check_count(n, len(idx))
        belief = self._belief(idx)
        pos, codes = choose(belief, self.dead_streak_[idx], n, self.settings, self._rng, last_seen=self.last_[idx])
        chosen = idx[pos]
        self._count_choices(chosen, codes)
        return Selection(indices=chosen.astype(np.int64), p_success=belief.p_success[pos],
                         reason=np.array(REASONS, dtype=object)[codes].astype(str))

    def allocate(self, pool: Sequence[int], budget: int, *, min_rollouts: int = 2, max_rollouts: int = 64,
                 rule: str = "greedy") -> np.ndarray:
        """Integer rollouts per pool entry (0 = not rolled out) via :func:`preroll.schedule.allocate`.

        Exploration as in :meth:`select`: a prompt drawn for a revisit is
        allocated on its prior belief (neighbours and the global rate, its dead
        groups set aside), which gives it a fresh chance at a group.
        """
        from preroll.online.policy import draw_revisits
        from preroll.schedule import allocate

        idx = check_indices(pool, len(self), "pool", distinct=True)
        if idx.size == 0:
            raise OnlineInputError("is empty", field="pool")
        belief = self._belief(idx)
        n_groups = max(1, int(budget) // max(1, self.settings.group_size)) if isinstance(budget, (int, np.integer)) else 1
        revisit = draw_revisits(self.dead_streak_[idx], n_groups, self.settings, self._rng)
        m0 = self._prior_mean(idx)
        c0 = self.concentration_
        alpha = np.where(revisit, m0 * c0, belief.alpha)
        beta = np.where(revisit, (1 - m0) * c0, belief.beta)
        x = allocate(BetaPrediction(alpha, beta), budget, min_rollouts=min_rollouts, max_rollouts=max_rollouts,
                     rule=rule, group_size=self.settings.group_size, rng=self._rng)
        used = x > 0
        self._count_choices(idx[used], np.where(revisit[used], 2, 0))
        return x

    def _count_choices(self, chosen: np.ndarray, codes: np.ndarray) -> None:
        counts = np.bincount(codes, minlength=len(REASONS))
        for r, c in zip(REASONS, counts, strict=True):
            self.selections_[r] += int(c)
        self.pending_[chosen[codes == 2]] = 1

    # -- reporting ------------------------------------------------------------------------

    def stats(self) -> BookStats:
        return BookStats(
            steps=self.steps_, rows=self.rows_, prompts=len(self), prompts_seen=int((self.last_ >= 0).sum()),
            last_step=self.last_step_, global_rate=self.global_rate, selections=dict(self.selections_),
            revisits_informative=self.revisits_informative_, revisits_dead=self.revisits_dead_,
            revisits_pending=int(self.pending_.sum()), dead_prompts=int((self.dead_streak_ > 0).sum()),
            informative_groups=self.informative_groups_, dead_groups=self.dead_groups_,
            neighbour_refits=self.refits_, prior_concentration=float(self.concentration_),
            neighbour_prior=float(self.neighbour_prior_),
            drift_decay=float(self.drift_decay_), reward_scale=self.reward_scale)

    # -- persistence ----------------------------------------------------------------------

    def _fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.ids).encode("utf-8")).hexdigest()

    def state_dict(self) -> dict:
        """Everything needed to resume (incl. the RNG and the neighbour graph): numpy arrays and JSON-able values."""
        return self._state(graph=True)

    def _state(self, *, graph: bool) -> dict:
        state = {"format": FORMAT, "version": VERSION, "settings": self.settings.model_dump(mode="json"),
                 "ids_sha256": self._fingerprint(), "n_prompts": len(self),
                 "level": self.level_, "last_step": self.last_step_, "nb_level": self.nb_level_, "nb_global": self.nb_global_,
                 "neighbour_prior": self.neighbour_prior_, "fit_rows_since": self._fit_rows_since_,
                 "concentration": self.concentration_, "drift_decay": self.drift_decay_, "selections": dict(self.selections_),
                 "reward_lo": self.reward_lo_, "reward_hi": self.reward_hi_,
                 "rng": self._rng.bit_generator.state}
        for name in _COUNTERS:
            state[name.rstrip("_")] = int(getattr(self, name))
        for name in _PER_PROMPT:
            state[name.rstrip("_")] = getattr(self, name).copy()
        for key, arr in self._hist.items():
            state[f"history.{key}"] = arr[:self.rows_].copy()
        for key, arr in self._fit.items():
            state[f"fit.{key}"] = arr.copy()
        for key, arr in self._revisit_fit.items():
            state[f"revisit_fit.{key}"] = arr.copy()
        if self.warm_a_.any():
            state["warm.attempts"], state["warm.z"] = self.warm_a_.copy(), self.warm_z_.copy()
            state["warm_level"], state["warm_weight"] = self.warm_level_, self.warm_weight_
            state["warm_slope"] = self.warm_slope_
        if graph and self._graph is not None:
            state["graph.index"], state["graph.similarity"] = self._graph[0].copy(), self._graph[1].copy()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`; the dataset (ids, in order) must be the one it was taken on."""
        if state.get("format") != FORMAT:
            raise OnlineInputError(f"is not a prompt book state (format {state.get('format')!r})", field="state")
        if state.get("version") != VERSION:
            raise OnlineInputError(f"has version {state.get('version')!r}; this preroll reads version {VERSION}",
                                   field="state.version")
        if state.get("n_prompts") != len(self) or state.get("ids_sha256") != self._fingerprint():
            raise OnlineInputError(
                f"was saved for another dataset ({state.get('n_prompts')} prompts, ids sha256 "
                f"{str(state.get('ids_sha256'))[:12]}); this book has {len(self)} prompts, ids sha256 "
                f"{self._fingerprint()[:12]}: pass the same prompts and ids, in the same order", field="state")
        self.settings = make_settings(dict(state["settings"]))
        self._reset(len(self))
        self.level_ = None if state["level"] is None else float(state["level"])
        self.last_step_ = None if state["last_step"] is None else int(state["last_step"])
        self.nb_level_ = float(state["nb_level"])
        self.nb_global_ = float(state["nb_global"])
        self.neighbour_prior_ = float(state["neighbour_prior"])
        self._fit_rows_since_ = int(state["fit_rows_since"])
        self.concentration_ = float(state["concentration"])
        self.drift_decay_ = float(state["drift_decay"])
        self.selections_ = {r: int(state["selections"].get(r, 0)) for r in REASONS}
        lo, hi = state.get("reward_lo"), state.get("reward_hi")     # absent in books saved before the learnt scale
        self.reward_lo_ = None if lo is None else float(lo)
        self.reward_hi_ = None if hi is None else float(hi)
        self._constant_logged = self.reward_lo_ is not None and self.reward_lo_ == self.reward_hi_
        for name in _COUNTERS:
            setattr(self, name, int(state[name.rstrip("_")]))
        for name in _PER_PROMPT:
            ref = getattr(self, name)
            setattr(self, name, np.asarray(state[name.rstrip("_")], dtype=ref.dtype).copy())
        self._hist = {key: np.asarray(state[f"history.{key}"], dtype=arr.dtype).copy()
                      for key, arr in self._hist.items()}
        n_fit = len(np.asarray(state["fit.attempts"]))
        self._fit = {key: np.asarray(state.get(f"fit.{key}", np.zeros(n_fit)), dtype=float).copy()
                     for key in _FIRST_FIT}
        if "warm.attempts" in state:   # books saved before warm starts existed have none
            self.warm_a_ = np.asarray(state["warm.attempts"], float).copy()
            self.warm_z_ = np.asarray(state["warm.z"], float).copy()
            self.warm_level_ = float(state["warm_level"])
            self.warm_weight_ = float(state["warm_weight"])
            self.warm_slope_ = float(state["warm_slope"])
        self._revisit_fit = {key: np.asarray(state[f"revisit_fit.{key}"], dtype=float).copy() for key in _REVISIT_FIT}
        if "graph.index" in state:
            self._set_graph((np.asarray(state["graph.index"], np.int32),
                             np.asarray(state["graph.similarity"], np.float32)))
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = _json_roundtrip(state["rng"])

    @property
    def graph_file(self) -> Path | None:
        """A local file holding the current neighbour graph (the last one saved or loaded), or None (none yet,
        or that file has since been removed: a rotated-out checkpoint)."""
        if self._graph_file is not None and not self._graph_file.is_file():
            self._graph_file = None
        return self._graph_file

    def graph_name(self, path: str | Path) -> str | None:
        """The name of the graph file a save of this book at ``path`` names (None without a graph)."""
        if self._graph is None:
            return None
        if self._graph_sha256 is None:
            self._graph_sha256 = _graph_digest(*self._graph)
        return _graph_path(Path(path), self._graph_sha256).name

    def save(self, path: str | Path, *, graph_beside: bool = True, write_graph: bool = True) -> Path:
        """Write the state to ``path`` (a versioned, uncompressed ``.npz``: saving sits on the training loop),
        atomically: a crash leaves the previous book loadable.

        The neighbour graph (computed once; 256 MB at a million prompts) goes to a file beside it,
        ``<name>.graph-<sha256 prefix>.npz``, which a save writes only when no file of that name is there
        yet: saving the same book again rewrites the state, not the graph, and saving it into a new
        checkpoint folder hard-links the graph file it last wrote (where the filesystem allows). The graph
        file is written before the book that names it, and older graph files of ``path`` are removed only
        after, so a crash at any point leaves a complete book. Copy both files to move a book;
        ``graph_beside=False`` keeps the graph inside the one file (the format before).
        ``write_graph=False`` names the graph file (:meth:`graph_name`) without writing it or removing older
        ones: the caller puts it there (a remote checkpoint copies the previous folder's file instead of
        uploading it again).
        """
        path = Path(path)
        state = self._state(graph=not graph_beside)
        arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
        meta = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
        path.parent.mkdir(parents=True, exist_ok=True)
        graph_name = None
        if graph_beside and self._graph is not None:
            graph_name = self._save_graph(path) if write_graph else self.graph_name(path)
            meta["graph_sha256"] = self._graph_sha256   # the file's name follows from it and the book's name
        with atomic_open(path, "wb") as fh:
            # numpy's stub: a ** mapping might name allow_pickle; these keys are array names
            np.savez(fh, __meta__=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]
        if not write_graph:
            return path
        # Graph files of earlier saves to this path: the book now in place names none of them.
        for stale in path.parent.glob(glob.escape(path.name + GRAPH_INFIX) + "*.npz"):
            if stale.name != graph_name:
                stale.unlink(missing_ok=True)
        return path

    def write_graph(self, path: str | Path) -> Path | None:
        """Put the graph file a save of this book at ``path`` names beside ``path`` (written or hard-linked, as
        :meth:`save` does), and return it; None without a graph. The book does not keep it as its graph file:
        this is for a caller that moves the file on (a remote checkpoint uploads it from a scratch folder)."""
        if self._graph is None:
            return None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.with_name(self._save_graph(path, keep=False))

    def _save_graph(self, path: Path, *, keep: bool = True) -> str:
        """The name of the graph's file beside ``path``, written (or hard-linked) only if it is not there yet;
        ``keep``: it becomes the book's graph file (the one later saves link from)."""
        assert self._graph is not None   # save() asks only when there is a graph
        if self._graph_sha256 is None:
            self._graph_sha256 = _graph_digest(*self._graph)
        target = _graph_path(path, self._graph_sha256)
        source = self.graph_file
        if not target.is_file() and not (source is not None and _link(source, target)):
            with atomic_open(target, "wb") as fh:
                np.savez(fh, index=self._graph[0], similarity=self._graph[1])
        if keep:
            self._graph_file = target
        return target.name

    @classmethod
    def load(cls, path: str | Path, prompts: Sequence[str], ids: Sequence[str | int] | None = None, *,
             embeddings: np.ndarray | None = None) -> "PromptBook":
        """A book restored from :meth:`save`, over the same dataset."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                state = {k: data[k] for k in data.files if k != "__meta__"}
                meta = json.loads(str(data["__meta__"]))
        except (OSError, ValueError, KeyError) as exc:
            raise OnlineInputError(f"{path}: not a readable prompt book file ({exc})", field="path") from None
        state.update(meta)
        graph_file = _load_graph(path, meta, state)
        # The warm start was read when the saved book was built and is part of its state: not read again.
        book = cls(prompts, ids, settings={**meta.get("settings", {}), "warm_start": None}, embeddings=embeddings)
        book.load_state_dict(state)
        if graph_file is not None:   # verified against its digest: the next save need not write it again
            book._graph_sha256, book._graph_file = str(meta["graph_sha256"]), graph_file
        return book


def saved_graph_name(path: str | Path) -> str | None:
    """The name of the graph file the book saved at ``path`` keeps beside it (None: no graph, or inside the
    file); reads only the book's header."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            digest = json.loads(str(data["__meta__"])).get("graph_sha256")
    except (OSError, ValueError, KeyError) as exc:
        raise OnlineInputError(f"{path}: not a readable prompt book file ({exc})", field="path") from None
    return None if digest is None else _graph_path(path, str(digest)).name


def _graph_digest(index: np.ndarray, similarity: np.ndarray) -> str:
    """sha256 of the graph's arrays (dtype, shape and bytes): the name of its file and the check on load."""
    h = hashlib.sha256()
    for arr in (np.ascontiguousarray(index, np.int32), np.ascontiguousarray(similarity, np.float32)):
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.data)
    return h.hexdigest()


def _link(source: Path, target: Path) -> bool:
    """Hard-link ``source`` to ``target`` through a temporary name (atomic); False where that is not possible
    (another filesystem, a filesystem without links, ``source`` gone)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.link")
    try:
        os.link(source, tmp)
        os.replace(tmp, target)
        return True
    except OSError:
        tmp.unlink(missing_ok=True)
        return False


def _graph_path(path: Path, sha256: str) -> Path:
    """Where the book saved at ``path`` keeps the graph of this digest. Derived, not stored: the book's bytes do
    not depend on its file name (ranks saving one book under their own names write identical files)."""
    return path.with_name(f"{path.name}{GRAPH_INFIX}{sha256[:16]}.npz")


def _load_graph(path: Path, meta: dict, state: dict) -> Path | None:
    """Put the graph a saved book keeps beside it into ``state``; its file, or None for a book without one.

    Why a missing or altered graph file is not an error: the graph is derived (the prompts' embeddings and the
    settings give it back), while the book's outcomes are not. A book copied without its graph file, or with a
    stale one, loads with a warning and rebuilds the graph on first use; nothing recorded is lost.
    """
    digest = meta.get("graph_sha256")
    if digest is None:
        return None
    graph_path = _graph_path(path, str(digest))
    try:
        with np.load(graph_path, allow_pickle=False) as data:
            index, similarity = data["index"], data["similarity"]
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("%s: the neighbour graph of %s is missing or unreadable (%s); it is rebuilt from the prompts "
                       "on first use (copy the .graph-*.npz file beside a book to skip that)", graph_path, path.name,
                       exc)
        return None
    if _graph_digest(index, similarity) != digest:
        logger.warning("%s: is not the neighbour graph %s was saved with (sha256 differs); it is rebuilt from the "
                       "prompts on first use", graph_path, path.name)
        return None
    state["graph.index"], state["graph.similarity"] = index, similarity
    return graph_path


def _betabinom_loglik(k, n, a, b):
    """Beta-binomial log-likelihood, elementwise (broadcasts; gammaln-based, much faster than scipy.stats)."""
    from scipy.special import betaln, gammaln

    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1) + betaln(k + a, n - k + b) - betaln(a, b)


def _check_count(n, pool_size: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise OnlineInputError(f"must be an integer (got {n!r})", field="n")
    n = int(n)
    if n < 1 or n > pool_size:
        raise OnlineInputError(f"is {n}; must be between 1 and the pool size {pool_size}", field="n")
    return n


def _json_roundtrip(value):
    return json.loads(json.dumps(value))


#: Above this many prompts ``encoder="auto"`` is the hashing view (the lexical fit and exact graph stop scaling).
LARGE_DATASET = 50_000
#: Prompts embedded at a time: memory stays bounded by one chunk's sparse rows and vectors (as in ``preroll score``).
EMBED_CHUNK = 65_536


def encoder_spec(spec: str, n_prompts: int) -> str:
    """The encoder a book of ``n_prompts`` uses for ``spec`` (``"auto"`` resolved by size)."""
    if str(spec).strip().lower() == "auto":
        return "lexical" if n_prompts <= LARGE_DATASET else "hashing"
    return str(spec)


def embed_prompts(prompts: Sequence[str], spec: str) -> np.ndarray:
    """Embeddings of the dataset, computed once, chunk by chunk.

    Neural encoders go through the on-disk SQLite cache; the hashing view does
    too (its vectors depend only on the dataset's IDF sample, so a new run on
    the same dataset reads them back); lexical and stats are fitted on the
    dataset's own prompts and kept in memory.
    """
    from preroll.encoders import CachedEncoder, HashingEncoder, MemoEncoder, get_encoder

    prompts = list(prompts)
    encoder = get_encoder(encoder_spec(spec, len(prompts)))
    if isinstance(encoder, MemoEncoder) and isinstance(encoder.inner, HashingEncoder):
        encoder = CachedEncoder(encoder.inner)
    encoder.fit(prompts)  # a no-op for neural encoders
    if isinstance(encoder, MemoEncoder):   # fitted on all prompts, vectors in memory: one call
        return np.asarray(encoder.inner.encode(prompts), dtype=np.float32)
    out: np.ndarray | None = None
    for start in range(0, len(prompts), EMBED_CHUNK):
        part = np.asarray(encoder.encode(prompts[start:start + EMBED_CHUNK]), dtype=np.float32)
        if out is None:
            out = np.empty((len(prompts), part.shape[1]), np.float32)
        out[start:start + len(part)] = part
    return out if out is not None else np.zeros((0, 0), np.float32)

