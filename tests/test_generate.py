"""`flask calls generate N`: synthetic history the pages and the call rules read like real calls."""
import json
import re
from collections import Counter
from datetime import datetime, timezone

import pytest

from dialer import calls

OUTCOME_WORDS = {"completed", "missed by agent", "customer hung up while waiting", "busy", "no answer",
                 "failed", "canceled",
                 "answered", "voicemail", "hung up in the queue", "hung up while ringing"}  # customers calling in


def rows(db, sql, args=()):
    cursor = db.execute(sql, args)
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def category(call):
    """The issue's mix: talked, missed by agent, or the customer leg's own end."""
    if call["status"] == "completed":
        return "talked" if call["dial_result"] == "completed" else "missed"
    return call["status"]


@pytest.fixture
def generated(auth, runner, db):
    """500 calls for alice (bob exists too and must get none)."""
    auth.create("alice")
    auth.create("bob")
    result = runner.invoke(args=["calls", "generate", "500", "--agent", "alice", "--seed", "42"])
    assert result.exit_code == 0, result.output
    assert "generated 500 calls and " in result.output
    return rows(db, "SELECT calls.*, agents.username FROM calls JOIN agents ON agents.id = calls.agent_id")


def test_generate_gives_every_call_to_the_named_agent(generated):
    assert len(generated) == 500
    assert {call["username"] for call in generated} == {"alice"}


def test_every_generated_call_has_ended_and_reads_as_an_outcome(generated):
    for call in generated:
        assert calls.is_terminal(call["status"]), call
        assert calls.outcome(call) in OUTCOME_WORDS, call
        assert re.fullmatch(r"\+(44|1)\d{9,10}", call["customer_number"]), call
        assert re.fullmatch(r"CA[0-9a-f]{32}", call["customer_call_sid"]), call
        assert datetime.fromisoformat(call["ended_at"]) <= datetime.now(timezone.utc)
        assert call["created_at"] == datetime.fromisoformat(call["created_at"]).isoformat(timespec="seconds")


def test_answered_calls_have_times_in_order_and_talked_ones_a_recording(generated):
    answered = [call for call in generated if call["answered_at"]]
    assert answered
    for call in answered:
        assert call["created_at"] <= call["answered_at"] <= call["ended_at"], call
        assert re.fullmatch(r"CA[0-9a-f]{32}", call["agent_call_sid"]), call
        wait, talk = calls.wait_and_talk(call)
        assert 0 <= wait <= 60, call
        if category(call) == "talked":
            assert call["answered_at"] <= call["agent_answered_at"] <= call["ended_at"], call
            assert 20 <= talk <= 900 and 2 <= wait <= 40, call
            assert re.fullmatch(r"RE[0-9a-f]{32}", call["recording_sid"]), call
            assert call["recording_url"].endswith("/Recordings/" + call["recording_sid"])
            assert (call["recording_duration"], call["recording_channels"]) == (talk, 2)
            assert call["duration"] == wait + talk
        else:
            assert talk is None and call["agent_answered_at"] is None and call["recording_sid"] is None, call
    for call in generated:
        if not call["answered_at"]:
            assert call["duration"] == 0 and call["dial_result"] is None and call["agent_call_sid"] is None, call


def test_the_mix_of_outcomes_is_roughly_the_issues(generated):
    mix = Counter(category(call) for call in generated)
    assert set(mix) == {"talked", "missed", "busy", "no-answer", "failed", "canceled"}
    assert 0.55 <= mix["talked"] / 500 <= 0.75
    for name in ("missed", "busy", "no-answer"):
        assert 0.04 <= mix[name] / 500 <= 0.16, mix


def test_each_call_has_three_to_five_events_in_order_like_real_callbacks(generated, db):
    events = rows(db, "SELECT * FROM call_events ORDER BY call_id, id")
    by_call = {}
    for event in events:
        by_call.setdefault(event["call_id"], []).append(event)
    assert set(by_call) == {call["id"] for call in generated}
    calls_by_id = {call["id"]: call for call in generated}
    for call_id, timeline in by_call.items():
        call = calls_by_id[call_id]
        assert 3 <= len(timeline) <= 5, timeline
        times = [event["received_at"] for event in timeline]
        assert times == sorted(times) and times[0] == call["created_at"] and times[-1] == call["ended_at"]
        callbacks = [event for event in timeline if event["source"] == "status"]
        assert [event["sequence_number"] for event in callbacks] == list(range(len(callbacks)))
        assert callbacks[-1]["status"] == call["status"]
        assert callbacks[-1]["sequence_number"] == call["last_sequence_number"]
        for event in callbacks:
            params = json.loads(event["params"])
            assert params["CallSid"] == event["call_sid"] == call["customer_call_sid"]
            assert params["CallStatus"] == event["status"]
            assert params["SequenceNumber"] == str(event["sequence_number"])
            assert event["params"] == json.dumps(params, sort_keys=True)  # as record_event keeps them
        if call["direction"] == "outbound":
            assert (timeline[0]["source"], timeline[0]["status"]) == ("app", "queued")


def test_generated_history_does_not_flood_the_live_stream(generated, db):
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 0


def test_history_page_shows_the_generated_calls(generated, auth, client):
    auth.login("alice")
    response = client.get("/history")
    assert response.status_code == 200
    newest = max(generated, key=lambda call: (call["created_at"], call["id"]))
    assert f"/calls/{newest['id']}" in response.get_data(as_text=True)
    assert client.get(f"/calls/{newest['id']}").status_code == 200


def test_unknown_agent_is_refused_in_a_sentence_and_nothing_is_written(auth, runner, db):
    auth.create("alice")
    result = runner.invoke(args=["calls", "generate", "10", "--agent", "nobody"])
    assert result.exit_code != 0
    assert "There is no agent called 'nobody'" in result.output
    assert db.execute("SELECT count(*) FROM calls").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM call_events").fetchone()[0] == 0


def test_without_agents_it_says_how_to_create_one(runner, db):
    result = runner.invoke(args=["calls", "generate", "10"])
    assert result.exit_code != 0
    assert "flask --app app agents create NAME" in result.output
    assert db.execute("SELECT count(*) FROM calls").fetchone()[0] == 0


@pytest.mark.parametrize("count", ["0", "-5", "10000001"])
def test_absurd_counts_are_refused(auth, runner, db, count):
    auth.create("alice")
    result = runner.invoke(args=["calls", "generate", "--", count])
    assert result.exit_code != 0
    assert "Give a number of calls from 1 to 10,000,000" in result.output
    assert db.execute("SELECT count(*) FROM calls").fetchone()[0] == 0


def test_calls_are_spread_over_all_agents_and_a_seed_repeats_them(auth, runner, db, monkeypatch):
    auth.create("alice")
    auth.create("bob")
    monkeypatch.setattr("dialer.generate.CHUNK", 70)  # several transactions, with progress lines
    result = runner.invoke(args=["calls", "generate", "200", "--seed", "5", "--days", "30"])
    assert result.exit_code == 0, result.output
    assert "70 of 200 calls" in result.output
    first = rows(db, "SELECT agent_id, customer_number, status, created_at, customer_call_sid FROM calls ORDER BY id")
    assert {row["agent_id"] for row in first} == {1, 2}
    oldest = datetime.fromisoformat(min(row["created_at"] for row in first))
    assert (datetime.now(timezone.utc) - oldest).days <= 30
    # Created times follow ids inside a transaction only: the history orders by (created_at, id).
    assert [row["created_at"] for row in first] != sorted(row["created_at"] for row in first)
    runner.invoke(args=["calls", "generate", "200", "--seed", "5", "--days", "30"])
    again = rows(db, "SELECT agent_id, customer_number, status, customer_call_sid FROM calls ORDER BY id LIMIT -1 OFFSET 200")
    assert [{k: row[k] for k in again[0]} for row in first] == again
