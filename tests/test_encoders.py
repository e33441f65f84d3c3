"""Encoders: weight integrity, agreement of load paths, lexical fit, and the embedding cache."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3

import numpy as np
import pytest
from preroll.errors import NotFittedError

from preroll.data.paths import dapo_dir
from preroll.encoders import (CachedEncoder, EmbeddingCacheError, Encoder, EncoderLoadError, LexicalEncoder,
                              MemoEncoder, MiniLMEncoder, SentenceEncoder, TextStatsEncoder, WeightsIntegrityError,
                              default_cache_dir, fresh_views, get_encoder)
from preroll.encoders.cache import CACHE_FILENAME
from preroll.bench.evaluation import cold_prompt_auc
from preroll.encoders.fingerprint import _sha256_of, file_sha256
from preroll.encoders.minilm import BUNDLED_MINILM_SHA256, WEIGHTS_FILE, bundled_minilm_dir


@pytest.fixture(scope="module")
def prompts(dapo) -> list[str]:
    """A small real sample: some English, some Chinese DAPO-Math prompts."""
    texts = list(json.loads((dapo_dir() / "prompts.json").read_text(encoding="utf-8")).values())
    chinese = [t for t in texts if any("\u4e00" <= c <= "\u9fff" for c in t)][:3]
    english = [t for t in texts if t not in chinese][:9]
    return english + chinese


@pytest.fixture(scope="module")
def minilm() -> MiniLMEncoder:
    """MiniLM at a short length, fp32, loaded once for the module."""
    encoder = MiniLMEncoder(max_length=64, quantize=False)
    encoder.encode(["warm up"])
    return encoder


# -- weights integrity -----------------------------------------------------------------

def _tampered_copy(tmp_path, weights: bytes | None):
    """The bundled model directory without its 90 MB weights, plus ``weights`` as fake weights."""
    src = bundled_minilm_dir()
    dst = tmp_path / "model"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(WEIGHTS_FILE))
    if weights is not None:
        (dst / WEIGHTS_FILE).write_bytes(weights)
    return dst


def test_tampered_weights_are_refused(tmp_path):
    directory = _tampered_copy(tmp_path, b"not the released weights")
    encoder = MiniLMEncoder(model_dir=directory, max_length=64, quantize=False)
    with pytest.raises(WeightsIntegrityError, match="sha256") as err:
        encoder.encode(["What is 2 + 2?"])
    assert str(directory / WEIGHTS_FILE) in str(err.value)
    assert "reinstall" in str(err.value)
    with pytest.raises(WeightsIntegrityError):
        _ = encoder.name  # no cache namespace for unverified weights either


def test_missing_weights_are_refused(tmp_path):
    directory = _tampered_copy(tmp_path, None)
    with pytest.raises(WeightsIntegrityError, match="missing"):
        MiniLMEncoder(model_dir=directory).encode(["x"])


def test_fake_weights_pass_only_with_their_own_hash(tmp_path):
    """The check compares against the expected hash, not against 'whatever the bundle is'."""
    fake = b"fake weights"
    directory = _tampered_copy(tmp_path, fake)
    encoder = MiniLMEncoder(model_dir=directory, expected_sha256=hashlib.sha256(fake).hexdigest())
    assert encoder.name.startswith(f"minilm-{hashlib.sha256(fake).hexdigest()[:12]}-")


def test_weights_hash_is_computed_once_and_redone_after_a_rewrite(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 10)
    misses = _sha256_of.cache_info().misses
    assert file_sha256(path) == hashlib.sha256(b"a" * 10).hexdigest()
    assert file_sha256(path) == hashlib.sha256(b"a" * 10).hexdigest()
    assert _sha256_of.cache_info().misses == misses + 1
    path.write_bytes(b"b" * 11)
    assert file_sha256(path) == hashlib.sha256(b"b" * 11).hexdigest()


def test_bundled_weights_match_the_release_hash():
    assert file_sha256(bundled_minilm_dir() / WEIGHTS_FILE) == BUNDLED_MINILM_SHA256


# -- neural encoders -------------------------------------------------------------------

def test_minilm_vectors_shape_dtype_and_unit_norm(minilm, prompts):
    vectors = minilm.encode(prompts)
    assert vectors.shape == (len(prompts), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.linalg.matrix_rank(vectors) == len(prompts)  # distinct prompts, distinct vectors
    assert minilm.encode([]).shape == (0, 384)


def test_minilm_name_pins_weights_and_settings(minilm):
    assert minilm.name == f"minilm-{BUNDLED_MINILM_SHA256[:12]}-len64"
    assert MiniLMEncoder(max_length=128, quantize=True).name == f"minilm-{BUNDLED_MINILM_SHA256[:12]}-len128-q8"


def test_model_loaded_by_path_agrees_with_minilm(minilm, prompts):
    by_path = get_encoder(str(bundled_minilm_dir()), cache_dir=False, max_length=64, quantize=False)
    assert isinstance(by_path, SentenceEncoder) and not isinstance(by_path, MiniLMEncoder)
    np.testing.assert_allclose(by_path.encode(prompts), minilm.encode(prompts), atol=1e-5)
    assert by_path.name != minilm.name and by_path.name.endswith("-len64")


def test_single_batch_fast_path_matches_sentence_transformers_encode(prompts):
    enc = MiniLMEncoder(max_length=64, quantize=False, batch_size=4)
    through_encode = enc.encode(prompts)  # 12 prompts > batch_size: SentenceTransformer.encode
    one_batch_at_a_time = np.vstack([enc.encode(prompts[i:i + 4]) for i in range(0, len(prompts), 4)])
    np.testing.assert_allclose(one_batch_at_a_time, through_encode, atol=1e-5)
    np.testing.assert_allclose(enc.encode(prompts[:1]), through_encode[:1], atol=1e-5)


def test_max_length_truncates_long_prompts_only(minilm, prompts):
    longest = max(prompts, key=len)
    short = "What is 2 + 2?"
    tighter = MiniLMEncoder(max_length=16, quantize=False)
    np.testing.assert_allclose(tighter.encode([short]), minilm.encode([short]), atol=1e-5)
    assert not np.allclose(tighter.encode([longest]), minilm.encode([longest]), atol=1e-3)


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(EncoderLoadError, match="does not exist"):
        get_encoder(str(tmp_path / "no-such-model"), cache_dir=False).encode(["x"])


def test_unknown_hub_model_says_what_to_do(monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(EncoderLoadError) as err:
        get_encoder("preroll-tests/no-such-model", cache_dir=False).encode(["x"])
    assert "huggingface-cli download preroll-tests/no-such-model" in str(err.value)
    assert "local model directory" in str(err.value)


def test_constructing_an_encoder_does_no_work(tmp_path):
    MiniLMEncoder(model_dir=tmp_path / "absent")  # nothing checked until used
    with pytest.raises(EncoderLoadError):
        MiniLMEncoder(model_dir=tmp_path / "absent").encode(["x"])


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="max_length"):
        MiniLMEncoder(max_length=0).encode(["x"])
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        LexicalEncoder().fit(["a b", 3])
    with pytest.raises(ValueError, match="spec"):
        get_encoder("  ")
    with pytest.raises(ValueError, match="max_length"):
        get_encoder("lexical", max_length=64)
    with pytest.raises(ValueError, match="prompt_name"):
        get_encoder("minilm", prompt_name="query")


# -- lexical ---------------------------------------------------------------------------

def test_lexical_refuses_to_encode_before_fit(prompts):
    encoder = LexicalEncoder()
    with pytest.raises(NotFittedError, match="fit"):
        encoder.encode(prompts)
    with pytest.raises(NotFittedError):
        _ = encoder.name


def test_lexical_fit_encode(prompts):
    encoder = LexicalEncoder(n_components=8).fit(prompts)
    vectors = encoder.encode(prompts)
    assert vectors.shape == (len(prompts), 8) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Nearest neighbour of each fit prompt is itself.
    assert (np.argmax(vectors @ vectors.T, axis=1) == np.arange(len(prompts))).all()


def test_lexical_projection_matches_sklearn_svd_transform(prompts):
    """The precomputed projection gives TruncatedSVD.transform's vectors, L2-normalised, one prompt at a time too."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.preprocessing import normalize

    encoder = LexicalEncoder(n_components=8, random_state=3).fit(prompts)
    features = encoder.tfidf_.transform(prompts)
    reference = normalize(TruncatedSVD(n_components=8, random_state=3).fit(features).transform(features))
    np.testing.assert_allclose(encoder.encode(prompts), reference, atol=1e-5)
    np.testing.assert_allclose(encoder.encode(prompts[:1])[0], reference[0], atol=1e-5)


def test_fresh_views_share_neural_parts_and_renew_fitted_ones(prompts, tmp_path):
    from preroll.errors import NotFittedError

    fitted = get_encoder("minilm+lexical+stats", cache_dir=tmp_path).fit(prompts)
    fresh = fresh_views(fitted)
    assert fresh.encoders[0] is fitted.encoders[0]  # the transformer is not built again
    for new, old in zip(fresh.encoders[1:], fitted.encoders[1:]):
        assert isinstance(new, MemoEncoder) and type(new.inner) is type(old.inner) and new.inner is not old.inner
    assert fresh.encoders[1].inner.n_components == fitted.encoders[1].inner.n_components
    with pytest.raises(NotFittedError):
        fresh.encoders[1].encode(prompts[:1])
    assert fitted.encoders[1].encode(prompts[:1]).shape[0] == 1  # the live views are untouched
    standalone = LexicalEncoder(n_components=3, random_state=7).fit(prompts)
    copy = fresh_views(standalone)
    assert (copy.n_components, copy.random_state) == (3, 7) and not hasattr(copy, "fit_hash_")


class _VocabularyEncoder(Encoder):
    """A user's own stateful encoder: one column per word seen in ``fit``."""

    name = "user-vocabulary"

    def __init__(self) -> None:
        self.vocabulary_: list[str] = []

    def fit(self, texts):
        self.vocabulary_ = sorted({w for t in texts for w in t.lower().split()})
        return self

    def encode(self, texts, *, show_progress=False):
        rows = [[float(w in t.lower().split()) for w in self.vocabulary_] + [1.0] for t in texts]
        return np.asarray(rows, np.float32)


def test_fitting_a_model_never_refits_the_callers_encoder(prompts, tmp_path):
    from preroll.data import Outcome, OutcomeTable
    from preroll.model.value_model import ValueModel

    mine = _VocabularyEncoder().fit(["alpha beta"])
    records = [Outcome(prompt=p, successes=i % 2, attempts=1) for i, p in enumerate(prompts)]
    model = ValueModel(encoder=mine, head="logistic").fit(OutcomeTable.from_records(records))
    assert mine.vocabulary_ == ["alpha", "beta"]            # the caller's instance is as it was
    assert len(model.encoder_.vocabulary_) > 2              # the model fitted its own copy
    cached = CachedEncoder(LexicalEncoder(n_components=3), tmp_path)
    renewed = fresh_views(cached.fit(prompts))
    assert isinstance(renewed, CachedEncoder) and renewed.encoder is not cached.encoder
    assert cached.encode(prompts[:1]).shape == (1, 3)        # the original keeps its fitted view
    stateless = CachedEncoder(_LengthEncoder(), tmp_path)
    assert fresh_views(stateless) is stateless                # nothing fitted: shared, weights not reloaded


class _LengthEncoder(Encoder):
    """Stateless, like a transformer: no ``fit`` of its own."""

    name = "user-length"

    def encode(self, texts, *, show_progress=False):
        return np.asarray([[len(t), 1.0] for t in texts], np.float32)


def test_lexical_name_follows_the_fit(prompts):
    a = LexicalEncoder(n_components=4).fit(prompts)
    b = LexicalEncoder(n_components=4).fit(prompts)
    c = LexicalEncoder(n_components=4).fit(prompts[:-1])
    assert a.name == b.name != c.name
    np.testing.assert_array_equal(a.encode(prompts), b.encode(prompts))


def test_stats_encoder_standardises_what_it_measures():
    from preroll.encoders import TextStatsEncoder
    from preroll.encoders.stats import STATISTICS

    texts = ["Short.", "A much longer prompt with $x^2$ and 3 numbers 4 5 here.", "求解方程 x + 1 = 2 的所有实数解。",
             "Find m/n. Please provide the value of m + n."]
    with pytest.raises(Exception, match="not fitted"):
        TextStatsEncoder().encode(texts)
    enc = TextStatsEncoder().fit(texts)
    X = enc.encode(texts)
    assert X.shape == (4, len(STATISTICS)) and X.dtype == np.float32
    np.testing.assert_allclose(X.mean(axis=0), 0.0, atol=1e-6)  # standardised on the fit texts
    col = {name: i for i, name in enumerate(STATISTICS)}
    assert X[1, col["log_chars"]] > X[0, col["log_chars"]]
    assert X[2, col["chinese"]] == X[:, col["chinese"]].max() and X[0, col["chinese"]] < X[2, col["chinese"]]
    assert X[3, col["answer_rewrite"]] > X[0, col["answer_rewrite"]]
    assert enc.name.startswith("stats-") and enc.name != TextStatsEncoder().fit(texts[:2]).name


def test_concat_keeps_raw_statistics_unnormalised(prompts):
    from preroll.encoders import ConcatEncoder, TextStatsEncoder

    stats = TextStatsEncoder().fit(prompts)
    enc = get_encoder("lexical+stats", cache_dir=False).fit(prompts)
    assert isinstance(enc, ConcatEncoder) and enc.name.startswith("lexical-") and "+stats-" in enc.name
    X = enc.encode(prompts[:5])
    lex_dim = X.shape[1] - stats.encode(prompts[:1]).shape[1]
    np.testing.assert_allclose(np.linalg.norm(X[:, :lex_dim], axis=1), 1 / np.sqrt(2), rtol=1e-5)
    np.testing.assert_allclose(X[:, lex_dim:], stats.encode(prompts[:5]) / np.sqrt(2), rtol=1e-5)
    with pytest.raises(ValueError, match="no option max_length"):
        get_encoder("stats", max_length=64)
    # Model options go to the neural parts only, so a mixed spec accepts them.
    assert isinstance(get_encoder("lexical+minilm", cache_dir=False, max_length=64), ConcatEncoder)


def test_memo_reuses_vectors_within_a_fit_and_never_across_fits(prompts):
    class Counting(LexicalEncoder):
        calls = 0

        def encode(self, texts, *, show_progress=False):
            Counting.calls += len(texts)
            return super().encode(texts)

    memo = MemoEncoder(Counting(n_components=4), max_items=5).fit(prompts)
    first = memo.encode(prompts[:3])
    again = memo.encode(prompts[:3])
    np.testing.assert_array_equal(first, again)
    assert Counting.calls == 3  # the second call was served from memory
    memo.encode(prompts[3:9])  # pushes the oldest out (max_items=5)
    memo.encode(prompts[:1])
    assert Counting.calls == 3 + 6 + 1
    memo.fit(prompts[:6])  # a new fit is a new namespace
    refit = memo.encode(prompts[:3])
    assert Counting.calls == 10 + 3 and refit.shape[1] <= 4
    assert memo.unit_rows and not MemoEncoder(TextStatsEncoder()).unit_rows


def test_get_encoder_specs(tmp_path):
    memo = get_encoder("lexical", cache_dir=tmp_path)  # memoised in memory, never on disk
    assert isinstance(memo, MemoEncoder) and isinstance(memo.inner, LexicalEncoder)
    assert isinstance(get_encoder("lexical", cache_dir=False), LexicalEncoder)
    cached = get_encoder("minilm", cache_dir=tmp_path)
    assert isinstance(cached, CachedEncoder) and isinstance(cached.encoder, MiniLMEncoder)
    assert cached.path == tmp_path / CACHE_FILENAME
    assert isinstance(get_encoder("minilm", cache_dir=False), MiniLMEncoder)
    fake = CountingEncoder()
    assert get_encoder(fake) is fake


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PREROLL_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert get_encoder("minilm").path == tmp_path / "c" / CACHE_FILENAME
    monkeypatch.delenv("PREROLL_CACHE")
    assert default_cache_dir().parts[-2:] == (".cache", "preroll")


# -- cache -----------------------------------------------------------------------------

class CountingEncoder(Encoder):
    """Deterministic fake: a vector derived from the text's hash; counts what it is asked to encode."""

    def __init__(self, name: str = "fake-v1", dim: int = 5, fail: bool = False, nan: bool = False):
        self.name = name
        self.dim = dim
        self.fail = fail
        self.nan = nan
        self.calls: list[list[str]] = []

    def encode(self, texts, *, show_progress=False):
        self.calls.append(list(texts))
        if self.fail:
            raise RuntimeError("encoder crashed")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256((self.name + text).encode()).digest()[:4], "little")
            out[i] = np.random.default_rng(seed).normal(size=self.dim)
        if self.nan and len(texts):
            out[0, 0] = np.nan
        return out

    @property
    def encoded(self) -> list[str]:
        return [t for call in self.calls for t in call]


def test_cache_round_trip_and_no_second_call(tmp_path):
    fake = CountingEncoder()
    cached = CachedEncoder(fake, tmp_path)
    texts = ["a", "b", "c", "a"]
    first = cached.encode(texts)
    np.testing.assert_array_equal(first, fake.encode(texts))  # same vectors as uncached (this call counted)
    assert sorted(fake.calls[0]) == ["a", "b", "c"]  # duplicates encoded once
    n_calls = len(fake.calls)
    second = cached.encode(texts)
    assert len(fake.calls) == n_calls
    np.testing.assert_array_equal(first, second)
    assert second.dtype == np.float32 and second.shape == (4, 5)


def test_cache_encodes_only_missing_texts(tmp_path):
    fake = CountingEncoder()
    cached = CachedEncoder(fake, tmp_path)
    cached.encode(["a", "b"])
    out = cached.encode(["b", "c", "a"])
    assert fake.calls == [["a", "b"], ["c"]]
    np.testing.assert_array_equal(out, CountingEncoder().encode(["b", "c", "a"]))


def test_cache_survives_reopening(tmp_path):
    cached = CachedEncoder(CountingEncoder(), tmp_path)
    first = cached.encode(["x", "y"])
    cached.close()
    fresh = CountingEncoder()
    reopened = CachedEncoder(fresh, tmp_path, memory_items=0)  # no memory layer: must come from disk
    np.testing.assert_array_equal(reopened.encode(["y", "x"]), first[::-1])
    assert fresh.calls == []
    assert reopened.cached_count("fake-v1") == 2


def test_distinct_encoder_names_do_not_collide(tmp_path):
    a, b = CountingEncoder("model-a"), CountingEncoder("model-b")
    va = CachedEncoder(a, tmp_path).encode(["same text"])
    vb = CachedEncoder(b, tmp_path).encode(["same text"])
    assert len(a.calls) == len(b.calls) == 1
    assert not np.array_equal(va, vb)
    np.testing.assert_array_equal(CachedEncoder(CountingEncoder("model-a"), tmp_path).encode(["same text"]), va)


def test_failed_encode_stores_nothing_and_keeps_old_entries(tmp_path):
    CachedEncoder(CountingEncoder(), tmp_path).encode(["kept"])
    with pytest.raises(RuntimeError, match="crashed"):
        CachedEncoder(CountingEncoder(fail=True), tmp_path).encode(["kept", "new"])
    with pytest.raises(ValueError, match="NaN"):
        CachedEncoder(CountingEncoder(nan=True), tmp_path).encode(["new"])
    check = CachedEncoder(CountingEncoder(), tmp_path)
    assert check.cached_count() == 1
    np.testing.assert_array_equal(check.encode(["kept"]), CountingEncoder().encode(["kept"]))


def test_unreadable_cache_file_is_reported_and_left_alone(tmp_path):
    path = tmp_path / CACHE_FILENAME
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(EmbeddingCacheError, match=str(path)):
        CachedEncoder(CountingEncoder(), tmp_path).encode(["x"])
    assert path.read_bytes() == b"this is not a database" * 100


def test_cache_is_an_sqlite_table_keyed_by_name_and_text_hash(tmp_path):
    CachedEncoder(CountingEncoder(), tmp_path).encode(["hello"])
    with sqlite3.connect(tmp_path / CACHE_FILENAME) as conn:
        rows = conn.execute("SELECT encoder, text_sha256, dim FROM vectors").fetchall()
    assert rows == [("fake-v1", hashlib.sha256(b"hello").hexdigest(), 5)]


def test_cache_checkpoints_in_the_background_and_loses_nothing(tmp_path, monkeypatch):
    """The request path's connection never checkpoints (that commit took 15-85 ms once in ~200 writes);
    a background thread copies the log into the database file after CHECKPOINT_EVERY vectors, and every
    vector committed is there after a reopen."""
    import time

    from preroll.encoders import cache as cache_module

    monkeypatch.setattr(cache_module, "CHECKPOINT_EVERY", 4)
    cached = CachedEncoder(CountingEncoder(), tmp_path)
    texts = [f"prompt {i}" for i in range(6)]
    first = cached.encode(texts[:3])
    conn, _, _ = cached._state()
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    assert cached._checkpointer is None  # fewer than CHECKPOINT_EVERY vectors: no thread started
    db_size = cached.path.stat().st_size
    first = np.vstack([first, cached.encode(texts[3:5])])  # 5 written: a checkpoint is due
    deadline = time.monotonic() + 30
    while cached._checkpointer.runs < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cached._checkpointer.runs >= 1
    assert cached.path.stat().st_size > db_size  # the vectors reached the database file, not only the log
    first = np.vstack([first, cached.encode(texts[5:])])
    cached.close()
    fresh = CountingEncoder()
    reopened = CachedEncoder(fresh, tmp_path, memory_items=0)
    np.testing.assert_array_equal(reopened.encode(texts), first)
    assert fresh.calls == [] and reopened.cached_count("fake-v1") == 6


def test_cache_of_empty_input(tmp_path):
    assert CachedEncoder(CountingEncoder(), tmp_path).encode([]).shape == (0, 5)


# -- evaluation probe ------------------------------------------------------------------

def test_cold_prompt_auc_sees_signal_and_no_signal():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=200)
    x_signal = rng.normal(size=(200, 6)) + 2.0 * y[:, None]
    assert cold_prompt_auc(x_signal, y) > 0.95
    assert abs(cold_prompt_auc(rng.normal(size=(200, 6)), y) - 0.5) < 0.15


# -- benchmark command -----------------------------------------------------------------

def test_bench_throughput_command_runs_on_a_small_sample():
    from typer.testing import CliRunner

    from preroll.cli.main import app

    result = CliRunner().invoke(app, ["bench", "throughput", "--encoder", "lexical", "--n-prompts", "16"])
    assert result.exit_code == 0, result.output
    assert "cold (empty cache)" in result.output and "cached (memory)" in result.output


def test_bench_throughput_refuses_bad_lengths():
    from typer.testing import CliRunner

    from preroll.cli.main import app

    result = CliRunner().invoke(app, ["bench", "throughput", "--sweep", "--lengths", "128,x"])
    assert result.exit_code != 0
    assert "comma-separated integers" in result.output
