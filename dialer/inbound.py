"""Customers calling in: ring the available agents, queue when all are busy, voicemail.

The centre's number has the voice URL /twiml/inbound. The caller hears the greeting while the
available agents' phones ring (all at once, or one at a time, longest idle first); the first to
answer takes the call and Twilio stops the others. When nobody is available or nobody answers,
the caller waits in a Twilio queue (<Enqueue>) that tells their place and plays hold music; after
VOICEMAIL_AFTER seconds, or when they press 1, they may leave a message (<Record>). Every route
here is a Twilio webhook, signed and checked like the rest of /twiml/* (twiml.py).
"""
import threading
from datetime import datetime, timedelta, timezone

from flask import current_app, request
from twilio.twiml.voice_response import Gather, VoiceResponse

from . import calls, numbers, params, presence, telephony
from .db import get_db, utcnow, writing
from .telephony import public_url
from .twiml import _apology, _apply, _read_callback, _say, bp, twiml

VOICEMAIL_KEY = "1"
GOODBYE = "Thank you. We will call you back. Goodbye."
NO_MESSAGE = "We did not get a message. Please call again. Goodbye."


@bp.route("/inbound", methods=["POST"])
def inbound():
    """A customer rings the centre's number: keep the call, greet them, then (a document of its own,
    fetched once the greeting is over) ring whoever is available by then."""
    callback = _read_callback()
    call = calls.create_inbound(get_db(), callback)
    response = VoiceResponse()
    _say(response, current_app.config["INBOUND_GREETING"])
    response.redirect(public_url("twiml.inbound_ring", call=call["id"]))
    return twiml(response)


@bp.route("/inbound-ring", methods=["POST"])
def inbound_ring():
    """After the greeting: ring the available agents, or queue the caller behind those already waiting."""
    call = _apply("ring", step=_step_arg())
    if call is None or calls.is_terminal(call["status"]):
        return _apology()
    return twiml(_offer(get_db(), call))


@bp.route("/inbound-dialed", methods=["POST"])
def inbound_dialed():
    """The agents' phones stopped ringing: done if one answered, else the next agent or the queue."""
    call = _apply("dial-result", step=_step_arg())
    if call is None:
        return _apology()
    response = VoiceResponse()
    if request.form.get("DialCallStatus") in ("completed", "answered") or request.form.get("CallStatus") == "completed":
        response.hangup()  # talked, or the caller already left: nothing more to play
        return twiml(response)
    return twiml(_offer(get_db(), call))


def _step_arg():
    """The `step` our TwiML put in its callback URLs (see `step`), or None."""
    text = request.args.get("step", "")
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def step(db, call_id):
    """Which of a call's TwiML documents this is: the id of its newest event (each document is
    fetched by a webhook that is kept as an event first), put in that document's callback URLs."""
    return db.execute("SELECT coalesce(max(id), 0) FROM call_events WHERE call_id = ?", [call_id]).fetchone()[0]


def _offer(db, call):
    """TwiML that rings the agents who may take this call now, or queues the caller: behind anyone
    who has waited longer and is not being offered an agent right now (first come, first served)."""
    cfg = current_app.config
    response = VoiceResponse()
    if _ahead(db, call, cfg["INBOUND_RING_TIMEOUT"]):
        return _enqueue(response, db, call)
    at_once = cfg["INBOUND_RING_AT_ONCE"] if cfg["INBOUND_RING"] == "all" else 1
    tried = () if cfg["INBOUND_RING"] == "all" else _agents_tried(db, call["id"])
    agents = presence.available_agents(db, at_once, leaving_out=tried + _being_offered(db, cfg["INBOUND_RING_TIMEOUT"]))
    if not agents:
        return _enqueue(response, db, call)
    ring_agents(response, db, call, agents)
    return response


def _ahead(db, call, ring_timeout):
    """Callers waiting in the queue before this one who are not being offered an agent now."""
    mine = (call["queued_at"] or "~", call["id"])  # never queued: behind everyone queued
    expired = _ago(ring_timeout + OFFER_GRACE)
    return [c for c in waiting(db) if (c["queued_at"], c["id"]) < mine and not (c["offered_at"] and c["offered_at"] > expired)]


def ring_agents(response, db, call, agents):
    """<Dial> the agents' browsers at once: the caller hears ringing, the first to answer is bridged
    and recorded (both channels), each phone reports ringing, answered and its end."""
    cfg = current_app.config
    dial = response.dial(
        timeout=cfg["INBOUND_RING_TIMEOUT"], record=cfg["DIAL_RECORD"], answer_on_bridge=True,
        action=public_url("twiml.inbound_dialed", call=call["id"], step=step(db, call["id"])),
        recording_status_callback=public_url("twiml.recording", call=call["id"]))
    count, last = calls.earlier_calls(db, call["customer_number"], call["id"])
    known = "no earlier calls from this number" if not count else f"{count} earlier call{'s' if count > 1 else ''}" + (
        f", last: {last['disposition']}" if last and last["disposition"] else "")
    for agent in agents:
        client = dial.client(status_callback=public_url("twiml.status", call=call["id"], leg="agent", agent=agent["id"]),
                             status_callback_event="ringing answered completed")
        client.identity(agent["identity"])
        client.parameter(name="call_id", value=str(call["id"]))
        client.parameter(name="customer", value=numbers.display(call["customer_number"]))
        client.parameter(name="direction", value="inbound")
        client.parameter(name="known", value=known)
        client.parameter(name="since", value=call["created_at"])
        if last and (last["agent_id"] == agent["id"] or last["agent_id"] is None):  # a call this agent may open
            client.parameter(name="last_call", value=str(last["id"]))


def _agents_tried(db, call_id):
    """Agents whose phones this call already rang (one-at-a-time ringing moves on to the next)."""
    rows = db.execute("SELECT DISTINCT json_extract(params, '$.To') FROM call_events WHERE call_id = ? AND source = 'agent'",
                      [call_id]).fetchall()
    identities = [row[0].removeprefix("client:") for row in rows if row[0]]
    if not identities:
        return ()
    marks = ", ".join("?" * len(identities))
    return tuple(row[0] for row in db.execute(f"SELECT id FROM agents WHERE identity IN ({marks})", identities))


def _enqueue(response, db, call):
    cfg = current_app.config
    now = step(db, call["id"])
    response.enqueue(cfg["QUEUE_NAME"], action=public_url("twiml.queue_result", call=call["id"], step=now),
                     wait_url=public_url("twiml.queue_wait", call=call["id"], step=now), wait_url_method="POST")
    return response


@bp.route("/queue-wait", methods=["POST"])
def queue_wait():
    """The wait URL, requested while the caller waits (again whenever its TwiML runs out): their
    place, hold music, 1 for voicemail; after VOICEMAIL_AFTER seconds it leaves the queue for it."""
    cfg = current_app.config
    call = _apply("queue", step=_step_arg())
    response = VoiceResponse()
    if call is None or calls.is_terminal(call["status"]):
        response.leave()
        return twiml(response)
    if presence.available_agents(get_db(), 1):
        offer_soon()  # an agent became available while this caller was being queued
    values = params.read(request.form).values
    waited = values.get("QueueTime") or 0
    if waited >= cfg["VOICEMAIL_AFTER"]:
        response.leave()  # the <Enqueue> action then records a message
        return twiml(response)
    position = values.get("QueuePosition") or 1
    _say(response, cfg["QUEUE_MESSAGE"].format(position=position))
    gather = Gather(num_digits=1, action=public_url("twiml.queue_key", call=call["id"], step=_step_arg()), timeout=1)
    _say(gather, f"To leave a message instead, press {VOICEMAIL_KEY}.")
    gather.play(cfg["HOLD_MUSIC_URL"])
    response.append(gather)
    return twiml(response)


@bp.route("/queue-key", methods=["POST"])
def queue_key():
    """A key pressed while waiting: 1 leaves the queue for voicemail; any other key, back to waiting."""
    _apply("queue-key")
    response = VoiceResponse()
    if request.form.get("Digits") == VOICEMAIL_KEY:
        response.leave()
    return twiml(response)


@bp.route("/queue-result", methods=["POST"])
def queue_result():
    """The caller left the queue: bridged to an agent, hung up, or left it to record a message."""
    call = _apply("queue", step=_step_arg())
    response = VoiceResponse()
    result = request.form.get("QueueResult")
    if call is None:
        return _apology()
    if result in ("leave", "queue-full", "error", "system-error") and request.form.get("CallStatus") != "completed":
        return twiml(voicemail_twiml(response, call))
    return twiml(response)  # bridged, hung up or redirected: nothing to play


def voicemail_twiml(response, call):
    cfg = current_app.config
    _say(response, cfg["VOICEMAIL_MESSAGE"])
    response.record(action=public_url("twiml.voicemail", call=call["id"]), max_length=cfg["VOICEMAIL_MAX_LENGTH"],
                    play_beep=True, finish_on_key="#", timeout=5,
                    recording_status_callback=public_url("twiml.recording", call=call["id"], kind="voicemail"))
    _say(response, NO_MESSAGE)  # <Record> heard silence: the document goes on here
    response.hangup()
    return response


@bp.route("/voicemail", methods=["POST"])
def voicemail():
    """The message is recorded (its recording callback keeps it with the call): thank them, hang up."""
    call = _apply("record")
    response = VoiceResponse()
    if call is not None and request.form.get("Digits") != "hangup":
        _say(response, GOODBYE)
    response.hangup()
    return twiml(response)


# --- offering waiting callers to agents who become available --------------------------------

OFFER_GRACE = 10  # seconds past the ring timeout before an offer that got no answer is given up


def offer_soon(app=None):
    """Offer waiting callers to available agents, off the request (a REST call per offer)."""
    app = app or current_app._get_current_object()
    threading.Thread(target=offer_waiting_callers, args=(app,), name="dialer-offers", daemon=True).start()


def waiting(db):
    """Callers in the queue now, first come first (for the board too)."""
    return list(db.query(
        f"SELECT * FROM calls WHERE direction = 'inbound' AND agent_answered_at IS NULL AND handled_at IS NULL "
        f"AND waiting_since IS NOT NULL AND agent_id IS NULL "
        f"AND status NOT IN ({', '.join('?' * len(calls.TERMINAL))}) AND created_at > ? ORDER BY queued_at, id",
        [*calls.TERMINAL, _ago(calls.LONGEST_CALL.total_seconds())]))


def _ago(seconds):
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds)).isoformat(timespec="seconds")


def claim_offers(db, ring_timeout):
    """In one write: pair the longest-waiting unoffered callers with the longest-idle available
    agents not already being offered one; mark each pair; returns [(call, agent)]."""
    expired = _ago(ring_timeout + OFFER_GRACE)
    pairs = []
    with writing(db):
        callers = [c for c in waiting(db) if not c["offered_at"] or c["offered_at"] <= expired]
        if not callers:
            return []
        agents = presence.available_agents(db, len(callers), leaving_out=_being_offered(db, ring_timeout))
        for call, agent in zip(callers, agents):
            db.execute("UPDATE calls SET offered_to = ?, offered_at = ? WHERE id = ?", [agent["id"], utcnow(), call["id"]])
            pairs.append((call, agent))
    return pairs


def _being_offered(db, ring_timeout):
    """Agents a waiting caller is being offered to right now (their phone rings for them)."""
    return tuple(row[0] for row in db.execute(
        "SELECT offered_to FROM calls WHERE offered_at > ? AND agent_id IS NULL AND direction = 'inbound' "
        "AND offered_to IS NOT NULL", [_ago(ring_timeout + OFFER_GRACE)]).fetchall())


def _release(db, call_id):
    """An offer that came to nothing before any phone rang: the caller and the agent are free again."""
    with writing(db):
        db.execute("UPDATE calls SET offered_to = NULL, offered_at = NULL WHERE id = ?", [call_id])


def offer_waiting_callers(app):
    # A request context of our own public URL: url_for builds the offer's URL outside any request.
    with app.test_request_context(base_url=app.config["PUBLIC_BASE_URL"]):
        db = get_db()
        for call, agent in claim_offers(db, app.config["INBOUND_RING_TIMEOUT"]):
            try:
                telephony.redirect(call["customer_call_sid"], public_url("twiml.offer", call=call["id"], agent=agent["id"]))
            except telephony.TelephonyError as error:  # the caller left meanwhile: the offer is void
                app.logger.info("offering call %s to agent %s: %s", call["id"], agent["username"], error.message)
                _release(db, call["id"])


@bp.route("/offer", methods=["POST"])
def offer():
    """A waiting caller, taken out of the queue (REST redirect) for an agent who became available:
    ring that agent's phone; if they do not answer, /inbound-dialed offers the caller again or queues them."""
    call = _apply("offer")
    response = VoiceResponse()
    if call is None or calls.is_terminal(call["status"]):
        response.hangup()
        return twiml(response)
    db = get_db()
    agent_id = request.args.get("agent", "")
    agents = [a for a in presence.available_agents(db, 50) if str(a["id"]) == agent_id]
    if not agents:  # no longer available: back to the queue (first in line still), free for the next agent
        _release(db, call["id"])
        return twiml(_enqueue(response, db, call))
    ring_agents(response, db, call, agents)
    return twiml(response)
