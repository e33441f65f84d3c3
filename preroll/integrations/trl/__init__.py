"""TRL integration: ``PrerollGRPOTrainer``, a ``trl.GRPOTrainer`` whose prompts a preroll prompt book chooses.

Needs the ``trl`` extra (``pip install 'preroll[trl]'``). See docs/trl.md.
"""

from preroll.integrations.trl.errors import PrerollTRLError
from preroll.integrations.trl.settings import PrerollTRLSettings

__all__ = ["PrerollGRPOTrainer", "PrerollTRLSettings", "PrerollTRLError", "GenerationChoice"]


def __getattr__(name):
    # The trainer imports trl (heavy, optional): load it only when it is asked for.
    if name in ("PrerollGRPOTrainer", "GenerationChoice"):
        try:
            import trl  # noqa: F401
        except ImportError as exc:
            from preroll.errors import MissingExtraError

            raise MissingExtraError(f"PrerollGRPOTrainer needs TRL: pip install 'preroll[trl]' ({exc})") from exc
        from preroll.integrations.trl import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
