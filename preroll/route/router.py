"""Route each prompt to the cheapest model that will get it right.

The router keeps one outcome history per candidate model, predicts each
model's success on an incoming prompt from those histories, and picks a model
by a decision rule that trades predicted success against price (see
:mod:`preroll.route.rules`).

Why one encoder: it is the expensive part (a transformer pass); each prompt
is encoded once and the same embedding row feeds every model's success
prediction: one small head per model (the value model's ``"ensemble"``, the
default ``head="auto"``), or one joint model of all candidates
(:class:`~preroll.route.joint.JointSuccessModel`, ``head="joint"``), fitted on
every model's history at once so that its per-model probabilities are
calibrated against each other, or the mixture of both (``"average"``). The
default was chosen for robustness when the prompt mix moves (see ``head``).

Example::

    from preroll.route import ModelSpec, Router
    router = Router(models=[ModelSpec(name="small", cost_per_call=0.1),
                            ModelSpec(name="large", cost_per_call=1.0)],
                    rule="utility", lam=0.2)
    router.fit({"small": small_history, "large": large_history})
    [d] = router.route(["What is 2 + 2?"])
    d.model, d.p_success, d.expected_cost, d.fallback
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from preroll.data.errors import RecordError
from preroll.defaults import AUTO_HEAD, BANDIT_MODELS_PER_PROMPT, DEFAULT_ENCODER
from preroll.data.records import Outcome, make_outcome
from preroll.route import rules as _rules
from preroll.validation import from_pydantic, switch_or_settings
from preroll.route.errors import MissingHistoryError, NotFittedError, RouteConfigError, RouteError, UnknownModelError
from preroll.encoders import fresh_views
from preroll.beliefs import BetaPrediction
from preroll.heads import make_head
from preroll.heads.humble import Evidence, humble
from preroll.route.joint import JointSuccessModel
from preroll.route.pooled import SharedDifficultyKNN
from preroll.route.depth import DepthGuard, average_beliefs, far_threshold, max_similarity, unit
from preroll.route import explore as _explore
from preroll.route.explore import ObserveReport, resolve_settings
from sklearn.base import clone
from sklearn.utils.validation import check_array
from preroll.heads.ensemble import EnsembleHead, predict_options
from preroll.heads.knn import KNNBetaHead
from preroll.route.specs import (RULES, FrontierPoint, ModelSpec, RouteDecision, RouterConfig,
                                 estimate_tokens)

#: What ``head="auto"`` means (see :class:`Router`'s ``head``): chosen on the shift protocols, RESULTS.md;
#: defined once, in :data:`preroll.defaults.AUTO_HEAD`.
DEFAULT_HEAD = AUTO_HEAD["router"]

#: Heads that are one model of every candidate at once (``"average"`` adds the per-model heads to the joint model).
_ALL_MODEL_HEADS = {"joint": JointSuccessModel, "average": JointSuccessModel, "difficulty": SharedDifficultyKNN}


class Router:
    """Pick a model per prompt from per-model outcome histories and per-model prices.

    Parameters
    ----------
    models:
        The candidate models (:class:`ModelSpec` or equivalent dicts), each
        with exactly one price. Their order is the column order of
        :meth:`predict_proba`.
    encoder:
        ``"minilm+lexical+stats"`` (default, the value model's: the bundled MiniLM
        beside TF-IDF n-grams and surface statistics, both fitted on the
        history; on LLMRouter's nine models it routed +4.4 points over the best
        single model against +4.0 for ``"minilm"`` alone, docs/route.md),
        ``"minilm"``, ``"lexical"``, a sentence-transformers name or path,
        several of them joined by ``"+"`` (features side by side, see
        :mod:`preroll.encoders.concat`), or an
        :class:`~preroll.encoders.base.Encoder` instance. Shared by all models.
    head:
        ``"auto"`` (default) is ``"ensemble"``: independent per-model heads,
        each the mean of a logistic and a kNN head (the value model's,
        :mod:`preroll.heads`); on a bandit log (prompts carrying, on average,
        fewer than 1.5 models' outcomes, as a live router's own do) it is
        ``"difficulty"`` (``bandit_log_`` says which). Why: defaults are chosen by the worst case over
        shift protocols (whole topics held out, reweighted topic mixes) and
        fold seeds, not by random folds. The joint model won random folds but
        lost most when the mix moved: worst gain over the best single model
        at ``lam = 0`` -8.9 points for ``"joint"``, -5.6 for ``"average"``,
        -3.6 for ``"ensemble"`` (LLMRouter's nine models, fold seeds 0 and 1;
        on LLMRouter's own test split the joint model gained +1.6 points, the
        ensemble +4.2). ``"joint"``: one jointly fitted, per-model calibrated
        model of all candidates (:class:`~preroll.route.joint.JointSuccessModel`;
        an instance may be passed to set its parameters), the default until
        the shift protocols. ``"average"``: both, their beliefs mixed
        (:func:`~preroll.route.depth.average_beliefs`). ``"difficulty"``: neighbour rates over a prompt
        difficulty shared by every model (:class:`~preroll.route.pooled.SharedDifficultyKNN`), which reads a
        bandit history without the bias of where each model was tried; on live streams it lifted the worst
        stream most, with full labels it is behind the ensemble where whole topics are held out (RESULTS.md).
        Or ``"logistic"``,
        ``"knn"``, ``"gp"``, or a head object (``fit(X, successes, attempts)``,
        ``predict(X)`` returning a :class:`~preroll.heads.BetaPrediction` or
        probabilities), one copy per model.
    rule:
        Default decision rule: ``"utility"`` (maximise ``p - lam * cost``),
        ``"confident"`` (``utility``, but leave the best-on-average model only
        when the gain's lower confidence bound clears ``margin``),
        ``"threshold"`` (cheapest model with ``p >= threshold``) or ``"gain"``
        (two models: the dearer one when ``p_strong - p_weak >= threshold``).
    lam:
        Quality given up per unit of cost, for the ``utility`` rule. Its scale
        is that of your prices.
    threshold:
        For ``threshold``: the success probability a model must clear. For
        ``gain``: the predicted gain in success probability that justifies
        the dearer model.
    confidence, margin:
        For ``confident``: the number of standard deviations taken off the
        predicted gain over the default model, and the gain that lower bound
        must exceed.
    guard:
        The out-of-depth guard (:class:`~preroll.route.depth.DepthGuard`):
        ``None``/``False`` off, ``True`` its defaults, or a ``DepthGuard`` or a
        mapping of its fields. A prompt whose highest similarity to the
        history lies below the history's own ``far_quantile`` is routed by the
        ``confident`` rule (the best-on-average model unless the gain is
        confident) instead of ``utility``. On by default (``far_quantile``
        0.1, :data:`preroll.defaults.GUARD_FAR_QUANTILE`): on the shift
        protocols (whole topics held out, reweighted mixes) it raised the
        default head's worst gain over the best single model at ``lam = 0``
        on nine priced models from -3.6 to -1.0 (quantile 0.25) or -1.7 (0.1)
        points, and on their six 7-9B models from -8.6 to -7.5 (0.25) or -6.9
        (0.1) points; 0.1 is the better worst case over both (RESULTS.md).
        Where the mix does not move it costs 0-0.2 points on the nine models
        (0-0.8 at 0.25); ``guard=False`` turns it off.
    explore:
        Live routing from bandit feedback (:mod:`preroll.route.explore`):
        ``True`` (Thompson sampling on the Beta beliefs, default settings), an
        :class:`~preroll.route.explore.ExploreSettings` (or its dict), or
        ``None``/``False`` (off, the default). With it on, :meth:`route` works
        before any history (priors only) and :meth:`observe` learns from the
        outcome of each chosen model.
    cache_dir:
        On-disk embedding cache for named encoders, passed to
        :func:`preroll.encoders.get_encoder`: ``None`` is its default location
        (``$PREROLL_CACHE`` or ``~/.cache/preroll``), ``False`` disables it.

    Nothing is computed or validated in ``__init__`` (scikit-learn
    convention); :meth:`fit` validates every parameter.
    """

    def __init__(self, models: Sequence[ModelSpec | Mapping[str, Any]], encoder: Any = DEFAULT_ENCODER,
                 head: Any = "auto", rule: str = "utility", lam: float = 1.0, threshold: float = 0.8,
                 *, cache_dir: str | Path | None | bool = None, confidence: float = 1.0,
                 margin: float = 0.0, guard: Any = True, explore: Any = None) -> None:
        self.models = models
        self.encoder = encoder
        self.head = head
        self.rule = rule
        self.lam = lam
        self.threshold = threshold
        self.cache_dir = cache_dir
        self.confidence = confidence
        self.margin = margin
        self.guard = guard
        self.explore = explore

    # ------------------------------------------------------------------ config

    @classmethod
    def from_config(cls, config: str | Path | Mapping[str, Any] | RouterConfig, *,
                    cache_dir: str | Path | None = None) -> "Router":
        """Build a router from a YAML/JSON file or dict (see :class:`RouterConfig`)."""
        cfg = config if isinstance(config, RouterConfig) else RouterConfig.load(
            dict(config) if isinstance(config, Mapping) else config)
        return cls(models=list(cfg.models), cache_dir=cache_dir, **cfg.router_kwargs())

    def _specs(self) -> list[ModelSpec]:
        specs = []
        if isinstance(self.models, (str, bytes)) or not isinstance(self.models, Sequence):
            raise RouteConfigError(f"models must be a list of ModelSpec, got {type(self.models).__name__}",
                                   field="models")
        for i, m in enumerate(self.models):
            if isinstance(m, ModelSpec):
                specs.append(m)
                continue
            if not isinstance(m, Mapping):
                raise RouteConfigError(f"expected a ModelSpec or a mapping, got {type(m).__name__}",
                                       field=f"models.{i}")
            try:
                specs.append(ModelSpec.model_validate(dict(m)))
            except ValidationError as exc:
                raise from_pydantic(exc, RouteConfigError, prefix=f"models.{i}") from None
        if not specs:
            raise RouteConfigError("needs at least one model", field="models")
        names = [s.name for s in specs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise RouteConfigError(f"duplicate model names: {', '.join(dup)}", field="models")
        return specs

    def _check_params(self) -> None:
        _check_rule(self.rule)
        _check_param("lam", self.lam, nonneg=True)
        _check_param("threshold", self.threshold)
        _check_param("confidence", self.confidence, nonneg=True)
        _check_param("margin", self.margin)
        self._guard()

    def _guard(self) -> DepthGuard | None:
        """The out-of-depth guard's settings (``None``/``False``: off, ``True``: defaults)."""
        return switch_or_settings(self.guard, DepthGuard, field="guard", error_cls=RouteConfigError)

    @property
    def model_names(self) -> list[str]:
        return [s.name for s in self._specs()]

    def spec(self, name: str) -> ModelSpec:
        """The :class:`ModelSpec` of a model; :class:`UnknownModelError` for any other name."""
        for s in self._specs():
            if s.name == name:
                return s
        raise UnknownModelError(name, self.model_names)

    def cost(self, name: str, n_tokens: int | None = None, *, prompt: str | None = None) -> float:
        """Price of one call to ``name``; token-priced models need ``n_tokens`` or a ``prompt`` to estimate it."""
        spec = self.spec(name)
        if n_tokens is None and prompt is not None and spec.per_token:
            n_tokens = estimate_tokens(prompt)
        return spec.cost(n_tokens)

    def costs(self, prompts: Sequence[str], n_tokens: Sequence[int] | None = None) -> np.ndarray:
        """``(n_prompts, n_models)`` price matrix; token counts estimated from text unless given."""
        specs = getattr(self, "specs_", None) or self._specs()
        n = len(prompts)
        if n_tokens is not None:
            n_tokens = list(n_tokens)
            if len(n_tokens) != n:
                raise RouteError(f"n_tokens has {len(n_tokens)} entries for {n} prompts")
        C = np.empty((n, len(specs)))
        toks = None
        for j, s in enumerate(specs):
            if s.per_token:
                if toks is None:
                    toks = n_tokens if n_tokens is not None else [estimate_tokens(p) for p in prompts]
                C[:, j] = [s.cost(t) for t in toks]
            else:
                C[:, j] = s.cost()
        return C

    # --------------------------------------------------------------------- fit

    def fit(self, histories: Mapping[str, Sequence[Outcome | Mapping[str, Any]]], *,
            show_progress: bool = False) -> "Router":
        """Learn each model's success from its own history.

        ``histories`` maps every model name to its outcome records
        (:class:`~preroll.data.Outcome` or dicts in the record format). A model
        without a non-empty history raises :class:`MissingHistoryError`; a
        history for a model the router does not know raises
        :class:`UnknownModelError`.
        """
        specs = self._specs()
        self._check_params()
        if resolve_settings(self.explore) is not None and _explore.on_fit(self, histories):
            return self  # some models have no history yet: they keep their prior (preroll.route.explore)
        names = [s.name for s in specs]
        if not isinstance(histories, Mapping):
            raise RouteError(f"histories must map model name -> list of outcomes, got {type(histories).__name__}")
        for key in histories:
            if key not in names:
                raise UnknownModelError(str(key), names, where="in histories")
        tables = {}
        for name in names:
            if name not in histories or histories[name] is None:
                raise MissingHistoryError(name)
            recs = _as_outcomes(name, histories[name])
            if not recs:
                raise MissingHistoryError(name, "history is empty")
            tables[name] = recs

        self.encoder_ = fresh_views(self._resolve_encoder())  # never refit the caller's encoder in place
        all_prompts = list(dict.fromkeys(r.prompt for recs in tables.values() for r in recs))
        self.encoder_.fit(all_prompts)
        X_all = self._encode(all_prompts, show_progress=show_progress)
        row = {p: i for i, p in enumerate(all_prompts)}

        # Successes and attempts per (unique prompt, model); NaN rate where a model never saw a prompt.
        S = np.zeros((len(all_prompts), len(names)))
        A = np.zeros_like(S)
        for j, name in enumerate(names):
            for r in tables[name]:
                S[row[r.prompt], j] += r.successes
                A[row[r.prompt], j] += r.attempts
        self.n_history_ = {name: len(tables[name]) for name in names}
        self.specs_ = specs
        # What each model's history supports (preroll.heads.humble): one success row is not certainty.
        self.evidence_ = Evidence.of_columns(S, A)
        self.base_rate_ = self.evidence_.prior_mean
        self.history_mean_cost_ = self.costs(all_prompts).mean(axis=0)
        guard = self._guard()
        self.history_X_ = unit(X_all) if guard is not None else None  # normalised once, not per decision
        self.far_below_ = far_threshold(X_all, guard) if guard is not None else None
        self.joint_ = None
        self.heads_ = None
        self.head_rows_ = self.neighbour_X_ = None
        # A bandit log (each prompt answered by about one model) is read by the shared-difficulty model under
        # head="auto": where each model was tried biases per-model heads (preroll.route.pooled).
        self.bandit_log_ = bool(len(names) > 1 and (A > 0).sum(axis=1).mean() < BANDIT_MODELS_PER_PROMPT)
        head = self.head
        if isinstance(head, str) and head == "auto":
            head = AUTO_HEAD["router_bandit"] if self.bandit_log_ else DEFAULT_HEAD
        model = _ALL_MODEL_HEADS[head]() if isinstance(head, str) and head in _ALL_MODEL_HEADS else head
        if isinstance(model, (JointSuccessModel, SharedDifficultyKNN)):
            with np.errstate(invalid="ignore", divide="ignore"):
                rates = np.where(A > 0, S / np.where(A > 0, A, 1.0), np.nan)
            self.joint_ = clone(model).fit(X_all, rates, A)
            if head != "average":
                return self
            head = "ensemble"
        try:
            make_head(head)
        except ValueError as exc:
            raise RouteConfigError(str(exc), field="head") from None
        self.heads_ = []
        rows = []
        for j, name in enumerate(names):
            seen = np.flatnonzero(A[:, j] > 0)
            self.heads_.append(make_head(head).fit(X_all[seen], S[seen, j], A[seen, j]))
            rows.append(None if len(seen) == len(all_prompts) else seen)
        if any(isinstance(h, _SHARED_SEARCH) for h in self.heads_):
            # One neighbour search for all heads (see _head_beliefs): their histories are rows of this one.
            self.head_rows_ = rows
            self.neighbour_X_ = self.history_X_ if self.history_X_ is not None else unit(X_all)
        return self

    def _resolve_encoder(self):
        from preroll.encoders import get_encoder

        try:
            return get_encoder(self.encoder, cache_dir=self.cache_dir)
        except ValueError as exc:
            raise RouteConfigError(str(exc), field="encoder") from None

    def _encode(self, prompts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        X = np.asarray(self.encoder_.encode(list(prompts), show_progress=show_progress), dtype=np.float32)
        if X.ndim != 2 or X.shape[0] != len(prompts):
            raise RouteError(f"encoder returned shape {X.shape} for {len(prompts)} prompts")
        return X

    # ----------------------------------------------------------------- predict

    def _fitted(self) -> None:
        if not hasattr(self, "specs_") or not hasattr(self, "heads_"):
            raise NotFittedError("this Router is not fitted yet: call fit(histories) first")

    def embed(self, prompts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """The shared embedding matrix of ``prompts`` (one encoder pass for all models)."""
        self._fitted()
        return self._encode(_check_prompts(prompts), show_progress=show_progress)

    def predict_beta_embeddings(self, X: np.ndarray) -> BetaPrediction:
        """Beta belief per (prompt, model), arrays ``(n_prompts, n_models)``, from precomputed embeddings.

        Each model's column is held to what its own history supports
        (:func:`preroll.heads.humble.humble`): a model with a handful of outcomes, or outcomes
        that all agree, stays near its prior with a wide spread, whatever its head says.
        """
        self._fitted()
        return self._belief_and_far(np.asarray(X, dtype=np.float32), far=False)[0]

    def _belief_and_far(self, X: np.ndarray, *, far: bool) -> tuple[BetaPrediction, np.ndarray | None]:
        """:meth:`predict_beta_embeddings` and, with ``far``, :meth:`far_from_history`, from one pass over the
        history where the heads allow it (:meth:`_head_beliefs`)."""
        joint = self.joint_.predict(X) if self.joint_ is not None else None
        far_flags = None
        if self.heads_ is None:
            belief = joint
        else:
            preds, far_flags = self._head_beliefs(X, far=far)
            if all(isinstance(p, BetaPrediction) for p in preds):
                heads = BetaPrediction(np.stack([p.alpha for p in preds], axis=1),
                                       np.stack([p.beta for p in preds], axis=1))
            else:  # a custom head returning plain probabilities: a belief worth one observation
                P = np.clip(np.stack([_success(p) for p in preds], axis=1), 0.0, 1.0)
                heads = BetaPrediction.from_mean_concentration(P, np.full(P.shape, 2.0))
            belief = heads if joint is None else average_beliefs(joint, heads)
        if far and far_flags is None:
            far_flags = self.far_from_history(X)
        evidence = getattr(self, "evidence_", None)  # None: a router fitted before evidence was kept
        return (belief if evidence is None else humble(belief, evidence)), far_flags

    def _head_beliefs(self, X: np.ndarray, *, far: bool) -> tuple[list[Any], np.ndarray | None]:
        """Each head's prediction on ``X`` and, with ``far`` and the guard on, the far flags.

        Why one search: the kNN part of each of the nine default heads multiplies the query by its
        model's history, and on LLMRouter's 4,486 prompts the nine histories are the same rows, so a
        decision read the same 11.6 MB matrix from memory nine times (about 5 ms of a 6 ms decision on
        this machine), and the guard a tenth time. Here the query's similarities to the shared history
        (``neighbour_X_``) are computed once, each head takes its model's columns of them
        (``head_rows_``), and ``X`` is validated once for all heads. The numbers are the per-head path's
        (tested); a custom head, or a router fitted before this existed, takes that path.
        """
        rows = getattr(self, "head_rows_", None)
        H = getattr(self, "neighbour_X_", None)
        if rows is None or H is None:
            return [h.predict(X) for h in self.heads_], (self.far_from_history(X) if far else None)
        X = check_array(X, dtype=np.float32)  # once, for every head
        Q = unit(X)
        guard_on = far and getattr(self, "history_X_", None) is not None
        chunks: list[list[Any]] = []
        top = np.empty(len(X), dtype=np.float32)
        for s in range(0, len(X), _QUERY_CHUNK):
            Xc = X[s:s + _QUERY_CHUNK]
            S = Q[s:s + _QUERY_CHUNK] @ H.T
            if guard_on:
                top[s:s + _QUERY_CHUNK] = S.max(axis=1)
            chunks.append([h.predict(Xc, **predict_options(h, S if r is None else S[:, r], False))
                           for h, r in zip(self.heads_, rows)])
        preds = chunks[0] if len(chunks) == 1 else [_concat_predictions([c[j] for c in chunks])
                                                    for j in range(len(self.heads_))]
        if not far:
            return preds, None
        return preds, (top < self.far_below_ if guard_on else np.zeros(len(X), dtype=bool))

    def predict_beta(self, prompts: Sequence[str]) -> BetaPrediction:
        """Beta belief over each model's success on each prompt (mean = :meth:`predict_proba`)."""
        return self.predict_beta_embeddings(self.embed(prompts))

    def predict_proba_embeddings(self, X: np.ndarray) -> np.ndarray:
        """Predicted success per model from precomputed embeddings (``embed``)."""
        return np.clip(self.predict_beta_embeddings(X).p_success, 0.0, 1.0)

    def far_from_history(self, X: np.ndarray) -> np.ndarray:
        """Per embedding row: is it far from the history (below the guard's similarity quantile)?

        All ``False`` when the guard is off.
        """
        self._fitted()
        if getattr(self, "history_X_", None) is None:
            return np.zeros(len(X), dtype=bool)
        return max_similarity(np.asarray(X, dtype=np.float32), self.history_X_, h_unit=True) < self.far_below_

    def predict_proba(self, prompts: Sequence[str]) -> np.ndarray:
        """``(n_prompts, n_models)`` predicted success, columns in ``models`` order."""
        return self.predict_proba_embeddings(self.embed(prompts))

    # ------------------------------------------------------------------- route

    def _rule_param(self, rule: str | None, lam: float | None, threshold: float | None) -> tuple[str, float]:
        rule = self.rule if rule is None else rule
        _check_rule(rule)
        if rule in ("utility", "confident"):
            value = self.lam if lam is None else lam
            _check_param("lam", value, nonneg=True)
        else:
            value = self.threshold if threshold is None else threshold
            _check_param("threshold", value)
        return rule, float(value)

    def _keep(self, exclude: Sequence[str]) -> np.ndarray:
        return _rules.eligible([s.name for s in self.specs_], exclude)

    def route(self, prompts: Sequence[str] | str, *, rule: str | None = None, lam: float | None = None,
              threshold: float | None = None, exclude: Sequence[str] = (),
              n_tokens: Sequence[int] | None = None, explore: bool | None = None) -> list[RouteDecision]:
        """Choose a model for each prompt.

        ``rule``/``lam``/``threshold`` override the router's defaults for this
        call; ``exclude`` names models that must not be chosen (e.g. down or
        rate-limited); ``n_tokens`` gives exact prompt token counts for
        token-priced models (otherwise estimated, see :func:`estimate_tokens`).
        A single string is routed as a one-prompt list. ``explore``: ``None``
        follows the router's setting, ``True`` explores (Thompson sampling,
        bounded), ``False`` takes the greedy choice on the same beliefs.
        """
        on = resolve_settings(self.explore) is not None
        if explore or on:
            return _explore.route(self, prompts, explore=on if explore is None else bool(explore), rule=rule,
                                  lam=lam, threshold=threshold, exclude=exclude, n_tokens=n_tokens)
        self._fitted()
        if isinstance(prompts, str):
            prompts = [prompts]
        rule, param = self._rule_param(rule, lam, threshold)
        keep = self._keep(exclude)
        prompts = _check_prompts(prompts)
        X = self.embed(prompts)
        belief, far = self._belief_and_far(X, far=True)
        C = self.costs(prompts, n_tokens)
        return self._decide(belief, C, rule, param, keep, far=far)

    def observe(self, prompts: Sequence[str] | str, models: Sequence[str] | str, outcomes: Any, *,
                refit: bool | None = None) -> ObserveReport:
        """Learn from bandit feedback: ``outcomes[i]`` (success in [0, 1]) of ``models[i]`` on ``prompts[i]``.

        An incremental update (the online correction of
        :mod:`preroll.route.explore`); a full refit on the histories so far
        (per model the newest ``max_history``) when the settings' schedule says it is due -- unless ``refit=False``
        (a server refits in the background; :attr:`refit_due` says when).
        """
        return _explore.observe(self, prompts, models, outcomes, refit=refit)

    @property
    def refit_due(self) -> bool:
        """Whether enough outcomes were observed since the last fit for a full refit."""
        st = getattr(self, "explore_state_", None)
        return st is not None and st.refit_due()

    def explore_stats(self) -> dict[str, Any]:
        """Exploration so far: decisions, explored decisions and their share, extra spend vs greedy, refits."""
        st = getattr(self, "explore_state_", None)
        return _explore.ExploreLedger().snapshot() if st is None else st.ledger.snapshot()

    def route_embeddings(self, X: np.ndarray, prompts: Sequence[str], *, rule: str | None = None,
                         lam: float | None = None, threshold: float | None = None,
                         exclude: Sequence[str] = (), n_tokens: Sequence[int] | None = None) -> list[RouteDecision]:
        """:meth:`route` with precomputed embeddings (prompts still price token-billed models)."""
        self._fitted()
        rule, param = self._rule_param(rule, lam, threshold)
        keep = self._keep(exclude)
        belief, far = self._belief_and_far(np.asarray(X, dtype=np.float32), far=True)
        return self._decide(belief, self.costs(list(prompts), n_tokens), rule, param, keep, far=far)

    def rank_models(self, belief: BetaPrediction, C: np.ndarray, rule: str, param: float,
                    cols: np.ndarray | None = None, far: np.ndarray | None = None) -> np.ndarray:
        """Column indices per prompt, best first, under ``rule`` (restricted to ``cols``).

        ``far`` (per prompt, from :meth:`far_from_history`): with the guard on, those prompts are ranked by the
        ``confident`` rule at the guard's ``z`` and ``margin`` under the ``utility`` rule's ``lam``.
        """
        m = C.shape[1]
        cols = np.arange(m) if cols is None else np.asarray(cols)
        P = np.clip(belief.p_success, 0.0, 1.0)
        if rule == "confident":
            default = _rules.default_model(self.base_rate_[cols], self.history_mean_cost_[cols], param)
            return cols[_rules.rank_confident(P[:, cols], belief.std[:, cols], C[:, cols], param, default,
                                              z=float(self.confidence), margin=float(self.margin))]
        order = cols[_rules.rank(rule, P[:, cols], C[:, cols], param)]
        guard = self._guard()
        if guard is not None and rule == "utility" and far is not None and np.any(far):
            default = _rules.default_model(self.base_rate_[cols], self.history_mean_cost_[cols], param)
            careful = cols[_rules.rank_confident(P[:, cols], belief.std[:, cols], C[:, cols], param, default,
                                                 z=float(guard.z), margin=float(guard.margin))]
            order = np.where(np.asarray(far, bool)[:, None], careful, order)
        return order

    def _decide(self, belief, C, rule, param, keep, far=None) -> list[RouteDecision]:
        names = [s.name for s in self.specs_]
        cols = np.flatnonzero(keep)
        if rule == "gain" and len(cols) != 2:
            raise RouteError(f"the 'gain' rule routes between exactly two models ({len(cols)} eligible)")
        P = np.clip(belief.p_success, 0.0, 1.0)
        order = self.rank_models(belief, C, rule, param, cols, far=far)
        out = []
        for i in range(P.shape[0]):
            ranked = [names[j] for j in order[i]]
            out.append(RouteDecision(
                model=ranked[0],
                p_success={n: float(P[i, j]) for j, n in enumerate(names)},
                expected_cost=float(C[i, order[i, 0]]),
                fallback=ranked[1:], rule=rule, param=param))
        return out

    # ---------------------------------------------------------------- frontier

    def frontier(self, prompts: Sequence[str], labels: np.ndarray, *, rule: str | None = None,
                 grid: Sequence[float] | None = None, n_tokens: Sequence[int] | None = None,
                 embeddings: np.ndarray | None = None) -> list[FrontierPoint]:
        """Sweep a rule's parameter and measure cost and quality on labelled prompts.

        ``labels`` is ``(n_prompts, n_models)``: 1/0 correctness or success
        rates of every model on every prompt. ``grid`` defaults to one that
        spans all-cheapest to all-best (:func:`rules.default_grid`).
        """
        self._fitted()
        prompts = _check_prompts(prompts)
        rule = self.rule if rule is None else rule
        _check_rule(rule)
        Y = _check_labels(labels, len(prompts), len(self.specs_))
        belief = self.predict_beta(prompts) if embeddings is None else self.predict_beta_embeddings(embeddings)
        P = np.clip(belief.p_success, 0.0, 1.0)
        C = self.costs(prompts, n_tokens)
        if grid is None:
            grid = _rules.default_grid("utility" if rule == "confident" else rule, P, C)
        if rule == "confident":
            picks = [self.rank_models(belief, C, rule, float(g))[:, 0] for g in grid]
            return points_from_picks(picks, C, Y, grid, [s.name for s in self.specs_])
        return frontier_points(P, C, Y, rule, grid, [s.name for s in self.specs_])


def frontier_points(P: np.ndarray, C: np.ndarray, Y: np.ndarray, rule: str, grid: Sequence[float],
                    names: Sequence[str]) -> list[FrontierPoint]:
    """Cost, quality and model shares of ``rule`` at each parameter in ``grid``."""
    return points_from_picks([_rules.choose(rule, P, C, float(g)) for g in grid], C, Y, grid, names)


def points_from_picks(picks: Sequence[np.ndarray], C: np.ndarray, Y: np.ndarray, grid: Sequence[float],
                      names: Sequence[str]) -> list[FrontierPoint]:
    """Cost, quality and model shares of each chosen-model vector (one per parameter in ``grid``)."""
    n, m = C.shape
    rows = np.arange(n)
    strong = _rules.strong_index(C.mean(axis=0, keepdims=True))[0]
    pts = []
    for g, pick in zip(grid, picks):
        counts = np.bincount(pick, minlength=m) / n
        pts.append(FrontierPoint(param=float(g), cost=float(C[rows, pick].mean()),
                                 quality=float(Y[rows, pick].mean()),
                                 share={names[j]: float(counts[j]) for j in range(m)},
                                 strong_share=float(counts[strong])))
    return pts


#: Query rows per similarity block of the shared neighbour search (as in ``preroll.heads.knn.nearest``).
_QUERY_CHUNK = 1024
#: Heads that take a precomputed similarity to their history (``predict(X, similarity=..., check_input=...)``).
_SHARED_SEARCH = (EnsembleHead, KNNBetaHead)


def _concat_predictions(parts: Sequence[Any]) -> Any:
    """One head's predictions on consecutive query blocks, joined."""
    if all(isinstance(p, BetaPrediction) for p in parts):
        return BetaPrediction(np.concatenate([p.alpha for p in parts]), np.concatenate([p.beta for p in parts]))
    return np.concatenate([_success(p) for p in parts])


def _success(prediction) -> np.ndarray:
    """Success probabilities from a head's prediction (a Beta belief, or plain probabilities)."""
    return np.asarray(getattr(prediction, "p_success", prediction), dtype=float)


def _check_rule(rule: Any) -> None:
    if rule not in RULES:
        raise RouteConfigError(f"unknown rule {rule!r}; choose one of {', '.join(map(repr, RULES))}", field="rule")


def _check_param(name: str, value: Any, *, nonneg: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or math.isnan(value):
        raise RouteConfigError(f"must be a number, got {value!r}", field=name)
    if nonneg and value < 0:
        raise RouteConfigError(f"must be >= 0, got {value!r}", field=name)


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise RouteError(f"prompts must be a list of strings, got {type(prompts).__name__}")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise RouteError(f"prompt {i} must be text, got {type(p).__name__}")
        if not p.strip():
            raise RouteError(f"prompt {i} is empty")
    return list(prompts)


def _check_labels(labels: np.ndarray, n: int, m: int) -> np.ndarray:
    Y = np.asarray(labels, dtype=float)
    if Y.shape != (n, m):
        raise RouteError(f"labels must have shape (n_prompts, n_models) = ({n}, {m}), got {Y.shape}")
    if not np.all(np.isfinite(Y)) or Y.min() < 0 or Y.max() > 1:
        raise RouteError("labels must be success indicators or rates in [0, 1]")
    return Y


def _as_outcomes(name: str, history: Sequence[Outcome | Mapping[str, Any]]) -> list[Outcome]:
    if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
        raise RouteError(f"history of model {name!r} must be a list of outcomes, got {type(history).__name__}")
    out = []
    for i, r in enumerate(history, start=1):
        if isinstance(r, Outcome):
            out.append(r)
        elif isinstance(r, Mapping):
            out.append(make_outcome(dict(r), path=f"history[{name!r}]", line=i))
        else:
            raise RecordError(f"expected an Outcome or a mapping, got {type(r).__name__}",
                              path=f"history[{name!r}]", line=i)
    return out
