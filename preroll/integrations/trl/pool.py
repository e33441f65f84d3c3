"""The TRL trainer's candidate pools: the integrations' shared stream (:class:`preroll.integrations.core.PoolStream`)."""

from preroll.integrations.core.pool import PoolStream

__all__ = ["PoolStream"]
