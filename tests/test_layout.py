"""The installed package stands alone: nothing under ``preroll/`` imports the folders beside it.

``experiments/`` (reproductions of published numbers), ``examples/``, ``benchmarks/`` and ``tests/`` live in the
repository and are not installed (pyproject's ``packages.find`` takes ``preroll*`` only); an import of one of
them from the package would work in a checkout and fail after ``pip install``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BESIDE = ("experiments", "examples", "benchmarks", "tests")


def imported_roots(path: Path) -> set[str]:
    """The top-level names a module imports (absolute imports, at any depth of the file)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_scan_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from experiments.trl_task import pretrain\n    import examples.x\n")
    assert imported_roots(module) == {"os", "experiments", "examples"}


def test_no_package_module_imports_the_folders_beside_it():
    offenders = {str(p.relative_to(ROOT)): sorted(imported_roots(p) & set(BESIDE))
                 for p in sorted((ROOT / "preroll").rglob("*.py"))}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_the_package_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["preroll*"]
    assert all((ROOT / name).is_dir() and not name.startswith("preroll") for name in BESIDE)


def test_the_online_replay_is_an_entry_beside_the_package(tmp_path):
    """``python -m experiments.online`` keeps the former ``preroll bench online`` options and its one-line errors;
    ``preroll bench`` no longer lists it."""
    run = lambda *args: subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,  # noqa: E731
                                       timeout=120)
    shown = run("-m", "experiments.online", "--help")
    assert shown.returncode == 0, shown.stderr
    for option in ("--seeds", "--first-seed", "--samplers", "--prompts", "--quick", "--out", "--no-overhead"):
        assert option in shown.stdout
    bad = run("-m", "experiments.online", "--samplers", "uniform,no-such-sampler", "--quick", "--out",
              str(tmp_path / "out"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    bench = run("-m", "preroll.cli.main", "bench", "--help")
    assert bench.returncode == 0 and "route" in bench.stdout and "online" not in bench.stdout
