"""The ``preroll`` command line: one Typer app, one module per command.

Each command module keeps heavy imports (torch, sentence-transformers,
scikit-learn) inside the command body, so ``preroll --help`` answers
instantly. Every command is wrapped by :mod:`preroll.cli.errors`: a user error
is one line and exit code 2, never a traceback.
"""

from __future__ import annotations

import typer

from preroll.cli import (bench_route, bench_schedule, bench_throughput, evaluate, feedback, fit, predict, score,
                         serve)
from preroll.cli import errors

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Predict a policy's success on prompts before rolling them out.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks on your own data (or the bundled data sets).")
app.add_typer(bench_app, name="bench")


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error.")) -> None:
    errors.set_debug(debug)


app.command("predict")(predict.predict)
app.command("fit")(fit.fit)
app.command("score")(score.score)
app.command("eval")(evaluate.evaluate)
app.command("serve")(serve.serve)
app.command("feedback")(feedback.feedback)
bench_app.command("schedule")(bench_schedule.bench_schedule)
bench_app.command("route")(bench_route.bench_route)
bench_app.command("throughput")(bench_throughput.bench_throughput)

errors.install(app)  # keep last: wraps every command registered above


def main() -> None:
    app()


if __name__ == "__main__":
    main()
