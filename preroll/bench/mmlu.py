"""Loader for RouteLLM's per-prompt MMLU correctness data.

Layout (see ``preroll/datasets/README.md``): ``responses/mmlu_<subject>.csv`` with a
``prompt`` column and one ``True``/``False`` column per model, named by the
model; ``contaminated_prompts.jsonl`` lists prompts that overlapped a
router's training data, which RouteLLM drops from evaluation.

Model names come from the CSV headers: the loader knows nothing about which
models were evaluated, only that every subject file must list the same ones.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from preroll.data.errors import RecordError
from preroll.data.records import Outcome

#: Fields of ``contaminated_prompts.jsonl`` that hold prompt text. The
#: ``eval_prompt`` is the text as it appears in the response files; the
#: ``train_prompt`` is the overlapping training text (reformatted, so it
#: rarely matches, but it is excluded too when it does).
CONTAMINATED_FIELDS = ("eval_prompt", "train_prompt")

_BOOL = {"true": True, "false": False}


@dataclass(frozen=True)
class MMLUData:
    """Prompts, their subject, and whether each model answered correctly."""

    prompts: list[str]
    subjects: list[str]
    models: list[str]
    correct: np.ndarray  # (n_prompts, n_models) bool
    n_excluded: int = 0  # rows dropped as contaminated

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, idx: Sequence[int] | np.ndarray) -> "MMLUData":
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return MMLUData([self.prompts[i] for i in idx], [self.subjects[i] for i in idx], list(self.models),
                        self.correct[idx], self.n_excluded)

    def histories(self, idx: Sequence[int] | np.ndarray | None = None) -> dict[str, list[Outcome]]:
        """One outcome history per model (1 attempt per prompt) over rows ``idx`` (default: all)."""
        rows = range(len(self)) if idx is None else np.asarray(idx)
        return {m: [Outcome(prompt=self.prompts[i], successes=float(self.correct[i, j]), attempts=1.0,
                            policy=m) for i in rows]
                for j, m in enumerate(self.models)}


def load_contaminated(path: str | Path) -> set[str]:
    """Prompt texts listed in a ``contaminated_prompts.jsonl`` (both text fields)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecordError("file not found", path=path) from None
    out: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RecordError(f"malformed JSON: {exc.msg} (column {exc.colno})", path=path, line=lineno) from None
        if not isinstance(row, dict):
            raise RecordError(f"expected a JSON object, got {type(row).__name__}", path=path, line=lineno)
        found = False
        for field in CONTAMINATED_FIELDS:
            if field in row:
                if not isinstance(row[field], str):
                    raise RecordError(f"must be text, got {type(row[field]).__name__}", path=path,
                                      line=lineno, field=field)
                out.add(row[field])
                found = True
        if not found:
            raise RecordError(f"row has none of the prompt fields {', '.join(CONTAMINATED_FIELDS)}",
                              path=path, line=lineno, field=CONTAMINATED_FIELDS[0])
    return out


def read_responses(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """One subject file: ``(prompts, model names, correct (n, m) bool)``; errors name file, line and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecordError("file not found", path=path) from None
    except UnicodeDecodeError as exc:
        raise RecordError(f"not valid UTF-8 (byte {exc.start})", path=path) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise RecordError("empty file (expected a header: prompt,<model>,...)", path=path, line=1) from None
    if not header or header[0] != "prompt":
        raise RecordError(f"first column must be 'prompt', got {header[0] if header else ''!r}",
                          path=path, line=1, field="prompt")
    models = header[1:]
    if not models:
        raise RecordError("no model columns after 'prompt'", path=path, line=1)
    for m in models:
        if not m.strip():
            raise RecordError("empty model name in header", path=path, line=1)
    if len(set(models)) != len(models):
        raise RecordError(f"duplicate model columns: {models}", path=path, line=1)
    prompts: list[str] = []
    rows: list[list[bool]] = []
    start = reader.line_num + 1
    for rec in reader:
        line = start  # first physical line of this record (prompts span several lines)
        start = reader.line_num + 1
        if not rec:
            continue
        if len(rec) != len(header):
            raise RecordError(f"expected {len(header)} values, got {len(rec)}", path=path, line=line)
        if not rec[0].strip():
            raise RecordError("prompt is empty", path=path, line=line, field="prompt")
        vals = []
        for m, v in zip(models, rec[1:]):
            b = _BOOL.get(v.strip().lower())
            if b is None:
                raise RecordError(f"expected True or False, got {v!r}", path=path, line=line, field=m)
            vals.append(b)
        prompts.append(rec[0])
        rows.append(vals)
    if not prompts:
        raise RecordError("no rows after the header", path=path)
    return prompts, models, np.array(rows, dtype=bool)


def load_mmlu(root: str | Path | None = None, *, subjects: Sequence[str] | None = None,
              exclude_contaminated: bool = True) -> MMLUData:
    """Load every (or the named) subject under ``root`` (default: the bundled data).

    Contaminated prompts are dropped (``exclude_contaminated=False`` keeps
    them). Every file must name the same models in the same order.
    """
    if root is None:
        from preroll.data.paths import mmlu_dir

        root = mmlu_dir()
    root = Path(root)
    resp = root / "responses"
    if subjects is None:
        files = sorted(resp.glob("mmlu_*.csv"))
        if not files:
            raise RecordError("no responses/mmlu_<subject>.csv files", path=resp)
    else:
        files = [resp / f"mmlu_{s}.csv" for s in subjects]
    bad = set()
    if exclude_contaminated:
        bad = load_contaminated(root / "contaminated_prompts.jsonl")
    prompts: list[str] = []
    subj: list[str] = []
    blocks = []
    models: list[str] | None = None
    excluded = 0
    for f in files:
        p, m, c = read_responses(f)
        if models is None:
            models = m
        elif m != models:
            raise RecordError(f"model columns {m} differ from {models} in the other files", path=f, line=1)
        keep = np.array([q not in bad for q in p], dtype=bool)
        excluded += int((~keep).sum())
        name = f.stem.removeprefix("mmlu_")
        prompts.extend(q for q, k in zip(p, keep) if k)
        subj.extend([name] * int(keep.sum()))
        blocks.append(c[keep])
    return MMLUData(prompts, subj, list(models or []), np.concatenate(blocks), excluded)
