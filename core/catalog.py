"""The catalog: what each clip is, where it lives, its segments' vector ids, its tags, and files that failed.

One class speaks to SQLite (through sqlite-utils) and MySQL/MariaDB (through PyMySQL); the SQL is written
once with ``?`` placeholders and every value is a parameter. Open one with ``open_catalog(url)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import hashlib
import json
import os
import random
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from .errors import ClipNotFound

READY, PENDING, DELETING = "ready", "pending", "deleting"
SEGMENT_ID_BITS = 20  # vector_id = clip_id << 20 | seq: ids derived from the catalog, a million segments a clip
MAX_SEGMENTS = 1 << SEGMENT_ID_BITS
T = TypeVar("T")


def vector_id(clip_id: int, seq: int) -> int:
    return (clip_id << SEGMENT_ID_BITS) | seq


def clip_of_vector(vid: int) -> int:
    return vid >> SEGMENT_ID_BITS


@dataclasses.dataclass(frozen=True)
class Collection:
    id: int
    name: str
    model: str
    model_version: str
    dim: int
    sample_rate: int
    window_s: float
    hop_s: float

    @property
    def identity(self) -> str:
        return f"{self.model} v{self.model_version} ({self.dim}-d)"

    @property
    def windows(self) -> str:
        """How its clips are cut, as people read it: "2 s every 1 s"."""
        return f"{self.window_s:.3g} s every {self.hop_s:.3g} s"


@dataclasses.dataclass(frozen=True)
class Clip:
    id: int
    path: str
    path_key: str
    path_raw: bytes | None
    content_hash: str | None
    status: str
    duration_s: float | None
    sample_rate: int | None
    channels: int | None
    format: str | None
    size: int | None
    mtime: float | None
    segment_count: int | None
    added_at: str
    updated_at: str

    @property
    def fs_path(self) -> str:
        """The real path as the OS wants it (the display ``path`` may have escaped non-UTF-8 bytes)."""
        return os.fsdecode(bytes(self.path_raw)) if self.path_raw else self.path


CLIP_COLUMNS = [f.name for f in dataclasses.fields(Clip)]


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


WRITE_ATTEMPTS = 10  # two indexers over the same files deadlocked 6 times running once, on a loaded 2-core CI


def retried(write):
    """Run a write again, whole, when a concurrent writer got in its way: MySQL does not serialise writers as
    SQLite does, so two indexers can deadlock, time out on a row lock, or insert the same key between a
    look-up and an insert (the re-run's look-up then finds the row). Inside an outer transaction the
    outermost retried write re-runs instead, since the database rolled everything back."""

    @functools.wraps(write)
    def run(self, *args, **kwargs):
        if self._depth:
            return write(self, *args, **kwargs)
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                return write(self, *args, **kwargs)
            except self.retryable_errors:
                if attempt == WRITE_ATTEMPTS:
                    raise
                # Jitter, so the two writers part ways; capped, so the later attempts come at least once a second.
                time.sleep(min(1.0, random.uniform(0.01, 0.05) * 2**attempt))

    return run


class Catalog:
    """Dialect-neutral catalog operations. Subclasses supply ``_execute``, ``transaction`` and ``close``."""

    url: str
    # The driver's "unique key violated", and on MySQL "deadlock" and "lock wait timeout": see ``retried``.
    retryable_errors: tuple[type[Exception], ...] = ()

    # -- dialect hooks -------------------------------------------------------------------------
    def _execute(self, sql: str, params: Sequence = ()) -> list[tuple]:
        raise NotImplementedError

    def _executemany(self, sql: str, rows: list[Sequence]) -> None:
        raise NotImplementedError

    def _begin(self) -> None:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _rollback(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def reopen(self) -> Catalog:
        """A second connection to the same catalog, for another thread."""
        raise NotImplementedError

    _depth = 0

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together or not at all; nested calls join the outer transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._begin()
        self._depth = 1
        try:
            yield
        except BaseException:
            self._rollback()
            raise
        else:
            self._commit()
        finally:
            self._depth = 0

    @retried
    def atomically(self, writes: Callable[[], T]) -> T:
        """Run ``writes``, several catalog writes, as one transaction, and run them again whole when a concurrent
        writer got in their way (a transaction's inner writes cannot retry alone). They must touch nothing but
        the catalog, since a re-run repeats them."""
        with self.transaction():
            return writes()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- meta and collection -------------------------------------------------------------------
    def meta(self, name: str) -> str | None:
        rows = self._execute("SELECT value FROM audiosim_meta WHERE name = ?", [name])
        return rows[0][0] if rows else None

    @retried
    def catalog_id(self) -> str:
        """A random id given to this catalog once: Milvus collection names carry it, so two catalogs on one
        Milvus server never share (or repair away) each other's vectors."""
        with self.transaction():
            found = self.meta("catalog_id")
            if found is None:
                found = secrets.token_hex(4)
                self._execute("INSERT INTO audiosim_meta (name, value) VALUES (?, ?)", ["catalog_id", found])
        return found

    def collection(self) -> Collection | None:
        rows = self._execute(
            "SELECT id, name, model, model_version, dim, sample_rate, window_s, hop_s FROM collections ORDER BY id"
        )
        return Collection(*rows[0]) if rows else None

    @retried
    def bind_collection(self, name, model, model_version, dim, sample_rate, window_s, hop_s) -> Collection:
        with self.transaction():
            if self.collection() is None:
                self._execute(
                    "INSERT INTO collections (name, model, model_version, dim, sample_rate, window_s, hop_s, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [name, model, model_version, dim, sample_rate, window_s, hop_s, now()],
                )
        return self.collection()

    # -- clips ---------------------------------------------------------------------------------
    def _clips(self, where: str, params: Sequence = ()) -> list[Clip]:
        rows = self._execute(f"SELECT {', '.join(CLIP_COLUMNS)} FROM clips WHERE {where}", params)
        return [Clip(*row) for row in rows]

    def clip(self, clip_id: int) -> Clip:
        found = self._clips("id = ?", [clip_id])
        if not found or found[0].status != READY:
            raise ClipNotFound(f"No clip with id {clip_id} in the catalog")
        return found[0]

    def clip_by_path_key(self, path_key: str) -> Clip | None:
        found = self._clips("path_key = ?", [path_key])
        return found[0] if found else None

    def clips_by_hash(self, content_hash: str) -> list[Clip]:
        return self._clips("content_hash = ? AND status = ? ORDER BY id", [content_hash, READY])

    def clips_by_ids(self, ids: Iterable[int]) -> dict[int, Clip]:
        ids = list(ids)
        found: dict[int, Clip] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ", ".join("?" * len(chunk))
            for clip in self._clips(f"id IN ({marks}) AND status = ?", [*chunk, READY]):
                found[clip.id] = clip
        return found

    def clips_with_status(self, status: str) -> list[Clip]:
        return self._clips("status = ? ORDER BY id", [status])

    def clips_under(self, path_prefix: str) -> list[Clip]:
        return list(self.clips_by_ids(self.filter_clip_ids(folder=path_prefix)).values())

    def filter_clip_ids(
        self,
        tag: str | None = None,
        min_duration: float | None = None,
        max_duration: float | None = None,
        folder: str | None = None,
    ) -> list[int]:
        """Ready clips with this tag, within this duration range, at or under this folder."""
        where, params = ["status = ?"], [READY]
        if tag is not None:
            where.append("id IN (SELECT clip_id FROM tags WHERE tag = ?)")
            params.append(tag)
        if min_duration is not None:
            where.append("duration_s >= ?")
            params.append(min_duration)
        if max_duration is not None:
            where.append("duration_s <= ?")
            params.append(max_duration)
        rows = self._execute(f"SELECT id, path FROM clips WHERE {' AND '.join(where)} ORDER BY id", params)
        if folder is not None:
            # Compare prefixes in Python: LIKE would treat % and _ in real file names as wildcards.
            prefix = folder.rstrip("/") + "/"
            rows = [row for row in rows if row[1] == folder or row[1].startswith(prefix)]
        return [row[0] for row in rows]

    @retried
    def begin_clip(self, path: str, path_key: str, path_raw: bytes, **fields) -> int:
        """Insert or reset a clip as pending (its old segments and tags removed); return its id."""
        stamp = now()
        with self.transaction():
            existing = self._execute("SELECT id FROM clips WHERE path_key = ?", [path_key])
            columns = ["path", "path_raw", "status", "updated_at", *fields]
            values = [path, path_raw, PENDING, stamp, *fields.values()]
            if existing:
                clip_id = existing[0][0]
                assignments = ", ".join(f"{c} = ?" for c in columns)
                self._execute(f"UPDATE clips SET {assignments} WHERE id = ?", [*values, clip_id])
                self._execute("DELETE FROM segments WHERE clip_id = ?", [clip_id])
                self._execute("DELETE FROM tags WHERE clip_id = ?", [clip_id])
            else:
                columns += ["path_key", "added_at"]
                values += [path_key, stamp]
                marks = ", ".join("?" * len(columns))
                clip_id = self._insert(f"INSERT INTO clips ({', '.join(columns)}) VALUES ({marks})", values)
        return clip_id

    def _insert(self, sql: str, params: Sequence) -> int:
        raise NotImplementedError

    @retried
    def finish_clip(self, clip_id: int, segments: list[tuple[float, float]], tags: list[tuple[str, float]], **fields):
        """Record segments and tags and mark the clip ready, in one transaction (after its vectors are stored)."""
        with self.transaction():
            self._execute("DELETE FROM segments WHERE clip_id = ?", [clip_id])
            self._execute("DELETE FROM tags WHERE clip_id = ?", [clip_id])
            self._executemany(
                "INSERT INTO segments (vector_id, clip_id, seq, start_s, end_s) VALUES (?, ?, ?, ?, ?)",
                [(vector_id(clip_id, i), clip_id, i, s, e) for i, (s, e) in enumerate(segments)],
            )
            self._executemany(
                "INSERT INTO tags (clip_id, tag, score, tag_rank) VALUES (?, ?, ?, ?)",
                [(clip_id, tag, float(score), rank) for rank, (tag, score) in enumerate(tags, 1)],
            )
            columns = {
                **fields,
                "segment_count": len(segments),
                "tags": json.dumps([tag for tag, _ in tags]),  # a JSON array, so Datasette can facet on it
                "status": READY,
                "updated_at": now(),
            }
            assignments = ", ".join(f"{c} = ?" for c in columns)
            self._execute(f"UPDATE clips SET {assignments} WHERE id = ?", [*columns.values(), clip_id])

    @retried
    def move_clip(self, clip_id: int, path: str, path_key: str, path_raw: bytes, mtime: float) -> None:
        with self.transaction():
            self._execute(
                "UPDATE clips SET path = ?, path_key = ?, path_raw = ?, mtime = ?, updated_at = ? WHERE id = ?",
                [path, path_key, path_raw, mtime, now(), clip_id],
            )

    @retried
    def touch_clip(self, clip_id: int, mtime: float) -> None:
        with self.transaction():
            self._execute("UPDATE clips SET mtime = ? WHERE id = ?", [mtime, clip_id])

    @retried
    def set_status(self, clip_id: int, status: str) -> None:
        with self.transaction():
            self._execute("UPDATE clips SET status = ?, updated_at = ? WHERE id = ?", [status, now(), clip_id])

    @retried
    def delete_clip(self, clip_id: int) -> None:
        with self.transaction():
            for table, column in (("segments", "clip_id"), ("tags", "clip_id"), ("clips", "id")):
                self._execute(f"DELETE FROM {table} WHERE {column} = ?", [clip_id])

    # -- segments and tags ---------------------------------------------------------------------
    def segments(self, clip_id: int) -> list[tuple[int, float, float]]:
        return [
            tuple(row)
            for row in self._execute(
                "SELECT vector_id, start_s, end_s FROM segments WHERE clip_id = ? ORDER BY seq", [clip_id]
            )
        ]

    def ready_vector_counts(self) -> dict[int, int]:
        """clip id -> number of segments, for every ready clip."""
        rows = self._execute(
            "SELECT clips.id, COUNT(segments.vector_id) FROM clips LEFT JOIN segments ON segments.clip_id = clips.id "
            "WHERE clips.status = ? GROUP BY clips.id",
            [READY],
        )
        return {clip_id: count for clip_id, count in rows}

    def tags(self, clip_id: int) -> list[tuple[str, float]]:
        rows = self._execute("SELECT tag, score FROM tags WHERE clip_id = ? ORDER BY tag_rank", [clip_id])
        return [(tag, score) for tag, score in rows]

    # -- labelling (the Label Studio backend) -------------------------------------------------------
    @retried
    def set_task_clip(self, project: str, task_id: int, clip_id: int) -> None:
        with self.transaction():
            self._execute("DELETE FROM label_tasks WHERE project = ? AND task_id = ?", [project, task_id])
            self._execute(
                "INSERT INTO label_tasks (project, task_id, clip_id) VALUES (?, ?, ?)", [project, task_id, clip_id]
            )

    def task_clips(self, project: str) -> dict[int, int]:
        """task id -> clip id for every task of the project seen so far."""
        rows = self._execute("SELECT task_id, clip_id FROM label_tasks WHERE project = ?", [project])
        return {task_id: clip_id for task_id, clip_id in rows}

    @retried
    def set_annotation(self, project: str, annotation_id: int, task_id: int, labels: list[str]) -> None:
        """Replace what one annotation says (an update re-labels; an empty list clears it)."""
        with self.transaction():
            self._execute(
                "DELETE FROM label_annotations WHERE project = ? AND annotation_id = ?", [project, annotation_id]
            )
            self._executemany(
                "INSERT INTO label_annotations (project, annotation_id, task_id, label, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(project, annotation_id, task_id, label, now()) for label in dict.fromkeys(labels)],
            )

    @retried
    def delete_annotations(self, project: str, annotation_ids: list[int]) -> None:
        with self.transaction():
            for annotation_id in annotation_ids:
                self._execute(
                    "DELETE FROM label_annotations WHERE project = ? AND annotation_id = ?", [project, annotation_id]
                )

    @retried
    def replace_annotations(self, project: str, rows: list[tuple[int, int, list[str]]]) -> None:
        """Make the project's annotations exactly ``rows`` of (annotation id, task id, labels): a full re-sync."""
        with self.transaction():
            self._execute("DELETE FROM label_annotations WHERE project = ?", [project])
            for annotation_id, task_id, labels in rows:
                self.set_annotation(project, annotation_id, task_id, labels)

    def labelled_clips(self, project: str) -> dict[int, list[str]]:
        """clip id -> labels annotators gave it in this project (ready clips of known tasks only)."""
        rows = self._execute(
            "SELECT label_tasks.clip_id, label_annotations.label FROM label_annotations "
            "JOIN label_tasks ON label_tasks.project = label_annotations.project "
            "AND label_tasks.task_id = label_annotations.task_id "
            "JOIN clips ON clips.id = label_tasks.clip_id "
            "WHERE label_annotations.project = ? AND clips.status = ? ORDER BY label_annotations.annotation_id",
            [project, READY],
        )
        found: dict[int, list[str]] = {}
        for clip_id, label in rows:
            found.setdefault(clip_id, [])
            if label not in found[clip_id]:
                found[clip_id].append(label)
        return found

    def label_state(self, project: str) -> str:
        """A short digest of the project's annotations: it changes exactly when a label changes."""
        rows = self._execute(
            "SELECT annotation_id, task_id, label FROM label_annotations WHERE project = ? "
            "ORDER BY annotation_id, label",
            [project],
        )
        return hashlib.sha256(json.dumps(rows, default=str).encode()).hexdigest()[:10]

    # -- failures ------------------------------------------------------------------------------
    @retried
    def record_failure(self, path: str, path_key: str, error: str, size: int | None, mtime: float | None) -> None:
        with self.transaction():
            self._execute("DELETE FROM failures WHERE path_key = ?", [path_key])
            self._execute(
                "INSERT INTO failures (path_key, path, error, size, mtime, failed_at) VALUES (?, ?, ?, ?, ?, ?)",
                [path_key, path, error, size, mtime, now()],
            )

    @retried
    def clear_failure(self, path_key: str) -> None:
        with self.transaction():
            self._execute("DELETE FROM failures WHERE path_key = ?", [path_key])

    def failures(self) -> list[tuple[str, str]]:
        return [(p, e) for p, e in self._execute("SELECT path, error FROM failures ORDER BY path")]

    # -- summary -------------------------------------------------------------------------------
    def stats(self) -> dict:
        def scalar(sql, params=()):
            return self._execute(sql, params)[0][0] or 0

        return {
            "clips": scalar("SELECT COUNT(*) FROM clips WHERE status = ?", [READY]),
            "pending": scalar("SELECT COUNT(*) FROM clips WHERE status <> ?", [READY]),
            "segments": scalar(
                "SELECT COUNT(*) FROM segments JOIN clips ON clips.id = segments.clip_id WHERE clips.status = ?",
                [READY],
            ),
            "duration_s": float(scalar("SELECT SUM(duration_s) FROM clips WHERE status = ?", [READY])),
            "failures": scalar("SELECT COUNT(*) FROM failures"),
            "tags": scalar("SELECT COUNT(DISTINCT tag) FROM tags"),
        }


def open_catalog(url: str) -> Catalog:
    """A SQLite path, or ``mysql://user:password@host:port/database``."""
    from .settings import is_mysql_url

    if is_mysql_url(url):
        from .catalog_mysql import MySQLCatalog

        return MySQLCatalog(url)
    from .catalog_sqlite import SQLiteCatalog

    return SQLiteCatalog(url)
