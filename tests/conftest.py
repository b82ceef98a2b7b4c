"""Fixtures: a fresh app and database per test, a live server the sandbox calls back, signing, a browser."""
import re
import shutil
import socket
import threading
import time

import pytest
import requests
from twilio.request_validator import RequestValidator
from werkzeug.serving import make_server

from dialer import create_app
from dialer.db import connect

PASSWORD = "correct horse battery"
TIME_SCALE = 0.02  # fifty times faster: a 45 s dial timeout takes under a second


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_config():
    """Settings a test may change before the app is built."""
    return {}


@pytest.fixture
def app(tmp_path, app_config):
    port = free_port()
    config = {
        "TESTING": True,
        "DATABASE": str(tmp_path / "dialer.sqlite"),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "SANDBOX_TIME_SCALE": TIME_SCALE,
        "SANDBOX_CREATE_DEMO_AGENT": False,
        "SECRET_KEY": "test-secret",
        "TWILIO_TIMEOUT": 5,
    }
    config.update(app_config)
    app = create_app(config, instance_path=str(tmp_path / "instance"))
    app.port = port
    yield app


@pytest.fixture
def db(app):
    database = connect(app.config["DATABASE"])
    yield database
    database.conn.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def live_server(app):
    """The app on a real port, so the sandbox's REST calls and webhooks cross real HTTP."""
    server = make_server("127.0.0.1", app.port, app, threaded=True)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app.config["PUBLIC_BASE_URL"]
    server.shutdown()


def csrf_from(html):
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or \
        re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


class Auth:
    """Creates agents through the CLI and signs them in through the login form."""

    def __init__(self, client, runner):
        self.client, self.runner = client, runner

    def create(self, username="alice", supervisor=False):
        args = ["agents", "create", username] + (["--supervisor"] if supervisor else [])
        result = self.runner.invoke(args=args, input=f"{PASSWORD}\n{PASSWORD}\n")
        assert result.exit_code == 0, result.output
        return result

    def login(self, username="alice", client=None):
        client = client or self.client
        token = csrf_from(client.get("/login").get_data(as_text=True))
        response = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
        assert response.status_code == 302, response.get_data(as_text=True)
        return response

    def csrf(self, client=None, path="/"):
        return csrf_from((client or self.client).get(path).get_data(as_text=True))


@pytest.fixture
def auth(client, runner):
    return Auth(client, runner)


@pytest.fixture
def sign(app):
    """Headers carrying a valid X-Twilio-Signature for PUBLIC_BASE_URL + path (+ query) and params."""
    def signer(path, params=None, url=None):
        full = url or app.config["PUBLIC_BASE_URL"] + path
        signature = RequestValidator(app.config["TWILIO_AUTH_TOKEN"]).compute_signature(full, params or {})
        return {"X-Twilio-Signature": signature}
    return signer


def healthy(port):
    """Whether a server on this port answers /healthz (False while it is still starting)."""
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
    except requests.RequestException:
        return False


def wait_for(predicate, timeout=10.0, interval=0.02):
    """Poll until predicate() is truthy; returns its value or fails the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")


def audio_seconds(audio):
    """Load an <audio> element in the browser and return its length in seconds (fails if it cannot play)."""
    return audio.evaluate("""a => new Promise((resolve, reject) => {
        a.preload = 'auto';
        a.addEventListener('loadedmetadata', () => resolve(a.duration), {once: true});
        a.addEventListener('error', () => reject(a.error && a.error.code), {once: true});
        a.load();
    })""")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's chromium: Playwright's own download cannot happen here."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if not executable:
        pytest.fail("chromium is not installed: run the README's test command (it installs it)")
    return {
        **browser_type_launch_args,
        "executable_path": executable,
        "args": ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-fake-device-for-media-stream",
                 "--autoplay-policy=no-user-gesture-required"],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    """Agents have allowed the microphone (a test that needs it blocked makes its own context)."""
    return {**browser_context_args, "permissions": ["microphone"]}
