"""The curation report of a scoring run: ``_report/report.json`` and ``_report/histogram.png``.

Built from the per-part statistics in the run's manifest (histograms of
``p_success`` for all and for kept rows, counts per source), so it costs
nothing on a million rows and is the same after a resumed run as after an
uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from preroll.outputs import atomic_write_bytes, save_figure
from preroll.score.keep import KeepFilter
from preroll.score.state import HIST_BINS, REPORT_DIR, REPORT_FILES, RunState


def aggregate(state: RunState) -> dict:
    hist_all = np.zeros(HIST_BINS, dtype=int)
    hist_kept = np.zeros(HIST_BINS, dtype=int)
    sources: dict[str, list[int]] = {}
    rows = kept = 0
    for stats in state.parts.values():
        rows += stats.rows
        kept += stats.kept
        hist_all += stats.hist_all
        hist_kept += stats.hist_kept
        for name, (k, d) in stats.sources.items():
            slot = sources.setdefault(name, [0, 0])
            slot[0] += k
            slot[1] += d
    return {"rows": rows, "kept": kept, "dropped": rows - kept, "hist_all": hist_all, "hist_kept": hist_kept,
            "sources": sources}


def write_report(state: RunState, keep: KeepFilter | None, *, model_dir: Path) -> dict:
    """Write report.json and (with the ``plots`` extra) histogram.png under ``out/_report``; return the report."""
    totals = aggregate(state)
    edges = np.linspace(0.0, 1.0, HIST_BINS + 1)
    report = {
        "model": str(model_dir),
        "model_id": state.run_key.get("model_id"),
        "inputs": state.inputs,
        "keep": keep.expression if keep is not None else None,
        "rows": totals["rows"], "kept": totals["kept"], "dropped": totals["dropped"],
        "kept_share": totals["kept"] / totals["rows"] if totals["rows"] else None,
        "by_source": {name: {"kept": k, "dropped": d} for name, (k, d) in sorted(totals["sources"].items())},
        "histogram": {"bin_edges": edges.round(4).tolist(), "all": totals["hist_all"].tolist(),
                      "kept": totals["hist_kept"].tolist()},
        "parts": len(state.parts),
    }
    directory = state.out / REPORT_DIR
    state.will_write(*REPORT_FILES)
    directory.mkdir(exist_ok=True)
    atomic_write_bytes(directory / "report.json",
                       (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    from preroll._optional import available

    if available("matplotlib"):  # the figure repeats report.json's histogram: without the 'plots' extra, no figure
        _plot(directory / "histogram.png", edges, totals, keep)
    return report


def _plot(path: Path, edges: np.ndarray, totals: dict, keep: KeepFilter | None) -> None:
    from preroll._optional import require

    require("matplotlib", what="drawing a plot").use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = edges[1] - edges[0]
    dropped = totals["hist_all"] - totals["hist_kept"]
    ax.bar(edges[:-1], totals["hist_kept"], width=width, align="edge", color="#2a7ab0", label="kept")
    ax.bar(edges[:-1], dropped, width=width, align="edge", bottom=totals["hist_kept"], color="#c8c8c8",
           label="dropped")
    band = keep.bounds("p_success") if keep is not None else None
    if keep is not None and band is not None:
        lo, hi = max(band[0], 0.0), min(band[1], 1.0)
        ax.axvspan(lo, hi, color="#2a7ab0", alpha=0.12, label=f"keep {keep.expression}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("predicted success rate (p_success)")
    ax.set_ylabel("prompts")
    ax.set_title(f"{totals['rows']:,} prompts scored, {totals['kept']:,} kept")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
