"""Real success rates for the scheduling simulator.

The shared DAPO-Math release gives, per (policy, step) snapshot, 512 prompts
with successes out of 10 rollouts. The simulator treats each prompt's true
rate as unknown and draws it from Beta(successes + 1, failures + 1), the
posterior under a uniform prior, rather than using k/10: a prompt seen
0/10 may still have rate 0.05, and allocating on exact zeros would flatter
every rule.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from preroll.data import Outcome, Snapshot, load_v0
from preroll.data.paths import dapo_dir


@dataclass(frozen=True)
class SnapshotRecords:
    """One :class:`~preroll.data.Snapshot` (policy, step) with its prompts and observed outcomes, in file order."""

    snapshot: Snapshot
    records: tuple[Outcome, ...]

    @property
    def policy(self) -> str | None:
        return self.snapshot.policy

    @property
    def step(self) -> int | None:
        return self.snapshot.step

    @property
    def name(self) -> str:
        return self.snapshot.name

    @property
    def ids(self) -> list[str]:
        """Each record's id; its prompt text where the history gives no id (a user's file may not)."""
        return [r.id if r.id is not None else r.prompt for r in self.records]

    @property
    def successes(self) -> np.ndarray:
        return np.array([r.successes for r in self.records], dtype=float)

    @property
    def attempts(self) -> np.ndarray:
        return np.array([r.attempts for r in self.records], dtype=float)

    def draw_rates(self, rng: np.random.Generator) -> np.ndarray:
        """True rates for one simulated world: Beta(s + 1, f + 1) per prompt."""
        s, a = self.successes, self.attempts
        return rng.beta(s + 1.0, a - s + 1.0)


def load_snapshots(path: str | Path | None = None) -> list[SnapshotRecords]:
    """All (policy, step) snapshots of a V_0 context file (default: the bundled DAPO-Math one), sorted by policy
    then step."""
    path = Path(path) if path is not None else dapo_dir() / "context.jsonl"
    return snapshots_of(load_v0(path))


def load_history_snapshots(path: str | Path) -> list[SnapshotRecords]:
    """The (policy, step) snapshots of a user's history file (JSONL, CSV or Parquet in the records schema of
    :func:`preroll.data.load_records`); rows without policy or step form one snapshot per what they do say."""
    from preroll.data import load_records

    return snapshots_of(load_records(path))


def snapshots_of(records) -> list[SnapshotRecords]:
    """Records grouped by (policy, step), sorted by policy then step, file order kept within a snapshot."""
    groups: dict[Snapshot, list[Outcome]] = defaultdict(list)
    for rec in records:
        groups[Snapshot.of(rec)].append(rec)
    return [SnapshotRecords(snap, tuple(groups[snap])) for snap in sorted(groups, key=lambda s: s.sort_key)]


def data_digest(snapshots: list[SnapshotRecords]) -> str:
    """A short fingerprint of the snapshots' names, ids and outcomes (keys cached predictions to their data)."""
    import hashlib

    h = hashlib.sha1()
    for s in snapshots:
        h.update(s.name.encode())
        for i, k, n in zip(s.ids, s.successes, s.attempts):
            h.update(f"\0{i}\0{k:g}/{n:g}".encode())
    return h.hexdigest()[:10]


def earlier_snapshot(snap: SnapshotRecords, snapshots: list[SnapshotRecords]) -> SnapshotRecords | None:
    """The same policy's latest snapshot before ``snap`` (None at its first step)."""
    earlier = [s for s in snapshots if s.policy == snap.policy and s.step < snap.step]
    return max(earlier, key=lambda s: s.step) if earlier else None
