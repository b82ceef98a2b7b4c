"""The SQLite database: one reused connection per thread, schema through sqlite-utils migrations."""
import os
import queue
import sqlite3
import threading
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import datetime, timezone

from flask import current_app
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("dialer")

# One lock per database file in this process: writers wait on it and are woken the moment it is
# free, instead of sleeping in SQLite's busy handler (which backs off up to 100 ms a try).
_writer_locks = {}
_writer_locks_guard = threading.Lock()


def utcnow():
    """Now as ISO-8601 UTC text, the form every timestamp column uses."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def connect(path):
    """Open the database with WAL and a busy timeout: webhooks and pages write at once."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    conn = sqlite3.connect(path, timeout=10, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA foreign_keys=ON")
    # FULL: a commit is on disk before the webhook that made it is answered, power cut included.
    # Its fsync is shared by every callback of a batch (see `batched`), so it costs little.
    conn.execute("PRAGMA synchronous=FULL")
    db = Database(conn)
    db.path = path
    return db


def one(db, sql, args):
    """The first row of a query as a dict, or None (plain SQL: sqlite-utils' table helpers read the
    schema on every call, which the webhooks and the sign-in cannot afford)."""
    cursor = db.execute(sql, args)
    row = cursor.fetchone()
    return dict(zip([c[0] for c in cursor.description], row)) if row else None


def get_db():
    """This thread's connection to the app's database, opened once and reused by every request."""
    local = current_app.extensions["dialer_db"]
    db = getattr(local, "db", None)
    if db is None:
        db = local.db = connect(current_app.config["DATABASE"])
    return db


def end_request(exc=None):
    """A request that failed half-way must not leave its thread's connection inside a transaction."""
    db = getattr(current_app.extensions["dialer_db"], "db", None)
    if db is not None and db.conn.in_transaction:
        db.conn.rollback()


@contextmanager
def writing(db):
    """A transaction that reads then writes: it starts as the writer (BEGIN IMMEDIATE).

    A deferred transaction that read first is refused at once ("database is locked") when it
    tries to write while another connection writes. Threads of this process queue on a lock
    first, so at most one of them waits in SQLite's busy handler (for another process).
    Nested inside another transaction, it is a savepoint of it.
    """
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    with _writer_lock(db):
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.conn.rollback()
            raise
        try:
            db.conn.execute("COMMIT")
        except BaseException:
            db.conn.rollback()
            raise


def _writer_lock(db):
    return _lock_for(getattr(db, "path", None))


def _lock_for(path):
    lock = _writer_locks.get(path)
    if lock is None:
        with _writer_locks_guard:
            lock = _writer_locks.setdefault(path, threading.RLock())
    return lock


# --- group commit ---------------------------------------------------------------------------

class _Batcher:
    """One thread per process and database that runs small write functions in shared transactions.

    Each caller waits until its own write is committed, so what it acknowledges is on disk; the
    callers that arrive while a transaction commits share the next one: one BEGIN, one COMMIT
    and one fsync for the lot, and no thread of the server sleeps on SQLite's write lock. When a
    write fails, the batch is undone and each write retried alone: only its own caller gets the error.
    """

    MAX_BATCH = 200

    def __init__(self, path):
        self.path = path
        self.queue = queue.SimpleQueue()
        self.db = connect(path)
        self.thread = threading.Thread(target=self._run, name=f"dialer-writer {path}", daemon=True)
        self.thread.start()

    def run(self, read, write, *args):
        done = Future()
        self.queue.put((read, write, args, done))
        return done.result()

    def _run(self):
        db = self.db
        while True:
            batch = [self.queue.get()]
            while len(batch) < self.MAX_BATCH:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            writes = [item for item in batch if not self._answered_by_reading(db, item)]
            if writes:
                self._commit(db, writes)

    @staticmethod
    def _answered_by_reading(db, item):
        """Outside any transaction: a write that `read` says is not needed never takes the lock."""
        read, _, args, done = item
        if read is None:
            return False
        try:
            answer = read(db, *args)
        except Exception as error:
            done.set_exception(error)
            return True
        if answer is None:
            return False
        done.set_result(answer)
        return True

    def _commit(self, db, batch):
        """All of the batch in one transaction; if a write fails, each is retried in its own."""
        try:
            results = self._transaction(db, batch)
        except Exception:
            for item in batch:  # rare: find the one that failed; the others still commit
                self._commit_alone(db, item)
            return
        for result, (*_, done) in zip(results, batch):
            done.set_result(result)

    def _commit_alone(self, db, item):
        try:
            [result] = self._transaction(db, [item])
        except Exception as error:
            item[-1].set_exception(error)
        else:
            item[-1].set_result(result)

    def _transaction(self, db, batch):
        with _lock_for(self.path):
            db.conn.execute("BEGIN IMMEDIATE")
            try:
                results = [write(db, *args) for _, write, args, _ in batch]
                db.conn.execute("COMMIT")
            except BaseException:
                if db.conn.in_transaction:
                    db.conn.rollback()
                raise
        return results


_batchers = {}


def batched(db, write, *args, read=None):
    """Run `write(db, *args)` in the process's shared write transaction; return once committed.

    All of it runs on the writer thread, so the server's request threads make no SQLite calls of
    their own. `read(db, *args)`, if given, runs first outside any transaction: when it returns
    something other than None, that is the answer and no write lock is taken (a repeat).
    A caller already inside a write transaction runs both there (the writer thread would wait
    for that transaction's lock while the caller waits for the writer).
    """
    if db.conn.in_transaction:
        with writing(db):
            answer = read(db, *args) if read else None
            return write(db, *args) if answer is None else answer
    batcher = _batchers.get(db.path)
    if batcher is None:
        with _writer_locks_guard:
            batcher = _batchers.get(db.path) or _batchers.setdefault(db.path, _Batcher(db.path))
    return batcher.run(read, write, *args)


def _forget_threads_after_fork():
    """A forked worker has none of its parent's threads: it starts its own writers."""
    global _writer_locks_guard
    _batchers.clear()
    _writer_locks.clear()
    _writer_locks_guard = threading.Lock()


os.register_at_fork(after_in_child=_forget_threads_after_fork)


def init_app(app):
    """Create or upgrade the schema on start; never drop anything."""
    db = connect(app.config["DATABASE"])
    try:
        migrations.apply(db)
    finally:
        db.conn.close()
    app.extensions["dialer_db"] = threading.local()
    app.teardown_appcontext(end_request)


@migrations()
def m001_initial(db):
    db["agents"].create({
        "id": int, "username": str, "display_name": str, "password_hash": str,
        "role": str, "identity": str, "presence": str,
        "created_at": str, "updated_at": str,
    }, pk="id", not_null={"username", "password_hash", "role", "identity"},
        defaults={"role": "agent", "presence": "offline"})
    db["agents"].create_index(["username"], unique=True)
    db["agents"].create_index(["identity"], unique=True)

    db["calls"].create({
        "id": int, "customer_call_sid": str, "agent_call_sid": str, "agent_id": int,
        "direction": str, "customer_number": str, "status": str, "dial_result": str,
        "error_code": int, "error_message": str,
        "created_at": str, "answered_at": str, "ended_at": str, "duration": int,
        "recording_sid": str, "recording_url": str, "recording_duration": int,
        "recording_channels": int, "disposition": str, "notes": str,
        "last_sequence_number": int,
    }, pk="id", foreign_keys=[("agent_id", "agents", "id")],
        not_null={"agent_id", "direction", "customer_number", "status", "created_at"})
    db["calls"].create_index(["agent_id", "created_at"])
    db["calls"].create_index(["created_at"])
    db["calls"].create_index(["status"])
    db["calls"].create_index(["customer_call_sid"])

    db["call_events"].create({
        "id": int, "call_id": int, "source": str, "call_sid": str, "status": str,
        "sequence_number": int, "params": str, "received_at": str,
    }, pk="id", foreign_keys=[("call_id", "calls", "id")],
        not_null={"call_id", "source", "received_at"})
    # A callback repeated by Twilio has the same call, source, leg, status and sequence number.
    db.execute(
        "CREATE UNIQUE INDEX idx_call_events_repeat ON call_events "
        "(call_id, source, coalesce(call_sid, ''), coalesce(status, ''), coalesce(sequence_number, -1))"
    )
    db["call_events"].create_index(["call_id", "id"])


@migrations()
def m002_sign_in_security(db):
    # Who did what, for people and for the sign-in throttle, which counts recent failures here so
    # that every worker process sees the same counts without a shared cache server.
    db["audit_log"].create({
        "id": int, "created_at": str, "action": str, "username": str, "actor": str,
        "address": str, "details": str,
    }, pk="id", not_null={"created_at", "action"})
    db["audit_log"].create_index(["action", "username", "created_at"])
    db["audit_log"].create_index(["action", "address", "created_at"])
    db["audit_log"].create_index(["created_at"])

    # Server-side sessions: the cookie holds a random token, this table its SHA-256, so that
    # signing out or changing a password ends a session even if its cookie was copied.
    db["sessions"].create({
        "id": str, "agent_id": int, "created_at": str, "last_seen_at": str,
        "ended_at": str, "end_reason": str, "address": str, "user_agent": str,
    }, pk="id", foreign_keys=[("agent_id", "agents", "id")],
        not_null={"agent_id", "created_at", "last_seen_at"})
    db["sessions"].create_index(["agent_id", "ended_at"])


@migrations()
def m003_customer_extension(db):
    # The extension keyed in after the customer answers (Twilio's SendDigits); the number stays E.164.
    db["calls"].add_column("customer_extension", str)


@migrations()
def m004_call_attempts(db):
    # The key of the dialer form's one submit: a double click or a retried post finds the call it
    # already placed instead of ringing the customer again.
    db["calls"].add_column("attempt_key", str)
    db.execute("CREATE UNIQUE INDEX idx_calls_attempt ON calls (agent_id, attempt_key) WHERE attempt_key IS NOT NULL")
