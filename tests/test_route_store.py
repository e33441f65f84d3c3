"""The durable history store: round trips, one-time imports, and crash safety."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from preroll.data import Outcome, RecordError
from preroll.serve.store import Decision, HistoryStore


def _outcomes(tag: str, n: int) -> list[Outcome]:
    return [Outcome(prompt=f"{tag} prompt {i}", successes=float(i % 3), attempts=2.0 + (i % 3), step=i,
                    id=f"{tag}-{i}") for i in range(n)]


def test_add_and_read_back_in_order(tmp_path):
    path = tmp_path / "h.sqlite"
    with HistoryStore(path) as store:
        assert store.add("small", _outcomes("a", 5)) == 5
        assert store.add("large", _outcomes("b", 3)) == 3
        assert store.add("small", _outcomes("c", 2)) == 2
    with HistoryStore(path) as store:  # reopened: everything is on disk
        assert store.models() == ["large", "small"]
        assert store.count("small") == 7 and store.count() == 10
        assert store.records("small") == _outcomes("a", 5) + _outcomes("c", 2)
        assert store.records("unknown") == []
        # a live router's window: the newest outcomes, still in the order they were added; nothing is deleted
        assert store.records("small", newest=3) == _outcomes("a", 5)[-1:] + _outcomes("c", 2)
        assert store.records("small", newest=100) == store.records("small")
        assert store.count("small") == 7


def test_bad_batch_stores_nothing(tmp_path):
    with HistoryStore(tmp_path / "h.sqlite") as store:
        store.add("m", _outcomes("ok", 2))
        with pytest.raises(TypeError, match="Outcome"):
            store.add("m", [*_outcomes("x", 3), {"prompt": "raw dict", "successes": 1, "attempts": 1}])
        with pytest.raises(ValueError, match="model name"):
            store.add("  ", _outcomes("y", 1))
        assert store.records("m") == _outcomes("ok", 2)


def test_decision_log_round_trip(tmp_path):
    d = Decision("r1", 1.5, "q", "routed", "small", "large", {"small": 0.25, "large": 0.75},
                 "small->large; timeout after 1s")
    with HistoryStore(tmp_path / "h.sqlite") as store:
        assert store.log_decisions([d, Decision("r2", 2.0, None, "pinned", None, None, None, None)]) == 2
    with HistoryStore(tmp_path / "h.sqlite") as store:
        assert store.decision("r1") == d and store.decision("r2").how == "pinned"
        assert store.decision("r3") is None and store.decision_count() == 2


def test_import_file_once_per_content(tmp_path):
    hist = tmp_path / "h.jsonl"
    hist.write_text("\n".join(json.dumps({"prompt": f"q{i}", "successes": 1, "attempts": 2}) for i in range(4)))
    with HistoryStore(tmp_path / "h.sqlite") as store:
        assert store.import_file("m", hist) == 4
        assert store.import_file("m", hist) == 0          # same content: not duplicated
        assert store.import_file("other", hist) == 4      # per model
        hist.write_text(hist.read_text() + "\n" + json.dumps({"prompt": "q9", "success_rate": 0.5}))
        assert store.import_file("m", hist) == 5          # new content: imported
        assert store.count("m") == 9


def test_import_of_bad_file_names_line_and_keeps_store(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "successes": 1, "attempts": 2}) + "\n"
                   + json.dumps({"prompt": "q2", "sucesses": 1}) + "\n")
    with HistoryStore(tmp_path / "h.sqlite") as store:
        store.add("m", _outcomes("keep", 2))
        with pytest.raises(RecordError) as info:
            store.import_file("m", bad)
        assert info.value.line == 2 and info.value.field == "sucesses"
        assert store.records("m") == _outcomes("keep", 2)


# A child process that acknowledges one batch, then dies inside the transaction
# of the next one: sqlite's progress handler runs os._exit while the INSERTs
# of the second batch are executing, so that batch is torn mid-write.
_CRASH_CHILD = textwrap.dedent("""
    import os, sys
    from preroll.data import Outcome
    from preroll.serve.store import Decision, HistoryStore
    store = HistoryStore(sys.argv[1])
    batch = lambda tag, n: [Outcome(prompt=f"{tag} {i}", successes=1.0, attempts=1.0) for i in range(n)]
    store.add("m", batch("acked", 500))
    print("ACK", flush=True)
    store._conn.set_progress_handler(lambda: os._exit(9), 20_000)
    store.add("m", batch("torn", 20_000))
    print("SURVIVED", flush=True)
""")


def test_crash_inside_a_write_keeps_acknowledged_rows_and_drops_the_torn_batch(tmp_path):
    path = tmp_path / "h.sqlite"
    proc = subprocess.run([sys.executable, "-c", _CRASH_CHILD, str(path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 9, proc.stderr
    assert proc.stdout.split() == ["ACK"]
    with HistoryStore(path) as store:
        prompts = [r.prompt for r in store.records("m")]
    assert prompts == [f"acked {i}" for i in range(500)]


# A child that adds batches as fast as it can and prints each acknowledgement;
# the parent SIGKILLs it at an arbitrary moment.
_KILL_CHILD = textwrap.dedent("""
    import sys
    from preroll.data import Outcome
    from preroll.serve.store import Decision, HistoryStore
    store = HistoryStore(sys.argv[1])
    for b in range(10_000):
        store.add("m", [Outcome(prompt=f"b{b} r{i}", successes=0.0, attempts=1.0) for i in range(300)])
        print(b, flush=True)
""")


def test_sigkill_at_any_moment_loses_no_acknowledged_batch(tmp_path):
    path = tmp_path / "h.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    acked = []
    deadline = time.monotonic() + 60
    while len(acked) < 5 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(int(line))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(acked) == 5, "child did not acknowledge 5 batches"
    with HistoryStore(path) as store:
        rows = [r.prompt for r in store.records("m")]
    batches: dict[int, int] = {}
    for p in rows:
        b = int(p.split()[0][1:])
        batches[b] = batches.get(b, 0) + 1
    assert set(acked) <= set(batches)                     # every acknowledged batch is there ...
    assert all(n == 300 for n in batches.values())        # ... and no batch is there in part
    assert sorted(batches) == list(range(len(batches)))   # in order, no gaps
