"""Live updates, in one place: the events table, one hub per process, and the `/events` stream.

A change a person should see is written as an `events` row in the transaction of the change
(`publish_call`). Each process runs one hub thread that polls SQLite's `PRAGMA data_version` (it
moves when any other connection, of any process, commits), reads the new rows once, renders each
as the fragment the pages show, and hands it to the open streams that may see it. A message
carries the whole current state of one call, so a repeat or a replay is harmless.
"""
import json
import os
import queue
import threading
import time
from datetime import datetime, timedelta, timezone

from flask import Blueprint, Response, current_app, request
from flask_login import current_user, login_required
from jinja2_fragments.flask import render_block

from . import presence, reconcile
from .db import batched, connect, get_db, utcnow

bp = Blueprint("live", __name__)

POLL_SECONDS = 0.05  # how often a hub asks SQLite whether anything was committed
PURGE_SECONDS = 3600  # how often a hub lets go of the oldest events
REPLAY_LIMIT = 500  # a reconnect that missed more than this gets a fresh snapshot instead
RECENT = timedelta(minutes=15)  # a snapshot includes calls that ended this recently
# Columns a watcher never needs (the form's one-submit key) or must not see.
PRIVATE_COLUMNS = ("attempt_key",)


# --- writing -------------------------------------------------------------------------------

def publish_call(db, call):
    """Inside the transaction that changed `call`: an event with its whole current state."""
    data = {key: value for key, value in call.items() if key not in PRIVATE_COLUMNS}
    _publish(db, "call", call["id"], call["agent_id"], data)


def publish_agent(db, agent):
    """Inside the transaction that changed an agent's presence: the agent as watchers see them."""
    _publish(db, "agent", agent["id"], agent["id"], agent)


def _publish(db, topic, subject_id, agent_id, data):
    db.execute("INSERT INTO events (created_at, topic, subject_id, agent_id, data) VALUES (?, ?, ?, ?, ?)",
               [utcnow(), topic, subject_id, agent_id, json.dumps(data)])


def purge(db, keep):
    """Keep the newest `keep` events (a browser further behind than that gets a fresh snapshot)."""
    newest = db.execute("SELECT max(id) FROM events").fetchone()[0]
    if newest is not None and newest > keep:
        db.execute("DELETE FROM events WHERE id <= ?", [newest - keep])


# --- rendering -----------------------------------------------------------------------------

def render(topic, data, supervisor):
    """An event as the SSE message's HTML: the pages' own blocks, each swapped in by its id (morph).

    Agents get what the dialer shows; supervisors also get the board's row. Ids name the call or
    the agent, so an element only lands where that very call or agent is shown.
    """
    if topic == "call":
        html = render_block("dialing/index.html", "live_call", call=data, oob=True)
        html += render_block("dialing/index.html", "recent_call", call=data, oob=True)
        if for_the_team(data):
            html += render_team(data)
        if supervisor:
            html += render_block("board/index.html", "board_call", call=data, oob=True)
            if for_the_team(data):
                html += render_block("board/index.html", "board_missed", call=data, oob=True)
    else:
        html = render_block("dialing/index.html", "my_presence", agent=data, oob=True)
        if supervisor:
            html += render_block("board/index.html", "agent_row", agent=data, oob=True)
    return html


def for_the_team(call):
    """A customer's call in that no agent has taken: every agent's "To call back" list follows it."""
    return call.get("direction") == "inbound" and call.get("agent_id") is None


def render_team(call):
    """What an agent sees of a call in nobody took: its line in "To call back" (hidden until it ended)."""
    return render_block("dialing/index.html", "missed_call", call=call, oob=True)


def render_counts(db):
    """The board's counts of today, for supervisors' streams after calls changed."""
    from . import board
    return render_block("board/index.html", "counts", counts=board.todays_counts(db), oob=True)


def message(event_id, html):
    """One SSE message: `id:` then the HTML, one `data:` line per line."""
    lines = "".join(f"data: {line.strip()}\n" for line in html.splitlines() if line.strip())
    return f"id: {event_id}\n{lines}\n"


# --- the hub -------------------------------------------------------------------------------

class Stream:
    """One open `/events` response: who it is for, and the messages waiting for it."""

    def __init__(self, agent_id, supervisor, session_id=None):
        self.agent_id = agent_id
        self.supervisor = supervisor
        self.session_id = session_id  # the sign-in it was opened with: it ends when that does
        self.queue = queue.Queue()

    def close(self):
        """End the response at once (its sign-in ended): the browser reconnects and is refused."""
        self.queue.put((None, None))

    def may_see(self, agent_id):
        return self.supervisor or agent_id == self.agent_id


class Hub:
    """This process's one reader of the events table, fanning new rows out to its streams."""

    def __init__(self, app):
        self.app = app
        self.pid = os.getpid()
        self.streams = set()
        self.lock = threading.Lock()
        self.db = connect(app.config["DATABASE"])
        self.last_id = self.db.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
        self.thread = threading.Thread(target=self._run, name="dialer-hub", daemon=True)
        self.thread.start()

    def subscribe(self, stream):
        with self.lock:
            self.streams.add(stream)

    def unsubscribe(self, stream):
        with self.lock:
            self.streams.discard(stream)

    def _run(self):
        version = None
        next_tick = next_purge = next_reconcile = 0
        while True:
            time.sleep(POLL_SECONDS)
            try:
                now = self.db.execute("PRAGMA data_version").fetchone()[0]
                if now != version:
                    version = now
                    self._deliver_new_rows()
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.app.config["PRESENCE_TICK_SECONDS"]
                    with self.lock:
                        watched = sorted({stream.agent_id for stream in self.streams})
                    presence.run_tick(self.app, self.db, watched)
                    self._close_signed_out()
                if time.monotonic() >= next_reconcile:
                    next_reconcile = time.monotonic() + reconcile.EVERY_SECONDS
                    if reconcile.overdue(self.db, datetime.now(timezone.utc)):
                        reconcile.run_soon(self.app)
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + PURGE_SECONDS
                    batched(self.db, purge, self.app.config["EVENTS_KEEP"])
            except Exception:  # a locked or busy moment: the next poll tries again
                self.app.logger.exception("event hub: reading new events failed")

    def _close_signed_out(self):
        """Streams whose sign-in has ended (signed out, a new password, the agent switched off)
        stop now, not at the end of their lifetime: what someone who has left sees stops with it."""
        with self.lock:
            streams = [stream for stream in self.streams if stream.session_id]
        if not streams:
            return
        marks = ", ".join("?" * len(streams))
        ended = {row[0] for row in self.db.execute(
            f"SELECT sessions.id FROM sessions JOIN agents ON agents.id = sessions.agent_id WHERE sessions.id IN ({marks}) "
            "AND (sessions.ended_at IS NOT NULL OR agents.disabled_at IS NOT NULL)",
            [stream.session_id for stream in streams])}
        for stream in streams:
            if stream.session_id in ended:
                stream.close()

    def _deliver_new_rows(self):
        rows = self.db.execute("SELECT id, topic, agent_id, data FROM events WHERE id > ? ORDER BY id",
                               [self.last_id]).fetchall()
        if not rows:
            return
        with self.app.test_request_context(base_url=self.app.config["PUBLIC_BASE_URL"]):
            with self.lock:
                streams = list(self.streams)
            for event_id, topic, agent_id, data in rows:
                state = json.loads(data)
                texts = {}  # rendered once per audience, whatever the number of streams
                team = topic == "call" and for_the_team(state)
                for stream in streams:
                    if stream.may_see(agent_id):
                        if stream.supervisor not in texts:
                            texts[stream.supervisor] = message(event_id, render(topic, state, stream.supervisor))
                        stream.queue.put((event_id, texts[stream.supervisor]))
                    elif team:  # another agent: only the "To call back" line of it
                        if "team" not in texts:
                            texts["team"] = message(event_id, render_team(state))
                        stream.queue.put((event_id, texts["team"]))
                self.last_id = event_id
            supervisors = [stream for stream in streams if stream.supervisor]
            if supervisors and any(topic == "call" for _, topic, _, _ in rows):
                text = message(self.last_id, render_counts(self.db))
                for stream in supervisors:
                    stream.queue.put((self.last_id, text))


def hub(app):
    """The process's hub, started on first use (and again in a forked worker)."""
    found = app.extensions.get("dialer_hub")
    if found is None or found.pid != os.getpid():
        with _hub_guard:
            found = app.extensions.get("dialer_hub")
            if found is None or found.pid != os.getpid():
                found = app.extensions["dialer_hub"] = Hub(app)
    return found


_hub_guard = threading.Lock()


# --- what a stream starts with ---------------------------------------------------------------

def snapshot_calls(db, agent_id, supervisor):
    """The calls a page shows live: those not ended, and those that ended in the last few minutes."""
    from . import calls
    now = datetime.now(timezone.utc)
    terminal = ", ".join("?" * len(calls.TERMINAL))
    where = "calls.created_at > ? AND (calls.status NOT IN ({}) OR calls.ended_at > ?)".format(terminal)
    args = [(now - calls.LONGEST_CALL).isoformat(timespec="seconds"), *calls.TERMINAL,
            (now - RECENT).isoformat(timespec="seconds")]
    if not supervisor:
        where += " AND calls.agent_id = ?"
        args.append(agent_id)
    return list(db.query(
        "SELECT calls.*, agents.identity AS agent_identity, coalesce(agents.display_name, agents.username) "
        f"AS agent_name FROM calls LEFT JOIN agents ON agents.id = calls.agent_id WHERE {where} "
        "ORDER BY calls.created_at, calls.id", args))


def _missed_events(db, after, agent_id, supervisor):
    """The events after `after` this user may see, latest state per call; None if a snapshot is due."""
    first, last = db.execute("SELECT min(id), max(id) FROM events").fetchone()
    if last is None or after > last or (first is not None and after < first - 1):
        return None  # from another database, or older than what is kept
    # An agent's own events, and calls in that nobody took (their "To call back" line).
    rows = db.execute(
        "SELECT id, topic, subject_id, data FROM events WHERE id > ? AND (? OR agent_id = ? OR agent_id IS NULL) "
        "ORDER BY id LIMIT ?", [after, supervisor, agent_id, REPLAY_LIMIT + 1]).fetchall()
    if len(rows) > REPLAY_LIMIT:
        return None
    latest = {}
    for event_id, topic, subject_id, data in rows:
        latest.pop((topic, subject_id), None)  # re-inserted: in the order of each one's last change
        latest[topic, subject_id] = (event_id, topic, json.loads(data))
    return list(latest.values())


def _start(db, stream, upto):
    """A fresh stream's first messages: the current state of everything it shows."""
    from . import board
    first = [message(upto, render("call", call, stream.supervisor))
             for call in snapshot_calls(db, stream.agent_id, stream.supervisor)]
    agents = board.agents(db) if stream.supervisor else [presence.agent_state(db, stream.agent_id)]
    first += [message(upto, render("agent", agent, stream.supervisor)) for agent in agents]
    if stream.supervisor:
        first.append(message(upto, render_counts(db)))
    return first


def _last_event_id():
    """The Last-Event-ID the browser sent (a whole number), or None."""
    raw = request.headers.get("Last-Event-ID", "").strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None


@bp.route("/events")
@login_required
def events():
    """Server-sent events: the user's calls (a supervisor: everyone's), resumable with Last-Event-ID."""
    cfg = current_app.config
    stream = Stream(current_user.id, current_user.is_supervisor, current_user.session_id)
    the_hub = hub(current_app._get_current_object())
    the_hub.subscribe(stream)  # before reading what to start with: nothing falls between the two
    db = get_db()
    try:
        upto = db.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
        after = _last_event_id()
        missed = None if after is None else _missed_events(db, after, stream.agent_id, stream.supervisor)
        if missed is None:
            first = _start(db, stream, upto)
        else:
            first = [message(event_id, render_team(state) if topic == "call" and not stream.may_see(state["agent_id"])
                             else render(topic, state, stream.supervisor)) for event_id, topic, state in missed]
            if stream.supervisor and missed:
                first.append(message(upto, render_counts(db)))
        first.append(f"id: {upto}\n\n")  # where a reconnect resumes, even when there was nothing to show
    except Exception:
        the_hub.unsubscribe(stream)
        raise
    keepalive, lifetime = cfg["EVENTS_KEEPALIVE_SECONDS"], cfg["EVENTS_STREAM_SECONDS"]

    def generate():
        try:
            yield "retry: 1000\n\n"
            yield from first
            ends = time.monotonic() + lifetime
            while time.monotonic() < ends:
                try:
                    event_id, text = stream.queue.get(timeout=min(keepalive, max(0.01, ends - time.monotonic())))
                except queue.Empty:
                    yield ": keep-alive\n\n"
                    continue
                if event_id is None:
                    return  # its sign-in ended: the reconnect is refused with the reason
                if event_id > upto:  # the start covered everything up to `upto`
                    yield text
            # The browser reconnects at once with Last-Event-ID: the sign-in is checked again.
        finally:
            the_hub.unsubscribe(stream)

    return Response(generate(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
