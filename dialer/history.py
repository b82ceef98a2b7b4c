"""Past calls: the history list, one call's page with its timeline, and its recording."""
from flask import Blueprint, Response, abort
from flask_login import current_user, login_required

from . import calls, telephony
from .db import get_db
from .pages import render

bp = Blueprint("history", __name__)


def _own_call_or_404(call_id):
    call = calls.call_for_agent(get_db(), call_id, current_user)
    if call is None:
        abort(404)  # another agent's call looks the same as no call at all
    return call


@bp.route("/history")
@login_required
def index():
    """The last 50 calls of this agent (of everyone, for a supervisor)."""
    rows = calls.recent_calls(get_db(), current_user, limit=50)
    return render("history/index.html", "calls_table", calls=rows)


@bp.route("/calls/<id:call_id>")
@login_required
def detail(call_id):
    """One call: status, timeline, recording, notes."""
    call = _own_call_or_404(call_id)
    return render("history/detail.html", "call_status", call=call, events=calls.events_for(get_db(), call_id))


@bp.route("/calls/<id:call_id>/recording.wav")
@login_required
def recording(call_id):
    """The call's recording, fetched from Twilio with the account's credentials."""
    call = _own_call_or_404(call_id)
    if not call["recording_sid"]:
        abort(404, "This call has no recording.")
    try:
        media = telephony.recording_media(call["recording_sid"])
    except telephony.TelephonyError as error:
        return Response(error.sentence, 404 if error.code == 404 else 502, mimetype="text/plain")
    return Response(media, mimetype="audio/wav", headers={"Cache-Control": "private, max-age=3600"})
