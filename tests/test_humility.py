"""Beliefs that know what they do not know, and loaders that never crash: property tests.

A tiny history or a query unlike any history prompt must give a wide belief,
not p=1.0 with a spread of 0.01.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import HashingEncoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preroll.data import Outcome, RecordError, load_records, make_outcome
from preroll.errors import PrerollError
from preroll.model.value_model import ValueModel

NEAR_IDENTICAL = [f"Compute the sum 12 + {i % 3} and give the answer as an integer." for i in range(40)]
UNRELATED = ["Write a sonnet about the sea at dawn, in the style of Shakespeare, with a volta in line nine "
             "and an extended metaphor about ships, memory and the long grey light of morning over the harbour."]


def _history(prompts, rates):
    return [Outcome(prompt=p, successes=float(r), attempts=1.0) for p, r in zip(prompts, rates)]


@pytest.mark.parametrize("encoder", ["lexical+stats", "stats"])
def test_unrelated_query_on_a_narrow_history_is_uncertain(encoder):
    rates = [1.0] * 35 + [0.0] * 5
    vm = ValueModel(encoder=encoder).fit(_history(NEAR_IDENTICAL, rates))
    p = vm.predict(UNRELATED)
    assert 0.05 < p.p_success[0] < 0.95
    assert p.concentration[0] <= 4.0  # worth a few prompts of evidence, not forty
    assert p.std[0] > 0.15
    # a query like the history stays close to the history's rate and is narrower
    near = vm.predict(["Compute the sum 12 + 7 and give the answer as an integer."])
    assert near.std[0] < p.std[0]


def test_two_rows_cannot_give_a_narrow_belief():
    vm = ValueModel(encoder=HashingEncoder(64)).fit(_history(["what is 2+2", "integrate x^2"], [1.0, 0.0]))
    p = vm.predict(["what is 3+3"], use_direct_evidence=False)
    assert p.concentration[0] <= 2.0 + 1e-9
    assert p.std[0] > 0.2


def test_direct_evidence_still_narrows_the_belief():
    prompts = [f"question number {i} about topic {i % 5}" for i in range(30)]
    hist = _history(prompts, [i % 2 for i in range(30)]) + [Outcome(prompt="the same prompt", successes=9, attempts=10)]
    vm = ValueModel(encoder=HashingEncoder(64)).fit(hist)
    with_ev = vm.predict(["the same prompt"])
    without = vm.predict(["the same prompt"], use_direct_evidence=False)
    assert with_ev.std[0] < without.std[0] and with_ev.p_success[0] > without.p_success[0]


_words = st.text(alphabet="abcdefghij xyz+?", min_size=1, max_size=40).filter(lambda s: s.strip())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_words, st.integers(0, 4), st.integers(1, 4)), min_size=1, max_size=12),
       st.lists(_words, min_size=1, max_size=4))
def test_beliefs_are_finite_and_bounded_by_the_history(rows, queries):
    hist = [Outcome(prompt=p, successes=float(min(s, a)), attempts=float(a)) for p, s, a in rows]
    vm = ValueModel(encoder=HashingEncoder(32)).fit(hist)
    p = vm.predict(queries, use_direct_evidence=False)
    assert np.all(np.isfinite(p.alpha)) and np.all(np.isfinite(p.beta))
    assert np.all((p.p_success > 0) & (p.p_success < 1))
    assert np.all(p.concentration <= max(len({r[0] for r in rows}), 2) + 1e-6)


_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
_row = st.dictionaries(st.sampled_from(["prompt", "policy", "step", "successes", "attempts", "success_rate",
                                        "reward", "id", "weight", "extra"]), _scalar, max_size=6)


@settings(max_examples=200, deadline=None)
@given(_row)
def test_make_outcome_accepts_or_names_the_problem(row):
    try:
        out = make_outcome(row, reward_range=(-1.0, 1.0))
    except RecordError as exc:
        assert str(exc)
        return
    assert 0 <= out.successes <= out.attempts and out.attempts > 0 and math.isfinite(out.successes)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_row, min_size=1, max_size=4), st.sampled_from(["jsonl", "csv"]))
def test_loaders_raise_only_preroll_errors(tmp_path, rows, kind):
    path = tmp_path / f"h.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        import csv

        keys = sorted({k for r in rows for k in r})
        if not keys:
            return
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows([{k: ("" if r.get(k) is None else r.get(k)) for k in keys} for r in rows])
    try:
        recs = load_records(path, reward_range=(0, 1))
    except PrerollError:
        return
    assert all(r.attempts > 0 and 0 <= r.successes <= r.attempts for r in recs)


def test_fit_leaves_the_callers_encoder_alone():
    from preroll.encoders import LexicalEncoder

    enc = LexicalEncoder().fit([f"alpha beta gamma {i}" for i in range(30)])
    before = enc.name
    hist = _history([f"completely different words {i} delta" for i in range(20)], [i % 2 for i in range(20)])
    vm = ValueModel(encoder=enc).fit(hist)
    assert enc.name == before and vm.encoder_ is not enc
