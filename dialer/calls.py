"""Calls: the queries, and the one function that owns how a call's state may change."""
import json
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

from .db import utcnow, writing

TERMINAL = ("completed", "busy", "failed", "no-answer", "canceled")
PROGRESS = {"queued": 0, "initiated": 1, "ringing": 2, "in-progress": 3}
FALLBACK_DIAL_RESULTS = ("no-answer", "busy", "failed", "canceled")

STATUS_LABELS = {
    "queued": "placing the call", "initiated": "dialling", "ringing": "ringing",
    "in-progress": "in progress", "completed": "completed", "busy": "busy",
    "failed": "failed", "no-answer": "no answer", "canceled": "canceled",
}


# Errors Twilio meets while running a call's TwiML, as the final status callback reports them.
CALL_ERRORS = {
    11200: "Twilio could not fetch the call instructions from the dialer. Ask your administrator to check PUBLIC_BASE_URL and the auth token.",
    11205: "Twilio could not connect to the dialer to fetch the call instructions.",
    12100: "Twilio could not read the dialer's call instructions.",
}


class UnknownCall(LookupError):
    """No call has that id."""


def rank(status):
    """Where a status stands in a call's life; terminal statuses outrank everything."""
    if status in TERMINAL:
        return len(PROGRESS)
    return PROGRESS.get(status, -1)


def is_terminal(status):
    return status in TERMINAL


# --- queries -------------------------------------------------------------------------------

def create_call(db, agent_id, customer_number, direction="outbound"):
    """A new call row, `queued`, before Twilio has been asked anything."""
    now = utcnow()
    table = db["calls"].insert({
        "agent_id": agent_id, "direction": direction, "customer_number": customer_number,
        "status": "queued", "created_at": now,
    })
    call_id = table.last_pk
    record_event(db, call_id, "app", {"action": "created", "To": customer_number}, status="queued")
    return get_call(db, call_id)


def get_call(db, call_id):
    rows = list(db["calls"].rows_where("id = ?", [call_id], limit=1))
    return rows[0] if rows else None


def call_for_agent(db, call_id, agent):
    """The call if this agent may see it (their own, or any for a supervisor), else None."""
    call = get_call(db, call_id)
    if call and (agent.is_supervisor or call["agent_id"] == agent.id):
        return call
    return None


def recent_calls(db, agent, limit=50):
    """The latest calls this agent may see, newest first, with the agent's name."""
    where, args = ("", []) if agent.is_supervisor else ("WHERE calls.agent_id = ?", [agent.id])
    return list(db.query(
        "SELECT calls.*, agents.display_name AS agent_name FROM calls "
        f"JOIN agents ON agents.id = calls.agent_id {where} "
        "ORDER BY calls.created_at DESC, calls.id DESC LIMIT ?", [*args, limit]))


def events_for(db, call_id):
    rows = db["call_events"].rows_where("call_id = ?", [call_id], order_by="id")
    return [dict(row, params=json.loads(row["params"] or "{}")) for row in rows]


def record_event(db, call_id, source, params, status=None, call_sid=None, sequence_number=None):
    """Keep one event of a call's timeline; False when it repeats one already kept."""
    cursor = db.execute(
        "INSERT OR IGNORE INTO call_events "
        "(call_id, source, call_sid, status, sequence_number, params, received_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [call_id, source, call_sid, status, sequence_number, json.dumps(params, sort_keys=True), utcnow()])
    return cursor.rowcount == 1


# --- the state machine ---------------------------------------------------------------------

def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _timestamp(params):
    """Twilio's RFC 2822 `Timestamp` as ISO text, or now."""
    try:
        return parsedate_to_datetime(params["Timestamp"]).astimezone(timezone.utc).isoformat(timespec="seconds")
    except (KeyError, TypeError, ValueError):
        return utcnow()


def _event_status(source, params):
    if source in ("status", "twiml"):
        return params.get("CallStatus")
    if source == "dial-result":
        return params.get("DialCallStatus")
    if source == "recording":
        return params.get("RecordingStatus")
    return params.get("status")


def apply_event(db, call_id, source, params):
    """Apply a callback or app action to a call.

    `source` is status, twiml (the TwiML fetch itself), dial-result, recording or app.

    The rules: every distinct callback is kept as an event; a repeat changes nothing; a call
    never moves backwards (by status rank and by `SequenceNumber`); a terminal status is final.
    Returns (call, changed).
    """
    params = {k: v for k, v in params.items()}
    status = _event_status(source, params)
    sequence = _int(params.get("SequenceNumber"))
    leg_sid = params.get("CallSid")
    with writing(db):
        if not record_event(db, call_id, source, params, status=status, call_sid=leg_sid,
                            sequence_number=sequence):
            return get_call(db, call_id), False
        call = get_call(db, call_id)
        if call is None:
            raise UnknownCall(call_id)
        changes = _changes(call, source, params, status, sequence, leg_sid)
        if changes:
            db["calls"].update(call_id, changes)
    return get_call(db, call_id), bool(changes)


def _changes(call, source, params, status, sequence, leg_sid):
    changes = {}
    if source in ("status", "twiml"):
        if leg_sid and not call["customer_call_sid"]:
            changes["customer_call_sid"] = leg_sid
        elif leg_sid and leg_sid != call["customer_call_sid"]:
            return changes  # another leg's callback: kept as an event only
        last = call["last_sequence_number"]
        if sequence is not None and (last is None or sequence > last):
            changes["last_sequence_number"] = sequence
        changes.update(_status_changes(call, status, params))
        code = _int(params.get("ErrorCode"))
        if code and not call["error_code"]:
            changes["error_code"] = code
            changes["error_message"] = CALL_ERRORS.get(code, f"Twilio reported error {code} on this call.")
    elif source == "dial-result":
        if not call["dial_result"]:
            changes["dial_result"] = status
            if params.get("DialCallSid"):
                changes["agent_call_sid"] = params["DialCallSid"]
    elif source == "recording":
        if status == "completed" and not call["recording_sid"]:
            changes.update({
                "recording_sid": params.get("RecordingSid"),
                "recording_url": params.get("RecordingUrl"),
                "recording_duration": _int(params.get("RecordingDuration")),
                "recording_channels": _int(params.get("RecordingChannels")),
            })
    elif source == "app":
        if params.get("CallSid") and not call["customer_call_sid"]:
            changes["customer_call_sid"] = params["CallSid"]
        if status == "failed" and not is_terminal(call["status"]):
            changes.update({"error_code": _int(params.get("error_code")),
                            "error_message": params.get("error_message")})
        changes.update(_status_changes(call, status, params))
    return changes


def _status_changes(call, status, params):
    """Move the status forward only; fill answered/ended times and duration."""
    if rank(status) <= rank(call["status"]):
        return {}
    changes = {"status": status}
    when = _timestamp(params)
    if status == "in-progress" and not call["answered_at"]:
        changes["answered_at"] = when
    if is_terminal(status):
        duration = _int(params.get("CallDuration"))
        changes["ended_at"] = when
        changes["duration"] = duration if duration is not None else 0
        if duration and not call["answered_at"]:
            ended = datetime.fromisoformat(when)
            changes["answered_at"] = (ended - timedelta(seconds=duration)).isoformat(timespec="seconds")
    return changes


def status_label(status):
    return STATUS_LABELS.get(status, status or "unknown")
