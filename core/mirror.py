"""An in-process search index mirroring one Milvus Lite collection, so the embedded default stays fast at scale.

Milvus Lite 3.x walks every stored row in Python on each search (deduplication and tombstone masks in
``search/executor_indexed.py``): 6 s a query at 100k segments here, 50x slower than numpy. Lite stays the
durable store; searches go to this mirror instead. That is safe because a Lite store admits one process at a
time, and every write in that process goes through ``VectorStore``, which updates Lite first and then the mirror.

Up to ``IVF_FROM`` live rows the mirror holds float32 vectors and searches exactly (one matrix product); beyond,
the vectors live only in a faiss IVF index that stores them as float16 (measured at 100k clustered 2048-d vectors:
2.6 ms, recall@10 0.97, against 28 ms for numpy; float16 gave the same recall as float32 in half the memory, and
scanned faster), retrained as the collection grows. Filtered searches and long result lists scan every list.

The mirror is saved beside the store when the store closes, stamped with a token that is also written into
Lite before the first write of each session. On open, a saved mirror is used only if its token is Lite's:
a process that died after writing leaves the tokens different, and the mirror is rebuilt from Lite.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

import numpy as np

from .blas import on_calling_thread
from .memory import return_freed_memory

IVF_FROM = 20_000  # below this many rows exact search is as fast as an ANN index, and always right
IVF_NPROBE = 32
IVF_MAX_LIMIT = 256
COMPACT_WHEN_DEAD = 0.25  # rebuild once a quarter of the rows are deleted or replaced


class Mirror:
    """Rows of (vector id, clip id, start, vector), searchable by cosine (vectors are unit length)."""

    def __init__(self, dim: int, token: str | None = None):
        self.dim = dim
        self.token = token
        self.ids = np.zeros(0, np.int64)
        self.clip_ids = np.zeros(0, np.int64)
        self.starts = np.zeros(0, np.float32)
        self.vectors = np.zeros((0, dim), np.float32)
        self.live = np.zeros(0, bool)
        self.size = 0  # rows in use (live or dead) at the front of the arrays
        self.row_of: dict[int, int] = {}
        self.ivf = None  # faiss index over row numbers holding the vectors (self.vectors is then None), or None
        self.trained_at = 0

    def __len__(self) -> int:
        return len(self.row_of)

    # -- writes --------------------------------------------------------------------------------
    def upsert(self, ids, clip_ids, starts, vectors) -> None:
        ids = np.asarray(ids, np.int64)
        if not len(ids):
            return
        self._kill([self.row_of[i] for i in ids.tolist() if i in self.row_of])
        self._grow(len(ids))
        rows = np.arange(self.size, self.size + len(ids))
        self.ids[rows] = ids
        self.clip_ids[rows] = np.asarray(clip_ids, np.int64)
        self.starts[rows] = np.asarray(starts, np.float32)
        self.live[rows] = True
        self.size += len(ids)
        self.row_of.update(zip(ids.tolist(), rows.tolist(), strict=True))
        if self.ivf is None:
            self.vectors[rows] = np.asarray(vectors, np.float32)
        else:
            self.ivf.add_with_ids(np.asarray(vectors, np.float32), rows.astype(np.int64))
        self._maintain()

    def delete_ids(self, ids) -> None:
        self._kill([self.row_of[i] for i in np.asarray(ids, np.int64).tolist() if i in self.row_of])
        self._maintain()

    def delete_clips(self, clip_ids) -> None:
        rows = np.flatnonzero(self.live[: self.size] & np.isin(self.clip_ids[: self.size], np.asarray(clip_ids)))
        self._kill(rows.tolist())
        self._maintain()

    def _kill(self, rows: list[int]) -> None:
        if not rows:
            return
        rows_arr = np.asarray(rows, np.int64)
        self.live[rows_arr] = False
        for row in rows:
            self.row_of.pop(int(self.ids[row]), None)
        if self.ivf is not None:
            import faiss

            self.ivf.remove_ids(faiss.IDSelectorArray(rows_arr))  # the hashtable direct map takes only arrays

    def _grow(self, extra: int) -> None:
        need = self.size + extra
        if need <= len(self.ids):
            return
        capacity = max(need, 2 * len(self.ids), 1024)
        for name in ("ids", "clip_ids", "starts", "live"):
            old = getattr(self, name)
            new = np.zeros(capacity, old.dtype)
            new[: self.size] = old[: self.size]
            setattr(self, name, new)
        if self.ivf is None:
            vectors = np.zeros((capacity, self.dim), np.float32)
            vectors[: self.size] = self.vectors[: self.size]
            self.vectors = vectors

    def _maintain(self) -> None:
        """Compact when many rows are dead; move to (or retrain) the IVF index as the collection grows."""
        dead = self.size - len(self)
        if self.size and dead / self.size > COMPACT_WHEN_DEAD:
            self._compact()
        if len(self) >= IVF_FROM and (self.ivf is None or len(self) > 2 * self.trained_at):
            live_rows = np.flatnonzero(self.live[: self.size])
            self._train(live_rows, live_rows)
        elif len(self) < IVF_FROM // 2 and self.ivf is not None:
            vectors = np.zeros((len(self.ids), self.dim), np.float32)
            live_rows = np.flatnonzero(self.live[: self.size])
            vectors[live_rows] = self._vectors_at(live_rows)
            self.vectors, self.ivf, self.trained_at = vectors, None, 0

    def _compact(self) -> None:
        keep = np.flatnonzero(self.live[: self.size])
        if self.ivf is not None:
            self._train(keep, np.arange(len(keep)))  # row numbers change
        else:
            self.vectors = self.vectors[keep].copy()
        for name in ("ids", "clip_ids", "starts", "live"):
            setattr(self, name, getattr(self, name)[keep].copy())
        self.size = len(keep)
        self.row_of = dict(zip(self.ids.tolist(), range(self.size), strict=True))

    def _train(self, rows: np.ndarray, new_rows: np.ndarray) -> None:
        """Train a new IVF index on the vectors at ``rows`` and move them into it as ``new_rows``, a chunk at a
        time: the peak is the old index plus the new one, never a third full copy."""
        import faiss

        nlist = int(4 * np.sqrt(len(rows)))
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(len(rows), min(len(rows), nlist * 40), replace=False))
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFScalarQuantizer(
            quantizer, self.dim, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        )
        ivf.train(self._vectors_at(rows[sample]))
        ivf.nprobe = IVF_NPROBE
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # vectors by row, and removal by row
        for i in range(0, len(rows), 10_000):
            ivf.add_with_ids(self._vectors_at(rows[i : i + 10_000]), np.asarray(new_rows[i : i + 10_000], np.int64))
        self.ivf, self.vectors, self.trained_at = ivf, None, len(rows)
        return_freed_memory()  # the old index's pages (measured at 1M: 5.2 GB resident, 9.5 without)

    def _vectors_at(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        if self.ivf is None:
            return self.vectors[rows]
        return self.ivf.reconstruct_batch(rows) if len(rows) else np.zeros((0, self.dim), np.float32)

    # -- reads ---------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, limit: int, clip_ids=None) -> list[list[tuple[int, int, float, float]]]:
        """For each query, up to ``limit`` (vector id, clip id, start, score) best first."""
        queries = np.asarray(queries, np.float32).reshape(-1, self.dim)
        if not len(self):
            return [[] for _ in queries]
        # IVF probes a few percent of the rows: long result lists (and filters) are answered exactly.
        if self.ivf is not None and clip_ids is None and limit <= IVF_MAX_LIMIT:
            scores, rows = self.ivf.search(queries, min(limit, len(self)))
        else:
            scores, rows = self._exact(queries, limit, clip_ids)
        return [
            [
                (int(self.ids[r]), int(self.clip_ids[r]), float(self.starts[r]), float(s))
                for r, s in zip(row_list, score_list, strict=True)
                if r >= 0
            ]
            for row_list, score_list in zip(rows, scores, strict=True)
        ]

    def _exact(self, queries, limit, clip_ids):
        candidates = self.live[: self.size]
        if clip_ids is not None:
            candidates = candidates & np.isin(self.clip_ids[: self.size], np.asarray(list(clip_ids), np.int64))
        count = int(candidates.sum())
        if not count:
            return np.zeros((len(queries), 0)), np.zeros((len(queries), 0), np.int64)
        if self.ivf is not None and count >= self.size // 8:
            return self._scan_every_list(queries, min(limit, count), None if count == len(self) else candidates)
        # On the calling thread: BLAS's spinning workers slowed the model's next batch by half (core/blas.py).
        with on_calling_thread():
            if count < self.size // 8:  # a small subset: gather it (the copy is cheaper than scoring every row)
                rows = np.flatnonzero(candidates)
                scores = queries @ self._vectors_at(rows).T
            else:  # score every row in place (no copy of the matrix), then rule out the others
                rows = None
                scores = queries @ self.vectors[: self.size].T
        if rows is None and count < self.size:
            scores[:, ~candidates] = -np.inf
        k = min(limit, count)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1)
        top = np.take_along_axis(top, order, axis=1)
        return np.take_along_axis(top_scores, order, axis=1), (top if rows is None else rows[top])

    def _scan_every_list(self, queries, k, candidates):
        """Exact search through the IVF index: every list probed, other rows ruled out by a selector."""
        import faiss

        params = faiss.SearchParametersIVF()
        params.nprobe = self.ivf.nlist
        if candidates is not None:
            selector = faiss.IDSelectorBatch(np.flatnonzero(candidates).astype(np.int64))
            params.sel = selector  # (the name keeps the selector alive through the search)
        return self.ivf.search(queries, k, params=params)

    def vectors_of(self, ids) -> dict[int, np.ndarray]:
        found = [int(i) for i in ids if int(i) in self.row_of]
        vectors = self._vectors_at([self.row_of[i] for i in found])
        return {i: vectors[n].copy() for n, i in enumerate(found)}

    # -- persistence ---------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write the mirror atomically: a crash mid-save leaves the previous one (or none), never half."""
        import faiss

        partial = folder.with_name(folder.name + f".partial-{secrets.token_hex(4)}")
        partial.mkdir(parents=True)
        np.savez(
            partial / "rows.npz",
            ids=self.ids[: self.size],
            clip_ids=self.clip_ids[: self.size],
            starts=self.starts[: self.size],
            live=self.live[: self.size],  # dead rows stay until the next compaction: the IVF index names rows
        )
        if self.ivf is not None:
            faiss.write_index(self.ivf, str(partial / "ivf.faiss"))  # it holds the vectors
        else:
            np.save(partial / "vectors.npy", self.vectors[: self.size])
        (partial / "mirror.json").write_text(
            json.dumps({"token": self.token, "dim": self.dim, "rows": self.size, "trained_at": self.trained_at})
        )
        old = folder.with_name(folder.name + f".old-{secrets.token_hex(4)}")
        if folder.exists():
            os.replace(folder, old)
        os.replace(partial, folder)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path, token: str) -> Mirror | None:
        """The saved mirror if it is whole and carries ``token``; else None (the caller rebuilds)."""
        import faiss

        try:
            meta = json.loads((folder / "mirror.json").read_text())
            dim = meta.get("dim")
            if meta.get("token") != token or not isinstance(dim, int) or dim < 1:
                return None
            rows = np.load(folder / "rows.npz")
            mirror = cls(dim, token)
            mirror.ids, mirror.clip_ids, mirror.starts = rows["ids"], rows["clip_ids"], rows["starts"]
            mirror.size = len(mirror.ids)
            mirror.live = rows["live"]
            live_rows = np.flatnonzero(mirror.live)
            if mirror.size != meta.get("rows"):
                return None
            if (folder / "ivf.faiss").exists():
                mirror.ivf = faiss.read_index(str(folder / "ivf.faiss"))
                mirror.ivf.nprobe = IVF_NPROBE
                mirror.ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
                mirror.vectors, mirror.trained_at = None, int(meta.get("trained_at", mirror.size))
                if mirror.ivf.ntotal != len(live_rows) or mirror.ivf.d != dim:
                    return None
            else:
                mirror.vectors = np.load(folder / "vectors.npy")
                if mirror.vectors.shape != (mirror.size, dim):
                    return None
            mirror.row_of = dict(zip(mirror.ids[live_rows].tolist(), live_rows.tolist(), strict=True))
            return mirror
        except (OSError, ValueError, KeyError, RuntimeError):
            return None
