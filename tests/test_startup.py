"""``import preroll`` and the CLI app stay light: no scikit-learn, SciPy, pandas or torch at import.

A behaviour test, not a timing test: it checks which modules a fresh
interpreter has loaded, which is what made ``preroll --help`` take seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("sklearn", "scipy", "pandas", "torch", "transformers", "sentence_transformers", "matplotlib")


@pytest.mark.parametrize("module", ["preroll", "preroll.cli.main"])
def test_import_does_not_load_heavy_libraries(module):
    code = (f"import sys, json, {module}; "
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_help_lists_commands_without_heavy_libraries():
    code = ("import sys, json\n"
            "from typer.testing import CliRunner\n"
            "from preroll.cli.main import app\n"
            "r = CliRunner().invoke(app, ['--help'])\n"
            "assert r.exit_code == 0 and 'predict' in r.output, r.output\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_value_model_import_does_not_load_scikit_learn():
    """``from preroll import ValueModel`` pays for numpy and pydantic only; the head's scikit-learn comes at fit."""
    code = ("import sys, json\n"
            "from preroll import ValueModel\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
