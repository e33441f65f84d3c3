"""What the CLI error tests share: writing a JSONL input, running the CLI in-process, and the one-line rule.

Used by ``test_user_errors.py``, ``test_safety_errors.py`` and ``test_safety_outputs.py``; one definition so
that "a user error is one line and exit code 2" means the same thing in all of them.
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from preroll.cli.main import app

runner = CliRunner()


def write_jsonl(path, rows):
    """``rows`` as JSON lines, Unicode written as itself (as a user's editor would), UTF-8."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def run_cli(*args):
    """``preroll ARGS`` in-process: (exit code, stdout and stderr together). An exception escaping the CLI
    (anything but its own exit) fails the test here, with the exception, instead of hiding behind an exit code."""
    result = runner.invoke(app, [str(a) for a in args])
    assert not (result.exception and not isinstance(result.exception, SystemExit)), repr(result.exception)
    return result.exit_code, result.output


def one_line_error(code, text, *needles):
    """Exit code 2 and exactly one ``error:`` line, no traceback, naming every needle; returns that line."""
    assert code == 2, text
    lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in text, text
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]
