"""A model-free baseline encoder: TF-IDF word and character n-grams, reduced by SVD.

It needs no weights and runs anywhere in milliseconds, so it is the fallback
when no neural model can be installed and a yardstick for what the neural
encoder adds. Character n-grams matter here: about a fifth of DAPO-Math
prompts are Chinese, which has no spaces for a word tokenizer to split on.

Unlike a neural encoder it must ``fit`` on texts first, and its vectors depend
on that fit; so ``name`` carries a hash of the fit texts and settings, and a
cache can never mix vectors of two fits.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from preroll.errors import InputError

from preroll.encoders.base import Encoder
from preroll.encoders.sentence import check_texts


class LexicalEncoder(Encoder):
    """TF-IDF (word 1-2 grams + char 2-4 grams) -> TruncatedSVD projection -> L2 normalisation.

    Parameters
    ----------
    n_components:
        Output dimension; capped at what the fit texts allow (rank of the TF-IDF matrix).
    max_features:
        Vocabulary size per n-gram family, keeping the most frequent.
    random_state:
        Seed of the randomised SVD, so a refit on the same texts gives the same vectors.
    """

    def __init__(self, n_components: int = 256, *, max_features: int = 50_000, random_state: int = 0) -> None:
        self.n_components = n_components
        self.max_features = max_features
        self.random_state = random_state

    def _fit_key(self, texts: list[str]) -> str:
        digest = hashlib.sha256(
            f"{self.n_components}|{self.max_features}|{self.random_state}|{len(texts)}".encode("utf-8"))
        for text in texts:
            digest.update(hashlib.sha256(text.encode("utf-8")).digest())
        return digest.hexdigest()

    def fit(self, texts: Sequence[str]) -> "LexicalEncoder":
        texts = check_texts(texts)
        if len(texts) < 2:
            raise InputError(f"the lexical encoder needs at least 2 prompts to fit on (got {len(texts)}); add "
                             "history rows, or choose an encoder without a fitted view (e.g. minilm)", field="encoder")
        if not isinstance(self.n_components, int) or self.n_components < 1:
            raise ValueError(f"n_components must be a positive integer (got {self.n_components!r})")
        # sklearn's text and decomposition modules take ~1.5 s to import: only when fitting.
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import FeatureUnion

        tfidf = FeatureUnion([
            ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True,
                                     max_features=self.max_features)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True,
                                     max_features=self.max_features)),
        ])
        features = tfidf.fit_transform(texts)
        # TruncatedSVD needs n_components < n_features, and more than the rows carry is noise.
        k = max(1, min(self.n_components, features.shape[1] - 1, len(texts) - 1))
        svd = TruncatedSVD(n_components=k, random_state=self.random_state).fit(features)
        self.tfidf_ = tfidf
        # TruncatedSVD.transform multiplies by ``components_.T``, a transposed view that scipy
        # copies whole (vocabulary x k) on every call: ~60 ms for one prompt, the bulk of a
        # routing decision. A C-ordered float32 copy made once keeps a call sparse-cheap.
        self.projection_ = np.ascontiguousarray(svd.components_.T, dtype=np.float32)
        self.dim_ = k
        self.fit_hash_ = self._fit_key(texts)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "fit_hash_"):
            from preroll.errors import NotFittedError

            raise NotFittedError(
                "LexicalEncoder is not fitted: call fit(texts) with the prompts of the history first "
                "(its vocabulary comes from them)")

    @property
    def name(self) -> str:  # type: ignore[override]
        """``lexical-<hash of fit texts and settings>-d<dim>``; only defined after ``fit``."""
        self._check_fitted()
        return f"lexical-{self.fit_hash_[:16]}-d{self.dim_}"

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        self._check_fitted()
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim_), dtype=np.float32)
        from scipy import sparse
        from sklearn import config_context
        from sklearn.preprocessing import normalize

        # ``tfidf_.transform(texts)`` without FeatureUnion's per-call joblib dispatch, and with the
        # vectorizers' checks of their fixed parameters and of finite counts skipped (scikit-learn's switches;
        # TF-IDF weights of text are finite, the parameters were checked at fit): a third of a one-prompt
        # encoding. The blocks are stacked as FeatureUnion stacks them, so the vectors are the same to the
        # bit. They must be: a router's fitted belief spreads react to the last bit of a feature
        # (tests/test_route_shared_search.py).
        with config_context(assume_finite=True, skip_parameter_validation=True):
            blocks = [vectorizer.transform(texts) for _, vectorizer in self.tfidf_.transformer_list]
            vectors = np.asarray(sparse.hstack(blocks).tocsr().astype(np.float32) @ self.projection_)
            return np.ascontiguousarray(normalize(vectors, norm="l2"), dtype=np.float32)

    def __repr__(self) -> str:
        return f"LexicalEncoder(n_components={self.n_components}, max_features={self.max_features})"
