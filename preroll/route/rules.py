"""Decision rules: from predicted success and cost to a ranking of models.

Each rule takes ``P`` (n_prompts, n_models) predicted success and ``C``
(n_prompts, n_models) cost per call, and returns ``(n_prompts, n_models)``
model indices, best first. The first column is the routing choice, the rest
the fallback order. Rules are pure array functions, so a parameter sweep
(the cost-quality frontier) re-uses one prediction matrix.

* ``utility``: maximise ``p - lam * cost``; ``lam`` is quality given up per
  unit of cost. ``lam = 0`` picks the most likely model, large ``lam`` the
  cheapest.
* ``threshold``: the cheapest model whose predicted success is at least
  ``threshold``; if none clears it, the most likely model (a caller asking
  for 0.95 gets the best available rather than nothing).
* ``gain``: RouteLLM's two-model rule: call the expensive ("strong") model
  when its predicted gain ``p_strong - p_weak`` is at least ``threshold``.
* ``confident`` (:func:`rank_confident`): a default-aware ``utility``: stay
  on a default model (the best on average under the same ``lam``) and leave
  it only for a model whose utility gain over the default is confidently
  positive (its lower confidence bound clears a margin). Needs the belief's
  standard deviation as well as its mean, so it is called with ``S``.
"""

from __future__ import annotations

import numpy as np

from preroll.route.errors import RouteError, UnknownModelError


def rank_utility(P: np.ndarray, C: np.ndarray, lam: float) -> np.ndarray:
    score = P - lam * C
    # lexsort: last key is primary. Higher score first, then cheaper, then column order.
    return _lexrank(-score, C)


def rank_threshold(P: np.ndarray, C: np.ndarray, threshold: float) -> np.ndarray:
    clears = P >= threshold
    # Clearing models by cost (cheapest first); the rest after them, most likely first.
    group = np.where(clears, 0.0, 1.0)
    primary = np.where(clears, C, -P)
    return _lexrank(group, primary, C)


def rank_gain(P: np.ndarray, C: np.ndarray, threshold: float) -> np.ndarray:
    if P.shape[1] != 2:
        raise RouteError(f"the 'gain' rule routes between exactly two models (got {P.shape[1]}); "
                         "use 'utility' or 'threshold' for more")
    strong = strong_index(C)
    weak = 1 - strong
    rows = np.arange(P.shape[0])
    gain = P[rows, strong] - P[rows, weak]
    first = np.where(gain >= threshold, strong, weak)
    return np.stack([first, 1 - first], axis=1)


def rank_confident(P: np.ndarray, S: np.ndarray, C: np.ndarray, lam: float, default: int, *,
                   z: float = 1.0, margin: float = 0.0) -> np.ndarray:
    """Default-aware utility ranking: leave ``default`` only for a confident gain.

    With ``u = p - lam * c``, the gain of model j over the default is
    ``u_j - u_default`` with standard deviation ``sqrt(s_j^2 + s_default^2)``
    (beliefs treated as independent, which errs on the cautious side when
    they are positively correlated). A model is *eligible* when
    ``gain - z * sd > margin``; the eligible model with the highest lower
    bound is chosen, otherwise the default. ``z = 0, margin = 0`` is plain
    ``utility`` (up to ties); large ``z`` never leaves the default. Fallbacks
    follow utility.

    Why: when per-prompt differences are small and uncertain, an argmax over
    noisy estimates drifts away from the model that is best on average and
    loses quality; this rule only moves when the evidence says it pays.
    """
    n, m = P.shape
    if not 0 <= default < m:
        raise RouteError(f"default model index {default} out of range for {m} models")
    U = P - lam * C
    rows = np.arange(n)
    gain = U - U[rows, default][:, None]
    sd = np.sqrt(S ** 2 + (S[rows, default] ** 2)[:, None])
    lcb = gain - z * sd
    lcb[:, default] = -np.inf
    best = np.argmax(lcb, axis=1)
    first = np.where(lcb[rows, best] > margin, best, default)
    order = _lexrank(-U, C)
    rest = order[order != first[:, None]].reshape(n, m - 1)
    return np.concatenate([first[:, None], rest], axis=1)


def default_model(base_rate: np.ndarray, mean_cost: np.ndarray, lam: float) -> int:
    """The model best on average under ``lam``: ``argmax base_rate - lam * mean_cost`` (ties: cheaper)."""
    u = np.asarray(base_rate, float) - lam * np.asarray(mean_cost, float)
    return int(_lexrank(-u[None, :], np.asarray(mean_cost, float)[None, :])[0, 0])


def strong_index(C: np.ndarray) -> np.ndarray:
    """Per prompt, the index of the dearer model (ties: the later column)."""
    return (C.shape[1] - 1) - np.argmax(C[:, ::-1], axis=1)


def rank(rule: str, P: np.ndarray, C: np.ndarray, param: float) -> np.ndarray:
    """Dispatch to a rule by name."""
    try:
        fn = _RULES[rule]
    except KeyError:
        raise RouteError(f"unknown rule {rule!r}; choose one of {', '.join(map(repr, _RULES))}") from None
    if np.isnan(param):
        raise RouteError(f"rule {rule!r}: parameter must be a number (got {param})")
    return fn(P, C, float(param))


def choose(rule: str, P: np.ndarray, C: np.ndarray, param: float) -> np.ndarray:
    """Index of the chosen model per prompt."""
    return rank(rule, P, C, param)[:, 0]


def default_grid(rule: str, P: np.ndarray, C: np.ndarray, n: int = 101) -> np.ndarray:
    """Parameters that sweep a rule from all-cheapest to all-best.

    The grid follows the data (quantiles of the break-even points), so each
    step moves a similar number of prompts and the frontier is evenly traced
    whatever the cost units.
    """
    q = np.linspace(0.0, 1.0, n)
    if rule == "utility":
        # lam at which model i overtakes model j on a prompt: (p_i - p_j) / (c_i - c_j).
        dp = P[:, :, None] - P[:, None, :]
        dc = C[:, :, None] - C[:, None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            be = dp / dc
        be = be[(dc > 0) & np.isfinite(be) & (be > 0)]
        pts = np.quantile(be, q) if be.size else np.array([])
        big = (pts.max() * 2 + 1.0) if pts.size else 1.0
        return np.unique(np.concatenate([[0.0], pts, [big * 1e3]]))
    if rule == "threshold":
        pts = np.quantile(P.ravel(), q)
        return np.unique(np.concatenate([[0.0], pts, [np.nextafter(1.0, 2.0)]]))
    if rule == "gain":
        if P.shape[1] != 2:
            raise RouteError("the 'gain' rule routes between exactly two models")
        s = strong_index(C)
        rows = np.arange(P.shape[0])
        gain = P[rows, s] - P[rows, 1 - s]
        pts = np.quantile(gain, q)
        return np.unique(np.concatenate([[-np.inf], pts, [np.inf]]))
    raise RouteError(f"unknown rule {rule!r}; choose one of {', '.join(map(repr, _RULES))}")


def _lexrank(*keys: np.ndarray) -> np.ndarray:
    """Per row, column indices sorted by ``keys`` (first key primary), then column order."""
    n, m = keys[0].shape
    cols = np.broadcast_to(np.arange(m), (n, m))
    # np.lexsort sorts by the last key first; sort along axis 1 row-wise.
    order = np.lexsort((cols, *reversed(keys)), axis=-1)
    return order


_RULES = {"utility": rank_utility, "threshold": rank_threshold, "gain": rank_gain}
#: Rules that also need each prediction's spread and the default model: the Router dispatches them itself.
BELIEF_RULES = {"confident": rank_confident}


def _check_rule_names() -> None:
    from preroll.route.specs import RULES

    if set(_RULES) | set(BELIEF_RULES) != set(RULES):  # one list of names: preroll.route.specs.RuleName
        raise ImportError(f"routing rules {tuple(_RULES) + tuple(BELIEF_RULES)} do not match preroll.route.specs.RULES {RULES}")


_check_rule_names()


def eligible(names, exclude) -> np.ndarray:
    """Boolean mask over ``names``: the models a decision may choose once ``exclude`` (down, rate-limited) is out.

    One check for the plain and the exploring router, so both refuse an unknown or an all-excluding
    ``exclude`` the same way.
    """
    if isinstance(exclude, str):
        exclude = (exclude,)
    for e in exclude:
        if e not in names:
            raise UnknownModelError(e, list(names), where="in exclude")
    keep = np.array([n not in set(exclude) for n in names])
    if not keep.any():
        raise RouteError("every model is excluded; nothing left to route to")
    return keep
