"""The data sets ship inside the package: found with nothing beside the checkout, byte for byte with licences."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import preroll
from preroll.data import paths

PACKAGE = Path(preroll.__file__).resolve().parent
SETS = {"dapo-math-v0": ["context.jsonl", "queries.jsonl", "prompts.json"],
        "routellm-mmlu": ["contaminated_prompts.jsonl", "responses/mmlu_anatomy.csv"],
        "llmrouter-9": ["train.jsonl", "models.json"]}


def test_every_set_is_inside_the_package_with_its_licence(monkeypatch):
    monkeypatch.delenv("PREROLL_DATA", raising=False)
    assert paths.data_root() == PACKAGE / "datasets"
    for name, files in SETS.items():
        folder = paths.data_root() / name
        assert (folder / "LICENSE").is_file(), name
        assert all((folder / f).is_file() for f in files), name
    assert paths.dapo_dir().name == "dapo-math-v0" and paths.mmlu_dir().name == "routellm-mmlu"
    assert paths.llmrouter_dir().name == "llmrouter-9"
    assert "MIT License" in (paths.llmrouter_dir() / "LICENSE").read_text()
    assert "Apache License" in (paths.dapo_dir() / "LICENSE").read_text()


def test_preroll_data_only_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("PREROLL_DATA", str(tmp_path))
    assert paths.dapo_dir() == tmp_path / "dapo-math-v0"
    monkeypatch.setenv("PREROLL_DATA", "")
    assert paths.dapo_dir() == PACKAGE / "datasets" / "dapo-math-v0"


def test_a_copy_of_the_package_alone_finds_and_reads_its_data(tmp_path):
    """A bare copy (no ``shared/`` anywhere above it, another working directory, no PREROLL_DATA)
    loads all three sets: what a clone or a non-editable install sees."""
    root = tmp_path / "clone"
    shutil.copytree(PACKAGE, root / "preroll", ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PREROLL_DATA"}
    env["PYTHONPATH"] = str(root)
    code = ("import json, preroll\n"
            "from preroll.data.paths import dapo_dir\n"
            "from preroll.data import load_v0\n"
            "from preroll.bench.mmlu import load_mmlu\n"
            "from preroll.bench.llmrouter import load_llmrouter\n"
            "print(json.dumps([preroll.__file__, str(dapo_dir()), len(load_v0(dapo_dir() / 'context.jsonl')),\n"
            "                  len(load_mmlu(subjects=['anatomy']).prompts), len(load_llmrouter())]))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    where, dapo, n_context, n_anatomy, n_nine = json.loads(done.stdout.splitlines()[-1])
    assert Path(where).is_relative_to(root) and Path(dapo) == root / "preroll" / "datasets" / "dapo-math-v0"
    assert (n_context, n_nine) == (3072, 5608) and n_anatomy > 100


def test_the_bundled_files_are_the_releases_unmodified():
    """Bytes as released (git must not convert line endings: ``.gitattributes``): every file matches
    the sha256 recorded from the release in ``SHA256SUMS``, and every file is listed there."""
    import hashlib

    listed = {}
    for line in (paths.BUNDLED_DATA / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split(maxsplit=1)
        listed[rel] = digest
    present = {p.relative_to(paths.BUNDLED_DATA).as_posix() for p in paths.BUNDLED_DATA.rglob("*")
               if p.is_file() and p.name not in {"SHA256SUMS", "README.md"}}
    assert present == set(listed)
    for rel, digest in listed.items():
        assert hashlib.sha256((paths.BUNDLED_DATA / rel).read_bytes()).hexdigest() == digest, rel
