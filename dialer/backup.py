"""Backups of the database: `flask --app app db backup PATH` and `flask --app app db restore PATH`.

Both go through SQLite's online backup API. A backup reads one snapshot of the database (a read
transaction; in WAL mode writers carry on beside it), so it is safe while the app runs and takes
calls, and it holds every write committed before it began. A restore writes the backup into the
database in one transaction, and only when no running dialer holds the file.
"""
import os
import sqlite3
import tempfile
import time
from datetime import datetime, timezone

import click
from flask import current_app
from flask.cli import AppGroup

from .db import migrations

db_cli = AppGroup("db", help="Back up and restore the database.")

PAGES_PER_STEP = 256  # 1 MiB at SQLite's default 4 KiB pages
STEP_PAUSE = 0.005  # seconds between steps: the disk stays free for the app's commits
SQLITE_HEADER = b"SQLite format 3\x00"


class BackupError(Exception):
    """A backup or restore that cannot go ahead; the message is a sentence for the person running it."""


# --- backup --------------------------------------------------------------------------------

def backup(source_path, path, pause=STEP_PAUSE):
    """Copy the database at `source_path` to `path` (a file, or a folder to put a dated file in).

    The copy is written beside its destination under a temporary name, checked, synced and only
    then renamed into place, so `path` is never a half-written backup. Returns (path, summary).
    """
    path = _backup_destination(path)
    if os.path.exists(path) and os.path.samefile(path, source_path):
        raise BackupError(f"{path} is the database itself; give a path outside it for the backup.")
    folder = os.path.dirname(path)
    try:
        fd, partial = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".partial", dir=folder)
    except OSError as error:
        raise BackupError(f"Cannot write a backup in the folder {folder}: {error.strerror}.") from None
    os.close(fd)
    try:
        _copy_snapshot(source_path, partial, pause)
        summary = describe(partial)
        if summary["integrity"] != "ok":
            raise BackupError(f"The backup failed its integrity check ({summary['integrity']}); "
                              f"the database may be damaged: run PRAGMA integrity_check on {source_path}.")
        _fsync(partial)
        os.replace(partial, path)
        _fsync(folder)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    return path, summary


def _backup_destination(path):
    """The file a backup goes to: `path`, or a dated file inside it when it is a folder."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return os.path.join(path, f"dialer-{stamp}.sqlite")
    folder = os.path.dirname(path)
    if not os.path.exists(folder):
        raise BackupError(f"The folder {folder} does not exist; create it first (mkdir -p {folder}).")
    if not os.path.isdir(folder):
        raise BackupError(f"{folder} is a file, not a folder; give a path inside a folder for the backup.")
    if os.path.exists(path) and not os.path.isfile(path):
        raise BackupError(f"{path} exists and is not a file; give the path of a file or a folder.")
    return path


def _copy_snapshot(source_path, partial, pause):
    """Copy one consistent snapshot of the source into `partial`, a step of pages at a time.

    The source connection holds one read transaction for the whole copy: in WAL mode that
    snapshot stays fixed while the app commits beside it, so the backup API never restarts (it
    would, on every outside write, if each step opened its own transaction), and the copy holds
    everything committed before it began. Meanwhile the WAL cannot be checkpointed past the
    snapshot, so it grows by what the app writes during the copy, and shrinks again after.
    """
    source = sqlite3.connect(source_path, timeout=10, isolation_level=None)
    target = sqlite3.connect(partial, isolation_level=None)
    try:
        source.execute("BEGIN")
        source.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot starts here
        source.backup(target, pages=PAGES_PER_STEP, progress=lambda *_: time.sleep(pause))
        source.execute("COMMIT")
        # One self-contained file: the copy arrives marked WAL like its source.
        target.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.DatabaseError as error:
        raise BackupError(f"Could not read the database {source_path}: {error}.") from None
    finally:
        source.close()
        target.close()


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- checking a file -----------------------------------------------------------------------

def describe(path):
    """What a database file holds: integrity, counts of calls and agents, newest call, migrations.

    Raises BackupError with a sentence when the file is missing, not SQLite, or not a Dialer database.
    """
    if not os.path.exists(path):
        raise BackupError(f"There is no file at {path}.")
    if not os.path.isfile(path):
        raise BackupError(f"{path} is a folder, not a backup file.")
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as error:
        raise BackupError(f"Cannot read {path}: {error.strerror}.") from None
    if header != SQLITE_HEADER:
        raise BackupError(f"{path} is not a SQLite database, so it is not a Dialer backup.")
    if os.path.exists(path + "-wal") and os.path.getsize(path + "-wal"):
        raise BackupError(f"{path} has a write-ahead log beside it ({path}-wal): it is a live database, "
                          "not a backup. Make a backup of it with `flask --app app db backup` and use that.")
    # Read-only and immutable: checking a backup never changes it, nor leaves -wal/-shm files beside it.
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        integrity = "; ".join(row[0] for row in conn.execute("PRAGMA integrity_check(5)"))
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"_sqlite_migrations", "calls", "agents", "call_events"} <= tables:
            raise BackupError(f"{path} is a SQLite database but not a Dialer one (it has no Dialer tables).")
        applied = [row[0] for row in conn.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = ? ORDER BY applied_at", [migrations.name])]
        calls, newest = conn.execute("SELECT count(*), max(created_at) FROM calls").fetchone()
        agents = conn.execute("SELECT count(*) FROM agents").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM call_events").fetchone()[0]
    except sqlite3.DatabaseError as error:
        raise BackupError(f"{path} is damaged and cannot be read ({error}). Nothing was restored; "
                          "use an older backup.") from None
    finally:
        conn.close()
    return {"integrity": integrity, "calls": calls, "agents": agents, "call_events": events,
            "newest_call": newest, "migrations": applied, "bytes": os.path.getsize(path)}


def summary_sentence(summary):
    """`1,204 calls (newest 2026-11-25T10:00:00+00:00), 3,611 call events, 3 agents, 1.2 MB`."""
    newest = f" (newest {summary['newest_call']})" if summary["newest_call"] else ""
    return (f"{_count(summary['calls'], 'call')}{newest}, {_count(summary['call_events'], 'call event')}, "
            f"{_count(summary['agents'], 'agent')}, {summary['bytes'] / 1e6:.1f} MB")


def _count(number, noun):
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


# --- restore -------------------------------------------------------------------------------

def restore(backup_path, database_path, replace=False):
    """Write the backup at `backup_path` over the database at `database_path`.

    Refused when the backup is not a sound Dialer database, when it comes from a newer Dialer,
    when a running dialer (or any program) holds the database, and, without `replace`, when the
    database holds agents or calls. What was there before is first kept beside it.
    Returns (backup summary, path of the kept copy or None).
    """
    backup_path = os.path.abspath(backup_path)
    summary = describe(backup_path)
    if summary["integrity"] != "ok":
        raise BackupError(f"{backup_path} is damaged: it failed SQLite's integrity check ({summary['integrity']}). "
                          "Nothing was restored; use an older backup.")
    if not summary["migrations"]:
        raise BackupError(f"{backup_path} is a SQLite database but not a Dialer one (no Dialer migrations).")
    known = {m.name for m in migrations._migrations}  # sqlite-utils keeps the registered steps here
    unknown = [name for name in summary["migrations"] if name not in known]
    if unknown:
        raise BackupError(f"{backup_path} comes from a newer Dialer (it has schema step {unknown[-1]}, which "
                          "this one does not know); upgrade the dialer before restoring it.")
    if os.path.exists(database_path) and os.path.samefile(backup_path, database_path):
        raise BackupError(f"{backup_path} is the database itself; nothing to restore.")

    target = _hold_exclusively(database_path)
    try:
        held = _contents(target)
        if held and not replace:
            raise BackupError(f"The database {database_path} already holds {held}. Restoring replaces all of "
                              "it; run the command again with --yes to do so (a copy of it is kept beside it).")
        kept = None
        if held:
            kept = f"{database_path}.before-restore-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"
            copy = sqlite3.connect(kept, isolation_level=None)
            try:
                target.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE")
            finally:
                copy.close()
        source = sqlite3.connect(f"file:{backup_path}?mode=ro&immutable=1", uri=True)
        try:
            source.backup(target, pages=-1)  # one step: one transaction, all or nothing
        finally:
            source.close()
        result = target.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            raise BackupError(f"The restored database failed its check ({result}).")
    except sqlite3.DatabaseError as error:
        raise BackupError(f"Could not restore into {database_path}: {error}.") from None
    finally:
        target.close()
    return summary, kept


def _hold_exclusively(database_path):
    """A connection that holds the database alone, or a BackupError saying who holds it.

    In WAL mode every open connection keeps a shared lock, so an exclusive one is refused at once
    while a dialer (any of its workers, or a `flask` command) has the file open; holding it for the
    whole restore keeps one from starting half-way.
    """
    folder = os.path.dirname(os.path.abspath(database_path))
    if not os.path.isdir(folder):
        raise BackupError(f"The folder {folder} for the database does not exist.")
    if not os.access(folder, os.W_OK):
        raise BackupError(f"Cannot write in the folder {folder} of the database; run the command as the "
                          "user the dialer runs as.")
    conn = sqlite3.connect(database_path, timeout=0, isolation_level=None)
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("COMMIT")
    except sqlite3.OperationalError as error:
        conn.close()
        if "locked" in str(error) or "busy" in str(error):
            raise BackupError(f"The database {database_path} is in use by a running dialer (or another program); "
                              "stop it first (systemctl stop dialer), then restore.") from None
        raise BackupError(f"Cannot open the database {database_path}: {error}.") from None
    except sqlite3.DatabaseError as error:
        conn.close()
        raise BackupError(f"Cannot open the database {database_path}: {error}.") from None
    return conn


def _contents(conn):
    """What a person would lose: `3 agents and 1,204 calls`, or '' for an empty database."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    parts = []
    for table, noun in (("agents", "agent"), ("calls", "call")):
        count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] if table in tables else 0
        if count:
            parts.append(_count(count, noun))
    if not parts and tables - {"sqlite_sequence"} and "_sqlite_migrations" not in tables:
        parts.append("tables that are not the Dialer's")
    return " and ".join(parts)


# --- commands ------------------------------------------------------------------------------

@db_cli.command("backup")
@click.argument("path", type=click.Path(dir_okay=True, file_okay=True))
def backup_command(path):
    """Copy the database to PATH (a file, or a folder for dialer-<UTC time>.sqlite), safely while the dialer runs."""
    source = current_app.config["DATABASE"]
    started = time.monotonic()
    try:
        written, summary = backup(source, path)
    except BackupError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"Backed up {source} to {written} in {time.monotonic() - started:.1f} s: "
               f"{summary_sentence(summary)}; integrity check ok.")


@db_cli.command("restore")
@click.argument("path", type=click.Path(dir_okay=True, file_okay=True))
@click.option("--yes", is_flag=True, help="Replace a database that already holds agents or calls.")
def restore_command(path, yes):
    """Replace the database with the backup at PATH (stop the dialer first)."""
    database = current_app.config["DATABASE"]
    try:
        summary, kept = restore(path, database, replace=yes)
    except BackupError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"Checked {os.path.abspath(path)}: integrity ok, {summary_sentence(summary)}.")
    if kept:
        click.echo(f"Kept the database that was there as {kept}.")
    click.echo(f"Restored it into {database}. Start the dialer again to use it.")
