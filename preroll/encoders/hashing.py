"""A cheap lexical view for very large datasets: hashed word n-grams, IDF from a sample, a fixed random projection.

Why another lexical encoder: :class:`~preroll.encoders.lexical.LexicalEncoder`
fits a TF-IDF vocabulary of character n-grams and an SVD on *all* its fit
texts. That is the better view for a history of thousands of prompts, but on
the million-prompt datasets GRPO trainers read (Big-Math, DeepMath) its
character n-grams alone take ~10 minutes on one core and its sparse matrix
does not fit in memory, and MiniLM takes hours on CPU. This view:

- tokenises words (Latin runs, numbers, and every CJK character on its own:
  about a fifth of DAPO-Math is Chinese, which has no spaces) into unigrams and
  bigrams, hashed into ``2**20`` buckets (no vocabulary to fit or store);
- weights them by sublinear tf times an IDF counted on a deterministic sample
  of at most ``idf_sample`` fit texts (common words say little about a problem);
- projects them with a seeded sparse random projection to ``dim`` dimensions
  and L2-normalises (cosines are preserved in expectation; no SVD to fit).

``encode`` works chunk by chunk, so memory stays bounded by ``chunk`` texts'
sparse rows whatever the input size. The vectors depend on the IDF sample, so
``name`` carries its hash (two fits never share a cache slot), and a refit on
the same texts gives the same vectors and name: a dataset's vectors can live in
the on-disk cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from preroll.encoders.base import Encoder
from preroll.encoders.sentence import check_texts

#: Latin/number word runs of 2+ characters, numbers, or a single CJK character.
TOKEN_PATTERN = r"(?u)[^\W\d_]{2,}|\d+|[\u3400-\u9fff]"
N_FEATURES = 2 ** 20


class HashingEncoder(Encoder):
    """Hashed word 1-2 grams -> sublinear tf x sampled IDF -> sparse random projection -> L2 normalisation.

    Parameters
    ----------
    dim:
        Output dimension.
    idf_sample:
        Fit texts (evenly spaced, so deterministic) whose document frequencies give the IDF.
    chunk:
        Texts transformed at a time (bounds memory).
    random_state:
        Seed of the projection.
    """

    def __init__(self, dim: int = 128, *, idf_sample: int = 50_000, chunk: int = 8192, random_state: int = 0) -> None:
        self.dim = dim
        self.idf_sample = idf_sample
        self.chunk = chunk
        self.random_state = random_state

    def _vectorizer(self):
        from sklearn.feature_extraction.text import HashingVectorizer

        return HashingVectorizer(analyzer="word", token_pattern=TOKEN_PATTERN, ngram_range=(1, 2),
                                 n_features=N_FEATURES, alternate_sign=False, norm=None, lowercase=True)

    def _projection(self):
        """A sparse (N_FEATURES x dim) matrix of +-1/sqrt(density * dim), density 1/16, from the seed alone."""
        import scipy.sparse as sp

        rng = np.random.default_rng(self.random_state)
        density = 1.0 / 16
        nnz = int(N_FEATURES * self.dim * density)
        rows = rng.integers(0, N_FEATURES, nnz)
        cols = rng.integers(0, self.dim, nnz)
        vals = rng.choice(np.array([-1.0, 1.0], np.float32), nnz) / np.float32(np.sqrt(density * self.dim))
        return sp.csr_matrix((vals, (rows, cols)), shape=(N_FEATURES, self.dim), dtype=np.float32)

    def fit(self, texts: Sequence[str]) -> HashingEncoder:
        texts = check_texts(texts)
        if not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"dim must be a positive integer (got {self.dim!r})")
        if not texts:
            raise ValueError("HashingEncoder.fit needs at least 1 text")
        step = max(1, len(texts) // max(1, self.idf_sample))
        sample = texts[::step][:self.idf_sample]
        df = np.zeros(N_FEATURES)
        vec = self._vectorizer()
        for start in range(0, len(sample), self.chunk):
            X = vec.transform(sample[start:start + self.chunk])
            df += np.bincount(X.indices, minlength=N_FEATURES)
        self.idf_ = (np.log((1.0 + len(sample)) / (1.0 + df)) + 1.0).astype(np.float32)
        self.projection_ = self._projection()
        digest = hashlib.sha256(f"{self.dim}|{self.idf_sample}|{self.random_state}|{len(sample)}".encode())
        for text in sample:
            digest.update(hashlib.sha256(text.encode("utf-8")).digest())
        self.fit_hash_ = digest.hexdigest()
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "fit_hash_"):
            from preroll.errors import NotFittedError

            raise NotFittedError("HashingEncoder is not fitted: call fit(texts) first (its IDF comes from them)")

    @property
    def name(self) -> str:  # type: ignore[override]
        """``hashing-<hash of the IDF sample and settings>-d<dim>``; only defined after ``fit``."""
        self._check_fitted()
        return f"hashing-{self.fit_hash_[:16]}-d{self.dim}"

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        self._check_fitted()
        texts = check_texts(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        vec = self._vectorizer()
        for start in range(0, len(texts), self.chunk):
            X = vec.transform(texts[start:start + self.chunk]).astype(np.float32)
            X.data = np.log1p(X.data) * self.idf_[X.indices]
            Y = np.asarray((X @ self.projection_).todense(), np.float32)
            norm = np.linalg.norm(Y, axis=1, keepdims=True)
            out[start:start + len(Y)] = Y / np.where(norm > 0, norm, 1.0)
        return out

    def __repr__(self) -> str:
        return f"HashingEncoder(dim={self.dim}, idf_sample={self.idf_sample})"
