"""Security headers on every response: built once at start-up, added by one cheap after_request hook."""
from urllib.parse import urlsplit

# Where the Twilio Voice JS SDK connects, read from the vendored 2.18.5 build itself
# (static/vendor/twilio-voice-2.18.5.min.js: its regions, constants and eventpublisher modules;
# tests/test_security.py checks these lists against that file, so an SDK upgrade that moves
# hosts fails a test instead of a live phone):
# - signalling: a WebSocket to wss://voice-js.<edge>.twilio.com/signal. The first connection goes
#   to the "roaming" edge (Global Low Latency); once connected, Twilio names the edge the device
#   landed on and the SDK reconnects there, so every edge of the SDK's Edge list is allowed.
TWILIO_EDGES = ("roaming", "ashburn", "dublin", "frankfurt", "sao-paulo", "singapore", "sydney", "tokyo",
                "umatilla", "ashburn-ix", "frankfurt-ix", "london-ix", "san-jose-ix", "singapore-ix",
                "sydney-ix", "tokyo-ix")
# - call-quality events (Voice Insights): HTTPS POSTs to eventgw.twilio.com, then to
#   eventgw.<home region>.twilio.com once signalling names the account's home region.
TWILIO_REGIONS = ("au1", "au1-ix", "br1", "de1", "de1-ix", "gll", "ie1", "ie1-ix", "ie1-tnx", "jp1", "jp1-ix",
                  "sg1", "sg1-ix", "sg1-tnx", "us1", "us1-ix", "us1-tnx", "us2", "us2-ix", "us2-tnx")
# - ringtones (incoming, outgoing, disconnect, DTMF): sdk.twilio.com/js/client/sounds/releases/1.0.0,
#   fetched with XMLHttpRequest into Web Audio (connect-src), or played by an <audio> (media-src).
TWILIO_SOUNDS = "https://sdk.twilio.com"
# Call audio itself is WebRTC (ICE/SRTP), which CSP does not govern.

HSTS = "max-age=31536000; includeSubDomains"


def twilio_hosts():
    """Every source the Voice SDK needs in connect-src."""
    return ([f"wss://voice-js.{edge}.twilio.com" for edge in TWILIO_EDGES]
            + ["https://eventgw.twilio.com"] + [f"https://eventgw.{region}.twilio.com" for region in TWILIO_REGIONS]
            + [TWILIO_SOUNDS])


def content_security_policy(telephony, page=True):
    """The policy: only the app's own files (no inline script or style, no eval); the SDK's hosts on pages in twilio mode."""
    connect, media = ["'self'"], ["'self'"]
    if telephony == "twilio" and page:
        connect += twilio_hosts()
        media.append(TWILIO_SOUNDS)
    directives = [("default-src", ["'self'"])]
    if len(connect) > 1:
        directives += [("connect-src", connect), ("media-src", media)]
    directives += [("object-src", ["'none'"]), ("base-uri", ["'none'"]), ("form-action", ["'self'"]),
                   ("frame-ancestors", ["'none'"])]
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives)


def headers_for(config, page=True):
    """The security headers every response carries (pages: text/html), as (name, value) pairs."""
    headers = [
        ("Content-Security-Policy", content_security_policy(config["TELEPHONY"], page)),
        ("X-Frame-Options", "DENY"),  # frame-ancestors for browsers that predate it
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "same-origin"),
    ]
    if urlsplit(config["PUBLIC_BASE_URL"]).scheme == "https":
        headers.append(("Strict-Transport-Security", HSTS))
    return headers


def init_app(app):
    """Add the security headers to every response, and no-store to every one that sets no caching of its own."""
    page_headers = [(name, name.lower(), value) for name, value in headers_for(app.config, page=True)]
    # Other responses never run the SDK: they keep the short policy (webhook replies stay small).
    other_headers = [(name, name.lower(), value) for name, value in headers_for(app.config, page=False)]

    @app.after_request
    def secure(response):
        """Add the prepared headers a response does not set itself (~7 µs: one pass over its headers)."""
        headers = response.headers
        present = {name.lower() for name, _ in headers.items()}
        html = headers.get("Content-Type", "").startswith("text/html")
        for name, lower, value in page_headers if html else other_headers:
            if lower not in present:
                headers.add(name, value)
        # Pages, fragments, JSON and webhook replies all may hold numbers, names and notes; a response
        # that chose its own caching (static files, recordings) keeps it.
        if "cache-control" not in present:
            headers.add("Cache-Control", "no-store")
        return response

    _quiet_dev_server()


def _quiet_dev_server():
    """Werkzeug's development server (flask run, the tests' live server) would say `Werkzeug/3.1.9 Python/3.11.2`.

    It sends its own Server header whatever the app sets, so the name is changed where it is made.
    gunicorn 27, the production server, already sends `Server: gunicorn` without a version.
    """
    from werkzeug.serving import WSGIRequestHandler  # already imported by Flask's CLI: costs nothing

    WSGIRequestHandler.version_string = lambda self: "Werkzeug"
