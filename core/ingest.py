"""Indexing: decide what each file needs, decode and embed it, then write vectors and catalog rows in crash-safe order.

Three stages overlap: a reader thread stats, hashes and decodes files and cuts them into windows, packing
windows of several small files into one batch; an embedding thread hands each batch to the model (on torch's CPU
engines, to a worker per core, a batch each); the calling thread writes the finished clips, a batch's worth
together, in the reader's order. Writes go: the clips' catalog rows marked *pending* (one transaction) -> their
old vectors deleted -> new vectors upserted (ids derived from the clip id) -> segments, tags and *ready* (one
transaction). A crash anywhere leaves pending clips (or none), which the next run re-does from scratch; upserts
by derived id make the redo idempotent.

A long recording is not held whole until its end: once ``LONG_CLIP_WRITE`` of its windows wait, its clip goes
pending and they are upserted, and so on until its last batch finishes it. A crash in between leaves it pending
with some of its vectors, like a crash between a short clip's upsert and its finish.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import stat
import threading
from collections.abc import Callable, Iterable

import numpy as np

from .catalog import DELETING, MAX_SEGMENTS, PENDING, READY, Catalog, Clip, vector_id
from .decode import display_path, probe, read_blocks
from .embedders import Embedder
from .errors import AudioSimError, DecodeError
from .scan import audio_files, content_hash, path_key
from .segments import cut_windows
from .vectors import VectorStore

TOP_TAGS = 5
# Windows of one clip held before they are written: 2 MB of 2048-d vectors. A 2-hour recording held to its end
# (7,200 windows) cost ~0.4 GB more at its peak: its vectors, their copy for the store, and the store's batch.
LONG_CLIP_WRITE = 256


@dataclasses.dataclass
class IndexReport:
    indexed: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)  # unchanged since the last run
    moved: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (from, to), identity kept
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (path, reason)
    segments: int = 0
    audio_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclasses.dataclass
class _Job:
    """One file's outcome, decided by the reader and carried out by the writer, in scan order."""

    action: str  # "embed", "skip", "touch", "move" or "fail"
    path: str
    key: str
    size: int | None = None
    mtime: float | None = None
    content_hash: str | None = None
    existing: Clip | None = None
    starts: list[tuple[float, float]] = dataclasses.field(default_factory=list)  # every window's
    vectors: list[np.ndarray] = dataclasses.field(default_factory=list)  # those not yet written
    written: int = 0  # windows whose vectors are in the store (a long clip's, before its end)
    clip_id: int | None = None  # once its catalog row is pending
    peak_scores: np.ndarray | None = None  # each class's highest score over the windows so far
    error: str | None = None
    info: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Batch:
    windows: list  # (job, Window)
    finished: list  # jobs whose every window is in this batch or an earlier one
    embedded: tuple | None = None  # (the windows embedded, a future of the model's output), set by the embedding thread


_DONE = object()


class Indexer:
    def __init__(self, catalog: Catalog, store: VectorStore, collection_name: str, embedder: Embedder):
        self.catalog, self.store, self.collection, self.embedder = catalog, store, collection_name, embedder

    def run(self, paths: Iterable[str], progress: Callable[[str], None] | None = None) -> IndexReport:
        report = IndexReport()
        self._finish_interrupted_deletes()
        scan_problems: list[tuple[str, str]] = []
        files = list(dict.fromkeys(audio_files(paths, scan_problems)))  # overlapping arguments: each file once
        known = set(files)
        # Clips a crashed run left pending are redone even if this run was pointed elsewhere.
        for clip in self.catalog.clips_with_status(PENDING):
            if not os.path.exists(clip.fs_path):
                self._delete_clip(clip.id)
            elif clip.fs_path not in known:
                files.append(clip.fs_path)
        report.failed.extend(scan_problems)
        batches: queue.Queue = queue.Queue(maxsize=4)
        embedded: queue.Queue = queue.Queue(maxsize=2)
        stop = threading.Event()
        stages = [
            threading.Thread(target=self._read, args=(files, batches, stop), name="audiosim-reader", daemon=True),
            threading.Thread(
                target=self._embed_all, args=(batches, embedded, stop), name="audiosim-embedder", daemon=True
            ),
        ]
        for stage in stages:
            stage.start()
        try:
            while (batch := embedded.get()) is not _DONE:
                if isinstance(batch, BaseException):
                    raise batch
                self._collect(batch)
                self._write(batch.finished, report, progress)
                self._write_long_clips(batch)
        finally:
            stop.set()
            # Unblock a stage waiting on a full queue: the embedder first, then the reader that feeds it.
            for stage, its_queue in zip(reversed(stages), (embedded, batches), strict=True):
                while stage.is_alive():
                    try:
                        its_queue.get(timeout=0.1)
                    except queue.Empty:
                        pass
        if report.indexed and self.store.is_server:
            # Seal what this run wrote, so the server indexes it now: until then a growing segment is searched
            # through a rough interim index (measured: recall@10 0.51 on freshly inserted rows).
            self.store.flush(self.collection)
        return report

    # -- reader thread -------------------------------------------------------------------------
    def _read(self, files, batches, stop):
        try:
            # The reader only reads the catalog, through its own connection; every write is the writer's.
            with self.catalog.reopen() as catalog:
                self._read_files(catalog, files, batches, stop)
        except BaseException as e:  # hand any surprise to the writer thread, which re-raises it
            batches.put(e)

    def _read_files(self, catalog, files, batches, stop):
        pending: list = []
        finished: list = []
        moved_twins: set[int] = set()
        for path in files:
            if stop.is_set():
                return
            job = self._plan(catalog, path, moved_twins)
            if job.action != "embed":
                finished.append(job)
                if len(finished) >= 64:  # keep progress moving through long runs of unchanged files
                    batches.put(_Batch(pending, finished))
                    pending, finished = [], []
                continue
            try:
                for window in self._windows(job):
                    pending.append((job, window))
                    if len(pending) >= self.embedder.batch_size:
                        batches.put(_Batch(pending, finished))
                        pending, finished = [], []
                        if stop.is_set():
                            return
            except Exception as e:  # noqa: BLE001 - whatever one file does, the batch goes on
                job.error = _reason(e)
            finished.append(job)
        batches.put(_Batch(pending, finished))
        batches.put(_DONE)

    def _plan(self, catalog: Catalog, path: str, moved_twins: set[int]) -> _Job:
        """Decide what a file needs: nothing (unchanged), a move (same content, old path gone), or embedding."""
        key = path_key(path)
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                # A FIFO or device named like audio would block the reader forever, or never end.
                return _Job("fail", path, key, error="not a regular file")
            existing = catalog.clip_by_path_key(key)
            job = _Job("embed", path, key, st.st_size, st.st_mtime, existing=existing)
            if existing and existing.status == READY and existing.size == st.st_size and existing.mtime == st.st_mtime:
                job.action = "skip"
                return job
            job.content_hash = content_hash(path)
        except OSError as e:
            return _Job("fail", path, key, error=_reason(e))
        if existing and existing.status == READY and existing.content_hash == job.content_hash:
            job.action = "touch"  # touched but identical
        elif existing is None:
            for twin in catalog.clips_by_hash(job.content_hash):
                if twin.id not in moved_twins and not os.path.exists(twin.fs_path):
                    moved_twins.add(twin.id)
                    job.action, job.existing = "move", twin
                    break
        return job

    def _windows(self, job: _Job):
        sr = self.embedder.sample_rate
        try:
            info = probe(job.path)
            job.info = {"sample_rate": info.sample_rate, "channels": info.channels, "format": info.format}
        except DecodeError:
            job.info = {}
        total = 0

        def counted(blocks):
            nonlocal total
            for block in blocks:
                total += len(block)
                yield block

        count = 0
        for window in cut_windows(counted(read_blocks(job.path, sr)), sr, self.embedder.window_s, self.embedder.hop_s):
            count += 1
            if count > MAX_SEGMENTS:
                raise DecodeError(f"{display_path(job.path)}: longer than {MAX_SEGMENTS} windows")
            yield window
        job.info["duration_s"] = total / sr

    # -- embedding thread ----------------------------------------------------------------------
    def _embed_all(self, batches, embedded, stop):
        """Hand each batch the reader made to the model and pass it on: the model runs while the caller writes the
        last batch's clips (torch and ONNX Runtime let go of the GIL while they compute), on as many batches at
        once as the engine has workers."""
        try:
            while not stop.is_set():
                try:
                    batch = batches.get(timeout=0.1)
                except queue.Empty:
                    continue
                if batch is _DONE or isinstance(batch, BaseException):
                    embedded.put(batch)
                    return
                self._embed(batch)
                embedded.put(batch)
        except BaseException as e:  # hand any surprise to the writer thread, which re-raises it
            embedded.put(e)

    def _embed(self, batch: _Batch) -> None:
        live = [(job, w) for job, w in batch.windows if job.error is None]
        if not live:
            return
        batch.embedded = live, self.embedder.submit([w.samples for _, w in live])

    # -- writer (calling) thread ---------------------------------------------------------------
    def _collect(self, batch: _Batch) -> None:
        """Hand a batch's vectors to their jobs, here in the writer thread, which alone writes and clears them."""
        if batch.embedded is None:
            return
        live, future = batch.embedded
        out = future.result()
        for i, (job, window) in enumerate(live):
            job.starts.append((window.start_s, window.end_s))
            job.vectors.append(out.vectors[i])
            if out.class_scores is not None:
                scores = out.class_scores[i]
                job.peak_scores = scores.copy() if job.peak_scores is None else np.maximum(job.peak_scores, scores)

    def _write(self, jobs: list[_Job], report: IndexReport, progress) -> None:
        """Record what each finished file came to. The embedded ones share one vector-store write: on 2 cores
        a store call per clip cost a fifth of the run's time once the model got fast."""
        embedded = []
        for job in jobs:
            if job.action == "embed" and not job.error and job.starts:
                embedded.append(job)
            else:
                self._record(job, report)
        if embedded:
            self._store_clips(embedded, report)
        if progress:
            for job in jobs:
                progress(display_path(job.path))

    def _record(self, job: _Job, report: IndexReport) -> None:
        """A file that needs no vectors written: unchanged, touched, moved, or failed."""
        shown = display_path(job.path)
        if job.action == "skip":
            report.skipped.append(shown)
        elif job.action == "touch":
            self.catalog.touch_clip(job.existing.id, job.mtime)
            report.skipped.append(shown)
        elif job.action == "move":
            self.catalog.move_clip(job.existing.id, shown, job.key, os.fsencode(job.path), job.mtime)
            report.moved.append((job.existing.path, shown))
        else:
            reason = job.error or "no audio"
            self.catalog.record_failure(shown, job.key, reason, job.size, job.mtime)
            report.failed.append((shown, reason))
            if job.clip_id is not None:  # a long file that failed part way: its first vectors are written
                self._delete_clip(job.clip_id)
            elif job.existing:  # the file changed into something unreadable: its old entry is stale
                self._delete_clip(job.existing.id)

    def _store_clips(self, jobs: list[_Job], report: IndexReport) -> None:
        """Every clip pending in the catalog, then their vectors, then each clip ready: a crash in between leaves
        pending clips, which the next run redoes."""
        self._store_vectors(jobs)
        self.catalog.atomically(lambda: [self._finish(job) for job in jobs])
        for job in jobs:
            report.indexed.append(display_path(job.path))
            report.segments += len(job.starts)
            report.audio_s += job.info.get("duration_s") or 0.0

    def _write_long_clips(self, batch: _Batch) -> None:
        """Write the waiting vectors of each clip of this batch that goes on into later ones, once enough wait."""
        finished = {id(job) for job in batch.finished}
        waiting = {id(job): job for job, _ in batch.windows if id(job) not in finished}.values()
        long = [job for job in waiting if job.error is None and len(job.vectors) >= LONG_CLIP_WRITE]
        if long:
            self._store_vectors(long)

    def _store_vectors(self, jobs: list[_Job]) -> None:
        """The clips pending in the catalog (those not already), their old vectors gone, then their waiting
        vectors upserted under ids derived from the clip id and each window's place in the clip."""
        new = [job for job in jobs if job.clip_id is None]
        if new:
            collection_id = self.catalog.collection().id
            begin = self.catalog.begin_clip
            # One commit for the lot: each commit waits for the disk.
            clip_ids = self.catalog.atomically(
                lambda: [
                    begin(display_path(job.path), job.key, os.fsencode(job.path), collection_id=collection_id)
                    for job in new
                ]
            )
            for job, clip_id in zip(new, clip_ids, strict=True):
                job.clip_id = clip_id
            replaced = [job.clip_id for job in new if job.existing]
            if replaced:
                self.store.delete_clips(self.collection, replaced)
        ids = [vector_id(job.clip_id, job.written + i) for job in jobs for i in range(len(job.vectors))]
        owners = [job.clip_id for job in jobs for _ in job.vectors]
        starts = [job.starts[job.written + i][0] for job in jobs for i in range(len(job.vectors))]
        if ids:
            self.store.upsert(self.collection, ids, owners, starts, [v for job in jobs for v in job.vectors])
        for job in jobs:
            job.written += len(job.vectors)
            job.vectors = []

    def _finish(self, job: _Job) -> None:
        fields = {
            "content_hash": job.content_hash,
            "size": job.size,
            "mtime": job.mtime,
            "duration_s": job.info.get("duration_s"),
            "sample_rate": job.info.get("sample_rate"),
            "channels": job.info.get("channels"),
            "format": job.info.get("format"),
        }
        self.catalog.finish_clip(job.clip_id, job.starts, self._tags(job), **fields)
        self.catalog.clear_failure(job.key)

    def _tags(self, job: _Job) -> list[tuple[str, float]]:
        labels = self.embedder.labels
        if not labels or job.peak_scores is None:
            return []
        clip_scores = job.peak_scores  # a tag holds if any moment of the clip shows it
        top = np.argsort(-clip_scores)[:TOP_TAGS]
        return [(labels[i], round(float(clip_scores[i]), 4)) for i in top]

    # -- deletes -------------------------------------------------------------------------------
    def _delete_clip(self, clip_id: int) -> None:
        delete_clip(self.catalog, self.store, self.collection, clip_id)

    def _finish_interrupted_deletes(self) -> None:
        for clip in self.catalog.clips_with_status(DELETING):
            self._delete_clip(clip.id)


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError):
        return f"cannot read ({e.strerror or e})"
    if isinstance(e, MemoryError):
        return "out of memory while decoding"
    if isinstance(e, AudioSimError):
        return str(e)
    return f"unexpected {type(e).__name__} while decoding: {e}"


def delete_clip(catalog: Catalog, store: VectorStore, collection: str, clip_id: int) -> None:
    """Remove a clip in crash-safe order: marked *deleting*, then its vectors, then its rows. A crash in between
    leaves a *deleting* clip, which the next index run (or verify --repair) finishes."""
    catalog.set_status(clip_id, DELETING)
    store.delete_clips(collection, [clip_id])
    catalog.delete_clip(clip_id)
