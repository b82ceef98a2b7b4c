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
