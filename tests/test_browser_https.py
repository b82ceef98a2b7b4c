"""The production stack: Caddy (deploy/Caddyfile, `tls internal`) with HTTP/2 in front of the README's
gunicorn command, one trusted proxy hop (PROXY_HOPS=1), and the whole seed call in Chromium over https."""
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
from urllib.parse import urlencode

import certifi
import pytest
import requests
from playwright.sync_api import expect

from dialer import create_app
from dialer.auth import create_agent
from dialer.config import ConfigError
from dialer.db import connect

from .conftest import PASSWORD, free_port, wait_for
from .test_browser import call_customer, panel_status, sign_in, start_phone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")
CADDYFILE = os.path.join(ROOT, "deploy", "Caddyfile")


class Stack:
    """Caddy on https://127.0.0.1:<port> in front of gunicorn, each its own process group."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.https_port, self.http_port, self.app_port = free_port(), free_port(), free_port()
        self.base = f"https://127.0.0.1:{self.https_port}"
        self.instance = tmp_path / "instance"
        self.server_log = tmp_path / "gunicorn.log"
        self.access_log = tmp_path / "caddy-access.log"
        self.procs = []

    def caddyfile(self):
        """The shipped Caddyfile, with this machine's address, `tls internal`, free ports and an access log."""
        shipped = open(CADDYFILE).read()
        for old, new in (("dialer.example.com {", f"https://127.0.0.1:{self.https_port} {{"),
                         ("# tls internal", f"tls internal\n\tlog {{\n\t\toutput file {self.access_log}\n\t}}"),
                         ("reverse_proxy 127.0.0.1:8000", f"reverse_proxy 127.0.0.1:{self.app_port}")):
            assert shipped.count(old) == 1, f"deploy/Caddyfile no longer has {old!r} once"
            shipped = shipped.replace(old, new)
        # The test's own Caddy: no admin endpoint (the system's Caddy may hold :2019), no change to the
        # machine's trust store, and free ports instead of 80 and 443.
        test_options = (f"{{\n\tadmin off\n\tskip_install_trust\n\tdefault_bind 127.0.0.1\n"
                        f"\thttp_port {self.http_port}\n\thttps_port {self.https_port}\n}}\n")
        shipped = re.sub(r"^\{\n(.*?)^\}\n", test_options, shipped, count=1, flags=re.S | re.M)
        path = self.tmp / "Caddyfile"
        path.write_text(shipped)
        return path

    def start_caddy(self):
        caddy = shutil.which("caddy")
        if not caddy:
            pytest.fail("caddy is not installed: run the README's test command (it installs it)")
        home = self.tmp / "caddy-home"
        env = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / "data"),
               "XDG_CONFIG_HOME": str(home / "config")}
        log = open(self.tmp / "caddy.log", "w")
        self.procs.append(subprocess.Popen([caddy, "run", "--config", str(self.caddyfile()), "--adapter", "caddyfile"],
                                           env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        self.root_cert = home / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
        wait_for(self.root_cert.exists, timeout=20, interval=0.1)
        # What the dialer trusts for its own https calls (the sandbox's webhooks and REST through
        # Caddy): the public CAs plus Caddy's local root, as the README says to do.
        self.ca_bundle = self.tmp / "ca-bundle.pem"
        self.ca_bundle.write_text(open(certifi.where()).read() + "\n" + self.root_cert.read_text())

    def start_dialer(self, **settings):
        env = {**os.environ, "DIALER_INSTANCE_PATH": str(self.instance), "DIALER_BIND": f"127.0.0.1:{self.app_port}",
               "DIALER_PUBLIC_BASE_URL": self.base, "DIALER_PROXY_HOPS": "1",
               "DIALER_SANDBOX_CREATE_DEMO_AGENT": "false", "REQUESTS_CA_BUNDLE": str(self.ca_bundle),
               "PYTHONUNBUFFERED": "1", **settings}
        log = open(self.server_log, "w")
        self.procs.append(subprocess.Popen([GUNICORN, "-c", "gunicorn.conf.py", "app:app"], cwd=ROOT, env=env,
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        wait_for(self.healthy, timeout=30, interval=0.2)

    def healthy(self):
        try:
            return requests.get(f"{self.base}/healthz", timeout=2, verify=str(self.root_cert)).ok
        except requests.RequestException:
            return False

    def stop(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


@pytest.fixture
def stack(tmp_path):
    """An instance with agent alice, served by gunicorn behind Caddy over https."""
    stack = Stack(tmp_path)
    app = create_app({"PUBLIC_BASE_URL": stack.base, "SANDBOX_CREATE_DEMO_AGENT": False},
                     instance_path=str(stack.instance))
    stack.database = app.config["DATABASE"]
    db = connect(stack.database)
    with app.app_context():
        create_agent(db, "alice", PASSWORD)
    db.conn.close()
    try:
        stack.start_caddy()
        stack.start_dialer(DIALER_SANDBOX_TIME_SCALE="0.5")
        yield stack
    finally:
        stack.stop()


def rows(database, sql):
    conn = sqlite3.connect(database)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.mark.browser
def test_the_seed_call_goes_through_caddy_over_https_and_http2(browser, stack):
    context = browser.new_context(ignore_https_errors=True, permissions=["microphone"])  # Caddy's local CA
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        sign_in(page, stack.base, "alice", PASSWORD)
        assert page.url == f"{stack.base}/"  # the redirect after sign-in stays on the public https URL
        assert page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol") == "h2"
        [cookie] = [c for c in context.cookies() if c["name"] == "session"]
        assert cookie["secure"] and cookie["httpOnly"]

        start_phone(page)  # the sandbox's device stream comes through Caddy
        call_customer(page, "020 7946 0000")
        status = panel_status(page)  # the panel moves with /events through Caddy
        expect(status).to_have_attribute("data-status", "ringing", timeout=30_000)
        expect(page.locator("#in-call")).to_be_visible(timeout=30_000)
        expect(status).to_have_attribute("data-status", "in-progress", timeout=30_000)
        page.wait_for_timeout(2000)  # a few seconds of conversation
        page.get_by_role("button", name="Hang up").click()
        expect(status).to_have_attribute("data-status", "completed", timeout=30_000)

        page.get_by_role("link", name="History").click()
        row = page.locator("#calls tbody tr").first
        expect(row).to_contain_text("completed")
        expect(row).to_contain_text("+44 20 7946 0000")
    finally:
        context.close()

    [(call_status, dial_result)] = rows(stack.database, "SELECT status, dial_result FROM calls")
    assert (call_status, dial_result) == ("completed", "completed")
    # The sandbox signed its webhooks for the https URL and sent them through Caddy; the dialer,
    # checking against PUBLIC_BASE_URL, accepted every one.
    server_log = stack.server_log.read_text()
    twiml = re.findall(r'"(?:GET|POST) (/twiml/[^ ]*) HTTP/1.1" (\d{3})', server_log)
    assert {path.split("?")[0] for path, _ in twiml} >= {"/twiml/status", "/twiml/customer-to-agent",
                                                          "/twiml/dial-result"}
    assert all(code.startswith("2") for _, code in twiml), twiml
    assert " 403 " not in server_log and "wrongly signed" not in server_log and "unsigned" not in server_log
    proxied = [json.loads(line) for line in stack.access_log.read_text().splitlines()]
    webhooks = [entry for entry in proxied if entry["request"]["uri"].startswith("/twiml/status")]
    assert webhooks and all("tls" in entry["request"] and entry["status"] == 204 for entry in webhooks)
    assert all(entry["request"]["headers"]["User-Agent"] == ["TwilioProxy/1.1 (dialer sandbox)"] for entry in webhooks)


# --- the one trusted hop, without a browser --------------------------------------------------------

def sign_in_fails_from(stack, source, forged=None):
    """A wrong password posted to Caddy from the local address `source` (127.0.0.x), maybe with a forged
    X-Forwarded-For; the dialer answers 422 and records the address it believed."""
    context = ssl.create_default_context(cafile=str(stack.root_cert))

    def request(method, path, body=None, headers=None):
        conn = http.client.HTTPSConnection("127.0.0.1", stack.https_port, source_address=(source, 0), context=context)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response, response.read().decode()
        finally:
            conn.close()

    response, html = request("GET", "/login")
    cookie = response.getheader("Set-Cookie").split(";")[0]
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
    headers = {"Cookie": cookie, "Referer": f"{stack.base}/login", "Content-Type": "application/x-www-form-urlencoded"}
    if forged:
        headers["X-Forwarded-For"] = forged
    response, _ = request("POST", "/login", urlencode({"username": "alice", "password": "not it", "csrf_token": token}),
                          headers)
    assert response.status == 422
    [(address,)] = rows(stack.database, "SELECT address FROM audit_log WHERE action = 'sign-in-failed' "
                                        "ORDER BY id DESC LIMIT 1")
    return address


def test_behind_caddy_the_sign_in_throttle_counts_the_real_client_and_ignores_a_forged_one(stack):
    # gunicorn's peer is always Caddy at 127.0.0.1; the client here comes from 127.0.0.2 and 127.0.0.3.
    assert sign_in_fails_from(stack, "127.0.0.2") == "127.0.0.2"
    assert sign_in_fails_from(stack, "127.0.0.3", forged="203.0.113.7") == "127.0.0.3"


def test_event_streams_pass_through_caddy_at_once(stack):
    session = requests.Session()
    verify = str(stack.root_cert)
    html = session.get(f"{stack.base}/login", verify=verify).text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
    signed_in = session.post(f"{stack.base}/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token},
                             headers={"Referer": f"{stack.base}/login"}, allow_redirects=False, verify=verify)
    assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/"
    # The first messages (the snapshot) arrive while the stream stays open: nothing waits for its end.
    with session.get(f"{stack.base}/events", stream=True, timeout=5, verify=verify) as events:
        assert events.headers["Content-Type"].startswith("text/event-stream")
        assert events.headers["Server"] == "Caddy"
        first = next(events.iter_lines(decode_unicode=True))
        assert first.startswith(("retry:", "id:", "data:", ":"))


def test_gunicorns_own_error_pages_get_the_security_headers_from_caddy_and_the_dialers_keep_their_own(stack):
    """A URL over 4 KB (414) or an oversized header (431) is refused by gunicorn before the dialer
    sees it; Caddy passes both on, with the security headers the dialer would have added."""
    verify = str(stack.root_cert)
    long_url = requests.get(f"{stack.base}/history?q={'a' * 5000}", verify=verify, timeout=10)
    big_header = requests.get(f"{stack.base}/login", headers={"X-Big": "a" * 9000}, verify=verify, timeout=10)
    assert (long_url.status_code, big_header.status_code) == (414, 431)
    for response in (long_url, big_header):
        assert "gunicorn" not in response.headers.get("Server", "")
        assert response.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
        assert response.headers["Cache-Control"] == "no-store"
    # The dialer's own responses keep the dialer's headers: one of each, its page policy unchanged.
    page = requests.get(f"{stack.base}/login", verify=verify, timeout=10)
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    for name in ("Content-Security-Policy", "X-Frame-Options", "Cache-Control", "Strict-Transport-Security"):
        assert page.raw.headers.getlist(name) == [page.headers[name]], name
    style = requests.get(f"{stack.base}/static/css/dialer.css", verify=verify, timeout=10)
    assert style.status_code == 200 and "no-store" not in style.headers["Cache-Control"]


@pytest.mark.parametrize("value", [-1, 6, "one", True, 1.5])
def test_proxy_hops_must_be_a_small_whole_number(tmp_path, value):
    with pytest.raises(ConfigError, match=r"setting PROXY_HOPS \(DIALER_PROXY_HOPS\) must be the number of proxies"):
        create_app({"PROXY_HOPS": value, "SECRET_KEY": "x", "DATABASE": str(tmp_path / "d.sqlite")},
                   instance_path=str(tmp_path))


def test_caddyfile_as_shipped_is_valid_and_flushes_event_streams():
    adapted = subprocess.run([shutil.which("caddy") or "caddy", "adapt", "--config", CADDYFILE, "--adapter", "caddyfile"],
                             capture_output=True, text=True, timeout=30)
    assert adapted.returncode == 0, adapted.stderr
    handlers = [h for route in json.loads(adapted.stdout)["apps"]["http"]["servers"]["srv0"]["routes"]
                for sub in route["handle"] for r in sub["routes"] for h in r["handle"]]
    [handler] = [h for h in handlers if h["handler"] == "reverse_proxy"]
    assert handler["flush_interval"] == -1
    assert handler["upstreams"] == [{"dial": "127.0.0.1:8000"}]  # gunicorn.conf.py's default bind
    # Each default security header is set where that one header is missing, not only where all are.
    defaults = [h["response"] for h in handlers if h["handler"] == "headers"]
    assert all(list(d["require"]["headers"]) == list(d["set"]) and len(d["set"]) == 1 for d in defaults)
    assert {name for d in defaults for name in d["set"]} == {
        "Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy",
        "Strict-Transport-Security", "Cache-Control"}


def test_the_shipped_environment_file_names_real_settings_and_starts_a_secure_dialer(tmp_path, monkeypatch):
    from dialer.config import Config
    gunicorn_settings = {"DIALER_INSTANCE_PATH", "DIALER_BIND", "DIALER_WORKERS", "DIALER_CONNECTIONS"}
    settings = {}
    for line in open(os.path.join(ROOT, "deploy", "dialer.env.example")):
        if line.strip() and not line.startswith("#"):
            [assignment] = shlex.split(line)  # quotes are read as systemd's EnvironmentFile reads them
            name, value = assignment.split("=", 1)
            settings[name] = value
    assert [name for name in settings if name not in gunicorn_settings and
            not hasattr(Config, name.removeprefix("DIALER_"))] == []
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DIALER_INSTANCE_PATH", str(tmp_path))
    app = create_app()  # blank secrets: the sandbox, and a secret key made in the instance folder
    assert app.config["PROXY_HOPS"] == 1 and app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["ALLOWED_COUNTRIES"] == ["GB", "IE"] and app.config["TELEPHONY"] == "sandbox"
