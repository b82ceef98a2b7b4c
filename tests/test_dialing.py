"""Placing a call: POST /calls through the sandbox's REST API, number checks, Twilio errors."""
import re
import socket
import threading

import pytest
import requests

from dialer import calls as call_queries

from .conftest import csrf_from, wait_for


def place(client, auth, to, htmx=True):
    headers = {"HX-Request": "true"} if htmx else {}
    return client.post("/calls", data={"to": to, "csrf_token": auth.csrf()}, headers=headers)


def only_call(db):
    rows = list(db["calls"].rows)
    assert len(rows) == 1
    return rows[0]


def test_cli_agent_places_call_with_e164_caller_id_and_callbacks_naming_the_call(app, client, auth, db, live_server):
    result = auth.create("alice")
    assert "Created agent alice" in result.output
    auth.login("alice")

    response = place(client, auth, "020 7946 0000")

    assert response.status_code == 200
    call = only_call(db)
    carrier = app.extensions["sandbox"]
    leg = carrier.calls[call["customer_call_sid"]]
    assert leg.to == "+442079460000"
    assert leg.from_ == app.config["TWILIO_CALLER_ID"]
    assert leg.url == f"{live_server}/twiml/customer-to-agent?call={call['id']}"
    assert leg.status_callback == f"{live_server}/twiml/status?call={call['id']}"
    assert leg.status_events == ("initiated", "ringing", "answered", "completed")
    assert call["customer_number"] == "+442079460000"
    html = response.get_data(as_text=True)
    assert 'id="call-%d"' % call["id"] in html
    assert "+44 20 7946 0000" in html


def test_plain_form_post_redirects_to_the_dialer_showing_the_call(client, auth, db, live_server):
    auth.create("alice")
    auth.login("alice")
    response = place(client, auth, "+12025550100", htmx=False)
    assert response.status_code == 303
    call = only_call(db)
    assert response.headers["Location"].endswith(f"/?call={call['id']}")


@pytest.mark.parametrize("to, message", [
    ("", "Enter the customer's phone number."),
    ("   ", "Enter the customer's phone number."),
    ("call me maybe", "A phone number needs digits"),
    ("0207946000012345678901234567890123", "too long for a phone number"),
    ("+4420794600001234567890", "too many digits"),
    ("+44207946000012345", "isn't a valid number for United Kingdom"),
    ("09098 790000", "does not call premium-rate numbers"),
    ("+1 900 555 1234", "does not call premium-rate numbers"),
    ("+33 6 12 34 56 78", "Calls to France aren't allowed"),
    ("020 7946", "isn't a valid number"),
    ("+882 1234 5678", "isn't a valid number for any country"),  # international networks, region 001
])
def test_bad_numbers_are_refused_inline_and_nothing_is_placed(app, client, auth, db, to, message):
    auth.create("alice")
    auth.login("alice")
    response = place(client, auth, to)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert message in html.replace("&#39;", "'")
    assert 'role="alert"' in html and 'aria-invalid="true"' in html
    assert db["calls"].count == 0
    assert db["call_events"].count == 0
    assert app.extensions["sandbox"].calls == {}


def test_post_without_csrf_token_is_refused_with_a_sentence_and_writes_nothing(app, client, auth, db):
    auth.create("alice")
    auth.login("alice")
    response = client.post("/calls", data={"to": "020 7946 0000"}, headers={"HX-Request": "true"})
    assert response.status_code == 400
    assert "This form has expired" in response.get_data(as_text=True)
    assert response.headers["HX-Retarget"] == "#flash"
    assert db["calls"].count == 0
    assert app.extensions["sandbox"].calls == {}


@pytest.mark.parametrize("to, code, words", [
    ("+15005550001", 21217, "doesn't appear to be a real phone number"),
    ("+15005550002", 21214, "cannot be reached"),
    ("+15005550003", 21215, "not allowed to call that country"),
    ("+15005550004", 21216, "That number is blocked"),
])
def test_twilio_magic_numbers_fail_the_call_with_code_and_plain_sentence(client, auth, db, live_server, to, code, words):
    auth.create("alice")
    auth.login("alice")
    response = place(client, auth, to)
    assert response.status_code == 200
    call = only_call(db)
    assert call["status"] == "failed"
    assert call["error_code"] == code
    assert words in call["error_message"]
    html = response.get_data(as_text=True).replace("&#39;", "'")
    assert words in html and f"Twilio {code}" in html
    events = call_queries.events_for(db, call["id"])
    assert [e["status"] for e in events] == ["queued", "failed"]
    assert str(code) in events[-1]["params"]["twilio_message"] or events[-1]["params"]["error_code"] == code
    # Nobody talked: the agent is not put in wrap-up, but back to available.
    changes = db.execute("SELECT presence, by FROM presence_changes ORDER BY id").fetchall()
    assert changes[-2:] == [("on-call", "call"), ("available", "call not placed")]


def test_wrong_api_credentials_give_20003_and_a_sentence_for_the_agent(app, client, auth, db, live_server):
    app.config["TWILIO_API_KEY_SECRET"] = "not-the-secret"  # the sandbox keeps the real one
    auth.create("alice")
    auth.login("alice")
    place(client, auth, "020 7946 0000")
    call = only_call(db)
    assert (call["status"], call["error_code"]) == ("failed", 20003)
    assert "could not sign in to Twilio" in call["error_message"]


@pytest.fixture
def silent_server():
    """A TCP server that accepts and never answers: Twilio timing out."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(5)
    held = []
    stop = threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                pass
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    sock.close()


def test_a_twilio_timeout_fails_the_call_and_says_so(app, client, auth, db, silent_server):
    app.config.update(TWILIO_API_BASE_URL=silent_server, TWILIO_TIMEOUT=1)
    auth.create("alice")
    auth.login("alice")
    response = place(client, auth, "020 7946 0000")
    call = only_call(db)
    assert call["status"] == "failed" and call["error_code"] is None
    assert "did not answer in time" in call["error_message"]
    assert "did not answer in time" in response.get_data(as_text=True)


def test_dialer_panel_does_not_poll_and_shows_the_outcome_when_asked(app, client, auth, db, live_server):
    auth.create("alice")
    auth.login("alice")
    placed = place(client, auth, "020 7946 0001").get_data(as_text=True)  # ...1 is busy
    assert "hx-trigger" not in placed and "every " not in placed  # the event stream updates it
    call = only_call(db)
    live = client.get(f"/?call={call['id']}", headers={"HX-Request": "true"})
    assert "HX-Request" in live.headers["Vary"]
    wait_for(lambda: call_queries.get_call(db, call["id"])["status"] == "busy")
    done = client.get(f"/?call={call['id']}", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "<html" not in done
    assert 'data-status="busy"' in done and ">busy<" in done and "End call" not in done


@pytest.mark.parametrize("app_config", [{"SANDBOX_TIME_SCALE": 0.2}])
def test_agent_hangs_up_a_live_call(app, client, auth, db, live_server):
    auth.create("alice")
    auth.login("alice")
    place(client, auth, "020 7946 0000")
    call = only_call(db)
    wait_for(lambda: call_queries.get_call(db, call["id"])["status"] in ("ringing", "in-progress"))
    response = client.post(f"/calls/{call['id']}/hangup", headers={"HX-Request": "true", "X-CSRFToken": auth.csrf()})
    assert response.status_code == 204  # the panel changes through the event stream
    final = wait_for(lambda: (c := call_queries.get_call(db, call["id"])) and call_queries.is_terminal(c["status"]) and c)
    assert final["status"] in ("canceled", "completed")
    again = client.post(f"/calls/{call['id']}/hangup", headers={"HX-Request": "true", "X-CSRFToken": auth.csrf()})
    assert again.status_code == 409 and "already ended" in again.get_data(as_text=True)
    assert again.headers["HX-Retarget"] == "#flash"


# --- extensions: keyed in after the answer (SendDigits), never dropped ------------------------

@pytest.mark.parametrize("typed, extension, digits", [
    ("020 7946 0000;ext=99", "99", "ww99"),
    ("020 7946 0000 ext. 5", "5", "ww5"),
    ("020 7946 0000 x123", "123", "ww123"),
    ("020 7946 0000", None, None),
])
def test_an_extension_is_keyed_in_after_the_answer_and_shown_with_the_number(
        app, client, auth, db, live_server, typed, extension, digits):
    auth.create("alice")
    auth.login("alice")
    response = place(client, auth, typed)
    call = only_call(db)
    assert (call["customer_number"], call["customer_extension"]) == ("+442079460000", extension)
    leg = app.extensions["sandbox"].calls[call["customer_call_sid"]]
    assert (leg.to, leg.send_digits) == ("+442079460000", digits)
    if digits:
        wait_for(lambda: leg.sent_digits == digits)  # the customer answered and heard the keys
        placed = [e for e in call_queries.events_for(db, call["id"]) if e["params"].get("action") == "placed"]
        assert placed[0]["params"]["SendDigits"] == digits
    shown = "+44 20 7946 0000" + (f" ext. {extension}" if extension else "")
    for html in (response.get_data(as_text=True), client.get("/history").get_data(as_text=True),
                 client.get(f"/calls/{call['id']}").get_data(as_text=True)):
        assert any(f"{tag}{shown}</" in html for tag in ("<h1>Call with ", '<td class="number">', '<p class="customer">'))


def create_with_digits(app, digits):
    cfg = app.config
    return requests.post(
        f"{cfg['TWILIO_API_BASE_URL']}/2010-04-01/Accounts/{cfg['TWILIO_ACCOUNT_SID']}/Calls.json",
        auth=(cfg["TWILIO_API_KEY_SID"], cfg["TWILIO_API_KEY_SECRET"]),
        data={"To": "+442079460000", "From": cfg["TWILIO_CALLER_ID"], "Url": "http://x.example/", "SendDigits": digits})


@pytest.mark.parametrize("digits", ["ww99", "W1234#", "wwA*9D#", "1" * 32])
def test_the_sandbox_takes_send_digits_that_twilio_takes(app, live_server, digits):
    response = create_with_digits(app, digits)
    assert response.status_code == 201, response.text
    assert app.extensions["sandbox"].calls[response.json()["sid"]].send_digits == digits


@pytest.mark.parametrize("digits", ["ww 99", "ext99", "99x", "wwE", "1" * 33, "ww99;"])
def test_the_sandbox_refuses_bad_send_digits_with_twilios_21206(app, live_server, digits):
    response = create_with_digits(app, digits)
    assert response.status_code == 400
    body = response.json()
    assert (body["code"], body["status"]) == (21206, 400)
    assert body["more_info"] == "https://www.twilio.com/docs/errors/21206" and "SendDigits" in body["message"]
    assert app.extensions["sandbox"].calls == {}


def attempt_of(html):
    return re.search(r'name="attempt" type="hidden" value="([^"]+)"', html).group(1)


def test_the_same_submit_twice_is_one_call(app, client, auth, db, live_server):
    """A double click or a retried post sends the form's key twice: the customer rings once."""
    auth.create("alice")
    auth.login("alice")
    page = client.get("/").get_data(as_text=True)
    form = {"to": "020 7946 0000", "csrf_token": csrf_from(page), "attempt": attempt_of(page)}
    first = client.post("/calls", data=form, headers={"HX-Request": "true"})
    again = client.post("/calls", data=form, headers={"HX-Request": "true"})
    plain = client.post("/calls", data=form)
    call = only_call(db)
    assert first.status_code == again.status_code == 200
    assert f'id="call-{call["id"]}"' in again.get_data(as_text=True)
    assert plain.status_code == 303 and plain.headers["Location"].endswith(f"/?call={call['id']}")
    assert len([leg for leg in app.extensions["sandbox"].calls.values() if leg.direction == "outbound-api"]) == 1
    assert attempt_of(first.get_data(as_text=True)) != form["attempt"]  # the next submit is a new call


def test_a_second_call_while_one_is_live_is_refused_naming_the_live_one(app, client, auth, db, live_server):
    auth.create("alice")
    auth.login("alice")
    assert place(client, auth, "020 7946 0000").status_code == 200
    live = only_call(db)
    refused = place(client, auth, "020 7946 0123")
    html = refused.get_data(as_text=True)
    assert refused.status_code == 409
    assert "You are already on a call with +44 20 7946 0000" in html and "End it before you call someone else." in html
    assert f'id="call-{live["id"]}"' in html and "End call" in html  # and it can be ended from there
    assert db["calls"].count == 1

    assert client.post(f"/calls/{live['id']}/hangup", data={"csrf_token": auth.csrf()}).status_code == 303
    wait_for(lambda: call_queries.is_terminal(call_queries.get_call(db, live["id"])["status"]))
    assert place(client, auth, "020 7946 0123").status_code == 200
    assert db["calls"].count == 2


def test_a_call_twilio_never_reported_on_does_not_block_the_agent(client, auth, db):
    auth.create("alice")
    auth.login("alice")
    agent_id = db.execute("SELECT id FROM agents WHERE username = 'alice'").fetchone()[0]
    db.execute("INSERT INTO calls (agent_id, direction, customer_number, status, created_at) "
               "VALUES (?, 'outbound', '+442079460000', 'queued', '2000-01-01T00:00:00+00:00')", [agent_id])
    assert call_queries.live_call(db, agent_id) is None


def test_back_on_the_dialer_mid_call_the_live_call_is_shown(client, auth, db, live_server):
    auth.create("alice")
    auth.login("alice")
    place(client, auth, "020 7946 0000")
    call = only_call(db)
    html = client.get("/").get_data(as_text=True)  # a reload, or back from History
    assert f'id="call-{call["id"]}"' in html and "End call" in html
