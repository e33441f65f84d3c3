"""Warm starts of the prompt book on a slice of the real DAPO-Math outcomes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from preroll.data import load_v0
from preroll.online import OnlineInputError, OnlineSettings, PromptBook, WarmEvidence

TARGET = ("Qwen3-4B-Instruct", 256)


@pytest.fixture(scope="module")
def slice_(dapo):
    """The target snapshot's prompts (the book's dataset) and every other snapshot's rows (the warm evidence)."""
    rows = load_v0(dapo / "context.jsonl") + load_v0(dapo / "queries.jsonl")
    target = {r.id: r for r in rows if (r.policy, r.step) == TARGET}
    others = [r for r in rows if (r.policy, r.step) != TARGET]
    ids = sorted(target)
    return ids, [target[i].prompt for i in ids], np.array([target[i].successes for i in ids]), others


def _evidence(others, shuffle_seed=None):
    s = np.array([r.successes for r in others])
    if shuffle_seed is not None:   # the same outcomes, on the wrong prompts (within each source)
        rng = np.random.default_rng(shuffle_seed)
        src = np.array([f"{r.policy}@{r.step}" for r in others])
        for name in set(src):
            m = np.flatnonzero(src == name)
            s[m] = s[rng.permutation(m)]
    return WarmEvidence(ids=[r.id for r in others], successes=s, attempts=np.array([r.attempts for r in others]),
                        source=[f"{r.policy}@{r.step}" for r in others])


def _book(ids, texts, evidence):
    book = PromptBook(texts, ids=ids, settings=OnlineSettings(encoder="none", seed=0))
    report = book.warm_start(evidence)
    return book, report


def _first_step(book, k):
    book.record(0, np.arange(len(k)), [[1.0] * int(x) + [0.0] * (10 - int(x)) for x in k])


def test_warm_start_from_other_snapshots_predicts_and_its_weight_is_fitted(slice_):
    ids, texts, k, others = slice_
    book, report = _book(ids, texts, _evidence(others))
    covered = book.warm_a_ > 0
    assert report.prompts_covered == int(covered.sum()) >= 100
    assert report.rows_matched < report.rows   # rows on prompts outside this dataset are not matched
    prior = book.predict().p_success
    assert np.ptp(prior[covered]) > 0.2 and np.ptp(prior[~covered]) == 0   # only covered prompts move
    rho = spearmanr(prior[covered], k[covered]).statistic
    assert rho > 0.3
    _first_step(book, k)
    assert book.warm_weight_ > 0

    # The same outcomes on the wrong prompts: the fitted weight (and the evidence's pull) drops.
    control, _ = _book(ids, texts, _evidence(others, shuffle_seed=1))
    _first_step(control, k)
    assert control.warm_weight_ < book.warm_weight_


def test_warm_start_from_files_and_saved_books(slice_, tmp_path):
    ids, texts, k, others = slice_
    history = tmp_path / "others.jsonl"
    history.write_text("\n".join(json.dumps({"id": r.id, "prompt": r.prompt, "successes": r.successes,
                                             "attempts": r.attempts, "policy": r.policy, "step": r.step})
                                 for r in others) + "\n", encoding="utf-8")
    from_file = PromptBook(texts, ids=ids, settings=OnlineSettings(encoder="none", warm_start=str(history)))
    from_rows, _ = _book(ids, texts, _evidence(others))
    np.testing.assert_allclose(from_file.predict().p_success, from_rows.predict().p_success)

    # A previous run's book warm-starts a new one on the same data; a saved warm book resumes with its warm state.
    _first_step(from_file, k)
    saved = from_file.save(tmp_path / "run1.npz")
    again = PromptBook.load(saved, texts, ids)
    np.testing.assert_allclose(again.predict().p_success, from_file.predict().p_success)
    history.unlink()   # a resumed book does not read its warm-start file again
    PromptBook.load(saved, texts, ids)
    second = PromptBook(texts, ids=ids, settings=OnlineSettings(encoder="none", warm_start=str(saved)))
    assert (second.warm_a_ > 0).sum() == len(ids)
    rho = spearmanr(second.predict().p_success, k).statistic
    assert rho > 0.5

    with pytest.raises(OnlineInputError, match="before the first record"):
        from_file.warm_start(_evidence(others))
    with pytest.raises(OnlineInputError, match="another dataset"):
        PromptBook(texts[:-1], ids=ids[:-1], settings=OnlineSettings(encoder="none", warm_start=str(saved)))
