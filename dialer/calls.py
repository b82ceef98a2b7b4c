"""Calls: the queries, and the one function that owns how a call's state may change."""
import json
import math
from datetime import datetime, timedelta, timezone

from . import live, params, presence
from .db import batched, one, utcnow, writing

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


# --- queries (plain SQL on the webhook path: see db.one) ---------------------------------

def create_call(db, agent_id, customer_number, direction="outbound", extension=None, attempt_key=None):
    """A new call row, `queued`, before Twilio has been asked anything.

    `extension` is keyed in after the customer answers, and shown beside the number.
    """
    with writing(db):
        cursor = db.execute(
            "INSERT INTO calls (agent_id, direction, customer_number, customer_extension, status, created_at, "
            "attempt_key) VALUES (?, ?, ?, ?, 'queued', ?, ?)",
            [agent_id, direction, customer_number, extension, utcnow(), attempt_key])
        call_id = cursor.lastrowid
        record_event(db, call_id, "app", {"action": "created", "To": customer_number}, status="queued")
        call = call_with_identity(db, call_id)
        live.publish_call(db, call)
        presence.call_started(db, agent_id)
    return call


def create_inbound(db, callback):
    """The call of a customer ringing the centre's number, or the one this CallSid already made.

    No agent yet; our TwiML answers it at once with the greeting, so it is in progress from here.
    """
    return batched(db, _create_inbound, callback, read=_inbound_known)


def _inbound_known(db, callback):
    found = call_by_sid(db, callback.get("CallSid"))
    return call_with_identity(db, found["id"]) if found else None


def _create_inbound(db, callback):
    found = _inbound_known(db, callback)
    if found:
        return found
    now = utcnow()
    caller = callback.get("From") or "unknown"
    cursor = db.execute(
        "INSERT INTO calls (agent_id, direction, customer_number, customer_call_sid, status, created_at, answered_at) "
        "VALUES (NULL, 'inbound', ?, ?, 'in-progress', ?, ?)", [caller, callback.get("CallSid"), now, now])
    record_event(db, cursor.lastrowid, "twiml", callback.raw, status=callback.get("CallStatus"),
                 call_sid=callback.get("CallSid"))
    call = call_with_identity(db, cursor.lastrowid)
    live.publish_call(db, call)
    return call


def earlier_calls(db, customer_number, before_id):
    """How many calls this number had before, and the newest one's id and disposition: for the incoming-call screen."""
    row = db.execute("SELECT count(*), max(id) FROM calls WHERE customer_number = ? AND id < ?",
                     [customer_number, before_id]).fetchone()
    last = get_call(db, row[1]) if row[1] else None
    return row[0], last


def get_call(db, call_id):
    return one(db, "SELECT * FROM calls WHERE id = ?", [call_id])


def call_by_sid(db, call_sid):
    """The call whose customer leg has this CallSid, or None."""
    return one(db, "SELECT * FROM calls WHERE customer_call_sid = ? LIMIT 1", [call_sid])


def call_with_identity(db, call_id):
    """The call with its agent's client identity (`agent_identity`, for the TwiML) and name (`agent_name`)."""
    return one(db, "SELECT calls.*, agents.identity AS agent_identity, "
                    "coalesce(agents.display_name, agents.username) AS agent_name FROM calls "
                    "LEFT JOIN agents ON agents.id = calls.agent_id WHERE calls.id = ?", [call_id])


def dial_target(db, call_id):
    """What customer-to-agent needs of a call, in one small read: (status, customer CallSid, customer
    number, agent's client identity), or None."""
    return db.conn.execute("SELECT calls.status, calls.customer_call_sid, calls.customer_number, agents.identity "
                           "FROM calls LEFT JOIN agents ON agents.id = calls.agent_id WHERE calls.id = ?",
                           [call_id]).fetchone()


def call_by_attempt(db, agent_id, attempt_key):
    """The call this agent's form submit with this key placed, or None."""
    return one(db, "SELECT * FROM calls WHERE agent_id = ? AND attempt_key = ?", [agent_id, attempt_key])


# A call Twilio never reported on within this time is not live (the app missed its callbacks,
# or Twilio never took it); Twilio itself ends every call after 4 hours unless told otherwise.
SILENT_CALL_LIMIT = timedelta(minutes=2)
LONGEST_CALL = timedelta(hours=4)


def live_call(db, agent_id):
    """The agent's newest call that has not ended, or None."""
    now = datetime.fromisoformat(utcnow())
    return one(db, "SELECT * FROM calls WHERE agent_id = ? AND status NOT IN "
                   f"({', '.join('?' * len(TERMINAL))}) AND created_at > ? AND (status != 'queued' OR created_at > ?) "
                   "ORDER BY created_at DESC, id DESC LIMIT 1",
               [agent_id, *TERMINAL, (now - LONGEST_CALL).isoformat(), (now - SILENT_CALL_LIMIT).isoformat()])


RATE_WINDOW = timedelta(seconds=60)  # CALLS_PER_MINUTE counts the calls placed in this window


def seconds_until_next_call(db, agent_id, limit):
    """0 if the agent may place a call now; else the seconds until the oldest of their last `limit` calls is a minute old."""
    now = datetime.now(timezone.utc)
    since = (now - RATE_WINDOW).isoformat(timespec="seconds")
    # The limit-th newest call of the last minute, if there is one (index calls(agent_id, created_at)).
    row = db.execute(
        "SELECT created_at FROM calls WHERE agent_id = ? AND direction != 'inbound' AND created_at > ? "
        "ORDER BY created_at DESC LIMIT 1 OFFSET ?", [agent_id, since, limit - 1]).fetchone()
    if row is None:
        return 0
    frees_at = datetime.fromisoformat(row[0]) + RATE_WINDOW
    return max(1, math.ceil((frees_at - now).total_seconds()))


def call_for_agent(db, call_id, agent):
    """The call (with its agent's name) if this agent may see it, else None: their own, any for a
    supervisor, and a customer's call in that no agent took (the team calls them back)."""
    call = call_with_identity(db, call_id)
    if call and (agent.is_supervisor or call["agent_id"] == agent.id
                 or call["agent_id"] is None and call["direction"] == "inbound"):
        return call
    return None


def to_call_back(db, limit=20):
    """Customers who called in and reached nobody (hung up, or left a message), not yet called
    back, newest first: the whole team's list."""
    return list(db.query(
        f"SELECT * FROM calls WHERE direction = 'inbound' AND agent_answered_at IS NULL AND handled_at IS NULL "
        f"AND status IN ({', '.join('?' * len(TERMINAL))}) ORDER BY created_at DESC LIMIT ?", [*TERMINAL, limit]))


def missed_to_call_back(db, call_id):
    """The missed inbound call with this id (handled or not), or None."""
    return one(db, "SELECT * FROM calls WHERE id = ? AND direction = 'inbound' AND agent_answered_at IS NULL", [call_id])


def mark_called_back(db, missed_id, callback_call_id, by):
    """Inside the write that created the call back: the missed call is handled (by whom, when, which call)."""
    db.execute("UPDATE calls SET handled_at = ?, handled_by = ?, callback_call_id = ? WHERE id = ? AND handled_at IS NULL",
               [utcnow(), by, callback_call_id, missed_id])
    live.publish_call(db, call_with_identity(db, missed_id))


def start_of_today(zone):
    """Midnight at the start of today in the centre's time zone, as UTC text: what "today" means
    on the dialer and the board, as on the history page."""
    now = datetime.now(zone)
    return datetime.combine(now.date(), datetime.min.time(), tzinfo=zone).astimezone(timezone.utc).isoformat(
        timespec="seconds")


def todays_ended_calls(db, agent_id, zone, limit=20):
    """This agent's calls of today (the centre's day) that have ended, newest first: the dialer's redial list."""
    today = start_of_today(zone)
    return list(db.query(
        f"SELECT * FROM calls WHERE agent_id = ? AND created_at >= ? AND status IN ({', '.join('?' * len(TERMINAL))}) "
        "ORDER BY created_at DESC, id DESC LIMIT ?", [agent_id, today, *TERMINAL, limit]))


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


def _exists_and_kept(db, call_id, source, call_sid, status, sequence_number):
    """Whether the call exists, and whether this exact callback is an event of it already.

    One read, and no write lock: a repeated callback is answered without waiting for writers.
    """
    return db.execute(
        "SELECT EXISTS(SELECT 1 FROM calls WHERE id = ?), EXISTS(SELECT 1 FROM call_events WHERE call_id = ? "
        "AND source = ? AND coalesce(call_sid, '') = ? AND coalesce(status, '') = ? "
        "AND coalesce(sequence_number, -1) = ?)",
        [call_id, call_id, source, call_sid or "", status or "", -1 if sequence_number is None else sequence_number],
    ).fetchone()


# --- the state machine ---------------------------------------------------------------------

def _event_status(source, values):
    if source in ("status", "twiml", "agent", "rest"):
        return values.get("CallStatus")
    if source == "dial-result":
        return values.get("DialCallStatus")
    if source in ("recording", "voicemail"):
        return values.get("RecordingStatus")
    if source == "queue":
        return values.get("QueueResult") or "waiting"  # a wait URL request has no result yet
    return values.get("status")


def apply_event(db, call_id, source, callback, agent=None, away_if_missed=False, step=None):
    """Apply a callback or app action to a call.

    `source` is status, twiml (the TwiML fetch itself), dial-result, recording, app, or rest (Twilio's
    API asked about a call whose last callback never came: reconcile.py);
    `callback` is a `params.Callback` (an app action may pass a plain dict of its own values).
    `agent` is the agent whose <Client> leg an `agent` callback reports (its signed URL names them):
    on an inbound call the first to answer becomes the call's agent; with `away_if_missed`, an
    agent who let it ring out is set away. `step` tells apart the callbacks of the TwiML documents
    one inbound call goes through (each ring, each stint in the queue): kept where Twilio's
    SequenceNumber goes, so a second ring's result is news, not a repeat of the first's.

    The rules: every distinct callback is kept as an event (its raw text); a repeat changes
    nothing and writes nothing; a call never moves backwards (by status rank and by
    `SequenceNumber`); a terminal status is final; a field that failed its check is not used.
    Returns (call, changed), the call with its agent's client identity as `agent_identity`;
    raises UnknownCall when there is no such call.
    """
    if not isinstance(callback, params.Callback):
        callback = params.trusted(callback)
    values = callback.values
    status = _event_status(source, values)
    sequence = values.get("SequenceNumber") if step is None else step
    leg_sid = values.get("CallSid")
    return batched(db, _apply, (call_id, source, leg_sid, status, sequence), callback, (agent, away_if_missed),
                   read=_known)


def _known(db, event, callback, offer):
    """Before any write lock: (call, False) for a repeat, None for news; UnknownCall for no call."""
    exists, kept = _exists_and_kept(db, *event)
    if not exists:
        raise UnknownCall(event[0])
    return (call_with_identity(db, event[0]), False) if kept else None


def _apply(db, event, callback, offer):
    """Inside the shared write transaction: keep the event and change the call by the rules."""
    call_id, source, leg_sid, status, sequence = event
    call = call_with_identity(db, call_id)
    if call is None:
        raise UnknownCall(call_id)
    # Under the write lock: two copies of one callback cannot both pass.
    if not record_event(db, call_id, source, callback.raw, status=status, call_sid=leg_sid,
                        sequence_number=sequence):
        return call, False
    agent, away_if_missed = offer
    if source == "agent" and call["direction"] == "inbound":
        if agent and not db.execute("SELECT 1 FROM agents WHERE id = ?", [agent]).fetchone():
            agent = None  # an agent removed since their phone was offered the call: nobody to give it to
        changes = _inbound_agent_leg_changes(call, status, callback.values, leg_sid, agent)
        if changes.get("agent_id"):  # its phone's end may have come first (callbacks cross)
            ended = db.execute(f"SELECT status FROM call_events WHERE call_id = ? AND source = 'agent' AND call_sid = ? "
                               f"AND status IN ({', '.join('?' * len(TERMINAL))}) LIMIT 1",
                               [call_id, leg_sid, *TERMINAL]).fetchone()
            changes["agent_status"] = ended[0] if ended else changes["agent_status"]
        if status == "no-answer" and agent and away_if_missed and not changes.get("agent_id"):
            presence.missed_offer(db, agent)  # rang out: not offered callers again until they are back
    else:
        changes = _changes(call, source, callback.values, status, sequence, leg_sid)
    if changes:
        db.execute(f"UPDATE calls SET {', '.join(f'{column} = ?' for column in changes)} WHERE id = ?",
                   [*changes.values(), call_id])
        if changes.get("agent_id"):
            if not is_terminal(call["status"]) and not is_terminal(changes["agent_status"]):
                presence.call_started(db, changes["agent_id"])
            call = {**call, **changes, **(call_with_identity(db, call_id) or {})}
        if source == "app" and changes.get("status") == "failed" and call["agent_id"]:
            presence.call_not_placed(db, call["agent_id"])  # nobody talked: no wrap-up
        elif is_terminal(changes.get("status")) and (changes.get("agent_id") or call["agent_id"]):
            presence.call_ended(db, changes.get("agent_id") or call["agent_id"])
        call = {**call, **changes}
        live.publish_call(db, call)  # in this transaction: watchers see exactly what was committed
    return call, bool(changes)


def _changes(call, source, values, status, sequence, leg_sid):
    changes = {}
    if source in ("status", "twiml"):
        if leg_sid and not call["customer_call_sid"]:
            changes["customer_call_sid"] = leg_sid
        elif leg_sid and leg_sid != call["customer_call_sid"]:
            return changes  # another leg's callback: kept as an event only
        last = call["last_sequence_number"]
        if sequence is not None and (last is None or sequence > last):
            changes["last_sequence_number"] = sequence
        changes.update(_status_changes(call, status, values))
        if is_terminal(changes.get("status")) and call.get("waiting_since"):
            changes["waiting_since"] = None
        code = values.get("ErrorCode")
        if code and not call["error_code"]:
            changes["error_code"] = code
            changes["error_message"] = CALL_ERRORS.get(code, f"Twilio reported error {code} on this call.")
    elif source == "agent":
        changes.update(_agent_leg_changes(call, status, values, leg_sid))
    elif source == "dial-result":
        # An inbound caller may be offered several times (ringing, then from the queue): the
        # latest offer's result counts until one is answered.
        again = call["direction"] == "inbound" and call["dial_result"] != "completed"
        if status and (not call["dial_result"] or again) and status != call["dial_result"]:
            changes["dial_result"] = status
        if call["direction"] == "inbound" and call["offered_to"]:
            changes.update(offered_to=None, offered_at=None)  # that offer is over, answered or not
        if status and values.get("DialCallSid") and not call["agent_call_sid"] and call["direction"] != "inbound":
            changes["agent_call_sid"] = values["DialCallSid"]
    elif source == "queue":
        if status == "waiting" and not call["waiting_since"] and not is_terminal(call["status"]) \
                and not call["agent_answered_at"]:
            changes["waiting_since"] = utcnow()  # a stint in the queue begins
            changes["queued_at"] = call["queued_at"] or changes["waiting_since"]
        elif status != "waiting" and call["waiting_since"]:
            changes["waiting_since"] = None  # left it: taken for an agent, to voicemail, hung up
    elif source == "voicemail":
        if status == "completed" and values.get("RecordingSid") and not call["voicemail_sid"]:
            changes.update({"voicemail_sid": values["RecordingSid"], "voicemail_url": values.get("RecordingUrl"),
                            "voicemail_duration": values.get("RecordingDuration")})
    elif source == "recording":
        if status == "completed" and values.get("RecordingSid") and not call["recording_sid"]:
            changes.update({
                "recording_sid": values["RecordingSid"],
                "recording_url": values.get("RecordingUrl"),
                "recording_duration": values.get("RecordingDuration"),
                "recording_channels": values.get("RecordingChannels"),
            })
    elif source == "rest":  # Twilio's API, asked because the call's last status callback never came
        if values.get("CallSid") == call["customer_call_sid"]:
            changes.update(_status_changes(call, status, values))
    elif source == "app":
        if values.get("CallSid") and not call["customer_call_sid"]:
            changes["customer_call_sid"] = values["CallSid"]
        if status == "failed" and not is_terminal(call["status"]):
            changes.update({"error_code": values.get("error_code"),
                            "error_message": values.get("error_message")})
        changes.update(_status_changes(call, status, values))
    return changes


def _agent_leg_changes(call, status, values, leg_sid):
    """The agent's <Client> leg: ringing, answered (the agent picked up), ended; never backwards."""
    if rank(status) <= rank(call["agent_status"]) or is_terminal(call["status"]) and not is_terminal(status):
        return {}
    changes = {"agent_status": status}
    if leg_sid and not call["agent_call_sid"]:
        changes["agent_call_sid"] = leg_sid
    # The customer's `answered` callback may come after this one: customer-to-agent does not wait for it.
    if status == "in-progress" and not call["agent_answered_at"]:
        changes["agent_answered_at"] = _event_time(call, values)
    return changes


def _inbound_agent_leg_changes(call, status, values, leg_sid, agent):
    """An inbound call rings several agents' phones: the first to answer takes the call (becomes
    its agent); the other phones' legs are then canceled by Twilio and kept as events only."""
    winner = call["agent_call_sid"]
    if winner and leg_sid != winner:
        return {}
    if status == "in-progress":  # who answered is kept even when it arrives after the call's end
        if winner or not agent or not leg_sid:
            return {}
        answered, ended = _event_time(call, values), call["ended_at"]
        if ended and answered > ended:
            if values.get("Timestamp"):
                return {}  # Twilio's own time says the phone answered after the caller had gone
            answered = ended  # a late report of an answer, with no time: it came before the end
        return {"agent_id": agent, "agent_call_sid": leg_sid, "agent_status": status,
                "agent_answered_at": answered, "waiting_since": None}
    if winner is None and status != "ringing" or is_terminal(call["status"]) and not is_terminal(status):
        return {}  # a phone that rang out or was withdrawn: the call is still looking for an agent
    if rank(status) <= rank(call["agent_status"]) and not (winner is None and call["agent_status"] != "ringing"):
        return {}
    return {"agent_status": status}


CLOCK_SKEW = timedelta(minutes=5)  # how far Twilio's clock and ours may disagree


def _seconds_between(start, end):
    return max(0, int((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()))


def _event_time(call, values):
    """When the event happened: Twilio's Timestamp if it falls within the call's life, else now.

    A call cannot be answered before it was placed, nor end before it was answered or after now.
    """
    now = datetime.fromisoformat(utcnow())
    earliest = datetime.fromisoformat(call["answered_at"] or call["created_at"])
    sent = values.get("Timestamp")
    if sent and earliest - CLOCK_SKEW <= datetime.fromisoformat(sent) <= now + CLOCK_SKEW:
        return max(sent, call["answered_at"] or sent)
    return max(now.isoformat(timespec="seconds"), call["answered_at"] or "")


def _status_changes(call, status, values):
    """Move the status forward only; fill answered/ended times and a duration that fits them."""
    if rank(status) <= rank(call["status"]):
        return {}
    changes = {"status": status}
    when = _event_time(call, values)
    if status == "in-progress" and not call["answered_at"]:
        # Reported after the agent's own answer: the customer had answered by then at the latest.
        changes["answered_at"] = min(when, call.get("agent_answered_at") or when)
    if is_terminal(status):
        changes["ended_at"] = when
        answered = call["answered_at"]
        # No longer than the call has existed (Twilio's own count may run a little ahead of ours).
        longest = _seconds_between(call["created_at"], when) + int(CLOCK_SKEW.total_seconds())
        duration = values.get("CallDuration")
        if duration is None or duration > longest:
            duration = _seconds_between(answered, when) if answered else 0
        if not answered and status != "completed":
            duration = 0  # busy, no answer, failed, canceled: never connected, whatever was sent
        if duration and not answered:
            answered_at = datetime.fromisoformat(when) - timedelta(seconds=duration)
            changes["answered_at"] = max(answered_at.isoformat(timespec="seconds"), call["created_at"])
        changes["duration"] = duration
    return changes


def outcome(call):
    """The call's state in the agent's words: honest about who never answered. A call still going
    reads as its panel does (`live_state`), from the agent's leg too: a late customer callback never
    shows "ringing" while both sides talk."""
    if not is_terminal(call["status"]):
        return live_state(call)[0]
    if call["direction"] == "inbound":
        if call["agent_answered_at"]:
            return "answered"
        if call.get("voicemail_sid"):
            return "voicemail"
        if call["status"] == "completed":
            return "hung up in the queue" if call.get("queued_at") else "hung up while ringing"
        return status_label(call["status"])
    if call["status"] == "completed" and call["dial_result"] == "canceled":
        return "customer hung up while waiting"  # the agent's phone was still ringing
    if call["status"] == "completed" and call["dial_result"] in FALLBACK_DIAL_RESULTS:
        return "missed by agent"  # the customer answered and heard the apology; no agent took it
    return status_label(call["status"])


def wrap_up(db, call_id, disposition, notes, by):
    """Keep the agent's wrap-up of a call (and show it live); returns the call."""
    with writing(db):
        db.execute("UPDATE calls SET disposition = ?, notes = ?, wrapped_up_at = ?, wrapped_up_by = ? WHERE id = ?",
                   [disposition, notes, utcnow(), by, call_id])
        call = call_with_identity(db, call_id)
        live.publish_call(db, call)
    return call


def live_state(call):
    """What the agent's panel says of a call, and since when its timer runs (None: no timer)."""
    status = call["status"]
    if is_terminal(status):
        return outcome(call), None
    if call["direction"] == "inbound" and not call.get("agent_answered_at"):
        if call.get("queued_at"):
            return "waiting in the queue", call["queued_at"]
        return "calling in: ringing agents", call.get("answered_at")
    # The agent's phone rings only once the customer has answered, so its callbacks say so even
    # when the customer's own `answered` callback is late: the panel never says "ringing" mid-talk.
    if call.get("agent_answered_at"):
        return "talking", call["agent_answered_at"]
    if status == "in-progress" or call.get("agent_status") == "ringing":
        return "customer waiting for you", call.get("answered_at")
    if status == "ringing":
        return "customer ringing", None
    return "dialling", None


def wait_and_talk(call):
    """Seconds the customer waited on hold for an agent, and the agent and customer talked (None: not at all).

    Counted to now for a call still going. Calls from before the agent leg was reported on have
    no agent-answer time: their talk time is Twilio's duration when an agent took them.
    """
    end = call["ended_at"] or utcnow()
    agent_answered = call.get("agent_answered_at")
    wait = talk = None
    if call["answered_at"]:
        wait = _seconds_between(call["answered_at"], agent_answered or end)
    if agent_answered:
        talk = _seconds_between(agent_answered, end)
    elif call["dial_result"] == "completed" and call["direction"] != "inbound":
        talk, wait = call["duration"], None  # an inbound call's agent is known only by their answer
    return wait, talk


def status_label(status):
    return STATUS_LABELS.get(status, status or "unknown")
