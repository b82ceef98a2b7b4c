"""The status callbacks and customer-to-agent, answered beneath Flask (dialer/webhooks.py).

Their rules are tested with every other webhook's (test_twiml, test_webhook_input, test_properties);
these tests are about how that layer reads a request: as Flask did, with nothing let in and never
a stack trace.
"""
import io
import json
import logging

import pytest
from werkzeug.test import EnvironBuilder

from dialer import calls as call_queries
from dialer.auth import agent_by_username

from .test_twiml import signed_post, start_now  # noqa: F401 (start_now: autouse)

LEG = "CA" + "a" * 32
FAST_PATHS = ["/twiml/status", "/twiml/customer-to-agent"]


@pytest.fixture
def call(auth, db):
    auth.create("alice")
    return call_queries.create_call(db, agent_by_username(db, "alice")["id"], "+442079460000")


@pytest.fixture
def flask_requests(app):
    """The paths of the requests that reached Flask's own request handling."""
    seen = []
    app.before_request_funcs.setdefault(None, []).insert(0, lambda: seen.append(_path()))
    return seen


def _path():
    from flask import request
    return request.path


def raw(app, path, body, content_type="application/x-www-form-urlencoded", length=True, headers=None, method="POST"):
    """Send a request to the app's WSGI entry as a server would, with the body bytes as they are."""
    builder = EnvironBuilder(path=path, method=method, headers=headers or {}, base_url="http://127.0.0.1")
    environ = builder.get_environ()
    environ.update({"wsgi.input": io.BytesIO(body), "CONTENT_TYPE": content_type})
    if length:
        environ["CONTENT_LENGTH"] = str(len(body)) if length is True else length
    else:
        environ.pop("CONTENT_LENGTH", None)  # a chunked request: the body ends where the stream does
    answer = {}

    def start_response(status, response_headers, exc_info=None):
        answer["status"], answer["headers"] = int(status.split()[0]), dict(response_headers)
    answer["body"] = b"".join(app.wsgi_app(environ, start_response))
    return answer


def test_the_busiest_webhooks_never_reach_flask_and_the_others_do(client, sign, call, flask_requests):
    params = {"CallSid": LEG, "CallStatus": "ringing", "SequenceNumber": "1"}
    for path in ("/twiml/status", "/twiml/dial-result"):
        response = signed_post(client, sign, f"{path}?call={call['id']}", params)
        assert response.status_code in (200, 204)
    assert flask_requests == ["/twiml/dial-result"]


@pytest.mark.parametrize("path", FAST_PATHS)
def test_a_get_is_405_as_on_every_other_webhook(client, path):
    response = client.get(path)
    flask_answer = client.get("/twiml/dial-result")
    assert response.status_code == flask_answer.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.get_json() == flask_answer.get_json() == {"error": "That page does not take this kind of request."}


@pytest.mark.parametrize("path", FAST_PATHS)
def test_a_chunked_body_over_64_kb_is_413(app, path, db, call):
    before = db["call_events"].count
    answer = raw(app, f"{path}?call={call['id']}", b"CallSid=" + b"x" * 70_000, length=False)
    assert answer["status"] == 413
    assert json.loads(answer["body"]) == {"error": "That request is larger than the dialer accepts."}
    assert db["call_events"].count == before


@pytest.mark.parametrize("length", ["abc", "-1", "１２"])
def test_a_content_length_that_is_no_number_is_400(app, call, length):
    answer = raw(app, f"/twiml/status?call={call['id']}", b"CallSid=" + LEG.encode(), length=length)
    assert answer["status"] == 400
    assert "could not read" in json.loads(answer["body"])["error"]


def _signed_body(app, path, params):
    from twilio.request_validator import RequestValidator
    url = app.config["PUBLIC_BASE_URL"] + path
    return {"X-Twilio-Signature": RequestValidator(app.config["TWILIO_AUTH_TOKEN"]).compute_signature(url, params)}


@pytest.mark.parametrize("body, content_type", [
    (b"CallSid=CA" + b"a" * 32 + b"&CallStatus=ringing&To=\xff\xfe", "application/x-www-form-urlencoded"),
    (b"--b\r\nContent-Disposition: form-data; name=\"CallSid\"\r\n\r\nCA" + b"a" * 32 + b"\r\n--b--\r\n",
     "multipart/form-data; boundary=b"),
    (b'{"CallSid": "CA' + b"a" * 32 + b'"}', "application/json"),
])
def test_a_body_that_is_no_utf8_form_is_refused_not_a_crash(app, db, call, body, content_type, caplog):
    path = f"/twiml/status?call={call['id']}"
    before = db["call_events"].count
    # Signed as if it had been a form with these fields: the app reads no form, so the signature fails.
    headers = _signed_body(app, path, {"CallSid": LEG, "CallStatus": "ringing"})
    answer = raw(app, path, body, content_type=content_type, headers=headers)
    assert answer["status"] == 403
    assert db["call_events"].count == before
    assert "wrongly signed" in caplog.text


def test_a_repeated_field_is_signed_with_every_value_and_its_first_counts(app, client, sign, db, call):
    path = f"/twiml/status?call={call['id']}"
    pairs = [("AccountSid", app.config["TWILIO_ACCOUNT_SID"]), ("CallSid", LEG), ("CallStatus", "ringing"), ("CallStatus", "completed"), ("SequenceNumber", "1")]
    from werkzeug.datastructures import MultiDict
    response = client.post(path, data=MultiDict(pairs), headers=sign(path, MultiDict(pairs)))
    assert response.status_code == 204
    assert call_queries.get_call(db, call["id"])["status"] == "ringing"
    # Signed over the first value only, it is refused: Twilio signs them all.
    wrong = client.post(path, data=MultiDict(pairs), headers=sign(path, dict(pairs[:3] + pairs[4:])))
    assert wrong.status_code == 403


def test_a_non_ascii_query_is_checked_not_a_crash(app, client, sign, call):
    path = f"/twiml/status?call={call['id']}&x=%C3%A9%FF"
    assert signed_post(client, sign, path, {"CallSid": LEG, "CallStatus": "ringing"}).status_code == 204


@pytest.mark.parametrize("path", FAST_PATHS)
def test_a_failure_inside_is_a_logged_500_that_says_so(app, client, sign, db, call, path, caplog):
    db.execute("DROP TABLE call_events")  # the database is not what the code expects
    with caplog.at_level(logging.ERROR):
        response = signed_post(client, sign, f"{path}?call={call['id']}", {"CallSid": LEG, "CallStatus": "in-progress"})
    assert response.status_code == 500
    assert response.get_json() == {"error": "Something went wrong on our side. It has been logged; try again."}
    assert f"Exception on {path} [POST]" in caplog.text and "Traceback" in caplog.text


@pytest.mark.parametrize("path", FAST_PATHS)
def test_replies_carry_the_same_security_headers_as_flasks(client, sign, call, path):
    params = {"CallSid": LEG, "CallStatus": "in-progress"}
    mine = signed_post(client, sign, f"{path}?call={call['id']}", params)
    flask_reply = signed_post(client, sign, f"/twiml/dial-result?call={call['id']}", params)
    assert mine.status_code in (200, 204) and flask_reply.status_code == 200
    for name in ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy",
                 "Cache-Control"):
        assert mine.headers[name] == flask_reply.headers[name], name


@pytest.mark.parametrize("app_config", [{"PROXY_HOPS": 1}])
def test_behind_the_proxy_a_refusal_is_logged_with_the_clients_address(client, call, caplog):
    response = client.post(f"/twiml/status?call={call['id']}", data={"CallSid": LEG},
                           headers={"X-Forwarded-For": "203.0.113.9", "X-Twilio-Signature": "forged"},
                           environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert response.status_code == 403
    assert "(from 203.0.113.9)" in caplog.text
