"""Sign-in security: throttling, the password policy, server-side sessions, cookies, the audit log."""
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from werkzeug.security import check_password_hash, generate_password_hash

from dialer import audit
from dialer import auth as auth_module
from dialer import calls as call_queries
from dialer import create_app, devices
from dialer.auth import agent_by_username
from dialer.config import ConfigError

from .conftest import PASSWORD, csrf_from, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sign_in(client, username, password=PASSWORD):
    token = csrf_from(client.get("/login").get_data(as_text=True))
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token})


def audit_rows(db, action=None):
    rows = [dict(r) for r in db["audit_log"].rows_where(order_by="id")]
    return [r for r in rows if action is None or r["action"] == action]


def ago(**delta):
    return (datetime.now(timezone.utc) - timedelta(**delta)).isoformat(timespec="seconds")


def sessions(db, username):
    agent_id = agent_by_username(db, username)["id"]
    return [dict(r) for r in db["sessions"].rows_where("agent_id = ?", [agent_id], order_by="created_at")]


# --- throttling ----------------------------------------------------------------------------

def test_five_wrong_passwords_refuse_the_account_even_the_right_password_without_checking_it(client, auth, db):
    auth.create("alice")
    for _ in range(5):
        assert sign_in(client, "alice", "wrong password!").status_code == 422
    response = sign_in(client, "alice")
    assert response.status_code == 429
    assert "Too many failed sign-ins for this account. Try again in 15 minutes." in response.get_data(as_text=True)
    assert 840 < int(response.headers["Retry-After"]) <= 900
    assert client.get("/").status_code == 302  # still signed out
    throttled = audit_rows(db, "sign-in-throttled")
    assert len(throttled) == 1 and throttled[0]["username"] == "alice" and throttled[0]["address"] == "127.0.0.1"
    assert json.loads(throttled[0]["details"]) == {"limit": "username"}
    assert not audit_rows(db, "sign-in")  # the right password was never checked, so nobody signed in


def test_a_throttled_username_does_not_refuse_other_usernames(app, client, auth):
    auth.create("alice")
    auth.create("bob")
    for _ in range(5):
        sign_in(client, "alice", "wrong password!")
    assert sign_in(client, "alice").status_code == 429
    assert sign_in(app.test_client(), "bob").status_code == 302


def test_unknown_usernames_are_throttled_like_known_ones(client):
    for _ in range(5):
        response = sign_in(client, "nobody", "wrong password!")
        assert response.status_code == 422 and "don&#39;t match" in response.get_data(as_text=True)
    assert sign_in(client, "nobody", "wrong password!").status_code == 429


def test_failures_from_one_address_refuse_that_address_for_every_username(client, auth, db):
    auth.create("alice")
    for n in range(19):  # as if another worker process had seen them: the count is in the database
        audit.record(db, audit.SIGN_IN_FAILED, username=f"guess{n}", address="127.0.0.1")
    assert sign_in(client, "mallory", "wrong password!").status_code == 422  # the 20th
    response = sign_in(client, "alice")
    assert response.status_code == 429
    assert "Too many failed sign-ins from this network address. Try again in 15 minutes." in response.get_data(as_text=True)
    assert json.loads(audit_rows(db, "sign-in-throttled")[0]["details"]) == {"limit": "address"}


def test_failures_from_another_address_do_not_count_for_this_one(client, auth, db):
    auth.create("alice")
    for n in range(25):
        audit.record(db, audit.SIGN_IN_FAILED, username=f"guess{n}", address="203.0.113.9")
    assert sign_in(client, "alice").status_code == 302


def test_throttle_counts_are_read_from_the_database_so_another_app_instance_sees_them(app, client, auth, tmp_path):
    auth.create("alice")
    for _ in range(5):
        sign_in(client, "alice", "wrong password!")
    other = create_app({"DATABASE": app.config["DATABASE"], "SECRET_KEY": "test-secret", "TESTING": True,
                        "SANDBOX_CREATE_DEMO_AGENT": False}, instance_path=str(tmp_path / "other"))
    response = sign_in(other.test_client(), "alice")
    assert response.status_code == 429 and "Try again in" in response.get_data(as_text=True)


def test_the_throttle_lifts_once_the_failures_are_older_than_the_window(client, auth, db):
    auth.create("alice")
    for _ in range(5):
        sign_in(client, "alice", "wrong password!")
    assert sign_in(client, "alice").status_code == 429
    db.execute("UPDATE audit_log SET created_at = ? WHERE action = 'sign-in-failed'", [ago(minutes=16)])
    assert sign_in(client, "alice").status_code == 302


def test_the_wait_counts_from_the_failure_that_will_leave_the_window_first(client, auth, db):
    auth.create("alice")
    for minutes in (14, 13, 3, 2, 1):
        audit.record(db, audit.SIGN_IN_FAILED, username="alice", address="198.51.100.1")
        db.execute("UPDATE audit_log SET created_at = ? WHERE id = (SELECT max(id) FROM audit_log)", [ago(minutes=minutes)])
    response = sign_in(client, "alice")
    assert response.status_code == 429
    assert "Try again in 1 minute." in response.get_data(as_text=True)  # the one from 14 minutes ago


def test_a_successful_sign_in_clears_the_username_count(app, client, auth):
    auth.create("alice")
    for _ in range(4):
        sign_in(client, "alice", "wrong password!")
    assert sign_in(app.test_client(), "alice").status_code == 302
    for _ in range(4):
        sign_in(client, "alice", "wrong password!")
    assert sign_in(client, "alice").status_code == 302


@pytest.mark.parametrize("app_config", [{"LOGIN_MAX_FAILURES_PER_USERNAME": 2, "LOGIN_FAILURE_WINDOW": 120}])
def test_throttle_limits_and_window_are_settings(client, auth):
    auth.create("alice")
    for _ in range(2):
        sign_in(client, "alice", "wrong password!")
    response = sign_in(client, "alice")
    assert response.status_code == 429 and "Try again in 2 minutes." in response.get_data(as_text=True)


@pytest.mark.parametrize("app_config", [{"LOGIN_MAX_FAILURES_PER_USERNAME": 0, "LOGIN_MAX_FAILURES_PER_ADDRESS": 0}])
def test_a_limit_of_zero_turns_that_throttle_off(client, auth, db):
    auth.create("alice")
    for n in range(30):
        audit.record(db, audit.SIGN_IN_FAILED, username="alice", address="127.0.0.1")
    assert sign_in(client, "alice").status_code == 302


# --- trusted browsers (dialer/devices.py) ----------------------------------------------------

def signed_in_then_out(client, username="alice"):
    """Sign in on this browser (it becomes trusted for `username`), then out again."""
    assert sign_in(client, username).status_code == 302
    token = csrf_from(client.get("/").get_data(as_text=True))
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302


def device_cookie(client):
    cookie = client.get_cookie(devices.COOKIE, path="/login")
    return cookie and cookie.value


def test_a_strangers_failures_do_not_lock_an_agent_out_of_the_browser_she_signed_in_on(app, client, auth, db):
    auth.create("alice")
    signed_in_then_out(client)
    stranger = app.test_client()
    for _ in range(5):
        assert sign_in(stranger, "alice", "wrong password!").status_code == 422
    assert sign_in(stranger, "alice").status_code == 429  # the stranger is refused, even with the password
    assert sign_in(client, "alice").status_code == 302  # alice, at her own browser, is not
    failures = audit_rows(db, "sign-in-failed")
    assert len(failures) == 5 and all(row["details"] is None for row in failures)  # untrusted: no device


def test_a_trusted_browser_has_its_own_limit_and_the_audit_log_names_it(app, client, auth, db):
    auth.create("alice")
    signed_in_then_out(client)
    for _ in range(5):
        assert sign_in(client, "alice", "wrong password!").status_code == 422
    response = sign_in(client, "alice")
    assert response.status_code == 429
    assert "Too many failed sign-ins for this account. Try again in 15 minutes." in response.get_data(as_text=True)
    device = json.loads(audit_rows(db, "sign-in-failed")[0]["details"])["device"]
    assert len(device) >= 16
    assert [json.loads(row["details"]) for row in audit_rows(db, "sign-in-failed")] == [{"device": device}] * 5
    assert json.loads(audit_rows(db, "sign-in-throttled")[0]["details"]) == {"device": device, "limit": "device"}
    # Its failures are its own: another browser's count for alice is untouched.
    assert sign_in(app.test_client(), "alice").status_code == 302


def test_an_office_address_run_up_by_others_does_not_refuse_a_trusted_browser(app, client, auth, db):
    auth.create("alice")
    signed_in_then_out(client)
    for n in range(25):  # everyone behind the office's one address mistyping their names
        audit.record(db, audit.SIGN_IN_FAILED, username=f"typo{n}", address="127.0.0.1")
    assert sign_in(app.test_client(), "alice").status_code == 429  # a browser alice never used here
    assert sign_in(client, "alice").status_code == 302


def test_a_browser_is_trusted_only_for_the_usernames_that_signed_in_on_it(app, client, auth):
    auth.create("alice")
    auth.create("bob")
    signed_in_then_out(client, "alice")
    for _ in range(5):
        sign_in(app.test_client(), "bob", "wrong password!")
    assert sign_in(client, "bob").status_code == 429
    # A shared desk: alice and carol have both signed in there, and it is trusted for both.
    auth.create("carol")
    desk = app.test_client()
    signed_in_then_out(desk, "alice")
    signed_in_then_out(desk, "carol")
    for name in ("alice", "carol"):
        for _ in range(5):
            sign_in(app.test_client(), name, "wrong password!")
        assert sign_in(app.test_client(), name).status_code == 429
    signed_in_then_out(desk, "alice")
    assert sign_in(desk, "carol").status_code == 302


def old_device_cookie(app, value, age_days):
    """A device cookie as the dialer signs them, made `age_days` ago."""
    class Then(TimestampSigner):
        def get_timestamp(self):
            return int(time.time()) - age_days * 86400
    serializer = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="dialer-trusted-device", signer=Then)
    return serializer.dumps(value)


@pytest.mark.parametrize("cookie", ["forged", "garbage.value", "expired", "not-a-device", "other-key"])
def test_a_forged_altered_or_expired_device_cookie_is_not_trusted_and_breaks_nothing(app, client, auth, cookie):
    auth.create("alice")
    signed_in_then_out(client)
    good = device_cookie(client)
    value = {
        "forged": good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB"),
        "garbage.value": "garbage.value",
        "expired": old_device_cookie(app, {"id": "x" * 22, "users": ["alice"]}, 31),
        "not-a-device": old_device_cookie(app, ["alice"], 0),
        "other-key": URLSafeTimedSerializer("another secret", salt="dialer-trusted-device").dumps(
            {"id": "x" * 22, "users": ["alice"]}),
    }[cookie]
    client.set_cookie(devices.COOKIE, value, path="/login")
    for _ in range(5):
        assert sign_in(app.test_client(), "alice", "wrong password!").status_code == 422
    assert sign_in(client, "alice").status_code == 429  # treated as any stranger's browser
    # A cookie still within its days is trusted (the same format, 29 days old).
    client.set_cookie(devices.COOKIE, old_device_cookie(app, {"id": "y" * 22, "users": ["alice"]}, 29), path="/login")
    assert sign_in(client, "alice").status_code == 302


def test_the_device_cookie_goes_to_the_sign_in_page_only_and_is_httponly(client, auth):
    auth.create("alice")
    response = sign_in(client, "alice")
    [header] = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(devices.COOKIE + "=")]
    assert "Path=/login" in header and "HttpOnly" in header and "SameSite=Lax" in header
    assert "Max-Age=2592000" in header and "Secure" not in header  # 30 days; http here
    assert device_cookie(client)


@pytest.mark.parametrize("app_config", [{"PUBLIC_BASE_URL": "https://dialer.example.com"}])
def test_the_device_cookie_is_secure_when_the_public_url_is_https(client, auth):
    auth.create("alice")
    token = csrf_from(client.get("/login", base_url="https://dialer.example.com").get_data(as_text=True))
    response = client.post("/login", base_url="https://dialer.example.com",
                           headers={"Referer": "https://dialer.example.com/login"},
                           data={"username": "alice", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302
    [header] = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(devices.COOKIE + "=")]
    assert "Secure" in header


@pytest.mark.parametrize("app_config", [{"LOGIN_TRUSTED_DEVICE_DAYS": 0}])
def test_zero_days_turns_trusted_browsers_off(app, client, auth):
    auth.create("alice")
    response = sign_in(client, "alice")
    assert response.status_code == 302 and not device_cookie(client)
    client.set_cookie(devices.COOKIE, old_device_cookie(app, {"id": "y" * 22, "users": ["alice"]}, 1), path="/login")
    for _ in range(5):
        sign_in(app.test_client(), "alice", "wrong password!")
    assert sign_in(client, "alice").status_code == 429


@pytest.mark.parametrize("value", [-1, 366, "30", 1.5, True])
def test_trusted_device_days_must_be_a_whole_number_up_to_a_year(tmp_path, value):
    with pytest.raises(ConfigError, match=r"LOGIN_TRUSTED_DEVICE_DAYS.*must be a whole number from 0 to 365 days"):
        create_app({"LOGIN_TRUSTED_DEVICE_DAYS": value, "SECRET_KEY": "x", "DATABASE": str(tmp_path / "d.sqlite")},
                   instance_path=str(tmp_path))


def test_an_unknown_username_is_checked_against_a_dummy_hash_made_like_real_ones(client, auth, db):
    auth.create("alice")
    real = agent_by_username(db, "alice")["password_hash"]
    dummy = auth_module._dummy_hash()
    # Same method and parameters (werkzeug's default, e.g. scrypt:32768:8:1): the same work per check.
    assert dummy.split("$")[0] == real.split("$")[0] == generate_password_hash("x").split("$")[0]
    assert auth_module._dummy_hash() is dummy  # made once
    assert auth_module.verify_password(db, "nobody", PASSWORD) is None
    assert auth_module.verify_password(db, "alice", PASSWORD)["username"] == "alice"


def test_a_failed_sign_in_costs_one_password_check_whether_or_not_the_username_exists(client, auth, monkeypatch):
    auth.create("alice")
    checked = []

    def counting_check(pwhash, password):  # werkzeug's function, counted: not the project's own code
        checked.append(pwhash.split("$")[0])
        return check_password_hash(pwhash, password)
    monkeypatch.setattr(auth_module, "check_password_hash", counting_check)
    sign_in(client, "alice", "wrong password!")
    sign_in(client, "nobody", "wrong password!")
    assert len(checked) == 2 and checked[0] == checked[1]


# --- password policy -----------------------------------------------------------------------

COMMON = ["password", "Password1", "p@ssw0rd", "12345678", "qwertyuiop", "iloveyou", "drowssap", "Summer2024!"]


@pytest.mark.parametrize("password", COMMON)
def test_agents_create_refuses_common_passwords_with_a_sentence(runner, db, password):
    result = runner.invoke(args=["agents", "create", "carol"], input=f"{password}\n{password}\n")
    assert result.exit_code == 1
    assert "That password is too easy to guess" in result.output and "Choose another" in result.output
    assert agent_by_username(db, "carol") is None


@pytest.mark.parametrize("password", COMMON)
def test_agents_set_password_refuses_common_passwords_with_a_sentence(runner, auth, db, password):
    auth.create("alice")
    before = agent_by_username(db, "alice")["password_hash"]
    result = runner.invoke(args=["agents", "set-password", "alice"], input=f"{password}\n{password}\n")
    assert result.exit_code == 1 and "That password is too easy to guess" in result.output
    assert agent_by_username(db, "alice")["password_hash"] == before


def test_password_policy_names_the_common_password_and_refuses_the_username_as_a_password(runner):
    result = runner.invoke(args=["agents", "create", "carol"], input="password\npassword\n")
    assert "this is a top-10 common password" in result.output
    result = runner.invoke(args=["agents", "create", "carolanne"], input="carolanne1\ncarolanne1\n")
    assert result.exit_code == 1 and "too easy to guess" in result.output


@pytest.mark.parametrize("command", [["agents", "create", "carol"], ["agents", "set-password", "alice"]])
@pytest.mark.parametrize("password, sentence", [
    ("short", "A password needs at least 8 characters."),
    ("x" * 257, "A password has at most 256 characters."),
])
def test_password_length_is_checked_in_both_commands(runner, auth, command, password, sentence):
    auth.create("alice")
    result = runner.invoke(args=command, input=f"{password}\n{password}\n")
    assert result.exit_code == 1 and sentence in result.output


@pytest.mark.parametrize("app_config", [{"PASSWORD_MIN_LENGTH": 12}])
def test_minimum_password_length_is_a_setting(runner):
    result = runner.invoke(args=["agents", "create", "carol"], input="tiger lamp\ntiger lamp\n")
    assert result.exit_code == 1 and "at least 12 characters" in result.output


def test_a_long_uncommon_password_is_accepted(runner, client):
    strong = "violet tractor summit ocean " * 4  # longer than zxcvbn's 72 characters
    result = runner.invoke(args=["agents", "create", "carol"], input=f"{strong}\n{strong}\n")
    assert result.exit_code == 0, result.output
    assert sign_in(client, "carol", strong).status_code == 302


def test_a_generated_password_skips_the_common_list_but_not_the_length(app, db):
    with app.app_context():
        assert auth_module.create_agent(db, "demo", "Xk3-pq9_Lm2z", generated=True)["username"] == "demo"
        with pytest.raises(ValueError, match="at least 8 characters"):
            auth_module.create_agent(db, "demo2", "short", generated=True)


def test_the_common_password_list_is_not_loaded_at_start_or_by_signing_in(app, auth):
    auth.create("alice")  # loads it in this process; the server below is another one
    script = f"""
import sys
from dialer import create_app
app = create_app({{"DATABASE": {app.config['DATABASE']!r}, "SECRET_KEY": "x", "WTF_CSRF_ENABLED": False,
                  "SANDBOX_CREATE_DEMO_AGENT": False}}, instance_path={app.instance_path!r})
client = app.test_client()
assert client.post("/login", data={{"username": "alice", "password": {PASSWORD!r}}}).status_code == 302
assert client.post("/login", data={{"username": "nobody", "password": "whatever it is"}}).status_code == 422
assert client.get("/").status_code == 200
print("zxcvbn loaded:", "zxcvbn" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "zxcvbn loaded: False" in result.stdout


# --- sessions ------------------------------------------------------------------------------

def test_a_session_cookie_copied_before_sign_out_does_not_work_after_it(app, client, auth, db):
    auth.create("alice")
    auth.login("alice")
    copied = client.get_cookie("session").value
    thief = app.test_client()
    thief.set_cookie("session", copied)
    assert thief.get("/").status_code == 200  # the copy works while the session lives
    response = client.post("/logout", data={"csrf_token": auth.csrf()})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert "You have signed out." in client.get("/login").get_data(as_text=True)
    thief.set_cookie("session", copied)
    response = thief.get("/")
    assert response.status_code == 302 and "/login?next=" in response.headers["Location"]
    assert thief.get("/history", headers={"HX-Request": "true"}).status_code == 401
    [row] = sessions(db, "alice")
    assert row["ended_at"] and row["end_reason"] == "signed-out"


def test_the_cookie_holds_a_session_token_and_the_database_only_its_hash(client, auth, db):
    auth.create("alice")
    auth.login("alice")
    with client.session_transaction() as session:
        token = session["_user_id"]
    [row] = sessions(db, "alice")
    assert token != str(row["agent_id"]) and len(token) >= 40
    assert row["id"] != token and row["id"] == auth_module._session_id(token)
    assert row["address"] == "127.0.0.1" and row["last_seen_at"] == row["created_at"]


def test_a_cookie_from_before_server_side_sessions_is_refused(client, auth, db):
    auth.create("alice")
    with client.session_transaction() as session:
        session["_user_id"] = str(agent_by_username(db, "alice")["id"])  # the old form: the agent's id
    assert client.get("/").status_code == 302


def test_changing_a_password_ends_every_session_of_that_agent_and_says_why(app, client, runner, auth, db):
    auth.create("alice")
    auth.create("bob")
    auth.login("alice")
    laptop = app.test_client()
    auth.login("alice", client=laptop)
    bob = app.test_client()
    auth.login("bob", client=bob)
    result = runner.invoke(args=["agents", "set-password", "alice"], input="violet tractor summit\n" * 2)
    assert result.exit_code == 0 and "open sessions have ended" in result.output
    for device in (client, laptop):
        response = device.get("/")
        assert response.status_code == 302
        assert "Your password was changed, which signed you out." in device.get("/login").get_data(as_text=True)
    assert bob.get("/").status_code == 200
    assert {r["end_reason"] for r in sessions(db, "alice")} == {"password-changed"}
    assert json.loads(audit_rows(db, "password-set")[0]["details"]) == {"sessions_ended": 2}
    assert sign_in(app.test_client(), "alice", "violet tractor summit").status_code == 302


def test_an_idle_session_ends_and_the_sign_in_page_says_why(client, auth, db):
    auth.create("alice")
    auth.login("alice")
    db.execute("UPDATE sessions SET last_seen_at = ?", [ago(hours=2, minutes=1)])
    response = client.get("/history")
    assert response.status_code == 302 and response.headers["Location"] == "/login?next=/history"
    assert "You were signed out after 2 hours without activity." in client.get("/login").get_data(as_text=True)
    assert sessions(db, "alice")[0]["end_reason"] == "idle"
    assert client.get("/").status_code == 302  # ended for good, even if the clock were turned back
    db.execute("UPDATE sessions SET last_seen_at = ?", [ago(minutes=1)])
    assert client.get("/").status_code == 302


def test_an_idle_session_answers_htmx_with_401_and_hx_redirect(client, auth, db):
    auth.create("alice")
    auth.login("alice")
    db.execute("UPDATE sessions SET last_seen_at = ?", [ago(hours=3)])
    response = client.get("/history", headers={"HX-Request": "true"})
    assert response.status_code == 401 and response.headers["HX-Redirect"].startswith("/login?next=")
    assert "without activity" in client.get("/login").get_data(as_text=True)


def test_a_session_ends_after_its_absolute_lifetime_even_when_in_use(client, auth, db):
    auth.create("alice")
    auth.login("alice")
    db.execute("UPDATE sessions SET created_at = ?, last_seen_at = ?", [ago(hours=12, minutes=1), ago(minutes=1)])
    assert client.get("/").status_code == 302
    assert "Sessions last at most 12 hours, and yours has ended." in client.get("/login").get_data(as_text=True)
    assert sessions(db, "alice")[0]["end_reason"] == "expired"
    response = client.get("/token")
    assert response.status_code == 401 and "12 hours" in response.json["error"]


@pytest.mark.parametrize("app_config", [{"SESSION_IDLE_TIMEOUT": 600, "SESSION_ABSOLUTE_TIMEOUT": 3600}])
def test_session_lifetimes_are_settings(client, auth, db):
    auth.create("alice")
    auth.login("alice")
    db.execute("UPDATE sessions SET last_seen_at = ?", [ago(minutes=9)])
    assert client.get("/").status_code == 200
    db.execute("UPDATE sessions SET last_seen_at = ?", [ago(minutes=11)])
    assert client.get("/").status_code == 302
    assert "after 10 minutes without activity" in client.get("/login").get_data(as_text=True)


def test_last_seen_is_written_at_most_once_a_minute(client, auth, db):
    auth.create("alice")
    auth.login("alice")
    seen = ago(seconds=30)
    db.execute("UPDATE sessions SET last_seen_at = ?", [seen])
    client.get("/")
    client.get("/history")
    assert sessions(db, "alice")[0]["last_seen_at"] == seen
    db.execute("UPDATE sessions SET last_seen_at = ?", [ago(seconds=90)])
    client.get("/")
    assert sessions(db, "alice")[0]["last_seen_at"] >= ago(seconds=5)


# --- cookies -------------------------------------------------------------------------------

def session_cookie_header(client):
    response = client.get("/login")  # the CSRF token puts something in the session
    [header] = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("session=")]
    return header


def test_session_cookie_is_lax_and_httponly_and_not_secure_over_http(client):
    header = session_cookie_header(client)
    assert "SameSite=Lax" in header and "HttpOnly" in header and "Secure" not in header


@pytest.mark.parametrize("app_config", [{"PUBLIC_BASE_URL": "https://dialer.example.com"}])
def test_session_cookie_is_secure_when_the_public_url_is_https(app, client):
    assert app.config["SESSION_COOKIE_SECURE"] is True
    header = session_cookie_header(client)
    assert "Secure" in header and "SameSite=Lax" in header and "HttpOnly" in header


@pytest.mark.parametrize("app_config", [{"PUBLIC_BASE_URL": "https://dialer.example.com", "SESSION_COOKIE_SECURE": False}])
def test_an_explicit_session_cookie_secure_setting_wins(client):
    assert "Secure" not in session_cookie_header(client)


@pytest.mark.parametrize("setting, value", [
    ("SESSION_IDLE_TIMEOUT", 5), ("SESSION_ABSOLUTE_TIMEOUT", "12h"), ("LOGIN_FAILURE_WINDOW", True),
    ("LOGIN_MAX_FAILURES_PER_USERNAME", -1), ("LOGIN_MAX_FAILURES_PER_ADDRESS", "20"),
    ("PASSWORD_MIN_LENGTH", 6), ("PASSWORD_MIN_SCORE", 1), ("SESSION_COOKIE_SECURE", "yes"),
    ("SESSION_COOKIE_SAMESITE", "None"),
])
def test_a_wrong_sign_in_setting_stops_start_up_naming_it(tmp_path, setting, value):
    with pytest.raises(ConfigError, match=f"setting {setting} "):
        create_app({"DATABASE": str(tmp_path / "d.sqlite"), "SECRET_KEY": "x", setting: value},
                   instance_path=str(tmp_path / "instance"))


# --- audit log -----------------------------------------------------------------------------

def test_every_sign_in_action_is_audited(app, client, auth, db):
    auth.create("alice")
    sign_in(client, "alice", "wrong password!")
    sign_in(client, "nobody", "wrong password!")
    auth.login("alice")
    client.post("/logout", data={"csrf_token": auth.csrf()})
    rows = audit_rows(db)
    assert [(r["action"], r["username"]) for r in rows] == [
        ("agent-created", "alice"), ("sign-in-failed", "alice"), ("sign-in-failed", "nobody"),
        ("sign-in", "alice"), ("sign-out", "alice")]
    assert rows[0]["actor"].startswith("cli") and json.loads(rows[0]["details"]) == {"role": "agent"}
    assert all(r["address"] == "127.0.0.1" for r in rows[1:])
    assert rows[3]["actor"] == rows[4]["actor"] == "alice"


def test_agent_creation_and_its_audit_entry_are_one_transaction(app, db):
    db.execute("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'audit down'); END")
    with app.app_context(), pytest.raises(Exception, match="audit down"):
        auth_module.create_agent(db, "carol", PASSWORD)
    assert agent_by_username(db, "carol") is None


def test_agents_update_changes_role_and_name_and_is_audited(runner, auth, db, client):
    auth.create("alice")
    result = runner.invoke(args=["agents", "update", "alice", "--role", "supervisor", "--name", "Alice Smith"])
    assert result.exit_code == 0 and "supervisor" in result.output
    row = agent_by_username(db, "alice")
    assert row["role"] == "supervisor" and row["display_name"] == "Alice Smith"
    [entry] = audit_rows(db, "agent-changed")
    assert json.loads(entry["details"]) == {"role": "supervisor", "display_name": "Alice Smith"}
    assert runner.invoke(args=["agents", "update", "alice"]).exit_code == 2
    missing = runner.invoke(args=["agents", "update", "zed", "--role", "agent"])
    assert missing.exit_code == 1 and "There is no agent called zed." in missing.output
    assert runner.invoke(args=["agents", "update", "alice", "--role", "boss"]).exit_code == 2


@pytest.mark.parametrize("app_config", [{"SANDBOX_TIME_SCALE": 0.2}])
def test_a_supervisor_ending_another_agents_call_is_audited(app, client, auth, db, live_server):
    auth.create("alice")
    auth.create("sam", supervisor=True)
    auth.login("alice")
    client.post("/calls", data={"to": "020 7946 0000", "csrf_token": auth.csrf()}, headers={"HX-Request": "true"})
    [call] = list(db["calls"].rows)
    wait_for(lambda: call_queries.get_call(db, call["id"])["customer_call_sid"])
    sam = app.test_client()
    auth.login("sam", client=sam)
    response = sam.post(f"/calls/{call['id']}/hangup", headers={"HX-Request": "true", "X-CSRFToken": auth.csrf(sam)})
    assert response.status_code == 204  # the board and panel change through the event stream
    [entry] = audit_rows(db, "call-ended-for-agent")
    assert entry["username"] == "alice" and entry["actor"] == "sam"
    assert json.loads(entry["details"]) == {"call_id": call["id"]}
    wait_for(lambda: call_queries.is_terminal(call_queries.get_call(db, call["id"])["status"]))


def test_flask_audit_lists_newest_first_with_filters(runner, auth, client, db):
    auth.create("alice")
    auth.create("bob")
    sign_in(client, "alice", "wrong password!")
    auth.login("bob")
    db.execute("UPDATE audit_log SET created_at = ? WHERE action = 'agent-created'", [ago(days=3)])

    lines = runner.invoke(args=["audit"]).output.splitlines()
    assert [line.split()[1] for line in lines] == ["sign-in", "sign-in-failed", "agent-created", "agent-created"]
    assert "sign-in-failed" in lines[1] and "alice" in lines[1] and "from 127.0.0.1" in lines[1]

    failed = runner.invoke(args=["audit", "--action", "sign-in-failed"]).output.splitlines()
    assert len(failed) == 1 and "alice" in failed[0]
    bob = runner.invoke(args=["audit", "--agent", "bob"]).output.splitlines()
    assert [line.split()[1] for line in bob] == ["sign-in", "agent-created"]
    recent = runner.invoke(args=["audit", "--since", "1h"]).output.splitlines()
    assert [line.split()[1] for line in recent] == ["sign-in", "sign-in-failed"]
    since_date = (datetime.now(timezone.utc) - timedelta(days=1)).date().isoformat()
    assert len(runner.invoke(args=["audit", "--since", since_date]).output.splitlines()) == 2
    assert len(runner.invoke(args=["audit", "--limit", "1"]).output.splitlines()) == 1
    assert runner.invoke(args=["audit", "--agent", "zed"]).output.strip() == "No audit entries match."


@pytest.mark.parametrize("args, sentence", [
    (["--since", "yesterday"], "is neither a date such as 2026-11-25"),
    (["--since", "999999d"], "is neither a date"),
    (["--action", "reboot"], "'reboot' is not one of"),
    (["--limit", "0"], "0 is not in the range"),
])
def test_flask_audit_refuses_bad_options_with_a_sentence(runner, args, sentence):
    result = runner.invoke(args=["audit"] + args)
    assert result.exit_code == 2 and sentence in result.output


def test_flask_audit_escapes_control_characters_typed_as_a_username(runner, client):
    sign_in(client, "evil\x1b[2Jname", "wrong password!")
    output = runner.invoke(args=["audit"]).output
    assert "\x1b" not in output and "evil\\x1b[2Jname" in output


# --- switching off an agent who has left ------------------------------------------------------

def test_a_switched_off_agent_is_signed_out_everywhere_refused_with_a_sentence_and_kept_in_the_audit_log(
        app, client, auth, runner, db):
    auth.create("alice")
    auth.login("alice")
    other = app.test_client()
    auth.login("alice", client=other)
    assert client.get("/").status_code == 200
    result = runner.invoke(args=["agents", "disable", "alice"])
    assert result.exit_code == 0 and "alice is switched off" in result.output, result.output
    assert all(s["end_reason"] == "disabled" for s in sessions(db, "alice")) and len(sessions(db, "alice")) == 2
    for browser in (client, other):  # both open pages lose the session, and are told why
        page = browser.get("/", follow_redirects=True).get_data(as_text=True)
        assert "Your account has been switched off. Ask your supervisor." in page
    refused = sign_in(client, "alice")  # the right password: told, not let in
    assert refused.status_code == 403 and "switched off" in refused.get_data(as_text=True)
    assert client.get("/").status_code == 302
    wrong = sign_in(client, "alice", "not her password at all")  # the wrong one: told nothing more
    assert wrong.status_code == 422 and "switched off" not in wrong.get_data(as_text=True)
    assert [r["username"] for r in audit_rows(db, audit.AGENT_DISABLED)] == ["alice"]
    failed = audit_rows(db, audit.SIGN_IN_FAILED)
    assert [json.loads(r["details"] or "{}").get("reason") for r in failed] == ["disabled", None]
    assert "switched off since" in runner.invoke(args=["agents", "list"]).output
    assert "switched off already" in runner.invoke(args=["agents", "disable", "alice"]).output

    assert runner.invoke(args=["agents", "enable", "alice"]).exit_code == 0
    assert sign_in(client, "alice").status_code == 302  # back, with her old password
    assert [r["username"] for r in audit_rows(db, audit.AGENT_ENABLED)] == ["alice"]
    assert "is not switched off" in runner.invoke(args=["agents", "enable", "alice"]).output
    assert "There is no agent called zed" in runner.invoke(args=["agents", "disable", "zed"]).output


def test_a_switched_off_agent_is_offered_no_caller_leaves_the_board_and_keeps_their_calls(
        client, auth, runner, db):
    from dialer import presence
    auth.create("alice")
    auth.create("sue", supervisor=True)
    alice = agent_by_username(db, "alice")
    call = call_queries.create_call(db, alice["id"], "+442079460000")
    with db.conn:
        presence.set_presence(db, alice["id"], "available")
    assert [a["username"] for a in presence.available_agents(db, 5)] == ["alice"]
    result = runner.invoke(args=["agents", "disable", "alice"])
    assert f"on call {call['id']} now" in result.output  # her live call goes on: the command says so
    assert presence.available_agents(db, 5) == []
    assert agent_by_username(db, "alice")["presence"] == "offline"
    presence.tick(db, {alice["id"]}, 60, 60)  # a page of hers still open somewhere: not back to away
    assert agent_by_username(db, "alice")["presence"] == "offline"
    auth.login("sue")
    board = client.get("/board").get_data(as_text=True)
    assert f'id="agent-{alice["id"]}"' not in board and f'id="agent-{agent_by_username(db, "sue")["id"]}"' in board
    history = client.get("/history").get_data(as_text=True)
    assert "+44 20 7946 0000" in history  # her calls stay, under her name
    created = runner.invoke(args=["agents", "create", "alice"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert created.exit_code != 0 and "flask --app app agents enable alice" in created.output


# --- an agent changes their own password ------------------------------------------------------

NEW_PASSWORD = "lantern orbit pebble fjord"


def change(client, auth, current=PASSWORD, new=NEW_PASSWORD, again=None):
    return client.post("/password", data={"current": current, "new": new, "again": new if again is None else again,
                                          "csrf_token": auth.csrf(path="/password")})


def test_an_agent_changes_their_own_password_and_every_session_of_theirs_ends(app, client, auth, db):
    auth.create("alice")
    assert client.get("/password").status_code == 302  # signed out: to the sign-in page
    auth.login("alice")
    other = app.test_client()
    auth.login("alice", client=other)
    page = client.get("/password").get_data(as_text=True)
    assert "Change your password" in page and 'autocomplete="new-password"' in page
    assert 'href="/password"' in client.get("/").get_data(as_text=True)  # reached from every page
    response = change(client, auth)
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert "Your password was changed" in client.get("/login").get_data(as_text=True)
    assert client.get("/").status_code == 302 and other.get("/").status_code == 302
    assert sign_in(client, "alice").status_code == 422  # the old one no longer works
    assert sign_in(client, "alice", NEW_PASSWORD).status_code == 302
    entry = audit_rows(db, audit.PASSWORD_SET)[-1]
    assert (entry["username"], entry["actor"], json.loads(entry["details"])["sessions_ended"]) == ("alice", "alice", 2)


@pytest.mark.parametrize("form, sentence", [
    ({"current": "not my password at all"}, "That is not your current password."),
    ({"again": "lantern orbit pebble fjords"}, "The two new passwords are not the same."),
    ({"new": "password1"}, "That password is too easy to guess"),
    ({"new": "short"}, "A password needs at least 8 characters."),
    ({"new": PASSWORD}, "The new password is the same as the current one."),
    ({"new": ""}, "This field is required."),
])
def test_a_password_change_that_cannot_be_made_says_why_and_changes_nothing(client, auth, db, form, sentence):
    auth.create("alice")
    auth.login("alice")
    before = agent_by_username(db, "alice")["password_hash"]
    response = change(client, auth, **form)
    page = response.get_data(as_text=True)
    assert response.status_code == 422 and sentence in page
    error = re.search(r'<p class="error" id="(\w+)-error" role="alert">', page)  # tied to its field, which has focus
    assert error and re.search(rf'<input[^>]*aria-describedby="[^"]*{error[1]}-error"[^>]*autofocus[^>]*id="{error[1]}"', page)
    assert agent_by_username(db, "alice")["password_hash"] == before
    assert client.get("/").status_code == 200  # still signed in


def test_guessing_the_current_password_from_an_open_session_is_throttled_like_a_sign_in(client, auth, db):
    auth.create("alice")
    auth.login("alice")
    codes = [change(client, auth, current=f"guess number {n}").status_code for n in range(7)]
    assert codes == [422] * 5 + [429] * 2
    refused = change(client, auth)  # even the right one, for a while
    assert refused.status_code == 429 and "Too many failed" in refused.get_data(as_text=True)
    assert [json.loads(r["details"])["form"] for r in audit_rows(db, audit.SIGN_IN_FAILED)] == ["password"] * 5


def test_the_password_form_needs_its_csrf_token(client, auth):
    auth.create("alice")
    auth.login("alice")
    response = client.post("/password", data={"current": PASSWORD, "new": NEW_PASSWORD, "again": NEW_PASSWORD})
    assert response.status_code == 400
