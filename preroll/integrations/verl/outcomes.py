"""Reading a finished verl step back into per-prompt reward groups (numpy only, no verl import).

verl scores a rollout token by token (``rm_scores`` / ``token_level_scores``,
the reward sits on the last response token) and groups the rollouts of one
prompt under one ``uid`` for the GRPO advantage. The prompt book wants the
opposite view: per *dataset index*, the list of rollout rewards of this step.
These functions do that regrouping on plain arrays so they can be tested and
timed without a GPU; the trainer and the legacy sampler only gather the arrays.

Two layouts occur:

- **DataProto** (verl's ``ray_trainer`` and the legacy ``data.sampler`` hook):
  one row per rollout, ``non_tensor_batch["uid"]`` and
  ``non_tensor_batch["index"]`` (the dataset's ``extra_info.index``), token
  scores in ``batch["token_level_scores"]``.
- **TransferQueue trajectories** (the v1 trainer): keys
  ``{uid}_{session}_{output}``; a multi-turn session writes several outputs,
  and the last one carries the session's reward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from preroll.online.errors import OnlineInputError


@dataclass(frozen=True)
class StepOutcomes:
    """One trainer step regrouped for :meth:`preroll.online.PromptBook.record`.

    ``indices[i]`` is a dataset position and ``rewards[i]`` the rewards of its
    rollouts in this step. ``unmatched`` counts groups whose uid had no known
    dataset position (for example prompts re-issued after a resume) and that
    were left out rather than guessed.
    """

    indices: np.ndarray             # int64, one entry per prompt group
    rewards: tuple[np.ndarray, ...]  # float64 rollout rewards per group
    unmatched: int = 0

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def rollouts(self) -> int:
        return int(sum(len(r) for r in self.rewards))


def sequence_scores(token_scores, response_mask=None) -> np.ndarray:
    """Per-rollout reward: token-level scores summed over the response (as verl's metrics do).

    Accepts a dense ``(rows, tokens)`` array/tensor (with an optional mask) or a
    sequence of 1-D per-row tensors (verl's jagged ``rm_scores``).
    """
    if hasattr(token_scores, "is_nested") and token_scores.is_nested:
        token_scores = token_scores.unbind()
    if isinstance(token_scores, (list, tuple)):
        return np.array([float(_to_numpy(row).sum()) for row in token_scores], dtype=np.float64)
    scores = _to_numpy(token_scores).astype(np.float64, copy=False)
    if scores.ndim != 2:
        raise OnlineInputError(f"must be (rollouts, tokens), got shape {scores.shape}", field="token_level_scores")
    if response_mask is not None:
        scores = scores * _to_numpy(response_mask)
    return scores.sum(axis=1)


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def group_by_uid(uids: Sequence, scores: Sequence[float], positions: Sequence[int] | Mapping | None = None,
                 *, uid_positions: Mapping[str, int] | None = None) -> StepOutcomes:
    """Group rollout rewards by ``uid``; each group is one prompt of the step.

    The dataset position of a group comes from ``positions`` (one entry per
    rollout row, e.g. the rows' ``index`` already mapped to positions) or from
    ``uid_positions`` (uid -> position, as remembered when the prompt was
    submitted). Rows of one uid must agree on their position. Groups keep the
    order in which their uid first appears.
    """
    uids = np.asarray(uids, dtype=object)
    scores = np.asarray(scores, dtype=np.float64)
    if uids.ndim != 1 or scores.shape != uids.shape:
        raise OnlineInputError(f"has {scores.shape} scores for {uids.shape} uids (one score per rollout row)",
                               field="scores")
    if uids.size == 0:
        return StepOutcomes(np.zeros(0, np.int64), ())
    keys, first, inverse = np.unique(uids.astype(str), return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")          # groups in order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    group_of_row = rank[inverse]
    sort = np.argsort(group_of_row, kind="stable")
    counts = np.bincount(group_of_row, minlength=len(order))
    rewards = tuple(np.split(scores[sort], np.cumsum(counts)[:-1]))
    group_uids = keys[order]

    if positions is not None:
        pos = np.asarray(positions)
        if pos.shape != uids.shape:
            raise OnlineInputError(f"has shape {pos.shape}, expected one position per rollout row {uids.shape}",
                                   field="positions")
        pos = pos.astype(np.int64)
        group_pos = pos[first[order]]
        clash = pos != group_pos[group_of_row]
        if clash.any():
            i = int(np.flatnonzero(clash)[0])
            raise OnlineInputError(f"uid {uids[i]!r} has rows at dataset positions {group_pos[group_of_row[i]]} and "
                                   f"{pos[i]} (one uid is one prompt)", field="positions", index=i)
        return StepOutcomes(group_pos, rewards)
    if uid_positions is None:
        raise OnlineInputError("give per-row positions or a uid -> position mapping", field="positions")
    found = np.array([uid in uid_positions for uid in group_uids], dtype=bool)
    group_pos = np.array([uid_positions[uid] for uid in group_uids[found]], dtype=np.int64)
    kept = tuple(r for r, ok in zip(rewards, found) if ok)
    return StepOutcomes(group_pos, kept, unmatched=int((~found).sum()))


def final_session_rows(keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rows holding each session's final output among v1 trajectory keys ``{uid}_{session}_{output}``.

    Returns ``(rows, uids)``: the position in ``keys`` of the last output of
    every ``(uid, session)`` and that row's uid. This is the row verl's GRPO
    advantage reads (``compute_advantage_for_multi_trajectories``); earlier
    outputs of a multi-turn session only repeat its reward.
    """
    best: dict[str, tuple[int, int]] = {}
    for row, key in enumerate(keys):
        parts = str(key).rsplit("_", 2)
        if len(parts) != 3 or not parts[2].isdigit():
            raise OnlineInputError(f"is {key!r}, not a trajectory key '{{uid}}_{{session}}_{{output}}'",
                                   field="keys", index=row)
        session = f"{parts[0]}_{parts[1]}"
        out = int(parts[2])
        if session not in best or best[session][0] < out:
            best[session] = (out, row)
    rows = np.array(sorted(r for _, r in best.values()), dtype=np.int64)
    uids = np.array([str(keys[r]).rsplit("_", 2)[0] for r in rows], dtype=object)
    return rows, uids


def outcomes_from_trajectories(keys: Sequence[str], scores: Sequence[float], uid_positions: Mapping[str, int],
                               *, padding: Sequence[bool] | None = None) -> StepOutcomes:
    """A v1 step (TransferQueue keys and per-row rewards) as per-prompt groups.

    ``padding`` marks verl's synthetic rows (tag ``is_padding``) added to make
    the batch divisible by the data-parallel size; they are dropped first.
    """
    keys = list(keys)
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) != len(keys):
        raise OnlineInputError(f"has {len(scores)} entries for {len(keys)} keys", field="scores")
    if padding is not None:
        keep = ~np.asarray(padding, dtype=bool)
        keys = [k for k, ok in zip(keys, keep) if ok]
        scores = scores[keep]
    rows, uids = final_session_rows(keys)
    return group_by_uid(uids, scores[rows], uid_positions=uid_positions)


def outcomes_from_dataproto(data, *, index_positions: Mapping | None = None,
                            uid_positions: Mapping[str, int] | None = None,
                            score_key: str = "token_level_scores") -> StepOutcomes:
    """A verl ``DataProto`` batch (one row per rollout) as per-prompt groups.

    Positions come from ``uid_positions`` when given, otherwise from the rows'
    ``non_tensor_batch["index"]`` (the dataset's ``extra_info.index``) through
    ``index_positions`` (extra_info.index -> dataset position; identity when
    None). Rewards are ``batch[score_key]`` summed over the response mask.
    """
    non_tensor = data.non_tensor_batch
    if "uid" not in non_tensor:
        raise OnlineInputError("has no non_tensor_batch['uid'] (verl assigns one per prompt before rollout)",
                               field="batch")
    if score_key not in data.batch.keys():
        raise OnlineInputError(f"has no batch[{score_key!r}] (rewards are computed before the sampler update)",
                               field="batch")
    mask = data.batch["response_mask"] if "response_mask" in data.batch.keys() else None
    scores = sequence_scores(data.batch[score_key], mask)
    if uid_positions is not None:
        return group_by_uid(non_tensor["uid"], scores, uid_positions=uid_positions)
    if "index" not in non_tensor:
        raise OnlineInputError("has no non_tensor_batch['index'] (the dataset's extra_info.index)", field="batch")
    raw = np.asarray(non_tensor["index"])
    if index_positions is None:
        pos = raw.astype(np.int64)
    else:
        try:
            pos = np.array([index_positions[_plain(v)] for v in raw], dtype=np.int64)
        except KeyError as exc:
            raise OnlineInputError(f"extra_info.index {exc.args[0]!r} is not in the dataset", field="batch") from None
    return group_by_uid(non_tensor["uid"], scores, pos)


def _plain(value):
    """numpy scalars -> Python values, so they hash like the dataset's own index values."""
    return value.item() if hasattr(value, "item") else value
