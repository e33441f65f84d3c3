"""``allocate``: how many rollouts each candidate prompt gets.

Why: a GRPO group whose rollouts all agree has zero advantage and zero
gradient. Predicting each prompt's success rate before rollout lets a trainer
skip prompts that would be dead and spend the rollouts where groups carry
signal. This module validates the request and dispatches to a rule.
"""

from __future__ import annotations

import numbers

import numpy as np

from preroll.schedule import rules
from preroll.schedule.beliefs import as_belief
from preroll.schedule.errors import ScheduleInputError
from preroll.schedule.solver import feasible_group_count

RULES = ("uniform", "greedy", "knapsack", "variance", "thompson")
_ALIASES = {"grpo": "uniform", "random": "uniform", "v0": "greedy", "knapsack_rl": "knapsack",
            "information": "variance", "mopps": "thompson"}


def _check_int(name: str, value, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, float, np.floating)):
        raise ScheduleInputError(f"must be an integer (got {value!r})", field=name)
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value) or value != int(value):
            raise ScheduleInputError(f"must be a whole number (got {value!r})", field=name)
    value = int(value)
    if value < minimum:
        raise ScheduleInputError(f"must be >= {minimum} (got {value})", field=name)
    return value


def allocate(p_success, budget, *, min_rollouts: int = 2, max_rollouts: int = 64,
             rule: str = "greedy", alpha=None, beta=None, concentration: float | None = None,
             group_size: int = 8, seed: int | None = None, rng: np.random.Generator | None = None,
             thompson_concentration: float = 10.0) -> np.ndarray:
    """Integer rollouts per candidate prompt.

    Parameters
    ----------
    p_success:
        Predicted success rate per candidate (array in [0, 1]) or a
        :class:`~preroll.beliefs.BetaPrediction`. With a Beta belief (or
        ``alpha``/``beta``, or ``concentration`` c meaning Beta(p c, (1-p) c))
        the utility rules maximise the *expected* utility under the belief.
    budget:
        Total rollouts to hand out. The result sums to exactly ``budget``.
    min_rollouts, max_rollouts:
        Bounds for a prompt that is rolled out at all; every entry of the
        result is 0 or in [min_rollouts, max_rollouts].
    rule:
        ``"uniform"`` GRPO baseline: budget // group_size random prompts,
        group_size rollouts each.
        ``"greedy"`` V_0 (arXiv 2602.03584): maximise the expected number of
        informative groups, sum_i 1 - p_i^n_i - (1-p_i)^n_i, by giving each
        rollout where it adds most (exact, see below).
        ``"knapsack"`` Knapsack RL (arXiv 2509.25849): maximise
        sum_i (1 - p_i^n_i - (1-p_i)^n_i) p_i (1-p_i)^2 exactly.
        ``"variance"``: maximise the expected within-group reward variance
        sum_i p_i(1-p_i)(1 - 1/n_i).
        ``"thompson"`` MoPPS/VADE-style: sample p~_i from the Beta posterior,
        keep the budget // group_size prompts whose draw is most informative.
        The three utility rules share one exact solver
        (:func:`preroll.schedule.solver.solve_concave`): marginal-utility
        greedy on concave hulls plus a proven-optimal repair of the one block
        that can straddle the budget.
    group_size:
        Group size of the fixed-size rules (uniform, thompson).
    seed, rng:
        Randomness for uniform and thompson (``rng`` wins over ``seed``).
    thompson_concentration:
        Spread given to point predictions when Thompson sampling needs a
        posterior and none was supplied.

    Raises
    ------
    ScheduleInputError
        For NaN or out-of-range probabilities, an empty pool, a negative or
        non-integer budget, bad bounds, an unknown rule, or a budget that no
        allocation within the bounds can spend exactly (for example budget 1
        with min_rollouts 2, or more than len(pool) * max_rollouts).
    """
    name = _ALIASES.get(str(rule).lower(), str(rule).lower())
    if name not in RULES:
        raise ScheduleInputError(f"unknown rule {rule!r} (choose from {', '.join(RULES)})", field="rule")
    belief = as_belief(p_success, alpha=alpha, beta=beta, concentration=concentration)
    budget = _check_int("budget", budget, minimum=0)
    lo = _check_int("min_rollouts", min_rollouts, minimum=1)
    hi = _check_int("max_rollouts", max_rollouts, minimum=1)
    if hi < lo:
        raise ScheduleInputError(f"max_rollouts {hi} is below min_rollouts {lo}", field="max_rollouts")
    group_size = _check_int("group_size", group_size, minimum=1)
    n = len(belief)
    if budget > n * hi:
        raise ScheduleInputError(
            f"budget {budget} exceeds what the pool can take: {n} prompts x max_rollouts {hi} = {n * hi}",
            field="budget")
    if feasible_group_count(budget, n, lo, hi) is None:
        raise ScheduleInputError(
            f"budget {budget} cannot be split into groups of {lo}..{hi} rollouts "
            f"over at most {n} prompts (each prompt gets 0 or {lo}..{hi})", field="budget")
    if rng is None:
        rng = np.random.default_rng(seed)
    if name == "uniform":
        x = rules.uniform(belief, budget, lo, hi, group_size=group_size, rng=rng)
    elif name == "thompson":
        if not np.isfinite(thompson_concentration) or thompson_concentration <= 0:
            raise ScheduleInputError("must be > 0", field="thompson_concentration")
        x = rules.thompson(belief, budget, lo, hi, group_size=group_size, rng=rng,
                           fallback_concentration=thompson_concentration)
    else:
        x = rules.by_utility(name, belief, budget, lo, hi)
    if int(x.sum()) != budget:  # a bug, not bad input: say so loudly
        raise RuntimeError(f"rule {name!r} spent {int(x.sum())} of budget {budget}; please report this")
    return x
