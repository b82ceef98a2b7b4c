"""Property-based tests (hypothesis): whatever arrives, signed or not, no 5xx and a valid call."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dialer import calls as call_queries
from dialer.auth import agent_by_username
from dialer.params import FIELDS

from .conftest import PASSWORD, csrf_from
from .test_twiml import TWIML_PATHS
from .test_webhook_input import assert_valid

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Values a hostile or broken sender might put in any field, mixed with real ones.
REAL_VALUES = ["ringing", "in-progress", "completed", "busy", "no-answer", "canceled", "failed",
               "queued", "initiated", "answered", "absent", "0", "1", "2", "3", "42", "86400",
               "CA" + "a" * 32, "CA" + "b" * 32, "RE" + "c" * 32, "Mon, 23 Nov 2026 21:00:05 +0000",
               "https://api.twilio.com/2010-04-01/Accounts/AC/Recordings/RE1"]
value = st.one_of(
    st.sampled_from(REAL_VALUES),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.text(max_size=60),
    st.sampled_from(["Fri, 31 Dec 9999 23:59:59 -2359", "", " ", "NaN", "1e308", "٣", "\x00", "CA" + "z" * 32]),
)
field = st.sampled_from([*FIELDS, "From", "To", "Direction", "CallbackSource", "Junk"])
webhook = st.dictionaries(field, value, max_size=10)


@pytest.fixture
def calls(auth, db):
    auth.create("alice")
    agent = agent_by_username(db, "alice")
    return [call_queries.create_call(db, agent["id"], "+442079460000")["id"] for _ in range(2)]


@FUZZ
@given(path=st.sampled_from(TWIML_PATHS), params=webhook, signed=st.booleans(), ours=st.booleans(),
       which=st.sampled_from(["first", "second", "none", "junk"]))
def test_no_webhook_gets_a_5xx_and_every_call_stays_valid_and_never_moves_back(
        app, client, sign, db, calls, path, params, signed, ours, which):
    query = {"first": f"?call={calls[0]}", "second": f"?call={calls[1]}", "none": "", "junk": "?call=x%FF"}[which]
    if ours:
        params = {**params, "AccountSid": app.config["TWILIO_ACCOUNT_SID"]}
    before = {call_id: call_queries.get_call(db, call_id) for call_id in calls}
    events = db["call_events"].count
    headers = sign(path + query, params) if signed else {}

    response = client.post(path + query, data=params, headers=headers)

    assert response.status_code < 500, response.get_data(as_text=True)
    if not (signed and ours):
        assert response.status_code == 403
        assert db["call_events"].count == events
    for call_id in calls:
        row, old = call_queries.get_call(db, call_id), before[call_id]
        assert_valid(row)
        assert call_queries.rank(row["status"]) >= call_queries.rank(old["status"])
        if call_queries.is_terminal(old["status"]):
            assert (row["status"], row["ended_at"], row["duration"]) == (old["status"], old["ended_at"], old["duration"])


INBOUND = ["/twiml/inbound", "/twiml/inbound-ring", "/twiml/offer?agent=1", "/twiml/inbound-dialed?step=7", "/twiml/queue-wait", "/twiml/queue-key", "/twiml/queue-result",
           "/twiml/voicemail", "/twiml/status?leg=agent&agent=1", "/twiml/status?leg=agent&agent=99",
           "/twiml/recording?kind=voicemail"]


@FUZZ
@given(path=st.sampled_from(INBOUND), params=webhook, signed=st.booleans(), ours=st.booleans(),
       which=st.sampled_from(["inbound", "outbound", "none", "junk"]))
def test_no_inbound_webhook_gets_a_5xx_and_a_callers_call_stays_valid(
        app, client, sign, db, calls, path, params, signed, ours, which):
    """Customers calling in: the voice URL, the queue's, the voicemail's and the agents' legs, fuzzed."""
    inbound = call_queries.create_inbound(db, call_queries.params.trusted(
        {"CallSid": "CA" + "e" * 32, "From": "+442079460100", "CallStatus": "ringing"}))["id"]
    ids = {"inbound": inbound, "outbound": calls[0], "none": None, "junk": "x%FF"}
    glue = "&" if "?" in path else "?"
    path = path + (f"{glue}call={ids[which]}" if ids[which] else "")
    if ours:
        params = {**params, "AccountSid": app.config["TWILIO_ACCOUNT_SID"]}
    before = call_queries.get_call(db, inbound)
    calls_before = db["calls"].count

    response = client.post(path, data=params, headers=sign(path, params) if signed else {})

    assert response.status_code < 500, response.get_data(as_text=True)
    if not (signed and ours):
        assert response.status_code == 403 and db["calls"].count == calls_before
    row = call_queries.get_call(db, inbound)
    assert_valid(row)
    assert call_queries.rank(row["status"]) >= call_queries.rank(before["status"])
    assert row["agent_id"] in (None, before["agent_id"]) or before["agent_id"] is None and row["agent_id"] == 1
    if response.status_code == 200 and response.mimetype == "text/xml":
        assert response.data.startswith(b"<?xml") and b"<Response" in response.data


form_value = st.one_of(st.text(max_size=80), st.sampled_from(["020 7946 0000", "+1 500 555 0001", "alice", PASSWORD]))


@FUZZ
@given(data=st.data(), signed_in=st.booleans(), with_csrf=st.booleans(), htmx=st.booleans())
def test_no_form_gets_a_5xx_signed_in_or_not(app, client, auth, db, calls, data, signed_in, with_csrf, htmx):
    """Every form of the app (every POST a browser makes), with any fields, any values."""
    client = app.test_client()  # a new browser each example: nothing carried over
    if signed_in:
        auth.login("alice", client=client)
    forms = [rule for rule in app.url_map.iter_rules()
             if "POST" in rule.methods and not rule.endpoint.startswith(("twiml.", "sandbox_api."))]
    rule = data.draw(st.sampled_from(sorted(forms, key=lambda r: r.rule)), label="form")
    path = rule.build({arg: str(data.draw(st.sampled_from([calls[0], calls[1], 0, 2**62, 2**64, 10**30]), label=arg))
                       for arg in rule.arguments})[1]
    fields = data.draw(st.dictionaries(st.sampled_from(["to", "username", "password", "disposition", "notes",
                                                        "presence", "number", "junk"]), form_value, max_size=4),
                       label="fields")
    if with_csrf:
        fields["csrf_token"] = csrf_from(client.get("/login").get_data(as_text=True))
    headers = {"HX-Request": "true"} if htmx else {}

    response = client.post(path, data=fields, headers=headers)

    assert response.status_code < 500, (path, response.get_data(as_text=True)[:300])
    if response.status_code >= 400 and "HX-Redirect" not in response.headers:
        assert response.get_data(as_text=True).strip(), "an error must say something"
    for call_id in calls:
        assert_valid(call_queries.get_call(db, call_id))
