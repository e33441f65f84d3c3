"""Beliefs that need evidence: little data, or outcomes that never vary, keep a belief near its prior and wide.

Once, two rows that both succeeded gave every unrelated prompt p_success 0.9999 with p_std 0.006, and a
backend whose history was one success row got p 0.999999, so a router sent it every request.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import HashingEncoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preroll.beliefs import BetaPrediction
from preroll.data import Outcome
from preroll.heads.humble import Evidence, humble
from preroll.model.value_model import ValueModel
from preroll.route import ModelSpec, Router

UNLIKE = ["Write a sonnet about the sea at dawn, with a volta in line nine.",
          "Translate 'the harbour light is grey' into French and explain the tense.",
          "List three causes of the French Revolution."]

_words = st.text(alphabet="abcdefghij0123456789 +*=?", min_size=1, max_size=30).filter(lambda s: s.strip())


def _outcomes(rows):
    return [Outcome(prompt=p, successes=float(min(s, a)), attempts=float(a)) for p, s, a in rows]


def _assert_humble(p_success, p_std):
    assert np.all((p_success >= 0.05) & (p_success <= 0.95)), p_success
    assert np.all(p_std >= 0.05), p_std


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_words, st.integers(0, 5), st.integers(1, 5)), min_size=1, max_size=9),
       st.sampled_from(["logistic", "knn", "auto"]))
def test_a_small_history_gives_humble_beliefs(rows, head):
    vm = ValueModel(encoder=HashingEncoder(32), head=head).fit(_outcomes(rows))
    p = vm.predict(UNLIKE, use_direct_evidence=False)
    _assert_humble(p.p_success, p.std)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_words, min_size=1, max_size=60, unique=True), st.sampled_from([(0, 1), (1, 1), (3, 4), (0, 8)]),
       st.sampled_from(["logistic", "knn"]))
def test_a_history_without_outcome_variation_gives_humble_beliefs(prompts, outcome, head):
    s, a = outcome
    vm = ValueModel(encoder=HashingEncoder(32), head=head).fit(_outcomes([(p, s, a) for p in prompts]))
    p = vm.predict(UNLIKE, use_direct_evidence=False)
    _assert_humble(p.p_success, p.std)


def test_two_successes_are_not_certainty_on_the_default_text_encoder():
    vm = ValueModel(encoder="lexical+stats").fit(_outcomes([("what is 2+2", 1, 1), ("integrate x^2", 1, 1)]))
    p = vm.predict(UNLIKE)
    _assert_humble(p.p_success, p.std)
    assert np.all(p.p_success > 0.5)  # two successes still say something, in the right direction


def test_evidence_grows_the_belief_only_with_evidence():
    """More agreeing rows move the prior further, but never to certainty; a varied history is used as it is."""
    means = [Evidence.of(np.ones(n), np.ones(n)).prior_mean for n in (1, 2, 5, 1000)]
    assert means[0] < means[1] < means[2] <= means[3] <= 0.9
    rng = np.random.default_rng(0)
    s = (rng.random(2000) < 0.37).astype(float)
    big = Evidence.of(s, np.ones(2000))
    assert abs(float(big.prior_mean) - s.mean()) < 1e-3 and float(big.credibility) > 0.999
    head = BetaPrediction.from_mean_concentration(np.array([0.02, 0.5, 0.97]), np.full(3, 50.0))
    out = humble(head, big)
    np.testing.assert_allclose(out.p_success, head.p_success, atol=2e-4)  # large data: the head's numbers
    np.testing.assert_allclose(out.concentration, head.concentration)


def test_a_large_varied_history_keeps_its_head_numbers():
    rng = np.random.default_rng(1)
    prompts = [f"item {i} topic {i % 17} value {rng.integers(0, 999)}" for i in range(400)]
    rates = [(i % 17) / 16 for i in range(400)]
    vm = ValueModel(encoder=HashingEncoder(64), head="logistic").fit(
        [Outcome(prompt=p, successes=float(r > 0.5), attempts=1.0) for p, r in zip(prompts, rates)])
    X = vm.encoder_.encode(prompts[:50])
    raw = vm.head_.predict(X, groups=np.zeros(50, int))
    got = vm.predict(prompts[:50], use_direct_evidence=False)
    assert np.corrcoef(raw.p_success, got.p_success)[0, 1] > 0.999
    assert np.max(np.abs(raw.p_success - got.p_success)) < 0.01


CHEAP = [Outcome(prompt=f"question {i} about {['cats', 'dogs', 'sums', 'kings'][i % 4]}", successes=float(i % 2),
                 attempts=1.0) for i in range(40)]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_words, st.integers(0, 3), st.integers(1, 3)), min_size=1, max_size=9),
       st.sampled_from(["auto", "logistic", "knn", "ensemble"]))
def test_router_beliefs_on_little_evidence_are_humble(rows, head):
    router = Router(models=[ModelSpec(name="cheap", cost_per_call=1.0), ModelSpec(name="dear", cost_per_call=4.0)],
                    encoder=HashingEncoder(32), head=head).fit({"cheap": CHEAP, "dear": _outcomes(rows)})
    belief = router.predict_beta(UNLIKE)
    _assert_humble(belief.p_success[:, 1], belief.std[:, 1])


@pytest.mark.parametrize("head", ["auto", "logistic", "knn", "ensemble"])
def test_one_success_row_does_not_take_all_the_traffic(head):
    """The dearer backend is worth it only for a gain above 0.3 here; one success row is not that gain."""
    router = Router(models=[ModelSpec(name="cheap", cost_per_call=1.0), ModelSpec(name="dear", cost_per_call=4.0)],
                    encoder=HashingEncoder(32), head=head, lam=0.1)
    router.fit({"cheap": CHEAP, "dear": [Outcome(prompt="hello there", successes=1.0, attempts=1.0)]})
    prompts = UNLIKE + [r.prompt for r in CHEAP[:12]]
    picks = [d.model for d in router.route(prompts)]
    assert picks.count("cheap") >= len(prompts) // 2, picks
    belief = router.predict_beta(prompts)
    _assert_humble(belief.p_success[:, 1], belief.std[:, 1])
