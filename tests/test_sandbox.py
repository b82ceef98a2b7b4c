"""The sandbox carrier: Twilio's REST shapes and errors, and whole calls end to end over HTTP."""
import html
import io
import json
import os
import re
import time
import wave
from datetime import datetime, timedelta, timezone

import jsonschema
import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import VoiceGrant
from twilio.rest import Client

from dialer import calls as call_queries
from dialer import history, reconcile
from dialer.auth import agent_by_username
from dialer.telephony import BaseUrlHttpClient

from .conftest import wait_for
from .device import ScriptedDevice

HERE = os.path.dirname(__file__)
HOLD = "Please hold while we connect you to an agent."
FALLBACK = "Sorry, no agents are available. Please try again later."
SLEEPY_TWIML = '<Response><Pause length="600"/></Response>'


def openapi_to_json_schema(node):
    """OpenAPI 3.0's `nullable: true` is JSON Schema's type [T, "null"]."""
    if isinstance(node, list):
        return [openapi_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {k: openapi_to_json_schema(v) for k, v in node.items()}
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    return node


def strict(schema_name):
    """Twilio's schema, with every property required and nothing else allowed."""
    with open(os.path.join(HERE, "data", "twilio_call_schemas.json")) as f:
        doc = openapi_to_json_schema(json.load(f))
    schema = dict(doc[schema_name], required=list(doc[schema_name]["properties"]), additionalProperties=False)
    return {**schema, **{k: v for k, v in doc.items() if k not in ("call", "recording", "$comment")}}


def check_call_json(body):
    jsonschema.validate(body, strict("call"), format_checker=jsonschema.FormatChecker())
    for name in ("date_created", "date_updated", "start_time", "end_time"):
        if body[name]:
            assert body[name].endswith(" +0000") and body[name][3:5] == ", ", body[name]


@pytest.fixture
def twilio_client(app, live_server):
    cfg = app.config
    return Client(cfg["TWILIO_API_KEY_SID"], cfg["TWILIO_API_KEY_SECRET"], cfg["TWILIO_ACCOUNT_SID"],
                  http_client=BaseUrlHttpClient(cfg["TWILIO_API_BASE_URL"]))


@pytest.fixture
def rest(app, live_server):
    """Raw REST access, to see the exact JSON the sandbox returns."""
    cfg = app.config
    base = f"{cfg['TWILIO_API_BASE_URL']}/2010-04-01/Accounts/{cfg['TWILIO_ACCOUNT_SID']}"
    session = requests.Session()
    session.auth = (cfg["TWILIO_ACCOUNT_SID"], cfg["TWILIO_AUTH_TOKEN"])
    session.base = base
    return session


def test_official_client_creates_fetches_lists_and_hangs_up_calls(app, twilio_client, rest):
    call = twilio_client.calls.create(to="+442079460000", from_=app.config["TWILIO_CALLER_ID"], twiml=SLEEPY_TWIML)
    assert call.status == "queued" and call.direction == "outbound-api" and call.sid.startswith("CA")
    wait_for(lambda: twilio_client.calls(call.sid).fetch().status == "in-progress")
    fetched = twilio_client.calls(call.sid).fetch()
    assert fetched.start_time is not None and fetched.to == "+442079460000"
    assert call.sid in [c.sid for c in twilio_client.calls.list(status="in-progress")]
    check_call_json(rest.get(f"{rest.base}/Calls/{call.sid}.json").json())

    ended = twilio_client.calls(call.sid).update(status="completed")
    assert ended.sid == call.sid
    final = wait_for(lambda: (c := twilio_client.calls(call.sid).fetch()).status == "completed" and c)
    assert int(final.duration) >= 0 and final.end_time is not None
    page = rest.get(f"{rest.base}/Calls.json", params={"PageSize": 5}).json()
    assert page["page_size"] == 5 and page["calls"][0]["sid"] == call.sid and page["next_page_uri"] is None
    for body in page["calls"]:
        check_call_json(body)
    with pytest.raises(TwilioRestException) as error:
        twilio_client.calls(call.sid).update(twiml=SLEEPY_TWIML)
    assert (error.value.status, error.value.code) == (400, 21220)


def test_every_call_json_the_sandbox_returns_validates_against_twilios_schema(app, rest):
    created = rest.post(f"{rest.base}/Calls.json", data={"To": "+12025550100", "From": app.config["TWILIO_CALLER_ID"],
                                                         "Twiml": SLEEPY_TWIML})
    assert created.status_code == 201
    body = created.json()
    check_call_json(body)
    assert body["status"] == "queued" and body["start_time"] is None and body["duration"] is None
    assert body["to_formatted"] == "(202) 555-0100"
    assert body["uri"] == f"/2010-04-01/Accounts/{app.config['TWILIO_ACCOUNT_SID']}/Calls/{body['sid']}.json"
    hung = rest.post(f"{rest.base}/Calls/{body['sid']}.json", data={"Status": "canceled"})
    check_call_json(hung.json())
    final = wait_for(lambda: (b := rest.get(f"{rest.base}/Calls/{body['sid']}.json").json())["status"] in ("canceled", "completed") and b)
    check_call_json(final)


@pytest.mark.parametrize("data, auth, status, code", [
    ({"To": "+442079460000"}, "wrong", 401, 20003),
    ({"To": "+442079460000"}, None, 401, 20003),
    ({"To": "", "Url": "http://x.example/"}, "ok", 400, 21201),
    ({"To": "+442079460000"}, "ok", 400, 21205),
    ({"To": "+442079460000", "Url": "http://x.example/", "StatusCallbackEvent": "hungup"}, "ok", 400, 21626),
    ({"To": "+442079460000", "Url": "http://x.example/", "From": "+442079460999"}, "ok", 400, 21210),
    ({"To": "+442079460000", "Url": "http://x.example/", "From": "+15005550001"}, "ok", 400, 21212),
    ({"To": "12345", "Url": "http://x.example/"}, "ok", 400, 21211),
    ({"To": "+15005550001", "Url": "http://x.example/"}, "ok", 400, 21217),
    ({"To": "+15005550002", "Url": "http://x.example/"}, "ok", 400, 21214),
    ({"To": "+15005550003", "Url": "http://x.example/"}, "ok", 400, 21215),
    ({"To": "+15005550004", "Url": "http://x.example/"}, "ok", 400, 21216),
])
def test_rest_errors_have_twilios_shape_and_codes(app, rest, data, auth, status, code):
    data = {"From": app.config["TWILIO_CALLER_ID"], **data}
    credentials = {"ok": rest.auth, "wrong": (app.config["TWILIO_ACCOUNT_SID"], "wrong"), None: None}[auth]
    response = requests.post(f"{rest.base}/Calls.json", data=data, auth=credentials)
    assert response.status_code == status
    body = response.json()
    assert body["code"] == code and body["status"] == status and body["message"]
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert app.extensions["sandbox"].calls == {}


def test_unknown_call_is_20404(rest):
    response = rest.get(f"{rest.base}/Calls/CA{'0' * 32}.json")
    assert response.status_code == 404 and response.json()["code"] == 20404


# --- whole calls --------------------------------------------------------------------------

@pytest.fixture
def agent(app, client, auth, db, live_server):
    """alice, signed in, with her scripted browser registered."""
    auth.create("alice")
    auth.login("alice")
    device = ScriptedDevice(live_server, client.get("/token").json["token"])
    yield device
    device.close()


def dial(client, auth, db, to):
    client.post("/calls", data={"to": to, "csrf_token": auth.csrf()}, headers={"HX-Request": "true"})
    return max(r["id"] for r in db["calls"].rows)


def finished(db, call_id, recording=False):
    def done():
        row = call_queries.get_call(db, call_id)
        if not call_queries.is_terminal(row["status"]):
            return None
        if recording and not row["recording_sid"]:
            return None
        return row
    return wait_for(done)


def customer_leg(app, row):
    return app.extensions["sandbox"].calls[row["customer_call_sid"]]


def test_whole_call_agent_answers_talks_and_hangs_up(app, client, auth, db, agent):
    call_id = dial(client, auth, db, "020 7946 0000")
    incoming = agent.next("incoming")
    params = incoming["parameters"]
    assert params["To"] == f"client:{agent_by_username(db, 'alice')['identity']}"
    assert f"call_id={call_id}" in params["Params"] and "customer=%2B442079460000" in params["Params"]
    assert agent.act(incoming["call_sid"], "accept").status_code == 200
    wait_for(lambda: call_queries.get_call(db, call_id)["status"] == "in-progress")
    time.sleep(0.3)  # fifteen simulated seconds of talk
    assert agent.act(incoming["call_sid"], "disconnect").status_code == 200

    row = finished(db, call_id, recording=True)
    assert row["status"] == "completed" and row["dial_result"] == "completed"
    assert row["agent_call_sid"] == incoming["call_sid"]
    assert row["duration"] >= 15 and row["answered_at"] and row["ended_at"]
    assert row["recording_channels"] == 2 and row["recording_duration"] >= 10
    statuses = [(e["sequence_number"], e["status"]) for e in call_queries.events_for(db, call_id) if e["source"] == "status"]
    assert statuses == [(0, "initiated"), (1, "ringing"), (2, "in-progress"), (3, "completed")]
    assert customer_leg(app, row).heard == [HOLD]
    assert app.extensions["sandbox"].notifications == []  # every webhook passed the app's signature check

    media = client.get(f"/calls/{call_id}/recording.wav")
    assert media.status_code == 200 and media.mimetype == "audio/wav"
    assert media.headers.getlist("Cache-Control") == ["no-store"]  # a conversation is call data
    with wave.open(io.BytesIO(media.data)) as w:
        assert w.getnchannels() == 2
        assert round(w.getnframes() / w.getframerate()) == row["recording_duration"]
    history = client.get("/history").get_data(as_text=True)
    assert f'/calls/{call_id}#recording' in history and "completed" in history
    # The player can seek: a range of the recording is a 206 with just those bytes.
    part = client.get(f"/calls/{call_id}/recording.wav", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.data == media.data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(media.data)}" and part.headers["Accept-Ranges"] == "bytes"
    # The call page tells what happened, in order, in words; the agent's leg says when they answered.
    assert row["agent_answered_at"] and row["agent_status"] == "completed"
    page = html.unescape(client.get(f"/calls/{call_id}").get_data(as_text=True))
    story = ["placed", "dialling the customer", "the customer's phone rang", "the customer answered and heard the hold message",
             "the agent's phone rang", "the agent answered: talking"]
    positions = [page.index(f"</time> {line}") for line in story]
    assert positions == sorted(positions)
    for line in ("the call ended: completed", "the recording was ready"):  # in the order their callbacks came
        assert page.index(f"</time> {line}") > positions[-1]


def test_agent_rejects_customer_hears_fallback_and_call_completes_with_busy(app, client, auth, db, agent):
    call_id = dial(client, auth, db, "020 7946 0000")
    incoming = agent.next("incoming")
    agent.act(incoming["call_sid"], "reject")
    row = finished(db, call_id)
    assert (row["status"], row["dial_result"]) == ("completed", "busy")
    assert customer_leg(app, row).heard == [HOLD, FALLBACK]
    assert row["recording_sid"] is None


def test_no_browser_registered_gives_no_answer_and_the_fallback(app, client, auth, db, live_server):
    auth.create("alice")
    auth.login("alice")
    call_id = dial(client, auth, db, "020 7946 0000")
    row = finished(db, call_id)
    assert (row["status"], row["dial_result"]) == ("completed", "no-answer")
    assert customer_leg(app, row).heard == [HOLD, FALLBACK]


def test_agent_never_answers_dial_times_out_with_no_answer(app, client, auth, db, agent):
    call_id = dial(client, auth, db, "020 7946 0000")
    incoming = agent.next("incoming")
    assert agent.next("cancel")["call_sid"] == incoming["call_sid"]
    row = finished(db, call_id)
    assert row["dial_result"] == "no-answer" and customer_leg(app, row).heard == [HOLD, FALLBACK]


@pytest.mark.parametrize("number, status", [("020 7946 0001", "busy"), ("020 7946 0002", "no-answer"),
                                            ("020 7946 0003", "failed")])
def test_customers_who_never_answer_end_the_call_with_their_status(app, client, auth, db, agent, number, status):
    call_id = dial(client, auth, db, number)
    row = finished(db, call_id)
    assert row["status"] == status and row["dial_result"] is None and row["duration"] == 0
    assert agent.events.empty()


def test_customer_hangs_up_on_hold_and_the_ringing_browser_hears_cancel(app, client, auth, db, agent):
    call_id = dial(client, auth, db, "020 7946 0004")  # ...4 hangs up 8 s after answering
    incoming = agent.next("incoming")
    assert agent.next("cancel")["call_sid"] == incoming["call_sid"]
    row = finished(db, call_id)
    assert row["status"] == "completed" and row["dial_result"] == "canceled"
    assert agent.act(incoming["call_sid"], "accept").status_code == 409


def test_customer_hangs_up_mid_call_and_the_browser_hears_hangup(app, client, auth, db, agent):
    call_id = dial(client, auth, db, "020 7946 0105")  # ...NN5: hangs up 10 s after answering
    incoming = agent.next("incoming")
    agent.act(incoming["call_sid"], "accept")
    assert agent.next("hangup")["call_sid"] == incoming["call_sid"]
    row = finished(db, call_id, recording=True)
    assert row["dial_result"] == "completed" and row["duration"] in (9, 10, 11)
    assert customer_leg(app, row).heard == [HOLD]


def story(client, call_id):
    """The call page's timeline, a line each."""
    html = client.get(f"/calls/{call_id}").get_data(as_text=True)
    return [re.sub(r"<[^>]+>|\s+", " ", item).strip() for item in re.findall(r"<li>(.*?)</li>", html, re.S)
            if "<time" in item]


@pytest.mark.parametrize("number, who", [("020 7946 0000", "the agent hung up"),
                                         ("020 7946 0105", "the customer hung up")])
def test_the_call_page_says_who_hung_up(app, client, auth, db, agent, number, who):
    call_id = dial(client, auth, db, number)
    incoming = agent.next("incoming")
    agent.act(incoming["call_sid"], "accept")
    wait_for(lambda: call_queries.get_call(db, call_id)["agent_answered_at"])
    if who == "the agent hung up":
        agent.act(incoming["call_sid"], "disconnect")
    finished(db, call_id, recording=True)
    lines = story(client, call_id)
    said = [line for line in lines if "hung up" in line or "side ended" in line or "ended from" in line]
    assert len(said) == 1 and who in said[0], lines
    assert [i for i, line in enumerate(lines) if "talking" in line] < [i for i, line in enumerate(lines) if who in line]


@pytest.mark.parametrize("app_config", [{"SANDBOX_CALLBACK_CHAOS": True}])
def test_callbacks_shuffled_and_repeated_still_leave_the_right_state(app, client, auth, db, agent):
    call_id = dial(client, auth, db, "020 7946 0000")
    incoming = agent.next("incoming")
    agent.act(incoming["call_sid"], "accept")
    time.sleep(0.2)
    agent.act(incoming["call_sid"], "disconnect")
    row = wait_for(lambda: (r := call_queries.get_call(db, call_id))["status"] == "completed" and r["recording_sid"] and r)
    wait_for(lambda: len([e for e in call_queries.events_for(db, call_id) if e["source"] == "status"]) == 4)
    leg = customer_leg(app, row)
    arrived = [e["sequence_number"] for e in call_queries.events_for(db, call_id) if e["source"] == "status"]
    assert sorted(arrived) == [0, 1, 2, 3] and arrived != [0, 1, 2, 3]
    assert row["duration"] == leg.duration and row["dial_result"] == "completed"
    assert row["last_sequence_number"] == 3


def test_app_with_the_wrong_auth_token_refuses_every_webhook_and_the_call_fails(app, client, auth, db, agent, caplog):
    app.config["TWILIO_AUTH_TOKEN"] = "0" * 32  # the app's copy only; the carrier signs with the real one
    call_id = dial(client, auth, db, "020 7946 0000")
    row = call_queries.get_call(db, call_id)
    leg = customer_leg(app, row)
    wait_for(lambda: leg.status == "completed")
    carrier = app.extensions["sandbox"]
    codes = {n["error_code"] for n in carrier.notifications if n["call_sid"] == leg.sid}
    assert 11200 in codes  # the TwiML fetch got 403: Twilio's application error
    assert leg.heard == ["We are sorry, an application error has occurred. Goodbye."]
    assert call_queries.get_call(db, call_id)["status"] == "queued"  # the app believed none of it
    assert caplog.text.count("without a valid Twilio signature") >= 3
    assert agent.events.empty()


def test_invalid_twiml_ends_the_call_with_an_application_error(app, twilio_client, live_server):
    call = twilio_client.calls.create(to="+442079460000", from_=app.config["TWILIO_CALLER_ID"],
                                      url=f"{live_server}/healthz", method="GET")
    leg = app.extensions["sandbox"].calls[call.sid]
    wait_for(lambda: leg.status == "completed")
    assert 12100 in {n["error_code"] for n in app.extensions["sandbox"].notifications}
    assert leg.error_code == 12100


def test_recording_json_validates_and_media_is_a_wav(app, client, auth, db, agent, rest):
    call_id = dial(client, auth, db, "020 7946 0000")
    incoming = agent.next("incoming")
    agent.act(incoming["call_sid"], "accept")
    time.sleep(0.1)
    agent.act(incoming["call_sid"], "disconnect")
    row = finished(db, call_id, recording=True)
    body = rest.get(f"{rest.base}/Recordings/{row['recording_sid']}.json").json()
    jsonschema.validate(body, strict("recording"))
    assert body["call_sid"] == row["customer_call_sid"] and body["channels"] == 2 and body["source"] == "DialVerb"
    assert rest.get(f"{rest.base}/Recordings/{row['recording_sid']}.wav").content[:4] == b"RIFF"
    assert requests.get(f"{rest.base}/Recordings/{row['recording_sid']}.wav").status_code == 401


# --- device tokens ------------------------------------------------------------------------

def token_for(app, identity="alice_1", ttl=3600, secret=None, incoming=True, valid_until=None):
    cfg = app.config
    token = AccessToken(cfg["TWILIO_ACCOUNT_SID"], cfg["TWILIO_API_KEY_SID"], secret or cfg["TWILIO_API_KEY_SECRET"],
                        identity=identity, ttl=ttl, valid_until=valid_until)
    token.add_grant(VoiceGrant(incoming_allow=incoming, outgoing_application_sid=cfg["TWILIO_TWIML_APP_SID"]))
    return token.to_jwt()


@pytest.mark.parametrize("case, code", [
    ("expired", 20104), ("wrong secret", 20101), ("garbage", 20101), ("no incoming grant", 20101), ("none", 20101),
])
def test_device_registration_checks_the_token_as_twilio_does(app, live_server, case, code):
    token = {
        "expired": lambda: token_for(app, valid_until=int(time.time()) - 60),
        "wrong secret": lambda: token_for(app, secret="x" * 32),
        "garbage": lambda: "not.a.jwt",
        "no incoming grant": lambda: token_for(app, incoming=False),
        "none": lambda: None,
    }[case]()
    response = requests.post(f"{live_server}/sandbox/devices", json={"token": token})
    assert response.status_code == 401 and response.json()["code"] == code
    assert app.extensions["sandbox"].devices == {}


def test_a_device_keeps_its_registration_with_a_fresh_token(app, live_server):
    device = ScriptedDevice(live_server, token_for(app, ttl=20))
    first = device.body["ttl"]
    response = requests.post(f"{device.base}/{device.id}/token", json={"token": token_for(app, ttl=3600)})
    assert response.status_code == 200 and response.json()["ttl"] > first
    bad = requests.post(f"{device.base}/{device.id}/token", json={"token": token_for(app, identity="mallory")})
    assert bad.status_code == 401 and bad.json()["code"] == 20101
    device.close()


@pytest.mark.parametrize("app_config", [{"SANDBOX_TIME_SCALE": 0.02}])
def test_an_expiring_registration_gets_20104(app, live_server):
    device = ScriptedDevice(live_server, token_for(app, ttl=2))
    error = device.next("error", timeout=5)
    assert error["code"] == 20104
    wait_for(lambda: device.id not in app.extensions["sandbox"].devices)


# --- TwiML semantics ----------------------------------------------------------------------

def run_twiml(app, twilio_client, twiml, to="+442079460000"):
    call = twilio_client.calls.create(to=to, from_=app.config["TWILIO_CALLER_ID"], twiml=twiml)
    leg = app.extensions["sandbox"].calls[call.sid]
    wait_for(lambda: not leg.live)
    return leg


def test_verbs_run_in_order_and_hangup_ends_the_document(app, twilio_client):
    leg = run_twiml(app, twilio_client, '<Response><Say>One</Say><Play>http://x.example/a.wav</Play>'
                                        '<Pause length="2"/><Say loop="2">Two</Say><Hangup/><Say>Never</Say></Response>')
    assert leg.heard == ["One", "Two"] and leg.status == "completed" and leg.duration >= 5


def test_dial_number_without_action_continues_with_the_next_verb(app, twilio_client):
    leg = run_twiml(app, twilio_client, '<Response><Dial timeout="10"><Number>+442079460001</Number></Dial>'
                                        '<Say>After the dial</Say></Response>')
    children = [c for c in app.extensions["sandbox"].calls.values() if c.parent_sid == leg.sid]
    assert [(c.direction, c.status, c.to) for c in children] == [("outbound-dial", "busy", "+442079460001")]
    assert leg.heard == ["After the dial"]


def test_dial_number_that_answers_bridges_and_records(app, twilio_client):
    leg = run_twiml(app, twilio_client, '<Response><Dial record="record-from-answer"><Number>+442079460105</Number>'
                                        '</Dial></Response>')
    child = next(c for c in app.extensions["sandbox"].calls.values() if c.parent_sid == leg.sid)
    assert child.status == "completed" and 9 <= child.duration <= 11
    recording = next(r for r in app.extensions["sandbox"].recordings.values() if r.call_sid == leg.sid)
    assert recording.channels == 1 and recording.duration == child.duration


def test_redirect_verb_fetches_the_apps_twiml_signed(app, twilio_client, live_server, client, auth, db):
    auth.create("alice")
    call = call_queries.create_call(db, agent_by_username(db, "alice")["id"], "+442079460000")
    leg = run_twiml(app, twilio_client,
                    f'<Response><Redirect>{live_server}/twiml/customer-to-agent?call={call["id"]}</Redirect></Response>')
    assert leg.heard == [HOLD, FALLBACK]  # nobody registered as alice
    codes = {n["error_code"] for n in app.extensions["sandbox"].notifications}
    assert codes == {31603}  # "no browser registered"; no 11200: every fetch passed the signature check


def test_rest_redirect_replaces_the_running_twiml(app, twilio_client):
    call = twilio_client.calls.create(to="+442079460000", from_=app.config["TWILIO_CALLER_ID"], twiml=SLEEPY_TWIML)
    leg = app.extensions["sandbox"].calls[call.sid]
    wait_for(lambda: leg.status == "in-progress")
    twilio_client.calls(call.sid).update(twiml="<Response><Say>Redirected</Say></Response>")
    wait_for(lambda: not leg.live)
    assert leg.heard == ["Redirected"] and leg.duration < 60


def test_an_application_error_is_reported_to_the_app_with_the_final_status(app, twilio_client, live_server, auth, db):
    auth.create("alice")
    call = call_queries.create_call(db, agent_by_username(db, "alice")["id"], "+442079460000")
    twilio_client.calls.create(to="+442079460000", from_=app.config["TWILIO_CALLER_ID"],
                               url=f"{live_server}/no-such-twiml", status_callback=f"{live_server}/twiml/status?call={call['id']}",
                               status_callback_event=["initiated", "ringing", "answered", "completed"])
    row = wait_for(lambda: (r := call_queries.get_call(db, call["id"]))["status"] == "completed" and r)
    assert row["error_code"] == 11200 and "could not fetch the call instructions" in row["error_message"]


def test_control_page_lists_rules_calls_and_rings_the_number(app, client, auth, live_server):
    auth.create("alice")
    auth.login("alice")
    page = client.get("/sandbox").get_data(as_text=True)
    assert "Simulated customers" in page and "The line is busy (SIP 486)." in page
    response = client.post("/sandbox/inbound", data={"from": "+442079460100", "csrf_token": auth.csrf()})
    assert response.status_code == 303
    carrier = app.extensions["sandbox"]
    leg = wait_for(lambda: next((c for c in carrier.calls.values() if c.direction == "inbound" and not c.live), None))
    assert leg.from_ == "+442079460100" and leg.to == app.config["TWILIO_CALLER_ID"]
    page = client.get("/sandbox").get_data(as_text=True)
    assert leg.sid in page and "/twiml/inbound: HTTP" not in page  # the dialer answers its number


def test_control_page_shows_an_agent_only_their_own_calls_and_a_supervisor_every_call(app, client, auth, db, agent):
    call_id = dial(client, auth, db, "020 7946 0000")  # alice's call (the `agent` fixture is her phone)
    incoming = agent.next("incoming")
    leg = customer_leg(app, call_queries.get_call(db, call_id))
    identity = agent_by_username(db, "alice")["identity"]
    page = client.get("/sandbox").get_data(as_text=True)
    assert leg.sid in page and incoming["call_sid"] in page and "+442079460000" in page and identity in page
    auth.create("bob")
    auth.create("sue", supervisor=True)
    for name, sees in (("bob", False), ("sue", True)):
        other = app.test_client()
        auth.login(name, client=other)
        page = other.get("/sandbox").get_data(as_text=True)
        for secret in (leg.sid, incoming["call_sid"], "+442079460000", identity):
            assert (secret in page) == sees, (name, secret)
        assert ("a supervisor sees every call" in page) != sees


def test_sandbox_routes_exist_only_in_sandbox_mode(tmp_path):
    from dialer import create_app
    twilio = create_app({
        "TWILIO_ACCOUNT_SID": "AC" + "1" * 32, "TWILIO_AUTH_TOKEN": "t" * 32, "TWILIO_API_KEY_SID": "SK" + "2" * 32,
        "TWILIO_API_KEY_SECRET": "s" * 32, "TWILIO_TWIML_APP_SID": "AP" + "3" * 32, "TWILIO_CALLER_ID": "+442079460000",
        "DATABASE": str(tmp_path / "x.sqlite"),
    }, instance_path=str(tmp_path))
    assert twilio.config["TELEPHONY"] == "twilio" and twilio.config["TWILIO_API_BASE_URL"] is None
    assert not [r.rule for r in twilio.url_map.iter_rules() if r.rule.startswith("/sandbox")]
    assert twilio.test_client().get("/sandbox").status_code == 404
    assert "sandbox" not in twilio.extensions


def test_delete_removes_a_finished_call_and_unknown_resources_are_20404(app, twilio_client, rest):
    call = twilio_client.calls.create(to="+442079460001", from_=app.config["TWILIO_CALLER_ID"], twiml=SLEEPY_TWIML)
    live = rest.delete(f"{rest.base}/Calls/{call.sid}.json")
    if live.status_code == 400:
        assert live.json()["code"] == 20009
    wait_for(lambda: twilio_client.calls(call.sid).fetch().status == "busy")
    assert twilio_client.calls(call.sid).delete() is True
    assert rest.get(f"{rest.base}/Calls/{call.sid}.json").json()["code"] == 20404
    missing = rest.get(f"{rest.base}/Queues.json")
    assert missing.status_code == 404 and missing.json()["code"] == 20404


def test_a_recording_twilio_no_longer_has_says_so(client, auth, db, live_server):
    auth.create("alice")
    auth.login("alice")
    call = call_queries.create_call(db, agent_by_username(db, "alice")["id"], "+442079460000")
    db["calls"].update(call["id"], {"recording_sid": "RE" + "9" * 32})
    response = client.get(f"/calls/{call['id']}/recording.wav")
    assert response.status_code == 404 and response.get_data(as_text=True) == "Twilio no longer has this recording."


def test_a_recording_when_twilio_cannot_be_reached_says_so(app, client, auth, db):
    app.config["TWILIO_API_BASE_URL"] = "http://127.0.0.1:9"  # nothing listens there
    auth.create("alice")
    auth.login("alice")
    call = call_queries.create_call(db, agent_by_username(db, "alice")["id"], "+442079460000")
    db["calls"].update(call["id"], {"recording_sid": "RE" + "9" * 32})
    response = client.get(f"/calls/{call['id']}/recording.wav")
    assert response.status_code == 502 and "could not reach Twilio" in response.get_data(as_text=True)


# --- a lost last callback: Twilio's API is asked (dialer/reconcile.py) -------------------------------

def lose_the_last_callback(db, call_id):
    """The database as it would be had the customer's `completed` callback never arrived."""
    with db.conn:
        db.execute("DELETE FROM call_events WHERE call_id = ? AND source = 'status' AND status = 'completed'", [call_id])
        db.execute("UPDATE calls SET status = 'in-progress', ended_at = NULL, duration = NULL WHERE id = ?", [call_id])
        db.execute("UPDATE agents SET presence = 'on-call' WHERE id = (SELECT agent_id FROM calls WHERE id = ?)", [call_id])


def talking(client, auth, db, agent):
    """A call alice placed and answered: its id and her phone's incoming call."""
    call_id = dial(client, auth, db, "020 7946 0000")
    incoming = agent.next("incoming")
    agent.act(incoming["call_sid"], "accept")
    wait_for(lambda: call_queries.get_call(db, call_id)["status"] == "in-progress")
    return call_id, incoming


def test_a_call_whose_completed_callback_was_lost_is_ended_from_twilios_api_and_frees_the_agent(
        app, client, auth, db, agent, caplog):
    call_id, incoming = talking(client, auth, db, agent)
    time.sleep(0.3)
    agent.act(incoming["call_sid"], "disconnect")
    real = finished(db, call_id)
    wait_for(lambda: call_queries.get_call(db, call_id)["dial_result"])
    lose_the_last_callback(db, call_id)
    alice = agent_by_username(db, "alice")["id"]
    assert call_queries.live_call(db, alice)["id"] == call_id  # stuck: she could not place another call

    now = datetime.now(timezone.utc)
    assert reconcile.overdue(db, now) == []  # too soon: the callback may still be on its way
    later = now + reconcile.QUIET + timedelta(seconds=1)
    assert [row[0] for row in reconcile.overdue(db, later)] == [call_id]
    assert reconcile.run(app, later) == [call_id]
    row = call_queries.get_call(db, call_id)
    assert (row["status"], row["duration"]) == ("completed", real["duration"])  # Twilio's own figures
    assert row["answered_at"] <= row["ended_at"] <= datetime.now(timezone.utc).isoformat()
    assert call_queries.live_call(db, alice) is None
    assert agent_by_username(db, "alice")["presence"] == "wrap-up"
    page = html.unescape(client.get(f"/calls/{call_id}").get_data(as_text=True))
    assert "its last callback never came: Twilio's API was asked" in page
    ended_line = [when for when, text in history.timeline(row, call_queries.events_for(db, call_id)) if "never came" in text]
    assert ended_line == [row["ended_at"]]  # Twilio's end time, not when the dialer asked
    assert "its last status callback never came; Twilio says completed" in caplog.text
    assert reconcile.overdue(db, later + reconcile.RECHECK) == []  # ended: never asked again


def test_a_quiet_live_call_is_asked_about_once_per_recheck_and_left_live_an_unknown_one_logged(
        app, client, auth, db, agent, caplog):
    call_id, incoming = talking(client, auth, db, agent)
    now = datetime.now(timezone.utc)
    later = now + reconcile.RECHECK + timedelta(seconds=1)
    assert reconcile.overdue(db, now + reconcile.QUIET * 2) == []  # talking, the <Dial> not over: no hurry
    assert reconcile.run(app, later) == []  # a long talk: asked, still in progress, left as it is
    assert call_queries.get_call(db, call_id)["status"] == "in-progress"
    assert reconcile.overdue(db, later + timedelta(seconds=10)) == []  # not asked again so soon
    other = call_queries.create_call(db, agent_by_username(db, "alice")["id"], "+442079460001")
    with db.conn:
        db.execute("UPDATE calls SET customer_call_sid = ?, status = 'ringing' WHERE id = ?", ["CA" + "e" * 32, other["id"]])
    assert reconcile.run(app, later + reconcile.RECHECK * 2) == []  # Twilio knows no such call: logged, left
    assert f"call {other['id']}: asking Twilio about CA{'e' * 32} failed" in caplog.text
    agent.act(incoming["call_sid"], "disconnect")
    finished(db, call_id)
