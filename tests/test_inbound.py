"""Customers calling in, at the webhooks: the TwiML of each case, who takes the call, and that no
caller is left without an outcome whatever order (or how often) Twilio's callbacks arrive."""
import itertools
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from dialer import calls as call_queries
from dialer import inbound, presence
from dialer.auth import agent_by_username
from dialer.db import writing

from .test_twiml import signed_post

CALLER = "+442079460100"
SID = "CA" + "c" * 32
INBOUND_PATHS = ["/twiml/inbound", "/twiml/inbound-ring", "/twiml/offer", "/twiml/inbound-dialed", "/twiml/queue-wait", "/twiml/queue-key",
                 "/twiml/queue-result", "/twiml/voicemail"]

# The verbs and nouns this TwiML may use, with the attributes Twilio documents for each
# (../shared/twilio/TWILIO.md §9 and twilio-python's VoiceResponse).
TWIML = {
    "Response": set(),
    "Say": {"voice", "language", "loop"},
    "Play": {"loop", "digits"},
    "Dial": {"action", "method", "timeout", "timeLimit", "callerId", "record", "trim", "recordingStatusCallback",
             "recordingStatusCallbackMethod", "recordingStatusCallbackEvent", "answerOnBridge", "ringTone",
             "hangupOnStar", "sequential"},
    "Client": {"url", "method", "statusCallback", "statusCallbackEvent", "statusCallbackMethod"},
    "Identity": set(),
    "Parameter": {"name", "value"},
    "Enqueue": {"action", "method", "waitUrl", "waitUrlMethod", "maxQueueSize", "workflowSid"},
    "Gather": {"action", "method", "numDigits", "timeout", "finishOnKey", "input", "actionOnEmptyResult"},
    "Leave": set(),
    "Record": {"action", "method", "timeout", "finishOnKey", "maxLength", "playBeep", "trim",
               "recordingStatusCallback", "recordingStatusCallbackMethod", "recordingStatusCallbackEvent"},
    "Hangup": set(),
    "Redirect": {"method"},
}
# Which verbs may contain which (Gather only Say, Play, Pause; Dial its nouns).
CHILDREN = {"Response": {"Say", "Play", "Pause", "Dial", "Enqueue", "Gather", "Leave", "Record", "Hangup", "Redirect"},
            "Dial": {"Client", "Number", "Queue"}, "Client": {"Identity", "Parameter"}, "Gather": {"Say", "Play", "Pause"}}


def twiml(response):
    """The response's TwiML, checked against Twilio's verbs, nouns and attributes."""
    assert response.status_code == 200 and response.mimetype == "text/xml", response.get_data(as_text=True)
    root = ET.fromstring(response.data)

    def check(element):
        assert element.tag in TWIML, element.tag
        assert set(element.attrib) <= TWIML[element.tag], (element.tag, element.attrib)
        for child in element:
            assert child.tag in CHILDREN.get(element.tag, set()), (element.tag, child.tag)
            check(child)
    check(root)
    return root


@pytest.fixture
def team(auth, db):
    """alice and bob available (their phones ready), carol away."""
    for name in ("alice", "bob", "carol"):
        auth.create(name)
    people = {name: agent_by_username(db, name) for name in ("alice", "bob", "carol")}
    with writing(db):
        presence.set_presence(db, people["alice"]["id"], "available")
        presence.set_presence(db, people["bob"]["id"], "available")
        presence.set_presence(db, people["carol"]["id"], "away", "lunch")
    return people


def ring(client, sign, sid=SID, caller=CALLER):
    """A customer calls in: the voice URL greets and redirects; the document after the greeting
    (which rings the agents or queues the caller) is returned."""
    params = {"CallSid": sid, "From": caller, "To": "+15005550006", "CallStatus": "ringing", "Direction": "inbound"}
    greeting = twiml(signed_post(client, sign, "/twiml/inbound", params))
    say, redirect = list(greeting)
    assert say.text == client.application.config["INBOUND_GREETING"] and redirect.tag == "Redirect"
    path = redirect.text.removeprefix(client.application.config["PUBLIC_BASE_URL"])
    assert re.fullmatch(r"/twiml/inbound-ring\?call=\d+", path), path
    return signed_post(client, sign, path, {**params, "CallStatus": "in-progress"})


def unstepped(url):
    """A callback URL without its `step` (which of the call's TwiML documents it came from)."""
    return re.sub(r"&step=\d+", "", url)


def the_call(db):
    return call_queries.call_by_sid(db, SID)


@pytest.mark.parametrize("path", INBOUND_PATHS)
def test_every_inbound_webhook_refuses_unsigned_requests(client, db, path):
    response = client.post(path + "?call=1", data={"CallSid": SID, "From": CALLER,
                                                    "AccountSid": client.application.config["TWILIO_ACCOUNT_SID"]})
    assert response.status_code == 403
    assert db.execute("SELECT count(*) FROM calls").fetchone()[0] == 0


def test_a_caller_is_greeted_and_every_available_agent_rings_and_no_one_away(app, client, sign, db, team):
    base = app.config["PUBLIC_BASE_URL"]
    root = twiml(ring(client, sign))
    call = the_call(db)
    assert call["direction"] == "inbound" and call["agent_id"] is None and call["customer_number"] == CALLER
    [dial] = list(root)
    assert {**dial.attrib, "action": unstepped(dial.get("action"))} == {
        "timeout": "20", "record": "record-from-answer-dual", "answerOnBridge": "true",
        "action": f"{base}/twiml/inbound-dialed?call={call['id']}",
        "recordingStatusCallback": f"{base}/twiml/recording?call={call['id']}"}
    assert re.search(r"&step=\d+$", dial.get("action"))
    rung = {c.findtext("Identity"): c for c in dial.findall("Client")}
    assert set(rung) == {team["alice"]["identity"], team["bob"]["identity"]}  # carol is away
    alice = rung[team["alice"]["identity"]]
    assert alice.get("statusCallback") == f"{base}/twiml/status?call={call['id']}&leg=agent&agent={team['alice']['id']}"
    assert alice.get("statusCallbackEvent") == "ringing answered completed"
    assert {p.get("name"): p.get("value") for p in alice.findall("Parameter")} == {
        "call_id": str(call["id"]), "customer": "+44 20 7946 0100", "direction": "inbound",
        "known": "no earlier calls from this number", "since": call["created_at"]}

    again = twiml(ring(client, sign))  # Twilio fetching the voice URL again is the same call
    assert db.execute("SELECT count(*) FROM calls").fetchone()[0] == 1 and again.find("Dial") is not None


@pytest.mark.parametrize("app_config", [{"INBOUND_RING": "one"}])
def test_one_at_a_time_rings_the_longest_idle_agent_then_the_next(app, client, sign, db, team):
    dial = twiml(ring(client, sign)).find("Dial")
    call = the_call(db)
    first = [c.findtext("Identity") for c in dial.findall("Client")]
    assert first == [team["alice"]["identity"]]  # available before bob
    leg = "CA" + "a" * 32
    signed_post(client, sign, f"/twiml/status?call={call['id']}&leg=agent&agent={team['alice']['id']}",
                {"CallSid": leg, "CallStatus": "no-answer", "To": f"client:{team['alice']['identity']}"})
    root = twiml(signed_post(client, sign, f"/twiml/inbound-dialed?call={call['id']}",
                             {"CallSid": SID, "CallStatus": "in-progress", "DialCallStatus": "no-answer"}))
    assert [c.findtext("Identity") for c in root.findall("Dial/Client")] == [team["bob"]["identity"]]
    assert root.find("Say") is None and root.find("Redirect") is None  # greeted once


def answer(client, sign, call, agent, leg):
    return signed_post(client, sign, f"/twiml/status?call={call['id']}&leg=agent&agent={agent['id']}",
                       {"CallSid": leg, "CallStatus": "in-progress", "To": f"client:{agent['identity']}"})


def test_the_first_agent_to_answer_takes_the_call_and_the_others_leg_changes_nothing(client, sign, db, team):
    ring(client, sign)
    call = the_call(db)
    alice_leg, bob_leg = "CA" + "a" * 32, "CA" + "b" * 32
    for agent, leg in ((team["alice"], alice_leg), (team["bob"], bob_leg)):
        signed_post(client, sign, f"/twiml/status?call={call['id']}&leg=agent&agent={agent['id']}",
                    {"CallSid": leg, "CallStatus": "ringing", "To": f"client:{agent['identity']}"})
    assert answer(client, sign, call, team["alice"], alice_leg).status_code == 204
    assert answer(client, sign, call, team["bob"], bob_leg).status_code == 204  # too late: kept, ignored
    signed_post(client, sign, f"/twiml/status?call={call['id']}&leg=agent&agent={team['bob']['id']}",
                {"CallSid": bob_leg, "CallStatus": "canceled", "To": f"client:{team['bob']['identity']}"})
    row = the_call(db)
    assert row["agent_id"] == team["alice"]["id"] and row["agent_call_sid"] == alice_leg
    assert row["agent_status"] == "in-progress" and row["agent_answered_at"]
    states = dict(db.execute("SELECT username, presence FROM agents").fetchall())
    assert states["alice"] == "on-call" and states["bob"] == "available"  # canceled, not missed
    assert call_queries.live_state(row)[0] == "talking"


def test_an_agent_who_lets_an_offered_call_ring_out_is_set_away(client, sign, db, team):
    ring(client, sign)
    call = the_call(db)
    signed_post(client, sign, f"/twiml/status?call={call['id']}&leg=agent&agent={team['bob']['id']}",
                {"CallSid": "CA" + "b" * 32, "CallStatus": "no-answer", "To": f"client:{team['bob']['identity']}"})
    bob = presence.agent_state(db, team["bob"]["id"])
    assert (bob["presence"], bob["presence_reason"]) == ("away", presence.MISSED_OFFER)
    assert the_call(db)["agent_id"] is None


def test_with_nobody_available_the_caller_waits_in_the_queue_and_hears_their_place(app, client, sign, db, auth):
    base = app.config["PUBLIC_BASE_URL"]
    root = twiml(ring(client, sign))
    call = the_call(db)
    [enqueue] = list(root)
    assert (enqueue.tag, enqueue.text) == ("Enqueue", "dialer")
    assert {name: unstepped(value) for name, value in enqueue.attrib.items()} == {
        "action": f"{base}/twiml/queue-result?call={call['id']}",
        "waitUrl": f"{base}/twiml/queue-wait?call={call['id']}", "waitUrlMethod": "POST"}
    wait = twiml(signed_post(client, sign, f"/twiml/queue-wait?call={call['id']}",
                             {"CallSid": SID, "QueuePosition": "3", "QueueTime": "12", "CurrentQueueSize": "4"}))
    assert wait.find("Say").text == "All our agents are busy. You are number 3 in the queue."
    gather = wait.find("Gather")
    assert gather.attrib == {"numDigits": "1", "timeout": "1", "action": f"{base}/twiml/queue-key?call={call['id']}"}
    assert gather.find("Play").text == app.config["HOLD_MUSIC_URL"]
    row = the_call(db)
    assert row["queued_at"] and call_queries.live_state(row)[0] == "waiting in the queue"
    key = twiml(signed_post(client, sign, f"/twiml/queue-key?call={call['id']}", {"CallSid": SID, "Digits": "1"}))
    assert [e.tag for e in key] == ["Leave"]
    late = twiml(signed_post(client, sign, f"/twiml/queue-wait?call={call['id']}",
                             {"CallSid": SID, "QueuePosition": "1", "QueueTime": "120"}))
    assert [e.tag for e in late] == ["Leave"]  # VOICEMAIL_AFTER: off to leave a message


def test_a_caller_who_leaves_the_queue_records_a_message_kept_with_the_call(app, client, sign, db):
    base = app.config["PUBLIC_BASE_URL"]
    ring(client, sign)
    call = the_call(db)
    root = twiml(signed_post(client, sign, f"/twiml/queue-result?call={call['id']}",
                             {"CallSid": SID, "CallStatus": "in-progress", "QueueResult": "leave", "QueueTime": "120"}))
    assert [e.tag for e in root] == ["Say", "Record", "Say", "Hangup"]
    record = root.find("Record")
    assert record.attrib == {"action": f"{base}/twiml/voicemail?call={call['id']}", "maxLength": "120",
                             "playBeep": "true", "finishOnKey": "#", "timeout": "5",
                             "recordingStatusCallback": f"{base}/twiml/recording?call={call['id']}&kind=voicemail"}
    done = twiml(signed_post(client, sign, f"/twiml/voicemail?call={call['id']}",
                             {"CallSid": SID, "RecordingUrl": "https://api.twilio.com/x", "RecordingDuration": "14",
                              "Digits": "#"}))
    assert [e.tag for e in done] == ["Say", "Hangup"]
    signed_post(client, sign, f"/twiml/recording?call={call['id']}&kind=voicemail",
                {"CallSid": SID, "RecordingSid": "RE" + "9" * 32, "RecordingStatus": "completed",
                 "RecordingUrl": "https://api.twilio.com/2010-04-01/Accounts/AC/Recordings/RE9",
                 "RecordingDuration": "14", "RecordingChannels": "1"})
    signed_post(client, sign, "/twiml/status", {"CallSid": SID, "CallStatus": "completed", "CallDuration": "150"})
    row = the_call(db)
    assert row["voicemail_sid"] == "RE" + "9" * 32 and row["voicemail_duration"] == 14
    assert row["recording_sid"] is None  # a message is not a conversation's recording
    assert call_queries.outcome(row) == "voicemail"


CALLBACKS = [  # an answered inbound call's callbacks after the voice URL
    ("status?call={id}&leg=agent&agent={alice}", {"CallSid": "CA" + "a" * 32, "CallStatus": "ringing"}),
    ("status?call={id}&leg=agent&agent={alice}", {"CallSid": "CA" + "a" * 32, "CallStatus": "in-progress"}),
    ("status?call={id}&leg=agent&agent={alice}", {"CallSid": "CA" + "a" * 32, "CallStatus": "completed"}),
    ("inbound-dialed?call={id}", {"CallSid": SID, "CallStatus": "in-progress", "DialCallStatus": "completed"}),
    ("status", {"CallSid": SID, "CallStatus": "completed", "CallDuration": "61"}),
]


@pytest.mark.parametrize("order", [(0, 1, 2, 3, 4), (4, 3, 2, 1, 0), (1, 4, 0, 3, 2), (4, 1, 1, 4, 2, 0, 3)],
                         ids=["in order", "reversed", "shuffled", "shuffled and repeated"])
def test_an_answered_caller_ends_answered_whatever_the_order_of_callbacks(client, sign, db, team, order):
    ring(client, sign)
    call = the_call(db)
    for index in order:
        path, params = CALLBACKS[index]
        path = "/twiml/" + path.format(id=call["id"], alice=team["alice"]["id"])
        assert signed_post(client, sign, path, params).status_code in (200, 204)
    row = the_call(db)
    assert row["status"] == "completed" and row["agent_id"] == team["alice"]["id"]
    assert call_queries.outcome(row) == "answered"


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_a_caller_who_hangs_up_in_the_queue_ends_with_that_outcome_in_any_order(client, sign, db, order):
    ring(client, sign)
    call = the_call(db)
    callbacks = [
        (f"/twiml/queue-wait?call={call['id']}", {"CallSid": SID, "QueuePosition": "1", "QueueTime": "5"}),
        (f"/twiml/queue-result?call={call['id']}", {"CallSid": SID, "CallStatus": "completed", "QueueResult": "hangup"}),
        ("/twiml/status", {"CallSid": SID, "CallStatus": "completed", "CallDuration": "30"}),
    ]
    for index in order + (order[0],):  # and one of them twice
        assert signed_post(client, sign, *callbacks[index]).status_code in (200, 204)
    row = the_call(db)
    assert row["status"] == "completed" and row["agent_id"] is None
    assert call_queries.outcome(row) in ("hung up in the queue", "hung up while ringing")
    if order.index(0) < order.index(2):
        assert call_queries.outcome(row) == "hung up in the queue"


def hung_up_in_the_queue(client, sign, db):
    """A caller who waited in the queue and hung up there; the call as stored."""
    ring(client, sign)
    call = the_call(db)
    signed_post(client, sign, f"/twiml/queue-wait?call={call['id']}", {"CallSid": SID, "QueuePosition": "1", "QueueTime": "5"})
    signed_post(client, sign, f"/twiml/queue-result?call={call['id']}", {"CallSid": SID, "CallStatus": "completed", "QueueResult": "hangup"})
    signed_post(client, sign, "/twiml/status", {"CallSid": SID, "CallStatus": "completed", "CallDuration": "30"})
    row = the_call(db)
    assert row["ended_at"] and call_queries.outcome(row) == "hung up in the queue"
    return row


def rfc2822(iso, seconds=0):
    when = datetime.fromisoformat(iso) + timedelta(seconds=seconds)
    return format_datetime(when.astimezone(timezone.utc), usegmt=True)


def test_a_phone_reported_answered_after_the_caller_had_gone_does_not_take_the_call(client, sign, db, team):
    row = hung_up_in_the_queue(client, sign, db)
    leg = "CA" + "a" * 32
    response = signed_post(client, sign, f"/twiml/status?call={row['id']}&leg=agent&agent={team['alice']['id']}",
                           {"CallSid": leg, "CallStatus": "in-progress", "Timestamp": rfc2822(row["ended_at"], 60)})
    assert response.status_code == 204
    after = the_call(db)
    assert after["agent_id"] is None and call_queries.outcome(after) == "hung up in the queue"
    assert [e["call_sid"] for e in call_queries.events_for(db, row["id"]) if e["source"] == "agent"] == [leg]  # kept


@pytest.mark.parametrize("timestamp", ["before the end", "none"])
def test_a_late_report_of_an_answer_before_the_end_is_kept_with_a_time_inside_the_call(client, sign, db, team, timestamp):
    row = hung_up_in_the_queue(client, sign, db)
    params = {"CallSid": "CA" + "a" * 32, "CallStatus": "in-progress"}
    if timestamp == "before the end":
        params["Timestamp"] = rfc2822(row["ended_at"], -1)
    else:
        ago = [(datetime.now(timezone.utc) - timedelta(minutes=m)).isoformat(timespec="seconds") for m in (2, 1)]
        db.execute("UPDATE calls SET created_at = ?, ended_at = ? WHERE id = ?", [*ago, row["id"]])  # a minute ago
        row = the_call(db)
    assert answer_with(client, sign, row, team["alice"], params).status_code == 204
    after = the_call(db)
    assert after["agent_id"] == team["alice"]["id"] and call_queries.outcome(after) == "answered"
    assert after["created_at"] <= after["agent_answered_at"] <= after["ended_at"]  # no wait longer than the call
    if timestamp == "none":
        assert after["agent_answered_at"] == after["ended_at"]


def test_a_late_dial_result_gives_a_caller_who_hung_up_in_the_queue_no_talk_time(client, sign, db, team):
    row = hung_up_in_the_queue(client, sign, db)
    signed_post(client, sign, f"/twiml/inbound-dialed?call={row['id']}",
                {"CallSid": SID, "CallStatus": "completed", "DialCallStatus": "completed", "DialCallDuration": "225"})
    after = the_call(db)
    assert call_queries.outcome(after) == "hung up in the queue"
    assert call_queries.wait_and_talk(after)[1] is None  # was 225 s of talk on a call nobody answered


def answer_with(client, sign, call, agent, params):
    return signed_post(client, sign, f"/twiml/status?call={call['id']}&leg=agent&agent={agent['id']}", params)


@pytest.mark.parametrize("status", ["ringing", "in-progress", "completed", "no-answer"])
def test_an_agent_leg_callback_naming_an_agent_who_no_longer_exists_is_kept_and_gives_nobody_the_call(
        app, client, sign, db, team, status):
    ring(client, sign)
    call = the_call(db)
    response = answer_with(client, sign, call, {"id": 999}, {"CallSid": "CA" + "d" * 32, "CallStatus": status})
    assert response.status_code == 204  # was a 500: the agent's id broke the calls table's foreign key
    after = the_call(db)
    assert after["agent_id"] is None and after["agent_call_sid"] is None and after["status"] == call["status"]
    assert [e["status"] for e in call_queries.events_for(db, call["id"]) if e["source"] == "agent"] == [status]
    # The same callback for an agent who exists still takes the call.
    assert answer(client, sign, call, team["alice"], "CA" + "a" * 32).status_code == 204
    assert the_call(db)["agent_id"] == team["alice"]["id"]


def queue_caller(client, sign, db, sid, caller):
    """A caller who found nobody available and is now waiting in the queue (its wait URL fetched)."""
    enqueue = twiml(ring(client, sign, sid=sid, caller=caller)).find("Enqueue")
    path = enqueue.get("waitUrl").removeprefix(client.application.config["PUBLIC_BASE_URL"])
    twiml(signed_post(client, sign, path, {"CallSid": sid, "QueuePosition": "1", "QueueTime": "1"}))
    return call_queries.call_by_sid(db, sid), enqueue


def test_a_new_caller_queues_behind_one_already_waiting_even_with_an_agent_free(client, sign, db, team):
    with writing(db):
        for name in ("alice", "bob"):
            presence.set_presence(db, team[name]["id"], "away", "lunch")
    first, _ = queue_caller(client, sign, db, "CA" + "1" * 32, "+442079460110")
    assert [c["id"] for c in inbound.waiting(db)] == [first["id"]]
    with writing(db):
        presence.set_presence(db, team["alice"]["id"], "available")  # (her offer has not gone out yet)
    later = twiml(ring(client, sign))  # a new caller: the first one is owed alice
    assert [e.tag for e in later] == ["Enqueue"]


def test_each_ring_of_a_caller_has_its_own_result_and_frees_the_offer(client, sign, db, team):
    ring(client, sign)
    call = the_call(db)
    for agent in ("alice", "bob"):  # offered twice, one agent after the other, neither answers
        with writing(db):
            db.execute("UPDATE calls SET offered_to = ?, offered_at = ? WHERE id = ?",
                       [team[agent]["id"], call_queries.utcnow(), call["id"]])
        dial = twiml(signed_post(client, sign, f"/twiml/offer?call={call['id']}&agent={team[agent]['id']}",
                                 {"CallSid": SID, "CallStatus": "in-progress"})).find("Dial")
        assert [c.findtext("Identity") for c in dial.findall("Client")] == [team[agent]["identity"]]
        path = dial.get("action").removeprefix(client.application.config["PUBLIC_BASE_URL"])
        signed_post(client, sign, path, {"CallSid": SID, "CallStatus": "in-progress", "DialCallStatus": "no-answer"})
        assert the_call(db)["offered_to"] is None  # this offer's result arrived, not taken for a repeat
    results = [e for e in call_queries.events_for(db, call["id"]) if e["source"] == "dial-result"]
    assert len(results) == 2


def test_an_offer_to_an_agent_gone_meanwhile_puts_the_caller_back_and_frees_them(client, sign, db, team):
    ring(client, sign)
    call = the_call(db)
    with writing(db):
        db.execute("UPDATE calls SET offered_to = ?, offered_at = ? WHERE id = ?",
                   [team["bob"]["id"], call_queries.utcnow(), call["id"]])
        presence.set_presence(db, team["bob"]["id"], "away", "coffee")
    root = twiml(signed_post(client, sign, f"/twiml/offer?call={call['id']}&agent={team['bob']['id']}",
                             {"CallSid": SID, "CallStatus": "in-progress"}))
    assert [e.tag for e in root] == ["Enqueue"]
    assert (the_call(db)["offered_to"], the_call(db)["offered_at"]) == (None, None)


def test_a_caller_who_left_the_queue_for_voicemail_is_no_longer_waiting(client, sign, db, team):
    with writing(db):
        for name in ("alice", "bob"):
            presence.set_presence(db, team[name]["id"], "away", "lunch")
    call, enqueue = queue_caller(client, sign, db, SID, CALLER)
    assert [c["id"] for c in inbound.waiting(db)] == [call["id"]]
    path = enqueue.get("action").removeprefix(client.application.config["PUBLIC_BASE_URL"])
    twiml(signed_post(client, sign, path, {"CallSid": SID, "CallStatus": "in-progress", "QueueResult": "leave"}))
    assert inbound.waiting(db) == [] and the_call(db)["queued_at"]  # offered to nobody, still "was queued"


def test_a_known_caller_is_named_with_their_last_call_linked_only_for_whoever_may_open_it(client, sign, db, team):
    earlier = call_queries.create_call(db, team["alice"]["id"], CALLER)
    call_queries.wrap_up(db, earlier["id"], "callback requested", "", "alice")
    with writing(db):
        presence.set_presence(db, team["alice"]["id"], "available")  # that call is long over
    dial = twiml(ring(client, sign)).find("Dial")
    params = {c.findtext("Identity"): {p.get("name"): p.get("value") for p in c.findall("Parameter")}
              for c in dial.findall("Client")}
    alices, bobs = params[team["alice"]["identity"]], params[team["bob"]["identity"]]
    assert alices["known"] == bobs["known"] == "1 earlier call, last: callback requested"
    assert alices["last_call"] == str(earlier["id"]) and "last_call" not in bobs  # bob may not open alice's call
