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


@pytest.mark.mysql
def test_a_group_of_writes_that_deadlocks_is_run_again_whole(mysql_url):
    """The indexer begins and finishes each batch's clips in one transaction: losing a deadlock re-runs the lot."""
    first, second = open_catalog(mysql_url), open_catalog(mysql_url)
    try:
        a = first.begin_clip("a.wav", "a.wav", b"a.wav")
        b = first.begin_clip("b.wav", "b.wav", b"b.wav")
        both_hold_one = threading.Barrier(2, timeout=30)
        runs = {"first": 0, "second": 0}

        def writes(catalog, name, mtime, rows):
            def run():
                runs[name] += 1
                catalog._execute("UPDATE clips SET mtime = ? WHERE id = ?", [mtime, rows[0]])
                if runs[name] == 1:
                    both_hold_one.wait()  # then each wants the row the other holds
                catalog._execute("UPDATE clips SET mtime = ? WHERE id = ?", [mtime, rows[1]])
                return name

            return run

        errors = []

        def run_first():
            try:
                first.atomically(writes(first, "first", 1.0, [a, b]))
            except Exception as e:
                errors.append(e)

        racer = threading.Thread(target=run_first)
        racer.start()
        assert second.atomically(writes(second, "second", 2.0, [b, a])) == "second"
        racer.join()
        assert errors == []
        assert sorted(runs.values()) == [1, 2]  # the deadlock's victim ran its writes again
        # Whoever committed last wrote both rows: no half of the victim's first try survived.
        last = 1.0 if runs["first"] == 2 else 2.0
        assert first._execute("SELECT mtime FROM clips ORDER BY id") == ((last,), (last,))
    finally:
        first.close()
        second.close()
