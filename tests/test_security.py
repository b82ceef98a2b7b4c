"""Security headers on every response, no-store on call data, the Server header, the CSP in Chromium, dialling limits."""
import os
import re
import subprocess
import sys
import threading
from collections import Counter

import pytest
import requests
from playwright.sync_api import expect

from dialer import calls as call_queries
from dialer import create_app, security
from dialer.auth import agent_by_username
from dialer.config import ConfigError

from .conftest import PASSWORD, audio_seconds, csrf_from, free_port, wait_for
from .test_browser import call_customer, panel_status, sign_in, start_phone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")
SDK = os.path.join(ROOT, "static", "vendor", "twilio-voice-2.18.5.min.js")
TWILIO_MODE = {
    "TELEPHONY": "twilio", "TWILIO_ACCOUNT_SID": "AC" + "a" * 32, "TWILIO_AUTH_TOKEN": "token",
    "TWILIO_API_KEY_SID": "SK" + "b" * 32, "TWILIO_API_KEY_SECRET": "s" * 32,
    "TWILIO_TWIML_APP_SID": "AP" + "c" * 32, "TWILIO_CALLER_ID": "+442079460999",
}
COMMON = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


def policy(response):
    """The Content-Security-Policy as {directive: [sources]}."""
    return {name: sources for name, *sources in
            (part.split() for part in response.headers["Content-Security-Policy"].split(";") if part.strip())}


@pytest.fixture
def call_id(auth, db):
    """alice, signed in, with one call of hers."""
    auth.create("alice")
    auth.login("alice")
    return call_queries.create_call(db, agent_by_username(db, "alice")["id"], "+442079460000")["id"]


def responses(app, client, auth, sign, call_id):
    """One response of every kind the app gives: pages, fragments, static files, JSON, errors, TwiML."""
    hx = {"HX-Request": "true"}
    callback = {"AccountSid": app.config["TWILIO_ACCOUNT_SID"], "CallSid": "CA" + "1" * 32,
                "CallStatus": "ringing", "From": "+15005550006", "To": "+442079460000"}
    yield "dialer page", client.get("/")
    yield "call panel fragment", client.get(f"/?call={call_id}", headers=hx)
    yield "history page", client.get("/history")
    yield "history fragment", client.get("/history", headers=hx)
    yield "call page", client.get(f"/calls/{call_id}")
    yield "call page fragment", client.get(f"/calls/{call_id}", headers=hx)
    yield "422 form fragment", client.post("/calls", data={"to": "070 1234 5678", "csrf_token": auth.csrf()}, headers=hx)
    yield "stylesheet", client.get("/static/css/dialer.css")
    yield "script", client.get("/static/vendor/htmx-4.0.1.min.js")
    yield "token JSON", client.get("/token", headers={"Accept": "application/json"})
    yield "health JSON", client.get("/healthz")
    yield "404 page", client.get("/no/such/page")
    yield "404 fragment", client.get("/calls/999999", headers=hx)
    yield "405", client.get("/calls")
    yield "CSRF 400", client.post("/calls", data={"to": "020 7946 0000"})
    yield "TwiML", client.post(f"/twiml/customer-to-agent?call={call_id}", data=callback,
                               headers=sign(f"/twiml/customer-to-agent?call={call_id}", callback))
    yield "status callback", client.post(f"/twiml/status?call={call_id}", data=callback,
                                         headers=sign(f"/twiml/status?call={call_id}", callback))
    yield "unsigned webhook 403", client.post(f"/twiml/status?call={call_id}", data=callback)
    client.post("/logout", data={"csrf_token": auth.csrf()})
    yield "login page", client.get("/login")
    yield "redirect to sign-in", client.get("/history")


def test_every_kind_of_response_carries_the_security_headers(app, client, auth, sign, call_id):
    seen = []
    for kind, response in responses(app, client, auth, sign, call_id):
        seen.append(kind)
        assert response.status_code < 500, kind
        for name, value in COMMON.items():
            assert response.headers.get(name) == value, (kind, name)
        csp = policy(response)
        assert csp["default-src"] == ["'self'"] and csp["frame-ancestors"] == ["'none'"], kind
        assert csp["object-src"] == ["'none'"] and csp["base-uri"] == ["'none'"], kind
        assert "unsafe" not in response.headers["Content-Security-Policy"], kind
        assert "Strict-Transport-Security" not in response.headers, kind  # PUBLIC_BASE_URL is http here
    assert len(seen) == 20


def test_a_server_error_carries_them_too(app, client):
    @app.route("/boom")
    def boom():
        raise RuntimeError("boom")
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = client.get("/boom")
    assert response.status_code == 500
    assert all(response.headers.get(name) == value for name, value in COMMON.items())
    assert policy(response)["frame-ancestors"] == ["'none'"]
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("app_config", [{"PUBLIC_BASE_URL": "https://dialer.example.com"}])
def test_hsts_when_the_public_url_is_https(client):
    for path in ("/login", "/healthz", "/static/css/dialer.css"):
        assert client.get(path).headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


def test_call_data_is_never_stored_by_browsers_or_proxies(app, client, auth, sign, call_id):
    hx = {"HX-Request": "true"}
    for path, headers in (("/", {}), (f"/?call={call_id}", hx), ("/history", {}), ("/history", hx),
                          (f"/calls/{call_id}", {}), (f"/calls/{call_id}", hx), ("/token", {})):
        response = client.get(path, headers=headers)
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store", path
    placed = client.post("/calls", data={"to": "020 7946 0000", "csrf_token": auth.csrf()}, headers=hx)
    assert placed.headers["Cache-Control"] == "no-store"
    # Static files keep their own caching rules.
    assert "no-store" not in client.get("/static/css/dialer.css").headers.get("Cache-Control", "")


def test_sandbox_pages_allow_only_the_app_itself(client, call_id):
    csp = client.get("/").headers["Content-Security-Policy"]
    assert "twilio.com" not in csp and "connect-src" not in csp  # default-src 'self' covers it
    assert "script-src" not in csp and "style-src" not in csp  # so scripts and styles: files of ours only


@pytest.mark.parametrize("app_config", [TWILIO_MODE])
def test_twilio_pages_allow_exactly_the_voice_sdks_hosts(client, call_id):
    page = policy(client.get("/"))
    assert page["default-src"] == ["'self'"]
    assert page["connect-src"] == ["'self'", *security.twilio_hosts()]
    assert page["media-src"] == ["'self'", "https://sdk.twilio.com"]
    assert "wss://voice-js.roaming.twilio.com" in page["connect-src"]
    assert "https://eventgw.twilio.com" in page["connect-src"] and "https://eventgw.us1.twilio.com" in page["connect-src"]
    assert not any("*" in source for source in page["connect-src"])
    # Nothing but a page runs the SDK: JSON, static files and webhook replies keep the short policy.
    for path in ("/healthz", "/token", "/static/js/phone.js"):
        assert "twilio.com" not in client.get(path).headers["Content-Security-Policy"], path


def test_the_allowed_twilio_hosts_are_the_ones_the_vendored_sdk_uses():
    with open(SDK) as f:
        sdk = f.read()
    assert set(re.findall(r'Edge\["\w+"\]="([a-z0-9-]+)"', sdk)) == set(security.TWILIO_EDGES)
    assert set(re.findall(r'Region\["\w+"\]="([a-z0-9-]+)"', sdk)) == set(security.TWILIO_REGIONS)
    assert 'defaultEdge=exports.Edge.Roaming' in sdk
    assert 'function createChunderEdgeURI(edge){return"voice-js.".concat(edge,".twilio.com")}' in sdk
    assert 'function createSignalingEndpointURL(uri){return"wss://".concat(uri,"/signal")}' in sdk
    assert 'defaultEventGatewayURI="eventgw.twilio.com"' in sdk
    assert 'return region?"eventgw.".concat(region,".twilio.com"):defaultEventGatewayURI' in sdk
    assert 'url:"https://".concat(this._host,"/v4/")' in sdk
    assert 'SOUNDS_BASE_URL="https://sdk.twilio.com/js/client/sounds/releases/1.0.0"' in sdk
    # No other host is named in the build, bar documentation links in error messages.
    hosts = set(re.findall(r"https?://([a-z0-9.-]+)", sdk)) - {"www.twilio.com", "support.microsoft.com",
                                                               "bugzilla.mozilla.org"}
    assert hosts == {"sdk.twilio.com"}


def test_the_dev_server_names_no_version(live_server):
    response = requests.get(f"{live_server}/healthz")
    assert response.headers["Server"] == "Werkzeug"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_gunicorn_names_no_version_and_sends_the_headers(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DIALER_INSTANCE_PATH": str(tmp_path), "DIALER_PUBLIC_BASE_URL": base,
           "DIALER_BIND": f"127.0.0.1:{port}", "DIALER_SANDBOX_CREATE_DEMO_AGENT": "false", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([GUNICORN, "-c", "gunicorn.conf.py", "app:app"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        response = wait_for(lambda: _get(f"{base}/login"), timeout=20)
        assert response.headers["Server"] == "gunicorn"  # gunicorn 27: gunicorn.SERVER, no version
        assert not re.search(r"\d", response.headers["Server"])
        assert response.headers["X-Frame-Options"] == "DENY"
        assert policy(response)["frame-ancestors"] == ["'none'"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _get(url):
    try:
        return requests.get(url, timeout=2)
    except requests.ConnectionError:
        return None


# --- the policy in a real browser ------------------------------------------------------------

@pytest.fixture
def csp_violations(page):
    """Every CSP violation the browser reports on this page, across navigations."""
    found = []
    page.expose_function("__reportViolation", lambda text: found.append(text))
    page.add_init_script("""document.addEventListener('securitypolicyviolation',
        e => window.__reportViolation(`${e.violatedDirective} ${e.blockedURI}`));""")
    page.on("console", lambda message: "Content Security Policy" in message.text and found.append(message.text))
    return found


@pytest.mark.browser
@pytest.mark.parametrize("app_config", [{"SANDBOX_TIME_SCALE": 0.2}])
def test_no_csp_violation_while_an_agent_calls_hangs_up_and_plays_the_recording(
        page, auth, live_server, csp_violations):
    auth.create("alice")
    sign_in(page, live_server, "alice", PASSWORD)
    start_phone(page)
    call_customer(page, "020 7946 0000;ext=12")
    expect(page.locator("#in-call")).to_be_visible(timeout=10_000)
    expect(panel_status(page)).to_contain_text("+44 20 7946 0000 ext. 12")
    page.get_by_role("button", name="Hang up").click()
    expect(panel_status(page)).to_have_attribute("data-status", "completed", timeout=10_000)
    page.get_by_role("link", name="History").click()
    listen = page.locator("#calls tbody tr").first.get_by_role("link", name=re.compile("Listen to the recording"))
    expect(listen).to_be_visible(timeout=10_000)
    listen.click()  # the call's own page
    expect(page.get_by_role("heading", name=re.compile(r"Call with "))).to_be_visible()
    seconds = audio_seconds(page.get_by_label("Recording"))
    assert seconds > 0
    assert csp_violations == []
    # The listener does hear the policy: a script reaching elsewhere is refused and reported.
    page.evaluate("() => { try { new WebSocket('wss://elsewhere.example/'); } catch (e) {} }")
    for _ in range(50):  # events reach Python while Playwright waits, not while Python sleeps
        if csp_violations:
            break
        page.wait_for_timeout(100)
    assert any("elsewhere.example" in text for text in csp_violations)


@pytest.mark.browser
def test_no_page_logs_an_error_to_the_console_not_even_for_a_missing_icon(page, auth, live_server):
    errors = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.goto(live_server + "/login")
    auth.create("sam", supervisor=True)
    sign_in(page, live_server, "sam", PASSWORD)
    for path in ("/", "/history", "/board", "/sandbox"):
        page.goto(live_server + path)
        page.wait_for_load_state("load")
    page.wait_for_timeout(300)  # the browser asks for the icon after the page has loaded
    assert errors == []
    assert page.evaluate("fetch(document.querySelector('link[rel=icon]').href).then(r => r.status)") == 200


@pytest.mark.browser
@pytest.mark.parametrize("app_config", [TWILIO_MODE])
def test_the_real_voice_sdk_may_reach_twilio_under_the_policy(page, auth, live_server, csp_violations):
    """No network here, so the SDK fails to connect, but the browser lets it try every host it wants."""
    auth.create("alice")
    sign_in(page, live_server, "alice", PASSWORD)
    is_sound = lambda request: request.url.startswith("https://sdk.twilio.com/js/client/sounds/")  # noqa: E731
    with page.expect_websocket(timeout=10_000) as socket, page.expect_request(is_sound, timeout=10_000):
        page.get_by_role("button", name="Start phone").click()
    assert socket.value.url == "wss://voice-js.roaming.twilio.com/signal"
    page.wait_for_timeout(500)
    assert csp_violations == []


# --- toll fraud: calls per agent per minute --------------------------------------------------

def signed_in_session(base, username):
    """A requests session signed in over real HTTP, and the CSRF token its pages carry."""
    session = requests.Session()
    token = csrf_from(session.get(f"{base}/login").text)
    session.post(f"{base}/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    return session, re.search(r'"X-CSRFToken": "([^"]+)"', session.get(f"{base}/").text).group(1)


@pytest.mark.parametrize("app_config", [{"CALLS_PER_MINUTE": 3}])
def test_a_burst_of_concurrent_calls_places_exactly_one(app, auth, db, live_server):
    """Twelve posts at once (a script, a stuck key): one call; the rest name the live one."""
    auth.create("alice")
    session, token = signed_in_session(live_server, "alice")
    burst = 12
    gate = threading.Barrier(burst)
    results = [None] * burst

    def post(i):
        mine = requests.Session()
        mine.cookies.update(session.cookies)
        gate.wait()
        results[i] = mine.post(f"{live_server}/calls", data={"to": "020 7946 0000", "csrf_token": token},
                               headers={"HX-Request": "true"}, timeout=30)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(burst)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(r.status_code for r in results) == {200: 1, 409: 11}
    assert all("You are already on a call with +44 20 7946 0000" in r.text for r in results if r.status_code == 409)
    assert db["calls"].count == 1
    carrier = app.extensions["sandbox"]
    assert len([leg for leg in carrier.calls.values() if leg.direction == "outbound-api"]) == 1


@pytest.mark.parametrize("app_config", [{"CALLS_PER_MINUTE": 2}])
def test_the_limit_says_how_many_calls_and_how_long_to_wait_and_lifts_after_a_minute(
        app, client, auth, db, live_server):
    auth.create("alice")
    auth.create("bob")
    auth.login("alice")
    hx = {"HX-Request": "true"}
    # Calls Twilio refuses at once (a magic number): each ends before the next, so only the limit stops them.
    for _ in range(2):
        assert client.post("/calls", data={"to": "+1 500 555 0001", "csrf_token": auth.csrf()}, headers=hx).status_code == 200
    refused = client.post("/calls", data={"to": "+1 500 555 0002", "csrf_token": auth.csrf()}, headers=hx)
    assert refused.status_code == 429
    html = refused.get_data(as_text=True)
    wait = int(refused.headers["Retry-After"])
    assert 55 <= wait <= 60
    assert (f"You have placed 2 calls in the last minute, the most the dialer allows. "
            f"Wait {wait} seconds before the next call.") in html
    assert 'role="alert"' in html and 'value="+1 500 555 0002"' in html and "<html" not in html
    page = client.post("/calls", data={"to": "+1 500 555 0002", "csrf_token": auth.csrf()})  # a plain form post
    assert page.status_code == 429 and "<html" in page.get_data(as_text=True)
    assert db["calls"].count == 2

    other = app.test_client()  # the limit is per agent
    auth.login("bob", client=other)
    assert other.post("/calls", data={"to": "020 7946 0000", "csrf_token": auth.csrf(other)}, headers=hx).status_code == 200

    with db.atomic():  # a minute (and more) later
        db.execute("UPDATE calls SET created_at = '2000-01-01T00:00:00+00:00'")
    assert client.post("/calls", data={"to": "020 7946 0001", "csrf_token": auth.csrf()}, headers=hx).status_code == 200


@pytest.mark.parametrize("setting, value", [
    ("CALLS_PER_MINUTE", 0),
    ("CALLS_PER_MINUTE", "lots"),
    ("CALLS_PER_MINUTE", True),
    ("BLOCKED_NUMBER_TYPES", ["PREMIUM_RATE", "EXPENSIVE"]),
    ("BLOCKED_NUMBER_TYPES", "PAGER, 070"),
    ("BLOCKED_NUMBER_TYPES", 5),
])
def test_a_wrong_toll_fraud_setting_stops_start_up_naming_it(tmp_path, setting, value):
    with pytest.raises(ConfigError) as error:
        create_app({setting: value, "DATABASE": str(tmp_path / "x.sqlite")}, instance_path=str(tmp_path))
    assert setting in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("path", ["/login", "/calls", "/presence"])
def test_a_body_larger_than_any_form_is_413_before_it_is_read(client, path):
    response = client.post(path, data={"x": "y" * (1024 * 1024 + 1)})
    assert response.status_code == 413
    assert "larger than the dialer accepts" in response.get_data(as_text=True)
