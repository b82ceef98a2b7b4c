"""The sandbox's inbound side, end to end over HTTP: callers ringing the number, <Enqueue> and its wait URL,
<Dial><Queue>, REST redirects out of a queue, <Gather>, <Record>, and the simulated callers (TWILIO.md 9).

A small TwiML app registered on the test app answers the number (so these tests do not need the dialer's
own /twiml/inbound) and checks every request's X-Twilio-Signature as the app's RequestValidator does.
"""
import io
import time
import wave

import pytest
import requests
from flask import Response, request
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from dialer import csrf
from dialer.telephony import BaseUrlHttpClient

from .conftest import wait_for

TALKS = "+442079460100"
GIVES_UP_AFTER_10 = "+442079460106"
PRESSES_1_AFTER_5 = "+442079460057"
SPEAKS_15_THEN_HANGS_UP = "+442079460158"
HANGS_UP_AT_THE_BEEP = "+442079460008"
SAYS_NOTHING = "+442079460009"
STANDARD = ("AccountSid", "ApiVersion", "CallSid", "CallStatus", "Direction", "From", "To", "Caller", "Called")


class TwimlApp:
    """Documents by name at /test-twiml/<name>; every request kept as (name, params, signature valid)."""

    def __init__(self, app):
        self.docs = {}
        self.requests = []
        self.base = app.config["PUBLIC_BASE_URL"] + "/test-twiml/"
        validator = RequestValidator(app.config["TWILIO_AUTH_TOKEN"])
        public = app.config["PUBLIC_BASE_URL"]

        def view(name):
            form = request.form if request.method == "POST" else {}
            url = public + request.full_path.rstrip("?")
            valid = validator.validate(url, form, request.headers.get("X-Twilio-Signature", ""))
            params = {**request.args.to_dict(), **form.to_dict()} if form else request.args.to_dict()
            self.requests.append((name, params, valid))
            doc = self.docs.get(name, "<Response/>")
            return Response(doc(params) if callable(doc) else doc, mimetype="text/xml")

        view.__name__ = "test_twiml"
        app.add_url_rule("/test-twiml/<path:name>", "test_twiml", csrf.exempt(view), methods=["GET", "POST"])

    def url(self, name):
        return self.base + name

    def seen(self, name, **match):
        return [p for n, p, _ in self.requests if n == name and all(p.get(k) == v for k, v in match.items())]

    def names(self, call_sid):
        """The documents and callbacks requested for one call, in order."""
        return [n for n, p, _ in self.requests if p.get("CallSid") == call_sid]


@pytest.fixture
def twiml(app):
    return TwimlApp(app)


@pytest.fixture
def base(twiml, live_server):
    return live_server


@pytest.fixture
def twilio_client(app, base):
    cfg = app.config
    return Client(cfg["TWILIO_API_KEY_SID"], cfg["TWILIO_API_KEY_SECRET"], cfg["TWILIO_ACCOUNT_SID"],
                  http_client=BaseUrlHttpClient(cfg["TWILIO_API_BASE_URL"]))


@pytest.fixture
def number(app, twiml, twilio_client):
    """The sandbox's Twilio number, its voice URL and status callback pointed at the test's TwiML app."""
    found = twilio_client.incoming_phone_numbers.list(phone_number=app.config["TWILIO_CALLER_ID"])
    assert len(found) == 1
    found[0].update(voice_url=twiml.url("voice"), voice_method="POST", status_callback=twiml.url("status"))
    return found[0]


@pytest.fixture
def carrier(app):
    return app.extensions["sandbox"]


def call_in(app, base, caller=TALKS, auth=None):
    """A customer rings the number through the sandbox's test endpoint; the call's SID."""
    cfg = app.config
    response = requests.post(f"{base}/sandbox/test/inbound", json={"from": caller},
                             auth=auth or (cfg["TWILIO_ACCOUNT_SID"], cfg["TWILIO_AUTH_TOKEN"]), timeout=5)
    assert response.status_code == 201, response.text
    return response.json()["call_sid"]


def ended(carrier, sid):
    return wait_for(lambda: not carrier.calls[sid].live and carrier.calls[sid])


def all_signed_and_no_errors(twiml, carrier):
    assert twiml.requests and all(valid for _, _, valid in twiml.requests)
    assert carrier.notifications == []


ENQUEUE = '<Response><Enqueue waitUrl="wait" action="queue-result">support</Enqueue></Response>'
WAIT = "<Response><Say>Please hold</Say><Pause length=\"1\"/></Response>"


# --- <Enqueue> and its wait URL -----------------------------------------------------------------

def test_enqueue_requests_the_wait_url_with_queue_parameters_and_again_when_it_runs_out(app, base, twiml, number, carrier):
    twiml.docs.update(voice=ENQUEUE, wait=WAIT)
    first = call_in(app, base)
    wait_for(lambda: len(twiml.seen("wait", CallSid=first)) >= 3)
    params = twiml.seen("wait", CallSid=first)[0]
    assert {k: params[k] for k in ("QueuePosition", "CurrentQueueSize", "MaxQueueSize", "QueueTime", "AvgQueueTime")} == \
        {"QueuePosition": "1", "CurrentQueueSize": "1", "MaxQueueSize": "1000", "QueueTime": "0", "AvgQueueTime": "0"}
    assert params["QueueSid"].startswith("QU") and len(params["QueueSid"]) == 34
    assert all(k in params for k in STANDARD)
    assert (params["Direction"], params["CallStatus"], params["From"], params["To"]) == \
        ("inbound", "in-progress", TALKS, app.config["TWILIO_CALLER_ID"])
    later = twiml.seen("wait", CallSid=first)[2]
    assert int(later["QueueTime"]) >= 2 and later["QueueSid"] == params["QueueSid"]  # ~1.4 s of document a round

    second = call_in(app, base, "+442079460200")
    behind = wait_for(lambda: twiml.seen("wait", CallSid=second))[0]
    assert (behind["QueuePosition"], behind["CurrentQueueSize"]) == ("2", "2")
    assert int(behind["AvgQueueTime"]) >= 1
    assert carrier.calls[first].heard[:2] == ["Please hold", "Please hold"]
    all_signed_and_no_errors(twiml, carrier)


def test_caller_who_gives_up_in_the_queue_gets_hangup_then_completed(app, base, twiml, number, carrier):
    twiml.docs.update(voice=ENQUEUE, wait=WAIT)
    sid = call_in(app, base, GIVES_UP_AFTER_10)
    leg = ended(carrier, sid)
    wait_for(lambda: twiml.seen("status", CallSid=sid))
    result = twiml.seen("queue-result", CallSid=sid)
    assert len(result) == 1 and result[0]["QueueResult"] == "hangup" and result[0]["CallStatus"] == "completed"
    assert result[0]["QueueSid"].startswith("QU") and 9 <= int(result[0]["QueueTime"]) <= 11
    names = twiml.names(sid)
    assert names[0] == "voice" and names[-2:] == ["queue-result", "status"]
    status = twiml.seen("status", CallSid=sid)
    assert len(status) == 1  # a number's status callback: the end of the call only
    assert (status[0]["CallStatus"], status[0]["SequenceNumber"], status[0]["Direction"]) == ("completed", "0", "inbound")
    assert leg.status == "completed" and 9 <= leg.duration <= 11
    assert app.extensions["sandbox_engine"].queues.get("support").members == []
    all_signed_and_no_errors(twiml, carrier)


def test_a_full_queue_refuses_with_queue_full_and_no_queue_sid(app, base, twiml, number, carrier):
    twiml.docs.update(voice='<Response><Enqueue waitUrl="wait" action="queue-result" maxQueueSize="1">small</Enqueue></Response>',
                      wait=WAIT, **{"queue-result": "<Response><Say>Sorry, we are busy</Say></Response>"})
    first = call_in(app, base)
    wait_for(lambda: twiml.seen("wait", CallSid=first))
    second = call_in(app, base, "+442079460200")
    leg = ended(carrier, second)
    result = twiml.seen("queue-result", CallSid=second)
    assert [r["QueueResult"] for r in result] == ["queue-full"]
    assert "QueueSid" not in result[0] and "QueueTime" not in result[0]
    assert leg.heard == ["Sorry, we are busy"] and not twiml.seen("wait", CallSid=second)
    assert twiml.seen("wait", CallSid=first)[-1]["MaxQueueSize"] == "1"
    assert {n["error_code"] for n in carrier.notifications} == {14207}


def test_wait_document_verbs_play_redirect_and_hangup(app, base, twiml, number, carrier):
    """<Play loop> of a URL takes its time without fetching it; <Redirect> chains; <Hangup> leaves and ends."""
    twiml.docs.update(voice=ENQUEUE, wait='<Response><Play loop="2">http://music.example/hold.mp3#t=0,3</Play>'
                                           '<Redirect>wait-2</Redirect></Response>',
                      **{"wait-2": "<Response><Say>Goodbye</Say><Hangup/></Response>"})
    sid = call_in(app, base)
    leg = ended(carrier, sid)
    redirected = twiml.seen("wait-2", CallSid=sid)
    assert len(redirected) == 1 and 5 <= int(redirected[0]["QueueTime"]) <= 7  # two plays of a 3 s file
    assert redirected[0]["QueuePosition"] == "1"
    assert [r["QueueResult"] for r in twiml.seen("queue-result", CallSid=sid)] == ["hangup"]
    assert leg.heard == ["Goodbye"] and leg.status == "completed"
    all_signed_and_no_errors(twiml, carrier)


def test_leave_runs_the_action_and_without_action_the_next_verb(app, base, twiml, number, carrier):
    twiml.docs.update(voice='<Response><Enqueue waitUrl="wait">support</Enqueue><Say>You left the queue</Say></Response>',
                      wait="<Response><Pause length=\"2\"/><Leave/></Response>")
    sid = call_in(app, base)
    leg = ended(carrier, sid)
    assert leg.heard == ["You left the queue"] and twiml.names(sid)[:2] == ["voice", "wait"]


# --- dequeuing --------------------------------------------------------------------------------

def agent_dials_queue(app, twilio_client, twiml, queue="support", whisper=True):
    """An agent's leg (a REST call that a simulated customer answers) whose TwiML is <Dial><Queue>."""
    url = f' url="{twiml.url("whisper")}"' if whisper else ""
    call = twilio_client.calls.create(
        to="+442079460000", from_=app.config["TWILIO_CALLER_ID"],
        twiml=f'<Response><Dial timeout="20" action="{twiml.url("dial-result")}"><Queue{url}>{queue}</Queue></Dial></Response>')
    return call.sid


def test_dial_queue_bridges_the_longest_waiting_caller_and_both_actions_follow_the_bridge(
        app, base, twiml, number, carrier, twilio_client):
    twiml.docs.update(voice=ENQUEUE, wait=WAIT, whisper="<Response><Say>Connecting you to an agent</Say></Response>",
                      **{"queue-result": "<Response><Say>Thank you for calling</Say><Hangup/></Response>",
                         "dial-result": "<Response><Hangup/></Response>"})
    first = call_in(app, base)
    wait_for(lambda: twiml.seen("wait", CallSid=first))
    second = call_in(app, base, "+442079460200")
    wait_for(lambda: twiml.seen("wait", CallSid=second))
    agent = agent_dials_queue(app, twilio_client, twiml)

    whisper = wait_for(lambda: twiml.seen("whisper"))[0]
    assert whisper["CallSid"] == first and whisper["DequeingCallSid"] == agent
    assert whisper["QueueSid"].startswith("QU") and int(whisper["QueueTime"]) >= 1
    wait_for(lambda: first in app.extensions["sandbox_engine"].connected)
    behind = wait_for(lambda: [p for p in twiml.seen("wait", CallSid=second) if p["CurrentQueueSize"] == "1"])
    assert behind[0]["QueuePosition"] == "1"  # the second caller moved up; first come, first served
    assert not twiml.seen("queue-result", CallSid=first)  # bridged: the action waits for the bridge to end
    time.sleep(0.2)  # ten simulated seconds of talk
    twilio_client.calls(agent).update(status="completed")

    leg = ended(carrier, first)
    result = twiml.seen("queue-result", CallSid=first)
    assert [r["QueueResult"] for r in result] == ["bridged"] and result[0]["CallStatus"] == "in-progress"
    assert result[0]["QueueSid"] == whisper["QueueSid"]
    assert int(result[0]["QueueTime"]) <= int(whisper["QueueTime"]) + 3  # time in the queue, not the talk after it
    assert leg.heard[-2:] == ["Connecting you to an agent", "Thank you for calling"]
    dial = wait_for(lambda: twiml.seen("dial-result"))[0]
    assert (dial["CallSid"], dial["DialCallStatus"], dial["DialBridged"], dial["DialCallSid"]) == \
        (agent, "completed", "true", first)
    assert int(dial["DialCallDuration"]) >= 8 and dial["QueueSid"] == whisper["QueueSid"]
    assert dial["DequeingCallSid"] == agent
    assert carrier.calls[second].live  # still waiting
    all_signed_and_no_errors(twiml, carrier)


def test_dial_queue_with_nobody_waiting_times_out_and_an_unknown_queue_fails(app, base, twiml, number, carrier, twilio_client):
    twiml.docs.update(voice='<Response><Enqueue waitUrl="wait" action="queue-result">support</Enqueue></Response>',
                      wait="<Response><Leave/></Response>")
    sid = call_in(app, base)
    ended(carrier, sid)  # the queue exists now, and is empty
    agent_dials_queue(app, twilio_client, twiml, whisper=False)
    agent_dials_queue(app, twilio_client, twiml, queue="nobody-made-this", whisper=False)
    results = wait_for(lambda: len(twiml.seen("dial-result")) == 2 and twiml.seen("dial-result"))
    assert sorted(r["DialCallStatus"] for r in results) == ["failed", "no-answer"]
    assert all(r["DialBridged"] == "false" for r in results)


# --- REST redirects out of the queue ------------------------------------------------------------

@pytest.mark.parametrize("how", ["twiml", "url"])
def test_rest_redirect_takes_the_caller_out_of_the_queue_as_redirected(app, base, twiml, number, carrier, twilio_client, how):
    offer = "<Response><Say>An agent is free</Say></Response>"
    twiml.docs.update(voice=ENQUEUE, wait=WAIT, offer=offer)
    sid = call_in(app, base)
    wait_for(lambda: twiml.seen("wait", CallSid=sid))
    if how == "twiml":
        twilio_client.calls(sid).update(twiml=offer)
    else:
        twilio_client.calls(sid).update(url=twiml.url("offer"), method="POST")
    leg = ended(carrier, sid)
    result = twiml.seen("queue-result", CallSid=sid)
    assert [r["QueueResult"] for r in result] == ["redirected"] and result[0]["QueueSid"].startswith("QU")
    assert leg.heard[-1] == "An agent is free" and leg.status == "completed"
    # The call's end reaches the status callback a moment after the call ends, as Twilio's does.
    names = wait_for(lambda: "status" in twiml.names(sid) and twiml.names(sid))
    assert names.index("queue-result") < len(names) - 1  # requested right away, before the call went on
    assert app.extensions["sandbox_engine"].queues.get("support").members == []
    with pytest.raises(TwilioRestException) as error:
        twilio_client.calls(sid).update(twiml=offer)
    assert error.value.code == 21220


def test_url_and_twiml_together_are_refused(app, base, twiml, number, carrier, rest_auth):
    twiml.docs.update(voice=ENQUEUE, wait=WAIT)
    sid = call_in(app, base)
    wait_for(lambda: twiml.seen("wait", CallSid=sid))
    response = requests.post(f"{app.config['TWILIO_API_BASE_URL']}/2010-04-01/Accounts/{app.config['TWILIO_ACCOUNT_SID']}"
                             f"/Calls/{sid}.json", data={"Url": twiml.url("x"), "Twiml": "<Response/>"}, auth=rest_auth)
    assert response.status_code == 400 and response.json()["code"] == 21205
    assert carrier.calls[sid].live


@pytest.fixture
def rest_auth(app):
    return app.config["TWILIO_ACCOUNT_SID"], app.config["TWILIO_AUTH_TOKEN"]


# --- <Gather> in the wait document, and voicemail -----------------------------------------------

def test_caller_presses_1_in_the_queue_leaves_and_records_a_voicemail(app, base, twiml, number, carrier, rest_auth):
    twiml.docs.update(
        voice=ENQUEUE,
        wait='<Response><Gather numDigits="1" action="key" timeout="3"><Say>Press 1 to leave a message</Say></Gather>'
             '<Pause length="1"/></Response>',
        key=lambda p: "<Response><Leave/></Response>" if p.get("Digits") == "1" else "<Response/>",
        **{"queue-result": '<Response><Say>Leave a message after the beep</Say>'
                           '<Record action="voicemail" maxLength="120" recordingStatusCallback="recording"/></Response>',
           "voicemail": "<Response><Say>Thank you</Say><Hangup/></Response>"})
    sid = call_in(app, base, PRESSES_1_AFTER_5)
    leg = ended(carrier, sid)
    key = twiml.seen("key", CallSid=sid)
    assert len(key) == 1 and key[0]["Digits"] == "1" and int(key[0]["QueueTime"]) >= 5
    result = twiml.seen("queue-result", CallSid=sid)
    assert [r["QueueResult"] for r in result] == ["leave"] and int(result[0]["QueueTime"]) >= 5
    voicemail = twiml.seen("voicemail", CallSid=sid)[0]
    assert voicemail["RecordingDuration"] == "11"  # 6 s of message and the 5 s of silence that ended it
    assert "Digits" not in voicemail and voicemail["RecordingSid"].startswith("RE")
    assert leg.heard[-1] == "Thank you"
    recording = wait_for(lambda: twiml.seen("recording", CallSid=sid))[0]
    assert (recording["RecordingStatus"], recording["RecordingDuration"], recording["RecordingSource"]) == \
        ("completed", "6", "RecordVerb")  # trim-silence: the file is the message alone
    body = requests.get(voicemail["RecordingUrl"] + ".json", auth=rest_auth).json()
    assert (body["duration"], body["channels"], body["source"], body["call_sid"]) == ("6", 1, "RecordVerb", sid)
    all_signed_and_no_errors(twiml, carrier)


def test_record_action_gets_digits_hangup_and_the_recording_is_a_mono_wav(app, base, twiml, number, carrier, rest_auth):
    twiml.docs.update(voice='<Response><Say>Leave a message</Say><Record action="voicemail" recordingStatusCallback="recording"'
                            ' recordingStatusCallbackMethod="POST" transcribe="true"/></Response>')
    sid = call_in(app, base, SPEAKS_15_THEN_HANGS_UP)
    leg = ended(carrier, sid)
    action = twiml.seen("voicemail", CallSid=sid)
    assert len(action) == 1
    assert (action[0]["Digits"], action[0]["RecordingDuration"], action[0]["CallStatus"]) == ("hangup", "15", "completed")
    assert all(k in action[0] for k in STANDARD)
    recording = wait_for(lambda: twiml.seen("recording", CallSid=sid))[0]
    assert recording["RecordingSid"] == action[0]["RecordingSid"] and recording["RecordingUrl"] == action[0]["RecordingUrl"]
    assert (recording["RecordingStatus"], recording["RecordingDuration"], recording["RecordingChannels"]) == ("completed", "15", "1")
    media = requests.get(action[0]["RecordingUrl"] + ".wav", auth=rest_auth)
    assert media.status_code == 200 and media.headers["Content-Type"].startswith("audio/")
    with wave.open(io.BytesIO(media.content)) as w:
        assert w.getnchannels() == 1 and round(w.getnframes() / w.getframerate()) == 15
    assert twiml.names(sid)[:2] == ["voice", "voicemail"] and twiml.seen("status", CallSid=sid)[0]["CallStatus"] == "completed"
    assert leg.status == "completed" and leg.duration >= 15


def test_do_not_trim_keeps_the_silence_that_ended_the_recording(app, base, twiml, number, carrier, rest_auth):
    twiml.docs.update(voice='<Response><Record action="voicemail" trim="do-not-trim" timeout="3" playBeep="false"/></Response>',
                      voicemail="<Response><Hangup/></Response>")
    sid = call_in(app, base)
    ended(carrier, sid)
    action = twiml.seen("voicemail", CallSid=sid)[0]
    assert action["RecordingDuration"] == "9" and "Digits" not in action
    assert requests.get(action["RecordingUrl"] + ".json", auth=rest_auth).json()["duration"] == "9"


def test_a_caller_who_says_nothing_falls_through_with_no_recording(app, base, twiml, number, carrier):
    twiml.docs.update(voice='<Response><Record action="voicemail" recordingStatusCallback="recording" '
                            'recordingStatusCallbackEvent="completed absent"/><Say>I did not receive a recording</Say></Response>')
    sid = call_in(app, base, SAYS_NOTHING)
    leg = ended(carrier, sid)
    assert not twiml.seen("voicemail") and leg.heard == ["I did not receive a recording"]
    absent = wait_for(lambda: twiml.seen("recording", CallSid=sid))[0]
    assert (absent["RecordingStatus"], absent["ErrorCode"]) == ("absent", "16101")
    assert not [r for r in carrier.recordings.values() if r.call_sid == sid]


def test_a_caller_who_hangs_up_at_the_beep_leaves_an_absent_recording(app, base, twiml, number, carrier, rest_auth):
    twiml.docs.update(voice='<Response><Record action="voicemail" recordingStatusCallback="recording"/></Response>')
    sid = call_in(app, base, HANGS_UP_AT_THE_BEEP)
    ended(carrier, sid)
    action = twiml.seen("voicemail", CallSid=sid)[0]
    assert (action["Digits"], action["RecordingDuration"]) == ("hangup", "0")
    fetched = requests.get(action["RecordingUrl"] + ".json", auth=rest_auth)
    assert fetched.status_code == 404 and fetched.json()["code"] == 20404
    time.sleep(0.1)  # the callback would come a simulated second later: the "absent" event was not asked for
    assert not twiml.seen("recording")


# --- <Gather> in a voice document -------------------------------------------------------------

def test_gather_with_no_keys_goes_on_to_the_next_verb(app, base, twiml, number, carrier):
    twiml.docs.update(voice='<Response><Gather action="menu" timeout="2"><Say>Press 1</Say></Gather><Say>No choice</Say></Response>')
    sid = call_in(app, base)
    leg = ended(carrier, sid)
    assert leg.heard == ["Press 1", "No choice"] and not twiml.seen("menu")


# --- the simulated callers and the way in ----------------------------------------------------------

def test_a_caller_who_gives_up_while_agents_ring_cancels_the_dial(app, base, twiml, number, carrier):
    twiml.docs.update(voice='<Response><Dial timeout="30" action="dial-result"><Number>+442079460002</Number></Dial></Response>')
    sid = call_in(app, base, GIVES_UP_AFTER_10)
    leg = ended(carrier, sid)
    result = wait_for(lambda: twiml.seen("dial-result", CallSid=sid))[0]
    assert result["DialCallStatus"] == "canceled" and result["CallStatus"] == "completed"
    assert 9 <= leg.duration <= 11
    child = next(c for c in carrier.calls.values() if c.parent_sid == sid)
    assert child.status == "canceled"


def test_a_caller_who_talks_stays_until_the_call_is_hung_up(app, base, twiml, number, carrier, twilio_client):
    twiml.docs.update(voice="<Response><Pause length=\"600\"/></Response>")
    sid = call_in(app, base, TALKS)
    time.sleep(0.5)  # 25 simulated seconds: longer than any rule's patience
    assert carrier.calls[sid].live
    twilio_client.calls(sid).update(status="completed")
    assert ended(carrier, sid).status == "completed"


@pytest.mark.parametrize("auth, body, status, code", [
    (None, {"from": TALKS}, 401, 20003),
    ("wrong", {"from": TALKS}, 401, 20003),
    ("api key", {"from": "not a number"}, 400, 21212),
    ("api key", {"from": TALKS, "to": "+442079460999"}, 404, 21211),
])
def test_the_test_endpoint_wants_the_sandbox_account_and_says_what_is_wrong(app, base, number, auth, body, status, code):
    cfg = app.config
    credentials = {None: None, "wrong": (cfg["TWILIO_ACCOUNT_SID"], "0" * 32),
                   "api key": (cfg["TWILIO_API_KEY_SID"], cfg["TWILIO_API_KEY_SECRET"])}[auth]
    response = requests.post(f"{base}/sandbox/test/inbound", json=body, auth=credentials, timeout=5)
    assert response.status_code == status and response.json()["code"] == code and response.json()["message"]
    assert app.extensions["sandbox"].calls == {}


def test_the_test_endpoint_rings_the_number_with_its_urls(app, base, twiml, number, carrier):
    cfg = app.config
    response = requests.post(f"{base}/sandbox/test/inbound", json={"from": GIVES_UP_AFTER_10},
                             auth=(cfg["TWILIO_API_KEY_SID"], cfg["TWILIO_API_KEY_SECRET"]), timeout=5)
    assert response.status_code == 201
    body = response.json()
    assert body["from"] == GIVES_UP_AFTER_10 and body["to"] == cfg["TWILIO_CALLER_ID"]
    assert body["status_callback"] == twiml.url("status") and "10 s" in body["behaviour"]
    first = wait_for(lambda: twiml.seen("voice"))[0]
    assert (first["CallSid"], first["CallStatus"], first["Direction"], first["Caller"], first["Called"]) == \
        (body["call_sid"], "ringing", "inbound", GIVES_UP_AFTER_10, cfg["TWILIO_CALLER_ID"])


def test_control_page_lists_the_callers_and_rings_the_number(app, client, auth, base, twiml, number, carrier):
    twiml.docs.update(voice=ENQUEUE, wait=WAIT)
    auth.create("alice")
    auth.login("alice")
    page = client.get("/sandbox").get_data(as_text=True)
    assert "A customer calls in" in page and "gives up waiting" in page and "No queues yet" in page
    response = client.post("/sandbox/inbound", data={"from": GIVES_UP_AFTER_10, "csrf_token": auth.csrf(path="/sandbox")},
                           follow_redirects=True)
    assert "Hangs up 10 s after calling in" in response.get_data(as_text=True)
    sid = next(iter(carrier.calls))
    wait_for(lambda: twiml.seen("wait", CallSid=sid))
    page = client.get("/sandbox").get_data(as_text=True)
    assert "support" in page and GIVES_UP_AFTER_10 in page
    bad = client.post("/sandbox/inbound", data={"from": "<script>", "csrf_token": auth.csrf(path="/sandbox")},
                      follow_redirects=True)
    assert "is not a caller a phone network would present" in bad.get_data(as_text=True)
    assert "<script>" not in bad.get_data(as_text=True)
