"""BLAS on the calling thread around the products that sit between the model's runs."""

from __future__ import annotations

import threading

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from audiosim.blas import on_calling_thread
from audiosim.mirror import Mirror


def blas_threads() -> set[int]:
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


def test_limits_blas_to_one_thread_and_restores_it():
    with threadpool_limits(2, user_api="blas"):  # what a 2-core machine has; holds on a 1-core one too
        assert blas_threads() == {2}
        with on_calling_thread():
            assert blas_threads() == {1}
            with on_calling_thread():  # nested: the inner one must not deadlock nor restore too early
                assert blas_threads() == {1}
            assert blas_threads() == {1}
        assert blas_threads() == {2}


def test_restores_after_an_error():
    with threadpool_limits(2, user_api="blas"):
        try:
            with on_calling_thread():
                raise ValueError("a product failed")
        except ValueError:
            pass
        assert blas_threads() == {2}


def test_threads_that_overlap_leave_blas_as_it_was():
    start, done = threading.Barrier(4), []

    def product():
        start.wait()
        for _ in range(50):
            with on_calling_thread():
                np.ones((64, 64)) @ np.ones((64, 64))
        done.append(True)

    with threadpool_limits(2, user_api="blas"):
        threads = [threading.Thread(target=product) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(done) == 4 and blas_threads() == {2}


def test_an_exact_mirror_search_leaves_blas_threads_as_they_were():
    rng = np.random.default_rng(0)
    data = rng.random((500, 32), dtype=np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    m = Mirror(32)
    m.upsert(np.arange(500), np.arange(500) // 5, np.zeros(500), data)
    with threadpool_limits(2, user_api="blas"):
        hits = m.search(data[:3], 5)
        filtered = m.search(data[:3], 5, clip_ids=[0, 1])
        assert blas_threads() == {2}
    assert [h[0][0] for h in hits] == [0, 1, 2]
    assert {h[1] for row in filtered for h in row} <= {0, 1}
