"""The catalog in MySQL or MariaDB, through PyMySQL, for deployments shared between machines."""

from __future__ import annotations

import contextlib
import urllib.parse

import pymysql

from .catalog import Catalog
from .errors import CatalogBusy, CatalogUnavailable
from .migrations import MIGRATIONS, MYSQL_TYPES, render


def parse_mysql_url(url: str) -> dict:
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    params = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": urllib.parse.unquote(parts.username or "root"),
        "password": urllib.parse.unquote(parts.password or ""),
        "database": parts.path.lstrip("/") or "audiosim",
    }
    if "unix_socket" in query:
        params["unix_socket"] = query["unix_socket"]
    return params


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


DEADLOCK, LOCK_WAIT_TIMEOUT = 1213, 1205


class MySQLCatalog(Catalog):
    retryable_errors = (pymysql.err.IntegrityError, CatalogBusy)

    def __init__(self, url: str):
        self.url = redact(url)
        self._full_url = url  # kept out of messages: only reopen() uses it
        self._params = parse_mysql_url(url)
        try:
            self.conn = self._connect()
            self._migrate()
        except pymysql.err.MySQLError as e:
            raise CatalogUnavailable(f"Cannot reach MySQL catalog {self.url}: {e.args[-1]}") from e

    def _connect(self):
        return pymysql.connect(
            **self._params,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=10,
            read_timeout=120,
            # Row locks only: REPEATABLE READ's gap locks make two indexers deadlock on inserts of new clips.
            init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        )

    def _migrate(self):
        with self.conn.cursor() as cur:
            # Two processes starting at once must not both run a migration.
            cur.execute("SELECT GET_LOCK('audiosim_migrations', 60)")
            try:
                cur.execute(
                    "CREATE TABLE IF NOT EXISTS audiosim_migrations (name VARCHAR(191) PRIMARY KEY, "
                    "applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
                )
                cur.execute("SELECT name FROM audiosim_migrations")
                applied = {row[0] for row in cur.fetchall()}
                for name, statements in MIGRATIONS:
                    if name in applied:
                        continue
                    # MySQL commits DDL implicitly: each statement is checked so a re-run completes a half-run.
                    for sql in render(statements, MYSQL_TYPES):
                        try:
                            cur.execute(sql)
                        except pymysql.err.OperationalError as e:
                            if e.args[0] not in (1050, 1060, 1061):  # table, column or index already exists
                                raise
                    cur.execute("INSERT INTO audiosim_migrations (name) VALUES (%s)", [name])
            finally:
                cur.execute("SELECT RELEASE_LOCK('audiosim_migrations')")

    def _cursor_call(self, fn):
        try:
            if not self._depth:
                self._reconnect_if_dropped()
            with self.conn.cursor() as cur:
                return fn(cur)
        except pymysql.err.OperationalError as e:
            raise self._failure(e) from e

    def _failure(self, e: pymysql.err.OperationalError) -> CatalogUnavailable:
        if e.args and e.args[0] in (DEADLOCK, LOCK_WAIT_TIMEOUT):
            return CatalogBusy(f"MySQL catalog {self.url} is busy: {e.args[-1]}")
        return CatalogUnavailable(f"MySQL catalog {self.url} failed: {e.args[-1]}")

    def _reconnect_if_dropped(self):
        # Outside a transaction a dropped connection (server restart, idle timeout) is simply reopened.
        try:
            self.conn.ping(False)
        except pymysql.err.Error:
            with contextlib.suppress(pymysql.err.Error):
                self.conn.close()
            self.conn = self._connect()

    def _execute(self, sql, params=()):
        sql = sql.replace("?", "%s")
        return self._cursor_call(lambda cur: (cur.execute(sql, list(params)), cur.fetchall())[1])

    def _executemany(self, sql, rows):
        if rows:
            sql = sql.replace("?", "%s")
            self._cursor_call(lambda cur: cur.executemany(sql, rows))

    def _insert(self, sql, params):
        sql = sql.replace("?", "%s")
        return self._cursor_call(lambda cur: (cur.execute(sql, list(params)), cur.lastrowid)[1])

    def _begin(self):
        self._cursor_call(lambda cur: cur.execute("BEGIN"))

    def _commit(self):
        try:
            self.conn.commit()
        except pymysql.err.OperationalError as e:
            raise self._failure(e) from e

    def _rollback(self):
        with contextlib.suppress(pymysql.err.MySQLError):
            self.conn.rollback()

    def reopen(self):
        return MySQLCatalog(self._full_url)

    def close(self):
        with contextlib.suppress(pymysql.err.MySQLError):
            self.conn.close()
