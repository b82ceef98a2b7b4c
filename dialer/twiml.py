"""Twilio-facing webhooks: the call's TwiML and its status, dial and recording callbacks.

Signed with X-Twilio-Signature, never behind a login.
"""
from flask import Blueprint, Response, abort, current_app, request
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import VoiceResponse

from . import calls
from .auth import agent_by_id
from .db import get_db
from .telephony import public_url

bp = Blueprint("twiml", __name__, url_prefix="/twiml")

APOLOGY = "Sorry, we could not connect this call. Goodbye."


@bp.before_request
def check_signature():
    """Refuse (403) anything not signed by Twilio for exactly this URL."""
    cfg = current_app.config
    url = cfg["PUBLIC_BASE_URL"] + request.full_path.rstrip("?")
    signature = request.headers.get("X-Twilio-Signature", "")
    params = request.form if request.method == "POST" else {}
    if not signature or not RequestValidator(cfg["TWILIO_AUTH_TOKEN"]).validate(url, params, signature):
        current_app.logger.warning("403: %s request to %s without a valid Twilio signature (from %s)",
                                   "unsigned" if not signature else "wrongly signed", url, request.remote_addr)
        abort(403, "This URL only answers requests signed by Twilio.")


def twiml(response):
    return Response(str(response), mimetype="text/xml")


def _find_call(db):
    """The call named by ?call=, else by the leg's CallSid; None if neither is known."""
    call_id = request.args.get("call", "")
    call = calls.get_call(db, int(call_id)) if call_id.isdigit() else None
    if call is None and request.form.get("CallSid"):
        rows = list(db["calls"].rows_where("customer_call_sid = ?", [request.form["CallSid"]], limit=1))
        call = rows[0] if rows else None
    if call is None:
        current_app.logger.warning("%s callback for unknown call %r: %s", request.path, call_id,
                                   request.form.to_dict(flat=False))
    return call


def _say(response, text):
    cfg = current_app.config
    response.say(text, voice=cfg["SAY_VOICE"], language=cfg["SAY_LANGUAGE"])


def _apology():
    response = VoiceResponse()
    _say(response, APOLOGY)
    response.hangup()
    return twiml(response)


@bp.route("/customer-to-agent", methods=["POST"])
def customer_to_agent():
    """The customer answered: hold message, then ring the browser of the agent who placed the call."""
    db = get_db()
    call = _find_call(db)
    if call is None:
        return _apology()
    calls.apply_event(db, call["id"], "twiml", request.form)
    agent = agent_by_id(db, call["agent_id"])
    cfg = current_app.config
    response = VoiceResponse()
    _say(response, cfg["HOLD_MESSAGE"])
    dial = response.dial(
        timeout=cfg["DIAL_TIMEOUT"], record=cfg["DIAL_RECORD"], answer_on_bridge=cfg["ANSWER_ON_BRIDGE"],
        action=public_url("twiml.dial_result", call=call["id"]),
        recording_status_callback=public_url("twiml.recording", call=call["id"]),
    )
    client = dial.client()
    client.identity(agent["identity"])
    client.parameter(name="call_id", value=str(call["id"]))
    client.parameter(name="customer", value=call["customer_number"])
    return twiml(response)


@bp.route("/dial-result", methods=["POST"])
def dial_result():
    """The agent's leg ended: apologise only if no agent ever took the call."""
    db = get_db()
    call = _find_call(db)
    if call is None:
        return _apology()
    calls.apply_event(db, call["id"], "dial-result", request.form)
    response = VoiceResponse()
    if request.form.get("DialCallStatus") in calls.FALLBACK_DIAL_RESULTS:
        _say(response, current_app.config["FALLBACK_MESSAGE"])
    response.hangup()
    return twiml(response)


def _callback(source):
    db = get_db()
    call = _find_call(db)
    if call is None:
        return Response("Unknown call: this callback names no call the dialer placed.\n", 404, mimetype="text/plain")
    calls.apply_event(db, call["id"], source, request.form)
    return Response(status=204)


@bp.route("/status", methods=["POST"])
def status():
    """Call progress callbacks of the customer's leg."""
    return _callback("status")


@bp.route("/recording", methods=["POST"])
def recording():
    """Recording status callbacks of the <Dial> recording."""
    return _callback("recording")
