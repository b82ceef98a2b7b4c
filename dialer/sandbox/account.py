"""The sandbox account's own REST resources: the Account, its phone number, TwiML Apps and API keys.

What `flask twilio setup` and `twilio check` read and change, shaped as Twilio's 2010 API answers
(tests/data/twilio_account_schemas.json). Kept in the instance folder (sandbox-account.json, mode
600: it holds key secrets) so a key made by a rehearsal outlives a restart of the sandbox.
"""
import json
import os
import re
import secrets
import threading
from urllib.parse import urlencode

from flask import Blueprint, current_app, jsonify, request

from .carrier import RestError, formatted, rfc2822, utc
from .credentials import sid as new_sid

bp = Blueprint("sandbox_account", __name__, url_prefix="/sandbox/2010-04-01/Accounts")
FILE = "sandbox-account.json"
API = "/2010-04-01/Accounts"
SANDBOX_KEY_NAME = "Sandbox"  # the friendly name of the key the sandbox made for itself


# --- parameters, checked as Twilio checks them ------------------------------------------------

def _url(name, value):
    if value == "":
        return None  # Twilio clears a URL given as an empty string
    if not re.match(r"^https?://[^/\s]+", value):
        raise RestError(21402, f"{name} is not a valid URL: {value}")
    return value


def _method(name, value):
    if value.upper() not in ("GET", "POST"):
        raise RestError(21403, f"{name} must be GET or POST, not {value}")
    return value.upper()


def _boolean(name, value):
    if value.lower() not in ("true", "false"):
        raise RestError(20001, f"{name} must be true or false, not {value}")
    return value.lower() == "true"


def _text(name, value):
    if len(value) > 64:
        raise RestError(20001, f"{name} must be at most 64 characters")
    return value


def _one_of(*choices):
    def check(name, value):
        if value not in choices:
            raise RestError(20001, f"{name} must be {' or '.join(choices)}, not {value}")
        return value
    return check


_api_version, _receive_mode = _one_of("2010-04-01", "2008-08-01"), _one_of("voice", "fax")


VOICE_FIELDS = {
    "FriendlyName": ("friendly_name", _text), "ApiVersion": ("api_version", _api_version),
    "VoiceUrl": ("voice_url", _url), "VoiceMethod": ("voice_method", _method),
    "VoiceFallbackUrl": ("voice_fallback_url", _url), "VoiceFallbackMethod": ("voice_fallback_method", _method),
    "StatusCallback": ("status_callback", _url), "StatusCallbackMethod": ("status_callback_method", _method),
    "VoiceCallerIdLookup": ("voice_caller_id_lookup", _boolean),
    "SmsUrl": ("sms_url", _url), "SmsMethod": ("sms_method", _method),
    "SmsFallbackUrl": ("sms_fallback_url", _url), "SmsFallbackMethod": ("sms_fallback_method", _method),
}
NUMBER_FIELDS = {**VOICE_FIELDS, "VoiceReceiveMode": ("voice_receive_mode", _receive_mode)}
APPLICATION_FIELDS = {
    **VOICE_FIELDS, "SmsStatusCallback": ("sms_status_callback", _url),
    "MessageStatusCallback": ("message_status_callback", _url),
    "PublicApplicationConnectEnabled": ("public_application_connect_enabled", _boolean),
}


def _changes(form, fields):
    """The resource fields a create/update form sets, each value checked."""
    return {field: check(name, form[name]) for name, (field, check) in fields.items() if name in form}


# --- the account's state ------------------------------------------------------------------------

class Account:
    """The sandbox account's numbers, applications and keys, saved to a file on every change."""

    def __init__(self, instance_path, carrier, config):
        self.path = os.path.join(instance_path, FILE)
        self.carrier = carrier
        self.sid = carrier.account_sid
        self.lock = threading.RLock()
        state = {}
        if os.path.exists(self.path):
            with open(self.path) as f:
                state = json.load(f)
        if state.get("sid") != self.sid:
            state = {"sid": self.sid, "date_created": rfc2822(utc()), "numbers": {}, "applications": {}, "keys": {}}
        self.state = state
        self._seed(config)
        carrier.keys = {sid: key["secret"] for sid, key in state["keys"].items()}

    def _seed(self, config):
        """The account owns the caller ID and has the key and TwiML App the sandbox made for itself."""
        now = rfc2822(utc())
        if not any(n["phone_number"] == self.carrier.caller_id for n in self.state["numbers"].values()):
            number = self._new_number(self.carrier.caller_id, now)
            number["voice_url"] = config["PUBLIC_BASE_URL"] + "/twiml/inbound"  # where the control page's inbound call goes
            self.state["numbers"][number["sid"]] = number
        app_sid = config["TWILIO_TWIML_APP_SID"]
        if app_sid and app_sid not in self.state["applications"]:
            app = self._new_application(app_sid, now)
            app.update(friendly_name=SANDBOX_KEY_NAME, voice_url=config["PUBLIC_BASE_URL"] + "/twiml/outbound")
            self.state["applications"][app_sid] = app
        self.state["keys"].pop(self.carrier.api_key_sid, None)  # served from the carrier's own settings
        self.save()

    def save(self):
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.state, f, indent=1)
        os.replace(tmp, self.path)

    def uri(self, *parts):
        return "/".join((API, self.sid, *parts)) + ".json"

    # --- account -------------------------------------------------------------------------------
    def account_json(self):
        names = {"calls": "Calls", "incoming_phone_numbers": "IncomingPhoneNumbers",
                 "applications": "Applications", "keys": "Keys", "recordings": "Recordings"}
        return {
            "auth_token": self.carrier.auth_token, "date_created": self.state["date_created"],
            "date_updated": self.state["date_created"], "friendly_name": "Dialer sandbox",
            "owner_account_sid": self.sid, "sid": self.sid, "status": "active",
            "subresource_uris": {name: self.uri(title) for name, title in names.items()},
            "type": "Full", "uri": f"{API}/{self.sid}.json",
        }

    # --- numbers -------------------------------------------------------------------------------
    def _new_number(self, phone_number, now):
        sid = new_sid("PN")
        return {
            "account_sid": self.sid, "address_sid": None, "address_requirements": "none", "api_version": "2010-04-01",
            "beta": False, "capabilities": {"mms": False, "sms": False, "voice": True, "fax": False},
            "date_created": now, "date_updated": now, "friendly_name": formatted(phone_number),
            "identity_sid": None, "phone_number": phone_number, "origin": "twilio", "sid": sid,
            "sms_application_sid": None, "sms_fallback_method": "POST", "sms_fallback_url": None,
            "sms_method": "POST", "sms_url": None, "status_callback": None, "status_callback_method": "POST",
            "trunk_sid": None, "uri": self.uri("IncomingPhoneNumbers", sid), "voice_receive_mode": "voice",
            "voice_application_sid": None, "voice_caller_id_lookup": False, "voice_fallback_method": "POST",
            "voice_fallback_url": None, "voice_method": "POST", "voice_url": None,
            "emergency_status": "Inactive", "emergency_address_sid": None, "emergency_address_status": "unregistered",
            "bundle_sid": None, "status": "in-use", "type": "local",
        }

    def numbers(self, args):
        with self.lock:
            found = sorted(self.state["numbers"].values(), key=lambda n: n["phone_number"])
        pattern = args.get("PhoneNumber", "").strip()
        if pattern:  # Twilio matches part of the number; * stands for any one digit
            regex = re.compile("".join(r"\d" if c == "*" else re.escape(c) for c in pattern))
            found = [n for n in found if regex.search(n["phone_number"])]
        if args.get("FriendlyName"):
            found = [n for n in found if n["friendly_name"] == args["FriendlyName"]]
        return found

    def number(self, sid):
        return self._get("numbers", "IncomingPhoneNumbers", sid)

    def update_number(self, sid, form):
        changes = _changes(form, NUMBER_FIELDS)
        for name, field in (("VoiceApplicationSid", "voice_application_sid"), ("SmsApplicationSid", "sms_application_sid")):
            if name in form:
                changes[field] = self._application_sid(name, form[name])
        if "TrunkSid" in form:
            if form["TrunkSid"]:
                raise RestError(20001, f"TrunkSid {form['TrunkSid']} is not a SIP trunk of this account")
            changes["trunk_sid"] = None
        if changes.get("voice_application_sid"):
            changes["trunk_sid"] = None  # Twilio: setting one deletes the other
        return self._update("numbers", "IncomingPhoneNumbers", sid, changes)

    def _application_sid(self, name, value):
        if value and value not in self.state["applications"]:
            raise RestError(20001, f"{name} {value} is not a TwiML App of this account")
        return value or None

    # --- applications --------------------------------------------------------------------------
    def _new_application(self, sid, now):
        return {
            "account_sid": self.sid, "api_version": "2010-04-01", "date_created": now, "date_updated": now,
            "friendly_name": None, "message_status_callback": None, "sid": sid,
            "sms_fallback_method": "POST", "sms_fallback_url": None, "sms_method": "POST",
            "sms_status_callback": None, "sms_url": None, "status_callback": None, "status_callback_method": "POST",
            "uri": self.uri("Applications", sid), "voice_caller_id_lookup": False,
            "voice_fallback_method": "POST", "voice_fallback_url": None, "voice_method": "POST", "voice_url": None,
            "public_application_connect_enabled": True,
        }

    def create_application(self, form):
        changes = _changes(form, APPLICATION_FIELDS)
        with self.lock:
            app = self._new_application(new_sid("AP"), rfc2822(utc()))
            app.update(changes)
            self.state["applications"][app["sid"]] = app
            self.save()
        return app

    def applications(self, args):
        with self.lock:
            found = list(self.state["applications"].values())  # in the order they were made
        if "FriendlyName" in args:
            found = [a for a in found if a["friendly_name"] == args["FriendlyName"]]
        return found

    def application(self, sid):
        return self._get("applications", "Applications", sid)

    def update_application(self, sid, form):
        return self._update("applications", "Applications", sid, _changes(form, APPLICATION_FIELDS))

    def delete_application(self, sid):
        self.application(sid)
        with self.lock:
            del self.state["applications"][sid]
            for number in self.state["numbers"].values():
                for field in ("voice_application_sid", "sms_application_sid"):
                    if number[field] == sid:
                        number[field] = None
            self.save()

    # --- keys ----------------------------------------------------------------------------------
    def create_key(self, form):
        name = _text("FriendlyName", form.get("FriendlyName", ""))
        now = rfc2822(utc())
        key = {"sid": new_sid("SK"), "friendly_name": name or None, "date_created": now, "date_updated": now,
               "secret": secrets.token_urlsafe(24)}
        with self.lock:
            self.state["keys"][key["sid"]] = key
            self.carrier.keys[key["sid"]] = key["secret"]
            self.save()
        return dict(key)  # NewKey: the only answer that carries the secret

    def keys(self):
        own = {"sid": self.carrier.api_key_sid, "friendly_name": SANDBOX_KEY_NAME,
               "date_created": self.state["date_created"], "date_updated": self.state["date_created"]}
        with self.lock:
            made = list(self.state["keys"].values())
        return [own] + [{k: v for k, v in key.items() if k != "secret"} for key in made]

    def key(self, sid):
        for key in self.keys():
            if key["sid"] == sid:
                return key
        raise self._missing("Keys", sid)

    def update_key(self, sid, form):
        self.key(sid)
        if sid == self.carrier.api_key_sid:
            raise RestError(20001, "The sandbox's own key cannot be renamed")
        return {k: v for k, v in self._update("keys", "Keys", sid, _changes(form, {"FriendlyName": ("friendly_name", _text)})).items()
                if k != "secret"}

    def delete_key(self, sid):
        self.key(sid)
        if sid == self.carrier.api_key_sid:
            raise RestError(20001, "The sandbox's own key cannot be deleted: the sandbox signs with it")
        with self.lock:
            del self.state["keys"][sid]
            self.carrier.keys.pop(sid, None)
            self.save()

    # --- shared --------------------------------------------------------------------------------
    def _missing(self, title, sid):
        return RestError(20404, f"The requested resource {self.uri(title, sid)} was not found", 404)

    def _get(self, kind, title, sid):
        found = self.state[kind].get(sid)
        if found is None:
            raise self._missing(title, sid)
        return found

    def _update(self, kind, title, sid, changes):
        with self.lock:
            resource = self._get(kind, title, sid)
            resource.update(changes, date_updated=rfc2822(utc()))
            self.save()
        return resource


# --- routes -----------------------------------------------------------------------------------

def account():
    return current_app.extensions["sandbox_account"]


@bp.errorhandler(RestError)
def rest_error(error):
    return jsonify(error.body()), error.status


def authenticate(account_sid, main_only=False):
    """Basic auth as the Calls API; Accounts and Keys want the auth token, as Twilio's standard keys may not touch them."""
    auth = request.authorization
    username, password = (auth.username, auth.password) if auth else (None, None)
    current_app.extensions["sandbox"].check_account(account_sid, username, password)
    if main_only and username != account_sid:
        raise RestError(20003, "Authenticate: an API key may not use the Accounts and Keys resources", 401)


def page(items, name, path):
    """One page of a list, in Twilio's envelope (PageSize up to 1000)."""
    try:
        size = max(1, min(int(request.args.get("PageSize", 50)), 1000))
        number = max(0, int(request.args.get("Page", 0)))
    except ValueError:
        raise RestError(20001, "PageSize and Page must be whole numbers") from None
    chunk = items[number * size:(number + 1) * size]
    filters = urlencode([(k, v) for k, v in request.args.items(multi=True) if k not in ("PageSize", "Page", "PageToken")])
    uri = f"{path}?PageSize={size}{'&' + filters if filters else ''}&Page="
    return jsonify({
        name: chunk, "page": number, "page_size": size, "start": number * size,
        "end": number * size + max(len(chunk) - 1, 0), "uri": f"{uri}{number}", "first_page_uri": f"{uri}0",
        "next_page_uri": f"{uri}{number + 1}" if len(items) > (number + 1) * size else None,
        "previous_page_uri": f"{uri}{number - 1}" if number else None,
    })


@bp.route("/<account_sid>.json", methods=["GET"])
def fetch_account(account_sid):
    """FetchAccount: the sandbox's one account."""
    authenticate(account_sid, main_only=True)
    return jsonify(account().account_json())


@bp.route("/<account_sid>/IncomingPhoneNumbers.json", methods=["GET"])
def list_numbers(account_sid):
    """ListIncomingPhoneNumber, filtered by PhoneNumber (part of a number; * for any digit) and FriendlyName."""
    authenticate(account_sid)
    return page(account().numbers(request.args), "incoming_phone_numbers", account().uri("IncomingPhoneNumbers"))


@bp.route("/<account_sid>/IncomingPhoneNumbers/<sid>.json", methods=["GET"])
def fetch_number(account_sid, sid):
    authenticate(account_sid)
    return jsonify(account().number(sid))


@bp.route("/<account_sid>/IncomingPhoneNumbers/<sid>.json", methods=["POST"])
def update_number(account_sid, sid):
    """UpdateIncomingPhoneNumber: voice URL, method, status callback, TwiML App …"""
    authenticate(account_sid)
    return jsonify(account().update_number(sid, request.form))


@bp.route("/<account_sid>/Applications.json", methods=["POST"])
def create_application(account_sid):
    authenticate(account_sid)
    return jsonify(account().create_application(request.form)), 201


@bp.route("/<account_sid>/Applications.json", methods=["GET"])
def list_applications(account_sid):
    """ListApplication, filtered by FriendlyName (exactly)."""
    authenticate(account_sid)
    return page(account().applications(request.args), "applications", account().uri("Applications"))


@bp.route("/<account_sid>/Applications/<sid>.json", methods=["GET"])
def fetch_application(account_sid, sid):
    authenticate(account_sid)
    return jsonify(account().application(sid))


@bp.route("/<account_sid>/Applications/<sid>.json", methods=["POST"])
def update_application(account_sid, sid):
    authenticate(account_sid)
    return jsonify(account().update_application(sid, request.form))


@bp.route("/<account_sid>/Applications/<sid>.json", methods=["DELETE"])
def delete_application(account_sid, sid):
    authenticate(account_sid)
    account().delete_application(sid)
    return "", 204


@bp.route("/<account_sid>/Keys.json", methods=["POST"])
def create_key(account_sid):
    """CreateNewKey: the one answer that shows the key's secret."""
    authenticate(account_sid, main_only=True)
    return jsonify(account().create_key(request.form)), 201


@bp.route("/<account_sid>/Keys.json", methods=["GET"])
def list_keys(account_sid):
    authenticate(account_sid, main_only=True)
    return page(account().keys(), "keys", account().uri("Keys"))


@bp.route("/<account_sid>/Keys/<sid>.json", methods=["GET"])
def fetch_key(account_sid, sid):
    authenticate(account_sid, main_only=True)
    return jsonify(account().key(sid))


@bp.route("/<account_sid>/Keys/<sid>.json", methods=["POST"])
def update_key(account_sid, sid):
    authenticate(account_sid, main_only=True)
    return jsonify(account().update_key(sid, request.form))


@bp.route("/<account_sid>/Keys/<sid>.json", methods=["DELETE"])
def delete_key(account_sid, sid):
    authenticate(account_sid, main_only=True)
    account().delete_key(sid)
    return "", 204
