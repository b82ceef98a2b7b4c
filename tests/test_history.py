"""The history list: who sees what, number search in any format, filters, keyset pages, bad values."""
import re
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from dialer import calls, history, params

from .test_live import agent_id


def add_call(db, agent, number, created_at, status="completed", dial_result="completed", recording=False):
    call = calls.create_call(db, agent, number)
    db.execute("UPDATE calls SET created_at = ?, status = ?, dial_result = ?, recording_sid = ? WHERE id = ?",
               [created_at, status, dial_result, "RE" + "0" * 32 if recording else None, call["id"]])
    db.conn.commit()
    return call["id"]


def listed(client, query=""):
    response = client.get("/history" + query)
    return response, [int(i) for i in re.findall(r'<tr data-call-id="(\d+)"', response.get_data(as_text=True))]


@pytest.fixture
def people(auth, db):
    auth.create("alice")
    auth.create("bob")
    auth.create("sue", supervisor=True)
    return {name: agent_id(db, name) for name in ("alice", "bob", "sue")}


def test_an_agent_sees_only_their_own_calls_whatever_they_ask_for(client, auth, db, people):
    mine = add_call(db, people["alice"], "+442079460031", "2026-11-20T10:00:00+00:00", recording=True)
    theirs = add_call(db, people["bob"], "+442079460032", "2026-11-20T11:00:00+00:00", recording=True)
    auth.login("alice")
    for query in ("", "?agent=bob", "?q=460032", "?q=7946", f"?cursor=2026-12-01T00:00:00%2B00:00~{theirs + 1}"):
        assert listed(client, query)[1] in ([mine], []), query
        assert theirs not in listed(client, query)[1]
    assert client.get(f"/calls/{theirs}").status_code == 404
    assert client.get(f"/calls/{theirs}/recording.wav").status_code == 404
    auth.login("sue")
    assert listed(client)[1] == [theirs, mine]
    assert listed(client, "?agent=bob")[1] == [theirs]
    assert listed(client, "?agent=nobody")[1] == []


@pytest.mark.parametrize("few_matches", [2000, 1], ids=["through the index", "reading the newest calls"])
@pytest.mark.parametrize("typed", ["+44 20 7946 0031", "(020) 7946-0031", "020 7946 0031", "442079460031",
                                   "460031", "7946 0031", "0031", "020 7946 003"])
def test_a_number_is_found_however_a_person_types_it(client, auth, db, people, typed, few_matches, monkeypatch):
    monkeypatch.setattr(history, "FEW_MATCHES", few_matches)
    wanted = add_call(db, people["alice"], "+442079460031", "2026-11-20T10:00:00+00:00")
    add_call(db, people["alice"], "+442079460099", "2026-11-20T11:00:00+00:00")
    add_call(db, people["alice"], "+12025550131", "2026-11-20T12:00:00+00:00")
    auth.login("alice")
    response, found = listed(client, "?" + f"q={typed}".replace("+", "%2B").replace(" ", "+"))
    assert response.status_code == 200
    assert found == [wanted]


def test_filters_by_outcome_direction_and_dates_in_the_centres_time_zone(client, auth, db, people):
    talked = add_call(db, people["alice"], "+442079460001", "2026-07-01T23:30:00+00:00")  # 2 July 00:30 in London
    missed = add_call(db, people["alice"], "+442079460002", "2026-07-01T10:00:00+00:00", dial_result="no-answer")
    busy = add_call(db, people["alice"], "+442079460003", "2026-06-30T10:00:00+00:00", status="busy", dial_result=None)
    auth.login("alice")
    assert listed(client, "?outcome=missed")[1] == [missed]
    assert listed(client, "?outcome=talked")[1] == [talked]
    assert listed(client, "?outcome=busy")[1] == [busy]
    assert listed(client, "?direction=inbound")[1] == []
    assert listed(client, "?from=2026-07-02")[1] == [talked]  # Europe/London: BST
    assert listed(client, "?from=2026-07-01&to=2026-07-01")[1] == [missed]
    assert listed(client, "?to=2026-06-30")[1] == [busy]
    page = client.get("/history?outcome=missed").get_data(as_text=True)
    assert "missed by agent" in page and "not wrapped up" in page and "2 Jul" not in page


def test_keyset_pages_neither_skip_nor_repeat_when_calls_arrive_between_loads(client, auth, db, people):
    for n in range(120):
        add_call(db, people["alice"], f"+4420794600{n % 100:02d}", f"2026-11-{1 + n // 24:02d}T{n % 24:02d}:00:00+00:00")
    auth.login("alice")
    seen, query = [], ""
    while True:
        response, ids = listed(client, query)
        seen += ids
        for n in range(3):  # newer calls arrive while the agent reads this page
            add_call(db, people["alice"], "+442079469999", f"2026-11-30T12:0{n}:00+00:00")
        link = re.search(r'<a href="([^"]+)" rel="next">', response.get_data(as_text=True))
        if not link:
            break
        assert "OFFSET" not in link.group(1) and "cursor=" in link.group(1)
        query = link.group(1).replace("&amp;", "&").removeprefix("/history")
    first_120 = [row[0] for row in db.execute(
        "SELECT id FROM calls WHERE customer_number != '+442079469999' ORDER BY created_at DESC, id DESC")]
    assert seen == first_120  # every one of the first 120, once each, in order


@pytest.mark.parametrize("query, sentence", [
    ("?cursor=bogus", "page link is damaged"),
    ("?cursor=2026-11-01T00:00:00%2B00:00~99999999999999999999", "page link is damaged"),
    ("?cursor=2026-13-45T00:00:00%2B00:00~5", "page link is damaged"),
    ("?from=2026-13-45", "is not a date"),
    ("?to=yesterday", "is not a date"),
    ("?outcome=made-up", "not one the history knows"),
    ("?direction=sideways", "outbound or inbound"),
    ("?q=" + "1" * 10_000, "at most 40 characters"),
    ("?q=12", "at least 4 digits"),
    ("?q=%00%ff", "at least 4 digits"),
])
def test_every_bad_value_is_a_400_with_a_sentence_and_never_a_500(client, auth, db, people, query, sentence):
    add_call(db, people["alice"], "+442079460031", "2026-11-20T10:00:00+00:00")
    auth.login("alice")
    for headers in ({}, {"HX-Request": "true"}):
        response = client.get("/history" + query, headers=headers)
        assert response.status_code == 400, query
        assert sentence in response.get_data(as_text=True)


def test_the_number_index_follows_inserts_and_changes(db, people):
    call = add_call(db, people["alice"], "+442079460031", "2026-11-20T10:00:00+00:00")
    match = "SELECT rowid FROM calls_numbers WHERE calls_numbers MATCH ?"
    assert db.execute(match, ['"460031"']).fetchall() == [(call,)]
    db.execute("UPDATE calls SET customer_number = '+12025550131' WHERE id = ?", [call])
    db.conn.commit()
    assert db.execute(match, ['"460031"']).fetchall() == []
    assert db.execute(match, ['"5550131"']).fetchall() == [(call,)]


def csv_rows(client, query=""):
    import csv
    import io
    response = client.get("/history.csv" + query)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.is_streamed
    return list(csv.reader(io.StringIO(response.get_data(as_text=True))))


def test_the_csv_is_exactly_the_filtered_rows_of_every_page(client, auth, db, people, monkeypatch):
    monkeypatch.setattr(history, "CSV_CHUNK", 7)  # several chunks, as a year of calls would be
    for n in range(60):
        add_call(db, people["alice" if n % 3 else "bob"], f"+4420794600{n:02d}", f"2026-11-{1 + n // 6:02d}T10:{n:02d}:00+00:00",
                 status="busy" if n % 4 == 0 else "completed", dial_result=None if n % 4 == 0 else "completed")
    auth.login("sue")
    for query in ("", "?outcome=busy", "?agent=bob", "?q=79460", "?from=2026-11-03&to=2026-11-05"):
        header, *rows = csv_rows(client, query)
        assert header[:3] == ["call_id", "started_at", "agent"]
        shown, page = [], query
        while True:  # every page of the HTML list with the same filters
            response, ids = listed(client, page)
            shown += ids
            link = re.search(r'<a href="([^"]+)" rel="next">', response.get_data(as_text=True))
            if not link:
                break
            page = link.group(1).replace("&amp;", "&").removeprefix("/history")
        assert [int(row[0]) for row in rows] == shown, query
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", row[1]) for row in rows)


def test_an_agent_exports_only_their_own_calls_and_formulas_stay_text(client, auth, db, people):
    mine = add_call(db, people["alice"], "+442079460031", "2026-11-20T10:00:00+00:00")
    add_call(db, people["bob"], "+442079460032", "2026-11-20T11:00:00+00:00")
    db.execute("UPDATE calls SET notes = ? WHERE id = ?", ['=HYPERLINK("http://evil","x"), "quoted"\nnext line', mine])
    db.conn.commit()
    auth.login("alice")
    header, *rows = csv_rows(client, "?agent=bob")
    assert [int(row[0]) for row in rows] == [mine]
    notes = rows[0][header.index("notes")]
    assert notes == '\'=HYPERLINK("http://evil","x"), "quoted"\nnext line'


def test_a_bad_filter_on_the_csv_is_a_400_with_a_sentence(client, auth, people):
    auth.login("alice")
    response = client.get("/history.csv?from=2026-13-45")
    assert response.status_code == 400 and "is not a date" in response.get_data(as_text=True)
    client.post("/logout", data={"csrf_token": auth.csrf()})
    assert client.get("/history.csv").status_code == 302


def wrap_up(client, auth, call_id, **form):
    return client.post(f"/calls/{call_id}/wrap-up", data={**form, "csrf_token": auth.csrf()})


def test_an_agent_wraps_up_a_call_and_changes_it_later_and_the_history_shows_it(client, auth, db, people):
    call = add_call(db, people["alice"], "+442079460031", "2026-11-20T10:00:00+00:00")
    auth.login("alice")
    page = client.get(f"/calls/{call}").get_data(as_text=True)
    assert "Not wrapped up yet." in page and '<option value="callback requested">' in page
    response = wrap_up(client, auth, call, disposition="sale", notes="<b>bold</b> customer")
    assert response.status_code == 303
    row = db.execute("SELECT disposition, notes, wrapped_up_by FROM calls WHERE id = ?", [call]).fetchone()
    assert row == ("sale", "<b>bold</b> customer", "alice")
    page = client.get(f"/calls/{call}").get_data(as_text=True)
    assert "&lt;b&gt;bold&lt;/b&gt; customer" in page and "<b>bold</b>" not in page  # escaped on output
    assert wrap_up(client, auth, call, disposition="wrong number", notes="").status_code == 303
    assert db.execute("SELECT disposition, notes FROM calls WHERE id = ?", [call]).fetchone() == ("wrong number", None)
    assert ">wrong number<" in client.get("/history").get_data(as_text=True)
    auth.login("sue")  # a supervisor may edit it too
    assert wrap_up(client, auth, call, disposition="sale", notes="checked").status_code == 303
    assert db.execute("SELECT wrapped_up_by FROM calls WHERE id = ?", [call]).fetchone() == ("sue",)


@pytest.mark.parametrize("form, sentence", [
    ({"disposition": "made up"}, "Choose a disposition from the list."),
    ({"disposition": "", "notes": "  "}, "Choose a disposition or write a note."),
    ({"disposition": "sale", "notes": "x" * 2001}, "at most 2000 characters"),
])
def test_a_bad_wrap_up_is_refused_with_a_sentence_and_changes_nothing(client, auth, db, people, form, sentence):
    call = add_call(db, people["alice"], "+442079460031", "2026-11-20T10:00:00+00:00")
    auth.login("alice")
    response = wrap_up(client, auth, call, **form)
    assert response.status_code == 422 and sentence in response.get_data(as_text=True)
    assert db.execute("SELECT disposition, notes FROM calls WHERE id = ?", [call]).fetchone() == (None, None)


def test_an_agent_cannot_wrap_up_another_agents_call_and_csrf_is_required(client, auth, db, people):
    theirs = add_call(db, people["bob"], "+442079460032", "2026-11-20T11:00:00+00:00")
    auth.login("alice")
    assert wrap_up(client, auth, theirs, disposition="sale").status_code == 404
    assert client.post(f"/calls/{theirs}/wrap-up", data={"disposition": "sale"}).status_code == 400
    assert db.execute("SELECT disposition FROM calls WHERE id = ?", [theirs]).fetchone() == (None,)


def test_the_chart_counts_each_local_day_of_the_filtered_range(client, auth, db, people):
    add_call(db, people["alice"], "+442079460001", "2026-07-01T23:30:00+00:00")  # 2 July in London
    add_call(db, people["alice"], "+442079460002", "2026-07-02T10:00:00+00:00", dial_result="no-answer")
    add_call(db, people["alice"], "+442079460003", "2026-07-02T11:00:00+00:00", status="busy", dial_result=None)
    add_call(db, people["bob"], "+442079460004", "2026-07-02T11:00:00+00:00")
    auth.login("alice")
    page = client.get("/history?from=2026-07-01&to=2026-07-03").get_data(as_text=True)
    assert "<title>Wed 1 Jul: 0 talked, 0 missed by agent, 0 not reached</title>" in page
    assert "<title>Thu 2 Jul: 1 talked, 1 missed by agent, 1 not reached</title>" in page  # not Bob's
    assert "<title>Fri 3 Jul: 0 talked" in page
    assert "1 talked</span>" in page and "1 missed by agent</span>" in page


def test_the_chart_rollup_follows_every_change_of_a_call(db, people):
    call = calls.create_call(db, people["alice"], "+442079460001")
    for status in ("ringing", "in-progress", "completed"):
        calls.apply_event(db, call["id"], "status", params.read({"CallSid": "CA" + "1" * 32, "CallStatus": status}))
    calls.apply_event(db, call["id"], "dial-result", params.read({"CallSid": "CA" + "1" * 32, "DialCallStatus": "no-answer"}))
    add_call(db, people["bob"], "+442079460002", "2026-07-02T10:00:00+00:00")
    kind = ("CASE WHEN status = 'completed' AND (dial_result IS NULL OR dial_result = 'completed') THEN 'talked' "
            "WHEN status = 'completed' THEN 'missed' ELSE 'other' END")
    expected = db.execute(f"SELECT substr(created_at, 1, 13), agent_id, direction, sum({kind} = 'talked'), "
                          f"sum({kind} = 'missed'), sum({kind} = 'other') FROM calls GROUP BY 1, 2, 3 ORDER BY 1, 2").fetchall()
    rollup = db.execute("SELECT hour, agent_id, direction, talked, missed, other FROM call_hours WHERE agent_id != -1 AND (talked OR missed OR other) "
                        "ORDER BY 1, 2").fetchall()
    assert rollup == expected and (0, 1, 0) in [row[3:] for row in rollup]
    everyone = db.execute(f"SELECT substr(created_at, 1, 13), -1, direction, sum({kind} = 'talked'), "
                          f"sum({kind} = 'missed'), sum({kind} = 'other') FROM calls GROUP BY 1, 3 ORDER BY 1").fetchall()
    assert db.execute("SELECT hour, agent_id, direction, talked, missed, other FROM call_hours WHERE agent_id = -1 AND (talked OR missed OR other) "
                      "ORDER BY 1").fetchall() == everyone


@pytest.mark.parametrize("app_config", [{"TIME_ZONE": "America/New_York"}])
def test_today_on_the_dialer_and_the_board_is_the_centres_day(app, client, auth, db, people):
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    from dialer import board
    start = datetime.fromisoformat(calls.start_of_today(ZoneInfo("America/New_York")))
    assert start.hour in (4, 5)  # New York's midnight in UTC (summer, winter)
    before = add_call(db, people["alice"], "+442079460001", (start - timedelta(seconds=1)).isoformat())
    after = add_call(db, people["alice"], "+442079460002", (start + timedelta(seconds=1)).isoformat())
    assert [c["id"] for c in calls.todays_ended_calls(db, people["alice"], ZoneInfo("America/New_York"))] == [after]
    with app.test_request_context():
        assert board.todays_counts(db)["placed"] == 1
    auth.login("alice")
    page = client.get("/").get_data(as_text=True)
    assert "Today <small class=\"hint\">(America/New_York)</small>" in page
    assert f'id="recent-call-{after}"' in page and f'id="recent-call-{before}"' not in page


def test_the_timeline_puts_a_late_callback_where_its_timestamp_says_it_happened(client, auth, db):
    """Found by the black-box run: held back 16 s, "dialling the customer" came after "talking"."""
    auth.create("alice")
    call = calls.create_call(db, agent_id(db, "alice"), "+442079460000")
    leg, agent_leg = "CA" + "5" * 32, "CA" + "6" * 32
    start = datetime.now(timezone.utc) - timedelta(seconds=30)
    with db.conn:  # placed half a minute ago
        placed = (start - timedelta(seconds=1)).isoformat(timespec="seconds")
        db.execute("UPDATE calls SET created_at = ? WHERE id = ?", [placed, call["id"]])
        db.execute("UPDATE call_events SET received_at = ? WHERE call_id = ?", [placed, call["id"]])

    def event(source, sid, status, seconds=None, sequence=None):
        values = {"CallSid": sid, "CallStatus": status}
        if seconds is not None:
            values["Timestamp"] = format_datetime(start + timedelta(seconds=seconds))
        if sequence is not None:
            values["SequenceNumber"] = str(sequence)
        calls.apply_event(db, call["id"], source, params.read(values))

    event("agent", agent_leg, "ringing")  # the agent's leg reported at once…
    event("agent", agent_leg, "in-progress")
    event("status", leg, "initiated", 1, 0)  # …the customer's callbacks held back, and released late
    event("status", leg, "ringing", 3, 1)
    event("status", leg, "in-progress", 9, 2)
    row = calls.get_call(db, call["id"])
    lines = history.timeline(row, calls.events_for(db, call["id"]))
    assert [text for _, text in lines] == [
        "placed", "dialling the customer", "the customer's phone rang",
        "the customer answered and heard the hold message", "the agent's phone rang", "the agent answered: talking"]
    assert [when for when, _ in lines] == sorted(when for when, _ in lines)
    assert lines[1][0] == (start + timedelta(seconds=1)).isoformat(timespec="seconds")  # its own time, not arrival
