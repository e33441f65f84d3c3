"""Every command's ``--help``: no ``<bool>`` for flags, a description for every option, nothing cut or escaped."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from preroll.cli.main import app


def _commands(command, path: tuple[str, ...] = ()):
    """(path, command) for the app and every command and group under it (typer's own click)."""
    yield path, command
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _commands(sub, path + (name,))


COMMANDS = list(_commands(typer.main.get_command(app)))


def test_the_walk_sees_every_command():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"", "predict", "fit", "score", "eval", "serve", "feedback", "bench", "bench route"} <= names


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) or "preroll" for p, _ in COMMANDS])
def test_help_describes_every_option_plainly(path, command):
    result = CliRunner().invoke(app, [*path, "--help"], prog_name="preroll", terminal_width=100)
    assert result.exit_code == 0, result.output
    text = result.output
    assert "<bool>" not in text
    assert "``" not in text and "\\[" not in text and "…" not in text, text  # RST, rich escapes, cut defaults
    undocumented = [p.name for p in command.params if p.param_type_name == "option" and not (p.help or "").strip()]
    assert undocumented == [], f"options without help in `preroll {' '.join(path)}`: {undocumented}"
    for param in command.params:
        if param.param_type_name == "argument":
            assert (getattr(param, "help", None) or "").strip(), f"argument {param.name} has no help"


def test_log_lines_carry_no_source_locations(tmp_path):
    """``fit``'s progress lines say what happened, not which line of preroll printed them (``fit.py:43``)."""
    import json
    import re

    history = tmp_path / "history.jsonl"
    history.write_text("".join(json.dumps({"prompt": f"problem {i}: compute {i} + {i * 7}", "successes": i % 5,
                                           "attempts": 4 + i % 3, "policy": "p", "step": 1}) + "\n"
                               for i in range(30)))
    result = CliRunner().invoke(app, ["fit", "--context", str(history), "--save", str(tmp_path / "model"),
                                      "--encoder", "stats"], prog_name="preroll")
    assert result.exit_code == 0, result.output
    assert "records" in result.stderr and "saved the model" in result.stderr
    assert not re.search(r"\w+\.py:\d+", result.stderr), result.stderr
