"""The sandbox's Twilio-shaped REST API and the browser device bridge (server-sent events)."""
import json
import queue
import time

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context, url_for

from . import wav
from .carrier import RestError, TokenError

bp = Blueprint("sandbox_api", __name__, url_prefix="/sandbox")
ACCOUNT = "/2010-04-01/Accounts/<account_sid>"
KEEPALIVE_SECONDS = 5


def carrier():
    return current_app.extensions["sandbox"]


def engine():
    return current_app.extensions["sandbox_engine"]


@bp.errorhandler(RestError)
def rest_error(error):
    return jsonify(error.body()), error.status


def authenticate(account_sid):
    auth = request.authorization
    carrier().check_account(account_sid, auth.username if auth else None, auth.password if auth else None)


@bp.route(ACCOUNT + "/Calls.json", methods=["POST"])
def create_call(account_sid):
    """CreateCall: 201 with the queued call, which then progresses on its own."""
    authenticate(account_sid)
    leg = carrier().create_call(request.form)
    engine().start(engine().run_outbound, leg)
    return jsonify(carrier().call_json(leg)), 201


@bp.route(ACCOUNT + "/Calls.json", methods=["GET"])
def list_calls(account_sid):
    """ListCall, one page (PageSize up to 1000)."""
    authenticate(account_sid)
    try:
        size = max(1, min(int(request.args.get("PageSize", 50)), 1000))
        page = max(0, int(request.args.get("Page", 0)))
    except ValueError:
        raise RestError(20001, "PageSize and Page must be whole numbers") from None
    legs = carrier().list_calls(request.args)
    chunk = legs[page * size:(page + 1) * size]
    uri = f"/2010-04-01/Accounts/{account_sid}/Calls.json"
    more = len(legs) > (page + 1) * size
    return jsonify({
        "calls": [carrier().call_json(leg) for leg in chunk], "page": page, "page_size": size,
        "start": page * size, "end": page * size + max(len(chunk) - 1, 0), "uri": f"{uri}?PageSize={size}&Page={page}",
        "first_page_uri": f"{uri}?PageSize={size}&Page=0",
        "next_page_uri": f"{uri}?PageSize={size}&Page={page + 1}" if more else None,
        "previous_page_uri": f"{uri}?PageSize={size}&Page={page - 1}" if page else None,
    })


@bp.route(ACCOUNT + "/Calls/<sid>.json", methods=["GET"])
def fetch_call(account_sid, sid):
    authenticate(account_sid)
    return jsonify(carrier().call_json(carrier().get_call(sid)))


@bp.route(ACCOUNT + "/Calls/<sid>.json", methods=["POST"])
def update_call(account_sid, sid):
    """UpdateCall: hang up with Status, or redirect with Url/Twiml."""
    authenticate(account_sid)
    return jsonify(carrier().call_json(carrier().update_call(sid, request.form)))


@bp.route(ACCOUNT + "/Calls/<sid>.json", methods=["DELETE"])
def delete_call(account_sid, sid):
    """DeleteCall: removes a finished call's record."""
    authenticate(account_sid)
    carrier().delete_call(sid)
    return "", 204


@bp.route(ACCOUNT + "/<path:rest>", methods=["GET", "POST", "DELETE"])
def unknown_resource(account_sid, rest):
    """Anything the sandbox does not offer answers as Twilio does for a missing resource."""
    authenticate(account_sid)
    raise RestError(20404, f"The requested resource /2010-04-01/Accounts/{account_sid}/{rest} was not found", 404)


@bp.route(ACCOUNT + "/Recordings/<sid>.json", methods=["GET"])
def fetch_recording(account_sid, sid):
    authenticate(account_sid)
    return jsonify(carrier().recording_json(carrier().get_recording(sid)))


@bp.route(ACCOUNT + "/Recordings/<sid>", methods=["GET"])
@bp.route(ACCOUNT + "/Recordings/<sid>.wav", methods=["GET"])
def recording_media(account_sid, sid):
    """The recording as WAV (Twilio's default media type)."""
    authenticate(account_sid)
    rec = carrier().get_recording(sid)
    # Made on each fetch from the length: kept in memory, a day of calls would cost ~32 KB a second.
    return Response(wav.make(rec.duration, rec.channels), mimetype="audio/x-wav")


# --- device bridge ------------------------------------------------------------------------

def token_error(error):
    return jsonify(code=error.code, message=error.message), 401


@bp.route("/devices", methods=["POST"])
def devices():
    """Register a browser with its access token, as Device.register() does."""
    body = request.get_json(silent=True) or {}
    try:
        device = carrier().register(body.get("token"))
    except TokenError as error:
        return token_error(error)
    return jsonify(device_id=device.id, identity=device.identity, expires_at=device.expires,
                   ttl=max(0, int(device.expires - time.time())),
                   events_url=url_for("sandbox_api.device_events", device_id=device.id)), 201


@bp.route("/devices/<device_id>", methods=["DELETE"])
def unregister(device_id):
    """Device.unregister() / destroy()."""
    if device_id not in carrier().devices:
        return jsonify(code=53000, message="This device is not registered."), 404
    carrier().unregister(device_id)
    return "", 204


@bp.route("/devices/<device_id>/token", methods=["POST"])
def update_token(device_id):
    """Device.updateToken(): a fresh token keeps the registration alive."""
    body = request.get_json(silent=True) or {}
    try:
        device = carrier().update_token(device_id, body.get("token"))
    except KeyError:
        return jsonify(code=53000, message="This device is not registered."), 404
    except TokenError as error:
        return token_error(error)
    return jsonify(ttl=max(0, int(device.expires - time.time())), expires_at=device.expires)


@bp.route("/devices/<device_id>/calls/<call_sid>/<action>", methods=["POST"])
def device_action(device_id, call_sid, action):
    """accept / reject / disconnect / digits from the browser."""
    if device_id not in carrier().devices:
        return jsonify(code=53000, message="This device is not registered."), 404
    if action not in ("accept", "reject", "disconnect", "digits"):
        return jsonify(code=31100, message=f"Unknown action {action}"), 400
    body = request.get_json(silent=True) or {}
    try:
        ok = carrier().device_action(device_id, call_sid, action, str(body.get("digits", "")))
    except KeyError:
        return jsonify(code=31404, message="No such call for this device."), 404
    if not ok:
        return jsonify(code=31008, message="The call was cancelled or answered elsewhere before it was accepted."), 409
    return jsonify(ok=True)


@bp.route("/devices/<device_id>/events")
def device_events(device_id):
    """Server-sent events for one registered browser: incoming, cancel, hangup, error."""
    device = carrier().devices.get(device_id)
    if device is None:
        return jsonify(code=53000, message="This device is not registered."), 404
    the_carrier = carrier()

    def stream():
        yield "retry: 2000\n\n"
        yield f"event: registered\ndata: {json.dumps({'identity': device.identity})}\n\n"
        try:
            while device.id in the_carrier.devices:
                if time.time() >= device.expires:
                    yield "event: error\ndata: " + json.dumps(
                        {"code": 20104, "message": "Access Token expired or expiration date invalid"}) + "\n\n"
                    break
                try:
                    item = device.events.get(timeout=min(KEEPALIVE_SECONDS, max(0.05, device.expires - time.time())))
                except queue.Empty:
                    yield ": keepalive\n\n"
                    continue
                if item is None:
                    break
                event, data = item
                yield f"event: {event}\ndata: {json.dumps(data)}\n\n"
        finally:
            the_carrier.unregister(device.id)

    return Response(stream_with_context(stream()), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
