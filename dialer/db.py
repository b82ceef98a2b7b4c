"""The SQLite database: one reused connection per thread, schema through sqlite-utils migrations."""
import os
import sqlite3
import threading
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
    db = Database(conn)
    db.path = path
    return db


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
    path = getattr(db, "path", None)
    lock = _writer_locks.get(path)
    if lock is None:
        with _writer_locks_guard:
            lock = _writer_locks.setdefault(path, threading.RLock())
    return lock


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
