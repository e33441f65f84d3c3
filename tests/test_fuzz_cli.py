"""Fuzzing every CLI entry point (a small sample; ``benchmarks/fuzz_cli.py`` runs >= 10,000 cases per class).

Arguments, files (JSONL, CSV, Parquet), scoring manifests and saved-model folders: each generated input
works or ends in preroll's own one-line error, never a traceback; a manifest never makes ``--force``
delete outside its folder. The generators and the rule are in ``fuzz_cases.py``.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_cases as fc

SAMPLE = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return fc.Fixtures(tmp_path_factory.mktemp("fuzz"))


def _check(results):
    for outcome, detail in results:
        assert outcome != fc.TRACEBACK, detail


@SAMPLE
@given(data=st.data())
def test_cli_arguments(fx, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _check([fc.run_cli(data.draw(fc.argv(fx)))])


@SAMPLE
@given(case=fc.files)
def test_files(case):
    suffix, payload = case
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / f"input{suffix}"
        path.write_bytes(payload)
        _check(fc.exercise_file(path))


@SAMPLE
@given(manifest=fc.score_manifests(), flag=st.sampled_from(["force", "resume", "neither"]))
def test_scoring_manifests(fx, manifest, flag):
    with tempfile.TemporaryDirectory() as tmp:
        _check(fc.score_manifest_case(Path(tmp), fx, manifest, flag))


@settings(SAMPLE, max_examples=25)
@given(mutation=fc.model_mutations)
def test_model_folders(fx, mutation):
    with tempfile.TemporaryDirectory() as tmp:
        _check(fc.model_folder_case(Path(tmp), fx, mutation))
