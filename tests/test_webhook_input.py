"""Hostile input on the Twilio-facing path: every field checked, never a 500, nothing let in."""
import logging
import threading
import time
from datetime import datetime, timedelta

import pytest

from dialer import calls as call_queries
from dialer.auth import agent_by_username
from dialer.db import writing
from dialer.params import MAX_CALL_SECONDS

from .test_twiml import TWIML_PATHS, at, signed_post, start_now  # noqa: F401 (start_now: autouse)

LEG = "CA" + "a" * 32
HUGE = str(10**20)


@pytest.fixture
def call(auth, db):
    auth.create("alice")
    return call_queries.create_call(db, agent_by_username(db, "alice")["id"], "+442079460000")


def assert_valid(row):
    """What any call row must look like, whatever was sent."""
    assert row["status"] in call_queries.STATUS_LABELS
    assert row["duration"] is None or 0 <= row["duration"] <= MAX_CALL_SECONDS
    for column in ("answered_at", "ended_at"):
        if row[column]:
            assert 2008 <= datetime.fromisoformat(row[column]).year <= datetime.now().year + 1
    for column in ("last_sequence_number", "error_code", "recording_duration"):
        assert row[column] is None or 0 <= row[column] < 2**31
    assert row["recording_channels"] in (None, 1, 2)


# Each of these was a 500 (OverflowError) or an absurd value before the fields were checked.
BAD_FIELDS = [
    ("SequenceNumber", HUGE), ("SequenceNumber", "-1"), ("SequenceNumber", "٣"),
    ("ErrorCode", HUGE), ("ErrorCode", "12.5"),
    ("RecordingDuration", HUGE), ("RecordingChannels", HUGE), ("RecordingChannels", "3"),
    ("CallDuration", HUGE), ("CallDuration", "99999999999"), ("CallDuration", "-5"),
    ("DialCallDuration", HUGE),
    ("Timestamp", "Fri, 31 Dec 9999 23:59:59 -2359"), ("Timestamp", "Thu, 01 Jan 1970 00:00:00 +0000"),
    ("Timestamp", "not a date"), ("Timestamp", "Mon, 99 Nov 2026 99:99:99 +0000"),
    ("CallStatus", "hacked"), ("DialCallStatus", "sure"), ("RecordingStatus", "completed!"),
    ("RecordingSid", "RE123"), ("RecordingUrl", "javascript:alert(1)"), ("DialCallSid", "CA1"),
]


@pytest.mark.parametrize("path", TWIML_PATHS)
@pytest.mark.parametrize("field, value", BAD_FIELDS)
def test_an_out_of_range_field_is_kept_raw_ignored_for_the_call_and_logged_by_name(
        client, sign, db, call, path, field, value, caplog):
    params = {"CallSid": LEG, "CallStatus": "completed", "DialCallStatus": "completed",
              "RecordingStatus": "completed", "RecordingSid": "RE" + "b" * 32, field: value}
    with caplog.at_level(logging.WARNING):
        response = signed_post(client, sign, f"{path}?call={call['id']}", params)
    assert response.status_code < 500
    assert response.status_code in (200, 204)
    row = call_queries.get_call(db, call["id"])
    assert_valid(row)
    assert f"ignored {field} " in caplog.text
    kept = [e for e in call_queries.events_for(db, call["id"]) if e["source"] != "app"]
    assert kept and kept[-1]["params"][field] == value  # nothing Twilio sent is lost


def test_a_negative_call_duration_never_shows_as_a_negative_time(client, sign, db, call):
    path = f"/twiml/status?call={call['id']}"
    signed_post(client, sign, path, {"CallSid": LEG, "CallStatus": "in-progress", "SequenceNumber": "2",
                                     "Timestamp": at(0)[0]})
    signed_post(client, sign, path, {"CallSid": LEG, "CallStatus": "completed", "SequenceNumber": "3",
                                     "CallDuration": "-5", "Timestamp": at(42)[0]})
    row = call_queries.get_call(db, call["id"])
    assert row["status"] == "completed"
    assert row["duration"] == 42  # from the answer and end times, since the sent one was refused
    page = client.application.jinja_env.filters["duration"](row["duration"])
    assert page == "0:42"


@pytest.mark.parametrize("status", ["busy", "no-answer", "failed", "canceled"])
def test_a_call_never_answered_has_no_duration_whatever_is_sent(client, sign, db, call, status):
    signed_post(client, sign, f"/twiml/status?call={call['id']}",
                {"CallSid": LEG, "CallStatus": status, "SequenceNumber": "2", "CallDuration": "86000"})
    row = call_queries.get_call(db, call["id"])
    assert (row["status"], row["duration"], row["answered_at"]) == (status, 0, None)


@pytest.mark.parametrize("path", TWIML_PATHS)
@pytest.mark.parametrize("account", ["AC" + "0" * 32, "", "ACnotasid", None])
def test_a_correctly_signed_webhook_for_another_account_is_refused(app, client, sign, db, call, path, account, caplog):
    before = db["call_events"].count
    params = {"CallSid": LEG, "CallStatus": "completed", **({"AccountSid": account} if account is not None else {})}
    url = f"{path}?call={call['id']}"
    response = client.post(url, data=params, headers=sign(url, params))
    assert response.status_code == 403
    assert "another Twilio account" in response.get_data(as_text=True)
    assert db["call_events"].count == before
    assert "not ours" in caplog.text


@pytest.mark.parametrize("path", TWIML_PATHS)
@pytest.mark.parametrize("ours_first", [True, False])
def test_a_webhook_naming_two_accounts_is_refused_even_with_ours_among_them(app, client, sign, db, call, path, ours_first):
    from werkzeug.datastructures import MultiDict
    accounts = [app.config["TWILIO_ACCOUNT_SID"], "AC" + "0" * 32]
    params = MultiDict([("CallSid", LEG), ("CallStatus", "completed"),
                        *(("AccountSid", account) for account in (accounts if ours_first else accounts[::-1]))])
    before = db["call_events"].count
    url = f"{path}?call={call['id']}"
    response = client.post(url, data=params, headers=sign(url, params))
    assert response.status_code == 403 and "another Twilio account" in response.get_data(as_text=True)
    assert db["call_events"].count == before


@pytest.mark.parametrize("path", TWIML_PATHS)
@pytest.mark.parametrize("call_sid", [None, "", "CA123", "XX" + "a" * 32, "CA" + "g" * 32])
def test_a_webhook_without_a_valid_callsid_gets_400_naming_it(client, sign, db, call, path, call_sid):
    params = {"CallStatus": "completed"}
    if call_sid is not None:
        params["CallSid"] = call_sid
    before = db["call_events"].count
    response = signed_post(client, sign, f"{path}?call={call['id']}", params)
    assert response.status_code == 400
    assert "CallSid" in response.get_data(as_text=True)
    assert db["call_events"].count == before


@pytest.mark.parametrize("query", ["?call=" + "9" * 30, "?call=-1", "?call=1e9", "?call=%00", "?call=١"])
@pytest.mark.parametrize("path", TWIML_PATHS)
def test_a_call_id_that_is_no_call_is_unknown_not_a_crash(client, sign, call, path, query):
    response = signed_post(client, sign, path + query, {"CallSid": "CA" + "f" * 32, "CallStatus": "completed"})
    assert response.status_code in (200, 404)


@pytest.mark.parametrize("path", ["/twiml/status", "/twiml/dial-result"])
def test_a_callback_for_no_call_is_logged_in_brief_whatever_its_fields_hold(client, sign, call, path, caplog):
    params = {"CallSid": "CA" + "f" * 32, "CallStatus": "completed", "Junk": "x" * 2000,
              **{f"Extra{n}": "y" * 200 for n in range(60)}}
    with caplog.at_level(logging.WARNING):
        assert signed_post(client, sign, f"{path}?call=99999", params).status_code in (200, 404)
    [line] = [r.getMessage() for r in caplog.records if "callback for unknown call" in r.getMessage()]
    assert "CA" + "f" * 32 in line and "x" * 80 + "…" in line and "x" * 81 not in line
    assert "34 more fields" in line and len(line) < 4000  # 64 fields: 30 shown


def test_a_body_larger_than_any_webhook_gets_413(client, sign, call):
    params = {"CallSid": LEG, "CallStatus": "ringing", "Junk": "x" * 100_000}
    response = signed_post(client, sign, f"/twiml/status?call={call['id']}", params)
    assert response.status_code == 413


def test_an_overlong_field_is_not_used(client, sign, db, call, caplog):
    response = signed_post(client, sign, f"/twiml/status?call={call['id']}",
                           {"CallSid": LEG, "CallStatus": "ringing", "To": "+44" + "1" * 5000})
    assert response.status_code == 204
    assert "ignored To is longer than" in caplog.text
    assert call_queries.get_call(db, call["id"])["status"] == "ringing"


def test_a_repeated_callback_is_answered_without_the_write_lock(client, sign, db, call):
    params = {"CallSid": LEG, "CallStatus": "ringing", "SequenceNumber": "1"}
    signed_post(client, sign, f"/twiml/status?call={call['id']}", params)
    version = db.execute("PRAGMA data_version").fetchone()[0]
    db.conn.execute("BEGIN IMMEDIATE")  # another process is writing (say, a long import)
    try:
        db.conn.execute("PRAGMA busy_timeout=0")
        started = time.monotonic()
        response = signed_post(client, sign, f"/twiml/status?call={call['id']}", params)
        waited = time.monotonic() - started
    finally:
        db.conn.rollback()
    assert response.status_code == 204
    assert waited < 5  # not the 10 s busy timeout: the repeat never asked for the lock
    assert db.execute("PRAGMA data_version").fetchone()[0] == version


def test_an_event_applied_inside_a_write_transaction_does_not_wait_for_itself(db, call):
    def apply_inside_a_transaction():
        with writing(db):
            call_queries.apply_event(db, call["id"], "app", {"status": "failed", "error_message": "test"})
    worker = threading.Thread(target=apply_inside_a_transaction, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "apply_event deadlocked inside writing()"
    assert call_queries.get_call(db, call["id"])["status"] == "failed"


def rfc2822(when):
    return when.strftime("%a, %d %b %Y %H:%M:%S +0000")


def test_dates_outside_the_calls_life_are_not_believed(client, sign, db, call):
    """Found by the black-box run: a signed 2021 answer and an end before the answer were taken."""
    path = f"/twiml/status?call={call['id']}"
    placed = datetime.fromisoformat(call["created_at"])
    signed_post(client, sign, path, {"CallSid": LEG, "CallStatus": "in-progress", "SequenceNumber": "2",
                                     "Timestamp": "Fri, 26 Nov 2021 18:18:44 +0000"})
    row = call_queries.get_call(db, call["id"])
    assert row["answered_at"] >= call["created_at"]
    signed_post(client, sign, path, {"CallSid": LEG, "CallStatus": "completed", "SequenceNumber": "3",
                                     "Timestamp": rfc2822(placed - timedelta(days=3)), "CallDuration": "86400"})
    row = call_queries.get_call(db, call["id"])
    assert call["created_at"] <= row["answered_at"] <= row["ended_at"]
    assert row["duration"] <= (datetime.fromisoformat(row["ended_at"]) - placed).total_seconds() + 300


def test_a_day_long_duration_for_a_call_placed_a_moment_ago_is_not_believed(client, sign, db, call):
    signed_post(client, sign, f"/twiml/status?call={call['id']}",
                {"CallSid": LEG, "CallStatus": "completed", "SequenceNumber": "3", "CallDuration": "86400"})
    row = call_queries.get_call(db, call["id"])
    assert row["duration"] < 400
    assert row["answered_at"] is None or row["answered_at"] >= call["created_at"]


@pytest.mark.parametrize("case", ["another leg's CallSid", "the call has ended"])
def test_customer_to_agent_rings_nobody_for_another_leg_or_an_ended_call(client, sign, db, call, case):
    """Found by the black-box run: ?call=1 with the CallSid of bob's call rang alice."""
    path = f"/twiml/customer-to-agent?call={call['id']}"
    signed_post(client, sign, f"/twiml/status?call={call['id']}",
                {"CallSid": LEG, "CallStatus": "completed" if case == "the call has ended" else "ringing",
                 "SequenceNumber": "1"})
    sid = "CA" + "b" * 32 if case == "another leg's CallSid" else LEG
    before = len(call_queries.events_for(db, call["id"]))
    response = signed_post(client, sign, path, {"CallSid": sid, "CallStatus": "in-progress"})
    assert b"<Dial" not in response.data and b"<Hangup" in response.data
    if case == "the call has ended":  # its story stays as it ended: no "answered" after "ended"
        assert len(call_queries.events_for(db, call["id"])) == before


@pytest.mark.parametrize("signature", ["é" * 28, "\x00", "x" * 5000])
def test_a_signature_header_of_any_bytes_is_a_403_not_a_crash(client, call, signature):
    response = client.post(f"/twiml/status?call={call['id']}", data={"CallSid": LEG},
                           headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403


@pytest.mark.parametrize("channels, words", [("2", "two channels: customer and agent"), ("1", "one channel"),
                                             (None, "Recording (0:17):"), ("abc", "Recording (0:17):"),
                                             (HUGE, "Recording (0:17):")])
def test_the_call_page_says_a_recordings_channels_only_when_they_are_known(client, sign, auth, call, channels, words):
    path = f"/twiml/recording?call={call['id']}"
    params = {"CallSid": LEG, "RecordingStatus": "completed", "RecordingSid": "RE" + "b" * 32,
              "RecordingUrl": "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1", "RecordingDuration": "17"}
    if channels is not None:
        params["RecordingChannels"] = channels
    assert signed_post(client, sign, path, params).status_code == 204
    auth.login("alice")
    page = client.get(f"/calls/{call['id']}").get_data(as_text=True)
    assert words in page and "None" not in page


def test_another_legs_callback_changes_nothing_and_says_nothing_on_the_calls_page(client, sign, auth, db, call):
    path = f"/twiml/status?call={call['id']}"
    signed_post(client, sign, path, {"CallSid": LEG, "CallStatus": "in-progress", "SequenceNumber": "2"})
    other = "CA" + "e" * 32
    assert signed_post(client, sign, path, {"CallSid": other, "CallStatus": "completed", "SequenceNumber": "3",
                                            "CallDuration": "30"}).status_code == 204
    assert call_queries.get_call(db, call["id"])["status"] == "in-progress"
    assert any(e["call_sid"] == other for e in call_queries.events_for(db, call["id"]))  # kept, as everything is
    auth.login("alice")
    page = client.get(f"/calls/{call['id']}").get_data(as_text=True)
    assert "the call ended" not in page and "answered" in page
