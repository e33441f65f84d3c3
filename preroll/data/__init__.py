"""Outcome records: schema, validation and file loaders."""

from preroll.data.errors import RecordError
from preroll.data.loaders import load_queries, load_records
from preroll.data.records import Outcome, OutcomeTable, make_outcome
from preroll.data.snapshot import Snapshot
from preroll.data.v0 import load_v0

__all__ = ["RecordError", "Snapshot", "Outcome", "OutcomeTable", "make_outcome", "load_records", "load_queries", "load_v0"]
