"""Presence: available, on a call, wrap-up, away or offline; every change kept with its time.

An agent chooses available or away (with a reason). A call makes them "on a call" and its end
"wrap-up" for WRAP_UP_SECONDS, then available again. An agent whose pages have all been closed
for PRESENCE_OFFLINE_SECONDS is offline: each process's hub (live.py) writes a heartbeat for
the agents whose event streams it holds, and sweeps the rest.
"""
from datetime import datetime, timedelta, timezone

from flask import Blueprint, flash, make_response, redirect, request, url_for
from jinja2_fragments.flask import render_block
from markupsafe import escape
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField
from wtforms.validators import Length, Optional

from . import live
from .db import batched, get_db, one, utcnow, writing

bp = Blueprint("presence", __name__)

WORDS = {"available": "available", "on-call": "on a call", "wrap-up": "in wrap-up", "away": "away",
         "offline": "offline"}
CHOSEN = ("available", "away")  # what an agent may choose; the others follow from calls and pages
NOT_READY = "phone not started"  # why an agent who opened the dialer is away until they choose


def words(agent):
    """How presence reads: 'away: lunch', 'on a call'."""
    text = WORDS.get(agent["presence"], agent["presence"] or "offline")
    return f"{text}: {agent['presence_reason']}" if agent.get("presence_reason") else text


def agent_state(db, agent_id):
    """An agent as watchers see it (no password hash, no identity)."""
    return one(db, "SELECT id, username, coalesce(display_name, username) AS name, role, presence, "
                   "presence_since, presence_reason, disabled_at FROM agents WHERE id = ?", [agent_id])


def set_presence(db, agent_id, presence, reason=None, by=None):
    """Inside a write transaction: change, keep the change, and publish it; nothing if unchanged."""
    now = utcnow()
    cursor = db.execute(
        "UPDATE agents SET presence = ?, presence_reason = ?, presence_since = ? WHERE id = ? "
        "AND (presence IS NOT ? OR presence_reason IS NOT ?)", [presence, reason, now, agent_id, presence, reason])
    if cursor.rowcount == 0:
        return False
    db.execute("INSERT INTO presence_changes (agent_id, presence, reason, created_at, by) VALUES (?, ?, ?, ?, ?)",
               [agent_id, presence, reason, now, by])
    live.publish_agent(db, agent_state(db, agent_id))
    return True


def call_started(db, agent_id):
    set_presence(db, agent_id, "on-call", by="call")


def call_ended(db, agent_id):
    """The agent's call ended: wrap-up, unless they were not on it any more (away, offline)."""
    row = one(db, "SELECT presence FROM agents WHERE id = ?", [agent_id])
    if row and row["presence"] == "on-call":
        set_presence(db, agent_id, "wrap-up", by="call")


def call_not_placed(db, agent_id):
    """Twilio refused the call the agent just placed: back to available, with nothing to wrap up."""
    row = one(db, "SELECT presence FROM agents WHERE id = ?", [agent_id])
    if row and row["presence"] == "on-call":
        set_presence(db, agent_id, "available", by="call not placed")


MISSED_OFFER = "missed an incoming call"


def missed_offer(db, agent_id):
    """An available agent let an offered caller ring out: away, so callers are not offered to an
    empty desk again; their screen says why, and Available brings them back."""
    row = one(db, "SELECT presence FROM agents WHERE id = ?", [agent_id])
    if row and row["presence"] == "available":
        set_presence(db, agent_id, "away", MISSED_OFFER, by="missed call")


def available_agents(db, limit, leaving_out=()):
    """Agents to offer a caller to: available (their phone ready, by their page's word), longest idle first."""
    marks = ", ".join("?" * len(leaving_out))
    skip = f" AND id NOT IN ({marks})" if leaving_out else ""
    return list(db.query("SELECT id, identity, username FROM agents WHERE presence = 'available' "
                         "AND disabled_at IS NULL" + skip
                         + " ORDER BY presence_since, id LIMIT ?", [*leaving_out, limit]))


def _seconds_ago(seconds):
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds)).isoformat(timespec="seconds")


def tick(db, watched, wrap_up_seconds, offline_seconds):
    """Run by each hub every few seconds, as one write: heartbeats for the agents whose pages it
    holds open (`watched`), wrap-up that has run its time, and agents with no open page left."""
    now = utcnow()
    if watched:
        marks = ", ".join("?" * len(watched))
        db.execute(f"UPDATE agents SET heartbeat_at = ? WHERE id IN ({marks})", [now, *watched])
        for (agent_id,) in db.execute(f"SELECT id FROM agents WHERE presence IN ('offline') AND disabled_at IS NULL "
                                      f"AND id IN ({marks})",
                                      list(watched)).fetchall():
            set_presence(db, agent_id, "away", NOT_READY, by="page opened")
    for (agent_id,) in db.execute("SELECT id FROM agents WHERE presence = 'wrap-up' AND presence_since <= ?",
                                  [_seconds_ago(wrap_up_seconds)]).fetchall():
        set_presence(db, agent_id, "available", by="wrap-up ended")
    for (agent_id,) in db.execute(
            "SELECT id FROM agents WHERE presence != 'offline' AND presence != 'on-call' "
            "AND (heartbeat_at IS NULL OR heartbeat_at <= ?)", [_seconds_ago(offline_seconds)]).fetchall():
        set_presence(db, agent_id, "offline", by="no open page")


def tick_needed(db, watched, wrap_up_seconds, offline_seconds):
    """Whether `tick` has anything to do (a read: most ticks write nothing but heartbeats)."""
    return bool(watched) or db.execute(
        "SELECT EXISTS(SELECT 1 FROM agents WHERE (presence = 'wrap-up' AND presence_since <= ?) OR "
        "(presence NOT IN ('offline', 'on-call') AND (heartbeat_at IS NULL OR heartbeat_at <= ?)))",
        [_seconds_ago(wrap_up_seconds), _seconds_ago(offline_seconds)]).fetchone()[0]


class PresenceForm(FlaskForm):
    presence = StringField(validators=[Length(max=20)])
    reason = StringField(validators=[Optional(), Length(max=80)])
    # The dialer says whether its phone is registered with a fresh token and a microphone.
    phone_ready = HiddenField()


def _answer(agent, message=None, status=200):
    """For htmx: the sentence (if any) where the form shows it, and the agent's presence morphed in."""
    body = f'<p class="error" role="alert">{escape(message)}</p>' if message else ""
    body += render_block("dialing/index.html", "my_presence", agent=agent, oob=True)
    response = make_response(body, status)
    response.vary.add("HX-Request")
    return response


@bp.route("/presence", methods=["POST"])
@login_required
def change():
    """Available or away (with a reason), chosen by the agent; a sentence for anything else."""
    form = PresenceForm()
    db = get_db()
    wanted = (form.presence.data or "").strip()
    reason = (form.reason.data or "").strip()[:80] or None
    message = None
    if wanted not in CHOSEN:
        message = "Choose available or away."
    elif not form.validate():
        message = "A reason for being away is at most 80 characters."
    elif wanted == "available" and form.phone_ready.data != "yes":
        message = "Your phone is not ready: start it (and allow the microphone) before you become available."
    if message and not request.headers.get("HX-Request"):
        flash(message)
        return redirect(url_for("dialing.index"), 303)
    if message:
        return _answer(agent_state(db, current_user.id), message, 422)
    with writing(db):
        current = agent_state(db, current_user.id)
        if current["presence"] == "on-call" and wanted == "available":
            message = "You are on a call: you will be available after it."
        else:
            set_presence(db, current_user.id, wanted, reason if wanted == "away" else None, by=current_user.username)
    agent = agent_state(db, current_user.id)
    if agent["presence"] == "available":
        from .inbound import offer_soon
        offer_soon()  # the longest-waiting caller, if any, rings this agent's phone
    if not request.headers.get("HX-Request"):
        if message:
            flash(message)
        return redirect(url_for("dialing.index"), 303)
    return _answer(agent, message, 409 if message else 200)


def run_tick(app, db, watched):
    """The hub's periodic presence work, through the process's writer (never on the hub's loop)."""
    cfg = app.config
    args = (cfg["WRAP_UP_SECONDS"], cfg["PRESENCE_OFFLINE_SECONDS"])
    if tick_needed(db, watched, *args):
        batched(db, tick, watched, *args)
    # Callers waiting while an agent is available (wrap-up just ended, or an offer came to nothing):
    # offer them now. Also the safety net for an offer lost on the way.
    from .inbound import offer_soon, waiting
    if available_agents(db, 1) and waiting(db):
        offer_soon(app)
