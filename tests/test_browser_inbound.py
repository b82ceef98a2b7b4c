"""Customers calling in, in Chromium: the available agents' phones ring, the first to accept takes
the call, the others stop ringing, and an away agent's phone stays quiet."""
import pytest
import requests
from playwright.sync_api import expect

from dialer import calls as call_queries
from dialer.db import one

from .conftest import PASSWORD, audio_seconds, wait_for
from .test_browser import panel_status, sign_in, start_phone

pytestmark = pytest.mark.browser
INBOUND = {"SANDBOX_TIME_SCALE": 0.3, "PRESENCE_TICK_SECONDS": 0.2}


@pytest.fixture
def desks(browser, auth, live_server):
    """Alice and Bob, available with their phones ready; Carol signed in with her phone on but away; Sue, a supervisor."""
    pages = {}
    for name in ("alice", "bob", "carol", "sue"):
        auth.create(name, supervisor=name == "sue")
        context = browser.new_context(permissions=["microphone"])
        page = context.new_page()
        sign_in(page, live_server, name, PASSWORD)
        if name != "sue":
            start_phone(page)
        if name in ("alice", "bob"):
            page.get_by_role("button", name="Available").click()
            expect(page.locator(".my-presence")).to_contain_text("available")
        pages[name] = page
    yield pages
    for page in pages.values():
        page.context.close()


def customer_calls_in(page, base, number):
    """A simulated customer rings the centre's number, from the sandbox page."""
    page.goto(f"{base}/sandbox")
    page.get_by_label("Caller").fill(number)
    page.get_by_role("button", name="Call the Twilio number").click()


@pytest.mark.parametrize("app_config", [INBOUND])
def test_a_caller_rings_the_available_agents_and_the_first_to_accept_takes_the_call(app, desks, live_server, db):
    alice, bob, carol, sue = desks["alice"], desks["bob"], desks["carol"], desks["sue"]
    customer_calls_in(sue, live_server, "+442079460100")

    for page in (alice, bob):
        ringing = page.locator("#incoming")
        expect(ringing).to_be_visible(timeout=10_000)
        expect(ringing).to_contain_text("A customer is calling in")
        expect(ringing).to_contain_text("+44 20 7946 0100")
        expect(ringing).to_contain_text("no earlier calls from this number")
    expect(carol.locator("#incoming")).to_be_hidden()  # away: not rung
    assert alice.evaluate("SandboxVoice.ringtone.playing") and bob.evaluate("SandboxVoice.ringtone.playing")
    assert not carol.evaluate("SandboxVoice.ringtone.playing")

    alice.get_by_role("button", name="Accept").click()
    expect(alice.locator("#in-call")).to_be_visible(timeout=10_000)
    expect(bob.locator("#incoming")).to_be_hidden(timeout=10_000)  # stopped ringing at once
    expect(bob.locator("#device-state")).to_contain_text("another")
    assert not alice.evaluate("SandboxVoice.ringtone.playing") and not bob.evaluate("SandboxVoice.ringtone.playing")
    expect(panel_status(alice)).to_contain_text("talking", timeout=10_000)
    expect(bob.locator("#live-calls .live-call")).to_have_count(0)
    alice.wait_for_timeout(1500)
    alice.get_by_role("button", name="Hang up").click()

    call = wait_for(lambda: (c := one(db, "SELECT * FROM calls WHERE direction = 'inbound'", []))
                    and c["status"] == "completed" and c["recording_sid"] and c)
    assert call["agent_id"] == db.execute("SELECT id FROM agents WHERE username = 'alice'").fetchone()[0]
    assert call_queries.outcome(call) == "answered"
    alice.goto(f"{live_server}/history")
    row = alice.locator("#calls tbody tr").first
    expect(row).to_contain_text("answered")
    expect(row).to_contain_text("+44 20 7946 0100")
    expect(row).to_contain_text("in")
    expect(row.get_by_role("link", name="Listen to the recording")).to_be_visible()
    bob.goto(f"{live_server}/history")
    expect(bob.locator("#calls tbody")).not_to_contain_text("+44 20 7946 0100")


def ring_in(app, number):
    """A simulated customer rings the centre's number (the sandbox's test endpoint, as scripts do)."""
    cfg = app.config
    response = requests.post(f"{cfg['PUBLIC_BASE_URL']}/sandbox/test/inbound", json={"from": number},
                             auth=(cfg["TWILIO_ACCOUNT_SID"], cfg["TWILIO_AUTH_TOKEN"]), timeout=10)
    assert response.status_code == 201, response.text
    return response.json()["call_sid"]


def heard(app, sid):
    return list(app.extensions["sandbox"].calls[sid].heard)


QUEUE = {**INBOUND, "WRAP_UP_SECONDS": 1}


@pytest.mark.parametrize("app_config", [QUEUE])
def test_with_everyone_busy_callers_queue_and_the_longest_waiting_rings_the_first_agent_free(app, desks, live_server, db):
    alice, bob = desks["alice"], desks["bob"]
    desks["sue"].goto(f"{live_server}/board")
    ring_in(app, "+442079460100")
    alice.wait_for_timeout(300)
    ring_in(app, "+442079460110")
    # Each takes one caller: both phones ring for the first; whoever is left rings for the second.
    expect(alice.locator("#incoming")).to_be_visible(timeout=10_000)
    alice.get_by_role("button", name="Accept").click()
    expect(alice.locator("#in-call")).to_be_visible(timeout=10_000)
    expect(bob.locator("#incoming")).to_contain_text("+44 20 7946 0110", timeout=15_000)
    bob.get_by_role("button", name="Accept").click()
    expect(bob.locator("#in-call")).to_be_visible(timeout=10_000)

    first = ring_in(app, "+442079460120")   # both busy: these two wait, in this order
    alice.wait_for_timeout(500)
    second = ring_in(app, "+442079460130")
    wait_for(lambda: any("number 1 in the queue" in text for text in heard(app, first)))
    wait_for(lambda: any("number 2 in the queue" in text for text in heard(app, second)))
    expect(desks["sue"].locator("#board-counts div", has_text="Waiting now")).to_contain_text("2", timeout=5_000)

    alice.get_by_role("button", name="Hang up").click()  # wrap-up, then available: the first caller rings her
    expect(alice.locator("#incoming")).to_contain_text("+44 20 7946 0120", timeout=15_000)
    expect(bob.locator("#in-call")).to_be_visible()
    alice.locator("body").press("a")  # the keyboard alone: A accepts
    expect(panel_status(alice)).to_contain_text("talking", timeout=10_000)
    row = one(db, "SELECT * FROM calls WHERE customer_call_sid = ?", [first])
    assert row["queued_at"] and row["agent_id"] == one(db, "SELECT id FROM agents WHERE username = 'alice'", [])["id"]
    waiting = one(db, "SELECT * FROM calls WHERE customer_call_sid = ?", [second])
    assert waiting["agent_id"] is None and waiting["queued_at"]


VOICEMAIL = {**INBOUND, "VOICEMAIL_AFTER": 10}


@pytest.mark.parametrize("app_config", [VOICEMAIL])
def test_a_caller_who_waits_too_long_leaves_a_message_that_plays_and_is_called_back(app, desks, live_server, db):
    alice = desks["carol"]  # her phone is ready but she is away: nobody is available
    sid = ring_in(app, "+442079460100")
    wait_for(lambda: any("number 1 in the queue" in text for text in heard(app, sid)))
    call = wait_for(lambda: (c := one(db, "SELECT * FROM calls WHERE customer_call_sid = ?", [sid]))
                    and c["status"] == "completed" and c["voicemail_sid"] and c, timeout=30)
    assert call_queries.outcome(call) == "voicemail" and call["agent_id"] is None

    missed = alice.locator("#missed-calls li", has_text="+44 20 7946 0100")  # arrives live, no reload
    expect(missed).to_contain_text("voicemail")
    expect(missed).to_be_visible()
    sue = desks["sue"]
    sue.goto(f"{live_server}/board")
    expect(sue.locator("#board-missed li", has_text="+44 20 7946 0100")).to_contain_text("voicemail")
    missed.get_by_role("link", name="message").click()
    assert audio_seconds(alice.get_by_label("Message")) > 0

    alice.goto(f"{live_server}/")
    alice.locator("#missed-calls li", has_text="+44 20 7946 0100").get_by_role("button", name="Call +44 20 7946 0100 back").click()
    expect(panel_status(alice)).to_contain_text("+44 20 7946 0100", timeout=10_000)
    back = wait_for(lambda: one(db, "SELECT * FROM calls WHERE direction = 'outbound'", []))
    assert back["customer_number"] == "+442079460100"
    handled = one(db, "SELECT * FROM calls WHERE id = ?", [call["id"]])
    assert (handled["handled_by"], handled["callback_call_id"]) == ("carol", back["id"]) and handled["handled_at"]
    expect(alice.locator("#missed-calls li", has_text="+44 20 7946 0100")).to_be_hidden()  # live: called back
    expect(sue.locator("#board-missed li", has_text="+44 20 7946 0100")).to_be_hidden()
    alice.reload()
    expect(alice.locator("#missed-calls li", has_text="+44 20 7946 0100")).to_have_count(0)
