"""The catalog under contention: MySQL does not serialise writers, so a write that loses to another is run again."""

from __future__ import annotations

import threading

import pytest

from audiosim.catalog import READY, open_catalog


@pytest.mark.mysql
def test_a_write_blocked_by_another_writer_is_run_again(mysql_url):
    holder, writer = open_catalog(mysql_url), open_catalog(mysql_url)
    try:
        clip_id = holder.begin_clip("a.wav", "a.wav", b"a.wav")
        writer._execute("SET SESSION innodb_lock_wait_timeout = 1")
        # The holder keeps the clip's row locked for longer than the writer will wait once.
        holder._begin()
        holder._execute("UPDATE clips SET mtime = 1 WHERE id = ?", [clip_id])
        release = threading.Timer(1.5, holder._commit)
        release.start()
        writer.set_status(clip_id, READY)
        release.join()
        assert holder._execute("SELECT status, mtime FROM clips WHERE id = ?", [clip_id]) == ((READY, 1.0),)
    finally:
        holder.close()
        writer.close()


@pytest.mark.mysql
def test_writers_that_deadlock_both_finish(mysql_url):
    first, second = open_catalog(mysql_url), open_catalog(mysql_url)
    try:
        a = first.begin_clip("a.wav", "a.wav", b"a.wav")
        b = first.begin_clip("b.wav", "b.wav", b"b.wav")
        # Each side locks one row, then wants the other's: InnoDB kills one of them as the deadlock victim.
        first._begin()
        first._execute("UPDATE clips SET mtime = 1 WHERE id = ?", [a])
        second._begin()
        second._execute("UPDATE clips SET mtime = 2 WHERE id = ?", [b])
        outcome = {}

        def finish_first():
            try:
                first._execute("UPDATE clips SET mtime = 1 WHERE id = ?", [b])
                first._commit()
                outcome["first"] = "committed"
            except Exception as e:  # the victim: roll back, as transaction() would
                first._rollback()
                outcome["first"] = type(e).__name__

        racer = threading.Thread(target=finish_first)
        racer.start()
        try:
            second._execute("UPDATE clips SET mtime = 2 WHERE id = ?", [a])
            second._commit()
            outcome["second"] = "committed"
        except Exception as e:
            second._rollback()
            outcome["second"] = type(e).__name__
        racer.join()
        assert sorted(outcome.values()) == ["CatalogBusy", "committed"], outcome
        # The victim's next write through the catalog API goes through.
        victim = first if outcome["first"] == "CatalogBusy" else second
        victim.set_status(a, READY)
        victim.set_status(b, READY)
        assert {row[0] for row in first._execute("SELECT status FROM clips")} == {READY}
    finally:
        first.close()
        second.close()
