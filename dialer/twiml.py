"""Twilio-facing webhooks: the call's TwiML and its status, dial and recording callbacks.

Signed with X-Twilio-Signature, never behind a login.
"""
import hmac
import secrets
from xml.sax.saxutils import escape

from flask import Blueprint, Response, abort, current_app, request
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import VoiceResponse

from . import calls, params
from .db import get_db
from .telephony import public_url

bp = Blueprint("twiml", __name__, url_prefix="/twiml")

APOLOGY = "Sorry, we could not connect this call. Goodbye."


MAX_WEBHOOK_BYTES = 64 * 1024  # Twilio's largest webhook is a few kilobytes


@bp.before_request
def check_signature():
    """Refuse (403) anything not signed by Twilio for exactly this URL and for our account."""
    cfg = current_app.config
    request.max_content_length = MAX_WEBHOOK_BYTES  # before the form is read
    url = cfg["PUBLIC_BASE_URL"] + request.full_path.rstrip("?")
    signature = request.headers.get("X-Twilio-Signature", "")
    form = request.form if request.method == "POST" else {}
    if not signature or not _signed(cfg, url, form, signature):
        current_app.logger.warning("403: %s request to %s without a valid Twilio signature (from %s)",
                                   "unsigned" if not signature else "wrongly signed", url, request.remote_addr)
        abort(403, "This URL only answers requests signed by Twilio.")
    if form.get("AccountSid") != cfg["TWILIO_ACCOUNT_SID"]:
        current_app.logger.warning("403: %s request for account %r, not ours", url, form.get("AccountSid"))
        abort(403, "This webhook is for another Twilio account (AccountSid).")


def _signed(cfg, url, form, signature):
    """twilio's RequestValidator: one HMAC for the URL as Twilio reaches us; only a request that
    fails it pays for `validate`'s other spellings of the URL (with and without the port)."""
    validators = current_app.extensions.setdefault("twilio_validators", {})
    token = cfg["TWILIO_AUTH_TOKEN"]
    validator = validators.get(token) or validators.setdefault(token, RequestValidator(token))
    expected = validator.compute_signature(url, form).encode()
    if hmac.compare_digest(expected, signature.encode("utf-8", "surrogateescape")):  # any header bytes
        return True
    return validator.validate(url, form, signature)


def twiml(response):
    return Response(str(response), mimetype="text/xml")


def _read_callback():
    """The webhook's fields, checked; a field that fails is logged by name and not used."""
    callback = params.read(request.form)
    if "CallSid" not in callback.values:
        why = callback.problems.get("CallSid", "is missing")
        current_app.logger.warning("400: %s: CallSid %s: %s", request.path, why, callback.raw)
        abort(400, f"CallSid {why}.")
    if callback.problems:
        current_app.logger.warning("%s: ignored %s", request.path, "; ".join(
            f"{name} {why} (got {callback.raw[name][:80]!r})" for name, why in callback.problems.items()))
    return callback


def _apply(source, **options):
    """Check the webhook and apply it to the call it names: ?call=, else the leg's CallSid.

    Returns the call (with `agent_identity`), or None when it names no call of ours (logged).
    """
    db = get_db()
    callback = _read_callback()
    requested = request.args.get("call", "")
    if _row_id(requested):
        try:
            return calls.apply_event(db, int(requested), source, callback, **options)[0]
        except calls.UnknownCall:
            pass  # a call id that is not ours: perhaps the CallSid is
    found = calls.call_by_sid(db, callback.get("CallSid"))
    if found:
        return calls.apply_event(db, found["id"], source, callback, **options)[0]
    current_app.logger.warning("%s callback for unknown call %r: %s", request.path, requested[:40], callback.raw)
    return None


def _row_id(text):
    return text.isascii() and text.isdigit() and 0 < len(text) <= 18


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
    call = _apply("twiml")
    if (call is None or not call["agent_identity"] or calls.is_terminal(call["status"])
            or call["customer_call_sid"] != request.form.get("CallSid")):
        return _apology()  # no such call, an ended one, or another leg's CallSid: ring nobody
    return Response(_customer_to_agent_twiml(call), mimetype="text/xml")


# Stand-ins for the per-call values in the TwiML built once from the settings: random letters and
# digits, which no URL encoding changes and no setting text (a hold message) will contain.
_CALL, _IDENTITY, _CUSTOMER = (f"{name}{secrets.token_hex(8)}" for name in ("call", "identity", "customer"))


def _customer_to_agent_twiml(call):
    """The TwiML of one call: VoiceResponse builds it once per app; each call fills in its values."""
    template = current_app.extensions.get("customer_to_agent_twiml")
    if template is None:
        cfg = current_app.config
        response = VoiceResponse()
        _say(response, cfg["HOLD_MESSAGE"])
        dial = response.dial(
            timeout=cfg["DIAL_TIMEOUT"], record=cfg["DIAL_RECORD"], answer_on_bridge=cfg["ANSWER_ON_BRIDGE"],
            action=public_url("twiml.dial_result", call=_CALL),
            recording_status_callback=public_url("twiml.recording", call=_CALL),
        )
        # The agent's leg reports ringing and answered too: the panel tells "waiting for you" from "talking".
        client = dial.client(status_callback=public_url("twiml.status", call=_CALL, leg="agent"),
                             status_callback_event="ringing answered completed")
        client.identity(_IDENTITY)
        client.parameter(name="call_id", value=_CALL)
        client.parameter(name="customer", value=_CUSTOMER)
        template = str(response)
        current_app.extensions["customer_to_agent_twiml"] = template
    return (template.replace(_CALL, str(call["id"]))
            .replace(_IDENTITY, escape(call["agent_identity"]))
            .replace(_CUSTOMER, escape(call["customer_number"], {'"': "&quot;"})))


@bp.route("/dial-result", methods=["POST"])
def dial_result():
    """The agent's leg ended: apologise only if no agent ever took the call."""
    if _apply("dial-result") is None:
        return _apology()
    response = VoiceResponse()
    if request.form.get("DialCallStatus") in calls.FALLBACK_DIAL_RESULTS:
        _say(response, current_app.config["FALLBACK_MESSAGE"])
    response.hangup()
    return twiml(response)


def _callback(source, **options):
    if _apply(source, **options) is None:
        return Response("Unknown call: this callback names no call the dialer placed.\n", 404, mimetype="text/plain")
    return Response(status=204)


@bp.route("/status", methods=["POST"])
def status():
    """Call progress callbacks of the customer's leg, or with ?leg=agent of the agent's <Client> leg."""
    if request.args.get("leg") != "agent":
        return _callback("status")
    # Which agent's phone this leg rang is in the URL our TwiML gave Twilio (signed with the rest).
    agent = request.args.get("agent", "")
    return _callback("agent", agent=int(agent) if _row_id(agent) else None,
                     away_if_missed=current_app.config["AWAY_AFTER_MISSED_OFFER"])


@bp.route("/recording", methods=["POST"])
def recording():
    """Recording status callbacks: the <Dial> recording, or with ?kind=voicemail a caller's message (<Record>)."""
    return _callback("voicemail" if request.args.get("kind") == "voicemail" else "recording")
