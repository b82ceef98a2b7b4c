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


class Refused(Exception):
    """A webhook answered with a 4xx: its status code and the sentence that says why."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


def check_request(cfg, url, form, signature, remote_addr, logger):
    """Refuse (403) anything not signed by Twilio for exactly this URL and for our account."""
    if not signature or not _signed(cfg["TWILIO_AUTH_TOKEN"], url, form, signature):
        logger.warning("403: %s request to %s without a valid Twilio signature (from %s)",
                       "unsigned" if not signature else "wrongly signed", url, remote_addr)
        raise Refused(403, "This URL only answers requests signed by Twilio.")
    accounts = form.getlist("AccountSid") if hasattr(form, "getlist") else [form.get("AccountSid")]
    if accounts != [cfg["TWILIO_ACCOUNT_SID"]]:  # one, and ours (Twilio never sends a field twice)
        logger.warning("403: %s request for account %r, not ours", url, accounts[0] if len(accounts) == 1 else accounts)
        raise Refused(403, "This webhook is for another Twilio account (AccountSid).")


@bp.before_request
def check_signature():
    request.max_content_length = MAX_WEBHOOK_BYTES  # before the form is read
    cfg = current_app.config
    form = request.form if request.method == "POST" else {}
    try:
        check_request(cfg, cfg["PUBLIC_BASE_URL"] + request.full_path.rstrip("?"), form,
                      request.headers.get("X-Twilio-Signature", ""), request.remote_addr, current_app.logger)
    except Refused as refused:
        abort(refused.status, refused.message)


_validators = {}  # auth token -> its RequestValidator


def _signed(token, url, form, signature):
    """twilio's RequestValidator: one HMAC for the URL as Twilio reaches us; only a request that
    fails it pays for `validate`'s other spellings of the URL (with and without the port)."""
    validator = _validators.get(token) or _validators.setdefault(token, RequestValidator(token))
    expected = validator.compute_signature(url, form).encode()
    if hmac.compare_digest(expected, signature.encode("utf-8", "surrogateescape")):  # any header bytes
        return True
    return validator.validate(url, form, signature)


def twiml(response):
    return Response(str(response), mimetype="text/xml")


def read_callback(form, path, logger):
    """The webhook's fields, checked; a field that fails is logged by name and not used."""
    callback = params.read(form)
    if "CallSid" not in callback.values:
        why = callback.problems.get("CallSid", "is missing")
        logger.warning("400: %s: CallSid %s: %s", path, why, _brief(callback.raw))
        raise Refused(400, f"CallSid {why}.")
    if callback.problems:
        logger.warning("%s: ignored %s", path, "; ".join(
            f"{name} {why} (got {callback.raw[name][:80]!r})" for name, why in callback.problems.items()))
    return callback


def _brief(raw, chars=80, fields=30):
    """A webhook's fields for the log: each name and value cut at 80 characters, at most 30 of them
    (Twilio sends about 20; a log line stays readable whatever a sender puts in)."""
    cut = {name[:chars]: value[:chars] + ("…" if len(value) > chars else "") for name, value in list(raw.items())[:fields]}
    return cut if len(raw) <= fields else {**cut, "…": f"{len(raw) - fields} more fields"}


def apply_callback(db, source, requested, callback, path, logger, **options):
    """Apply a checked webhook to the call it names: `requested` (its ?call=), else the leg's CallSid.

    Returns the call (with `agent_identity`), or None when it names no call of ours (logged).
    """
    if _row_id(requested):
        try:
            return calls.apply_event(db, int(requested), source, callback, **options)[0]
        except calls.UnknownCall:
            pass  # a call id that is not ours: perhaps the CallSid is
    found = calls.call_by_sid(db, callback.get("CallSid"))
    if found:
        return calls.apply_event(db, found["id"], source, callback, **options)[0]
    logger.warning("%s callback for unknown call %r: %s", path, requested[:40], _brief(callback.raw))
    return None


def _read_callback():
    try:
        return read_callback(request.form, request.path, current_app.logger)
    except Refused as refused:
        abort(refused.status, refused.message)


def _apply(source, **options):
    """This request's webhook, checked and applied to its call (see `apply_callback`)."""
    callback = _read_callback()
    return apply_callback(get_db(), source, request.args.get("call", ""), callback, request.path,
                          current_app.logger, **options)


def _row_id(text):
    return text.isascii() and text.isdigit() and 0 < len(text) <= 18


def _say(response, text, cfg=None):
    cfg = cfg or current_app.config
    response.say(text, voice=cfg["SAY_VOICE"], language=cfg["SAY_LANGUAGE"])


def apology_twiml(cfg):
    response = VoiceResponse()
    _say(response, APOLOGY, cfg)
    response.hangup()
    return str(response)


def _apology():
    return Response(apology_twiml(current_app.config), mimetype="text/xml")


# --- the two busiest webhooks ------------------------------------------------------------------
# Every call brings one customer-to-agent request and four to seven status callbacks. They are
# answered by `webhooks.TwilioWebhooks` beneath Flask, which checks them with `check_request` and
# `read_callback` as above; these rules only give Flask their URLs (url_for, public_url).
bp.add_url_rule("/customer-to-agent", "customer_to_agent", methods=["POST"], build_only=True)
bp.add_url_rule("/status", "status", methods=["POST"], build_only=True)


def customer_to_agent(db, cfg, args, callback, template, logger):
    """The customer answered: hold message, then ring the browser of the agent who placed the call.

    Returns the TwiML text; `template` is `customer_to_agent_template()`'s.

    This request asks what to do; it reports nothing the status callbacks do not. The same moment
    comes as the `answered` callback every call requests (`telephony.STATUS_EVENTS`), which moves
    the call to in-progress and is kept durably as its event. So in the usual case, a live call
    whose CallSid the REST reply or a callback already gave, the answer is read from the call and
    nothing is written; nor for an ended call (nobody is rung). Otherwise the request is applied
    like a callback and kept as an event (the CallSid is news, or another leg's).
    """
    requested = args.get("call", "")
    known = calls.dial_target(db, int(requested)) if _row_id(requested) else None
    if known:
        status, call_sid, customer_number, identity = known
        if calls.is_terminal(status):
            return apology_twiml(cfg)  # ended: ring nobody, and the call's story stays as it ended
        if identity and call_sid and call_sid == callback.raw.get("CallSid"):
            return _dial(template, str(int(requested)), identity, customer_number)
    call = apply_callback(db, "twiml", requested, callback, "/twiml/customer-to-agent", logger)
    if (call is None or not call["agent_identity"] or calls.is_terminal(call["status"])
            or call["customer_call_sid"] != callback.raw.get("CallSid")):
        return apology_twiml(cfg)  # no such call, an ended one, or another leg's CallSid: ring nobody
    return _dial(template, str(call["id"]), call["agent_identity"], call["customer_number"])


def _dial(template, call_id, identity, customer_number):
    return (template.replace(_CALL, call_id).replace(_IDENTITY, escape(identity))
            .replace(_CUSTOMER, escape(customer_number, {'"': "&quot;"})))


def status(db, cfg, args, callback, logger):
    """Call progress callbacks of the customer's leg, or with ?leg=agent of the agent's <Client> leg.

    Returns True, or False when the callback names no call the dialer placed.
    """
    if args.get("leg") != "agent":
        return apply_callback(db, "status", args.get("call", ""), callback, "/twiml/status", logger) is not None
    # Which agent's phone this leg rang is in the URL our TwiML gave Twilio (signed with the rest).
    agent = args.get("agent", "")
    return apply_callback(db, "agent", args.get("call", ""), callback, "/twiml/status", logger,
                          agent=int(agent) if _row_id(agent) else None,
                          away_if_missed=cfg["AWAY_AFTER_MISSED_OFFER"]) is not None


# Stand-ins for the per-call values in the TwiML built once from the settings: random letters and
# digits, which no URL encoding changes and no setting text (a hold message) will contain.
_CALL, _IDENTITY, _CUSTOMER = (f"{name}{secrets.token_hex(8)}" for name in ("call", "identity", "customer"))


def customer_to_agent_template():
    """In a request context: the customer-to-agent TwiML with stand-ins, built by VoiceResponse once per app."""
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
    return template


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
        return Response(UNKNOWN_CALL, 404, mimetype="text/plain")
    return Response(status=204)


UNKNOWN_CALL = "Unknown call: this callback names no call the dialer placed.\n"


@bp.route("/recording", methods=["POST"])
def recording():
    """Recording status callbacks: the <Dial> recording, or with ?kind=voicemail a caller's message (<Record>)."""
    return _callback("voicemail" if request.args.get("kind") == "voicemail" else "recording")
