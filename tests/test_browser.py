"""The whole call as a person does it, in real Chromium against the sandbox."""
import os
import re
import subprocess
import sys

import pytest
from playwright.sync_api import expect


from .conftest import PASSWORD, audio_seconds, free_port, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCREENSHOTS = os.path.join(ROOT, "test-screenshots")  # pytest-playwright empties test-results/
FALLBACK = "Sorry, no agents are available. Please try again later."
pytestmark = pytest.mark.browser


def sign_in(page, base, username, password):
    page.goto(f"{base}/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Call customer")).to_be_visible()


def start_phone(page):
    page.get_by_role("button", name="Start phone").click()
    expect(page.locator("#device-state")).to_contain_text("ready")


def call_customer(page, number):
    page.get_by_label("Customer number").fill(number)
    page.get_by_role("button", name="Call customer").click()


def panel_status(page):
    return page.locator("#live-calls .live-call").first


@pytest.fixture
def demo_server(tmp_path):
    """The README's run command (`flask --app app run`) on a fresh instance folder."""
    port = free_port()
    env = {**os.environ, "DIALER_INSTANCE_PATH": str(tmp_path), "DIALER_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
           "DIALER_SANDBOX_TIME_SCALE": "0.5", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "run", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    password = None
    while password is None:
        line = proc.stdout.readline()
        assert line, "the server stopped before printing the demo agent:\n" + "".join(lines)
        lines.append(line)
        match = re.search(r"as demo / (\S+) ", line)
        password = match and match.group(1)
    assert any("sandbox is on" in line for line in lines)
    while "Running on" not in line:
        line = proc.stdout.readline()
    yield f"http://127.0.0.1:{port}", password
    proc.terminate()
    proc.wait(timeout=10)


def test_demo_agent_calls_a_customer_talks_hangs_up_and_finds_the_recording(page, demo_server):
    base, password = demo_server
    sign_in(page, base, "demo", password)
    start_phone(page)
    call_customer(page, "020 7946 0000")

    status = panel_status(page)
    expect(status).to_have_attribute("data-status", "ringing", timeout=10_000)
    expect(page.locator("#in-call")).to_be_visible(timeout=15_000)  # our own call: answered at once
    expect(status).to_have_attribute("data-status", "in-progress")
    expect(page.locator("#call-state")).to_contain_text("+442079460000")
    page.wait_for_timeout(2500)  # a few seconds of conversation
    page.screenshot(path=os.path.join(SCREENSHOTS, "dialer-in-call.png"), full_page=True)
    page.get_by_role("button", name="Hang up").click()
    expect(status).to_have_attribute("data-status", "completed", timeout=10_000)
    expect(page.locator("#device-state")).to_contain_text("Call ended")
    expect(page.locator("#in-call")).to_be_hidden()

    page.get_by_role("link", name="History").click()
    row = page.locator("#calls tbody tr").first
    expect(row).to_contain_text("completed")
    expect(row).to_contain_text("+44 20 7946 0000")
    expect(row.locator("td").nth(5)).not_to_have_text("—")  # a duration
    page.screenshot(path=os.path.join(SCREENSHOTS, "history.png"), full_page=True)
    row.get_by_role("link", name=re.compile("Listen to the recording of call")).click()
    audio = page.get_by_label("Recording")
    expect(audio).to_be_visible()
    seconds = audio_seconds(audio)
    assert seconds > 0


@pytest.fixture
def agent_page(page, auth, live_server):
    auth.create("alice")
    sign_in(page, live_server, "alice", PASSWORD)
    start_phone(page)
    return page


@pytest.mark.parametrize("app_config", [{"SANDBOX_TIME_SCALE": 0.1}])
def test_a_busy_customer_shows_busy(agent_page):
    call_customer(agent_page, "020 7946 0001")
    expect(panel_status(agent_page)).to_have_attribute("data-status", "busy", timeout=10_000)
    expect(panel_status(agent_page)).to_contain_text("busy")
    expect(agent_page.locator("#incoming")).to_be_hidden()


@pytest.mark.parametrize("app_config", [{"SANDBOX_TIME_SCALE": 0.2, "AUTO_ACCEPT_OWN_CALLS": False}])
def test_agent_rejects_and_the_customer_hears_the_fallback(app, agent_page, db):
    call_customer(agent_page, "020 7946 0000")
    expect(agent_page.locator("#incoming")).to_be_visible(timeout=10_000)
    expect(agent_page.locator("#incoming-from")).to_contain_text("+442079460000")
    agent_page.get_by_role("button", name="Reject").click()
    expect(panel_status(agent_page)).to_have_attribute("data-status", "completed", timeout=10_000)
    expect(panel_status(agent_page)).to_contain_text("missed by agent")
    expect(panel_status(agent_page)).not_to_contain_text("talked")  # the customer only heard the hold message
    call = list(db["calls"].rows)[0]
    assert (call["status"], call["dial_result"]) == ("completed", "busy")
    assert app.extensions["sandbox"].calls[call["customer_call_sid"]].heard[-1] == FALLBACK


@pytest.mark.parametrize("app_config", [{"SANDBOX_TIME_SCALE": 0.2, "AUTO_ACCEPT_OWN_CALLS": False}])
def test_customer_hangs_up_on_hold_and_the_ringing_stops(agent_page, db):
    call_customer(agent_page, "020 7946 0004")  # ...4 gives up 8 s after answering
    expect(agent_page.get_by_role("button", name="Accept")).to_be_visible(timeout=10_000)
    expect(agent_page.locator("#incoming")).to_be_hidden(timeout=10_000)
    expect(agent_page.locator("#device-state")).to_contain_text("the caller hung up")
    expect(panel_status(agent_page)).to_have_attribute("data-status", "completed", timeout=10_000)
    assert list(db["calls"].rows)[0]["dial_result"] == "canceled"


@pytest.mark.parametrize("app_config", [{"VOICE_TOKEN_TTL": 12}])
def test_the_phone_refreshes_its_token_before_it_expires(app, agent_page):
    carrier = app.extensions["sandbox"]
    device = wait_for(lambda: next(iter(carrier.devices.values()), None))
    first = device.expires
    wait_for(lambda: device.expires > first, timeout=8)  # tokenWillExpire fired 10 s before expiry
    expect(agent_page.locator("#device-state")).to_contain_text("ready")


@pytest.mark.parametrize("app_config", [{"SANDBOX_TIME_SCALE": 0.05}])
def test_a_magic_number_shows_a_plain_sentence(agent_page):
    call_customer(agent_page, "+1 500 555 0003")
    expect(panel_status(agent_page)).to_have_attribute("data-status", "failed")
    expect(panel_status(agent_page)).to_contain_text("not allowed to call that country")


def test_a_bad_number_is_refused_inline(agent_page, db):
    call_customer(agent_page, "+33 6 12 34 56 78")
    alert = agent_page.get_by_role("alert")
    expect(alert).to_contain_text("Calls to France aren't allowed")
    expect(agent_page.get_by_label("Customer number")).to_have_value("+33 6 12 34 56 78")
    assert db["calls"].count == 0


def test_signed_out_agent_is_sent_to_sign_in(page, live_server):
    page.goto(f"{live_server}/history")
    expect(page).to_have_url(re.compile(r"/login\?next=/history"))
    expect(page.get_by_text("Please sign in to use the dialer.")).to_be_visible()


@pytest.mark.parametrize("app_config", [{"SANDBOX_TIME_SCALE": 0.2}])
def test_with_two_tabs_one_owns_the_phone_and_the_other_can_take_it_over(app, agent_page):
    carrier = app.extensions["sandbox"]
    wait_for(lambda: len(carrier.devices) == 1)  # one click, one registration
    other = agent_page.context.new_page()
    other.goto(agent_page.url)
    other.get_by_role("button", name="Start phone").click()
    expect(other.locator("#device-state")).to_contain_text("on in another tab")
    other.wait_for_timeout(300)
    assert len(carrier.devices) == 1  # only one tab registers

    other.get_by_role("button", name="Use the phone here").click()
    expect(other.locator("#device-state")).to_contain_text("ready")
    expect(agent_page.locator("#device-state")).to_contain_text("moved to another tab")
    wait_for(lambda: len(carrier.devices) == 1 and all(d.identity for d in carrier.devices.values()))
    # the call placed from the first tab rings the tab that has the phone now
    call_customer(agent_page, "020 7946 0000")
    expect(other.locator("#incoming")).to_be_visible(timeout=10_000)
    other.get_by_role("button", name="Accept").click()
    expect(panel_status(other)).to_have_attribute("data-status", "in-progress", timeout=10_000)
    other.get_by_role("button", name="Hang up").click()
    expect(panel_status(agent_page)).to_have_attribute("data-status", "completed", timeout=10_000)


def test_a_refused_token_is_explained(app, page, auth, live_server):
    auth.create("alice")
    sign_in(page, live_server, "alice", PASSWORD)
    app.config["TWILIO_API_KEY_SECRET"] = "a secret the carrier does not know"
    page.get_by_role("button", name="Start phone").click()
    expect(page.locator("#device-state")).to_contain_text("sign-in token was refused")
    expect(page.locator("#device-state")).to_have_attribute("data-state", "error")


@pytest.mark.parametrize("app_config", [{"SANDBOX_TIME_SCALE": 0.2}])
def test_a_blocked_microphone_is_explained_and_the_caller_is_not_kept_waiting(app, browser, auth, live_server, db):
    context = browser.new_context()  # the microphone permission is not granted here
    page = context.new_page()
    auth.create("alice")
    sign_in(page, live_server, "alice", PASSWORD)
    start_phone(page)
    call_customer(page, "020 7946 0000")
    expect(page.locator("#device-state")).to_contain_text("blocking the microphone", timeout=10_000)
    expect(panel_status(page)).to_have_attribute("data-status", "completed", timeout=10_000)
    call = list(db["calls"].rows)[0]
    assert call["dial_result"] == "busy"  # rejected at once, so the customer heard the fallback
    context.close()


@pytest.mark.parametrize("app_config", [{"SANDBOX_TIME_SCALE": 0.2}])
def test_end_call_on_the_panel_hangs_up_and_the_phone_hears_it(agent_page):
    call_customer(agent_page, "020 7946 0000")
    expect(agent_page.locator("#in-call")).to_be_visible(timeout=10_000)
    agent_page.get_by_role("button", name="End call").click()  # htmx POST with the inherited CSRF header
    expect(panel_status(agent_page)).to_have_attribute("data-status", "completed", timeout=10_000)
    expect(agent_page.locator("#in-call")).to_be_hidden()
    expect(agent_page.locator("#device-state")).to_contain_text("Call ended")


@pytest.mark.parametrize("app_config", [{"VOICE_TOKEN_TTL": 12}])
def test_an_expired_registration_gets_a_fresh_token_and_registers_again(app, page, auth, live_server):
    """A laptop that slept through tokenWillExpire: the carrier says 20104, the phone recovers by itself."""
    carrier = app.extensions["sandbox"]
    page.clock.install()
    auth.create("alice")
    sign_in(page, live_server, "alice", PASSWORD)
    start_phone(page)
    first = wait_for(lambda: next(iter(carrier.devices), None))
    page.clock.pause_at(page.evaluate("Date.now()") + 1000)  # page timers stop: no tokenWillExpire
    wait_for(lambda: carrier.devices and first not in carrier.devices, timeout=20)  # expired, then a new one
    expect(page.locator("#device-state")).to_contain_text("ready")
    assert len(carrier.devices) == 1


@pytest.mark.parametrize("path", ["/", "/history", "/login"])
def test_pages_fit_a_phone_screen_without_sideways_scrolling(page, auth, live_server, path):
    auth.create("alice")
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, live_server, "alice", PASSWORD)
    page.goto(live_server + path)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_a_double_click_on_call_customer_rings_the_customer_once(app, agent_page, db):
    agent_page.get_by_label("Customer number").fill("020 7946 0000")
    agent_page.get_by_role("button", name="Call customer").dblclick()
    expect(panel_status(agent_page)).to_have_attribute("data-status", re.compile("ringing|in-progress"), timeout=10_000)
    agent_page.wait_for_timeout(500)  # any second request has arrived by now
    assert db["calls"].count == 1
    assert len([leg for leg in app.extensions["sandbox"].calls.values() if leg.direction == "outbound-api"]) == 1


def test_the_first_click_on_the_page_is_not_lost_to_the_phone_starting(app, page, auth, live_server, db):
    """The phone starts on the first click anywhere; that click must still do what it was for."""
    auth.create("alice")
    sign_in(page, live_server, "alice", PASSWORD)
    page.get_by_label("Customer number").fill("020 7946 0001")  # fill types no keys: the phone is still off
    expect(page.locator("#device-state")).to_have_attribute("data-state", "off")
    page.get_by_role("button", name="Call customer").click()
    expect(panel_status(page)).to_have_attribute("data-status", re.compile(".+"), timeout=10_000)
    expect(page.locator("#device-state")).to_contain_text("ready")
    assert db["calls"].count == 1
