"""Crash safety: the production server killed with SIGKILL while it takes signed callbacks."""
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import requests
from twilio.request_validator import RequestValidator

from dialer import create_app
from dialer.auth import create_agent
from dialer.db import connect

from .conftest import PASSWORD, free_port, healthy, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")
SENDERS = 8
CALLS_PER_SENDER = 400
STATUSES = ("initiated", "ringing", "in-progress", "completed")


def start_server(instance, port):
    env = {**os.environ, "DIALER_INSTANCE_PATH": str(instance), "DIALER_BIND": f"127.0.0.1:{port}",
           "DIALER_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "DIALER_SANDBOX_CREATE_DEMO_AGENT": "false"}
    proc = subprocess.Popen([GUNICORN, "-c", "gunicorn.conf.py", "app:app"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(lambda: healthy(port), timeout=20, interval=0.1)
    return proc


def app_with_calls(tmp_path, count):
    """An instance with agent alice and `count` queued calls of hers (ids 1…count), not yet served."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = create_app({"PUBLIC_BASE_URL": base, "SANDBOX_CREATE_DEMO_AGENT": False}, instance_path=str(tmp_path / "instance"))
    db = connect(app.config["DATABASE"])
    with app.app_context():
        agent = create_agent(db, "alice", PASSWORD)
    with db.conn:
        db.conn.executemany(
            "INSERT INTO calls (agent_id, direction, customer_number, status, created_at) "
            "VALUES (?, 'outbound', '+442079460000', 'queued', '2026-11-25T10:00:00+00:00')", [(agent["id"],)] * count)
    db.conn.close()
    return app, port, base


def status_senders(app, base, senders, calls_each, acknowledged, stop):
    """Threads (not started) that each send their own calls' four status callbacks in order, signed,
    until `stop`; each callback answered 2xx goes to `acknowledged` as (call, sequence number, when).
    A sender whose server is gone stops: that callback was never acknowledged."""
    validator = RequestValidator(app.config["TWILIO_AUTH_TOKEN"])
    account = app.config["TWILIO_ACCOUNT_SID"]

    def sender(first_call):
        session = requests.Session()
        for call_id in range(first_call, first_call + calls_each):
            for seq, status in enumerate(STATUSES):
                if stop.is_set():
                    return
                path = f"/twiml/status?call={call_id}"
                params = {"AccountSid": account, "CallSid": f"CA{call_id:032x}", "CallStatus": status,
                          "SequenceNumber": str(seq), "CallbackSource": "call-progress-events"}
                try:
                    response = session.post(base + path, data=params, timeout=10, headers={
                        "X-Twilio-Signature": validator.compute_signature(base + path, params)})
                except requests.RequestException:
                    return
                if 200 <= response.status_code < 300:
                    acknowledged.append((call_id, seq, time.monotonic()))
    return [threading.Thread(target=sender, args=(1 + i * calls_each,)) for i in range(senders)]


def test_a_server_killed_mid_callbacks_restarts_intact_with_every_acknowledged_callback(tmp_path):
    instance = tmp_path / "instance"
    app, port, base = app_with_calls(tmp_path, SENDERS * CALLS_PER_SENDER)
    validator = RequestValidator(app.config["TWILIO_AUTH_TOKEN"])
    account = app.config["TWILIO_ACCOUNT_SID"]

    server = start_server(instance, port)
    acknowledged, stop = [], threading.Event()

    threads = status_senders(app, base, SENDERS, CALLS_PER_SENDER, acknowledged, stop)
    for thread in threads:
        thread.start()
    wait_for(lambda: len(acknowledged) >= 400, timeout=60)
    os.killpg(server.pid, signal.SIGKILL)  # no shutdown, no flush: the whole process group at once
    server.wait(timeout=10)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)

    db = sqlite3.connect(app.config["DATABASE"])
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = set(db.execute("SELECT call_id, sequence_number FROM call_events WHERE source = 'status'"))
    missing = [(call, seq) for call, seq, _ in acknowledged if (call, seq) not in stored]
    assert len(acknowledged) >= 400 and missing == []
    db.close()

    server = start_server(instance, port)  # and it comes back, taking callbacks again
    try:
        path = "/twiml/status?call=1"
        params = {"AccountSid": account, "CallSid": f"CA{1:032x}", "CallStatus": "completed", "SequenceNumber": "9"}
        response = requests.post(base + path, data=params, timeout=5,
                                 headers={"X-Twilio-Signature": validator.compute_signature(base + path, params)})
        assert response.status_code == 204
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)


def test_a_callback_waits_for_another_processs_write_lock_on_a_real_thread_and_nothing_stalls(tmp_path):
    """The writer's statements run on the server's one thread: one that met a lock held by another
    process (a `flask` command, a backup, a second worker) must wait off it, not fail or freeze it."""
    instance = tmp_path / "instance"
    app, port, base = app_with_calls(tmp_path, 1)
    validator = RequestValidator(app.config["TWILIO_AUTH_TOKEN"])
    path = "/twiml/status?call=1"
    params = {"AccountSid": app.config["TWILIO_ACCOUNT_SID"], "CallSid": f"CA{1:032x}", "CallStatus": "ringing",
              "SequenceNumber": "1"}
    server = start_server(instance, port)
    try:
        other = sqlite3.connect(app.config["DATABASE"], isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        answer = {}

        def post():
            answer["response"] = requests.post(base + path, data=params, timeout=20, headers={
                "X-Twilio-Signature": validator.compute_signature(base + path, params)})
            answer["at"] = time.monotonic()
        sender = threading.Thread(target=post)
        sender.start()
        health = []
        for _ in range(10):  # 1.5 s: the server still answers everything else, quickly
            started = time.monotonic()
            health.append((requests.get(base + "/healthz", timeout=5).status_code, time.monotonic() - started))
            time.sleep(0.15)
        assert "response" not in answer  # still waiting for the lock
        released = time.monotonic()
        other.execute("COMMIT")
        sender.join(timeout=15)
        assert answer["response"].status_code == 204 and answer["at"] >= released
        assert all(status == 200 for status, _ in health) and max(took for _, took in health) < 0.5, health
        stored = other.execute("SELECT count(*) FROM call_events WHERE call_id = 1 AND source = 'status'").fetchone()[0]
        assert stored == 1
        other.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
