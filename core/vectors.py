"""Segment vectors in Milvus through pymilvus' MilvusClient: Milvus Lite by path or a server by URI, same code.

A collection holds one model's vectors. Each row is one segment: its id (derived from the catalog, never a
Milvus auto id), its clip id (so a clip's vectors can be deleted or a search restricted to some clips), its
start time, and the vector. Vectors are L2-normalised by the embedders and compared by cosine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import secrets
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .errors import VectorStoreLocked, VectorStoreUnavailable
from .memory import return_freed_memory
from .mirror import Mirror
from .settings import is_milvus_server

log = logging.getLogger(__name__)

INSERT_BATCH = 1000
MAX_LIMIT = 16384  # Milvus' largest top-k
SEARCH_EF = 256  # collections made with HNSW before IVF-Flat became the server default: recall 0.98 at 10k
SEARCH_NPROBE = 32
INDEXES = {
    "HNSW": {"index_type": "HNSW", "metric_type": "COSINE", "params": {"M": 16, "efConstruction": 200}},
    "IVF_FLAT": {"index_type": "IVF_FLAT", "metric_type": "COSINE", "params": {"nlist": 1024}},
    "IVF_SQ8": {"index_type": "IVF_SQ8", "metric_type": "COSINE", "params": {"nlist": 1024}},
    "FLAT": {"index_type": "FLAT", "metric_type": "COSINE", "params": {}},
}
# Servers: IVF-Flat. Measured at 100k clustered 2048-d vectors on Milvus 2.3.5 once compacted and indexed
# (bench/search.py): recall@10 0.978 at 4.9 ms p50 with nprobe 32, where a fully built HNSW (M 16,
# efConstruction 200, ef 256) found 0.786 at 6.7 ms.
# Milvus Lite: none. Searches go to the in-process mirror (mirror.py), and a FLAT index would be one more copy of
# every vector beside each of Lite's data files: 24,000 rows took 377 MB of disk with it, 190 MB without.
SERVER_INDEX, LITE_INDEX = "IVF_FLAT", None
TOKENS = "audiosim_mirror_tokens"  # Milvus Lite only: which saved search mirror matches each collection
# Milvus Lite buffers writes until 128 MB of them, or until the process exits, and then turns every buffered value
# into a Python object on its way to Parquet: 12 times the vectors' size. Measured with 7,200 2048-d rows (a
# 2-hour file's): its exit took the process from 0.30 to 1.00 GB; flushed every 2048 rows, it peaked at 0.51 GB.
LITE_FLUSH_ROWS = 2048


class _NoSessionTimestamp(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to get mvccTs" not in record.getMessage()


def _quiet_lite_iterator_warning() -> None:
    """Milvus Lite has no session timestamps, so every pymilvus query iterator over it warns that it "failed to get
    mvccTs from milvus server" and uses the client's clock, which is right for one process. The mirror is read
    back through one at a new collection's first write and after an unclean stop: the warning is expected there
    and would only alarm the user."""
    iterator_log = logging.getLogger("pymilvus.client.iterator.query_iterator")
    if not any(isinstance(f, _NoSessionTimestamp) for f in iterator_log.filters):
        iterator_log.addFilter(_NoSessionTimestamp())


@dataclasses.dataclass(frozen=True)
class Hit:
    vector_id: int
    clip_id: int
    start_s: float
    score: float


class VectorStore:
    def __init__(self, uri: str, token: str | None = None):
        self.uri = uri
        self.is_server = is_milvus_server(uri)
        self._loaded: set[str] = set()
        self._mirrors: dict[str, Mirror] = {}  # Milvus Lite: searches go to an in-process mirror (see mirror.py)
        self._unsaved: set[str] = set()  # mirrors newer than their saved copy
        self._token_moved: set[str] = set()  # collections whose Lite token moved on since their mirror was saved
        self._unflushed: dict[str, int] = {}  # Milvus Lite: rows written to each collection since its last flush
        try:
            from pymilvus import MilvusClient
        except ImportError as e:
            raise VectorStoreUnavailable("pymilvus is not installed: pip install pymilvus milvus-lite") from e
        kwargs = {"uri": uri}
        if token:
            kwargs["token"] = token
        if not self.is_server:
            # milvus-lite serves gRPC in-process; pymilvus' 10 s keepalive pings kill long index builds there.
            kwargs["grpc_options"] = {"grpc.keepalive_time_ms": 3_600_000}
        else:
            kwargs["timeout"] = 10
        try:
            self.client = MilvusClient(**kwargs)
        except Exception as e:  # pymilvus raises MilvusException, ConnectionConfigException or plain errors
            raise self._unavailable(e) from e
        if not self.is_server:
            _quiet_lite_iterator_warning()  # after the client: starting Milvus Lite configures pymilvus' logging

    def _unavailable(self, e: Exception) -> VectorStoreUnavailable:
        text = str(e)
        if not self.is_server and ("lock" in text.lower() or "Open local milvus failed" in text):
            return VectorStoreLocked(
                f"The Milvus Lite store {self.uri} is open in another process (Milvus Lite allows one process "
                "per store). Stop that process (another audiosim or a Datasette serving this catalog), or use a "
                "Milvus server with --milvus http://HOST:19530 so several processes can share it."
            )
        where = "server" if self.is_server else "Milvus Lite store"
        return VectorStoreUnavailable(f"Cannot use the Milvus {where} at {self.uri}: {_first_line(text)}")

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise self._unavailable(e) from e

    # -- collections ---------------------------------------------------------------------------
    def ensure_collection(self, name: str, dim: int, index_type: str | None = None) -> None:
        """Create the collection, if it does not exist, with an explicit schema and (on a server) a cosine index."""
        index_type = index_type or (SERVER_INDEX if self.is_server else LITE_INDEX)
        from pymilvus import DataType

        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,254}", name):
            raise ValueError(f"invalid collection name {name!r}")
        if self.has_collection(name):
            self._check_dim(name, dim)
            return
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("clip_id", DataType.INT64)
        schema.add_field("start_s", DataType.FLOAT)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index = None
        if index_type:
            index = self.client.prepare_index_params()
            index.add_index(field_name="vector", index_name="vector", **INDEXES[index_type])
        # Session consistency: a process always sees its own writes; other processes see them within the server's
        # time tick. Strong would add a ~300 ms wait to every search on a Milvus 2.3 server (measured: 301 ms vs
        # 5 ms p50 at 10k vectors), so only verify's full scans ask for it.
        try:
            self.client.create_collection(name, schema=schema, index_params=index, consistency_level="Session")
        except Exception as e:
            if not self._call(self.client.has_collection, name):  # else another process created it first
                raise self._unavailable(e) from e
            self._check_dim(name, dim)
        self._loaded.add(name)

    def _check_dim(self, name: str, dim: int) -> None:
        have = self._dim(name)
        if have != dim:
            raise VectorStoreUnavailable(
                f"Milvus collection {name} holds {have}-d vectors, not {dim}-d: it belongs to another model"
            )

    def _ensure_loaded(self, name: str) -> None:
        # A reopened Milvus Lite store, or a restarted server, keeps collections released until loaded.
        if name not in self._loaded:
            self._call(self.client.load_collection, name)
            self._loaded.add(name)

    def has_collection(self, name: str) -> bool:
        if not self.is_server and self._held_mirror(name) is not None:
            return True  # without asking Lite, which would read the whole collection (see _held_mirror)
        return bool(self._call(self.client.has_collection, name))

    def drop_collection(self, name: str) -> None:
        self._call(self.client.drop_collection, name)
        self._loaded.discard(name)
        if not self.is_server:
            self._mirrors.pop(name, None)
            self._unsaved.discard(name)
            shutil.rmtree(self._mirror_folder(name), ignore_errors=True)

    # -- the search mirror (Milvus Lite) ---------------------------------------------------------
    def _mirror_folder(self, name: str) -> Path:
        return Path(self.uri + "-mirror") / name

    def _token_key(self, name: str) -> int:
        return int(hashlib.sha256(name.encode()).hexdigest()[:15], 16)

    def _token(self, name: str) -> str | None:
        if not self._call(self.client.has_collection, TOKENS):
            return None
        self._ensure_loaded(TOKENS)
        rows = self._call(self.client.get, TOKENS, ids=[self._token_key(name)], output_fields=["token"])
        return rows[0]["token"] if rows else None

    def _set_token(self, name: str, token: str) -> None:
        from pymilvus import DataType

        if not self._call(self.client.has_collection, TOKENS):
            schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("token", DataType.VARCHAR, max_length=64)
            schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector field
            self._call(self.client.create_collection, TOKENS, schema=schema)  # no index: it is only ever read by id
            self._loaded.add(TOKENS)
        self._ensure_loaded(TOKENS)
        row = {"id": self._token_key(name), "token": token, "unused": [0.0, 0.0]}
        self._call(self.client.upsert, TOKENS, [row])

    def _held_mirror(self, name: str) -> Mirror | None:
        """The mirror this process holds, else the saved one if it carries Lite's token, else None.

        A mirror Lite vouches for holds Lite's rows as they are, collection and dimension included, so a process
        that has one never asks Lite about the collection: Lite answers the first question about a collection,
        even whether it exists, by reading every stored vector into memory (measured at 100k: 7.3 s and 2.7 GB,
        in a process that only searches)."""
        mirror = self._mirrors.get(name)
        if mirror is None:
            token = self._token(name)
            mirror = Mirror.load(self._mirror_folder(name), token) if token else None
            if mirror is not None:
                self._mirrors[name] = mirror
        return mirror

    def _mirror(self, name: str) -> Mirror:
        mirror = self._held_mirror(name)
        if mirror is None:
            mirror = self._rebuild_mirror(name, self._stored_dim(name), self._token(name))
            self._mirrors[name] = mirror
        return mirror

    def _rebuild_mirror(self, name: str, dim: int, token: str | None) -> Mirror:
        """Read every vector back from Milvus Lite (about 2k rows/s): only after an unclean stop or an upgrade."""
        self._ensure_loaded(name)
        mirror = Mirror(dim, token)
        iterator = self._call(
            self.client.query_iterator,
            name,
            batch_size=1000,
            filter="id >= 0",
            output_fields=["id", "clip_id", "start_s", "vector"],
        )
        try:
            while batch := self._call(iterator.next):
                mirror.upsert(
                    [r["id"] for r in batch],
                    [r["clip_id"] for r in batch],
                    [r["start_s"] for r in batch],
                    np.asarray([r["vector"] for r in batch], np.float32),
                )
        finally:
            iterator.close()
        if len(mirror):
            log.info("rebuilt the search mirror of %s from Milvus Lite (%d vectors)", name, len(mirror))
            self._unsaved.add(name)  # so the next start is fast
        return mirror

    def _dim(self, name: str) -> int:
        # A mirror Lite vouches for knows the dimension (see _held_mirror); without one, ask Lite rather than
        # rebuild the whole mirror for one number.
        if not self.is_server and (mirror := self._held_mirror(name)) is not None:
            return mirror.dim
        return self._stored_dim(name)

    def _stored_dim(self, name: str) -> int:
        info = self._call(self.client.describe_collection, name)
        for field in info.get("fields", []):
            if field.get("name") == "vector":
                return int(field.get("params", {}).get("dim"))
        raise VectorStoreUnavailable(f"Milvus collection {name} has no vector field")

    def _before_write(self, name: str) -> Mirror | None:
        """The mirror to keep in step with a write. The first write since the mirror was last saved moves Lite's
        token on first, so if this process dies before saving, the saved mirror no longer matches Lite."""
        if self.is_server:
            return None
        mirror = self._mirror(name)
        if name not in self._token_moved:
            mirror.token = secrets.token_hex(8)
            self._set_token(name, mirror.token)
            self._token_moved.add(name)
            self._unsaved.add(name)
        return mirror

    def save_mirrors(self) -> None:
        for name in sorted(self._unsaved):
            mirror = self._mirrors.get(name)
            if mirror is not None:
                try:
                    mirror.save(self._mirror_folder(name))
                except OSError as e:  # the next start rebuilds it from Lite: slower, never wrong
                    log.warning("could not save the search mirror of %s: %s", name, e)
        self._unsaved.clear()
        self._token_moved.clear()

    # -- writes --------------------------------------------------------------------------------
    def upsert(self, name: str, ids: Sequence[int], clip_ids: Sequence[int], starts: Sequence[float], vectors):
        """Insert or replace rows by id: writing the same clip twice (a re-run after a crash) leaves one copy."""
        self._ensure_loaded(name)
        mirror = self._before_write(name)
        vectors = np.asarray(vectors, dtype=np.float32)
        for i in range(0, len(ids), INSERT_BATCH):
            rows = [
                {"id": int(ids[j]), "clip_id": int(clip_ids[j]), "start_s": float(starts[j]), "vector": vectors[j]}
                for j in range(i, min(i + INSERT_BATCH, len(ids)))
            ]
            self._call(self.client.upsert, name, rows)
        if mirror is not None:
            mirror.upsert(ids, clip_ids, starts, vectors)
            self._unflushed[name] = self._unflushed.get(name, 0) + len(ids)
            if self._unflushed[name] >= LITE_FLUSH_ROWS:
                self.flush(name)

    def delete_clips(self, name: str, clip_ids: Sequence[int]) -> None:
        self._ensure_loaded(name)
        mirror = self._before_write(name)
        for i in range(0, len(clip_ids), 1000):
            chunk = ", ".join(str(int(c)) for c in clip_ids[i : i + 1000])
            self._call(self.client.delete, name, filter=f"clip_id in [{chunk}]")
        if mirror is not None:
            mirror.delete_clips(clip_ids)

    def delete_ids(self, name: str, ids: Sequence[int]) -> None:
        self._ensure_loaded(name)
        mirror = self._before_write(name)
        for i in range(0, len(ids), 1000):
            self._call(self.client.delete, name, ids=[int(v) for v in ids[i : i + 1000]])
        if mirror is not None:
            mirror.delete_ids(ids)

    def flush(self, name: str) -> None:
        self._call(self.client.flush, name)
        self._unflushed.pop(name, None)
        if not self.is_server:
            return_freed_memory()  # the Python objects Lite's flush made of every buffered value

    # -- reads ---------------------------------------------------------------------------------
    def search(
        self,
        name: str,
        vectors,
        limit: int,
        clip_ids: Sequence[int] | None = None,
        ef: int = SEARCH_EF,
        nprobe: int = SEARCH_NPROBE,
    ) -> list[list[Hit]]:
        """The ``limit`` nearest segments for each query vector, best first."""
        vectors = np.asarray(vectors, dtype=np.float32)
        limit = max(1, min(int(limit), MAX_LIMIT))
        if not self.is_server:
            # The mirror answers: Milvus Lite is not loaded, which would hold every row in memory a second time.
            found = self._mirror(name).search(vectors, limit, clip_ids)
            return [[Hit(*row) for row in hits] for hits in found]
        self._ensure_loaded(name)
        kwargs = {}
        if clip_ids is not None:
            kwargs["filter"] = f"clip_id in [{', '.join(str(int(c)) for c in clip_ids)}]"
        results = self._call(
            self.client.search,
            name,
            data=[v.tolist() for v in vectors],
            limit=limit,
            anns_field="vector",
            output_fields=["clip_id", "start_s"],
            # Each index type reads its own parameter: ef for HNSW, nprobe for IVF.
            search_params={"metric_type": "COSINE", "params": {"ef": max(ef, limit), "nprobe": nprobe}},
            **kwargs,
        )
        return [
            [
                Hit(int(h["id"]), int(h["entity"]["clip_id"]), float(h["entity"]["start_s"]), float(h["distance"]))
                for h in hits
            ]
            for hits in results
        ]

    def vectors(self, name: str, ids: Sequence[int]) -> dict[int, np.ndarray]:
        if not self.is_server:
            return self._mirror(name).vectors_of(ids)
        self._ensure_loaded(name)
        found = {}
        for i in range(0, len(ids), 1000):
            rows = self._call(self.client.get, name, ids=[int(v) for v in ids[i : i + 1000]], output_fields=["vector"])
            for row in rows:
                found[int(row["id"])] = np.asarray(row["vector"], dtype=np.float32)
        return found

    def iter_ids(self, name: str) -> Iterator[tuple[int, int]]:
        """Every (vector id, clip id) in the collection."""
        self._ensure_loaded(name)
        iterator = self._call(
            self.client.query_iterator,
            name,
            batch_size=1000,
            filter="id >= 0",
            output_fields=["id", "clip_id"],
            consistency_level="Strong",
        )
        try:
            while True:
                batch = self._call(iterator.next)
                if not batch:
                    return
                for row in batch:
                    yield int(row["id"]), int(row["clip_id"])
        finally:
            iterator.close()

    def count(self, name: str) -> int:
        return sum(1 for _ in self.iter_ids(name))

    def close(self) -> None:
        self.save_mirrors()
        try:
            self.client.close()
        except Exception:  # closing a client whose server is gone must not mask the real error
            pass


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"
