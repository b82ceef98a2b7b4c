"""The supervisor's board: every agent's presence, every live call with its timers, today's counts."""
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, current_app
from flask_login import current_user, login_required

from . import calls, inbound, live
from .db import get_db
from .pages import render

bp = Blueprint("board", __name__)


def agents(db):
    """Every agent as watchers see them, by name (not those switched off: they have left)."""
    return list(db.query(
        "SELECT id, username, coalesce(display_name, username) AS name, role, presence, presence_since, "
        "presence_reason FROM agents WHERE disabled_at IS NULL ORDER BY lower(coalesce(display_name, username)), id"))


def todays_counts(db):
    """Today's calls (the centre's day, TIME_ZONE) and how they went: placed by agents (answered by
    the customer, missed by the agent), customers calling in (answered, and missed: hung up
    unanswered or left a message), average wait and talk."""
    today = calls.start_of_today(ZoneInfo(current_app.config["TIME_ZONE"]))
    rows = db.query(
        "SELECT direction, status, dial_result, answered_at, agent_answered_at, ended_at, duration, queued_at, "
        "voicemail_sid FROM calls WHERE created_at >= ?", [today])
    counts = dict.fromkeys(("placed", "answered", "missed", "called_in", "answered_in", "missed_in"), 0)
    waits, talks = [], []
    for call in rows:
        if call["direction"] == "inbound":
            counts["called_in"] += 1
            counts["answered_in"] += bool(call["agent_answered_at"])
            counts["missed_in"] += calls.is_terminal(call["status"]) and not call["agent_answered_at"]
        else:
            counts["placed"] += 1
            counts["answered"] += bool(call["answered_at"])
            counts["missed"] += calls.outcome(call) in ("missed by agent", "customer hung up while waiting")
        wait, talk = calls.wait_and_talk(call)
        if wait is not None and (call["agent_answered_at"] or call["ended_at"]):
            waits.append(wait)
        if talk:
            talks.append(talk)
    queue = inbound.waiting(db)
    return {**counts, "wait": sum(waits) / len(waits) if waits else None,
            "talk": sum(talks) / len(talks) if talks else None,
            "waiting": len(queue), "longest_since": queue[0]["queued_at"] if queue else None}


@bp.route("/board")
@login_required
def index():
    """Supervisors only: the team now, kept live by the page's event stream."""
    if not current_user.is_supervisor:
        abort(403, "The board is for supervisors.")
    db = get_db()
    return render("board/index.html", "board", agents=agents(db), calls=live.snapshot_calls(db, None, True),
                  counts=todays_counts(db), missed=calls.to_call_back(db))
