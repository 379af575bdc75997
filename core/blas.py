"""numpy's matrix products on the calling thread alone, where they sit between the model's runs.

OpenBLAS's worker threads spin for a while after each product before they sleep, and the model's own threads
spin after each batch: on 2 cores each slows the other. Measured on an AMD EPYC Zen 5, Cnn14 (bfloat16) on a
query's 9 windows took 145-164 ms right after an exact search of 2k-19k stored vectors on OpenBLAS's 2 threads,
and 89-92 ms after the same search on 1; the search itself, right after the model, 6.4 ms on 2 threads against
2.8 ms on 1 at 2k vectors, 23.4 against 23.9 ms at 19k.
"""

from __future__ import annotations

import contextlib
import functools
import threading

_lock = threading.RLock()  # limits are process-wide: two threads overlapping would restore each other's


@contextlib.contextmanager
def on_calling_thread():
    """BLAS (numpy's, and any other loaded) limited to the calling thread for the duration."""
    controller = _controller()
    if controller is None:
        yield
        return
    with _lock, controller.limit(limits=1, user_api="blas"):
        yield


@functools.cache
def _controller():
    """threadpoolctl's view of the BLAS libraries loaded now (numpy's among them), made once: 0.8 ms a scan."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # a declared dependency; without it products keep BLAS's own threads
        return None
    return ThreadpoolController()
