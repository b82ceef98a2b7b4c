"""The sandbox control page: live calls, the simulated customers' rules, an inbound test call."""
from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import login_required

from . import customers
from .carrier import Leg
from .credentials import sid as new_sid

bp = Blueprint("sandbox_control", __name__, url_prefix="/sandbox")


@bp.route("")
@login_required
def index():
    """What the carrier holds now."""
    carrier = current_app.extensions["sandbox"]
    with carrier.lock:
        legs = sorted(carrier.calls.values(), key=lambda c: c.date_created, reverse=True)[:50]
        devices = list(carrier.devices.values())
        notices = list(reversed(carrier.notifications[-20:]))
    return render_template("sandbox/control.html", legs=legs, devices=devices, notices=notices,
                           rules=customers.RULES, carrier=carrier,
                           answers_inbound="twiml.inbound" in current_app.view_functions)


@bp.route("/inbound", methods=["POST"])
@login_required
def inbound():
    """A simulated customer calls the Twilio number, whose voice URL is /twiml/inbound."""
    carrier = current_app.extensions["sandbox"]
    engine = current_app.extensions["sandbox_engine"]
    caller = (request.form.get("from") or "+442079460100").strip()
    leg = Leg(sid=new_sid("CA"), account_sid=carrier.account_sid, to=carrier.caller_id, from_=caller,
              direction="inbound")
    carrier.add(leg)
    engine.start(engine.run_inbound, leg, current_app.config["PUBLIC_BASE_URL"] + "/twiml/inbound")
    flash(f"{caller} is calling {carrier.caller_id} ({leg.sid}).")
    return redirect(url_for("sandbox_control.index"), 303)
