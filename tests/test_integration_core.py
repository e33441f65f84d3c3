"""The integrations' shared core: one prompt-to-text rule, one pool stream, the trainer's group size, and the
book saved to and restored from a checkpoint folder, local or remote (fsspec's in-memory filesystem stands in
for object storage)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from preroll.integrations.core import PoolStream, prompt_text, trainer_book_settings
from preroll.integrations.core.store import is_remote, load_state, save_state
from preroll.online import OnlineSettings, PromptBook
from preroll.online.book import GRAPH_INFIX
from preroll.online.errors import OnlineInputError

PROMPTS = [f"Compute {i} times {i + 3}." for i in range(40)]


def test_one_prompt_text_rule_for_strings_and_chat_messages():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Solve x^2=4."}]
    assert prompt_text(chat) == "Solve x^2=4."
    assert prompt_text("plain") == "plain"
    # few-shot turns are part of the prompt; system and developer instructions are not
    shots = [{"role": "developer", "content": "Answer in LaTeX."}, {"role": "user", "content": "1+1?"},
             {"role": "assistant", "content": "2"}, {"role": "user", "content": "2+2?"}]
    assert prompt_text(shots) == "1+1?\n2\n2+2?"
    assert prompt_text([{"role": "system", "content": "only system"}]) == "only system"
    assert prompt_text([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]) \
        == "What is it?"
    assert prompt_text(np.array([{"role": "user", "content": "from parquet"}], dtype=object)) == "from parquet"


def test_trl_and_verl_read_a_prompt_with_the_same_rule():
    from preroll.integrations.verl import message_text
    from preroll.integrations.verl.plan import prompt_text as verl_rule

    chat = [{"role": "system", "content": "Think."}, {"role": "user", "content": "What is 3 plus 10?"}]
    assert message_text(chat) == prompt_text(chat) and verl_rule is prompt_text
    pytest.importorskip("trl")
    from preroll.integrations.trl import trainer as trl_trainer

    assert trl_trainer.prompt_text is prompt_text


def test_pool_stream_covers_every_prompt_once_per_pass_takes_any_size_and_resumes():
    stream = PoolStream(10, size=4, seed=4)
    pools = [stream.next() for _ in range(5)]                  # 20 positions: two passes
    assert all(len(set(p.tolist())) == 4 for p in pools)
    assert sorted(np.concatenate(pools)[:10].tolist()) == list(range(10))
    assert len(stream.take(7)) == 7
    again = PoolStream(10, size=4, seed=4)
    again.load_state_dict(stream.state_dict())
    assert again.take(3).tolist() == stream.take(3).tolist()
    with pytest.raises(OnlineInputError, match="pool size"):
        stream.take(11)
    with pytest.raises(ValueError, match="seed=5"):
        PoolStream(10, size=4, seed=5).load_state_dict(stream.state_dict())


def test_pool_stream_reads_the_pool_state_verl_checkpoints_held_before():
    old = {"size": 10, "seed": 4, "epoch": 2, "cursor": 3, "order": list(range(10))}
    stream = PoolStream(10, seed=4)
    stream.load_state_dict(old)
    assert stream.position == 23


def test_group_size_follows_the_trainer_and_groups_of_one_are_refused():
    s = trainer_book_settings(OnlineSettings(), group_size=6, seed=9, group_size_field="rollout.n")
    assert (s.group_size, s.seed) == (6, 9)
    kept = trainer_book_settings(OnlineSettings(seed=1), group_size=6, seed=9, group_size_field="rollout.n")
    assert kept.seed == 1
    with pytest.raises(OnlineInputError, match=r"rollout\.n: is 1; .* at least 2"):
        trainer_book_settings(OnlineSettings(), group_size=1, seed=0, group_size_field="rollout.n")
    with pytest.raises(OnlineInputError, match=r"rollout\.n: is 6 but .* group_size=8"):
        trainer_book_settings(OnlineSettings(group_size=8), group_size=6, seed=0, group_size_field="rollout.n")


def _book():
    book = PromptBook(PROMPTS, settings=OnlineSettings(encoder="none"))
    book.record(0, [0, 1, 2], [[1.0, 0.0], [0.0, 0.0], [-2.0, 3.0]])
    return book


def test_book_and_pool_round_trip_through_a_remote_folder():
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    folder = "memory://bucket/run/global_step_3"
    assert is_remote(folder) and not is_remote("/tmp/x") and not is_remote("file:///tmp/x")
    book = _book()
    save_state(folder, book, {"position": 17}, book_file="b.npz", pool_file="p.json")
    assert fs.exists("/bucket/run/global_step_3/b.npz") and fs.exists("/bucket/run/global_step_3/p.json")
    loaded, pool = load_state(folder, PromptBook(PROMPTS, settings=OnlineSettings(encoder="none")),
                              book_file="b.npz", pool_file="p.json")
    assert pool == {"position": 17} and loaded.stats() == book.stats()
    np.testing.assert_array_equal(loaded.history()["successes"], book.history()["successes"])
    assert load_state("memory://bucket/elsewhere", book, book_file="b.npz", pool_file="p.json") is None


def test_verl_driver_saves_to_and_resumes_from_a_remote_folder():
    pytest.importorskip("fsspec")
    from preroll.integrations.verl import PrerollDriver, PrerollVerlConfig

    config = PrerollVerlConfig(settings={"encoder": "none", "seed": 0})
    driver = PrerollDriver(PROMPTS, config, group_size=4)
    plan = driver.plan(4, 4)
    driver.remember(["u0", "u1", "u2", "u3"], plan.indices)
    driver.record_trajectories(1, ["u0_0_0", "u0_1_0", "u1_0_0", "u1_1_0"], [1.0, 0.0, 1.0, 1.0])
    uploads = []

    def upload(local, url):
        from preroll.integrations.core.store import fsspec_upload

        uploads.append(url)
        fsspec_upload(local, url)

    driver.save("memory://ckpt/global_step_1", upload=upload)
    assert uploads == ["memory://ckpt/global_step_1/preroll_book.npz", "memory://ckpt/global_step_1/preroll_pool.json"]
    again = PrerollDriver(PROMPTS, config, group_size=4)
    assert again.load("memory://ckpt/global_step_1")
    assert again.uid_positions == driver.uid_positions
    assert again.plan(4, 4).indices.tolist() == driver.plan(4, 4).indices.tolist()
    assert again.book.settings.group_size == 4


def test_verl_settings_are_typed_and_group_size_is_the_trainers_n():
    from preroll.integrations.verl import PrerollDriver, PrerollVerlConfig

    config = PrerollVerlConfig.parse({"pool_factor": 3, "settings": {"encoder": "none", "explore": 0.0}})
    assert isinstance(config.settings, OnlineSettings) and config.settings.explore == 0.0
    with pytest.raises(OnlineInputError, match=r"trainer\.v1\.preroll\.settings\.explore"):
        PrerollVerlConfig.parse({"settings": {"explore": 3}})
    assert PrerollDriver(PROMPTS, config, group_size=16).book.settings.group_size == 16   # was 8 whatever n was
    assert PrerollDriver(PROMPTS, config, group_size=16).book.settings.pool_factor == 3
    with pytest.raises(OnlineInputError, match=r"rollout\.n: is 1"):
        PrerollDriver(PROMPTS, config, group_size=1)
    with pytest.raises(OnlineInputError, match=r"min_rollouts"):
        PrerollVerlConfig.parse({"mode": "allocate", "min_rollouts": 1})


def test_remote_saves_upload_the_graph_once_and_copy_it_into_later_folders(tmp_path, monkeypatch, caplog):
    """The graph-beside form remotely: the first save uploads the graph file, later folders get it by a copy
    inside the store (a URL source, not a local file); files arrive graph, book, pool; a resume downloads the
    graph instead of building it; a copy that fails (the earlier folder gone) falls back to an upload."""
    fsspec = pytest.importorskip("fsspec")
    import preroll.online.book as book_module
    from preroll.integrations.core.store import RemoteGraph, fsspec_upload

    fs = fsspec.filesystem("memory")
    uploads: list[tuple[str, str]] = []

    def upload(source, url):
        uploads.append((source, url))
        fsspec_upload(source, url)

    book = PromptBook(PROMPTS, settings=OnlineSettings(encoder="lexical")).prepare()
    book.record(0, [0, 1, 2], [[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    graph = RemoteGraph()
    save_state("memory://graphs/run/global_step_1", book, {"position": 1}, book_file="b.npz", pool_file="p.json",
               upload=upload, graph=graph)
    name = book.graph_name("b.npz")
    assert name is not None and name.startswith("b.npz.graph-")
    assert [u for _, u in uploads] == [f"memory://graphs/run/global_step_1/{f}" for f in (name, "b.npz", "p.json")]
    assert not is_remote(uploads[0][0])                        # the graph's bytes: uploaded once
    book.save(tmp_path / "local" / "b.npz")                    # as a trainer's local checkpoint does first
    book.record(1, [3], [[1.0, 0.0]])
    uploads.clear()
    save_state("memory://graphs/run/global_step_2", book, {"position": 2}, book_file="b.npz", pool_file="p.json",
               upload=upload, graph=graph)
    assert uploads[0] == (f"memory://graphs/run/global_step_1/{name}", f"memory://graphs/run/global_step_2/{name}")
    assert [u for _, u in uploads[1:]] == [f"memory://graphs/run/global_step_2/{f}" for f in ("b.npz", "p.json")]

    builds: list[int] = []
    build = book_module.neighbour_graph
    monkeypatch.setattr(book_module, "neighbour_graph", lambda *a, **k: builds.append(1) or build(*a, **k))
    loaded, pool = load_state("memory://graphs/run/global_step_2", PromptBook(PROMPTS, settings={"encoder": "lexical"}),
                              book_file="b.npz", pool_file="p.json")
    assert pool == {"position": 2} and loaded.stats() == book.stats()
    np.testing.assert_array_equal(loaded._graph[0], book._graph[0])
    loaded.refit()
    assert builds == []

    fs.rm("/graphs/run/global_step_2", recursive=True)           # the folder the next copy would read
    uploads.clear()
    with caplog.at_level("WARNING"):
        save_state("memory://graphs/run/global_step_3", book, {"position": 3}, book_file="b.npz",
                   pool_file="p.json", upload=upload, graph=graph)
    assert "uploading it" in caplog.text
    assert not is_remote(uploads[-3][0]) and uploads[-3][1] == f"memory://graphs/run/global_step_3/{name}"
    assert fs.exists(f"/graphs/run/global_step_3/{name}") and graph.url.endswith(f"global_step_3/{name}")


def test_a_remote_book_in_the_single_file_form_still_loads(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    book = PromptBook(PROMPTS, settings=OnlineSettings(encoder="lexical")).prepare()
    book.record(0, [0, 1], [[1.0, 0.0], [0.0, 0.0]])
    fs = fsspec.filesystem("memory")
    fs.put_file(str(book.save(tmp_path / "b.npz", graph_beside=False)), "/single/b.npz")
    loaded, pool = load_state("memory://single", PromptBook(PROMPTS, settings={"encoder": "lexical"}),
                              book_file="b.npz", pool_file="p.json")
    assert pool is None and loaded.stats() == book.stats()
    np.testing.assert_array_equal(loaded._graph[1], book._graph[1])


def _counting_graph_io(monkeypatch):
    """Bytes of graph files written locally and bytes sent from local files to the store, counted as they happen."""
    from preroll.integrations.core.store import fsspec_upload

    counts = {"graph_written": 0, "graph_uploaded": 0, "uploaded": 0}
    savez = np.savez

    def counting_savez(fh, *args, **arrays):
        start = fh.tell()
        savez(fh, *args, **arrays)
        if "index" in arrays:                                   # a graph file (a book file holds no "index")
            counts["graph_written"] += fh.tell() - start

    def upload(source, url):
        sent = 0 if is_remote(source) else os.path.getsize(source)    # a URL: a copy inside the store
        counts["uploaded"] += sent
        counts["graph_uploaded"] += sent if GRAPH_INFIX in url else 0
        fsspec_upload(source, url)

    monkeypatch.setattr(np, "savez", counting_savez)
    return counts, upload


def test_the_saves_after_a_remote_resume_link_and_copy_the_downloaded_graph_instead_of_writing_it(tmp_path,
                                                                                                   monkeypatch):
    """A trainer resumed from a remote checkpoint saves locally, then remotely (verl's order): the local save
    hard-links the graph file the resume downloaded, the remote one copies it inside the store from the folder
    it was read from; neither writes or uploads the graph's bytes again, and every outcome and the graph load
    back from both folders."""
    pytest.importorskip("fsspec")
    from preroll.integrations.verl import PrerollDriver, PrerollVerlConfig

    config = PrerollVerlConfig(settings={"encoder": "lexical", "seed": 0})
    first = PrerollDriver(PROMPTS, config, group_size=2)
    first.book.record(0, [0, 1, 2], [[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    first.save("memory://resume/global_step_1")
    counts, upload = _counting_graph_io(monkeypatch)

    driver = PrerollDriver(PROMPTS, config, group_size=2, prepare=False)
    assert driver.load("memory://resume/global_step_1")
    downloaded = driver.book.graph_file                         # a local copy of the graph, kept after the load
    driver.book.record(1, [3, 4], [[1.0, 0.0], [0.0, 1.0]])
    local = tmp_path / "global_step_2"
    driver.save(local)
    driver.save("memory://resume/global_step_2", upload=upload)
    assert counts["graph_written"] == 0                         # linked, not written
    assert counts["graph_uploaded"] == 0 < counts["uploaded"]   # the book and the pool; the graph copied in the store
    assert downloaded is not None and not downloaded.parent.exists()   # the download is let go once a local file holds it

    for folder in (local, "memory://resume/global_step_2"):
        again = PrerollDriver(PROMPTS, config, group_size=2, prepare=False)
        assert again.load(folder) and again.book.graph_file is not None
        assert again.book.stats() == driver.book.stats()
        np.testing.assert_array_equal(again.book.history()["successes"], driver.book.history()["successes"])
        np.testing.assert_array_equal(again.book._graph[0], first.book._graph[0])


def test_a_remote_only_run_after_a_resume_never_writes_the_graph_locally(monkeypatch):
    """Saves to URLs only: the resumed book's graph reaches each new folder by a copy inside the store, and no
    save writes it to a local scratch file first; the download is removed with its book."""
    pytest.importorskip("fsspec")
    import gc

    from preroll.integrations.verl import PrerollDriver, PrerollVerlConfig

    config = PrerollVerlConfig(settings={"encoder": "lexical", "seed": 0})
    first = PrerollDriver(PROMPTS, config, group_size=2)
    first.save("memory://remote-only/global_step_1")
    counts, upload = _counting_graph_io(monkeypatch)
    driver = PrerollDriver(PROMPTS, config, group_size=2, prepare=False)
    assert driver.load("memory://remote-only/global_step_1")
    for step in (2, 3):
        driver.book.record(step, [step], [[1.0, 0.0]])
        driver.save(f"memory://remote-only/global_step_{step}", upload=upload)
    assert counts["graph_written"] == counts["graph_uploaded"] == 0 < counts["uploaded"]
    again = PrerollDriver(PROMPTS, config, group_size=2, prepare=False)
    assert again.load("memory://remote-only/global_step_3") and again.book.stats() == driver.book.stats()
    downloaded = driver.book.graph_file.parent
    del driver
    gc.collect()
    assert not downloaded.exists()
