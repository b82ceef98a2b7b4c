"""Twilio-facing webhooks: the TwiML, the call state rules, and signatures."""
import sys
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from dialer import calls as call_queries
from dialer.auth import agent_by_username

TWIML_PATHS = ["/twiml/customer-to-agent", "/twiml/dial-result", "/twiml/status", "/twiml/recording"]


@pytest.fixture
def agents(auth, db):
    auth.create("alice")
    auth.create("bob")
    return agent_by_username(db, "alice"), agent_by_username(db, "bob")


@pytest.fixture
def call(db, agents):
    return call_queries.create_call(db, agents[0]["id"], "+442079460000")


def signed_post(client, sign, path, params):
    """POST as Twilio does: our AccountSid in every webhook, signed for this URL."""
    params = {"AccountSid": client.application.config["TWILIO_ACCOUNT_SID"], **params}
    return client.post(path, data=params, headers=sign(path, params))


def test_customer_to_agent_twiml_dials_the_identity_of_the_agent_who_placed_the_call(app, client, sign, db, agents, call):
    base = app.config["PUBLIC_BASE_URL"]
    params = {"CallSid": "CA" + "1" * 32, "CallStatus": "in-progress"}
    response = signed_post(client, sign, f"/twiml/customer-to-agent?call={call['id']}", params)
    assert response.status_code == 200 and response.mimetype == "text/xml"
    root = ET.fromstring(response.data)
    say, dial = list(root)
    assert (say.tag, say.text) == ("Say", "Please hold while we connect you to an agent.")
    assert say.attrib == {"voice": "alice", "language": "en-GB"}
    assert dial.tag == "Dial"
    assert dial.attrib == {
        "timeout": "45", "record": "record-from-answer-dual", "answerOnBridge": "true",
        "action": f"{base}/twiml/dial-result?call={call['id']}",
        "recordingStatusCallback": f"{base}/twiml/recording?call={call['id']}",
    }
    client_el = dial.find("Client")
    assert client_el.findtext("Identity") == agents[0]["identity"]
    assert {p.get("name"): p.get("value") for p in client_el.findall("Parameter")} == {
        "call_id": str(call["id"]), "customer": "+442079460000"}

    bobs = call_queries.create_call(db, agents[1]["id"], "+12025550100")
    response = signed_post(client, sign, f"/twiml/customer-to-agent?call={bobs['id']}", params)
    identity = ET.fromstring(response.data).find("Dial/Client/Identity").text
    assert identity == agents[1]["identity"] != agents[0]["identity"]


def test_customer_to_agent_for_a_live_call_with_a_known_callsid_reads_it_and_writes_nothing(client, sign, db, call):
    """The answer is read; the `answered` status callback, not this fetch, moves the call and is kept."""
    leg = "CA" + "3" * 32
    signed_post(client, sign, f"/twiml/status?call={call['id']}",
                {"CallSid": leg, "CallStatus": "ringing", "SequenceNumber": "1"})
    before = [dict(row) for row in call_queries.events_for(db, call["id"])], call_queries.get_call(db, call["id"])
    response = signed_post(client, sign, f"/twiml/customer-to-agent?call={call['id']}",
                           {"CallSid": leg, "CallStatus": "in-progress"})
    assert ET.fromstring(response.data).find("Dial/Client/Identity") is not None
    assert ([dict(row) for row in call_queries.events_for(db, call["id"])], call_queries.get_call(db, call["id"])) == before
    assert before[1]["status"] == "ringing"

    signed_post(client, sign, f"/twiml/status?call={call['id']}",
                {"CallSid": leg, "CallStatus": "in-progress", "SequenceNumber": "2"})
    row = call_queries.get_call(db, call["id"])
    assert row["status"] == "in-progress" and row["answered_at"]


def test_customer_to_agent_before_any_callback_gave_the_callsid_is_kept_and_learns_it(client, sign, db, call):
    leg = "CA" + "4" * 32
    response = signed_post(client, sign, f"/twiml/customer-to-agent?call={call['id']}",
                           {"CallSid": leg, "CallStatus": "in-progress"})
    assert ET.fromstring(response.data).find("Dial/Client/Identity") is not None
    row = call_queries.get_call(db, call["id"])
    assert (row["customer_call_sid"], row["status"]) == (leg, "in-progress")
    assert [(e["source"], e["status"]) for e in call_queries.events_for(db, call["id"])][-1] == ("twiml", "in-progress")


@pytest.mark.parametrize("app_config", [{"HOLD_MESSAGE": "Un momento.", "SAY_VOICE": "Polly.Lucia",
                                         "SAY_LANGUAGE": "es-ES", "DIAL_TIMEOUT": 20, "DIAL_RECORD": "do-not-record",
                                         "ANSWER_ON_BRIDGE": False}])
def test_twiml_follows_the_settings(client, sign, call):
    response = signed_post(client, sign, f"/twiml/customer-to-agent?call={call['id']}", {"CallSid": "CA" + "2" * 32})
    root = ET.fromstring(response.data)
    assert root.find("Say").text == "Un momento."
    assert root.find("Say").attrib == {"voice": "Polly.Lucia", "language": "es-ES"}
    dial = root.find("Dial").attrib
    assert (dial["timeout"], dial["record"], dial["answerOnBridge"]) == ("20", "do-not-record", "false")


@pytest.mark.parametrize("dial_status, fallback", [
    ("completed", False), ("answered", False),
    ("busy", True), ("no-answer", True), ("failed", True), ("canceled", True),
])
def test_dial_result_plays_the_fallback_only_when_no_agent_took_the_call(client, sign, db, call, dial_status, fallback):
    params = {"CallSid": "CA" + "1" * 32, "CallStatus": "in-progress", "DialCallStatus": dial_status,
              "DialCallSid": "CA" + "3" * 32}
    response = signed_post(client, sign, f"/twiml/dial-result?call={call['id']}", params)
    root = ET.fromstring(response.data)
    verbs = [el.tag for el in root]
    if fallback:
        assert verbs == ["Say", "Hangup"]
        assert root.find("Say").text == "Sorry, no agents are available. Please try again later."
    else:
        assert verbs == ["Hangup"]
    row = call_queries.get_call(db, call["id"])
    assert (row["dial_result"], row["agent_call_sid"]) == (dial_status, "CA" + "3" * 32)


START = datetime.now(timezone.utc).replace(microsecond=0)  # the calls of these tests are placed after it


@pytest.fixture(autouse=True)
def start_now(monkeypatch):
    """START is when each test begins: a Timestamp more than 5 minutes before its call was placed is
    not believed, and a whole suite takes longer than that."""
    monkeypatch.setattr(sys.modules[__name__], "START", datetime.now(timezone.utc).replace(microsecond=0))


def at(seconds):
    """Twilio's Timestamp for START + seconds (RFC 2822), and the ISO text the dialer stores."""
    when = START + timedelta(seconds=seconds)
    return format_datetime(when), when.isoformat()


def status_params(status, seq, **extra):
    return {"CallSid": "CA" + "a" * 32, "CallStatus": status, "SequenceNumber": str(seq),
            "CallbackSource": "call-progress-events", "Timestamp": at(seq * 5)[0], **extra}


def test_shuffled_and_repeated_status_callbacks_leave_the_call_completed_with_its_duration(client, sign, db, call):
    path = f"/twiml/status?call={call['id']}"
    sequence = [
        status_params("completed", 3, CallDuration="42"),
        status_params("ringing", 1),
        status_params("completed", 3, CallDuration="42"),
        status_params("initiated", 0),
        status_params("in-progress", 2),
        status_params("ringing", 1),
    ]
    for params in sequence:
        assert signed_post(client, sign, path, params).status_code == 204
    row = call_queries.get_call(db, call["id"])
    assert row["status"] == "completed"
    assert row["duration"] == 42
    assert row["customer_call_sid"] == "CA" + "a" * 32
    assert row["last_sequence_number"] == 3
    assert row["ended_at"] == at(15)[1]
    status_events = [e for e in call_queries.events_for(db, call["id"]) if e["source"] == "status"]
    assert sorted(e["sequence_number"] for e in status_events) == [0, 1, 2, 3]


@pytest.mark.parametrize("later", ["queued", "initiated", "ringing", "in-progress", "busy", "no-answer"])
def test_a_terminal_status_is_final(client, sign, db, call, later):
    path = f"/twiml/status?call={call['id']}"
    signed_post(client, sign, path, status_params("completed", 3, CallDuration="10"))
    signed_post(client, sign, path, status_params(later, 4))
    assert call_queries.get_call(db, call["id"])["status"] == "completed"


def test_recording_callback_fills_the_recording_once(client, sign, db, call):
    params = {"CallSid": "CA" + "a" * 32, "RecordingSid": "RE" + "b" * 32, "RecordingStatus": "completed",
              "RecordingUrl": "https://api.twilio.com/2010-04-01/Accounts/AC/Recordings/RE" + "b" * 32,
              "RecordingDuration": "17", "RecordingChannels": "2", "RecordingSource": "DialVerb"}
    path = f"/twiml/recording?call={call['id']}"
    assert signed_post(client, sign, path, params).status_code == 204
    assert signed_post(client, sign, path, params).status_code == 204
    row = call_queries.get_call(db, call["id"])
    assert (row["recording_sid"], row["recording_duration"], row["recording_channels"]) == ("RE" + "b" * 32, 17, 2)
    assert len([e for e in call_queries.events_for(db, call["id"]) if e["source"] == "recording"]) == 1


@pytest.mark.parametrize("path", TWIML_PATHS)
@pytest.mark.parametrize("how", ["unsigned", "wrong signature", "signed for another URL", "signed with other params"])
def test_unsigned_or_wrongly_signed_twiml_requests_get_403_and_change_nothing(app, client, sign, db, call, path, how, caplog):
    url = f"{path}?call={call['id']}"
    params = {"CallSid": "CA" + "1" * 32, "CallStatus": "completed", "DialCallStatus": "busy"}
    headers = {
        "unsigned": {},
        "wrong signature": {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"},
        "signed for another URL": sign(url, params, url=app.config["PUBLIC_BASE_URL"] + f"{path}?call=999"),
        "signed with other params": sign(url, {**params, "CallStatus": "ringing"}),
    }[how]
    before = db["call_events"].count
    response = client.post(url, data=params, headers=headers)
    assert response.status_code == 403
    assert db["call_events"].count == before
    assert call_queries.get_call(db, call["id"])["status"] == "queued"
    assert "without a valid Twilio signature" in caplog.text


@pytest.mark.parametrize("query", ["", "?call=", "?call=9999", "?call=abc"])
@pytest.mark.parametrize("path", ["/twiml/status", "/twiml/recording"])
def test_callbacks_for_a_missing_or_unknown_call_get_a_clear_404_and_are_logged(client, sign, db, call, path, query, caplog):
    params = {"CallSid": "CA" + "f" * 32, "CallStatus": "completed", "RecordingStatus": "completed"}
    response = signed_post(client, sign, path + query, params)
    assert response.status_code == 404
    assert "Unknown call" in response.get_data(as_text=True)
    assert db["call_events"].count == 1  # only the app's own "created" event
    assert "CA" + "f" * 32 in caplog.text  # what Twilio sent is kept in the log, not dropped


def test_a_callback_without_call_id_is_matched_by_its_callsid(client, sign, db, call):
    signed_post(client, sign, f"/twiml/status?call={call['id']}", status_params("ringing", 1))
    response = signed_post(client, sign, "/twiml/status", status_params("in-progress", 2))
    assert response.status_code == 204
    assert call_queries.get_call(db, call["id"])["status"] == "in-progress"


@pytest.mark.parametrize("path", ["/twiml/customer-to-agent", "/twiml/dial-result"])
@pytest.mark.parametrize("query", ["", "?call=9999"])
def test_twiml_for_an_unknown_call_apologises_and_hangs_up(client, sign, db, path, query):
    response = signed_post(client, sign, path + query, {"CallSid": "CA" + "e" * 32})
    assert response.status_code == 200
    root = ET.fromstring(response.data)
    assert [el.tag for el in root] == ["Say", "Hangup"]
    assert "could not connect" in root.find("Say").text
    assert db["call_events"].count == 0


@pytest.mark.parametrize("dial_status, words", [
    ("no-answer", "missed by agent"), ("busy", "missed by agent"), ("failed", "missed by agent"),
    ("canceled", "customer hung up while waiting"), ("completed", "completed"),
])
def test_outcome_words_say_who_never_answered(client, sign, auth, db, call, dial_status, words):
    path = f"?call={call['id']}"
    signed_post(client, sign, "/twiml/status" + path, status_params("in-progress", 2))
    signed_post(client, sign, "/twiml/dial-result" + path, {"CallSid": "CA" + "a" * 32, "DialCallStatus": dial_status})
    signed_post(client, sign, "/twiml/status" + path, status_params("completed", 3, CallDuration="50"))
    auth.login("alice")
    for page in (f"/calls/{call['id']}", "/history"):
        html = client.get(page).get_data(as_text=True)
        assert words in html
        if words != "completed":
            assert ">completed<" not in html.replace("\n", "")
