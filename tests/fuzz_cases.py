"""Generated inputs for every CLI entry point, and the one rule they must obey.

Shared by ``tests/test_fuzz_cli.py`` (a small sample in CI) and ``benchmarks/fuzz_cli.py`` (>= 10,000
cases per class). Four classes of entry point:

- ``args``: ``preroll predict|fit|score|eval`` with generated flags and values (typer's CliRunner);
- ``files``: JSONL, CSV and Parquet files (odd types, sizes, depths, Unicode, Excel-style CSV with a
  BOM, CRLF and semicolons) read as a history, a query file and a scoring pool, and written back as
  output parts;
- ``manifests``: a scoring run's ``_manifest.json`` generated and opened with ``--resume``/``--force``;
- ``models``: a saved model folder with a generated ``manifest.json`` or damaged files, loaded.

The rule: an input either works or ends in preroll's own error (a :class:`~preroll.errors.PrerollError`,
or an ``OSError`` about a path, the two the CLI prints as one line), never a traceback; a manifest never
makes ``--force`` delete a file outside the output folder. :func:`classify` names the outcome.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

OK, ERROR, TRACEBACK = "ok", "one-line error", "traceback"


# -- the rule ----------------------------------------------------------------------------------------

def classify_exception(exc: BaseException | None) -> str:
    from preroll.errors import PrerollError

    if exc is None:
        return OK
    if isinstance(exc, (PrerollError, OSError, sqlite3.DatabaseError)) and str(exc).strip():
        return ERROR
    return TRACEBACK


def run_call(fn, *args, **kwargs) -> tuple[str, str]:
    """``(outcome, detail)`` of calling ``fn``: ok, preroll's own error, or a traceback (its last lines)."""
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - classifying every exception is the point
        outcome = classify_exception(exc)
        detail = f"{type(exc).__name__}: {exc}"[:300] if outcome == ERROR else traceback.format_exc()[-1500:]
        return outcome, detail
    return OK, ""


def run_cli(argv: list[str]) -> tuple[str, str]:
    """Run ``preroll ARGV`` in process. An error must be exit 2 with one ``error:`` line (or click's usage error)."""
    from typer.testing import CliRunner

    from preroll.cli.main import app

    result = CliRunner().invoke(app, argv)
    text = result.output or ""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return TRACEBACK, "".join(traceback.format_exception(result.exception))[-1500:]
    if "Traceback (most recent call last)" in text:
        return TRACEBACK, text[-1500:]
    if result.exit_code == 0:
        return OK, ""
    errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
    if result.exit_code == 2 and len(errors) == 1:
        return ERROR, errors[0][:300]
    if result.exit_code == 2 and "Usage:" in text:  # click's own usage error: bad option or value
        return ERROR, " ".join(text.split())[-300:]
    return TRACEBACK, f"exit {result.exit_code}: {text[-1500:]}"


# -- values ------------------------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
_odd_text = st.sampled_from(["", " ", "\t\n", "\u2028", "x\u0000y", "🧮" * 5, "é" * 3, "a" * 5000, "NaN",
                             "Infinity", "-1", "1e999", "0x10", "١٢", "null", "true", "[]", "{}", "\ufeffprompt"])
_numbers = st.one_of(st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from([0, 1, -1, 2**63, 2**64, 10**4000]))
_scalar = st.one_of(st.none(), st.booleans(), _numbers, _text, _odd_text)
_json_value = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(_text, inner, max_size=4)),
                           max_leaves=12)
RECORD_KEYS = ["prompt", "policy", "step", "successes", "attempts", "success_rate", "reward", "id", "weight"]
_key = st.one_of(st.sampled_from(RECORD_KEYS), _text, st.sampled_from(["p_success", "source", "ünï ✓"]))


@st.composite
def _row(draw) -> dict:
    """A history/query row: sometimes valid, mostly near-valid, sometimes wild."""
    row = {}
    if draw(st.booleans()):
        row["prompt"] = draw(st.one_of(_text.filter(str.strip), _odd_text, _json_value))
    kind = draw(st.sampled_from(["counts", "rate", "reward", "none", "wild"]))
    if kind == "counts":
        row["successes"] = draw(st.one_of(st.integers(0, 9), _numbers))
        row["attempts"] = draw(st.one_of(st.integers(1, 9), _numbers))
    elif kind == "rate":
        row["success_rate"] = draw(st.one_of(st.floats(0, 1), _numbers, _text))
    elif kind == "reward":
        row["reward"] = draw(_json_value)
    if draw(st.booleans()):
        row["policy"] = draw(st.one_of(st.sampled_from(["a", "b"]), _json_value))
    if draw(st.booleans()):
        row["step"] = draw(st.one_of(st.integers(0, 300), _json_value))
    for _ in range(draw(st.integers(0, 2))):
        row[draw(_key)] = draw(_json_value)
    return row


_line = st.one_of(
    _row().map(lambda r: json.dumps(r, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")),
    st.binary(max_size=60),
    st.sampled_from([b"", b"   ", b"[1, 2]", b'"text"', b"null", b"{", b'{"prompt": "x"', b"\xff\xfe",
                     b'{"prompt": "x", "v": ' + b"9" * 5000 + b"}",
                     b'{"prompt": "x", "v": ' + b"[" * 3000 + b"]" * 3000 + b"}",
                     b'{"prompt": "x", "successes": 1, "attempts": 2, "v": Infinity}',
                     b'{"prompt": "deep", "v": ' + b'{"a": ' * 200 + b"1" + b"}" * 200 + b"}"]),
)


@st.composite
def jsonl_bytes(draw) -> bytes:
    lines = draw(st.lists(_line, max_size=12))
    sep = draw(st.sampled_from([b"\n", b"\r\n"]))
    bom = draw(st.sampled_from([b"", b"\xef\xbb\xbf"]))
    return bom + sep.join(lines) + (sep if draw(st.booleans()) else b"")


@st.composite
def csv_bytes(draw) -> bytes:
    """CSV as Excel and others write it: BOM, CRLF, ``;`` or tab separators, quotes, long and multi-line cells."""
    import csv
    import io

    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    header = draw(st.lists(st.one_of(st.sampled_from(RECORD_KEYS), _text), min_size=1, max_size=5))
    rows = draw(st.lists(st.lists(st.one_of(_text, _odd_text, _numbers.map(str),
                                            st.sampled_from(["x" * 200_000, "a\nb", '"q"', "1;2", ""])),
                                  max_size=6), max_size=8))
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(header)
    writer.writerows(rows)
    text = buf.getvalue()
    if draw(st.booleans()):  # a broken quote
        text = text + '"unterminated'
    data = text.encode("utf-8", "surrogatepass")
    return draw(st.sampled_from([b"", b"\xef\xbb\xbf"])) + data


@st.composite
def parquet_bytes(draw) -> bytes:
    """A Parquet file whose columns have odd Arrow types (timestamps, decimals, binary, nested, all-null)."""
    import datetime
    import decimal
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    n = draw(st.integers(0, 6))
    kinds = ["string", "int", "float", "timestamp", "decimal", "binary", "list", "struct", "null", "bool",
             "large_string", "dictionary"]
    names = draw(st.lists(st.one_of(st.sampled_from(RECORD_KEYS), _text), min_size=1, max_size=5, unique=True))
    columns = {}
    for name in names:
        kind = draw(st.sampled_from(kinds))
        if kind in ("string", "large_string", "dictionary"):
            values = draw(st.lists(st.one_of(st.none(), _text, _odd_text), min_size=n, max_size=n))
            arr = pa.array(values, pa.large_string() if kind == "large_string" else pa.string())
            columns[name] = arr.dictionary_encode() if kind == "dictionary" else arr
        elif kind == "int":
            columns[name] = pa.array(draw(st.lists(st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)),
                                                   min_size=n, max_size=n)), pa.int64())
        elif kind == "float":
            columns[name] = pa.array(draw(st.lists(st.one_of(st.none(), st.floats()), min_size=n, max_size=n)),
                                     pa.float64())
        elif kind == "timestamp":
            columns[name] = pa.array([datetime.datetime(2020, 1, 1 + i % 28) for i in range(n)])
        elif kind == "decimal":
            columns[name] = pa.array([decimal.Decimal(f"{i}.25") for i in range(n)], pa.decimal128(9, 2))
        elif kind == "binary":
            columns[name] = pa.array(draw(st.lists(st.binary(max_size=8), min_size=n, max_size=n)), pa.binary())
        elif kind == "list":
            columns[name] = pa.array([[i, i + 1] for i in range(n)])
        elif kind == "struct":
            columns[name] = pa.array([{"a": i, "b": "x"} for i in range(n)])
        elif kind == "bool":
            columns[name] = pa.array([bool(i % 2) for i in range(n)])
        else:
            columns[name] = pa.nulls(n)
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    data = sink.getvalue()
    if draw(st.integers(0, 9)) == 0:  # a truncated file
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    return data


files = st.one_of(jsonl_bytes().map(lambda b: (".jsonl", b)), csv_bytes().map(lambda b: (".csv", b)),
                  parquet_bytes().map(lambda b: (".parquet", b)))


def exercise_file(path: Path) -> list[tuple[str, str]]:
    """Read ``path`` as a history, as a query file and as a scoring pool (writing both part formats)."""
    from preroll.data import load_queries, load_records
    from preroll.score.parts import chunk_prompts, part_bytes
    from preroll.score.sources import count_rows, discover_inputs, iter_chunks

    def as_pool():
        for i, f in enumerate(discover_inputs(path)):
            count_rows(f)
            for chunk in iter_chunks(i, f, 4):
                chunk_prompts(chunk)
                cols = {c: np.full(len(chunk), 0.5) for c in ("p_success", "p_std", "alpha", "beta")}
                mask = np.ones(len(chunk), dtype=bool)
                for fmt in ("jsonl", "parquet"):
                    part_bytes(chunk, cols, mask, fmt)

    return [run_call(load_records, path), run_call(load_queries, path), run_call(as_pool)]


# -- CLI arguments -------------------------------------------------------------------------------------

class Fixtures:
    """Small valid inputs the argument fuzzer points flags at: a history, queries, a saved model."""

    def __init__(self, root: Path) -> None:
        self.root = root
        rows = [{"prompt": f"problem {i}: compute {i} + {i % 5}", "successes": i % 3, "attempts": 2,
                 "policy": "a", "step": 1} for i in range(12)]
        self.history = root / "h.jsonl"
        self.history.write_text("".join(json.dumps(r) + "\n" for r in rows))
        self.queries = root / "q.jsonl"
        self.queries.write_text('{"prompt": "what is 3 + 4?"}\n{"prompt": "and 5 + 6?"}\n')
        self.csv = root / "q.csv"
        self.csv.write_text("prompt;note\r\nwhat is 2+2;x\r\n", encoding="utf-8-sig")
        self.model = root / "model"
        from preroll.model.persist import save_model
        from preroll.data import load_records
        from preroll.model.value_model import ValueModel

        save_model(ValueModel(encoder="stats", head="logistic").fit(load_records(self.history)), self.model)
        self.work = root / "work"
        self.work.mkdir()
        # A non-regular file to aim outputs at (never /dev/null itself: a bug would replace the machine's).
        self.fifo = root / "fifo"
        os.mkfifo(self.fifo)

    def fresh(self) -> Path:
        """A new empty folder for one case's outputs (old ones are removed to keep the disk flat)."""
        for child in self.work.iterdir():
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
        out = Path(tempfile.mkdtemp(dir=self.work))
        return out


_ENCODERS = st.sampled_from(["stats", "lexical", "stats+lexical", "", " ", "+", "stats+", "bogus", "lexical+stats",
                             "STATS", "stats+stats", "\u2028", "./nowhere", "minilm+"])
_HEADS = st.sampled_from(["logistic", "knn", "auto", "ensemble", "gp", "bogus", "", "LOGISTIC", "tabpfn", "joint"])
_INTS = st.one_of(st.integers(-5, 5).map(str), st.sampled_from(["0", "-1", "1e3", "1.5", "abc", "", "9" * 30,
                                                                "nan", "inf", "٣"]))
_FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["-1", "0", "1", "1e400", "x", "", "nan"]))
_KEEPS = st.one_of(st.sampled_from(["p_success > 0.5", "0.1 <= p_success <= 0.9", "p_std < 0.2 and alpha > 1",
                                    "(" * 300 + "p_success" + ")" * 300, "p_success >", "__import__('os')",
                                    "p_success > 1e999", "not not not p_success > 0", "x" * 10_000,
                                    "p_success > 0.5 or", "beta"]), _text)


@st.composite
def argv(draw, fx: Fixtures) -> list[str]:
    """``[command, --flag, value, ...]``: each command's own flags with plausible and implausible values."""
    out = fx.fresh()
    paths = st.sampled_from([str(fx.history), str(fx.queries), str(fx.csv), str(fx.model), str(out / "o.jsonl"),
                             str(out), str(out / "missing.jsonl"), "", str(fx.fifo), str(fx.root),
                             str(out / "sub" / "deep" / "x.jsonl"), "-", str(fx.history) + "/x"])
    command = draw(st.sampled_from(["predict", "fit", "score", "eval"]))
    flags: dict[str, st.SearchStrategy] = {}
    if command == "predict":
        flags = {"--context": paths, "--prompts": paths, "--out": paths, "--encoder": _ENCODERS, "--head": _HEADS,
                 "--policy": st.one_of(st.sampled_from(["a", "b"]), _text), "--step": _INTS,
                 "--reward-range": st.tuples(_FLOATS, _FLOATS), "--force": st.none(), "--by-policy": st.none()}
        required = {"--context": str(fx.history), "--prompts": str(fx.queries), "--out": str(out / "p.jsonl"),
                    "--encoder": "stats"}
    elif command == "fit":
        flags = {"--context": paths, "--save": paths, "--encoder": _ENCODERS, "--head": _HEADS,
                 "--reward-range": st.tuples(_FLOATS, _FLOATS), "--force": st.none()}
        required = {"--context": str(fx.history), "--save": str(out / "m"), "--encoder": "stats"}
    elif command == "score":
        flags = {"--model": paths, "--input": paths, "--out": paths, "--format": st.sampled_from(
                     ["parquet", "jsonl", "csv", "", "JSONL"]), "--keep": _KEEPS,
                 "--policy": st.one_of(st.sampled_from(["a", "b"]), _text), "--step": _INTS,
                 "--chunk-rows": _INTS, "--batch-rows": _INTS, "--resume": st.none(), "--force": st.none(),
                 "--workers": st.sampled_from(["1", "0", "-3", "abc", "1.5"]), "--no-progress": st.none()}
        required = {"--model": str(fx.model), "--input": str(fx.queries), "--out": str(out / "scored"),
                    "--workers": "1", "--no-progress": None}
    else:  # eval on a folder that is not V_0 data: its arguments are checked, the evaluation never starts
        flags = {"--encoder": _ENCODERS, "--head": _HEADS, "--folds": _INTS, "--seed": _INTS, "--limit": _INTS,
                 "--full": st.none(), "--out": paths}
        required = {"--data": str(fx.root), "--encoder": "stats", "--out": str(out / "ev")}
    chosen = dict(required)
    for name in draw(st.lists(st.sampled_from(sorted(flags)), max_size=5, unique=True)):
        chosen[name] = draw(flags[name])
    if command in ("predict", "fit", "score") and draw(st.integers(0, 3)) == 0:
        chosen.pop(draw(st.sampled_from(sorted(required))), None)  # a required flag missing
    if command == "score":
        chosen.setdefault("--workers", "1")  # process pools are exercised by the unit tests, not 10,000 times
        if chosen["--workers"] not in ("0", "-3", "abc", "1.5"):
            chosen["--workers"] = "1"
    if command == "eval":
        chosen["--data"] = str(fx.root)
    args = [command]
    for name, value in chosen.items():
        if value is None:
            args.append(name)
        elif isinstance(value, tuple):
            args += [name, *value]
        else:
            args += [name, value]
    if draw(st.integers(0, 9)) == 0:
        args.append(draw(st.sampled_from(["--bogus", "extra-arg", "--", "-x", "--help"])))
    return args


# -- manifests and model folders ---------------------------------------------------------------------

def score_manifest_case(root: Path, fx: Fixtures, manifest, flag: str) -> list[tuple[str, str]]:
    """Open a scoring output whose ``_manifest.json`` is ``manifest``; nothing outside it may disappear."""
    from preroll.score.state import MANIFEST, RunState

    out = root / "out"
    out.mkdir(parents=True, exist_ok=True)
    victim = root / "victim.txt"
    victim.write_text("keep")
    (out / "part-00000-00000.jsonl").write_text("{}\n")
    text = manifest if isinstance(manifest, (str, bytes)) else json.dumps(manifest, allow_nan=True)
    (out / MANIFEST).write_bytes(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    result = run_call(RunState.open, out, {"model_id": "m"}, ["q.jsonl"], resume=flag == "resume",
                      force=flag == "force")
    if not victim.exists():
        return [(TRACEBACK, f"--{flag} deleted a file outside the output folder: manifest {text[:300]!r}")]
    return [result]


_part = st.fixed_dictionaries({}, optional={
    "file": st.one_of(st.sampled_from(["part-00000-00000.jsonl", "../victim.txt", "/tmp/x", "_report/report.json",
                                       "part-ray-00001.parquet", "", ".", "..", "part-../../x.jsonl"]), _json_value),
    "input": _json_value, "rows": _json_value, "kept": _json_value, "hist_all": _json_value,
    "hist_kept": _json_value, "sources": _json_value})


@st.composite
def score_manifests(draw):
    if draw(st.integers(0, 5)) == 0:
        return draw(st.one_of(st.binary(max_size=40).map(lambda b: b.decode("latin-1")), _json_value.map(json.dumps),
                              st.just("[" * 5000 + "]" * 5000), st.just('{"kind": "preroll.score-run"')))
    base = {"kind": draw(st.sampled_from(["preroll.score-run", "preroll.score-run", "other", None])),
            "version": draw(st.one_of(st.just(1), _json_value)),
            "run_key": draw(st.one_of(st.just({"model_id": "m"}), _json_value)),
            "inputs": draw(st.one_of(st.just(["q.jsonl"]), _json_value)),
            "complete": draw(st.one_of(st.booleans(), _json_value)),
            "parts": draw(st.one_of(st.dictionaries(st.sampled_from(["00000-00000", "x", ""]), _part, max_size=3),
                                    _json_value)),
            "written": draw(st.one_of(st.lists(st.sampled_from(["../victim.txt", "_staging", "/etc/hosts",
                                                                "_report/histogram.png", "part-1.jsonl"]),
                                               max_size=3), _json_value))}
    for key in draw(st.lists(st.sampled_from(sorted(base)), max_size=2, unique=True)):
        base.pop(key)
    return base


def model_folder_case(root: Path, fx: Fixtures, mutation) -> list[tuple[str, str]]:
    """Copy the fixture model, apply ``mutation`` (manifest edit or file damage), load and verify it."""
    from preroll.model.persist import load_model, verify_model_files

    folder = root / "model"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(fx.model, folder)
    kind, value = mutation
    manifest_path = folder / "manifest.json"
    if kind == "manifest":
        manifest = json.loads(manifest_path.read_text())
        key, new = value
        if new == "<delete>":
            manifest.pop(key, None)
        else:
            manifest[key] = new
        manifest_path.write_text(json.dumps(manifest, allow_nan=True))
    elif kind == "raw-manifest":
        manifest_path.write_bytes(value)
    elif kind == "truncate":
        name, keep = value
        path = folder / name
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
    elif kind == "remove":
        (folder / value).unlink()
    return [run_call(verify_model_files, folder), run_call(load_model, folder)]


_MANIFEST_KEYS = ["kind", "format_version", "model_id", "encoder", "head", "snapshots", "files", "history_rows",
                  "evidence_decay"]
model_mutations = st.one_of(
    st.tuples(st.just("manifest"), st.tuples(st.sampled_from(_MANIFEST_KEYS),
                                             st.one_of(st.just("<delete>"), _json_value))),
    st.tuples(st.just("raw-manifest"), st.one_of(st.binary(max_size=50), _json_value.map(
        lambda v: json.dumps(v).encode()))),
    st.tuples(st.just("truncate"), st.tuples(st.sampled_from(["state.pkl", "encoder.pkl", "manifest.json"]),
                                             st.floats(0, 0.99))),
    st.tuples(st.just("remove"), st.sampled_from(["state.pkl", "encoder.pkl", "manifest.json"])),
)


@contextlib.contextmanager
def quiet():
    """Silence stderr of the library's warnings and progress bars during a long fuzz run."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        yield


def ensure_tests_on_path() -> None:
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
