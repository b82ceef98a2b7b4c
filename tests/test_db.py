"""The database layer: shared write transactions (group commit) and their failure rules."""
import threading

import pytest

from dialer.db import batched, utcnow


def test_writes_from_many_threads_commit_and_one_that_fails_fails_alone(app, db):
    def write(conn_db, n):
        conn_db.execute("INSERT INTO audit_log (created_at, action, username) VALUES (?, 'test', ?)",
                        [utcnow(), f"user{n}"])
        if n == 3:
            raise ValueError("this write is refused")  # after its insert: the insert must go too
        return n

    results, barrier = {}, threading.Barrier(8)

    def caller(n):
        barrier.wait()  # all at once, so they share transactions
        try:
            results[n] = batched(db, write, n)
        except ValueError as error:
            results[n] = error

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert isinstance(results.pop(3), ValueError)
    assert results == {n: n for n in range(8) if n != 3}
    kept = {row[0] for row in db.execute("SELECT username FROM audit_log WHERE action = 'test'")}
    assert kept == {f"user{n}" for n in range(8) if n != 3}


def test_a_write_is_visible_to_other_connections_when_batched_returns(app, db):
    batched(db, lambda conn_db: conn_db.execute(
        "INSERT INTO audit_log (created_at, action) VALUES (?, 'visible')", [utcnow()]))
    other = db.conn.execute("SELECT count(*) FROM audit_log WHERE action = 'visible'").fetchone()[0]
    assert other == 1


def test_a_failing_write_raises_its_own_error_to_its_caller(app, db):
    with pytest.raises(ZeroDivisionError):
        batched(db, lambda conn_db: 1 / 0)


def test_a_fault_of_the_writer_itself_fails_that_batch_with_a_log_and_the_writer_serves_the_next(app, db, monkeypatch, caplog):
    """Not one write's error (those go to their caller): the writer's own code failing. Without the
    guard its thread died and every later write waited for ever."""
    from dialer import db as db_module
    batched(db, lambda conn_db: None)  # the writer is running
    serve = db_module._Batcher._serve
    faults = iter([RuntimeError("the writer broke")])

    def failing_once(self, batch):
        fault = next(faults, None)
        if fault:
            raise fault
        return serve(self, batch)
    monkeypatch.setattr(db_module._Batcher, "_serve", failing_once)
    with pytest.raises(RuntimeError, match="the writer broke"):
        batched(db, lambda conn_db: conn_db.execute("INSERT INTO audit_log (created_at, action) VALUES (?, 'lost')", [utcnow()]))
    assert "The database writer failed a batch of 1 writes" in caplog.text
    done = threading.Event()
    threading.Thread(target=lambda: (batched(db, lambda conn_db: conn_db.execute(
        "INSERT INTO audit_log (created_at, action) VALUES (?, 'after')", [utcnow()])), done.set()), daemon=True).start()
    assert done.wait(5), "the writer no longer serves writes"
    counts = dict(db.conn.execute("SELECT action, count(*) FROM audit_log WHERE action IN ('lost', 'after') GROUP BY action"))
    assert counts == {"after": 1}
