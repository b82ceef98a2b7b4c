"""What the benchmarks share: the README's production command as a child process, /proc figures, signing in.

Imported after bench/live.py has patched the standard library for gevent, so `time.sleep` here
yields to its greenlets there.
"""
import math
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUNICORN = os.path.join(ROOT, ".venv", "bin", "gunicorn")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values, p):
    """The p-th percentile (nearest rank) of a list of numbers; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def twilio_env(workers, instance, port):
    """The server's environment in Twilio mode with made-up credentials (nothing here reaches Twilio)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DIALER_")}
    env.update({
        "DIALER_WORKERS": str(workers), "DIALER_INSTANCE_PATH": instance, "DIALER_BIND": f"127.0.0.1:{port}",
        "DIALER_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "DIALER_SECRET_KEY": secrets.token_hex(32),
        "DIALER_TWILIO_ACCOUNT_SID": "AC" + secrets.token_hex(16), "DIALER_TWILIO_AUTH_TOKEN": secrets.token_hex(16),
        "DIALER_TWILIO_API_KEY_SID": "SK" + secrets.token_hex(16), "DIALER_TWILIO_API_KEY_SECRET": secrets.token_hex(16),
        "DIALER_TWILIO_TWIML_APP_SID": "AP" + secrets.token_hex(16), "DIALER_TWILIO_CALLER_ID": "+442079460000",
    })
    return env


class Server:
    """The README's production command, in its own process group, its output in a log file."""

    def __init__(self, env, log_path):
        self.log_path = log_path
        self.base = env["DIALER_PUBLIC_BASE_URL"]
        self.proc = subprocess.Popen([GUNICORN, "-c", "gunicorn.conf.py", "app:app"], cwd=ROOT, env=env,
                                     stdout=open(log_path, "w"), stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"the server stopped ({self.proc.returncode}): see {self.log_path}")
            try:
                if requests.get(self.base + "/healthz", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        sys.exit(f"the server did not start within {timeout} s: see {self.log_path}")

    def log_matching(self, pattern, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path) as f:
                found = re.search(pattern, f.read())
            if found:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        sys.exit(f"no {pattern!r} in the server's output: see {self.log_path}")

    def workers(self, expected):
        for _ in range(100):
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                children = [int(pid) for pid in f.read().split()]
            if len(children) >= expected:
                return children
            time.sleep(0.1)
        sys.exit(f"expected {expected} workers, found {children}")

    def log_problems(self):
        with open(self.log_path, errors="replace") as f:
            text = f.read()
        return text.count("Traceback"), len(re.findall(r"\[(?:ERROR|CRITICAL)\]|\bERROR\b", text))

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def sign_in(base, username, password):
    """A requests.Session signed in through /login."""
    session = requests.Session()
    page = session.get(base + "/login", timeout=30)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text).group(1)
    response = session.post(base + "/login", data={"username": username, "password": password, "csrf_token": token},
                            allow_redirects=False, timeout=30)
    if response.status_code not in (302, 303):
        sys.exit(f"signing in as {username} failed: {response.status_code} {response.text[:300]}")
    return session
