#!/usr/bin/env python3
"""Benchmark: live updates (GET /events) under the production server, from callback to client.

    .venv/bin/python bench/live.py [--streams 1000] [--agents 20] [--rate 15] [--seconds 30]
                                   [--idle-seconds 15] [--phones 300] [--quick]

Twilio phase. Starts the README's production command (gunicorn -c gunicorn.conf.py app:app) with
2 worker processes in Twilio mode (made-up credentials: nothing here reaches Twilio) on a fresh
instance folder. It makes --agents agents and one supervisor (auth.create_agent, what `flask agents
create` runs), one call per status sequence (calls.create_call), and signs every user in once
through /login. Then:
  idle      CPU (utime+stime of the master and both workers, /proc) over --idle-seconds and each
            worker's RSS, first with no stream open (a few were opened and closed first, so both
            workers' hubs are running), then with --streams streams open; the streams
            are shared evenly by the agents and the supervisor (Accept: text/event-stream, one
            session cookie per user), held by gevent greenlets on raw sockets in this process.
  callbacks --rate signed status callbacks a second for --seconds (POST /twiml/status?call=ID,
            signed with twilio's RequestValidator, initiated -> ringing -> in-progress -> completed
            per call, several seconds apart). t0 is taken just before each POST is sent; t1 when a
            stream reads the message whose <article id="call-ID"> has that data-status. Every
            stream of the call's agent and every supervisor stream must get it: the latency of each
            such delivery is counted, and any delivery missing after a grace period is reported.
  pages     while the callbacks run, GET /healthz and a signed-in GET / every 100 ms.
Sandbox phase. Starts the same command in sandbox mode (one worker, DIALER_SANDBOX_TIME_SCALE=0.05),
signs in as the demo agent (password from the server's output) and opens --phones browser phones
as a browser tab does: its page's GET /events, GET /token, POST /sandbox/devices, and GET of the
device's events_url, all held open. With them open it times GET /healthz and GET /, and places one
call (POST /calls to 020 7946 0001, the sandbox's busy number) that must reach data-status="busy"
on a page stream.

--quick is a smoke run (60 streams, 4 agents, 8 s of callbacks, 20 phones). It prints the figures
beside the issue's targets; --keep keeps the temporary folder with both servers' logs. Raise the open-file limit if it says so. The
client runs in this process; its own CPU is printed so a CPU-bound client can be told from a slow
server (both share the machine).
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from urllib.parse import urlencode  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.pool  # noqa: E402
import requests  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import server as server_module  # noqa: E402
from server import ROOT, Server, cpu_ticks, free_port, pct, rss_kb, twilio_env  # noqa: E402

sys.path.insert(0, ROOT)
STATUS_SEQUENCE = ("initiated", "ringing", "in-progress", "completed")
CLK_TCK = os.sysconf("SC_CLK_TCK")
ARTICLE = re.compile(rb'<article id="call-(\d+)"[^>]*?data-status="([a-z-]+)"')
LAST_ID = re.compile(rb"(?:^|\n)id: (\d+)\n")
TARGETS = {"p95": 150.0, "p99": 300.0, "idle_cpu": 3.0}


def voice_params(account, call_sid, status):
    """TWILIO.md 3.2's standard parameters, as Twilio sends them (as bench/webhooks.py)."""
    return {"AccountSid": account, "ApiVersion": "2010-04-01", "CallSid": call_sid, "CallStatus": status,
            "Direction": "outbound-api", "From": "+15005550006", "To": "+442079460123",
            "Caller": "+15005550006", "Called": "+442079460123", "FromCountry": "US", "ToCountry": "GB",
            "FromCity": "", "ToCity": ""}


# --- the server and /proc -------------------------------------------------------------------

def socket_count(pid):
    """Open sockets of a process: its streams, more or less (plus the listener)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def sample_cpu(pids, seconds):
    """Percent of one core used by these processes together over `seconds`, and by this client."""
    before, client_before, started = sum(cpu_ticks(p) for p in pids), _self_cpu(), time.monotonic()
    gevent.sleep(seconds)
    wall = time.monotonic() - started
    server = (sum(cpu_ticks(p) for p in pids) - before) / CLK_TCK / wall * 100
    return server, (_self_cpu() - client_before) / wall * 100


def _self_cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- HTTP on raw sockets (few CPU cycles per message) ----------------------------------------

def raw_exchange(addr, data, timeout=10):
    """Send one Connection: close request; returns (status, body bytes)."""
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            got = s.recv(65536)
            if not got:
                break
            chunks.append(got)
    response = b"".join(chunks)
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body


class Streams:
    """Open /events streams, each a greenlet that notes when each (call, status) reached it."""

    def __init__(self, addr, host):
        self.addr, self.host = addr, host
        self.owner = []  # stream index -> user name
        self.arrivals = defaultdict(dict)  # (call id, status) -> {stream index: t1}
        self.open_count = 0
        self.open_errors = []
        self.reconnects = 0
        self.closed_unexpectedly = 0
        self.messages = 0
        self.bytes = 0
        self.greenlets = []
        self.sockets = {}
        self.stopping = False

    def open(self, user, cookie, path="/events"):
        index = len(self.owner)
        self.owner.append(user)
        ready = gevent.event.AsyncResult()
        self.greenlets.append(gevent.spawn(self._run, index, cookie, path, ready))
        return ready

    def _connect(self, index, cookie, path, last_id):
        s = socket.create_connection(self.addr, timeout=30)
        extra = f"Last-Event-ID: {last_id}\r\n" if last_id is not None else ""
        s.sendall((f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAccept: text/event-stream\r\n"
                   f"Cache-Control: no-cache\r\nCookie: {cookie}\r\n{extra}\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            got = s.recv(65536)
            if not got:
                raise ConnectionError("closed before the response headers")
            buf += got
        head, buf = buf.split(b"\r\n\r\n", 1)
        status = head.split(b" ", 2)[1]
        if status != b"200" or b"text/event-stream" not in head.lower():
            raise ConnectionError(f"{path}: {head.splitlines()[0].decode()} {buf[:200]!r}")
        s.settimeout(None)
        self.sockets[index] = s
        return s, buf

    def _run(self, index, cookie, path, ready):
        last_id = None
        arrivals = self.arrivals
        while not self.stopping:
            try:
                s, buf = self._connect(index, cookie, path, last_id)
            except (OSError, ConnectionError) as error:
                if not ready.ready():
                    ready.set_exception(error)
                    return
                self.reconnects += 1
                gevent.sleep(1)
                continue
            if not ready.ready():
                ready.set(index)
            else:
                self.reconnects += 1
            try:
                while True:
                    got = s.recv(65536)
                    now = time.monotonic()
                    if not got:
                        break
                    self.bytes += len(got)
                    buf += got
                    end = buf.rfind(b"\n\n")
                    if end < 0:
                        continue
                    block, buf = buf[:end], buf[end + 2:]
                    if b"<article" in block:
                        for match in ARTICLE.finditer(block):
                            seen = arrivals[int(match.group(1)), match.group(2).decode()]
                            if index not in seen:
                                seen[index] = now
                                self.messages += 1
                    found = LAST_ID.findall(block)
                    if found:
                        last_id = found[-1].decode()
            except OSError:
                pass
            finally:
                self.sockets.pop(index, None)
                s.close()
            if not self.stopping:
                self.closed_unexpectedly += 1  # the server ended it (its lifetime) or it broke: resume

    def close_all(self):
        self.stopping = True
        for s in list(self.sockets.values()):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        gevent.joinall(self.greenlets, timeout=5)
        gevent.killall([g for g in self.greenlets if not g.dead], block=False)


# --- users -------------------------------------------------------------------------------------

def sign_in(base, username, password):
    """A signed-in requests.Session, and its Cookie header for the raw streams."""
    session = server_module.sign_in(base, username, password)
    return session, "; ".join(f"{c.name}={c.value}" for c in session.cookies)


def timed(fn):
    started = time.monotonic()
    try:
        ok = fn()
    except requests.RequestException:
        ok = False
    return (time.monotonic() - started) * 1000, ok


# --- the Twilio phase -----------------------------------------------------------------------------

def twilio_phase(args, tmp):
    port = free_port()
    base, host = f"http://127.0.0.1:{port}", f"127.0.0.1:{port}"
    instance = os.path.join(tmp, "twilio-instance")
    env = twilio_env(2, instance, port)
    print(f"[twilio] preparing {instance}: {args.agents} agents + 1 supervisor …", flush=True)
    os.environ.update(env)  # create_app reads the same settings as the server
    from twilio.request_validator import RequestValidator

    from dialer import auth, calls, create_app
    from dialer.db import connect
    app = create_app(instance_path=instance)
    db = connect(app.config["DATABASE"])
    password = "bench-" + secrets.token_urlsafe(18)
    users = [f"agent{i:03d}" for i in range(args.agents)] + ["supervisor"]
    ids = {}
    with app.app_context():
        for name in users:
            row = auth.create_agent(db, name, password, "supervisor" if name == "supervisor" else "agent")
            ids[name] = row["id"]
    per_call = len(STATUS_SEQUENCE)
    n_calls = max(1, -(-int(args.rate * args.seconds) // per_call))
    call_ids, agent_of = [], {}
    for i in range(n_calls):
        agent = users[i % args.agents]
        call = calls.create_call(db, ids[agent], "+442079460123")
        call_ids.append(call["id"])
        agent_of[call["id"]] = agent
    db.conn.close()
    validator = RequestValidator(env["DIALER_TWILIO_AUTH_TOKEN"])
    account = env["DIALER_TWILIO_ACCOUNT_SID"]
    # Slot k: call k % n_calls, status k // n_calls: a call's statuses come seconds apart, in order.
    schedule = []
    for k in range(n_calls * per_call):
        call_id, seq = call_ids[k % n_calls], k // n_calls
        status = STATUS_SEQUENCE[seq]
        params = voice_params(account, f"CA{call_id:032x}", status)
        params.update({"CallbackSource": "call-progress-events", "SequenceNumber": str(seq),
                       "Timestamp": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
                       "SipResponseCode": "200"})
        if status == "completed":
            params["CallDuration"] = "7"
        path = f"/twiml/status?call={call_id}"
        body = urlencode(params)
        request = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: TwilioProxy/1.1\r\nConnection: close\r\n"
                   f"Content-Type: application/x-www-form-urlencoded\r\n"
                   f"X-Twilio-Signature: {validator.compute_signature(base + path, params)}\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n{body}").encode()
        schedule.append((call_id, status, request))

    server = Server(env, os.path.join(tmp, "twilio-server.log"))
    streams = None
    results = {"streams": args.streams, "users": len(users), "log": server.log_path}
    try:
        server.wait_healthy()
        workers = server.workers(2)
        pids = [server.proc.pid, *workers]
        print(f"[twilio] gunicorn master {server.proc.pid}, workers {workers}; signing in {len(users)} users …", flush=True)
        sessions, cookies = {}, {}
        for name in users:
            sessions[name], cookies[name] = sign_in(base, name, password)
        for name in users * 2:  # warm both workers' templates and imports
            sessions[name].get(base + "/", timeout=30)
        # A stream, opened and closed, starts a worker's hub; a few of them start both workers' hubs,
        # so that "0 streams" is the cost of the hubs themselves (a closed stream is noticed at its
        # next keep-alive).
        warm = Streams(("127.0.0.1", port), host)
        gevent.joinall([gevent.spawn(warm.open(name, cookies[name]).get, timeout=30) for name in users[:8] * 2])
        warm.close_all()
        gevent.sleep(2)
        results["rss0"] = [rss_kb(p) for p in workers]
        print(f"[twilio] idle CPU with 0 streams over {args.idle_seconds} s …", flush=True)
        results["cpu0"], results["client_cpu0"] = sample_cpu(pids, args.idle_seconds)

        # Open the streams: the users take turns, so each holds about streams / users of them.
        streams = Streams(("127.0.0.1", port), host)
        print(f"[twilio] opening {args.streams} streams …", flush=True)
        started = time.monotonic()
        pool = gevent.pool.Pool(args.open_concurrency)
        pending = []
        for i in range(args.streams):
            name = users[i % len(users)]
            pool.wait_available()
            ready = streams.open(name, cookies[name])
            pending.append(ready)
            pool.spawn(ready.wait, 60)
        pool.join()
        for ready in pending:
            try:
                ready.get(timeout=60)
            except Exception as error:  # noqa: BLE001 - counted and shown
                streams.open_errors.append(str(error)[:200])
        results["open_seconds"] = time.monotonic() - started
        results["open_errors"] = streams.open_errors
        print(f"[twilio] {args.streams - len(streams.open_errors)} open in {results['open_seconds']:.1f} s "
              f"({len(streams.open_errors)} failed); settling …", flush=True)
        gevent.sleep(3)
        results["rssN"] = [rss_kb(p) for p in workers]
        results["sockets"] = [socket_count(p) for p in workers]
        print(f"[twilio] idle CPU with {args.streams} streams over {args.idle_seconds} s …", flush=True)
        results["cpuN"], results["client_cpuN"] = sample_cpu(pids, args.idle_seconds)

        # Callbacks at a steady rate, with the pages asked for meanwhile.
        print(f"[twilio] {len(schedule)} status callbacks at {args.rate}/s …", flush=True)
        fired, post_ms, post_errors = {}, [], []
        pages = {"healthz": [], "dialer": [], "errors": []}
        done = gevent.event.Event()

        def fire(call_id, status, request):
            t0 = time.monotonic()
            try:
                code, body = raw_exchange(("127.0.0.1", port), request)
            except OSError as error:
                code, body = 0, str(error).encode()
            post_ms.append((time.monotonic() - t0) * 1000)
            if 200 <= code < 300:
                fired[call_id, status] = t0
            else:
                post_errors.append(f"{code} {body[:120]!r}")

        def probe_pages():
            page_session = sessions[users[0]]
            while not done.is_set():
                tick = time.monotonic()
                for key, url in (("healthz", "/healthz"), ("dialer", "/")):
                    ms, ok = timed(lambda: page_session.get(base + url, timeout=10).status_code == 200)
                    pages[key].append(ms)
                    if not ok:
                        pages["errors"].append(url)
                gevent.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))

        prober = gevent.spawn(probe_pages)
        client_before, server_before = _self_cpu(), sum(cpu_ticks(p) for p in pids)
        started = time.monotonic()
        senders = []
        for k, (call_id, status, request) in enumerate(schedule):
            gevent.sleep(max(0.0, started + k / args.rate - time.monotonic()))
            senders.append(gevent.spawn(fire, call_id, status, request))
        gevent.joinall(senders, timeout=60)
        fire_seconds = time.monotonic() - started
        results["client_cpu_load"] = (_self_cpu() - client_before) / fire_seconds * 100
        results["server_cpu_load"] = (sum(cpu_ticks(p) for p in pids) - server_before) / CLK_TCK / fire_seconds * 100
        gevent.sleep(args.grace)
        done.set()
        prober.join(timeout=15)

        # Who should have had what.
        owned = defaultdict(list)
        for index, name in enumerate(streams.owner):
            owned[name].append(index)
        failed_to_open = {i for i in range(len(streams.owner))} - {
            i for i, ready in enumerate(pending) if ready.successful()}
        latencies, expected, missing, missing_examples = [], 0, 0, []
        for (call_id, status), t0 in fired.items():
            audience = owned[agent_of[call_id]] + owned["supervisor"]
            seen = streams.arrivals.get((call_id, status), {})
            for index in audience:
                expected += 1
                if index in seen:
                    latencies.append((seen[index] - t0) * 1000)
                else:
                    missing += 1
                    if len(missing_examples) < 5:
                        why = " (stream never opened)" if index in failed_to_open else ""
                        missing_examples.append(f"call {call_id} {status} -> stream {index} of {streams.owner[index]}{why}")
        results.update(
            callbacks=len(schedule), acknowledged=len(fired), post_errors=post_errors, post_ms=post_ms,
            fire_seconds=fire_seconds, expected=expected, received=len(latencies), missing=missing,
            missing_examples=missing_examples, latencies=latencies, pages=pages,
            reconnects=streams.reconnects, closed=streams.closed_unexpectedly, stream_bytes=streams.bytes)
    finally:
        if streams:
            streams.close_all()
        server.stop()
        results["log_problems"] = server.log_problems()
    return results


# --- the sandbox phase -------------------------------------------------------------------------

def sandbox_phase(args, tmp):
    port = free_port()
    base, host = f"http://127.0.0.1:{port}", f"127.0.0.1:{port}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("DIALER_")}
    env.update({"DIALER_INSTANCE_PATH": os.path.join(tmp, "sandbox-instance"), "DIALER_BIND": host,
                "DIALER_PUBLIC_BASE_URL": base, "DIALER_SANDBOX_TIME_SCALE": "0.05", "PYTHONUNBUFFERED": "1"})
    server = Server(env, os.path.join(tmp, "sandbox-server.log"))
    results = {"phones": args.phones, "log": server.log_path}
    pages = devices = None
    try:
        password = server.log_matching(r"as demo / (\S+) ").group(1)
        server.wait_healthy()
        worker = server.workers(1)[0]
        session, cookie = sign_in(base, "demo", password)
        dialer = session.get(base + "/", timeout=30).text
        csrf = re.search(r'"X-CSRFToken": "([^"]+)"', dialer).group(1)
        results["rss0"] = rss_kb(worker)
        print(f"[sandbox] worker {worker}; opening {args.phones} browser phones …", flush=True)
        pages, devices = Streams(("127.0.0.1", port), host), Streams(("127.0.0.1", port), host)
        errors = []

        def phone():
            """What one tab does: its page's event stream, a token, a registered device, its events."""
            try:
                pages.open("demo", cookie).get(timeout=60)
                token = requests.get(base + "/token", headers={"Cookie": cookie}, timeout=30).json()["token"]
                registered = requests.post(base + "/sandbox/devices", json={"token": token}, timeout=30)
                registered.raise_for_status()
                devices.open("demo", cookie, registered.json()["events_url"]).get(timeout=60)
            except Exception as error:  # noqa: BLE001 - counted and shown
                errors.append(str(error)[:200])

        started = time.monotonic()
        pool = gevent.pool.Pool(args.open_concurrency)
        for _ in range(args.phones):
            pool.spawn(phone)
        pool.join()
        results["open_seconds"] = time.monotonic() - started
        results["open_errors"] = errors
        gevent.sleep(2)
        results["rssN"] = rss_kb(worker)
        health, dialer_ms = [], []
        health_errors = 0
        for _ in range(20):
            ms, ok = timed(lambda: requests.get(base + "/healthz", timeout=10).ok)
            health.append(ms)
            health_errors += not ok
            ms, ok = timed(lambda: session.get(base + "/", timeout=10).ok)
            dialer_ms.append(ms)
            health_errors += not ok
            gevent.sleep(0.05)
        results.update(health=health, dialer=dialer_ms, page_errors=health_errors)
        # One call to the busy number, watched on one of the open page streams.
        t0 = time.monotonic()
        placed = session.post(base + "/calls", data={"to": "020 7946 0001", "csrf_token": csrf},
                              headers={"HX-Request": "true", "X-CSRFToken": csrf}, timeout=30)
        found = re.search(r'<article id="call-(\d+)"', placed.text)
        results["place_status"] = placed.status_code
        results["busy_ms"] = None
        if found:
            call_id = int(found.group(1))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                seen = pages.arrivals.get((call_id, "busy"))
                if seen:
                    results["busy_ms"] = (min(seen.values()) - t0) * 1000
                    results["busy_streams"] = len(seen)
                    break
                gevent.sleep(0.01)
        results["devices_open"] = len(devices.sockets)
        results["pages_open"] = len(pages.sockets)
        results["cpu"], _ = sample_cpu([server.proc.pid, worker], 5)
    finally:
        for streams in (pages, devices):
            if streams:
                streams.close_all()
        server.stop()
        results["log_problems"] = server.log_problems()
    return results


# --- the summary ---------------------------------------------------------------------------------

def verdict(ok):
    return "ok" if ok else "MISSED"


def report(args, tw, sb):
    print()
    print(f"server: gunicorn -c gunicorn.conf.py app:app, Twilio mode, 2 gevent workers; "
          f"{tw['streams']} streams shared by {tw['users']} users ({tw['users'] - 1} agents, 1 supervisor); "
          f"client: one gevent process on the same {os.cpu_count()}-core machine")
    if tw.get("open_errors") is not None:
        print(f"streams: {tw['streams'] - len(tw['open_errors'])}/{tw['streams']} opened in {tw['open_seconds']:.1f} s"
              + (f"; failures e.g. {tw['open_errors'][:2]}" if tw["open_errors"] else "")
              + f"; reconnects {tw.get('reconnects', 0)}, cut by the server {tw.get('closed', 0)}")
    if "latencies" in tw:
        lat = tw["latencies"]
        p50, p95, p99 = pct(lat, 50), pct(lat, 95), pct(lat, 99)
        print(f"callbacks: {tw['acknowledged']}/{tw['callbacks']} acknowledged in {tw['fire_seconds']:.1f} s "
              f"({tw['callbacks'] / tw['fire_seconds']:.1f}/s); POST p50 {pct(tw['post_ms'], 50):.1f} ms, "
              f"p99 {pct(tw['post_ms'], 99):.1f} ms" + (f"; errors e.g. {tw['post_errors'][:2]}" if tw["post_errors"] else ""))
        print(f"callback -> client: p50 {p50:.1f} ms, p95 {p95:.1f} ms (target <= {TARGETS['p95']:.0f}) "
              f"{verdict(p95 <= TARGETS['p95'])}, p99 {p99:.1f} ms (target <= {TARGETS['p99']:.0f}) "
              f"{verdict(p99 <= TARGETS['p99'])}, max {max(lat) if lat else float('nan'):.1f} ms")
        print(f"deliveries: {tw['received']} received of {tw['expected']} expected: "
              + ("none missing" if not tw["missing"] else f"{tw['missing']} MISSING, e.g. {tw['missing_examples']}"))
        print(f"CPU during callbacks: server {tw['server_cpu_load']:.0f}% of one core, client {tw['client_cpu_load']:.0f}%")
    if "cpuN" in tw:
        print(f"idle CPU (master + workers, {args.idle_seconds:g} s): {tw['cpu0']:.2f}% of one core with 0 streams, "
              f"{tw['cpuN']:.2f}% with {tw['streams']} (target <= {TARGETS['idle_cpu']:g}%) "
              f"{verdict(tw['cpuN'] <= TARGETS['idle_cpu'])}; client {tw['client_cpuN']:.2f}%")
        per = (sum(tw["rssN"]) - sum(tw["rss0"])) / max(1, tw["streams"])
        print(f"worker RSS: {' + '.join(f'{k / 1024:.1f}' for k in tw['rss0'])} MB with 0 streams, "
              f"{' + '.join(f'{k / 1024:.1f}' for k in tw['rssN'])} MB with {tw['streams']}: {per:.1f} KB per stream; "
              f"sockets per worker {' + '.join(str(n) for n in tw['sockets'])}")
    if "pages" in tw:
        pg = tw["pages"]
        print(f"pages while open (every 100 ms during the callbacks): GET /healthz p50 {pct(pg['healthz'], 50):.1f} ms "
              f"p95 {pct(pg['healthz'], 95):.1f} ms; GET / p50 {pct(pg['dialer'], 50):.1f} ms p95 "
              f"{pct(pg['dialer'], 95):.1f} ms; {len(pg['healthz']) + len(pg['dialer'])} requests, "
              f"{len(pg['errors'])} errors {verdict(not pg['errors'])}")
    tracebacks, errors = tw.get("log_problems", (0, 0))
    print(f"server log: {tracebacks} tracebacks, {errors} error lines ({tw['log']})")
    if sb:
        print(f"sandbox (1 worker, time x0.05): {sb['phones'] - len(sb.get('open_errors', []))}/{sb['phones']} browser phones "
              f"opened in {sb.get('open_seconds', float('nan')):.1f} s"
              + (f"; failures e.g. {sb['open_errors'][:2]}" if sb.get("open_errors") else "")
              + f"; still open at the end: {sb.get('pages_open', 0)} page streams, {sb.get('devices_open', 0)} device streams")
        if "health" in sb:
            busy = sb.get("busy_ms")
            ok = busy is not None and not sb["page_errors"] and not sb["open_errors"]
            print(f"  with them open: GET /healthz p50 {pct(sb['health'], 50):.1f} ms p95 {pct(sb['health'], 95):.1f} ms, "
                  f"GET / p50 {pct(sb['dialer'], 50):.1f} ms, {sb['page_errors']} errors; POST /calls {sb['place_status']}, "
                  + (f"busy on a page stream after {busy:.0f} ms" if busy is not None else "busy NEVER ARRIVED")
                  + f"; worker RSS {sb['rss0'] / 1024:.1f} -> {sb['rssN'] / 1024:.1f} MB; idle CPU {sb['cpu']:.1f}%: "
                  + ("app keeps working ok" if ok else "FAILED"))
        tracebacks, errors = sb.get("log_problems", (0, 0))
        print(f"  server log: {tracebacks} tracebacks, {errors} error lines ({sb['log']})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--rate", type=float, default=15, help="status callbacks a second")
    parser.add_argument("--seconds", type=float, default=30, help="how long the callbacks run")
    parser.add_argument("--idle-seconds", type=float, default=15, help="each idle CPU sample (keep-alives come every 15 s)")
    parser.add_argument("--grace", type=float, default=3, help="seconds after the last callback for late deliveries")
    parser.add_argument("--phones", type=int, default=300, help="sandbox browser phones (0: skip the sandbox phase)")
    parser.add_argument("--open-concurrency", type=int, default=50, help="streams opened at once")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, databases)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args()
    if args.quick:
        args.streams, args.agents, args.rate, args.seconds = min(args.streams, 60), min(args.agents, 4), 10, 8
        args.idle_seconds, args.phones = 3, min(args.phones, 20)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.streams + 2 * args.phones + 200
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(wanted, soft)), hard))
        except (ValueError, OSError):
            pass
        if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < wanted:
            sys.exit(f"need {wanted} open files, the limit is {hard}: raise it (ulimit -n)")

    tmp = tempfile.mkdtemp(prefix="dialer-bench-live-")
    tw = sb = None
    try:
        tw = twilio_phase(args, tmp)
        if args.phones:
            sb = sandbox_phase(args, tmp)
    finally:
        if tw:
            report(args, tw, sb)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
