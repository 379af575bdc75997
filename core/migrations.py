"""The catalog schema as numbered, additive migrations, written once for SQLite and MySQL/MariaDB.

Each migration is a list of statements with type placeholders that each dialect fills in. SQLite runs them
through sqlite-utils' ``Migrations`` helper; MySQL through the small runner in ``catalog_mysql``.
"""

from __future__ import annotations

SQLITE_TYPES = {
    "pk": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "int": "INTEGER",
    "real": "REAL",
    "text": "TEXT",
    "key": "TEXT",  # a string that is indexed or compared: MySQL needs a bounded VARCHAR
    "blob": "BLOB",
    "opts": "",
}
MYSQL_TYPES = {
    "pk": "BIGINT PRIMARY KEY AUTO_INCREMENT",
    "int": "BIGINT",
    "real": "DOUBLE",
    "text": "TEXT",
    "key": "VARCHAR(191)",
    "blob": "LONGBLOB",
    "opts": " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
}

MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "m001_create_tables",
        [
            "CREATE TABLE audiosim_meta (name {key} PRIMARY KEY, value {text}){opts}",
            """CREATE TABLE collections (
                id {pk}, name {key} NOT NULL UNIQUE, model {key} NOT NULL, model_version {key} NOT NULL,
                dim {int} NOT NULL, sample_rate {int} NOT NULL, window_s {real} NOT NULL, hop_s {real} NOT NULL,
                created_at {key} NOT NULL){opts}""",
            """CREATE TABLE clips (
                id {pk}, path {text} NOT NULL, path_key {key} NOT NULL UNIQUE, path_raw {blob},
                content_hash {key}, collection_id {int}, status {key} NOT NULL,
                duration_s {real}, sample_rate {int}, channels {int}, format {key},
                size {int}, mtime {real}, segment_count {int},
                added_at {key} NOT NULL, updated_at {key} NOT NULL){opts}""",
            "CREATE INDEX idx_clips_content_hash ON clips (content_hash)",
            "CREATE INDEX idx_clips_status ON clips (status)",
            """CREATE TABLE segments (
                vector_id {int} PRIMARY KEY, clip_id {int} NOT NULL, seq {int} NOT NULL,
                start_s {real} NOT NULL, end_s {real} NOT NULL){opts}""",
            "CREATE INDEX idx_segments_clip_id ON segments (clip_id)",
            """CREATE TABLE tags (
                clip_id {int} NOT NULL, tag {key} NOT NULL, score {real} NOT NULL, tag_rank {int} NOT NULL,
                PRIMARY KEY (clip_id, tag)){opts}""",
            "CREATE INDEX idx_tags_tag ON tags (tag)",
            """CREATE TABLE failures (
                path_key {key} PRIMARY KEY, path {text} NOT NULL, error {text} NOT NULL,
                size {int}, mtime {real}, failed_at {key} NOT NULL){opts}""",
        ],
    ),
    ("m002_clip_tags_array", ["ALTER TABLE clips ADD COLUMN tags {text}"]),
    (
        "m003_labelling",
        [
            # Which clip each labelling task's audio is, per Label Studio project.
            """CREATE TABLE label_tasks (
                project {key} NOT NULL, task_id {int} NOT NULL, clip_id {int} NOT NULL,
                PRIMARY KEY (project, task_id)){opts}""",
            # The labels annotators gave: one row per chosen label of each annotation.
            """CREATE TABLE label_annotations (
                project {key} NOT NULL, annotation_id {int} NOT NULL, task_id {int} NOT NULL, label {key} NOT NULL,
                updated_at {key} NOT NULL, PRIMARY KEY (project, annotation_id, label)){opts}""",
            "CREATE INDEX idx_label_annotations_task ON label_annotations (project, task_id)",
        ],
    ),
]


def render(statements: list[str], types: dict[str, str]) -> list[str]:
    return [statement.format(**types) for statement in statements]
