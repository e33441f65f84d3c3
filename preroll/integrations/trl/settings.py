"""Settings of the TRL integration: the book's settings plus where the trainer finds ids and files."""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath

from pydantic import BaseModel, ConfigDict, Field, field_validator

from preroll.online import OnlineSettings


class PrerollTRLSettings(BaseModel):
    """What :class:`preroll.integrations.trl.PrerollGRPOTrainer` needs beyond the book's own settings.

    ``book.group_size`` and ``book.seed`` follow the trainer (``num_generations``,
    ``args.seed``) unless set explicitly; an explicit ``group_size`` that differs
    from ``num_generations`` is an error (the book would score prompts for the
    wrong group size).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Settings of the prompt book (reward_range, pool_factor, drift, neighbours, exploration, seed).
    book: OnlineSettings = Field(default_factory=OnlineSettings)
    #: Dataset column with stable prompt ids; when absent, ids are the sha256 of the prompt text.
    id_column: str = "id"
    #: File name of the book inside each checkpoint directory.
    book_file: str = "preroll_book.npz"
    #: File name of the candidate-pool stream's position inside each checkpoint directory.
    pool_file: str = "preroll_pool.json"
    #: How many generation batches' choices the trainer keeps in ``preroll_log`` (for audits and tests).
    log_size: int = Field(default=10_000, ge=0)

    @field_validator("book_file", "pool_file")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        """A bare file name: the book is written inside each checkpoint folder, never beside or above it."""
        parts = {PurePosixPath(value).name, PureWindowsPath(value).name}
        if not value.strip() or parts != {value} or value in (".", ".."):
            raise ValueError(f"must be a plain file name inside the checkpoint folder (got {value!r})")
        return value

    @field_validator("id_column")
    @classmethod
    def _column_name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a dataset column")
        return value


def make_trl_settings(preroll) -> PrerollTRLSettings:
    """Integration settings from None, an :class:`OnlineSettings` or :class:`PrerollTRLSettings`."""
    from preroll.integrations.trl.errors import PrerollTRLError

    if preroll is None:
        return PrerollTRLSettings()
    if isinstance(preroll, PrerollTRLSettings):
        return preroll
    if isinstance(preroll, OnlineSettings):
        return PrerollTRLSettings(book=preroll)
    raise PrerollTRLError(f"preroll= must be None, OnlineSettings or PrerollTRLSettings (got {type(preroll).__name__})")
