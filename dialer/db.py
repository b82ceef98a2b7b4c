"""The SQLite database: one reused connection per thread, schema through sqlite-utils migrations."""
import logging
import os
import queue
import sqlite3
import sys
import threading
from collections import deque
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import datetime, timezone

from flask import current_app, g
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("dialer")
EVERYONE = -1  # call_hours' agent_id for the whole centre's row of an hour

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


class _Pool:
    """This process's open connections to one database file, lent to one request at a time.

    A connection is opened once and reused (opening costs four PRAGMAs); under gevent a request is
    a greenlet, so a per-thread connection would be a new connection per request. A deque's pop
    and append are atomic: no lock to take on every request.
    """

    KEEP = 32

    def __init__(self, path):
        self.path = path
        self.pid = os.getpid()
        self.idle = deque()

    def take(self):
        if self.pid != os.getpid():  # forked: the parent's connections are not ours to use
            self.idle, self.pid = deque(), os.getpid()
        try:
            return self.idle.pop()
        except IndexError:
            return connect(self.path)

    def give(self, db):
        if db.conn.in_transaction:  # a request that failed half-way
            db.conn.rollback()
        if self.pid == os.getpid() and len(self.idle) < self.KEEP:
            self.idle.append(db)
        else:
            db.conn.close()


def get_db():
    """The app's database for this request (or app context): a pooled connection, given back at teardown."""
    db = g.get("_dialer_db")
    if db is None:
        db = g._dialer_db = current_app.extensions["dialer_db"].take()
    return db


def end_request(exc=None):
    """Give the connection back; a request that failed half-way must not leave it in a transaction."""
    db = g.pop("_dialer_db", None)
    if db is not None:
        current_app.extensions["dialer_db"].give(db)


def blocking(fn, *args):
    """Run `fn(*args)` where a slow SQLite call (an fsync) stops nothing else.

    Under gunicorn's gevent worker every request and event stream shares one OS thread, so
    `fn` runs on gevent's pool of real threads (sqlite3 lets go of the GIL while it works)
    and only the calling greenlet waits. Elsewhere it simply runs here.
    """
    if _gevent_patched():
        import gevent
        return gevent.get_hub().threadpool.apply(fn, args)
    return fn(*args)


def _gevent_patched():
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


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

    Under gevent the "thread" is a greenlet in the server's one OS thread, and the statements run
    right there (microseconds each; handing each batch's Python to a pool thread and back cost more
    CPU than the SQL: bench/webhooks.py). Only what can wait on the disk or on another process runs
    on a real thread (`blocking`): the COMMIT and its fsync, and a BEGIN or a read that finds the
    database locked by another process. The writer's own connection never sleeps in SQLite's busy
    handler on the server's thread (busy_timeout 0 there).
    """

    MAX_BATCH = 200

    def __init__(self, path):
        self.path = path
        self.queue = queue.SimpleQueue()
        self.db = connect(path)
        self.db.conn.execute("PRAGMA busy_timeout=0")  # see _patiently
        self.thread = threading.Thread(target=self._run, name=f"dialer-writer {path}", daemon=True)
        self.thread.start()

    def run(self, read, write, *args):
        done = _future()
        self.queue.put((read, write, args, done))
        return done.result()

    def _run(self):
        while True:
            batch = [self.queue.get()]
            try:
                self._serve(batch)
            except Exception as error:  # a fault of the writer itself: this batch fails (logged), the next is served
                logging.getLogger("dialer").exception("The database writer failed a batch of %d writes", len(batch))
                for *_, done in batch:
                    if not (done.ready() if hasattr(done, "ready") else done.done()):
                        done.set_exception(error)

    def _serve(self, batch):
        """Read, write and commit one batch (more requests join it first), and answer each."""
        if _gevent_patched():
            # Let the requests that are ready run up to their own write first: they join this
            # batch instead of each waiting for a commit of their own.
            import gevent
            gevent.sleep(0)
        while len(batch) < self.MAX_BATCH:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        outcomes = self._read_all(batch)
        writes = [index for index, outcome in enumerate(outcomes) if outcome is None]
        if writes:
            with _lock_for(self.path):
                committed = self._commit([batch[index] for index in writes])
            for index, outcome in zip(writes, committed):
                outcomes[index] = outcome
        for (*_, done), (ok, value) in zip(batch, outcomes):
            done.set_result(value) if ok else done.set_exception(value)

    def _read_all(self, batch):
        """Outside any transaction: (True, answer) for a write `read` says is not needed, else None."""
        outcomes = []
        for read, _, args, _ in batch:
            try:
                answer = self._patiently(read, self.db, *args) if read else None
            except Exception as error:
                outcomes.append((False, error))
                continue
            outcomes.append(None if answer is None else (True, answer))
        return outcomes

    def _commit(self, batch):
        """All of the batch in one transaction; if a write fails, each is retried in its own."""
        try:
            return [(True, result) for result in self._transaction(batch)]
        except Exception:
            outcomes = []
            for item in batch:  # rare: find the one that failed; the others still commit
                try:
                    [result] = self._transaction([item])
                except Exception as error:
                    outcomes.append((False, error))
                else:
                    outcomes.append((True, result))
            return outcomes

    def _patiently(self, fn, *args):
        """`fn(*args)` here; if another process has the database locked, again on a real thread
        that waits for it as any other connection does (busy_timeout)."""
        try:
            return fn(*args)
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or self.db.conn.in_transaction:
                raise
        return blocking(self._waiting, fn, *args)

    def _waiting(self, fn, *args):
        self.db.conn.execute("PRAGMA busy_timeout=10000")
        try:
            return fn(*args)
        finally:
            self.db.conn.execute("PRAGMA busy_timeout=0")

    def _transaction(self, batch):
        db = self.db
        self._patiently(db.conn.execute, "BEGIN IMMEDIATE")
        try:
            results = [write(db, *args) for _, write, args, _ in batch]
            blocking(db.conn.execute, "COMMIT")  # the fsync: the server goes on meanwhile
        except BaseException:
            if db.conn.in_transaction:
                db.conn.rollback()
            raise
        return results


def _future():
    """A Future for one write's outcome; under gevent, gevent's own (a patched Condition costs more)."""
    if _gevent_patched():
        global _GeventFuture
        if _GeventFuture is None:
            from gevent.event import AsyncResult

            class _GeventFuture(AsyncResult):
                set_result = AsyncResult.set
                result = AsyncResult.get
        return _GeventFuture()
    return Future()


_GeventFuture = None
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
    app.extensions["dialer_db"] = _Pool(os.path.abspath(app.config["DATABASE"]))
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


@migrations()
def m005_events(db):
    # What people watch live (see live.py): one row per change of a call or an agent, written in
    # the transaction of the change; its id is the event stream's `id:`, so a reconnect resumes.
    db["events"].create({
        "id": int, "created_at": str, "topic": str, "subject_id": int, "agent_id": int, "data": str,
    }, pk="id", not_null={"created_at", "topic", "subject_id", "data"})
    db["events"].create_index(["agent_id", "id"])


@migrations()
def m006_agent_leg(db):
    # The agent's leg as its own <Client> status callbacks tell it: whether the agent's phone is
    # ringing and when the agent answered, so the panel can tell "waiting for you" from "talking".
    db["calls"].add_column("agent_status", str)
    db["calls"].add_column("agent_answered_at", str)


@migrations()
def m007_presence(db):
    # Presence (presence.py): since when and why, the last sign of an open page, and every change.
    db["agents"].add_column("presence_since", str)
    db["agents"].add_column("presence_reason", str)
    db["agents"].add_column("heartbeat_at", str)
    db["presence_changes"].create({
        "id": int, "agent_id": int, "presence": str, "reason": str, "created_at": str, "by": str,
    }, pk="id", foreign_keys=[("agent_id", "agents", "id")], not_null={"agent_id", "presence", "created_at"})
    db["presence_changes"].create_index(["agent_id", "id"])


@migrations()
def m008_number_search(db):
    # History's number search (any 4+ digits): an FTS5 trigram index of the customer numbers,
    # kept by triggers, so a search reads the index instead of every call.
    db.execute("CREATE VIRTUAL TABLE calls_numbers USING fts5(customer_number, content='calls', "
               "content_rowid='id', tokenize='trigram')")
    db.execute("CREATE TRIGGER calls_numbers_insert AFTER INSERT ON calls BEGIN "
               "INSERT INTO calls_numbers (rowid, customer_number) VALUES (new.id, new.customer_number); END")
    db.execute("CREATE TRIGGER calls_numbers_delete AFTER DELETE ON calls BEGIN "
               "INSERT INTO calls_numbers (calls_numbers, rowid, customer_number) "
               "VALUES ('delete', old.id, old.customer_number); END")
    db.execute("CREATE TRIGGER calls_numbers_update AFTER UPDATE OF customer_number ON calls BEGIN "
               "INSERT INTO calls_numbers (calls_numbers, rowid, customer_number) "
               "VALUES ('delete', old.id, old.customer_number); "
               "INSERT INTO calls_numbers (rowid, customer_number) VALUES (new.id, new.customer_number); END")
    db.execute("INSERT INTO calls_numbers (calls_numbers) VALUES ('rebuild')")


@migrations()
def m009_wrap_up(db):
    # Who last wrote the call's wrap-up (disposition and notes) and when.
    db["calls"].add_column("wrapped_up_at", str)
    db["calls"].add_column("wrapped_up_by", str)


# How a call counts on the history's chart: talked, missed by the agent, or not reached (yet).
_CHART_KIND = ("CASE WHEN {c}.status = 'completed' AND ({c}.dial_result IS NULL OR {c}.dial_result = 'completed') "
               "THEN 'talked' WHEN {c}.status = 'completed' THEN 'missed' ELSE 'other' END")


def _chart_bump(row, sign, agent=None):
    kind = _CHART_KIND.format(c=row)
    agent = agent or f"coalesce({row}.agent_id, 0)"
    return ("INSERT INTO call_hours (hour, agent_id, direction, talked, missed, other) VALUES "
            f"(substr({row}.created_at, 1, 13), {agent}, {row}.direction, "
            f"{sign} * ({kind} = 'talked'), {sign} * ({kind} = 'missed'), {sign} * ({kind} = 'other')) "
            "ON CONFLICT (hour, agent_id, direction) DO UPDATE SET talked = talked + excluded.talked, "
            "missed = missed + excluded.missed, other = other + excluded.other;")


@migrations()
def m010_call_hours(db):
    # The history's chart reads calls per UTC hour, agent and direction from this rollup, kept by
    # triggers: a year of a million calls is ~90 000 rows instead of the calls themselves.
    db.execute("CREATE TABLE call_hours (hour TEXT NOT NULL, agent_id INTEGER NOT NULL, direction TEXT NOT NULL, "
               "talked INTEGER NOT NULL, missed INTEGER NOT NULL, other INTEGER NOT NULL, "
               "PRIMARY KEY (hour, agent_id, direction)) WITHOUT ROWID")
    db.execute("CREATE INDEX idx_call_hours_agent ON call_hours (agent_id, hour)")
    db.execute(f"CREATE TRIGGER call_hours_insert AFTER INSERT ON calls BEGIN {_chart_bump('new', 1)} END")
    db.execute(f"CREATE TRIGGER call_hours_delete AFTER DELETE ON calls BEGIN {_chart_bump('old', -1)} END")
    db.execute("CREATE TRIGGER call_hours_update AFTER UPDATE OF status, dial_result, agent_id, direction, created_at "
               f"ON calls BEGIN {_chart_bump('old', -1)} {_chart_bump('new', 1)} END")
    kind = _CHART_KIND.format(c="calls")
    db.execute("INSERT INTO call_hours SELECT substr(created_at, 1, 13), coalesce(agent_id, 0), direction, "
               f"sum({kind} = 'talked'), sum({kind} = 'missed'), sum({kind} = 'other') FROM calls "
               "GROUP BY 1, 2, 3")


@migrations()
def m011_call_hours_everyone(db):
    # The supervisor's chart (everyone's calls) read every agent's row of each hour: 62 days of a
    # 200-agent centre is ~100 000 rows. Each hour now also has one row for the whole centre, and
    # the rows are kept in (agent, hour) order, so a chart reads one run of the table.
    for trigger in ("call_hours_insert", "call_hours_delete", "call_hours_update"):
        db.execute(f"DROP TRIGGER {trigger}")
    db.execute("CREATE TABLE call_hours_new (agent_id INTEGER NOT NULL, hour TEXT NOT NULL, direction TEXT NOT NULL, "
               "talked INTEGER NOT NULL, missed INTEGER NOT NULL, other INTEGER NOT NULL, "
               "PRIMARY KEY (agent_id, hour, direction)) WITHOUT ROWID")
    db.execute("INSERT INTO call_hours_new SELECT agent_id, hour, direction, talked, missed, other FROM call_hours")
    db.execute(f"INSERT INTO call_hours_new SELECT {EVERYONE}, hour, direction, sum(talked), sum(missed), sum(other) "
               "FROM call_hours GROUP BY hour, direction")
    db.execute("DROP TABLE call_hours")
    db.execute("ALTER TABLE call_hours_new RENAME TO call_hours")
    everyone = str(EVERYONE)
    db.execute(f"CREATE TRIGGER call_hours_insert AFTER INSERT ON calls BEGIN {_chart_bump('new', 1)} "
               f"{_chart_bump('new', 1, everyone)} END")
    db.execute(f"CREATE TRIGGER call_hours_delete AFTER DELETE ON calls BEGIN {_chart_bump('old', -1)} "
               f"{_chart_bump('old', -1, everyone)} END")
    db.execute("CREATE TRIGGER call_hours_update AFTER UPDATE OF status, dial_result, agent_id, direction, created_at "
               f"ON calls BEGIN {_chart_bump('old', -1)} {_chart_bump('new', 1)} "
               f"{_chart_bump('old', -1, everyone)} {_chart_bump('new', 1, everyone)} END")


@migrations()
def m012_inbound(db):
    # Customers calling in (inbound.py). An inbound call has no agent until one answers, so
    # calls.agent_id may be NULL; SQLite's documented way to drop a NOT NULL that changes nothing
    # on disk is to edit the table's schema text (www.sqlite.org/lang_altertable.html, section 7),
    # instead of copying a million rows.
    sql = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'calls'").fetchone()[0]
    loose = sql.replace('"agent_id" INTEGER NOT NULL REFERENCES', '"agent_id" INTEGER REFERENCES', 1)
    if loose != sql:
        version = db.execute("PRAGMA schema_version").fetchone()[0]
        db.execute("PRAGMA writable_schema = ON")
        db.execute("UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'calls'", [loose])
        db.execute(f"PRAGMA schema_version = {version + 1}")
        db.execute("PRAGMA writable_schema = OFF")
    # When the caller joined the queue; the voicemail they left (a recording of its own); who
    # called a missed caller back, and when (the outbound call is callback_call_id).
    for column, kind in (("queued_at", str), ("voicemail_sid", str), ("voicemail_url", str),
                         ("voicemail_duration", int), ("handled_at", str), ("handled_by", str),
                         ("callback_call_id", int)):
        db["calls"].add_column(column, kind)
    db.execute("CREATE INDEX idx_calls_to_call_back ON calls (created_at) WHERE direction = 'inbound' "
               "AND agent_answered_at IS NULL AND handled_at IS NULL")
    # Who is calling in: this number's earlier calls, for the agent's incoming-call screen.
    db.execute("CREATE INDEX idx_calls_customer_number ON calls (customer_number, id)")


@migrations()
def m013_offers(db):
    # A waiting caller offered to an agent who became available (inbound.offer_waiting_callers):
    # to whom and when, so two agents are never offered the same caller, nor one agent two.
    db["calls"].add_column("offered_to", int)
    db["calls"].add_column("offered_at", str)


@migrations()
def m014_waiting(db):
    # Since when a caller is in the queue now (None once they left it: offered to an agent, gone to
    # voicemail, hung up). queued_at stays the first time, which orders callers first come, first served.
    db["calls"].add_column("waiting_since", str)


@migrations()
def m015_agent_number_index(db):
    # An agent's history read newest first, and searched by any digits of the number: this index
    # alone answers both (no table lookups while looking for a number among the agent's calls).
    db.execute("DROP INDEX IF EXISTS idx_calls_agent_id_created_at")
    db.execute("CREATE INDEX idx_calls_agent_created ON calls (agent_id, created_at, id, customer_number)")


@migrations()
def m016_call_hours_only_when_counted(db):
    # A call's rollup row changes only when what the chart counts changes: its kind (talked,
    # missed, other), agent, direction or hour. Most status callbacks (initiated, ringing,
    # in-progress) change none of them, and no longer run four upserts that add and take away 1.
    old, new = _CHART_KIND.format(c="old"), _CHART_KIND.format(c="new")
    db.execute("DROP TRIGGER call_hours_update")
    db.execute("CREATE TRIGGER call_hours_update AFTER UPDATE OF status, dial_result, agent_id, direction, created_at "
               f"ON calls WHEN ({old}) IS NOT ({new}) OR old.agent_id IS NOT new.agent_id "
               "OR old.direction IS NOT new.direction OR substr(old.created_at, 1, 13) IS NOT substr(new.created_at, 1, 13) "
               f"BEGIN {_chart_bump('old', -1)} {_chart_bump('new', 1)} "
               f"{_chart_bump('old', -1, EVERYONE)} {_chart_bump('new', 1, EVERYONE)} END")


@migrations()
def m017_agent_disabled(db):
    # An agent who has left: cannot sign in, is offered no caller and leaves the board; their calls
    # stay in history under their name. `flask agents disable` / `enable`.
    db["agents"].add_column("disabled_at", str)


@migrations()
def m018_call_checked(db):
    # When the dialer last asked Twilio's REST API about a live call whose callbacks went quiet
    # (reconcile.py): one process asks, and not again for a while.
    db["calls"].add_column("checked_at", str)
