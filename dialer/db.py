"""The SQLite database: one connection per request, schema through sqlite-utils migrations."""
import os
import sqlite3
from datetime import datetime, timezone

from flask import current_app, g
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("dialer")


def utcnow():
    """Now as ISO-8601 UTC text, the form every timestamp column uses."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def connect(path):
    """Open the database with WAL and a busy timeout: webhooks and pages write at once."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    conn = sqlite3.connect(path, timeout=10, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA foreign_keys=ON")
    return Database(conn)


def get_db():
    """The request's database connection."""
    if "db" not in g:
        g.db = connect(current_app.config["DATABASE"])
    return g.db


def close_db(exc=None):
    """Close the request's connection."""
    db = g.pop("db", None)
    if db is not None:
        db.conn.close()


def init_app(app):
    """Create or upgrade the schema on start; never drop anything."""
    db = connect(app.config["DATABASE"])
    try:
        migrations.apply(db)
    finally:
        db.conn.close()
    app.teardown_appcontext(close_db)


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
