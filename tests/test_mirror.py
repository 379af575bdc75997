"""The search mirror of a Milvus Lite collection: exact and IVF search, writes, persistence, and recovery."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from audiosim import mirror as mirror_module
from audiosim.errors import VectorStoreUnavailable
from audiosim.mirror import IVF_FROM, Mirror
from audiosim.vectors import VectorStore


def clustered(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.gamma(0.5, 1.0, (50, dim))
    x = centres[rng.integers(50, size=n)] + rng.gamma(0.5, 0.6, (n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_top(data, ids, query, k):
    return set(ids[np.argsort(-(data @ query))[:k]].tolist())


def test_exact_search_with_replacements_deletes_and_filters():
    data = clustered(300)
    m = Mirror(64)
    ids = np.arange(300) * 7
    m.upsert(ids, ids // 70, np.arange(300) % 10, data)
    hits = m.search(data[5], 3)[0]
    assert hits[0][0] == ids[5] and hits[0][3] == pytest.approx(1.0, abs=1e-5)
    assert [h[3] for h in hits] == sorted((h[3] for h in hits), reverse=True)
    m.upsert([ids[5]], [99], [1.5], data[6:7])  # a re-embedded segment keeps its id, gets a new vector
    top2 = {h[0]: h for h in m.search(data[6], 2)[0]}  # rows 5 and 6 now hold the same vector
    assert len(m) == 300 and set(top2) == {ids[5], ids[6]} and top2[ids[5]][1:3] == (99, 1.5)
    m.delete_clips([0])
    assert all(h[1] != 0 for h in m.search(data[0], 300)[0]) and len(m) == 300 - 9
    m.delete_ids([ids[20]])
    assert ids[20] not in m.vectors_of([ids[20]])
    only = m.search(data[100], 10, clip_ids=[2, 3])[0]
    assert only and {h[1] for h in only} <= {2, 3}
    assert exact_top(data[21:40], ids[21:40], data[100], 10) == {h[0] for h in only}  # clips 2-3, row 20 deleted


def test_ivf_takes_over_at_scale_keeps_recall_and_follows_deletes(monkeypatch):
    monkeypatch.setattr(mirror_module, "IVF_FROM", 2000)
    data = clustered(6000, seed=1)
    ids = np.arange(6000)
    m = Mirror(64)
    for i in range(0, 6000, 500):  # arrives in batches, as an indexer writes it
        m.upsert(ids[i : i + 500], ids[i : i + 500] // 10, np.zeros(500), data[i : i + 500])
    assert m.ivf is not None and m.trained_at >= 3000
    queries = clustered(50, seed=2)
    recall = np.mean([len(exact_top(data, ids, q, 10) & {h[0] for h in m.search(q, 10)[0]}) / 10 for q in queries])
    assert recall >= 0.95
    m.delete_clips(list(range(0, 600, 2)))  # half the clips of the first 6000 rows' first tenth
    gone = {h[1] for q in queries for h in m.search(q, 50)[0]} & set(range(0, 600, 2))
    assert not gone
    assert m.vectors is None  # the index holds the only copy of the vectors


def test_ivf_answers_filters_and_long_lists_exactly_and_survives_compaction(monkeypatch):
    monkeypatch.setattr(mirror_module, "IVF_FROM", 2000)
    data = clustered(5000, seed=3)
    ids = np.arange(5000) + 10_000
    m = Mirror(64)
    for i in range(0, 5000, 1000):
        m.upsert(ids[i : i + 1000], np.arange(i, i + 1000) // 10, np.zeros(1000), data[i : i + 1000])
    assert m.ivf is not None
    q = clustered(1, seed=4)[0]
    # Long lists and filters scan every list: exact search, up to float16's rounding of near ties.
    scores = data @ q
    score_of = dict(zip(ids.tolist(), scores.tolist(), strict=True))

    def exact_up_to_float16(hits, rows, k):
        best = np.sort(scores[rows])[::-1][:k]
        true = [score_of[h[0]] for h in hits]
        reported = [h[3] for h in hits]
        return len(hits) == k and np.allclose(true, best, atol=2e-3) and np.allclose(reported, true, atol=2e-3)

    everything = np.arange(5000)
    assert exact_up_to_float16(m.search(q, 300)[0], everything, 300)
    wide = list(range(0, 500, 2))  # half the clips: scanned through the index with a selector
    hits = m.search(q, 20, clip_ids=wide)[0]
    assert exact_up_to_float16(hits, np.flatnonzero(np.isin(everything // 10, wide)), 20)
    assert {h[1] for h in hits} <= set(wide)
    narrow = [7, 8]  # a few rows: gathered from the index and scored directly
    hits = m.search(q, 5, clip_ids=narrow)[0]
    assert exact_up_to_float16(hits, np.arange(70, 90), 5) and {h[1] for h in hits} <= {7, 8}
    # Deleting 40 % compacts (row numbers change, the index is rebuilt from itself); then below half the
    # threshold the mirror goes back to exact search on float32 vectors read back from the index.
    m.delete_ids(ids[:2000])
    assert m.size == 3000 and m.ivf is not None and len(m) == 3000
    assert m.search(data[2500], 1)[0][0][0] == ids[2500]
    m.delete_ids(ids[2000:4100])
    assert m.ivf is None and len(m) == 900
    assert np.allclose(m.vectors_of([ids[4500]])[ids[4500]], data[4500], atol=1e-3)
    assert m.search(data[4500], 1)[0][0][0] == ids[4500]


def test_saved_mirror_round_trips_and_refuses_another_token(tmp_path, monkeypatch):
    monkeypatch.setattr(mirror_module, "IVF_FROM", 2000)
    data = clustered(3000)
    m = Mirror(64, token="t1")
    m.upsert(np.arange(3000), np.arange(3000) // 5, np.zeros(3000), data)
    m.delete_ids([3, 4])
    m.save(tmp_path / "m")
    back = Mirror.load(tmp_path / "m", "t1")
    assert back is not None and back.dim == 64 and len(back) == 2998 and back.ivf is not None
    q = data[100]
    assert [h[0] for h in back.search(q, 5)[0]] == [h[0] for h in m.search(q, 5)[0]]
    assert np.allclose(back.vectors_of([7])[7], data[7], atol=1e-3)  # the index holds them, as float16
    assert not (tmp_path / "m" / "vectors.npy").exists()  # one copy of the vectors, on disk as in memory
    assert Mirror.load(tmp_path / "m", "t2") is None  # Lite moved on since: rebuild
    (tmp_path / "m" / "ivf.faiss").write_bytes(b"torn")
    assert Mirror.load(tmp_path / "m", "t1") is None
    assert IVF_FROM >= 10_000  # the real threshold is untouched by the patch above


def in_its_own_process(tmp_path, body: str) -> int:
    """Run ``body`` in a process of its own, with ``store`` the Milvus Lite store ``v.db`` in ``tmp_path`` and
    ``data`` its ``data.npy`` (Milvus Lite lets go of a store only when the process that opened it exits); the
    process's return code."""
    script = "import os, signal, numpy as np\nfrom audiosim.vectors import VectorStore\n"
    script += f"store = VectorStore({str(tmp_path / 'v.db')!r})\ndata = np.load({str(tmp_path / 'data.npy')!r})\n"
    return subprocess.run([sys.executable, "-c", script + body], capture_output=True).returncode


def written_in_its_own_process(tmp_path, data, rows: int, index_type: str | None = None) -> None:
    """Save ``data`` as ``data.npy`` and write its first ``rows`` (row i of clip i // 5) to collection ``c`` of
    the store ``v.db``, made with ``index_type`` if given, in a process of its own that closes the store."""
    np.save(tmp_path / "data.npy", data)
    index = f", index_type={index_type!r}" if index_type else ""
    writer = (
        f"store.ensure_collection('c', {data.shape[1]}{index})\n"
        f"store.upsert('c', list(range({rows})), [i // 5 for i in range({rows})], [0.0] * {rows}, data[:{rows}])\n"
        "store.close()\n"
    )
    assert in_its_own_process(tmp_path, writer) == 0


def test_lite_store_saves_its_mirror_and_reopens_without_rebuilding_or_loading_lite(tmp_path, caplog):
    uri = str(tmp_path / "v.db")
    data = clustered(500, dim=32)
    written_in_its_own_process(tmp_path, data, rows=500)
    assert (tmp_path / "v.db-mirror" / "c" / "mirror.json").exists()
    with caplog.at_level(logging.INFO, logger="audiosim.vectors"):
        again = VectorStore(uri)
        hits = again.search("c", data[7:8], 3)[0]
        got = again.vectors("c", [9])
    assert hits[0].vector_id == 7 and "rebuilt" not in caplog.text
    assert np.allclose(got[9], data[9])
    # A reader is served by the mirror alone, so Lite keeps no index: it would be one more copy of every vector,
    # beside each data file and in memory once loaded.
    assert again.client.list_indexes("c") == [] and not list(tmp_path.glob("v.db/**/*.idx"))
    again.close()


def test_a_reader_served_by_its_saved_mirror_never_reads_the_vectors_from_milvus_lite(tmp_path):
    # Lite reads every stored vector into memory the first time anything asks about a collection (2.7 GB at
    # 100k): a process that only searches must not ask. Here Lite's copy is made unreadable after a clean close,
    # so asking would fail.
    data = clustered(500, dim=32)
    written_in_its_own_process(tmp_path, data, rows=500)
    kept = tmp_path / "v.db" / "collections" / "c"
    spoiled = [f for f in kept.rglob("*") if f.is_file() and f.name != "schema.json"]
    assert spoiled
    for f in spoiled:
        f.write_bytes(b"not what Milvus Lite wrote")
    store = VectorStore(str(tmp_path / "v.db"))
    store.ensure_collection("c", 32)  # as the service does before every search
    assert store.search("c", data[7:8], 3)[0][0].vector_id == 7
    assert np.allclose(store.vectors("c", [9])[9], data[9])
    with pytest.raises(VectorStoreUnavailable):
        store.ensure_collection("c", 64)  # the saved mirror still knows the collection's dimension
    store.close()


def test_a_process_killed_after_writing_leaves_a_mirror_that_is_rebuilt(tmp_path, caplog):
    uri = str(tmp_path / "v.db")
    np.save(tmp_path / "data.npy", clustered(400, dim=32))

    # A clean run saves a mirror of 200 rows; the next run adds 200 and dies before close(): the saved mirror
    # is now behind Lite, and must not be trusted.
    assert (
        in_its_own_process(
            tmp_path,
            'store.ensure_collection("c", 32)\n'
            'store.upsert("c", list(range(200)), [0] * 200, [0.0] * 200, data[:200])\n'
            "store.close()\n",
        )
        == 0
    )
    assert (tmp_path / "v.db-mirror" / "c").exists()
    assert (
        in_its_own_process(
            tmp_path,
            'store.upsert("c", list(range(200, 400)), [1] * 200, [0.0] * 200, data[200:])\n'
            "os.kill(os.getpid(), signal.SIGKILL)\n",
        )
        == -9
    )
    data = np.load(tmp_path / "data.npy")
    with caplog.at_level(logging.INFO, logger="audiosim.vectors"):
        store = VectorStore(uri)
        hits = store.search("c", data[300:301], 1)[0]
    assert "rebuilt" in caplog.text and hits[0].vector_id == 300 and hits[0].clip_id == 1
    store.close()


def test_reading_a_milvus_lite_collection_back_does_not_warn_about_session_timestamps(tmp_path):
    # pymilvus' query iterator warns on every Milvus Lite store, which has no session timestamps to give.
    # A first write reads the collection back into a new mirror through that iterator.
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    store = VectorStore(str(tmp_path / "vectors.db"))  # starting Milvus Lite resets pymilvus' loggers' handlers
    iterator_log = logging.getLogger("pymilvus.client.iterator.query_iterator")
    iterator_log.addHandler(handler)
    try:
        store.ensure_collection("clips", 64)
        store.upsert("clips", [1, 2, 3], [10, 10, 11], [0.0, 1.0, 0.0], clustered(3))
        assert {h.vector_id for h in store.search("clips", clustered(3)[:1], 3)[0]} == {1, 2, 3}
        store.close()
    finally:
        iterator_log.removeHandler(handler)
    assert not [message for message in seen if "mvccTs" in message]


def test_a_store_made_with_a_lite_index_keeps_it_and_works_as_before(tmp_path):
    """Stores made before Milvus Lite collections went without an index have a FLAT one: written to, searched
    and pruned as before, in a later process too."""
    uri = str(tmp_path / "v.db")
    data = clustered(300, dim=32)
    written_in_its_own_process(tmp_path, data, rows=200, index_type="FLAT")
    store = VectorStore(uri)
    store.upsert("c", list(range(200, 300)), [100] * 100, [0.0] * 100, data[200:])
    store.delete_clips("c", [3])
    assert store.client.list_indexes("c") == ["vector"]
    assert store.count("c") == 295
    assert store.search("c", data[250:251], 1)[0][0].vector_id == 250
    assert store.search("c", data[16:17], 1)[0][0].vector_id != 16  # clip 3's windows are gone
    store.close()
