"""One error family: every exception class preroll defines derives from PrerollError, and each name means one class."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from preroll.errors import DependencyError


#: Run in a child process: importing every module (verl registers trainers, matplotlib picks a backend)
#: must not change the test session's global state.
_WALK = """
import importlib, inspect, json, pkgutil, sys
import preroll
from preroll.errors import DependencyError, PrerollError
by_name, skipped = {}, []
for info in pkgutil.walk_packages(preroll.__path__, "preroll."):
    try:
        module = importlib.import_module(info.name)
    except ImportError as exc:  # an extra this environment lacks (DependencyError is an ImportError)
        skipped.append(info.name)
        continue
    for _, obj in inspect.getmembers(module, inspect.isclass):
        if issubclass(obj, Exception) and not issubclass(obj, Warning) and obj.__module__ == module.__name__:
            by_name.setdefault(obj.__name__, {})[obj.__module__] = issubclass(obj, PrerollError)
print(json.dumps({"by_name": by_name, "skipped": skipped}))
"""


def _preroll_exceptions() -> dict:
    """Every exception class (not warnings) defined in a preroll module: name -> {module: is a PrerollError}."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-c", _WALK], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_error_is_a_preroll_error_and_every_name_has_one_class():
    found = _preroll_exceptions()
    by_name = found["by_name"]
    assert len(by_name) >= 15, found  # the walk found the family, not an empty package
    outside = sorted(f"{module}.{name}" for name, modules in by_name.items()
                     for module, ok in modules.items() if not ok)
    assert outside == []
    twice = {name: sorted(modules) for name, modules in by_name.items() if len(modules) > 1}
    assert twice == {}


def test_module_error_names_are_the_family_s_classes():
    """Old import paths still work and name the one class (branches importing them keep merging)."""
    from preroll import errors
    from preroll.data.errors import RecordError
    from preroll.route import NotFittedError as RouteNotFitted
    from preroll.serve.errors import RequestError, ServeSetupError, StoreError

    assert RecordError is errors.RecordError and RouteNotFitted is errors.NotFittedError
    assert errors.MissingExtraError is DependencyError
    assert ServeSetupError is errors.ServeSetupError and StoreError is errors.StoreError
    assert issubclass(RequestError, errors.ServeError) and issubclass(RequestError, ValueError)
    # A bad-row error is not a store or set-up error, and the other way round.
    for cls in (ServeSetupError, StoreError):
        assert not issubclass(cls, RecordError) and issubclass(cls, errors.ServeError)


def test_serve_config_error_is_the_package_s():
    pytest.importorskip("yaml")  # the serve config reads YAML (the 'serve' extra)
    from preroll import errors
    from preroll.serve.config import ConfigError as ServeConfigError

    assert ServeConfigError is errors.ConfigError
