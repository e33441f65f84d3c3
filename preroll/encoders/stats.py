"""Surface statistics of a prompt: how long it is, how much maths and which language.

Why an encoder of a few hand-picked numbers: on DAPO-Math these seven
statistics alone rank prompts by difficulty at a cold-prompt CV AUC of about
0.635 (the bundled MiniLM alone: 0.675), and they carry signal a sentence
embedding truncated to 96 tokens cannot see: total length, the share of
Chinese text (MiniLM is an English model), the amount of LaTeX and numbers,
an Asymptote figure, and DAPO's "give the value of m + n" answer rewrite.
Side by side with MiniLM and the lexical view they lift the value model's
AUC from 0.691 to about 0.697 (docs/encoders.md).

Like :class:`~preroll.encoders.lexical.LexicalEncoder` it is fitted: the
statistics are standardised by the fit texts' mean and spread, so each one
weighs alike whatever its unit.
"""

from __future__ import annotations

import hashlib
import re
from typing import Sequence

import numpy as np

from preroll.encoders.base import Encoder
from preroll.encoders.sentence import check_texts

_CJK = re.compile(r"[\u4e00-\u9fff]")
_NUMBER = re.compile(r"\d+")
_ANSWER_REWRITE = re.compile(r"(provide|give) the value of", re.IGNORECASE)

#: Names of the statistics, in column order.
STATISTICS = ("log_chars", "chinese", "log_dollars", "asymptote_figure", "answer_rewrite", "log_numbers",
              "multiline")


def prompt_statistics(text: str) -> list[float]:
    """The raw (unstandardised) statistics of one prompt, in ``STATISTICS`` order."""
    n = len(text)
    return [
        float(np.log1p(n)),
        float(len(_CJK.findall(text)) > 0.1 * max(n, 1)),
        float(np.log1p(text.count("$"))),
        float("asy]" in text),  # an Asymptote figure: matches both [asy] and [/asy]
        float(bool(_ANSWER_REWRITE.search(text))),
        float(np.log1p(len(_NUMBER.findall(text)))),
        float(text.count("\n") > 3),
    ]


#: Standardised statistics are clipped to +-CLIP standard deviations.
CLIP = 3.0
#: Least scale of a statistic (its units are log-counts and 0/1 flags).
MIN_SCALE = 0.25


class TextStatsEncoder(Encoder):
    """Standardised ``STATISTICS`` of each prompt (fit first, on the history's prompts).

    Rows are divided by ``sqrt(len(STATISTICS))`` so their expected norm is 1,
    like a unit-norm embedding's, but not normalised per row: a prompt's
    length *is* the signal.
    """

    unit_rows = False

    def fit(self, texts: Sequence[str]) -> "TextStatsEncoder":
        texts = check_texts(texts)
        if not texts:
            raise ValueError("TextStatsEncoder.fit needs at least one text")
        raw = np.array([prompt_statistics(t) for t in texts])
        self.mean_ = raw.mean(axis=0)
        std = raw.std(axis=0)
        # A floor on the scale: a statistic nearly constant in the history (40 prompts of one
        # length) must not turn a modest difference in a query into a z-score of hundreds.
        self.scale_ = np.maximum(std, MIN_SCALE)
        digest = hashlib.sha256(self.mean_.tobytes() + self.scale_.tobytes())
        self.fit_hash_ = digest.hexdigest()
        return self

    @property
    def name(self) -> str:  # type: ignore[override]
        self._check_fitted()
        return f"stats-{self.fit_hash_[:16]}-d{len(STATISTICS)}"

    def _check_fitted(self) -> None:
        if not hasattr(self, "fit_hash_"):
            from preroll.errors import NotFittedError

            raise NotFittedError("TextStatsEncoder is not fitted: call fit(texts) with the history's prompts first")

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        self._check_fitted()
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, len(STATISTICS)), dtype=np.float32)
        raw = np.array([prompt_statistics(t) for t in texts])
        z = np.clip((raw - self.mean_) / self.scale_, -CLIP, CLIP)  # bounded: a far prompt is "far", not "infinitely far"
        return (z / np.sqrt(len(STATISTICS))).astype(np.float32)

    def __repr__(self) -> str:
        return "TextStatsEncoder()"
