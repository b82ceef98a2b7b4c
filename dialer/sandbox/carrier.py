"""The sandbox carrier's state: calls (legs), recordings, registered browser devices.

One Carrier per process; every change happens under its lock and wakes whoever waits on it.
"""
import queue
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime

import jwt
import phonenumbers

from .credentials import sid as new_sid

TERMINAL = ("completed", "busy", "failed", "no-answer", "canceled")
MAGIC_TO = {  # Twilio's test-credential numbers (TWILIO.md 1.6)
    "+15005550001": (21217, "Phone number {to} does not appear to be valid"),
    "+15005550002": (21214, "To number {to} cannot be routed"),
    "+15005550003": (21215, "Account not authorized to call {to}. Perhaps you need to enable some international permissions: https://www.twilio.com/console/voice/calls/geo-permissions/low-risk"),
    "+15005550004": (21216, "Account not allowed to call {to}"),
}
EVENTS = ("initiated", "ringing", "answered", "completed")
SEND_DIGITS = re.compile(r"[0-9A-D#*wW]{1,32}")  # TWILIO.md 1.2; anything else is error 21206


class RestError(Exception):
    """A Twilio REST error: code, message, HTTP status."""

    def __init__(self, code, message, status=400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status

    def body(self):
        return {"code": self.code, "message": self.message,
                "more_info": f"https://www.twilio.com/docs/errors/{self.code}", "status": self.status}


class TokenError(Exception):
    """An access token the sandbox refuses, with the SDK's code (20101 invalid, 20104 expired)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


def rfc2822(dt):
    return format_datetime(dt, usegmt=False).replace("-0000", "+0000") if dt else None


def utc():
    return datetime.now(timezone.utc)


def formatted(number):
    """Twilio's *_formatted: (415) 867-5309 for North America, E.164 elsewhere, clients as given."""
    if not number or not number.startswith("+"):
        return number
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return number
    if parsed.country_code == 1:
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    return number


@dataclass
class Leg:
    """One call leg, as Twilio's Call resource sees it, plus what drives it."""
    sid: str
    account_sid: str
    to: str
    from_: str
    direction: str
    parent_sid: str | None = None
    status: str = "queued"
    date_created: datetime = field(default_factory=utc)
    date_updated: datetime = field(default_factory=utc)
    start_time: datetime | None = None
    end_time: datetime | None = None
    answered_mono: float | None = None
    duration: int | None = None
    url: str | None = None
    method: str = "POST"
    twiml: str | None = None
    fallback_url: str | None = None
    status_callback: str | None = None
    status_callback_method: str = "POST"
    status_events: tuple = ("completed",)
    timeout: int = 60
    send_digits: str | None = None  # SendDigits: keyed in once the call is answered
    sent_digits: str = ""  # what was keyed in so far
    sequence: int = 0
    # What drives the leg: who ended it, a pending redirect, the device that took it.
    ended_by: str | None = None
    redirect: tuple | None = None
    device_id: str | None = None
    rejected: bool = False
    digits: str = ""
    heard: list = field(default_factory=list)  # what this leg's party heard (<Say> texts)
    error_code: int | None = None
    buffered_callbacks: list = field(default_factory=list)

    ended_mono: float | None = None

    @property
    def live(self):
        return self.status not in TERMINAL

    def hang_up(self, by):
        """Someone ended the leg now; the engine finishes it, timed from this moment."""
        if self.ended_by is None:
            self.ended_by = by
            self.ended_mono = time.monotonic()


@dataclass
class Recording:
    sid: str
    account_sid: str
    call_sid: str
    duration: int
    channels: int
    source: str
    start_time: datetime
    date_created: datetime = field(default_factory=utc)
    status: str = "completed"


@dataclass
class Device:
    """A browser registered under an identity, fed by server-sent events."""
    id: str
    identity: str
    expires: float
    events: queue.Queue = field(default_factory=queue.Queue)
    registered_at: datetime = field(default_factory=utc)


class Carrier:
    def __init__(self, config):
        self.account_sid = config["TWILIO_ACCOUNT_SID"]
        self.auth_token = config["TWILIO_AUTH_TOKEN"]
        self.api_key_sid = config["TWILIO_API_KEY_SID"]
        self.api_key_secret = config["TWILIO_API_KEY_SECRET"]
        self.keys: dict[str, str] = {}  # API keys made through Keys.json (account.py): sid -> secret
        self.caller_id = config["TWILIO_CALLER_ID"]
        self.base_url = config["PUBLIC_BASE_URL"] + "/sandbox"
        self.scale = float(config["SANDBOX_TIME_SCALE"])
        self.chaos = bool(config["SANDBOX_CALLBACK_CHAOS"])
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.calls: dict[str, Leg] = {}
        self.recordings: dict[str, Recording] = {}
        self.devices: dict[str, Device] = {}
        self.notifications: list[dict] = []  # Twilio's debugger: what went wrong, per call

    # --- time -----------------------------------------------------------------------------
    def sim_seconds_since(self, mono):
        return (time.monotonic() - mono) / self.scale

    def wait(self, seconds, until=lambda: False):
        """Sleep `seconds` of simulated time, waking early when `until()` becomes true."""
        deadline = time.monotonic() + seconds * self.scale
        with self.changed:
            while not until():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(left)
            return True

    def notify(self):
        with self.changed:
            self.changed.notify_all()

    # --- REST: calls ------------------------------------------------------------------------
    def key_secret(self, key_sid):
        """The secret of one of the account's API keys (the configured one or a made one), else None."""
        return self.api_key_secret if key_sid == self.api_key_sid else self.keys.get(key_sid)

    def check_account(self, account_sid, username, password):
        if username != self.account_sid or not secrets.compare_digest(password or "", self.auth_token):
            secret = self.key_secret(username)
            if secret is None or not secrets.compare_digest(password or "", secret):
                raise RestError(20003, "Authenticate", 401)
        if account_sid != self.account_sid:
            raise RestError(20003, "Authenticate", 401)

    def create_call(self, form):
        """Validate a CreateCall request as Twilio does and add a queued leg."""
        to, from_ = form.get("To", "").strip(), form.get("From", "").strip()
        if not to:
            raise RestError(21201, "No 'To' number is specified")
        if not from_:
            raise RestError(21213, "No 'From' number is specified")
        url, twiml, app = form.get("Url"), form.get("Twiml"), form.get("ApplicationSid")
        if not (url or twiml or app):
            raise RestError(21205, "Url parameter is required. Please provide a valid URL.")
        if url and not re.match(r"^https?://[^/\s_]+", url):
            raise RestError(21205, f"Url is not a valid URL: {url}")
        events = form.getlist("StatusCallbackEvent") or ["completed"]
        events = [e for part in events for e in part.split()]
        if any(e not in EVENTS for e in events):
            raise RestError(21626, "Invalid StatusCallbackEvent value")
        send_digits = form.get("SendDigits") or None
        if send_digits is not None and not SEND_DIGITS.fullmatch(send_digits):
            raise RestError(21206, f"SendDigits '{send_digits}' is invalid: use at most 32 of 0-9, A-D, #, *, w (half a second's pause) and W (a second's pause).")
        if from_ == "+15005550001":
            raise RestError(21212, f"The 'From' number {from_} is not a valid phone number, shortcode, or alphanumeric sender ID.")
        if from_ != self.caller_id and not from_.startswith("client:"):
            raise RestError(21210, f"The source phone number provided, {from_}, is not yet verified for your account. You may only make calls from phone numbers that you've verified or purchased from Twilio.")
        if to in MAGIC_TO:
            code, message = MAGIC_TO[to]
            raise RestError(code, message.format(to=to))
        if not to.startswith(("client:", "sip:")):
            try:
                valid = phonenumbers.is_valid_number(phonenumbers.parse(to, None))
            except phonenumbers.NumberParseException:
                valid = False
            if not valid:
                raise RestError(21211, f"The 'To' number {to} is not a valid phone number.")
        try:
            timeout = min(int(form.get("Timeout", 60)), 600)
        except ValueError:
            raise RestError(20001, "Timeout must be a whole number of seconds") from None
        leg = Leg(sid=new_sid("CA"), account_sid=self.account_sid, to=to, from_=from_,
                  direction="outbound-api", url=url, twiml=None if url else twiml,
                  method=(form.get("Method") or "POST").upper(), fallback_url=form.get("FallbackUrl"),
                  status_callback=form.get("StatusCallback"),
                  status_callback_method=(form.get("StatusCallbackMethod") or "POST").upper(),
                  status_events=tuple(events), timeout=timeout, send_digits=send_digits)
        self.add(leg)
        return leg

    def add(self, leg):
        with self.lock:
            self.calls[leg.sid] = leg
        self.notify()

    def get_call(self, sid):
        leg = self.calls.get(sid)
        if leg is None:
            raise RestError(20404, f"The requested resource /2010-04-01/Accounts/{self.account_sid}/Calls/{sid}.json was not found", 404)
        return leg

    def update_call(self, sid, form):
        """Hang up (Status=completed|canceled) or redirect (Url/Twiml) a call."""
        leg = self.get_call(sid)
        status = form.get("Status")
        url, twiml = form.get("Url"), form.get("Twiml")
        if url and twiml:
            raise RestError(21205, "Url and Twiml are mutually exclusive")
        with self.lock:
            if status:
                if status not in ("completed", "canceled"):
                    raise RestError(21218, f"Invalid Status value: {status}")
                if status == "canceled" and leg.status not in ("queued", "ringing"):
                    return leg  # canceled only affects calls not yet answered
                if leg.live and not leg.ended_by:
                    leg.hang_up("api")
            elif url or twiml:
                if leg.status != "in-progress":
                    raise RestError(21220, "Call is not in-progress. Cannot redirect.")
                leg.redirect = ("url", url, (form.get("Method") or "POST").upper()) if url else ("twiml", twiml, None)
            if form.get("StatusCallback"):
                leg.status_callback = form["StatusCallback"]
            leg.date_updated = utc()
        self.notify()
        return leg

    def delete_call(self, sid):
        leg = self.get_call(sid)
        if leg.live:
            raise RestError(20009, "Cannot delete a call that is still in progress. Hang it up first.")
        with self.lock:
            self.calls.pop(sid, None)

    def list_calls(self, args):
        legs = sorted(self.calls.values(), key=lambda c: c.date_created, reverse=True)
        for name, attr in (("To", "to"), ("From", "from_"), ("ParentCallSid", "parent_sid"), ("Status", "status")):
            if args.get(name):
                legs = [c for c in legs if getattr(c, attr) == args[name]]
        return legs

    def call_json(self, leg):
        base = f"/2010-04-01/Accounts/{leg.account_sid}/Calls/{leg.sid}"
        return {
            "sid": leg.sid, "date_created": rfc2822(leg.date_created), "date_updated": rfc2822(leg.date_updated),
            "parent_call_sid": leg.parent_sid, "account_sid": leg.account_sid,
            "to": leg.to, "to_formatted": formatted(leg.to), "from": leg.from_, "from_formatted": formatted(leg.from_),
            "phone_number_sid": None, "status": leg.status,
            "start_time": rfc2822(leg.start_time), "end_time": rfc2822(leg.end_time),
            "duration": str(leg.duration) if leg.duration is not None else None,
            "price": None, "price_unit": "USD", "direction": leg.direction, "answered_by": None,
            "api_version": "2010-04-01", "forwarded_from": None, "group_sid": None, "caller_name": None,
            "queue_time": "0", "trunk_sid": None, "uri": base + ".json",
            "subresource_uris": {name: f"{base}/{title}.json" for name, title in (
                ("notifications", "Notifications"), ("recordings", "Recordings"), ("payments", "Payments"),
                ("events", "Events"), ("siprec", "Siprec"), ("streams", "Streams"),
                ("transcriptions", "Transcriptions"),
                ("user_defined_message_subscriptions", "UserDefinedMessageSubscriptions"),
                ("user_defined_messages", "UserDefinedMessages"))},
        }

    # --- REST: recordings -----------------------------------------------------------------
    def add_recording(self, rec):
        with self.lock:
            self.recordings[rec.sid] = rec

    def get_recording(self, sid):
        rec = self.recordings.get(sid)
        if rec is None:
            raise RestError(20404, f"The requested resource /2010-04-01/Accounts/{self.account_sid}/Recordings/{sid}.json was not found", 404)
        return rec

    def recording_url(self, rec):
        return f"{self.base_url}/2010-04-01/Accounts/{rec.account_sid}/Recordings/{rec.sid}"

    def recording_json(self, rec):
        base = f"/2010-04-01/Accounts/{rec.account_sid}/Recordings/{rec.sid}"
        return {
            "account_sid": rec.account_sid, "api_version": "2010-04-01", "call_sid": rec.call_sid,
            "conference_sid": None, "date_created": rfc2822(rec.date_created), "date_updated": rfc2822(rec.date_created),
            "start_time": rfc2822(rec.start_time), "duration": str(rec.duration), "sid": rec.sid,
            "price": None, "price_unit": "USD", "status": rec.status, "channels": rec.channels,
            "source": rec.source, "error_code": None, "uri": base + ".json", "encryption_details": None,
            "subresource_uris": {"add_on_results": f"{base}/AddOnResults.json", "transcriptions": f"{base}/Transcriptions.json"},
            "media_url": self.recording_url(rec),
        }

    # --- browser devices -------------------------------------------------------------------
    def check_token(self, token):
        """Verify an access token as Twilio does: API key signature, expiry, identity, voice grant."""
        if not isinstance(token, str) or not token:
            raise TokenError(20101, "Invalid Access Token: none was given")
        try:
            header = jwt.get_unverified_header(token)
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
            secret = self.key_secret(issuer) if isinstance(issuer, str) else None
            if secret is None:
                raise TokenError(20101, "Invalid Access Token: issuer is not an API key of this account")
            claims = jwt.decode(token, secret, algorithms=["HS256"],
                                options={"require": ["exp", "iss", "sub"]}, leeway=0)
        except jwt.ExpiredSignatureError:
            raise TokenError(20104, "Access Token expired or expiration date invalid") from None
        except jwt.PyJWTError as error:
            raise TokenError(20101, f"Invalid Access Token: {error}") from None
        if header.get("cty") != "twilio-fpa;v=1" or claims["sub"] != self.account_sid:
            raise TokenError(20101, "Invalid Access Token: issuer or subject does not match this account")
        grants = claims.get("grants") or {}
        identity = grants.get("identity")
        if not identity or not re.fullmatch(r"[A-Za-z0-9_]{1,121}", identity):
            raise TokenError(20101, "Invalid Access Token: no valid identity")
        if not (grants.get("voice") or {}).get("incoming", {}).get("allow"):
            raise TokenError(20101, "Invalid Access Token: the voice grant does not allow incoming calls")
        if claims["exp"] - claims.get("nbf", time.time()) > 86400:
            raise TokenError(20101, "Invalid Access Token: a TTL above 24 hours is refused (31207)")
        return identity, claims["exp"]

    def register(self, token):
        identity, expires = self.check_token(token)
        device = Device(id=secrets.token_urlsafe(16), identity=identity, expires=expires)
        with self.lock:
            self.devices[device.id] = device
        self.notify()
        return device

    def update_token(self, device_id, token):
        device = self.devices.get(device_id)
        if device is None:
            raise KeyError(device_id)
        identity, expires = self.check_token(token)
        if identity != device.identity:
            raise TokenError(20101, "Invalid Access Token: identity differs from the registered device")
        device.expires = expires
        return device

    def unregister(self, device_id):
        with self.lock:
            device = self.devices.pop(device_id, None)
        if device:
            device.events.put(None)
        self.notify()

    def devices_for(self, identity):
        now = time.time()
        return [d for d in self.devices.values() if d.identity == identity and d.expires > now]

    def send(self, device, event, data):
        device.events.put((event, data))

    def device_action(self, device_id, call_sid, action, digits=""):
        """A browser accepted, rejected or hung up an incoming call, or sent digits."""
        device = self.devices.get(device_id)
        leg = self.calls.get(call_sid)
        if device is None or leg is None or leg.to != f"client:{device.identity}":
            raise KeyError(call_sid)
        with self.lock:
            if action == "accept":
                if leg.status != "ringing" or leg.device_id:
                    return False  # already answered elsewhere, or withdrawn: SDK error 31008
                leg.device_id = device.id
            elif action == "reject":
                if leg.status == "ringing" and not leg.device_id:
                    leg.rejected = True
            elif action == "disconnect":
                if leg.live and not leg.ended_by and leg.device_id in (None, device.id):
                    leg.hang_up("agent")
            elif action == "digits":
                leg.digits += digits
        self.notify()
        return True
