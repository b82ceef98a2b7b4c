"""Sign-in, access rules, tokens, history, settings and health."""
import os
import subprocess
import sys

import jwt
import pytest

from dialer import calls as call_queries
from dialer import create_app
from dialer.auth import agent_by_username
from dialer.config import ConfigError

from .conftest import PASSWORD, csrf_from

PUBLIC = {"auth.login", "healthz", "static"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def test_every_page_but_login_health_and_webhooks_needs_a_signed_in_agent(app, client):
    token = csrf_from(client.get("/login").get_data(as_text=True))
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC or rule.endpoint.startswith("twiml."):
            continue
        path = rule.build({arg: "1" for arg in rule.arguments})[1]
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            response = client.open(path, method=method, data={"csrf_token": token},
                                   headers={"Accept": "text/html"})
            if rule.endpoint.startswith("sandbox_api."):
                # Twilio-shaped routes: basic auth or an access token, never a session.
                assert response.status_code in (401, 404), (method, path, response.status_code)
            else:
                assert response.status_code in (302, 401), (method, path, response.status_code)
                if response.status_code == 302:
                    assert "/login?next=" in response.headers["Location"], (method, path)
            checked += 1
    assert checked >= 12


def test_htmx_requests_when_signed_out_get_401_with_hx_redirect(client):
    response = client.get("/history", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/login?next=")


def test_token_endpoint_when_signed_out_answers_json_401(client):
    response = client.get("/token")
    assert response.status_code == 401 and response.json["error"]


@pytest.mark.parametrize("target, landing", [
    ("/history", "/history"), ("http://evil.example/", "/"), ("//evil.example/x", "/"),
    ("https:/evil.example", "/"), ("/\\evil.example", "/"), ("", "/"),
])
def test_login_follows_next_only_to_local_paths(client, auth, target, landing):
    auth.create("alice")
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post(f"/login?next={target}", data={"username": "alice", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"] == landing


def test_wrong_password_is_refused_with_a_sentence(client, auth):
    auth.create("alice")
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"username": "alice", "password": "nope-nope", "csrf_token": token})
    assert response.status_code == 422
    assert "don&#39;t match" in response.get_data(as_text=True)


def test_login_without_csrf_token_is_refused(client, auth):
    auth.create("alice")
    response = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 400
    assert "This form has expired" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302  # still signed out


def test_agents_cli_create_list_and_set_password(runner, auth, client, db):
    auth.create("alice")
    auth.create("sam", supervisor=True)
    listing = runner.invoke(args=["agents", "list"]).output
    assert "alice" in listing and "sam" in listing and "supervisor" in listing
    assert runner.invoke(args=["agents", "create", "alice"], input=f"{PASSWORD}\n{PASSWORD}\n").exit_code != 0
    short = runner.invoke(args=["agents", "create", "carol"], input="short\nshort\n")
    assert short.exit_code != 0 and "at least 8 characters" in short.output
    changed = runner.invoke(args=["agents", "set-password", "alice"], input="a new password\na new password\n")
    assert changed.exit_code == 0
    token = csrf_from(client.get("/login").get_data(as_text=True))
    assert client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token}).status_code == 422
    row = agent_by_username(db, "alice")
    assert row["password_hash"] != PASSWORD and row["identity"].startswith("agent_alice_")


def test_token_is_a_voice_jwt_for_the_agents_identity_and_the_twiml_app(app, client, auth, db):
    auth.create("alice")
    auth.login("alice")
    response = client.get("/token")
    assert response.status_code == 200
    body = response.json
    identity = agent_by_username(db, "alice")["identity"]
    assert body["identity"] == identity and body["expires_in"] == 3600
    claims = jwt.decode(body["token"], app.config["TWILIO_API_KEY_SECRET"], algorithms=["HS256"])
    assert claims["grants"]["identity"] == identity
    assert claims["grants"]["voice"]["incoming"] == {"allow": True}
    assert claims["grants"]["voice"]["outgoing"]["application_sid"] == app.config["TWILIO_TWIML_APP_SID"]
    assert claims["iss"] == app.config["TWILIO_API_KEY_SID"] and claims["sub"] == app.config["TWILIO_ACCOUNT_SID"]
    assert claims["exp"] - claims["nbf"] == 3600
    assert jwt.get_unverified_header(body["token"])["cty"] == "twilio-fpa;v=1"


def test_an_agent_cannot_open_another_agents_call_but_a_supervisor_can(app, runner, auth, db):
    auth.create("alice")
    auth.create("bob")
    auth.create("sam", supervisor=True)
    alice_call = call_queries.create_call(db, agent_by_username(db, "alice")["id"], "+442079460000")
    bob_call = call_queries.create_call(db, agent_by_username(db, "bob")["id"], "+442079460999")
    db["calls"].update(alice_call["id"], {"recording_sid": "RE" + "0" * 32})

    bob = app.test_client()
    auth.login("bob", client=bob)
    for path in (f"/calls/{alice_call['id']}", f"/calls/{alice_call['id']}/recording.wav", f"/?call={alice_call['id']}"):
        response = bob.get(path)
        assert response.status_code in (404, 200), path
        assert "+44 20 7946 0000" not in response.get_data(as_text=True), path
    token = csrf_from(bob.get("/").get_data(as_text=True))
    assert bob.post(f"/calls/{alice_call['id']}/hangup", headers={"X-CSRFToken": token}).status_code == 404
    history = bob.get("/history").get_data(as_text=True)
    assert "+44 20 7946 0999" in history and "+44 20 7946 0000" not in history
    assert bob.get(f"/calls/{bob_call['id']}").status_code == 200

    sam = app.test_client()
    auth.login("sam", client=sam)
    assert sam.get(f"/calls/{alice_call['id']}").status_code == 200
    history = sam.get("/history").get_data(as_text=True)
    assert "+44 20 7946 0000" in history and "+44 20 7946 0999" in history


def test_history_lists_the_last_50_calls_newest_first(client, auth, db):
    auth.create("alice")
    auth.login("alice")
    agent_id = agent_by_username(db, "alice")["id"]
    for n in range(55):
        call_queries.create_call(db, agent_id, f"+4420794601{n:02d}")
    html = client.get("/history").get_data(as_text=True)
    assert html.count("<tr data-call-id=") == 50
    assert html.index("+44 20 7946 0154") < html.index("+44 20 7946 0153")
    assert "+44 20 7946 0104" not in html


def test_healthz_reports_the_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json["database"] == "ok"


def test_schema_is_created_once_and_kept(app, tmp_path):
    again = create_app({"DATABASE": app.config["DATABASE"], "SANDBOX_CREATE_DEMO_AGENT": False, "SECRET_KEY": "x"},
                       instance_path=str(tmp_path / "instance"))
    from dialer.db import connect
    db = connect(again.config["DATABASE"])
    assert {"agents", "calls", "call_events"} <= set(db.table_names())
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    migrations = __import__("dialer.db", fromlist=["migrations"]).migrations
    applied = [m.name for m in migrations.applied(db)]
    assert applied[:2] == ["m001_initial", "m002_sign_in_security"] and len(applied) == len(set(applied))
    assert migrations.pending(db) == []


@pytest.mark.parametrize("setting, value", [
    ("PUBLIC_BASE_URL", "not a url"),
    ("TWILIO_CALLER_ID", "07700 900123"),
    ("DEFAULT_REGION", "XX"),
    ("ALLOWED_COUNTRIES", ["GB", "Narnia"]),
    ("DIAL_TIMEOUT", "soon"),
    ("DIAL_RECORD", "always"),
    ("TELEPHONY", "carrier-pigeon"),
    ("TWILIO_ACCOUNT_SID", "AC123"),
    ("SANDBOX_TIME_SCALE", 0),
])
def test_a_wrong_setting_stops_start_up_naming_it(tmp_path, setting, value):
    with pytest.raises(ConfigError) as error:
        create_app({setting: value, "DATABASE": str(tmp_path / "x.sqlite")}, instance_path=str(tmp_path))
    assert setting in str(error.value) and "\n" not in str(error.value)


def test_twilio_mode_needs_its_credentials(tmp_path):
    with pytest.raises(ConfigError, match="TWILIO_API_KEY_SID"):
        create_app({"TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "t",
                    "DATABASE": str(tmp_path / "x.sqlite")}, instance_path=str(tmp_path))


def test_flask_run_with_a_wrong_setting_prints_one_line_and_exits(tmp_path):
    env = {**os.environ, "DIALER_PUBLIC_BASE_URL": "nowhere", "DIALER_INSTANCE_PATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "run", "--port", "1"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Dialer cannot start: setting PUBLIC_BASE_URL (DIALER_PUBLIC_BASE_URL) must be an http(s) URL "
        "such as https://dialer.example.com, not 'nowhere'"]


def test_environment_overrides_instance_config(tmp_path, monkeypatch):
    (tmp_path / "config.py").write_text("DIAL_TIMEOUT = 30\nHOLD_MESSAGE = 'From the instance.'\n")
    monkeypatch.setenv("DIALER_DIAL_TIMEOUT", "25")
    app = create_app({"DATABASE": str(tmp_path / "x.sqlite"), "SANDBOX_CREATE_DEMO_AGENT": False},
                     instance_path=str(tmp_path))
    assert app.config["DIAL_TIMEOUT"] == 25
    assert app.config["HOLD_MESSAGE"] == "From the instance."
    assert app.config["TELEPHONY"] == "sandbox"


def test_cli_commands_do_not_make_a_demo_agent_before_the_real_ones(tmp_path):
    env = {**os.environ, "DIALER_INSTANCE_PATH": str(tmp_path)}
    run = lambda *args: subprocess.run([sys.executable, "-m", "flask", "--app", "app", "agents", *args], cwd=ROOT,
                                       env=env, capture_output=True, text=True, timeout=30)
    assert "No agents yet" in run("list").stdout
    created = run("create", "alice", "--password", PASSWORD)
    assert created.returncode == 0 and "demo" not in created.stdout
    listing = run("list").stdout
    assert "alice" in listing and "demo" not in listing


@pytest.mark.parametrize("path", ["/?call=" + "9" * 30, "/calls/" + "9" * 30, "/calls/" + "9" * 30 + "/recording.wav",
                                  "/calls/99999999999999999999", "/?call=١٢"])
def test_an_id_too_large_for_the_database_is_nothing_here_not_a_crash(client, auth, path):
    auth.create("alice")
    auth.login("alice")
    response = client.get(path)
    assert response.status_code in (200, 404)
