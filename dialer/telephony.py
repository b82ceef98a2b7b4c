"""The one place a Twilio Client is built, and the REST calls the app makes through it."""
from urllib.parse import urljoin

import requests
from flask import current_app, url_for
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import VoiceGrant
from twilio.rest import Client

TWILIO_API = "https://api.twilio.com"
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]

# What an agent reads when Twilio refuses a call; codes from TWILIO.md 1.6.
REST_ERRORS = {
    20003: "The dialer could not sign in to Twilio. Ask your administrator to check the Twilio credentials.",
    20404: "Twilio no longer knows this call.",
    21201: "The call had no number to ring.",
    21205: "The dialer's callback address was refused by Twilio. Ask your administrator to check PUBLIC_BASE_URL.",
    21206: "Twilio refused the extension's digits, so the call was not placed. Check the extension.",
    21210: "The caller ID is not a number this Twilio account may call from. Ask your administrator.",
    21212: "The caller ID is not a valid phone number. Ask your administrator.",
    21211: "Twilio says that number is not valid. Check the digits and try again.",
    21214: "That number cannot be reached at the moment.",
    21215: "This Twilio account is not allowed to call that country. Ask your administrator to enable it.",
    21216: "That number is blocked: Twilio will not call it.",
    21217: "That number doesn't appear to be a real phone number.",
    21219: "This is a trial Twilio account: it can only call numbers verified on the account.",
    21220: "The call had already ended.",
}
TIMEOUT_SENTENCE = "Twilio did not answer in time, so the call was not placed. Try again in a moment."
UNREACHABLE_SENTENCE = "The dialer could not reach Twilio, so the call was not placed. Try again in a moment."


class TelephonyError(Exception):
    """Twilio refused or could not be reached; `sentence` is for the agent."""

    def __init__(self, code, message, sentence):
        super().__init__(message)
        self.code, self.message, self.sentence = code, message, sentence


class BaseUrlHttpClient(TwilioHttpClient):
    """twilio's own HTTP client, sending api.twilio.com requests to another base URL."""

    def __init__(self, base_url, **kwargs):
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    def request(self, method, url, *args, **kwargs):
        if url.startswith(TWILIO_API):
            url = self.base_url + url[len(TWILIO_API):]
        return super().request(method, url, *args, **kwargs)


def get_client():
    """The app's Twilio client, built from config."""
    cfg = current_app.config
    clients = current_app.extensions.setdefault("twilio_clients", {})
    key = (cfg["TWILIO_ACCOUNT_SID"], cfg["TWILIO_API_KEY_SID"], cfg["TWILIO_API_KEY_SECRET"], cfg["TWILIO_API_BASE_URL"])
    if key not in clients:
        base = cfg["TWILIO_API_BASE_URL"]
        http = BaseUrlHttpClient(base, timeout=cfg["TWILIO_TIMEOUT"]) if base else TwilioHttpClient(timeout=cfg["TWILIO_TIMEOUT"])
        # REST with the API key (Twilio's advice); the auth token only checks webhook signatures.
        clients[key] = Client(cfg["TWILIO_API_KEY_SID"], cfg["TWILIO_API_KEY_SECRET"], cfg["TWILIO_ACCOUNT_SID"],
                              http_client=http)
    return clients[key]


def public_url(endpoint, **values):
    """An absolute URL Twilio can reach: PUBLIC_BASE_URL + the route's path and query."""
    path = url_for(endpoint, **values)
    return urljoin(current_app.config["PUBLIC_BASE_URL"] + "/", path.lstrip("/"))


def _error(exc):
    if isinstance(exc, TwilioRestException):
        sentence = REST_ERRORS.get(exc.code, f"Twilio refused the call (error {exc.code}).")
        return TelephonyError(exc.code, exc.msg, sentence)
    if isinstance(exc, requests.Timeout):
        return TelephonyError(None, f"timeout: {exc}", TIMEOUT_SENTENCE)
    return TelephonyError(None, f"{type(exc).__name__}: {exc}", UNREACHABLE_SENTENCE)


def place_call(call_id, to, send_digits=None):
    """Ask Twilio to ring the customer (and key in `send_digits` once answered); returns the CallSid or raises TelephonyError."""
    cfg = current_app.config
    extra = {"send_digits": send_digits} if send_digits else {}
    try:
        call = get_client().calls.create(
            to=to, from_=cfg["TWILIO_CALLER_ID"],
            url=public_url("twiml.customer_to_agent", call=call_id),
            status_callback=public_url("twiml.status", call=call_id),
            status_callback_event=STATUS_EVENTS, status_callback_method="POST", **extra,
        )
    except (TwilioException, requests.RequestException) as exc:
        raise _error(exc) from exc
    return call.sid


def hang_up(call_sid):
    """End a live call whatever its state."""
    try:
        get_client().calls(call_sid).update(status="completed")
    except (TwilioException, requests.RequestException) as exc:
        raise _error(exc) from exc


def fetch_call(call_sid):
    """What Twilio's REST API says of a call now: (status, duration in seconds or None, end time or None)."""
    try:
        call = get_client().calls(call_sid).fetch()
    except (TwilioException, requests.RequestException) as exc:
        raise _error(exc) from exc
    duration = int(call.duration) if (call.duration or "").isdigit() else None
    return call.status, duration, call.end_time


def redirect(call_sid, url):
    """Make a live call leave what it is doing (a queue) and run the TwiML at `url` (POST)."""
    try:
        get_client().calls(call_sid).update(url=url, method="POST")
    except (TwilioException, requests.RequestException) as exc:
        raise _error(exc) from exc


def recording_media(recording_sid):
    """The recording's WAV bytes, fetched with the account's credentials."""
    cfg = current_app.config
    base = cfg["TWILIO_API_BASE_URL"] or TWILIO_API
    url = f"{base}/2010-04-01/Accounts/{cfg['TWILIO_ACCOUNT_SID']}/Recordings/{recording_sid}.wav"
    try:
        # twilio's Response keeps bodies as text, so binary media goes through requests itself.
        response = requests.get(url, auth=(cfg["TWILIO_API_KEY_SID"], cfg["TWILIO_API_KEY_SECRET"]),
                                timeout=cfg["TWILIO_TIMEOUT"])
    except requests.RequestException as exc:
        raise _error(exc) from exc
    if response.status_code == 404:
        raise TelephonyError(404, "recording not found", "Twilio no longer has this recording.")
    if response.status_code != 200:
        raise TelephonyError(response.status_code, f"recording fetch: HTTP {response.status_code}",
                             "The recording could not be fetched from Twilio just now. Try again shortly.")
    return response.content


def voice_token(identity):
    """A Voice access token for this identity: incoming calls and the TwiML App for outgoing."""
    cfg = current_app.config
    ttl = cfg["VOICE_TOKEN_TTL"]
    token = AccessToken(cfg["TWILIO_ACCOUNT_SID"], cfg["TWILIO_API_KEY_SID"], cfg["TWILIO_API_KEY_SECRET"],
                        identity=identity, ttl=ttl)
    token.add_grant(VoiceGrant(incoming_allow=True, outgoing_application_sid=cfg["TWILIO_TWIML_APP_SID"]))
    return token.to_jwt(), ttl


# --- go-live commands (dialer/golive.py): a Client for given credentials, outside a request --------

VOICE_API = "https://voice.twilio.com"  # dialing permissions (geo permissions) live on this domain


class SandboxHttpClient(BaseUrlHttpClient):
    """BaseUrlHttpClient that sends voice.twilio.com requests to the base URL too, so a command
    rehearsing against a sandbox never reaches the real Twilio (the sandbox answers 404 there)."""

    def request(self, method, url, *args, **kwargs):
        if url.startswith(VOICE_API):
            url = TWILIO_API + url[len(VOICE_API):]
        return super().request(method, url, *args, **kwargs)


def build_client(account_sid, username, password, base_url=None, timeout=10):
    """A Client for these credentials (the auth token or an API key), at Twilio or at `base_url`."""
    http = SandboxHttpClient(base_url, timeout=timeout) if base_url else TwilioHttpClient(timeout=timeout)
    return Client(username, password, account_sid, http_client=http)
