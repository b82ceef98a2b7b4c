"""Going live: `flask twilio setup` and `twilio check` end to end against a running sandbox, and the
sandbox's Account, IncomingPhoneNumber, Application and Key resources against Twilio's schemas.

The commands run as a person runs them (`flask --app app twilio …` in a child process, in twilio
mode), talking over real HTTP with the official Client to the sandbox of the app under test.
"""
import json
import os
import subprocess
import sys

import jsonschema
import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import VoiceGrant
from twilio.rest import Client

from dialer import create_app
from dialer.config import ConfigError
from dialer.golive import command_line_runs_twilio
from dialer.telephony import BaseUrlHttpClient

from .test_sandbox import openapi_to_json_schema

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(HERE)
FLASK = os.path.join(os.path.dirname(sys.executable), "flask")
PUBLIC = "https://dialer.example.test"
NOT_OURS = "+442079460123"


def strict(name):
    """Twilio's schema, with every property required and nothing else allowed."""
    with open(os.path.join(HERE, "data", "twilio_account_schemas.json")) as f:
        doc = openapi_to_json_schema(json.load(f))
    schema = dict(doc[name], required=list(doc[name]["properties"]), additionalProperties=False)
    return {**schema, **{k: v for k, v in doc.items() if k.endswith(tuple(f"_enum_{e}" for e in (
        "status", "type", "address_requirement", "emergency_status", "emergency_address_status", "voice_receive_mode")))}}


def check_json(body, name):
    jsonschema.validate(body, strict(name), format_checker=jsonschema.FormatChecker())
    for field in ("date_created", "date_updated"):
        assert body[field].endswith(" +0000") and body[field][3:5] == ", ", body[field]


class RecordingHttpClient(BaseUrlHttpClient):
    """The official Client's own HTTP client, keeping each answer's raw JSON for the schema check."""

    def __init__(self, base_url):
        super().__init__(base_url)
        self.bodies = []

    def request(self, *args, **kwargs):
        response = super().request(*args, **kwargs)
        self.bodies.append(json.loads(response.text) if response.text else None)
        return response

    @property
    def last(self):
        return self.bodies[-1]


@pytest.fixture
def sandbox(app, live_server):
    """The official Client, signed in with the sandbox account's SID and auth token."""
    cfg = app.config
    return Client(cfg["TWILIO_ACCOUNT_SID"], cfg["TWILIO_AUTH_TOKEN"], cfg["TWILIO_ACCOUNT_SID"],
                  http_client=RecordingHttpClient(cfg["TWILIO_API_BASE_URL"]))


@pytest.fixture
def live_instance(tmp_path):
    """The instance folder of the dialer going live (twilio mode), apart from the sandbox's."""
    return tmp_path / "live-instance"


@pytest.fixture
def env(app, live_server, live_instance):
    """The environment of a dialer in twilio mode whose "Twilio" is the running sandbox."""
    cfg = app.config
    values = {k: v for k, v in os.environ.items() if not k.startswith(("DIALER_", "FLASK_", "TWILIO_"))}
    values.update(DIALER_INSTANCE_PATH=str(live_instance), DIALER_TELEPHONY="twilio",
                  DIALER_TWILIO_ACCOUNT_SID=cfg["TWILIO_ACCOUNT_SID"], DIALER_TWILIO_AUTH_TOKEN=cfg["TWILIO_AUTH_TOKEN"],
                  DIALER_TWILIO_API_BASE_URL=cfg["TWILIO_API_BASE_URL"], DIALER_TWILIO_CALLER_ID=cfg["TWILIO_CALLER_ID"],
                  DIALER_PUBLIC_BASE_URL=PUBLIC)
    return values


def flask(env, *args):
    """`flask --app app …` as a person types it; returns (exit code, stdout + stderr)."""
    done = subprocess.run([FLASK, "--app", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    return done.returncode, output


def account_state(sandbox):
    """Everything setup may change, as the sandbox serves it (raw JSON, dates included)."""
    state = {}
    for name, resource in (("incoming_phone_numbers", sandbox.incoming_phone_numbers),
                           ("applications", sandbox.applications), ("keys", sandbox.keys)):
        resource.list()
        state[name] = sandbox.http_client.last[name]
    return state


def the_number(sandbox, app):
    [number] = sandbox.incoming_phone_numbers.list(phone_number=app.config["TWILIO_CALLER_ID"])
    return number


def settings_written(live_instance):
    values = {}
    exec((live_instance / "config.py").read_text(), {}, values)  # the file the app itself reads
    return values


# --- twilio setup -----------------------------------------------------------------------------

def test_setup_makes_the_key_and_the_twiml_app_and_points_the_number_at_the_dialer(app, sandbox, env, live_instance):
    live_instance.mkdir()
    (live_instance / "config.py").write_text("# the centre's own settings\nDIAL_TIMEOUT = 30\n")
    code, output = flask(env, "twilio", "setup", "--write")
    assert code == 0, output

    [key] = [k for k in sandbox.keys.list() if k.friendly_name == "Dialer"]
    [twiml_app] = sandbox.applications.list(friendly_name="Dialer")
    assert (twiml_app.voice_url, twiml_app.voice_method) == (PUBLIC + "/twiml/outbound", "POST")
    number = the_number(sandbox, app)
    assert (number.voice_url, number.voice_method) == (PUBLIC + "/twiml/inbound", "POST")
    assert (number.status_callback, number.status_callback_method) == (PUBLIC + "/twiml/status", "POST")
    for line in (f"Created API key 'Dialer' ({key.sid})", f"Created TwiML App 'Dialer' ({twiml_app.sid})",
                 f"Changed {number.phone_number} voice URL", f"Changed {number.phone_number} status callback (none) → "):
        assert line in output
    assert app.config["TWILIO_AUTH_TOKEN"] not in output

    written = settings_written(live_instance)
    assert written["DIAL_TIMEOUT"] == 30 and "# the centre's own settings" in (live_instance / "config.py").read_text()
    assert (written["TWILIO_API_KEY_SID"], written["TWILIO_TWIML_APP_SID"]) == (key.sid, twiml_app.sid)
    assert "TWILIO_AUTH_TOKEN" not in written  # it is in the environment already
    assert oct((live_instance / "config.py").stat().st_mode & 0o777) == "0o600"

    # The new key works as the app will use it: REST sign-in, and access tokens for the browsers.
    cfg = app.config
    as_key = Client(key.sid, written["TWILIO_API_KEY_SECRET"], cfg["TWILIO_ACCOUNT_SID"],
                    http_client=BaseUrlHttpClient(cfg["TWILIO_API_BASE_URL"]))
    assert as_key.calls.list(limit=1) == []
    token = AccessToken(cfg["TWILIO_ACCOUNT_SID"], key.sid, written["TWILIO_API_KEY_SECRET"], identity="alice_1")
    token.add_grant(VoiceGrant(incoming_allow=True, outgoing_application_sid=twiml_app.sid))
    registered = requests.post(f"{cfg['PUBLIC_BASE_URL']}/sandbox/devices", json={"token": token.to_jwt()})
    assert registered.status_code == 201 and registered.json()["identity"] == "alice_1"


def test_a_second_setup_says_nothing_to_change_and_changes_nothing(sandbox, env):
    assert flask(env, "twilio", "setup", "--write")[0] == 0
    before = account_state(sandbox)
    code, output = flask(env, "twilio", "setup")
    assert code == 0, output
    assert "Nothing to change" in output and "Created" not in output and "→" not in output
    assert account_state(sandbox) == before


def test_dry_run_shows_the_changes_and_makes_none(app, sandbox, env, live_instance):
    before = account_state(sandbox)
    code, output = flask(env, "twilio", "setup", "--dry-run", "--write")
    assert code == 0, output
    assert "Would create API key 'Dialer'" in output and "Would create TwiML App 'Dialer'" in output
    assert f"Would change {app.config['TWILIO_CALLER_ID']} voice URL " in output
    assert f" → '{PUBLIC}/twiml/inbound'." in output
    assert "Dry run: nothing was changed." in output
    assert account_state(sandbox) == before
    assert not (live_instance / "config.py").exists()


@pytest.mark.parametrize("case, sentence", [
    ("bad credentials", "refused the account SID"),
    ("number not owned", f"does not own {NOT_OURS}"),
    ("http PUBLIC_BASE_URL", "is not https"),
    ("http allowed without a sandbox", "--allow-http is only for a rehearsal against a sandbox"),
])
def test_each_bad_input_gets_its_sentence_and_changes_nothing(app, sandbox, env, live_instance, case, sentence):
    args = ["twilio", "setup", "--write"]
    if case == "bad credentials":
        env["DIALER_TWILIO_AUTH_TOKEN"] = "f" * 32
    elif case == "number not owned":
        args += ["--number", NOT_OURS]
    elif case == "http PUBLIC_BASE_URL":
        env["DIALER_PUBLIC_BASE_URL"] = "http://dialer.example.test"
    else:
        env.update(DIALER_PUBLIC_BASE_URL="http://dialer.example.test", DIALER_TWILIO_API_BASE_URL="")
        args.append("--allow-http")
    before = account_state(sandbox)
    code, output = flask(env, *args)
    assert code == 1 and sentence in output, output
    assert account_state(sandbox) == before
    assert not (live_instance / "config.py").exists()
    assert env["DIALER_TWILIO_AUTH_TOKEN"] not in output


def test_allow_http_points_the_number_at_an_http_dialer_when_rehearsing_against_a_sandbox(app, sandbox, env):
    env["DIALER_PUBLIC_BASE_URL"] = "http://dialer.example.test"
    code, output = flask(env, "twilio", "setup", "--allow-http")
    assert code == 0, output
    assert the_number(sandbox, app).voice_url == "http://dialer.example.test/twiml/inbound"
    assert "TWILIO_API_KEY_SECRET = '" in output and "shown only this once" in output


def test_setup_takes_the_credentials_as_options(app, sandbox, env):
    sid, token = env.pop("DIALER_TWILIO_ACCOUNT_SID"), env.pop("DIALER_TWILIO_AUTH_TOKEN")
    code, output = flask(env, "twilio", "setup", "--account-sid", sid, "--auth-token", token)
    assert code == 0, output
    assert token not in output and f"<the auth token you gave, ending …{token[-4:]}>" in output
    assert f"TWILIO_ACCOUNT_SID = '{sid}'" in output


def test_a_key_named_dialer_whose_secret_is_lost_is_said_plainly_and_replaced(sandbox, env, live_instance):
    old = sandbox.new_keys.create(friendly_name="Dialer")
    code, output = flask(env, "twilio", "setup", "--write")
    assert code == 0, output
    assert f"API key 'Dialer' exists ({old.sid}), but Twilio shows a key's secret only when the key is made" in output
    assert settings_written(live_instance)["TWILIO_API_KEY_SID"] != old.sid


# --- the start-up checks ------------------------------------------------------------------------

def test_other_commands_and_the_server_still_refuse_twilio_mode_without_a_key(tmp_path, env):
    code, output = flask(env, "routes")
    assert code != 0 and "setting TWILIO_API_KEY_SID (DIALER_TWILIO_API_KEY_SID) is required" in output
    with pytest.raises(ConfigError):
        create_app({"TELEPHONY": "twilio", "TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "t"},
                   instance_path=str(tmp_path / "other"))


@pytest.mark.parametrize("argv, twilio", [
    (["/venv/bin/flask", "--app", "app", "twilio", "setup"], True),
    (["/venv/bin/flask", "-A", "app", "--debug", "twilio", "check"], True),
    (["/usr/lib/python3/site-packages/flask/__main__.py", "--app=app", "twilio", "setup"], True),
    (["/venv/bin/flask", "--app", "twilio", "run"], False),
    (["/venv/bin/flask", "--app", "app", "agents", "create", "twilio"], False),
    (["/venv/bin/flask", "--app", "app", "run"], False),
    (["/venv/bin/gunicorn", "twilio"], False),
    ([], False),
])
def test_only_the_twilio_commands_start_without_the_key(argv, twilio):
    assert command_line_runs_twilio(argv) is twilio


# --- twilio check -------------------------------------------------------------------------------

def test_check_says_all_is_well_after_setup_and_reports_a_wrong_number_url(app, sandbox, env):
    code, output = flask(env, "twilio", "check")
    assert code == 1 and "✗ No API key is configured" in output and "✗ No TwiML App is configured" in output
    assert flask(env, "twilio", "setup", "--write")[0] == 0

    code, output = flask(env, "twilio", "check")
    assert code == 0, output
    for line in ("✓ The account SID and auth token are accepted", "signs in with its secret",
                 f"voice URL is {PUBLIC}/twiml/outbound (POST)", f"owns the caller ID {app.config['TWILIO_CALLER_ID']}",
                 f"voice URL is {PUBLIC}/twiml/inbound", f"status callback is {PUBLIC}/twiml/status",
                 "passes the app's signature check", "All set."):
        assert line in output, line
    assert "? The voice geo permissions could not be read (HTTP 404" in output  # the sandbox has none
    assert "✗" not in output

    number = the_number(sandbox, app)
    number.update(voice_url="https://wrong.example/voice")
    code, output = flask(env, "twilio", "check")
    assert code == 1
    assert (f"✗ {number.phone_number} voice URL is 'https://wrong.example/voice', not '{PUBLIC}/twiml/inbound': "
            "run: flask --app app twilio setup.") in output
    assert "1 thing wrong" in output


def test_check_reports_a_deleted_key_and_an_app_pointed_elsewhere(app, sandbox, env, live_instance):
    assert flask(env, "twilio", "setup", "--write")[0] == 0
    written = settings_written(live_instance)
    sandbox.keys(written["TWILIO_API_KEY_SID"]).delete()
    sandbox.applications(written["TWILIO_TWIML_APP_SID"]).update(voice_url="https://elsewhere.example/voice")
    code, output = flask(env, "twilio", "check")
    assert code == 1
    assert f"✗ Twilio refuses API key {written['TWILIO_API_KEY_SID']}" in output
    assert "voice URL is 'https://elsewhere.example/voice' (POST), not" in output
    assert "2 things wrong" in output


# --- the sandbox's account resources ------------------------------------------------------------

def test_account_and_number_json_validate_against_twilios_schemas(app, sandbox):
    http, cfg = sandbox.http_client, app.config
    account = sandbox.api.v2010.accounts(cfg["TWILIO_ACCOUNT_SID"]).fetch()
    check_json(http.last, "account")
    assert (account.status, account.type, account.sid) == ("active", "Full", cfg["TWILIO_ACCOUNT_SID"])

    [number] = sandbox.incoming_phone_numbers.list(phone_number=cfg["TWILIO_CALLER_ID"])
    page = http.last
    assert page["page_size"] == 50 and page["next_page_uri"] is None and len(page["incoming_phone_numbers"]) == 1
    check_json(page["incoming_phone_numbers"][0], "incoming_phone_number")
    assert sandbox.incoming_phone_numbers.list(phone_number="+1500555****")[0].sid == number.sid
    assert sandbox.incoming_phone_numbers.list(phone_number=NOT_OURS) == []
    sandbox.incoming_phone_numbers(number.sid).fetch()
    check_json(http.last, "incoming_phone_number")

    twiml_app = sandbox.applications.create(friendly_name="Rehearsal", voice_url="https://x.example/out")
    updated = sandbox.incoming_phone_numbers(number.sid).update(
        voice_url="https://x.example/in", voice_method="GET", status_callback="https://x.example/status",
        status_callback_method="GET", voice_application_sid=twiml_app.sid, friendly_name="Front desk")
    check_json(http.last, "incoming_phone_number")
    assert (updated.voice_url, updated.voice_method, updated.status_callback, updated.status_callback_method,
            updated.voice_application_sid, updated.friendly_name) == (
        "https://x.example/in", "GET", "https://x.example/status", "GET", twiml_app.sid, "Front desk")
    cleared = sandbox.incoming_phone_numbers(number.sid).update(voice_application_sid="", status_callback="")
    assert cleared.voice_application_sid is None and cleared.status_callback is None
    check_json(http.last, "incoming_phone_number")


def test_application_json_validates_against_twilios_schema(sandbox):
    http = sandbox.http_client
    made = sandbox.applications.create(friendly_name="Dialer", voice_url="https://x.example/out", voice_method="POST")
    check_json(http.last, "application")
    assert made.sid.startswith("AP") and http.last["voice_url"] == "https://x.example/out"
    assert [a.sid for a in sandbox.applications.list(friendly_name="Dialer")] == [made.sid]
    sandbox.applications.list()
    for body in http.last["applications"]:
        check_json(body, "application")
    assert sandbox.applications.list(friendly_name="Nobody") == []
    sandbox.applications(made.sid).fetch()
    check_json(http.last, "application")
    changed = sandbox.applications(made.sid).update(voice_url="https://y.example/out", status_callback="https://y.example/s")
    check_json(http.last, "application")
    assert (changed.voice_url, changed.status_callback) == ("https://y.example/out", "https://y.example/s")
    assert sandbox.applications(made.sid).delete() is True
    with pytest.raises(TwilioRestException) as error:
        sandbox.applications(made.sid).fetch()
    assert (error.value.status, error.value.code) == (404, 20404)


def test_a_new_key_shows_its_secret_once_and_then_signs_in(app, sandbox):
    http, cfg = sandbox.http_client, app.config
    key = sandbox.new_keys.create(friendly_name="Dialer")
    check_json(http.last, "new_key")
    assert key.sid.startswith("SK") and len(key.secret) >= 32
    sandbox.keys(key.sid).fetch()
    check_json(http.last, "key")
    sandbox.keys.list()
    assert {k["sid"] for k in http.last["keys"]} >= {key.sid, cfg["TWILIO_API_KEY_SID"]}
    for body in http.last["keys"]:
        check_json(body, "key")
    assert sandbox.keys(key.sid).update(friendly_name="Renamed").friendly_name == "Renamed"
    check_json(http.last, "key")

    as_key = Client(key.sid, key.secret, cfg["TWILIO_ACCOUNT_SID"], http_client=BaseUrlHttpClient(cfg["TWILIO_API_BASE_URL"]))
    [number] = as_key.incoming_phone_numbers.list(phone_number=cfg["TWILIO_CALLER_ID"])
    with pytest.raises(TwilioRestException) as error:
        as_key.new_keys.create(friendly_name="Another")  # a standard key may not manage keys, as at Twilio
    assert (error.value.status, error.value.code) == (401, 20003)

    # Made keys outlive a restart of the sandbox: they are kept in its instance folder.
    again = create_app(dict(app.config), instance_path=app.instance_path)
    assert again.extensions["sandbox"].key_secret(key.sid) == key.secret

    sandbox.keys(key.sid).delete()
    with pytest.raises(TwilioRestException) as error:
        as_key.incoming_phone_numbers(number.sid).fetch()
    assert (error.value.status, error.value.code) == (401, 20003)


@pytest.mark.parametrize("method, path, data, auth, status, code", [
    ("GET", ".json", None, "wrong", 401, 20003),
    ("GET", "/IncomingPhoneNumbers.json", None, None, 401, 20003),
    ("GET", "/IncomingPhoneNumbers/PN" + "0" * 32 + ".json", None, "ok", 404, 20404),
    ("POST", "/IncomingPhoneNumbers/{number}.json", {"VoiceUrl": "not a url"}, "ok", 400, 21402),
    ("POST", "/IncomingPhoneNumbers/{number}.json", {"VoiceMethod": "PUT"}, "ok", 400, 21403),
    ("POST", "/IncomingPhoneNumbers/{number}.json", {"VoiceApplicationSid": "AP" + "0" * 32}, "ok", 400, 20001),
    ("POST", "/IncomingPhoneNumbers/{number}.json", {"VoiceCallerIdLookup": "maybe"}, "ok", 400, 20001),
    ("POST", "/Applications.json", {"StatusCallback": "ftp://x"}, "ok", 400, 21402),
    ("GET", "/Applications/AP" + "0" * 32 + ".json", None, "ok", 404, 20404),
    ("GET", "/Applications.json?PageSize=many", None, "ok", 400, 20001),
    ("GET", "/Keys/SK" + "0" * 32 + ".json", None, "ok", 404, 20404),
    ("POST", "/Keys.json", {"FriendlyName": "x"}, "key", 401, 20003),
    ("GET", ".json", None, "key", 401, 20003),
])
def test_account_resource_errors_are_twilios(app, sandbox, method, path, data, auth, status, code):
    cfg = app.config
    number = the_number(sandbox, app).sid
    credentials = {"ok": (cfg["TWILIO_ACCOUNT_SID"], cfg["TWILIO_AUTH_TOKEN"]), "wrong": (cfg["TWILIO_ACCOUNT_SID"], "x" * 32),
                   "key": (cfg["TWILIO_API_KEY_SID"], cfg["TWILIO_API_KEY_SECRET"]), None: None}[auth]
    url = f"{cfg['TWILIO_API_BASE_URL']}/2010-04-01/Accounts/{cfg['TWILIO_ACCOUNT_SID']}{path.format(number=number)}"
    response = requests.request(method, url, data=data, auth=credentials)
    body = response.json()
    assert (response.status_code, body["code"], body["status"]) == (status, code, status), body
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}" and body["message"]
