"""Presence and the supervisor's board: choosing, automatic changes, offline when the page goes away."""
import time

import pytest

from dialer import calls, params

from .conftest import wait_for
from .test_live import agent_id, open_events


@pytest.fixture
def app_config():
    return {"EVENTS_KEEPALIVE_SECONDS": 0.05, "PRESENCE_TICK_SECONDS": 0.1, "PRESENCE_OFFLINE_SECONDS": 1,
            "WRAP_UP_SECONDS": 1}


def presence_of(db, username):
    return db.execute("SELECT presence, presence_reason FROM agents WHERE username = ?", [username]).fetchone()


def post_presence(client, auth, **form):
    token = auth.csrf()
    return client.post("/presence", data=form, headers={"HX-Request": "true", "X-CSRFToken": token})


def test_presence_needs_the_csrf_token(client, auth, db):
    auth.create("alice")
    auth.login("alice")
    response = client.post("/presence", data={"presence": "away"}, headers={"HX-Request": "true"})
    assert response.status_code == 400
    assert presence_of(db, "alice") == ("offline", None)


@pytest.mark.parametrize("form, sentence", [
    ({"presence": "asleep"}, "Choose available or away."),
    ({"presence": ""}, "Choose available or away."),
    ({"presence": "on-call"}, "Choose available or away."),
    ({"presence": "away", "reason": "x" * 81}, "at most 80 characters"),
    ({"presence": "available"}, "Your phone is not ready"),
])
def test_a_made_up_or_unready_presence_is_refused_with_a_sentence(client, auth, db, form, sentence):
    auth.create("alice")
    auth.login("alice")
    response = post_presence(client, auth, **form)
    assert response.status_code == 422
    assert sentence in response.get_data(as_text=True)
    assert presence_of(db, "alice") == ("offline", None)


def test_an_agent_chooses_available_then_away_and_every_change_is_kept(client, auth, db):
    auth.create("alice")
    auth.login("alice")
    response = post_presence(client, auth, presence="available", phone_ready="yes")
    assert response.status_code == 200 and ">available<" in response.get_data(as_text=True)
    assert presence_of(db, "alice") == ("available", None)
    response = post_presence(client, auth, presence="away", reason="lunch")
    assert ">away: lunch<" in response.get_data(as_text=True)
    assert presence_of(db, "alice") == ("away", "lunch")
    changes = db.execute("SELECT presence, reason, by FROM presence_changes ORDER BY id").fetchall()
    assert changes == [("available", None, "alice"), ("away", "lunch", "alice")]
    # the dialer shows it, and a plain form post (no JavaScript) works too
    assert ">away: lunch<" in client.get("/").get_data(as_text=True)
    plain = client.post("/presence", data={"presence": "available", "phone_ready": "yes", "csrf_token": auth.csrf()})
    assert plain.status_code == 303 and presence_of(db, "alice") == ("available", None)


def test_a_call_makes_the_agent_on_a_call_then_wrap_up_then_available(app, client, auth, db):
    auth.create("alice")
    auth.login("alice")
    post_presence(client, auth, presence="available", phone_ready="yes")
    call = calls.create_call(db, agent_id(db, "alice"), "+442079460000")
    assert presence_of(db, "alice")[0] == "on-call"
    assert post_presence(client, auth, presence="available", phone_ready="yes").status_code == 409
    events = open_events(client)  # an open page: alice is not offline while it is open
    calls.apply_event(db, call["id"], "status", params.read({"CallSid": "CA" + "1" * 32, "CallStatus": "completed"}))
    assert presence_of(db, "alice")[0] == "wrap-up"
    wait_for(lambda: presence_of(db, "alice")[0] == "available", timeout=5)  # WRAP_UP_SECONDS = 1
    changes = [row[0] for row in db.execute("SELECT presence FROM presence_changes ORDER BY id")]
    assert changes[-3:] == ["on-call", "wrap-up", "available"]
    events.close()


def test_presence_turns_offline_within_the_stated_time_after_the_page_goes_away(app, client, auth, db):
    auth.create("alice")
    auth.login("alice")
    events = open_events(client)
    events.read_until(lambda m: any(data == "" for _, data in m))
    # An open page: no longer offline; away until the agent chooses (their phone is not started).
    wait_for(lambda: presence_of(db, "alice") == ("away", "phone not started"), timeout=5)
    post_presence(client, auth, presence="available", phone_ready="yes")
    time.sleep(1.5)  # longer than PRESENCE_OFFLINE_SECONDS: the open page's heartbeats keep her here
    assert presence_of(db, "alice") == ("available", None)
    events.close()
    closed = time.monotonic()
    wait_for(lambda: presence_of(db, "alice")[0] == "offline", timeout=5)
    # PRESENCE_OFFLINE_SECONDS (1) plus the last heartbeat's age and timestamps' whole seconds
    assert time.monotonic() - closed < 1 + 0.1 + 1 + 0.5


def test_only_supervisors_see_the_board(client, auth, db):
    auth.create("alice")
    auth.create("sue", supervisor=True)
    assert client.get("/board").status_code == 302  # signed out: to the sign-in page
    auth.login("alice")
    response = client.get("/board")
    assert response.status_code == 403 and "for supervisors" in response.get_data(as_text=True)
    auth.login("sue")
    calls.create_call(db, agent_id(db, "alice"), "+442079460000")
    page = client.get("/board").get_data(as_text=True)
    assert "id=\"board-call-1\"" in page and "+44 20 7946 0000" in page and ">dialling<" in page
    assert 'id="agent-%d"' % agent_id(db, "alice") in page and ">on a call<" in page
    assert "<dt>Placed</dt><dd>1</dd>" in page


def test_a_supervisors_stream_carries_presence_and_counts_an_agents_only_their_own(client, auth, db):
    auth.create("alice")
    auth.create("bob")
    auth.create("sue", supervisor=True)
    auth.login("bob")
    bobs = open_events(client)
    bobs.read_until(lambda m: any(data == "" for _, data in m))
    auth.login("sue", client=(sue_client := client.application.test_client()))
    sues = open_events(sue_client)
    sues.read_until(lambda m: any(data == "" for _, data in m))
    calls.create_call(db, agent_id(db, "alice"), "+442079460000")
    sues.read_until(lambda m: any('id="agent-%d"' % agent_id(db, "alice") in d and "on a call" in d for _, d in m))
    sues.read_until(lambda m: any('id="board-counts"' in d and "<dd>1</dd>" in d for _, d in m))
    bobs.read_for(0.5)
    assert not any("presence-%d" % agent_id(db, "alice") in d or "board-" in d for _, d in bobs.messages)
    bobs.close()
    sues.close()


def test_an_agent_switched_off_leaves_an_open_board_at_once(client, auth, db, runner):
    auth.create("alice")
    auth.create("sue", supervisor=True)
    auth.login("sue")
    sues = open_events(client)
    sues.read_until(lambda m: any(data == "" for _, data in m))
    runner.invoke(args=["agents", "disable", "alice"])
    row = 'id="agent-%d"' % agent_id(db, "alice")
    sues.read_until(lambda m: any(row in d and " hidden" in d for _, d in m))
    runner.invoke(args=["agents", "enable", "alice"])
    sues.read_until(lambda m: any(row in d and " hidden" not in d for _, d in m[-1:]))
    sues.close()
