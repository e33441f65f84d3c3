"""The output directory of a scoring run: part files, a manifest of finished parts, atomic writes.

Why a manifest: a run over a million prompts takes a while, and an interrupted
run should resume where it stopped, not start over, and the result must be the
same as an uninterrupted run's. Each part is written to a temporary name and
renamed into place (a rename is atomic on POSIX), then recorded in
``_manifest.json`` (itself replaced atomically). A part file without a
manifest entry (killed between the two steps) is simply written again: parts
are deterministic. Names start with ``_`` so Arrow, Spark and Ray dataset
readers pointed at the directory read the parts only.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from preroll.errors import OutputError
from preroll.outputs import atomic_write_bytes

MANIFEST = "_manifest.json"
REPORT_DIR = "_report"
KIND = "preroll.score-run"
STATE_VERSION = 1
HIST_BINS = 50


class OutputDirError(OutputError):
    """An output directory that may not be used as asked (exists, belongs to another run, overlaps the input)."""


@dataclass
class PartStats:
    """What a finished part holds, kept in the manifest so the report never rereads the parts."""

    file: str
    input: str
    rows: int
    kept: int
    hist_all: list[int]
    hist_kept: list[int]
    sources: dict[str, list[int]] = field(default_factory=dict)  # source -> [kept, dropped]

    @classmethod
    def measure(cls, file: str, input: str, p_success: np.ndarray, mask: np.ndarray, sources) -> "PartStats":
        edges = np.linspace(0.0, 1.0, HIST_BINS + 1)
        hist_all = np.histogram(p_success, bins=edges)[0]
        hist_kept = np.histogram(p_success[mask], bins=edges)[0]
        by_source: dict[str, list[int]] = {}
        if sources is not None:
            for name, keep in zip(sources, mask):
                slot = by_source.setdefault(str(name), [0, 0])
                slot[0 if keep else 1] += 1
        return cls(file, input, int(len(p_success)), int(mask.sum()), hist_all.tolist(), hist_kept.tolist(), by_source)


class RunState:
    """The manifest of one output directory: the run's identity and its finished parts."""

    def __init__(self, out: Path, run_key: dict, inputs: list[str]) -> None:
        self.out = out
        self.run_key = run_key
        self.inputs = inputs
        self.parts: dict[str, PartStats] = {}
        self.complete = False

    @property
    def path(self) -> Path:
        return self.out / MANIFEST

    # -- opening ------------------------------------------------------------------------------------

    @classmethod
    def open(cls, out: Path, run_key: dict, inputs: list[str], *, resume: bool, force: bool) -> "RunState":
        """Start or resume the run in ``out``; refuse a directory that belongs to something else."""
        manifest_path = out / MANIFEST
        if out.exists() and not out.is_dir():
            raise OutputDirError(f"--out {out} is a file; scoring writes a directory of parts")
        existing = None
        if manifest_path.is_file():
            try:
                existing = json.loads(manifest_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise OutputDirError(f"{manifest_path}: damaged manifest ({exc}); remove the directory") from None
            if existing.get("kind") != KIND:
                raise OutputDirError(f"{manifest_path} is not a preroll scoring manifest; choose another --out")
        elif out.is_dir() and any(out.iterdir()):
            raise OutputDirError(f"--out {out} exists and is not a preroll scoring output; choose another directory "
                                 "(it is never deleted, even with --force)")
        state = cls(out, run_key, inputs)
        if existing is not None:
            if force:
                state._clear(existing)
            elif not resume:
                raise OutputDirError(f"--out {out} holds a scoring run already; pass --resume to continue it "
                                     "or --force to start over")
            else:
                if existing.get("version") != STATE_VERSION:
                    raise OutputDirError(f"{manifest_path}: state version {existing.get('version')!r}, expected "
                                         f"{STATE_VERSION}; pass --force to start over")
                differs = [k for k in sorted(set(run_key) | set(existing.get("run_key", {})))
                           if existing.get("run_key", {}).get(k) != run_key.get(k)]
                if differs:
                    raise OutputDirError(f"cannot resume {out}: its run differs in {', '.join(differs)} "
                                         "(other model, input or options); pass --force to start over")
                state.parts = {pid: PartStats(**p) for pid, p in existing.get("parts", {}).items()
                               if (out / p["file"]).is_file()}
                state.complete = bool(existing.get("complete")) and len(state.parts) == len(existing.get("parts", {}))
        out.mkdir(parents=True, exist_ok=True)
        for tmp in out.glob(".*.tmp"):  # left by a killed run
            tmp.unlink()
        state.save()
        return state

    def _clear(self, existing: dict) -> None:
        for p in existing.get("parts", {}).values():
            (self.out / p["file"]).unlink(missing_ok=True)
        for stray in self.out.glob("part-*"):
            stray.unlink()
        shutil.rmtree(self.out / REPORT_DIR, ignore_errors=True)
        shutil.rmtree(self.out / "_staging", ignore_errors=True)
        (self.out / MANIFEST).unlink(missing_ok=True)

    # -- recording ------------------------------------------------------------------------------------

    def is_done(self, part_id: str) -> bool:
        return part_id in self.parts

    def finish_part(self, part_id: str, stats: PartStats) -> None:
        self.parts[part_id] = stats
        self.save()

    def save(self) -> None:
        manifest = {"kind": KIND, "version": STATE_VERSION, "run_key": self.run_key, "inputs": self.inputs,
                    "complete": self.complete,
                    "parts": {pid: asdict(self.parts[pid]) for pid in sorted(self.parts)}}
        atomic_write_bytes(self.path, (json.dumps(manifest, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))

    def part_files(self) -> list[Path]:
        return [self.out / self.parts[pid].file for pid in sorted(self.parts)]
