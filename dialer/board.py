"""The supervisor's board: every agent's presence, every live call with its timers, today's counts."""
from datetime import datetime, timezone

from flask import Blueprint, abort
from flask_login import current_user, login_required

from . import calls, live
from .db import get_db
from .pages import render

bp = Blueprint("board", __name__)


def agents(db):
    """Every agent as watchers see them, by name."""
    return list(db.query(
        "SELECT id, username, coalesce(display_name, username) AS name, role, presence, presence_since, "
        "presence_reason FROM agents ORDER BY lower(coalesce(display_name, username)), id"))


def todays_counts(db):
    """Calls placed today (UTC) and how they went: answered, missed, average wait and talk."""
    today = datetime.now(timezone.utc).date().isoformat()
    rows = db.execute(
        "SELECT status, dial_result, answered_at, agent_answered_at, ended_at, duration FROM calls "
        "WHERE created_at >= ?", [today]).fetchall()
    placed = answered = missed = 0
    waits, talks = [], []
    for status, dial_result, answered_at, agent_answered_at, ended_at, duration in rows:
        call = {"status": status, "dial_result": dial_result, "answered_at": answered_at,
                "agent_answered_at": agent_answered_at, "ended_at": ended_at, "duration": duration}
        placed += 1
        answered += bool(answered_at)
        missed += calls.outcome(call) in ("missed by agent", "customer hung up while waiting")
        wait, talk = calls.wait_and_talk(call)
        if wait is not None and (agent_answered_at or ended_at):
            waits.append(wait)
        if talk:
            talks.append(talk)
    return {"placed": placed, "answered": answered, "missed": missed,
            "wait": sum(waits) / len(waits) if waits else None, "talk": sum(talks) / len(talks) if talks else None}


@bp.route("/board")
@login_required
def index():
    """Supervisors only: the team now, kept live by the page's event stream."""
    if not current_user.is_supervisor:
        abort(403, "The board is for supervisors.")
    db = get_db()
    return render("board/index.html", "board", agents=agents(db), calls=live.snapshot_calls(db, None, True),
                  counts=todays_counts(db))
