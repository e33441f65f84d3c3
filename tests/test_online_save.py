"""Saving the prompt book: the neighbour graph (computed once, 256 MB at a million prompts) is written only when it
changed, and a save interrupted at any point leaves the previous book loadable."""

from __future__ import annotations

import numpy as np
import pytest

import preroll.online.book as book_module
from preroll.online import OnlineSettings, PromptBook


def _texts(n):
    return [f"problem {i} on {'algebra' if i % 2 else 'geometry'}" for i in range(n)]


def _embeddings(n=60, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, 8))
    return np.repeat(centres, n // 6, axis=0) + 0.05 * rng.standard_normal((n, 8))


def _book(seed=0, prepare=True):
    book = PromptBook(_texts(60), settings=OnlineSettings(neighbours=5, seed=1), embeddings=_embeddings(seed=seed))
    if not prepare:
        return book                 # no graph until the first record or prepare()
    book.prepare()
    book.record(0, [1, 2, 3], [[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    return book


def _graph_files(folder, name="b.npz"):
    return sorted(p for p in folder.iterdir() if p.name.startswith(name + ".graph-"))


def test_an_unchanged_graph_is_not_written_again(tmp_path):
    book = _book()
    path = book.save(tmp_path / "b.npz")
    [graph] = _graph_files(tmp_path)
    before, book_before = graph.stat(), path.stat()
    book.record(1, [4], [[1.0, 0.0]])
    book.save(path)
    after = graph.stat()
    assert _graph_files(tmp_path) == [graph]
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)   # not rewritten
    assert path.stat().st_ino != book_before.st_ino                                      # the state was
    loaded = PromptBook.load(path, _texts(60))
    assert np.array_equal(loaded._graph[0], book._graph[0]) and np.array_equal(loaded._graph[1], book._graph[1])
    assert loaded.stats() == book.stats()
    # a loaded book knows its graph's file: saving it back does not rewrite it either
    loaded.save(path)
    assert graph.stat().st_mtime_ns == before.st_mtime_ns


def test_the_saved_bytes_do_not_depend_on_the_file_name(tmp_path):
    """Ranks of a distributed run save one book under their own names; the files must be identical."""
    book = _book()
    a, b = book.save(tmp_path / "book-rank0.npz"), book.save(tmp_path / "book-rank1.npz")
    assert a.read_bytes() == b.read_bytes()
    assert len(_graph_files(tmp_path, "book-rank0.npz")) == len(_graph_files(tmp_path, "book-rank1.npz")) == 1
    assert np.array_equal(PromptBook.load(b, _texts(60))._graph[0], book._graph[0])


def test_a_new_graph_is_written_and_the_old_one_removed(tmp_path):
    book = _book(prepare=False)
    path = book.save(tmp_path / "b.npz")
    assert _graph_files(tmp_path) == []            # no graph yet
    book.prepare()
    book.save(path)
    [first] = _graph_files(tmp_path)
    other = _book(seed=7)                           # another graph over the same prompts
    book.load_state_dict(other.state_dict())
    book.save(path)
    [second] = _graph_files(tmp_path)
    assert second != first
    loaded = PromptBook.load(path, _texts(60))
    assert np.array_equal(loaded._graph[0], other._graph[0])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary file left behind


def test_a_new_folder_gets_a_hard_link_not_a_copy(tmp_path):
    book = _book()
    book.save(tmp_path / "checkpoint-1" / "b.npz")
    book.record(1, [4], [[1.0, 0.0]])
    book.save(tmp_path / "checkpoint-2" / "b.npz")
    [one], [two] = _graph_files(tmp_path / "checkpoint-1"), _graph_files(tmp_path / "checkpoint-2")
    assert one.name == two.name and one.stat().st_ino == two.stat().st_ino
    # the first checkpoint removed (a trainer keeps the last few): the second still loads
    for p in (tmp_path / "checkpoint-1").iterdir():
        p.unlink()
    assert PromptBook.load(tmp_path / "checkpoint-2" / "b.npz", _texts(60)).stats() == book.stats()


def test_a_crash_mid_save_leaves_the_previous_book_loadable(tmp_path, monkeypatch):
    book = _book()
    path = book.save(tmp_path / "b.npz")
    saved_stats, saved_graph = book.stats(), book._graph[0].copy()
    book.load_state_dict(_book(seed=7).state_dict())     # a new graph: its file is written first ...
    book.record(1, [4], [[1.0, 0.0]])
    real = book_module.atomic_open

    def crash_on_the_book(target, mode="w", **kw):
        if target == path:                                # ... and the process dies writing the book itself
            raise KeyboardInterrupt
        return real(target, mode, **kw)

    monkeypatch.setattr(book_module, "atomic_open", crash_on_the_book)
    with pytest.raises(KeyboardInterrupt):
        book.save(path)
    monkeypatch.undo()
    assert len(_graph_files(tmp_path)) == 2               # the old graph is kept until a new book names another
    loaded = PromptBook.load(path, _texts(60))
    assert loaded.stats() == saved_stats and np.array_equal(loaded._graph[0], saved_graph)
    book.save(path)                                       # the next save completes and tidies up
    assert len(_graph_files(tmp_path)) == 1


def test_a_missing_or_altered_graph_file_warns_and_the_graph_is_rebuilt(tmp_path, caplog):
    """The graph is derived data: a book copied without it (or with a stale one) loads every recorded outcome and
    rebuilds the same graph on first use, instead of refusing the book."""
    book = _book()
    path = book.save(tmp_path / "b.npz")
    saved_stats, saved_graph = book.stats(), book._graph[0].copy()
    [graph] = _graph_files(tmp_path)
    with np.load(graph) as data:
        index, sim = data["index"], data["similarity"]
    np.savez(graph, index=index[::-1], similarity=sim)
    with caplog.at_level("WARNING", logger="preroll.online.book"):
        altered = PromptBook.load(path, _texts(60), embeddings=_embeddings())
    assert "sha256 differs" in caplog.text
    graph.unlink()
    caplog.clear()
    with caplog.at_level("WARNING", logger="preroll.online.book"):
        missing = PromptBook.load(path, _texts(60), embeddings=_embeddings())
    assert "missing or unreadable" in caplog.text
    for loaded in (altered, missing):
        assert loaded.stats() == saved_stats
        assert loaded._graph is None                      # not the altered one
        loaded.prepare()
        assert np.array_equal(loaded._graph[0], saved_graph)


def test_one_file_books_still_load_and_can_still_be_written(tmp_path):
    """``graph_beside=False`` writes the earlier single-file format (the graph inside); both load."""
    book = _book()
    path = book.save(tmp_path / "b.npz", graph_beside=False)
    assert _graph_files(tmp_path) == []
    assert "graph.index" in np.load(path).files
    loaded = PromptBook.load(path, _texts(60))
    assert np.array_equal(loaded._graph[1], book._graph[1])


def test_a_remote_checkpoint_carries_its_graph():
    """A remote folder is uploaded file by file from a temporary copy: the book goes as one file."""
    pytest.importorskip("fsspec")
    from preroll.integrations.core.store import load_state, save_state

    book = _book()
    save_state("memory://bucket/graph-run/step_1", book, {"position": 3}, book_file="b.npz", pool_file="p.json")
    loaded, pool = load_state("memory://bucket/graph-run/step_1", PromptBook(_texts(60)), book_file="b.npz",
                              pool_file="p.json")
    assert pool == {"position": 3} and np.array_equal(loaded._graph[0], book._graph[0])
