"""Loader of a routing table: per-prompt graded scores of any number of priced models, in LLMRouter's layout.

The bundled table (``llmrouter-9``) is LLMRouter's nine priced open models; a user's own table in the same
layout (``preroll bench route --data DIR``) loads the same way, with its own models and prices.

Layout (see ``preroll/datasets/README.md``): ``train.jsonl`` rows ``{"id", "prompt",
"scores": {model: graded score in [0, 1]}}`` and ``models.json``
``{model: {"input_price_per_mtok", "output_price_per_mtok", "size"}}``.
Prices are example parameters of that release: the loader turns them into
:class:`~preroll.route.ModelSpec` objects, it holds no price itself. A model
missing from a row's ``scores`` is a missing entry (``NaN``), not a failure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from preroll.data.errors import RecordError
from preroll.data.records import Outcome


@dataclass(frozen=True)
class ScoredPrompts:
    """Prompts and each model's graded score on them (``NaN`` where a model has none)."""

    prompts: list[str]
    ids: list[str]
    models: list[str]
    scores: np.ndarray                        # (n_prompts, n_models) float, NaN = missing
    prices: dict[str, tuple[float, float]]    # model -> (input, output) price per million tokens

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, idx: Sequence[int] | np.ndarray) -> "ScoredPrompts":
        idx = np.asarray(idx)
        return ScoredPrompts([self.prompts[i] for i in idx], [self.ids[i] for i in idx], list(self.models),
                             self.scores[idx], dict(self.prices))

    def histories(self, idx: Sequence[int] | np.ndarray | None = None) -> dict[str, list[Outcome]]:
        """One history per model over rows ``idx``: each observed score is a rate worth one attempt."""
        rows = range(len(self)) if idx is None else np.asarray(idx)
        out: dict[str, list[Outcome]] = {m: [] for m in self.models}
        for i in rows:
            for j, m in enumerate(self.models):
                v = self.scores[i, j]
                if np.isfinite(v):
                    out[m].append(Outcome(prompt=self.prompts[i], successes=float(v), attempts=1.0, policy=m))
        return out

    def model_specs(self, output_tokens: int):
        """Token-priced specs from the release's prices (input and output price must agree: one rate per token)."""
        from preroll.route.specs import ModelSpec

        specs = []
        for m in self.models:
            pin, pout = self.prices[m]
            if pin != pout:
                raise RecordError(f"input price {pin} and output price {pout} differ; the router prices "
                                  "prompt and output tokens at one rate", path="models.json", field=m)
            specs.append(ModelSpec(name=m, cost_per_1k_tokens=pin / 1000.0, output_tokens=output_tokens))
        return specs


def llmrouter_dir() -> Path:
    from preroll.data.paths import llmrouter_dir as bundled

    return bundled()


def load_llmrouter(root: str | Path | None = None) -> ScoredPrompts:
    """Read ``train.jsonl`` and ``models.json``; errors name file, line and field."""
    root = Path(root) if root is not None else llmrouter_dir()
    mpath, dpath = root / "models.json", root / "train.jsonl"
    for p in (mpath, dpath):
        if not p.is_file():
            raise RecordError("file not found", path=str(p))
    try:
        meta = json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RecordError(f"malformed JSON: {exc.msg}", path=str(mpath), line=exc.lineno) from None
    models = list(meta)
    prices = {}
    for m in models:
        try:
            prices[m] = (float(meta[m]["input_price_per_mtok"]), float(meta[m]["output_price_per_mtok"]))
        except (KeyError, TypeError, ValueError):
            raise RecordError("needs numeric 'input_price_per_mtok' and 'output_price_per_mtok'",
                              path=str(mpath), field=m) from None
    col = {m: j for j, m in enumerate(models)}
    prompts, ids, rows = [], [], []
    with dpath.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RecordError(f"malformed JSON: {exc.msg}", path=str(dpath), line=line_no) from None
            prompt, scores = rec.get("prompt"), rec.get("scores")
            if not isinstance(prompt, str) or not prompt.strip():
                raise RecordError("missing or empty", path=str(dpath), line=line_no, field="prompt")
            if not isinstance(scores, dict):
                raise RecordError("must map model -> score", path=str(dpath), line=line_no, field="scores")
            row = np.full(len(models), np.nan)
            for m, v in scores.items():
                if m not in col:
                    raise RecordError(f"model {m!r} is not in models.json", path=str(dpath), line=line_no,
                                      field="scores")
                if not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                    raise RecordError(f"score must be a number in [0, 1], got {v!r}", path=str(dpath),
                                      line=line_no, field=f"scores.{m}")
                row[col[m]] = float(v)
            prompts.append(prompt)
            ids.append(str(rec.get("id", line_no)))
            rows.append(row)
    return ScoredPrompts(prompts, ids, models, np.array(rows), prices)
