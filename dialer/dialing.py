"""The dialer page, placing a call, the live call panel, hang-up and the voice token."""
from flask import Blueprint, abort, current_app, jsonify, redirect, request, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import StringField

from . import calls, numbers, telephony
from .db import get_db
from .pages import render, wants_fragment

bp = Blueprint("dialing", __name__)


class CallForm(FlaskForm):
    to = StringField("Customer number")


def _page(form=None, call=None, status=200):
    return render("dialing/index.html", "dialer", status=status, form=form or CallForm(formdata=None), call=call)


@bp.route("/")
@login_required
def index():
    """The dialer: phone state, number field, and the current call (polled by htmx until it ends)."""
    call = None
    if request.args.get("call", "").isdigit():
        call = calls.call_for_agent(get_db(), int(request.args["call"]), current_user)
    if wants_fragment():
        return render("dialing/index.html", "call_area", call=call)
    return _page(call=call)


@bp.route("/calls", methods=["POST"])
@login_required
def place():
    """Validate the number, write the call, and ask Twilio to ring the customer."""
    form = CallForm()  # CSRF was checked before the view, by CSRFProtect
    cfg = current_app.config
    try:
        to = numbers.normalise(form.to.data, cfg["DEFAULT_REGION"], cfg["ALLOWED_COUNTRIES"])
    except numbers.InvalidNumber as error:
        form.to.errors = [str(error)]
        return _page(form, status=422)
    db = get_db()
    call = calls.create_call(db, current_user.id, to)
    try:
        sid = telephony.place_call(call["id"], to)
    except telephony.TelephonyError as error:
        current_app.logger.warning("call %s to %s refused: %s %s", call["id"], to, error.code, error.message)
        call, _ = calls.apply_event(db, call["id"], "app", {
            "status": "failed", "error_code": error.code, "error_message": error.sentence,
            "twilio_message": error.message})
    else:
        call, _ = calls.apply_event(db, call["id"], "app", {"status": "queued", "CallSid": sid, "action": "placed"})
    if not wants_fragment():
        return redirect(url_for("dialing.index", call=call["id"]), 303)
    return _page(call=call)


@bp.route("/calls/<int:call_id>/hangup", methods=["POST"])
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
    call = calls.get_call(db, call_id)
    if not wants_fragment():
        return redirect(url_for("dialing.index", call=call_id), 303)
    return render("dialing/index.html", "call_area", call=call, message=message)


@bp.route("/token")
@login_required
def token():
    """The signed-in agent's Voice access token."""
    jwt, ttl = telephony.voice_token(current_user.identity)
    response = jsonify(identity=current_user.identity, token=jwt, expires_in=ttl)
    response.headers["Cache-Control"] = "no-store"
    return response
