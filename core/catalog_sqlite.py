"""The catalog in a SQLite file, through sqlite-utils (which also runs the numbered migrations)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils
from sqlite_utils.migrations import Migrations

from .catalog import Catalog
from .errors import CatalogUnavailable
from .migrations import MIGRATIONS, SQLITE_TYPES, render


def _migrations() -> Migrations:
    migrations = Migrations("audiosim")
    for name, statements in MIGRATIONS:

        def apply(db, statements=statements):
            for sql in render(statements, SQLITE_TYPES):
                db.execute(sql)

        migrations(name=name)(apply)
    return migrations


class SQLiteCatalog(Catalog):
    retryable_errors = (sqlite3.IntegrityError,)

    def __init__(self, path: str | Path):
        self.url = str(path)
        try:
            if Path(path).parent and not Path(path).parent.exists():
                raise CatalogUnavailable(f"Cannot open catalog {path}: folder {Path(path).parent} does not exist")
            conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
            self.db = sqlite_utils.Database(conn)
            # WAL lets Datasette read the catalog while an index run writes to it.
            self.db.execute("PRAGMA journal_mode=WAL")
            _migrations().apply(self.db)
        except sqlite3.DatabaseError as e:
            raise CatalogUnavailable(f"Cannot open catalog {path}: {e}") from e

    def _execute(self, sql, params=()):
        return self.db.execute(sql, list(params)).fetchall()

    def _executemany(self, sql, rows):
        if rows:
            self.db.conn.executemany(sql, rows)

    def _insert(self, sql, params):
        return self.db.execute(sql, list(params)).lastrowid

    def _begin(self):
        self.db.execute("BEGIN IMMEDIATE")

    def _commit(self):
        self.db.execute("COMMIT")

    def _rollback(self):
        self.db.execute("ROLLBACK")

    def reopen(self):
        return SQLiteCatalog(self.url)

    def close(self):
        self.db.close()
