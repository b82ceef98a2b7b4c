"""Backups: `flask db backup` while the production server takes signed callbacks, and `flask db restore`."""
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from dialer import create_app
from dialer.auth import create_agent
from dialer.backup import describe
from dialer.db import connect

from .conftest import PASSWORD, wait_for
from .test_durability import app_with_calls, start_server, status_senders

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENDERS = 8
CALLS_PER_SENDER = 300
FILLER_EVENTS = 40_000  # ~20 MB of older call events, so the copy takes many steps


def flask_cli(instance, *args):
    """The real command line, as a person runs it."""
    env = {**os.environ, "DIALER_INSTANCE_PATH": str(instance), "DIALER_SANDBOX_CREATE_DEMO_AGENT": "false"}
    return subprocess.run([sys.executable, "-m", "flask", "--app", "app", "db", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def make_instance(tmp_path):
    """An instance with one agent, the calls the senders will report on, and a history of older events."""
    app, port, base = app_with_calls(tmp_path, SENDERS * CALLS_PER_SENDER)
    db = connect(app.config["DATABASE"])
    with db.conn:
        db.conn.executemany(
            "INSERT INTO call_events (call_id, source, status, params, received_at) "
            "VALUES (1, 'history', ?, ?, '2026-11-24T10:00:00+00:00')",
            [(f"old-{i}", "x" * 400) for i in range(FILLER_EVENTS)])
    db.conn.close()
    return app, port, base


def test_a_backup_taken_while_callbacks_arrive_restores_every_callback_acknowledged_before_it(tmp_path):
    instance, fresh = tmp_path / "instance", tmp_path / "fresh"
    app, port, base = make_instance(tmp_path)

    server = start_server(instance, port)  # the README's production command
    acknowledged, stop = [], threading.Event()  # (call, sequence number, when it was acknowledged)

    threads = status_senders(app, base, SENDERS, CALLS_PER_SENDER, acknowledged, stop)
    try:
        for thread in threads:
            thread.start()
        wait_for(lambda: len(acknowledged) >= 300, timeout=60)
        began = time.monotonic()
        backup = flask_cli(instance, "backup", str(tmp_path / "backup.sqlite"))
        ended = time.monotonic()
        assert backup.returncode == 0, backup.stderr
        assert "integrity check ok" in backup.stdout
        # The dialer kept taking callbacks while the backup ran.
        assert any(began < when < ended for *_, when in acknowledged)

        refused = flask_cli(instance, "restore", str(tmp_path / "backup.sqlite"), "--yes")
        assert refused.returncode == 1
        assert "in use by a running dialer" in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=20)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)

    restored = flask_cli(fresh, "restore", str(tmp_path / "backup.sqlite"))
    assert restored.returncode == 0, restored.stderr
    assert "Restored it into" in restored.stdout

    db = sqlite3.connect(fresh / "dialer.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = set(db.execute("SELECT call_id, sequence_number FROM call_events WHERE source = 'status'"))
    before = [(call, seq) for call, seq, when in acknowledged if when < began]
    assert len(before) >= 300
    assert [event for event in before if event not in stored] == []
    assert db.execute("SELECT count(*) FROM call_events WHERE source = 'history'").fetchone()[0] == FILLER_EVENTS
    db.close()


# --- refusals, through the CLI in the test's own process ----------------------------------------

@pytest.fixture
def backup_file(app, runner, auth, tmp_path):
    """A good backup of a database with one agent."""
    auth.create("alice")
    result = runner.invoke(args=["db", "backup", str(tmp_path / "good.sqlite")])
    assert result.exit_code == 0, result.output
    return tmp_path / "good.sqlite"


def not_sqlite(tmp_path, backup_file):
    (tmp_path / "notes.txt").write_text("shopping list\n" * 100)
    return tmp_path / "notes.txt"


def other_sqlite(tmp_path, backup_file):
    conn = sqlite3.connect(tmp_path / "other.sqlite")
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()
    return tmp_path / "other.sqlite"


def damaged(tmp_path, backup_file):
    data = bytearray(backup_file.read_bytes())
    page = 4096
    for offset in range(2 * page, len(data), page):  # every b-tree page header but the schema's
        data[offset:offset + 12] = b"\xff" * 12
    (tmp_path / "damaged.sqlite").write_bytes(bytes(data))
    return tmp_path / "damaged.sqlite"


def inconsistent(tmp_path, backup_file):
    """Readable, but an index no longer matches its table: only the integrity check notices."""
    path = tmp_path / "inconsistent.sqlite"
    path.write_bytes(backup_file.read_bytes())
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA writable_schema=ON")
    conn.execute("UPDATE sqlite_master SET sql = 'CREATE UNIQUE INDEX idx_agents_identity ON agents (username)' "
                 "WHERE name = 'idx_agents_identity'")
    conn.close()
    return path


def missing(tmp_path, backup_file):
    return tmp_path / "no-such-backup.sqlite"


def folder(tmp_path, backup_file):
    return tmp_path


@pytest.mark.parametrize("make, sentence", [
    (missing, "There is no file at"),
    (folder, "is a folder, not a backup file"),
    (not_sqlite, "is not a SQLite database, so it is not a Dialer backup"),
    (other_sqlite, "is a SQLite database but not a Dialer one"),
    (damaged, "is damaged and cannot be read"),
    (inconsistent, "is damaged: it failed SQLite's integrity check (row 1 missing from index idx_agents_identity"),
])
def test_restore_refuses_a_file_that_is_not_a_sound_dialer_backup(app, runner, tmp_path, backup_file, make, sentence):
    result = runner.invoke(args=["db", "restore", str(make(tmp_path, backup_file)), "--yes"])
    assert result.exit_code == 1
    assert sentence in result.output
    assert "Traceback" not in result.output
    assert usernames(app.config["DATABASE"]) == ["alice"]  # nothing changed


def usernames(path):
    """The agents in a database file, read and let go (an open connection would hold the restore off)."""
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT username FROM agents ORDER BY id")]
    finally:
        conn.close()


def test_restore_refuses_to_replace_a_database_with_agents_without_yes(tmp_path):
    instance = tmp_path / "instance"
    app, _, _ = make_instance(tmp_path)
    database = app.config["DATABASE"]
    assert flask_cli(instance, "backup", str(tmp_path / "good.sqlite")).returncode == 0
    db = connect(database)
    with app.app_context():
        create_agent(db, "bob", PASSWORD)  # now the database differs from the backup
    db.conn.close()

    result = flask_cli(instance, "restore", str(tmp_path / "good.sqlite"))
    assert result.returncode == 1
    assert f"The database {database} already holds 2 agents and {SENDERS * CALLS_PER_SENDER:,} calls" in result.stderr
    assert "--yes" in result.stderr
    assert usernames(database) == ["alice", "bob"]

    result = flask_cli(instance, "restore", str(tmp_path / "good.sqlite"), "--yes")
    assert result.returncode == 0, result.stderr
    assert f"integrity ok, {SENDERS * CALLS_PER_SENDER:,} calls (newest 2026-11-25T10:00:00+00:00)" in result.stdout
    [kept] = [name for name in os.listdir(instance) if ".before-restore-" in name]
    assert f"Kept the database that was there as {instance / kept}." in result.stdout
    assert f"Restored it into {database}." in result.stdout
    assert usernames(database) == ["alice"]
    assert usernames(instance / kept) == ["alice", "bob"]


def test_restore_into_an_empty_database_needs_no_yes(app, runner, tmp_path, backup_file):
    fresh = create_app({"PUBLIC_BASE_URL": "http://127.0.0.1:5000", "SANDBOX_CREATE_DEMO_AGENT": False,
                        "DATABASE": str(tmp_path / "fresh" / "dialer.sqlite")}, instance_path=str(tmp_path / "fresh"))
    result = fresh.test_cli_runner().invoke(args=["db", "restore", str(backup_file)])
    assert result.exit_code == 0, result.output
    assert "Kept" not in result.output
    restored = sqlite3.connect(tmp_path / "fresh" / "dialer.sqlite")
    assert restored.execute("SELECT username FROM agents").fetchall() == [("alice",)]
    assert restored.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    restored.close()


def test_restore_refuses_a_live_database_as_its_backup(app, runner, tmp_path, backup_file):
    live = tmp_path / "live.sqlite"
    conn = sqlite3.connect(live)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    try:
        (tmp_path / "copy.sqlite").write_bytes(backup_file.read_bytes())
        (tmp_path / "copy.sqlite-wal").write_bytes(live.with_name("live.sqlite-wal").read_bytes())
        result = runner.invoke(args=["db", "restore", str(tmp_path / "copy.sqlite")])
    finally:
        conn.close()
    assert result.exit_code == 1
    assert "it is a live database, not a backup" in result.output


def unwritable_folder(tmp_path):
    if os.geteuid() == 0:  # root may write anywhere but a read-only file system
        return "/sys"
    path = tmp_path / "read-only"
    path.mkdir(mode=0o500)
    return str(path)


@pytest.mark.parametrize("where, sentence", [
    (lambda tmp_path: str(tmp_path / "nowhere" / "backup.sqlite"), "does not exist; create it first (mkdir -p"),
    (lambda tmp_path: str(tmp_path / "backup.sqlite" / "x.sqlite"), "is a file, not a folder"),
    (lambda tmp_path: os.path.join(unwritable_folder(tmp_path), "backup.sqlite"), "Cannot write a backup in the folder"),
])
def test_backup_says_plainly_where_it_cannot_write(app, runner, tmp_path, backup_file, where, sentence):
    (tmp_path / "backup.sqlite").write_text("a file where a folder is expected")
    result = runner.invoke(args=["db", "backup", where(tmp_path)])
    assert result.exit_code == 1
    assert sentence in result.output
    assert "Traceback" not in result.output


def test_backup_refuses_to_write_over_the_database_itself(app, runner):
    result = runner.invoke(args=["db", "backup", app.config["DATABASE"]])
    assert result.exit_code == 1
    assert "is the database itself" in result.output


def test_a_backup_into_a_folder_gets_a_dated_name_and_is_one_self_contained_file(app, runner, tmp_path, backup_file):
    (tmp_path / "backups").mkdir()
    result = runner.invoke(args=["db", "backup", str(tmp_path / "backups")])
    assert result.exit_code == 0, result.output
    [name] = os.listdir(tmp_path / "backups")
    assert name.startswith("dialer-") and name.endswith("Z.sqlite")
    path = tmp_path / "backups" / name
    assert path.read_bytes()[18:20] == b"\x01\x01"  # rollback journal, not WAL: no -wal file needed
    assert describe(str(path))["agents"] == 1
