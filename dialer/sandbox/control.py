"""The sandbox control page: live calls and queues, the simulated parties' rules, "a customer calls in"."""
import re

from flask import Blueprint, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from .. import csrf
from ..db import get_db
from . import callers, customers
from .carrier import Leg, RestError
from .credentials import sid as new_sid

bp = Blueprint("sandbox_control", __name__, url_prefix="/sandbox")
CALLER = re.compile(r"\+?[0-9]{3,15}|anonymous|restricted|unknown|unavailable", re.I)  # TWILIO.md 9.7
DEFAULT_CALLER = "+442079460100"


@bp.route("")
@login_required
def index():
    """What the carrier holds now."""
    carrier = current_app.extensions["sandbox"]
    engine = current_app.extensions["sandbox_engine"]
    with carrier.lock:
        legs = sorted(carrier.calls.values(), key=lambda c: c.date_created, reverse=True)[:50]
        devices = list(carrier.devices.values())
        notices = list(reversed(carrier.notifications[-20:]))
        queues = [engine.queues.queue_json(q) for q in engine.queues.by_name.values()]
    if not current_user.is_supervisor:
        legs, devices, notices = _agents_own(legs, devices, notices)
    return render_template("sandbox/control.html", legs=legs, devices=devices, notices=notices, queues=queues,
                           rules=customers.RULES, caller_rules=callers.RULES, carrier=carrier,
                           answers_inbound="twiml.inbound" in current_app.view_functions)


def _agents_own(legs, devices, notices):
    """What an agent may see of the carrier, as in the dialer: the legs of their own calls and of
    callers nobody has taken yet, their own phone's legs and browsers. No agent sees another's calls."""
    sids = [leg.sid for leg in legs]
    marks = ", ".join("?" * len(sids))
    owners = {}  # leg SID -> the agent whose call it is (None: a caller nobody has taken yet)
    for customer, agent_leg, agent_id in get_db().execute(
            f"SELECT customer_call_sid, agent_call_sid, agent_id FROM calls "
            f"WHERE customer_call_sid IN ({marks}) OR agent_call_sid IN ({marks})", sids * 2):
        owners.update({sid: agent_id for sid in (customer, agent_leg) if sid})
    phone = f"client:{current_user.identity}"

    def theirs(leg):
        if phone in (leg.to, leg.from_):
            return True
        if leg.to.startswith("client:") or leg.from_.startswith("client:"):
            return False  # another agent's phone
        owner = owners.get(leg.sid, owners.get(leg.parent_sid, False))
        return owner is None or owner == current_user.id

    legs = [leg for leg in legs if theirs(leg)]
    shown = {leg.sid for leg in legs}
    return (legs, [device for device in devices if device.identity == current_user.identity],
            [notice for notice in notices if notice["call_sid"] in shown])


@bp.route("/inbound", methods=["POST"])
@login_required
def inbound():
    """The page's "a customer calls in": rings the Twilio number from the number typed."""
    caller = (request.form.get("from") or DEFAULT_CALLER).strip()
    try:
        leg = call_in(caller)
    except RestError as error:
        flash(error.message)
    else:
        flash(f"{caller} is calling {leg.to} ({leg.sid}): {callers.behaviour(caller).description}")
    return redirect(url_for("sandbox_control.index"), 303)


@bp.route("/test/inbound", methods=["POST"])
@csrf.exempt
def test_inbound():
    """For tests and scripts: {"from", "to"?} -> 201 {"call_sid", …}; the sandbox account's basic auth."""
    carrier = current_app.extensions["sandbox"]
    auth = request.authorization
    body = request.get_json(silent=True) or request.form
    try:
        carrier.check_account(carrier.account_sid, auth.username if auth else None, auth.password if auth else None)
        leg = call_in(str(body.get("from") or DEFAULT_CALLER).strip(), body.get("to"))
    except RestError as error:
        return jsonify(error.body()), error.status
    return jsonify(call_sid=leg.sid, account_sid=leg.account_sid, to=leg.to, **{"from": leg.from_},
                   status_callback=leg.status_callback, behaviour=callers.behaviour(leg.from_).description), 201


def call_in(caller, to=None):
    """Start an inbound leg from `caller` to one of the account's numbers (the caller ID by default)."""
    carrier = current_app.extensions["sandbox"]
    engine = current_app.extensions["sandbox_engine"]
    if not CALLER.fullmatch(caller):
        raise RestError(21212, f"'{caller}' is not a caller a phone network would present: give a number such as "
                               f"{DEFAULT_CALLER}, or anonymous.")
    to = (to or carrier.caller_id).strip()
    voice = number_settings(to)
    if voice is None:
        raise RestError(21211, f"{to} is not a phone number of the sandbox account "
                               f"(its number is {carrier.caller_id}).", 404)
    if not voice["voice_url"]:
        raise RestError(21205, f"{to} has no voice URL: set one on the number (IncomingPhoneNumbers) first.")
    leg = Leg(sid=new_sid("CA"), account_sid=carrier.account_sid, to=to, from_=caller, direction="inbound",
              method=voice["voice_method"], fallback_url=voice["voice_fallback_url"],
              status_callback=voice["status_callback"], status_callback_method=voice["status_callback_method"],
              status_events=("completed",))  # a number's status callback is sent when the call ends
    carrier.add(leg)
    engine.start(engine.run_inbound, leg, voice["voice_url"], voice["voice_method"])
    return leg


def number_settings(phone_number):
    """Where an inbound call to one of the account's numbers goes: the number's (or its TwiML App's) URLs."""
    base = current_app.config["PUBLIC_BASE_URL"]
    account = current_app.extensions.get("sandbox_account")
    if account is None:  # no IncomingPhoneNumbers resource: the caller ID, set up as `flask twilio setup` does
        if phone_number != current_app.extensions["sandbox"].caller_id:
            return None
        number = {"voice_url": base + "/twiml/inbound", "voice_method": "POST", "voice_fallback_url": None,
                  "status_callback": None, "status_callback_method": "POST", "voice_application_sid": None}
    else:
        number = next((n for n in account.numbers({}) if n["phone_number"] == phone_number), None)
        if number is None:
            return None
    source = number
    if number.get("voice_application_sid"):  # Twilio: a TwiML App on the number takes over its voice URLs
        try:
            source = account.application(number["voice_application_sid"])
        except RestError:
            source = number
    settings = {name: source.get(name) for name in ("voice_url", "voice_fallback_url", "status_callback")}
    settings["voice_method"] = (source.get("voice_method") or "POST").upper()
    settings["status_callback_method"] = (source.get("status_callback_method") or "POST").upper()
    # The sandbox's own number is made with a voice URL but no StatusCallback (account.py); `flask twilio
    # setup` gives a real number PUBLIC_BASE_URL/twiml/status (golive.py), so the sandbox number behaves so.
    if not settings["status_callback"] and phone_number == current_app.extensions["sandbox"].caller_id:
        settings["status_callback"] = base + "/twiml/status"
    return settings
