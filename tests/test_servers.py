"""The sandbox under the production server command, as a stranger would start it."""
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from urllib.parse import urlencode

import requests
from twilio.request_validator import RequestValidator

from dialer import create_app

from .conftest import free_port, healthy, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")


def read_until(proc, pattern, lines):
    while True:
        line = proc.stdout.readline()
        assert line, "server stopped:\n" + "".join(lines)
        lines.append(line)
        match = re.search(pattern, line)
        if match:
            return match


def test_gunicorn_serves_the_sandbox_and_a_call_goes_through(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DIALER_INSTANCE_PATH": str(tmp_path), "DIALER_PUBLIC_BASE_URL": base,
           "DIALER_BIND": f"127.0.0.1:{port}", "DIALER_SANDBOX_TIME_SCALE": "0.05", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([GUNICORN, "-c", "gunicorn.conf.py", "app:app"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        password = read_until(proc, r"as demo / (\S+) ", lines).group(1)
        wait_for(lambda: requests.get(f"{base}/healthz", timeout=1).ok, timeout=15)
        session = requests.Session()
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', session.get(f"{base}/login").text).group(1)
        assert session.post(f"{base}/login", data={"username": "demo", "password": password, "csrf_token": token}).ok
        token = re.search(r'"X-CSRFToken": "([^"]+)"', session.get(f"{base}/").text).group(1)
        events = session.get(f"{base}/events", stream=True, timeout=10)  # as the page's stream does
        assert events.headers["Content-Type"].startswith("text/event-stream")
        placed = session.post(f"{base}/calls", data={"to": "020 7946 0001", "csrf_token": token},
                              headers={"HX-Request": "true"})
        call_id = re.search(r'<article id="call-(\d+)"', placed.text).group(1)
        message = ""
        for line in events.iter_lines(decode_unicode=True):  # the busy call arrives on the stream
            message = "" if not line else message + line
            if f'id="call-{call_id}"' in message and 'data-status="busy"' in message:
                break
        events.close()
        assert 'data-status="busy"' in session.get(f"{base}/?call={call_id}", headers={"HX-Request": "true"}).text
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def production_server(tmp_path):
    """The README's production command on a free port: (port, base URL, its log file); stopped after."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DIALER_INSTANCE_PATH": str(tmp_path), "DIALER_PUBLIC_BASE_URL": base,
           "DIALER_BIND": f"127.0.0.1:{port}", "DIALER_SANDBOX_CREATE_DEMO_AGENT": "false"}
    log = tmp_path / "server.log"
    proc = subprocess.Popen([GUNICORN, "-c", "gunicorn.conf.py", "app:app"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    try:
        wait_for(lambda: healthy(port), timeout=15)
        yield port, base, log
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_chunked_body_over_the_limit_is_413_like_one_with_a_length_and_one_within_it_is_read_whole(tmp_path):
    """werkzeug would read a chunked form up to the limit and drop the rest without a word."""
    with production_server(tmp_path) as (port, base, log):
        for path, size in (("/login", 1_100_000), ("/presence", 1_100_000), ("/twiml/dial-result?call=1", 70_000),
                           ("/twiml/recording?call=1", 70_000), ("/twiml/status?call=1", 70_000),
                           ("/twiml/customer-to-agent?call=1", 70_000)):
            body = "CallSid=CA1&x=" + "a" * size
            answer = _raw_post(port, path, _chunked(body))
            assert answer.startswith("HTTP/1.1 413 "), (path, answer[:300])
        # Within the limit, a signed chunked webhook is read whole: its signature holds (404: no such call).
        cfg = create_app(instance_path=str(tmp_path)).config
        params = {"AccountSid": cfg["TWILIO_ACCOUNT_SID"], "CallSid": "CA" + "1" * 32, "CallStatus": "completed",
                  "DialCallStatus": "completed", "x": "a" * 60_000}
        signature = RequestValidator(cfg["TWILIO_AUTH_TOKEN"]).compute_signature(base + "/twiml/recording?call=1", params)
        answer = _raw_post(port, "/twiml/recording?call=1", _chunked(urlencode(params)), signature)
        assert answer.startswith("HTTP/1.1 404 "), answer[:300]
    assert "Traceback" not in log.read_text() and "without a valid Twilio signature" not in log.read_text()


def _chunked(text, size=16_384):
    """`text` as HTTP/1.1 chunks of `size` characters, and the last chunk."""
    return "".join(f"{len(text[i:i + size]):x}\r\n{text[i:i + size]}\r\n" for i in range(0, len(text), size)) + "0\r\n\r\n"


def test_gunicorn_refuses_several_workers_for_the_sandbox(tmp_path):
    env = {**os.environ, "DIALER_INSTANCE_PATH": str(tmp_path), "DIALER_WORKERS": "3",
           "DIALER_BIND": f"127.0.0.1:{free_port()}"}
    started = time.monotonic()
    result = subprocess.run([GUNICORN, "-c", "gunicorn.conf.py", "app:app"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and time.monotonic() - started < 30
    assert "the sandbox keeps its calls in one process, so run one worker" in result.stderr + result.stdout


CUT_OFF = "100\r\nabc"  # says 256 bytes, sends 3, then the client stops sending
MALFORMED = ["zz\r\nabc\r\n0\r\n\r\n", "-5\r\nabc\r\n0\r\n\r\n", "3\r\nabcdef\r\n0\r\n\r\n", "3\r\nabc\r\n0\r\nno colon\r\n\r\n"]


def _raw_post(port, path, chunks, signature="x"):
    """A chunked POST as bytes on a socket; the client's side is closed after it (as a client that gave up)."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                      f"Transfer-Encoding: chunked\r\nX-Twilio-Signature: {signature}\r\n\r\n{chunks}").encode())
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer.decode("latin-1")


def test_a_chunked_body_cut_off_or_malformed_is_400_on_every_route_never_a_traceback(tmp_path):
    with production_server(tmp_path) as (port, _, log):
        for path in ("/twiml/status?call=1", "/twiml/customer-to-agent?call=1", "/twiml/dial-result?call=1", "/login"):
            for chunks in [CUT_OFF, *MALFORMED]:
                answer = _raw_post(port, path, chunks)
                assert answer.startswith("HTTP/1.1 400 "), (path, chunks, answer[:300])
    assert "Traceback" not in log.read_text()
