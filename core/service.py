"""The one object adapters talk to: index, search (by file, clip or vector), remove, stats and verify."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from .catalog import DELETING, PENDING, Clip, Collection, clip_of_vector, open_catalog
from .decode import display_path, read_blocks
from .embedders import Embedder
from .errors import AudioSimError, ClipNotFound
from .ingest import Indexer, IndexReport, delete_clip
from .models import choose_embedder
from .scan import path_key
from .segments import cut_windows
from .settings import Settings
from .vectors import MAX_LIMIT, VectorStore

MAX_QUERY_WINDOWS = 32  # a long query is represented by at most this many evenly spread windows
MAX_QUERY_S = 600.0  # only the first ten minutes of a query file are heard
EXACT_FILTER_SEGMENTS = 5000  # a search restricted to at most this many segments is done exactly, in numpy


@dataclasses.dataclass(frozen=True)
class Match:
    clip: Clip
    score: float  # cosine similarity of the best matching pair of segments, -1..1
    offset_s: float  # where in the clip the best matching segment starts
    query_offset_s: float  # where in the query the best matching segment starts
    query: str

    def to_dict(self) -> dict:
        return {
            "clip_id": self.clip.id,
            "path": self.clip.path,
            "score": round(self.score, 6),
            "offset_s": round(self.offset_s, 3),
            "query_offset_s": round(self.query_offset_s, 3),
            "duration_s": self.clip.duration_s,
            "query": self.query,
        }


@dataclasses.dataclass
class VerifyReport:
    problems: list[str] = dataclasses.field(default_factory=list)
    repaired: list[str] = dataclasses.field(default_factory=list)
    missing_files: list[str] = dataclasses.field(default_factory=list)  # catalogued clips whose file is gone
    clips: int = 0
    vectors: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


class AudioSim:
    """Open a catalog and its vector store. Cheap to create: the store and model open on first use."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.catalog = open_catalog(settings.catalog)
        self._store: VectorStore | None = None
        self._embedder: Embedder | None = None

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
        self.catalog.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- parts ---------------------------------------------------------------------------------
    @property
    def store(self) -> VectorStore:
        if self._store is None:
            self._store = VectorStore(self.settings.milvus_uri, self.settings.milvus_token)
        return self._store

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = choose_embedder(
                self.settings.model,
                self.catalog.collection(),
                self.settings.model_dir,
                self.settings.batch_size,
                self.settings.runtime,
                self.settings.hop_s,
            )
        return self._embedder

    def collection(self) -> Collection:
        """The catalog's collection, bound to the chosen model on first use, and present in Milvus.
        Searching stored vectors needs no model, so an existing collection is returned without loading one."""
        found = self.catalog.collection()
        if found is None:
            e = self.embedder
            slug = re.sub(r"[^A-Za-z0-9]+", "_", e.name)
            name = f"audiosim_{self.catalog.catalog_id()}_{slug}_v{re.sub(r'[^0-9A-Za-z]+', '_', e.version)}"
            found = self.catalog.bind_collection(name, e.name, e.version, e.dim, e.sample_rate, e.window_s, e.hop_s)
        self.store.ensure_collection(found.name, found.dim)
        return found

    # -- index and remove ----------------------------------------------------------------------
    def index(self, paths: Iterable[str | os.PathLike], progress: Callable[[str], None] | None = None) -> IndexReport:
        """Index audio files and folders. Unchanged files are skipped; changed files re-embedded; moved files
        keep their clip id. Bad files are reported, never fatal."""
        collection = self.collection()
        indexer = Indexer(self.catalog, self.store, collection.name, self.embedder)
        return indexer.run([os.fspath(p) for p in paths], progress)

    def remove(self, paths: Iterable[str | os.PathLike]) -> list[Clip]:
        """Remove clips by file path or folder: vectors first, then catalog rows (a crash resumes on the next run)."""
        removed = []
        collection = self.collection()
        for given in paths:
            path = os.path.abspath(os.fspath(given))
            clip = self.catalog.clip_by_path_key(path_key(path))
            clips = [clip] if clip else self.catalog.clips_under(display_path(path))
            if not clips:
                raise ClipNotFound(f"No catalogued clip at or under {display_path(path)}")
            for clip in clips:
                delete_clip(self.catalog, self.store, collection.name, clip.id)
                self.catalog.clear_failure(clip.path_key)
                removed.append(clip)
        return removed

    # -- search --------------------------------------------------------------------------------
    def embed_file(self, path: str | os.PathLike) -> tuple[np.ndarray, list[float]]:
        """Query vectors for a file (at most MAX_QUERY_WINDOWS, evenly spread) and their start times."""
        e = self.embedder
        blocks = read_blocks(path, e.sample_rate)
        windows = list(
            cut_windows(_first_seconds(blocks, e.sample_rate, MAX_QUERY_S), e.sample_rate, e.window_s, e.hop_s)
        )
        windows = _spread(windows, MAX_QUERY_WINDOWS)
        out = e.embed([w.samples for w in windows])
        return out.vectors, [w.start_s for w in windows]

    def search_file(self, path: str | os.PathLike, k: int = 10, clip_ids: Sequence[int] | None = None) -> list[Match]:
        vectors, starts = self.embed_file(path)
        return self.search_vectors(vectors, starts, k, query=display_path(path), clip_ids=clip_ids)

    def similar(self, clip_id: int, k: int = 10, clip_ids: Sequence[int] | None = None) -> list[Match]:
        """More like catalog clip ``clip_id``, using its stored vectors (no decoding, no model run)."""
        clip = self.catalog.clip(clip_id)
        collection = self.collection()
        segments = _spread(self.catalog.segments(clip.id), MAX_QUERY_WINDOWS)
        stored = self.store.vectors(collection.name, [vid for vid, _, _ in segments])
        if not stored:
            raise ClipNotFound(f"Clip {clip_id} has no vectors in Milvus; run: audiosim verify --repair")
        kept = [(stored[vid], start) for vid, start, _ in segments if vid in stored]
        vectors = np.stack([v for v, _ in kept])
        return self.search_vectors(
            vectors, [s for _, s in kept], k, query=str(clip_id), exclude=clip.id, clip_ids=clip_ids
        )

    def search_vectors(
        self,
        vectors,
        starts: Sequence[float] | None = None,
        k: int = 10,
        query: str = "",
        exclude: int | None = None,
        clip_ids: Sequence[int] | None = None,
    ) -> list[Match]:
        """Rank clips by their best segment against any of the query vectors."""
        if k < 1:
            raise AudioSimError("k must be at least 1")
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        starts = list(starts) if starts is not None else [0.0] * len(vectors)
        collection = self.collection()
        if vectors.shape[1] != collection.dim:
            raise AudioSimError(f"query vectors are {vectors.shape[1]}-d; this catalog holds {collection.dim}-d")
        if clip_ids is not None:
            exact = self._exact_restricted(collection, vectors, starts, k, query, exclude, clip_ids)
            if exact is not None:
                return exact
        wanted = k + (exclude is not None)
        limit = min(MAX_LIMIT, wanted * 4 + 16)
        while True:
            results = self.store.search(collection.name, vectors, limit, clip_ids=clip_ids)
            best: dict[int, tuple[float, float, float]] = {}
            for q_start, hits in zip(starts, results, strict=True):
                for hit in hits:
                    if hit.clip_id == exclude:
                        continue
                    if hit.clip_id not in best or hit.score > best[hit.clip_id][0]:
                        best[hit.clip_id] = (hit.score, hit.start_s, q_start)
            clips = self.catalog.clips_by_ids(best)  # ready clips only: a half-written clip never shows
            full = any(len(hits) >= limit for hits in results)
            if len(clips) >= k or not full or limit >= MAX_LIMIT:
                break
            limit = min(MAX_LIMIT, limit * 4)  # many segments of few clips filled the top: look deeper
        ranked = sorted((cid for cid in best if cid in clips), key=lambda c: -best[c][0])[:k]
        return [Match(clips[c], best[c][0], best[c][1], best[c][2], query) for c in ranked]

    def _exact_restricted(self, collection, vectors, starts, k, query, exclude, clip_ids) -> list[Match] | None:
        """Milvus filters inside the ANN index (HNSW on Milvus Lite, IVF on a server) can drop hits of a selective
        filter; when the allowed clips are few, score their segments exactly instead."""
        clips = self.catalog.clips_by_ids(c for c in clip_ids if c != exclude)
        if sum(clip.segment_count or 0 for clip in clips.values()) > EXACT_FILTER_SEGMENTS:
            return None  # decided from the clip rows, before reading any segment
        segments = [(vid, start, cid) for cid in clips for vid, start, _ in self.catalog.segments(cid)]
        stored = self.store.vectors(collection.name, [vid for vid, _, _ in segments]) if segments else {}
        present = [(vid, start, cid) for vid, start, cid in segments if vid in stored]
        if not present:
            return []
        scores = vectors @ np.stack([stored[vid] for vid, _, _ in present]).T  # (queries, segments)
        best: dict[int, tuple[float, float, float]] = {}
        for qi, col in zip(*np.unravel_index(np.argsort(-scores, axis=None), scores.shape), strict=True):
            vid, start, cid = present[col]
            if cid not in best:
                best[cid] = (float(scores[qi, col]), start, starts[qi])
                if len(best) == k:
                    break
        ranked = sorted(best, key=lambda c: -best[c][0])
        return [Match(clips[c], best[c][0], best[c][1], best[c][2], query) for c in ranked]

    # -- stats and verify ----------------------------------------------------------------------
    def stats(self) -> dict:
        collection = self.catalog.collection()
        out = {"catalog": self.catalog.url, "milvus": self.settings.milvus_uri, **self.catalog.stats()}
        if collection:
            out.update(model=collection.identity, collection=collection.name)
            out["windows"] = collection.windows
            out["vectors"] = self.store.count(collection.name) if self.store.has_collection(collection.name) else 0
        return out

    def verify(self, repair: bool = False) -> VerifyReport:
        """Check that catalog and vectors agree; with ``repair``, make them agree."""
        report = VerifyReport()
        collection = self.catalog.collection()
        if collection is None:
            return report
        self.store.ensure_collection(collection.name, collection.dim)
        expected = self.catalog.ready_vector_counts()
        report.clips = len(expected)
        stored: dict[int, int] = {}
        orphans: list[int] = []
        for vid, clip_id in self.store.iter_ids(collection.name):
            report.vectors += 1
            if clip_id in expected and clip_of_vector(vid) == clip_id:
                stored[clip_id] = stored.get(clip_id, 0) + 1
            else:
                orphans.append(vid)
        broken = [cid for cid, count in expected.items() if stored.get(cid, 0) != count]
        unfinished = self.catalog.clips_with_status(PENDING) + self.catalog.clips_with_status(DELETING)
        if orphans:
            report.problems.append(f"{len(orphans)} vectors in Milvus belong to no catalogued clip")
        for clip_id in broken:
            report.problems.append(
                f"clip {clip_id}: {expected[clip_id]} segments in the catalog, {stored.get(clip_id, 0)} vectors"
            )
        for clip in unfinished:
            report.problems.append(f"clip {clip.id} ({clip.path}) was left {clip.status} by an interrupted run")
        for clip in self.catalog.clips_by_ids(expected).values():
            if not os.path.exists(clip.fs_path):
                report.missing_files.append(clip.path)
        if repair and report.problems:
            self._repair(collection, orphans, broken, unfinished, report)
        return report

    def _repair(self, collection, orphans, broken, unfinished, report):
        if orphans:
            self.store.delete_ids(collection.name, orphans)
            report.repaired.append(f"deleted {len(orphans)} orphan vectors")
        redo = []
        for clip_id in broken:
            self.catalog.set_status(clip_id, PENDING)  # the indexer redoes pending clips from their files
            redo.append(clip_id)
        deleting = [c for c in unfinished if c.status == DELETING]
        for clip in deleting:
            delete_clip(self.catalog, self.store, collection.name, clip.id)
            report.repaired.append(f"finished removing clip {clip.id}")
        if redo or len(deleting) < len(unfinished):
            result = self.index([])
            report.repaired.append(f"re-indexed {len(result.indexed)} clips")
            report.problems.extend(f"{p}: {r}" for p, r in result.failed)


def _first_seconds(blocks, sample_rate: int, seconds: float):
    left = int(seconds * sample_rate)
    for block in blocks:
        yield block[:left]
        left -= len(block)
        if left <= 0:
            return


def _spread(items: list, most: int) -> list:
    if len(items) <= most:
        return items
    picks = np.linspace(0, len(items) - 1, most).round().astype(int)
    return [items[i] for i in picks]


__all__ = ["AudioSim", "Match", "VerifyReport"]
