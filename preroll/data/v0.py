"""Importer for the V_0 release layout (ids + ``score`` + ``prompts.json``).

The V_0 authors store, per (model, step), the mean of 10 rollout rewards in
{-1, +1} as ``score``; the text lives in ``prompts.json`` under
``"dapomath_<id>"``. We turn each row into ``successes`` of ``attempts``.
"""

from __future__ import annotations

import json
from pathlib import Path

from preroll.data.errors import RecordError
from preroll.data.loaders import iter_rows
from preroll.data.records import Outcome

#: Rollouts behind each V_0 ``score`` (documented in the release).
V0_ROLLOUTS = 10


def load_v0(rows_path: str | Path, prompts_path: str | Path | None = None, *,
            rollouts: int = V0_ROLLOUTS) -> list[Outcome]:
    """Read a V_0 ``context.jsonl``/``queries.jsonl`` with its ``prompts.json``."""
    rows_path = Path(rows_path)
    prompts_path = Path(prompts_path) if prompts_path else rows_path.with_name("prompts.json")
    try:
        texts = json.loads(prompts_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError("prompts file not found", path=prompts_path) from None
    except json.JSONDecodeError as exc:
        raise RecordError(f"malformed JSON: {exc.msg}", path=prompts_path, line=exc.lineno) from None
    out = []
    for line, row in iter_rows(rows_path):
        for field in ("id", "score", "model", "step"):
            if field not in row:
                raise RecordError("required field is missing", path=rows_path, line=line, field=field)
        key = f"{row.get('dataset', 'dapomath')}_{row['id']}"
        if key not in texts:
            raise RecordError(f"no prompt text for {key!r} in {prompts_path}", path=rows_path, line=line, field="id")
        score = row["score"]
        if not isinstance(score, (int, float)) or not -1.0 <= score <= 1.0:
            raise RecordError(f"score must be a number in [-1, 1] (got {score!r})", path=rows_path, line=line, field="score")
        successes = round((score + 1.0) / 2.0 * rollouts)
        out.append(Outcome(prompt=texts[key], successes=float(successes), attempts=float(rollouts),
                           policy=str(row["model"]), step=int(row["step"]), id=str(row["id"])))
    if not out:
        raise RecordError("no records in file", path=rows_path)
    return out
