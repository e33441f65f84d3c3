"""The book's settings as a trainer runs it: group size from the trainer's n, seed from the trainer's seed."""

from __future__ import annotations

from preroll.online import OnlineSettings
from preroll.online.errors import OnlineInputError

#: Smallest group: GRPO's advantage of a group of one is zero (or its raw reward), and the book counts every
#: group of one as zero-signal, so a group of one is never worth a rollout.
MIN_GROUP_SIZE = 2


def check_group_size(n: int, field: str) -> int:
    """``n`` rollouts per prompt, refused below :data:`MIN_GROUP_SIZE` (naming the trainer's field)."""
    if isinstance(n, bool) or int(n) != n or int(n) < MIN_GROUP_SIZE:
        raise OnlineInputError(f"is {n!r}; group-relative training needs at least {MIN_GROUP_SIZE} rollouts per "
                               "prompt (a group of one carries no signal)", field=field)
    return int(n)


def trainer_book_settings(settings: OnlineSettings, *, group_size: int, seed: int | None,
                          group_size_field: str) -> OnlineSettings:
    """``settings`` with ``group_size`` = the trainer's own n and ``seed`` = the trainer's seed, unless set.

    Why: the book scores prompts by how likely a group of that size is to carry
    signal (1 - p^n - (1-p)^n); a group size that is not the trainer's scores
    them for the wrong n. An explicit ``group_size`` that differs from the
    trainer's n is therefore an error, not a silent override.
    """
    group_size = check_group_size(group_size, group_size_field)
    update: dict = {}
    if "group_size" not in settings.model_fields_set:
        update["group_size"] = group_size
    elif settings.group_size != group_size:
        raise OnlineInputError(f"is {group_size} but the book's settings say group_size={settings.group_size}: the "
                               "book scores prompts for the group size the trainer rolls out; leave group_size unset",
                               field=group_size_field)
    if seed is not None and "seed" not in settings.model_fields_set:
        update["seed"] = int(seed)
    return settings.model_copy(update=update) if update else settings
