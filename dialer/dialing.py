"""The dialer page, placing a call, the live call panel, hang-up and the voice token."""
import secrets
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, current_app, jsonify, redirect, request, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from markupsafe import escape
from wtforms import HiddenField, StringField
from wtforms.validators import Length, Optional

from . import audit, calls, filters, numbers, presence, telephony
from .db import get_db, writing
from .pages import render, wants_fragment

bp = Blueprint("dialing", __name__)


class CallForm(FlaskForm):
    to = StringField("Customer number")
    # One key per rendering of the form: every post of it (a double click, a retry) is one call.
    attempt = HiddenField(default=lambda: secrets.token_urlsafe(16), validators=[Optional(), Length(max=64)])
    # Set by a "Call back" button: the missed call in this call returns (marked handled once placed).
    callback_of = HiddenField(validators=[Optional(), Length(max=20)])


def _page(form=None, call=None, status=200, recent=None):
    db = get_db()
    full = not wants_fragment()
    return render("dialing/index.html", "dialer", status=status, form=form or CallForm(formdata=None), call=call,
                  agent=presence.agent_state(db, current_user.id),
                  recent=recent or calls.todays_ended_calls(db, current_user.id, ZoneInfo(current_app.config["TIME_ZONE"]))
                  if full else [],
                  missed=calls.to_call_back(db) if full else [])


@bp.route("/")
@login_required
def index():
    """The dialer: phone state, number field, and the current call (polled by htmx until it ends)."""
    db = get_db()
    call = None
    requested = request.args.get("call", "")
    if requested:
        known = requested.isascii() and requested.isdigit() and len(requested) <= 18
        call = calls.call_for_agent(db, int(requested), current_user) if known else None
    elif not wants_fragment():
        call = calls.live_call(db, current_user.id)  # back on the dialer mid-call: the call is still there
    if wants_fragment():
        return render("dialing/index.html", "call_area", call=call)
    return _page(call=call)


@bp.route("/calls", methods=["POST"])
@login_required
def place():
    """Validate the number, write the call (within the agent's rate limit), and ask Twilio to ring the customer."""
    form = CallForm()  # CSRF was checked before the view, by CSRFProtect
    cfg = current_app.config
    try:
        customer = numbers.normalise(form.to.data, cfg["DEFAULT_REGION"], cfg["ALLOWED_COUNTRIES"],
                                     cfg["BLOCKED_NUMBER_TYPES"])
    except numbers.InvalidNumber as error:
        form.to.errors = [str(error)]
        return _page(form, status=422)
    db = get_db()
    limit = cfg["CALLS_PER_MINUTE"]
    # Check and insert in one write transaction: of a burst of posts (double clicks, a script),
    # each sees the calls the ones before it wrote, so only one gets through.
    attempt = (form.attempt.data or "")[:64] or None
    missed_id = form.callback_of.data or ""
    with writing(db):
        # The same submit again (a double click, a retried post): the call it placed, not a new one.
        earlier = attempt and calls.call_by_attempt(db, current_user.id, attempt)
        missed = missed_id.isdigit() and len(missed_id) <= 18 and calls.missed_to_call_back(db, int(missed_id))
        handled = not earlier and missed and missed["handled_at"] and missed
        live = not earlier and not handled and calls.live_call(db, current_user.id)
        wait = not earlier and not handled and not live and calls.seconds_until_next_call(db, current_user.id, limit)
        if not (earlier or handled or live or wait):
            call = calls.create_call(db, current_user.id, customer.number, extension=customer.extension,
                                     attempt_key=attempt)
            if missed:
                calls.mark_called_back(db, missed["id"], call["id"], current_user.username)
    if earlier:
        return _placed(earlier)
    if handled:
        form.to.errors = [f"{handled['handled_by']} already called {numbers.display(handled['customer_number'])} back "
                          f"at {filters.local(handled['handled_at'])}."]
        return _page(form, status=409)
    if live:
        form.to.errors = [f"You are already on a call with {numbers.display(live['customer_number'])} "
                          f"({calls.status_label(live['status'])}). End it before you call someone else."]
        return _page(form, call=live, status=409)
    if wait:
        current_app.logger.warning("agent %s hit the limit of %d calls a minute", current_user.username, limit)
        form.to.errors = [f"You have placed {limit} call{'s' if limit != 1 else ''} in the last minute, the most "
                          f"the dialer allows. Wait {wait} second{'s' if wait != 1 else ''} before the next call."]
        response = _page(form, status=429)
        response.headers["Retry-After"] = str(wait)
        return response
    digits = numbers.send_digits(customer.extension)
    try:
        sid = telephony.place_call(call["id"], customer.number, digits)
    except telephony.TelephonyError as error:
        current_app.logger.warning("call %s to %s refused: %s %s", call["id"], customer.number, error.code, error.message)
        call, _ = calls.apply_event(db, call["id"], "app", {
            "status": "failed", "error_code": error.code, "error_message": error.sentence,
            "twilio_message": error.message})
    else:
        placed = {"status": "queued", "CallSid": sid, "action": "placed"}
        if digits:
            placed["SendDigits"] = digits
        call, _ = calls.apply_event(db, call["id"], "app", placed)
    return _placed(call)


def _placed(call):
    """After a call is placed: the dialer showing it (a fresh form, so a new submit is a new call)."""
    if not wants_fragment():
        return redirect(url_for("dialing.index", call=call["id"]), 303)
    return _page(call=call)


@bp.route("/calls/<id:call_id>/hangup", methods=["POST"])
@login_required
def hangup(call_id):
    """End a live call."""
    db = get_db()
    call = calls.call_for_agent(db, call_id, current_user)
    if call is None:
        abort(404)
    message = None
    if calls.is_terminal(call["status"]):
        message = "That call has already ended."
    elif not call["customer_call_sid"]:
        message = "Twilio has not started that call yet; try again in a second."
    else:
        try:
            telephony.hang_up(call["customer_call_sid"])
        except telephony.TelephonyError as error:
            message = error.sentence
        else:
            calls.record_event(db, call_id, "app", {"action": "hangup", "by": current_user.username},
                               status="hangup-requested")
            if call["agent_id"] != current_user.id:  # a supervisor ended another agent's call
                audit.record_call_ended_for_agent(db, call, current_user, request.remote_addr)
    if not wants_fragment():
        return redirect(url_for("dialing.index", call=call_id), 303)
    # The call's panel and board row change through the event stream (one writer, no race with a
    # response); a request refused is said where the page shows messages.
    if message:
        return (f'<p class="flash error" role="alert">{escape(message)}</p>', 409,
                {"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"})
    return "", 204


@bp.route("/token")
@login_required
def token():
    """The signed-in agent's Voice access token."""
    jwt, ttl = telephony.voice_token(current_user.identity)
    response = jsonify(identity=current_user.identity, token=jwt, expires_in=ttl)
    response.headers["Cache-Control"] = "no-store"
    return response
