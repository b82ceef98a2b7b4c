"""Settings: defaults here, then instance/config.py, then DIALER_* variables, then a test mapping."""
import os
import re
import secrets
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers


class ConfigError(Exception):
    """A setting is wrong; the message names it in one line."""


class Config:
    """Defaults. Secrets are never set here."""

    SECRET_KEY = None  # made once and kept in the instance folder when not configured
    DATABASE = None  # defaults to <instance>/dialer.sqlite
    PUBLIC_BASE_URL = "http://127.0.0.1:5000"
    TELEPHONY = None  # "sandbox" | "twilio"; chosen from the credentials when unset

    TWILIO_ACCOUNT_SID = None
    TWILIO_AUTH_TOKEN = None
    TWILIO_API_KEY_SID = None
    TWILIO_API_KEY_SECRET = None
    TWILIO_TWIML_APP_SID = None
    TWILIO_CALLER_ID = None
    TWILIO_API_BASE_URL = None  # set to the sandbox's URL in sandbox mode; None means api.twilio.com
    TWILIO_TIMEOUT = 10  # seconds the app waits for Twilio's REST API

    DEFAULT_REGION = "GB"
    TIME_ZONE = "Europe/London"  # the centre's: times on pages and the dates people filter by
    # What an agent picks when wrapping up a call (the history filters and the CSV show them).
    DISPOSITIONS = ["sale", "callback requested", "not interested", "wrong number", "voicemail left"]
    ALLOWED_COUNTRIES = ["GB", "IE", "US", "CA"]
    # Toll-fraud guards: calls an agent may place in any 60 s, and number types never dialled
    # (phonenumbers' PhoneNumberType names).
    CALLS_PER_MINUTE = 10
    BLOCKED_NUMBER_TYPES = ["PERSONAL_NUMBER", "PAGER", "PREMIUM_RATE", "SHARED_COST", "UAN"]

    HOLD_MESSAGE = "Please hold while we connect you to an agent."
    FALLBACK_MESSAGE = "Sorry, no agents are available. Please try again later."
    SAY_VOICE = "alice"
    SAY_LANGUAGE = "en-GB"
    DIAL_TIMEOUT = 45
    DIAL_RECORD = "record-from-answer-dual"
    ANSWER_ON_BRIDGE = True
    AUTO_ACCEPT_OWN_CALLS = True

    # Customers calling in (the number's voice URL is PUBLIC_BASE_URL/twiml/inbound). The caller
    # hears the greeting, then the available agents' phones ring: all at once (at most
    # INBOUND_RING_AT_ONCE, longest idle first) or, with INBOUND_RING "one", one at a time.
    INBOUND_GREETING = "Thank you for calling. Please hold while we connect you to an agent."
    INBOUND_RING = "all"
    INBOUND_RING_AT_ONCE = 5
    INBOUND_RING_TIMEOUT = 20  # seconds an offered call rings before it is offered elsewhere or queued
    AWAY_AFTER_MISSED_OFFER = True  # an agent who lets an offered call ring out is set away
    QUEUE_NAME = "dialer"  # the Twilio queue callers wait in
    QUEUE_MESSAGE = "All our agents are busy. You are number {position} in the queue."
    HOLD_MUSIC_URL = "http://com.twilio.sounds.music.s3.amazonaws.com/MARKOVICHAMP-Borghestral.mp3"
    VOICEMAIL_AFTER = 120  # seconds in the queue before the caller is asked to leave a message
    VOICEMAIL_MESSAGE = "Sorry to keep you waiting. Please leave a message after the tone, and we will call you back."
    VOICEMAIL_MAX_LENGTH = 120  # seconds
    VOICE_TOKEN_TTL = 3600  # seconds; Twilio refuses more than 24 h

    # Sandbox only: how fast simulated time runs (0.05 = twenty times faster), and whether
    # status callbacks are delivered shuffled and repeated, as Twilio may.
    SANDBOX_TIME_SCALE = 1.0
    SANDBOX_CALLBACK_CHAOS = False
    SANDBOX_CREATE_DEMO_AGENT = True

    # Live updates (/events): a comment this often keeps proxies from closing an idle stream; a
    # stream ends after this long and the browser resumes it at once (its sign-in checked again).
    EVENTS_KEEPALIVE_SECONDS = 15
    EVENTS_STREAM_SECONDS = 300
    EVENTS_KEEP = 100_000  # the newest events kept for reconnecting browsers; older ones are deleted hourly
    # Presence: wrap-up lasts this long after a call; an agent with no open page for this long is
    # offline; each process's hub writes heartbeats and sweeps this often.
    WRAP_UP_SECONDS = 60
    PRESENCE_OFFLINE_SECONDS = 30
    PRESENCE_TICK_SECONDS = 5

    WTF_CSRF_TIME_LIMIT = None  # a token lasts as long as the session: agents keep the page open all shift

    # Sign-in. Sessions end server-side after this long without a request, or this long after
    # sign-in whatever happens (a shift). Failed sign-ins are counted over a window, per username
    # and per client address; past a limit that username or address is refused (0: no limit).
    SESSION_COOKIE_SAMESITE = "Lax"
    # Every form and webhook of the dialer is a few kilobytes (webhooks: at most 64 KB): anything
    # larger is refused with a 413 before it is read.
    MAX_CONTENT_LENGTH = 1024 * 1024
    SESSION_COOKIE_SECURE = None  # None: on whenever PUBLIC_BASE_URL is https
    SESSION_IDLE_TIMEOUT = 2 * 3600
    SESSION_ABSOLUTE_TIMEOUT = 12 * 3600
    LOGIN_FAILURE_WINDOW = 15 * 60
    LOGIN_MAX_FAILURES_PER_USERNAME = 5
    LOGIN_MAX_FAILURES_PER_ADDRESS = 20
    # A browser that signed in as a username keeps its own count of failures for it, so a stranger's
    # (or an office's) failures do not refuse that agent there (dialer/devices.py); for this many
    # days after its last sign-in (0: off).
    LOGIN_TRUSTED_DEVICE_DAYS = 30
    PASSWORD_MIN_LENGTH = 8
    PASSWORD_MIN_SCORE = 3  # zxcvbn's 0-4 guessability score; 2 and up refuse every common password

    # How many proxies in front of the app set X-Forwarded-For/-Proto/-Host that the app may believe:
    # 0 (no proxy: the connection is the client), 1 behind Caddy (deploy/Caddyfile). More than the
    # real number lets a client forge its address past the sign-in throttle.
    PROXY_HOPS = 0


DIAL_RECORD_MODES = {
    "do-not-record", "record-from-answer", "record-from-ringing",
    "record-from-answer-dual", "record-from-ringing-dual",
}
NUMBER_TYPES = sorted(name for name in vars(phonenumbers.PhoneNumberType) if name.isupper())
SID_PATTERNS = {
    "TWILIO_ACCOUNT_SID": r"AC[0-9a-fA-F]{32}",
    "TWILIO_API_KEY_SID": r"SK[0-9a-fA-F]{32}",
    "TWILIO_TWIML_APP_SID": r"AP[0-9a-fA-F]{32}",
}


def load(app, test_config=None, twilio_settings_required=True):
    """Fill app.config in the agreed order and check it.

    `twilio_settings_required=False` is for `flask twilio setup/check` only: they make or report the
    API key, TwiML App and caller ID that twilio mode otherwise needs before anything runs.
    """
    app.config.from_object(Config)
    app.config.from_pyfile("config.py", silent=True)
    app.config.from_prefixed_env("DIALER")
    if test_config:
        app.config.update(test_config)
    cfg = app.config
    if not cfg["DATABASE"]:
        cfg["DATABASE"] = os.path.join(app.instance_path, "dialer.sqlite")
    if not cfg["TELEPHONY"]:
        has_credentials = cfg["TWILIO_ACCOUNT_SID"] and cfg["TWILIO_AUTH_TOKEN"]
        cfg["TELEPHONY"] = "twilio" if has_credentials else "sandbox"
    if not cfg["SECRET_KEY"]:
        cfg["SECRET_KEY"] = _instance_secret(app.instance_path, "secret_key")
    validate(cfg, twilio_settings_required)
    if cfg["SESSION_COOKIE_SECURE"] is None:
        cfg["SESSION_COOKIE_SECURE"] = cfg["PUBLIC_BASE_URL"].startswith("https://")


def _instance_secret(instance_path, name):
    """Read a generated secret from the instance folder, making it on first use."""
    path = os.path.join(instance_path, name)
    if os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    os.makedirs(instance_path, exist_ok=True)
    value = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value


def _is_url(value):
    parts = urlsplit(str(value))
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _e164(value):
    try:
        number = phonenumbers.parse(str(value), None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number) and str(value) == phonenumbers.format_number(
        number, phonenumbers.PhoneNumberFormat.E164)


def validate(cfg, twilio_settings_required=True):
    """Raise ConfigError naming the first wrong setting."""
    def fail(name, why):
        raise ConfigError(f"setting {name} ({'DIALER_' + name}) {why}")

    if cfg["TELEPHONY"] not in ("sandbox", "twilio"):
        fail("TELEPHONY", f"must be 'sandbox' or 'twilio', not {cfg['TELEPHONY']!r}")
    if not _is_url(cfg["PUBLIC_BASE_URL"]):
        fail("PUBLIC_BASE_URL", f"must be an http(s) URL such as https://dialer.example.com, not {cfg['PUBLIC_BASE_URL']!r}")
    cfg["PUBLIC_BASE_URL"] = str(cfg["PUBLIC_BASE_URL"]).rstrip("/")
    if cfg["TELEPHONY"] == "twilio" and twilio_settings_required:
        for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_KEY_SID",
                     "TWILIO_API_KEY_SECRET", "TWILIO_TWIML_APP_SID", "TWILIO_CALLER_ID"):
            if not cfg[name]:
                fail(name, "is required when TELEPHONY is 'twilio'")
    for name, pattern in SID_PATTERNS.items():
        if cfg[name] and not re.fullmatch(pattern, str(cfg[name])):
            fail(name, f"must look like {pattern[:2]} followed by 32 hex digits")
    for name in ("TWILIO_AUTH_TOKEN", "TWILIO_API_KEY_SECRET"):
        if cfg[name] is not None:
            cfg[name] = str(cfg[name])
    if cfg["TWILIO_CALLER_ID"] and not _e164(cfg["TWILIO_CALLER_ID"]):
        fail("TWILIO_CALLER_ID", f"must be a phone number in E.164 form such as +442079460000, not {cfg['TWILIO_CALLER_ID']!r}")
    regions = phonenumbers.SUPPORTED_REGIONS
    if cfg["DEFAULT_REGION"] not in regions:
        fail("DEFAULT_REGION", f"must be a two-letter country code such as GB, not {cfg['DEFAULT_REGION']!r}")
    allowed = cfg["ALLOWED_COUNTRIES"]
    if isinstance(allowed, str):
        allowed = [c.strip() for c in allowed.split(",") if c.strip()]
    if not isinstance(allowed, (list, tuple)) or not allowed or any(c not in regions for c in allowed):
        fail("ALLOWED_COUNTRIES", f"must be a list of two-letter country codes such as [\"GB\", \"US\"], not {cfg['ALLOWED_COUNTRIES']!r}")
    cfg["ALLOWED_COUNTRIES"] = list(allowed)
    blocked = cfg["BLOCKED_NUMBER_TYPES"]
    if isinstance(blocked, str):
        blocked = [t for t in blocked.split(",") if t.strip()]
    if isinstance(blocked, (list, tuple)) and all(isinstance(t, str) for t in blocked):
        blocked = [t.strip().upper() for t in blocked]
    if not isinstance(blocked, list) or any(t not in NUMBER_TYPES for t in blocked):
        fail("BLOCKED_NUMBER_TYPES", f"must be a list of phone number types from {', '.join(NUMBER_TYPES)}, not {cfg['BLOCKED_NUMBER_TYPES']!r}")
    cfg["BLOCKED_NUMBER_TYPES"] = list(blocked)
    calls = cfg["CALLS_PER_MINUTE"]
    if not isinstance(calls, int) or isinstance(calls, bool) or not 1 <= calls <= 1000:
        fail("CALLS_PER_MINUTE", f"must be a whole number of calls from 1 to 1000, not {calls!r}")
    if cfg["DIAL_RECORD"] not in DIAL_RECORD_MODES:
        fail("DIAL_RECORD", f"must be one of {', '.join(sorted(DIAL_RECORD_MODES))}")
    for name, low, high in (("DIAL_TIMEOUT", 5, 600), ("VOICE_TOKEN_TTL", 10, 86400), ("TWILIO_TIMEOUT", 1, 120)):
        if not isinstance(cfg[name], int) or isinstance(cfg[name], bool) or not low <= cfg[name] <= high:
            fail(name, f"must be a whole number of seconds from {low} to {high}, not {cfg[name]!r}")
    for name in ("ANSWER_ON_BRIDGE", "AUTO_ACCEPT_OWN_CALLS", "SANDBOX_CALLBACK_CHAOS"):
        if not isinstance(cfg[name], bool):
            fail(name, f"must be true or false, not {cfg[name]!r}")
    scale = cfg["SANDBOX_TIME_SCALE"]
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not 0 < scale <= 10:
        fail("SANDBOX_TIME_SCALE", f"must be a number above 0 and at most 10, not {scale!r}")
    if cfg["INBOUND_RING"] not in ("all", "one"):
        fail("INBOUND_RING", f"must be 'all' (every available agent at once) or 'one' (one at a time), not {cfg['INBOUND_RING']!r}")
    for name, low, high, unit in (("INBOUND_RING_AT_ONCE", 1, 10, "agents"), ("INBOUND_RING_TIMEOUT", 5, 600, "seconds"),
                                  ("VOICEMAIL_AFTER", 10, 3600, "seconds"), ("VOICEMAIL_MAX_LENGTH", 5, 3600, "seconds")):
        if not isinstance(cfg[name], int) or isinstance(cfg[name], bool) or not low <= cfg[name] <= high:
            fail(name, f"must be a whole number from {low} to {high} {unit}, not {cfg[name]!r}")
    if not isinstance(cfg["AWAY_AFTER_MISSED_OFFER"], bool):
        fail("AWAY_AFTER_MISSED_OFFER", f"must be true or false, not {cfg['AWAY_AFTER_MISSED_OFFER']!r}")
    if not _is_url(cfg["HOLD_MUSIC_URL"]):
        fail("HOLD_MUSIC_URL", f"must be an http(s) URL of an MP3 or WAV file, not {cfg['HOLD_MUSIC_URL']!r}")
    if "{position}" not in str(cfg["QUEUE_MESSAGE"]):
        fail("QUEUE_MESSAGE", "must say the caller's place with {position}")
    for name in ("HOLD_MESSAGE", "FALLBACK_MESSAGE", "SAY_VOICE", "SAY_LANGUAGE", "INBOUND_GREETING", "QUEUE_NAME",
                 "QUEUE_MESSAGE", "VOICEMAIL_MESSAGE"):
        if not isinstance(cfg[name], str) or not cfg[name].strip():
            fail(name, "must be a non-empty text")
    for name, low, high, unit in (
            ("SESSION_IDLE_TIMEOUT", 60, 7 * 86400, "seconds"), ("SESSION_ABSOLUTE_TIMEOUT", 60, 30 * 86400, "seconds"),
            ("LOGIN_FAILURE_WINDOW", 60, 86400, "seconds"), ("LOGIN_MAX_FAILURES_PER_USERNAME", 0, 1000, "failures"),
            ("LOGIN_MAX_FAILURES_PER_ADDRESS", 0, 100000, "failures"), ("LOGIN_TRUSTED_DEVICE_DAYS", 0, 365, "days"),
            ("PASSWORD_MIN_LENGTH", 8, 128, "characters"),
            ("PASSWORD_MIN_SCORE", 2, 4, "(zxcvbn's score)")):
        if not isinstance(cfg[name], int) or isinstance(cfg[name], bool) or not low <= cfg[name] <= high:
            fail(name, f"must be a whole number from {low} to {high} {unit}, not {cfg[name]!r}")
    if cfg["SESSION_COOKIE_SECURE"] is not None and not isinstance(cfg["SESSION_COOKIE_SECURE"], bool):
        fail("SESSION_COOKIE_SECURE", f"must be true or false, not {cfg['SESSION_COOKIE_SECURE']!r}")
    for name in ("EVENTS_KEEPALIVE_SECONDS", "EVENTS_STREAM_SECONDS", "WRAP_UP_SECONDS",
                 "PRESENCE_OFFLINE_SECONDS", "PRESENCE_TICK_SECONDS"):
        value = cfg[name]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 86400:
            fail(name, f"must be a number of seconds above 0 and at most 86400, not {value!r}")
    if not isinstance(cfg["EVENTS_KEEP"], int) or isinstance(cfg["EVENTS_KEEP"], bool) or cfg["EVENTS_KEEP"] < 1:
        fail("EVENTS_KEEP", f"must be a whole number of events, at least 1, not {cfg['EVENTS_KEEP']!r}")
    dispositions = cfg["DISPOSITIONS"]
    if isinstance(dispositions, str):
        dispositions = [d.strip() for d in dispositions.split(",") if d.strip()]
    if (not isinstance(dispositions, (list, tuple)) or not dispositions
            or any(not isinstance(d, str) or not d.strip() or len(d) > 60 for d in dispositions)):
        fail("DISPOSITIONS", f"must be a list of short texts such as [\"sale\", \"callback requested\"], not {cfg['DISPOSITIONS']!r}")
    cfg["DISPOSITIONS"] = [d.strip() for d in dispositions]
    try:
        ZoneInfo(str(cfg["TIME_ZONE"]))
    except (ZoneInfoNotFoundError, ValueError):
        fail("TIME_ZONE", f"must be a time zone name such as Europe/London or America/New_York, not {cfg['TIME_ZONE']!r}")
    if cfg["SESSION_COOKIE_SAMESITE"] not in ("Lax", "Strict"):
        fail("SESSION_COOKIE_SAMESITE", f"must be 'Lax' or 'Strict', not {cfg['SESSION_COOKIE_SAMESITE']!r}")
    hops = cfg["PROXY_HOPS"]
    if not isinstance(hops, int) or isinstance(hops, bool) or not 0 <= hops <= 5:
        fail("PROXY_HOPS", f"must be the number of proxies in front of the dialer, 0 to 5 (1 behind Caddy), not {hops!r}")
