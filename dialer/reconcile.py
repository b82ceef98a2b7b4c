"""Asking Twilio about live calls whose last callback never came.

Twilio does not send a status callback again, and one can be lost (the dialer restarting, a
network fault). Without its `completed` the call would stay live for good: the panel would say
"talking", the talk time would count on, and the agent could not place another call (409). So
every EVERY_SECONDS the event hub of each process (live.py: started by the first page opened
there) looks for live calls that should have ended:

- the <Dial> is over (its action came, or the agent's leg ended) and nothing came for QUIET;
- or nothing at all came for RECHECK (a customer's phone that rang out, or a long talk).

It asks Twilio's REST API about each (GET Calls/{Sid}: one process claims a call, and it is not
asked about again within RECHECK), and a call Twilio says has ended is ended here by the same
rules as its callback would have (`calls.apply_event`, source `rest`): Twilio's duration and end
time, presence to wrap-up, the panel and board through the event stream.
"""
import threading
from datetime import datetime, timedelta, timezone

from . import calls, telephony
from .db import batched, connect

EVERY_SECONDS = 10
QUIET = timedelta(seconds=30)
RECHECK = timedelta(minutes=5)
HORIZON = timedelta(days=1)  # older calls left live are history's to show, not this sweep's
BATCH = 20


def _iso(moment):
    return moment.isoformat(timespec="seconds")


def overdue(db, now):
    """Ids and CallSids of live calls to ask Twilio about at `now` (a read)."""
    terminal = ", ".join("?" * len(calls.TERMINAL))
    # Live calls are few: the cheap conditions come first, the newest event only for those.
    return db.execute(
        "SELECT id, customer_call_sid FROM ("
        "  SELECT calls.id, customer_call_sid, dial_result, agent_status, coalesce("
        "         (SELECT received_at FROM call_events WHERE call_id = calls.id ORDER BY id DESC LIMIT 1),"
        "         created_at) AS last_at"
        f"  FROM calls WHERE status NOT IN ({terminal}) AND customer_call_sid IS NOT NULL AND created_at > ?"
        "  AND (checked_at IS NULL OR checked_at <= ?)"
        f") WHERE last_at <= ? AND (dial_result IS NOT NULL OR agent_status IN ({terminal}) OR last_at <= ?) "
        "ORDER BY id LIMIT ?",
        [*calls.TERMINAL, _iso(now - HORIZON), _iso(now - RECHECK), _iso(now - QUIET), *calls.TERMINAL,
         _iso(now - RECHECK), BATCH]).fetchall()


def _claim(db, call_id, now):
    """In the writer: this process asks about this call, unless another just did."""
    return db.execute("UPDATE calls SET checked_at = ? WHERE id = ? AND (checked_at IS NULL OR checked_at <= ?)",
                      [_iso(now), call_id, _iso(now - RECHECK)]).rowcount == 1


def run(app, now=None):
    """Ask Twilio about every overdue call and end those it says have ended; returns their ids."""
    now = now or datetime.now(timezone.utc)
    db = connect(app.config["DATABASE"])
    ended = []
    try:
        with app.app_context():
            for call_id, call_sid in overdue(db, now):
                if not batched(db, _claim, call_id, now):
                    continue
                try:
                    status, duration, end_time = telephony.fetch_call(call_sid)
                except telephony.TelephonyError as error:
                    app.logger.warning("call %s: asking Twilio about %s failed: %s", call_id, call_sid, error.message)
                    continue
                if not calls.is_terminal(status):
                    continue
                values = {"CallSid": call_sid, "CallStatus": status, "CallDuration": duration,
                          "Timestamp": _iso(end_time) if end_time else None}
                call, changed = calls.apply_event(db, call_id, "rest", {k: v for k, v in values.items() if v is not None})
                if changed:
                    app.logger.warning("call %s: its last status callback never came; Twilio says %s", call_id, status)
                    ended.append(call_id)
    finally:
        db.conn.close()
    return ended


_running = threading.Lock()


def run_soon(app):
    """`run` off the hub's loop (REST requests take time); one at a time per process."""
    if not _running.acquire(blocking=False):
        return

    def sweep():
        try:
            run(app)
        except Exception:
            app.logger.exception("asking Twilio about quiet calls failed")
        finally:
            _running.release()
    threading.Thread(target=sweep, name="dialer-reconcile", daemon=True).start()
