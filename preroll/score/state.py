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
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from preroll.errors import InputError, OutputError
from preroll.outputs import atomic_write_bytes
from preroll.validation import from_pydantic

MANIFEST = "_manifest.json"
REPORT_DIR = "_report"
STAGING_DIR = "_staging"
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
            for name, keep in zip(sources, mask, strict=True):
                slot = by_source.setdefault(str(name), [0, 0])
                slot[0 if keep else 1] += 1
        return cls(file, input, int(len(p_success)), int(mask.sum()), hist_all.tolist(), hist_kept.tolist(), by_source)


#: Names preroll writes in an output directory: parts (local ``part-00000-00001``, Ray ``part-ray-00001``),
#: the report's two files, and the Ray staging folder. A manifest naming anything else is refused.
_OWN_NAME = re.compile(r"(part-[A-Za-z0-9-]{1,64}\.(parquet|jsonl)|_report/(report\.json|histogram\.png)|_staging)")
REPORT_FILES = (f"{REPORT_DIR}/report.json", f"{REPORT_DIR}/histogram.png")


def _own_name(value: str) -> str:
    if not isinstance(value, str) or not _OWN_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a file name preroll writes in a scoring output")
    return value


OwnName = Annotated[str, AfterValidator(_own_name)]


class _PartModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: OwnName
    input: str
    rows: int = Field(ge=0)
    kept: int = Field(ge=0)
    hist_all: list[int]
    hist_kept: list[int]
    sources: dict[str, Annotated[list[int], Field(min_length=2, max_length=2)]] = {}


class _ManifestModel(BaseModel):
    """``_manifest.json`` as read back: a file like any input, so it is validated before anything trusts it."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    version: int
    run_key: dict = {}
    inputs: list[str] = []
    complete: bool = False
    parts: dict[str, _PartModel] = {}
    written: list[OwnName] = []


def _read_manifest(path: Path) -> _ManifestModel:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise OutputDirError(f"{path}: damaged manifest ({exc}); remove the directory") from None
    if not isinstance(raw, dict) or raw.get("kind") != KIND:
        raise OutputDirError(f"{path} is not a preroll scoring manifest; choose another --out")
    try:
        return _ManifestModel.model_validate(raw)
    except ValidationError as exc:
        err = from_pydantic(exc, InputError, path=path)
        raise OutputDirError(f"damaged manifest: {err}; nothing was deleted, remove the directory yourself "
                             "or choose another --out") from None


class RunState:
    """The manifest of one output directory: the run's identity, its finished parts, every file it wrote.

    ``written`` names each file preroll wrote (or was about to write) in the directory,
    recorded *before* the write: ``--force`` deletes exactly those, never anything else.
    """

    def __init__(self, out: Path, run_key: dict, inputs: list[str]) -> None:
        self.out = out
        self.run_key = run_key
        self.inputs = inputs
        self.parts: dict[str, PartStats] = {}
        self.written: list[str] = []
        self.complete = False

    @property
    def path(self) -> Path:
        return self.out / MANIFEST

    # -- opening ------------------------------------------------------------------------------------

    @classmethod
    def open(cls, out: Path, run_key: dict, inputs: list[str], *, resume: bool, force: bool) -> "RunState":
        """Start or resume the run in ``out``; refuse a directory that belongs to something else.

        A run that finished no part (its start failed: a missing ``--policy``, a bad first row)
        holds nothing worth keeping, so any later command starts it over without ``--force``.
        """
        manifest_path = out / MANIFEST
        if out.exists() and not out.is_dir():
            raise OutputDirError(f"--out {out} is a file; scoring writes a directory of parts")
        existing = None
        if manifest_path.is_file():
            existing = _read_manifest(manifest_path)
        elif out.is_dir() and any(out.iterdir()):
            raise OutputDirError(f"--out {out} exists and is not a preroll scoring output; choose another directory "
                                 "(it is never deleted, even with --force)")
        report = out / REPORT_DIR
        if report.is_symlink() or (report.exists() and not report.is_dir()):
            raise OutputDirError(f"{report} is a link or a file, not the report folder preroll writes; remove it "
                                 "(nothing is written through it)")
        state = cls(out, run_key, inputs)
        if existing is not None:
            if force or (not existing.parts and not existing.complete):
                state._clear(existing)
            elif not resume:
                raise OutputDirError(f"--out {out} holds a scoring run already; pass --resume to continue it "
                                     "or --force to start over")
            else:
                if existing.version != STATE_VERSION:
                    raise OutputDirError(f"{manifest_path}: state version {existing.version!r}, expected "
                                         f"{STATE_VERSION}; pass --force to start over")
                differs = [k for k in sorted(set(run_key) | set(existing.run_key))
                           if existing.run_key.get(k) != run_key.get(k)]
                if differs:
                    raise OutputDirError(f"cannot resume {out}: its run differs in {', '.join(differs)} "
                                         "(other model, input or options); pass --force to start over")
                state.parts = {pid: PartStats(**p.model_dump()) for pid, p in existing.parts.items()
                               if state._inside(p.file) is not None and (out / p.file).is_file()}
                state.written = list(dict.fromkeys(existing.written))
                state.complete = existing.complete and len(state.parts) == len(existing.parts)
        out.mkdir(parents=True, exist_ok=True)
        for tmp in out.glob(".*.tmp"):  # left by a killed run (atomic writes' temporary names)
            tmp.unlink()
        state.save()
        return state

    def _inside(self, name: str) -> Path | None:
        """``out/name`` if it resolves to a path inside ``out`` (a symlinked ``_report`` may not), else None."""
        root = self.out.resolve()
        target = (self.out / name).resolve()
        return target if root in target.parents else None

    def _clear(self, existing: _ManifestModel) -> None:
        """Delete the files the earlier run recorded as its own (each checked to stay inside ``out``)."""
        names = [p.file for p in existing.parts.values()] + list(existing.written)
        for name in dict.fromkeys(names):
            target = self._inside(name)
            if target is None:
                continue
            path = self.out / name
            if name == STAGING_DIR:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
            elif path.is_file() or path.is_symlink():
                path.unlink(missing_ok=True)
        report = self.out / REPORT_DIR
        if report.is_dir() and not report.is_symlink() and not any(report.iterdir()):
            report.rmdir()
        (self.out / MANIFEST).unlink(missing_ok=True)

    # -- recording ------------------------------------------------------------------------------------

    def is_done(self, part_id: str) -> bool:
        return part_id in self.parts

    def will_write(self, *names: str) -> None:
        """Record ``names`` as this run's files before writing them (a kill after the write leaves them owned)."""
        new = [_own_name(n) for n in names if n not in self.written]
        if new:
            self.written.extend(new)
            self.save()

    def finish_part(self, part_id: str, stats: PartStats) -> None:
        self.parts[part_id] = stats
        self.save()

    def save(self) -> None:
        manifest = {"kind": KIND, "version": STATE_VERSION, "run_key": self.run_key, "inputs": self.inputs,
                    "complete": self.complete,
                    "parts": {pid: asdict(self.parts[pid]) for pid in sorted(self.parts)},
                    "written": self.written}
        atomic_write_bytes(self.path, (json.dumps(manifest, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))

    def part_files(self) -> list[Path]:
        return [self.out / self.parts[pid].file for pid in sorted(self.parts)]
