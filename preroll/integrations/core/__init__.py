"""What the TRL and verl integrations share, so the same dataset behaves the same under either trainer.

- :func:`prompt_text`: one prompt-to-text rule for strings and chat messages (prompt ids and neighbours);
- :class:`PoolStream`: one candidate-pool stream (seeded permutations, resumable from one integer);
- :func:`trainer_book_settings`: the book's group size and seed from the trainer's own n and seed;
- :mod:`.store`: the book and pool state written to and read from a checkpoint folder, local or remote.

No trainer import here: both integrations and their tests use these without TRL or verl.
"""

from preroll.integrations.core.pool import PoolStream
from preroll.integrations.core.settings import MIN_GROUP_SIZE, check_group_size, trainer_book_settings
from preroll.integrations.core.text import prompt_text

__all__ = ["PoolStream", "prompt_text", "trainer_book_settings", "check_group_size", "MIN_GROUP_SIZE"]
