"""The event stream (/events): who may listen, what a connection starts with, what it carries, resuming."""
import os
import re
import subprocess
import sys
import time

import pytest

from dialer import calls, params
from dialer.live import hub

from .conftest import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def app_config():
    # The stream yields a keep-alive this often, so a test reading it never blocks for long.
    return {"EVENTS_KEEPALIVE_SECONDS": 0.05}


class Events:
    """An open /events response, read message by message as a browser's EventSource would."""

    def __init__(self, response):
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.mimetype == "text/event-stream"
        self.response = response
        self.chunks = iter(response.response)
        self.buffer = ""
        self.messages = []  # (id, data) in arrival order

    def read_until(self, predicate, timeout=5.0):
        """Read messages until predicate(messages) holds; return the messages read so far."""
        deadline = time.monotonic() + timeout
        while not predicate(self.messages):
            assert time.monotonic() < deadline, f"timed out; got {self.messages}"
            chunk = next(self.chunks)
            self.buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
            *complete, self.buffer = self.buffer.split("\n\n")
            for block in complete:
                fields = [line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")]
                ids = [value for name, value in fields if name == "id"]
                data = "\n".join(value for name, value in fields if name == "data")
                if ids or data:
                    self.messages.append((int(ids[-1]) if ids else None, data))
        return self.messages

    def read_for(self, seconds):
        """Everything that arrives in the next `seconds` (keep-alives come every 50 ms)."""
        deadline = time.monotonic() + seconds
        self.read_until(lambda _: time.monotonic() > deadline, timeout=seconds + 5)
        return self.messages

    def calls(self):
        """The ids of the calls the messages so far carried."""
        return [int(n) for _, data in self.messages for n in re.findall(r'<article id="call-(\d+)"', data)]

    def close(self):
        self.response.close()


def open_events(client, last_event_id=None):
    headers = {"HX-Request": "true", "Accept": "text/html, text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    return Events(client.get("/events", headers=headers, buffered=False))


def agent_id(db, username):
    return db.execute("SELECT id FROM agents WHERE username = ?", [username]).fetchone()[0]


def status(db, call, value, **extra):
    """A status change as the webhook would apply it (the same function, the same transaction)."""
    callback = params.read({"CallStatus": value, "CallSid": "CA" + "1" * 32, **extra})
    return calls.apply_event(db, call["id"], "status", callback)[0]


@pytest.fixture
def people(app, auth, db):
    auth.create("alice")
    auth.create("bob")
    auth.create("sue", supervisor=True)
    return {name: agent_id(db, name) for name in ("alice", "bob", "sue")}


def test_signed_out_requests_are_refused_with_401_and_no_redirect_into_the_page(client):
    response = client.get("/events", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert "HX-Redirect" not in response.headers  # the page shows a banner and keeps the phone
    assert "session has ended" in response.get_data(as_text=True)


def test_a_new_stream_starts_with_a_snapshot_of_the_users_own_live_calls(client, auth, db, people):
    mine = calls.create_call(db, people["alice"], "+442079460000")
    theirs = calls.create_call(db, people["bob"], "+442079460001")
    auth.login("alice")
    events = open_events(client)
    messages = events.read_until(lambda m: any(data == "" for _, data in m))  # the snapshot ends with an id alone
    assert events.calls() == [mine["id"]] and theirs["id"] not in events.calls()
    assert 'hx-swap-oob="outerMorph"' in messages[0][1] and "dialling" in messages[0][1]
    newest = db.execute("SELECT max(id) FROM events").fetchone()[0]
    assert messages[-1] == (newest, "")
    events.close()


def test_a_change_reaches_the_stream_with_the_calls_whole_state(client, auth, db, people):
    call = calls.create_call(db, people["alice"], "+442079460000")
    auth.login("alice")
    events = open_events(client)
    events.read_until(lambda m: any(data == "" for _, data in m))
    before = len(events.messages)
    status(db, call, "ringing")
    status(db, call, "in-progress")
    messages = events.read_until(lambda m: len(m) >= before + 2)
    ids = [event_id for event_id, _ in messages[before:]]
    assert ids == sorted(ids) and len(set(ids)) == 2
    assert "customer ringing" in messages[before][1]
    assert "customer waiting for you" in messages[before + 1][1] and 'data-since="' in messages[before + 1][1]
    events.close()


def test_the_agents_phone_ringing_or_answered_tells_the_customer_answered_when_their_callback_is_late(db, people):
    """customer-to-agent writes nothing: the customer's `answered` callback may come after the agent's leg's."""
    call = calls.create_call(db, people["alice"], "+442079460000")
    status(db, call, "ringing")
    agent_leg = "CA" + "2" * 32
    ringing = calls.apply_event(db, call["id"], "agent", params.read({"CallStatus": "ringing", "CallSid": agent_leg}))[0]
    assert (ringing["status"], calls.live_state(ringing)[0]) == ("ringing", "customer waiting for you")
    assert calls.outcome(ringing) == "customer waiting for you"  # the call page and history say so too
    talking = calls.apply_event(db, call["id"], "agent", params.read({"CallStatus": "in-progress", "CallSid": agent_leg}))[0]
    assert calls.outcome(talking) == "talking"
    assert calls.live_state(talking) == ("talking", talking["agent_answered_at"])
    answered = status(db, call, "in-progress")  # the customer's own, late, without a Timestamp
    assert calls.live_state(answered)[0] == "talking"
    assert answered["answered_at"] <= answered["agent_answered_at"]
    wait, talk = calls.wait_and_talk(answered)
    assert wait == 0 and talk is not None


@pytest.mark.parametrize("app_config", [{"EVENTS_KEEPALIVE_SECONDS": 0.05, "PRESENCE_TICK_SECONDS": 0.2}])
@pytest.mark.parametrize("how", ["signed out in another tab", "switched off", "given a new password"])
def test_an_open_stream_ends_within_a_tick_when_its_sign_in_ends(app, client, auth, runner, people, how):
    """Found by the black-box run: a switched-off agent's page kept getting callers' numbers for 298 s."""
    auth.login("alice")
    events = open_events(client)
    events.read_until(lambda m: any(data == "" for _, data in m))
    if how == "signed out in another tab":
        client.post("/logout", data={"csrf_token": auth.csrf()})
    elif how == "switched off":
        runner.invoke(args=["agents", "disable", "alice"])
    else:
        runner.invoke(args=["agents", "set-password", "alice"], input="lantern orbit pebble fjord\n" * 2)
    started = time.monotonic()
    with pytest.raises(StopIteration):  # the response ends (a browser reconnects, and is refused)
        events.read_until(lambda _: False, timeout=5)
    assert time.monotonic() - started < 2
    assert open_events_status(client) == 401


def open_events_status(client):
    return client.get("/events", headers={"HX-Request": "true", "Accept": "text/event-stream"}).status_code


def test_an_agents_stream_never_carries_another_agents_call(client, auth, db, people):
    alices = calls.create_call(db, people["alice"], "+442079460000")
    auth.login("bob")
    events = open_events(client)
    for value in ("initiated", "ringing", "in-progress", "completed"):
        status(db, alices, value)
    bobs = calls.create_call(db, people["bob"], "+442079460001")  # after all of Alice's, in id order
    events.read_until(lambda _: bobs["id"] in events.calls())
    assert set(events.calls()) == {bobs["id"]}
    assert "7946 0000" not in "".join(data for _, data in events.messages)
    events.close()


def test_a_supervisor_gets_every_agents_calls(client, auth, db, people):
    auth.login("sue")
    events = open_events(client)
    alices = calls.create_call(db, people["alice"], "+442079460000")
    bobs = calls.create_call(db, people["bob"], "+442079460001")
    events.read_until(lambda _: {alices["id"], bobs["id"]} <= set(events.calls()))
    events.close()


def test_a_stream_cut_and_resumed_with_last_event_id_gets_what_it_missed(client, auth, db, people):
    call = calls.create_call(db, people["alice"], "+442079460000")
    auth.login("alice")
    events = open_events(client)
    last = events.read_until(lambda m: any(data == "" for _, data in m))[-1][0]
    events.close()

    status(db, call, "ringing")  # while the browser was away
    status(db, call, "in-progress")
    other = calls.create_call(db, people["bob"], "+442079460001")
    status(db, call, "completed", CallDuration="30")

    resumed = open_events(client, last_event_id=last)
    resumed.read_until(lambda m: any(data == "" for _, data in m))
    # Only the latest state of each call it missed (each message is whole), none of Bob's.
    assert resumed.calls() == [call["id"]] and other["id"] not in resumed.calls()
    [(event_id, data)] = [(i, data) for i, data in resumed.messages if 'id="call-' in data]
    assert 'data-status="completed"' in data
    newest = db.execute("SELECT max(id) FROM events WHERE topic = 'call' AND agent_id = ?", [people["alice"]]).fetchone()[0]
    assert event_id == newest
    # and Alice's presence as it is now: wrap-up after the call
    assert any('id="presence-%d"' % people["alice"] in data and "wrap-up" in data for _, data in resumed.messages)
    resumed.close()


@pytest.mark.parametrize("last_event_id", ["999999", "-1", "abc", "1" * 40])
def test_a_last_event_id_that_is_not_ours_gets_a_fresh_snapshot(client, auth, db, people, last_event_id):
    call = calls.create_call(db, people["alice"], "+442079460000")
    status(db, call, "ringing")
    auth.login("alice")
    events = open_events(client, last_event_id=last_event_id)
    events.read_until(lambda m: any(data == "" for _, data in m))
    assert events.calls() == [call["id"]]
    events.close()


def test_a_closed_stream_leaves_the_hub(app, client, auth, db, people):
    auth.login("alice")
    events = open_events(client)
    events.read_until(lambda m: len(m) >= 1)
    assert len(hub(app).streams) == 1
    events.close()
    assert len(hub(app).streams) == 0


def test_a_change_committed_by_another_process_reaches_the_stream(app, client, auth, db, people):
    call = calls.create_call(db, people["alice"], "+442079460000")
    auth.login("alice")
    events = open_events(client)
    events.read_until(lambda m: any(data == "" for _, data in m))
    script = (
        "import sys\n"
        "from dialer import calls\n"
        "from dialer.db import connect\n"
        "db = connect(sys.argv[1])\n"
        "calls.apply_event(db, int(sys.argv[2]), 'status', {'CallStatus': 'ringing', 'CallSid': 'CA' + '1' * 32})\n"
    )
    subprocess.run([sys.executable, "-c", script, app.config["DATABASE"], str(call["id"])], cwd=ROOT, check=True)
    messages = events.read_until(lambda m: any("customer ringing" in data for _, data in m))
    assert messages[-1][0] == db.execute("SELECT max(id) FROM events").fetchone()[0]
    events.close()


def test_a_stream_ends_after_its_lifetime_so_the_sign_in_is_checked_again(app, client, auth, people):
    app.config["EVENTS_STREAM_SECONDS"] = 0.3
    auth.login("alice")
    response = client.get("/events", buffered=False)
    started = time.monotonic()
    body = b"".join(response.response)  # ends by itself
    assert time.monotonic() - started < 5
    assert body.startswith(b"retry: ")
    response.close()


def test_old_events_are_let_go_and_a_browser_that_far_behind_gets_a_snapshot(app, client, auth, db, people):
    app.config["EVENTS_KEEP"] = 3
    call = calls.create_call(db, people["alice"], "+442079460000")
    for value in ("initiated", "ringing", "in-progress"):
        status(db, call, value)
    first_id = db.execute("SELECT min(id) FROM events").fetchone()[0]
    auth.login("alice")
    events = open_events(client)  # starts the hub, which purges at once
    wait_for(lambda: db.execute("SELECT count(*) FROM events").fetchone()[0] == 3)
    events.close()
    resumed = open_events(client, last_event_id=first_id)  # older than what is kept
    resumed.read_until(lambda m: any(data == "" for _, data in m))
    assert resumed.calls() == [call["id"]]
    assert any("customer waiting for you" in data for _, data in resumed.messages)  # the state now
    resumed.close()
