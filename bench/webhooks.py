#!/usr/bin/env python3
"""Benchmark: Twilio's webhooks against a bare Flask route, side by side in one production server.

    .venv/bin/python bench/webhooks.py [--rounds 3] [--seconds 6] [--connections 8]

Starts the README's production command (gunicorn -c gunicorn.conf.py) on a fresh database, with
bench/bare_route.py adding the baseline routes to the same app. Then, in alternating rounds, wrk
(Debian's `wrk`) sends 8 concurrent senders' worth of:
  bare      POST /bench/bare: a status callback's body to a route that reads and stores nothing
  c2a       POST /twiml/customer-to-agent: a new call answered each time, as Twilio's earlier
            callbacks left it (ringing, its CallSid known): signed, read, TwiML
  c2a_news  the same for calls whose CallSid no callback has given yet: signed, written, TwiML
  status    POST /twiml/status: a new status callback each time (signed, checked, written)
  quickstart POST /bench/quickstart: Twilio's quickstart /voice (builds TwiML, checks and stores
            nothing), the reference the issue's targets were set beside
Every webhook request is distinct and correctly signed, so each one that has news really writes. It prints
throughput ratios against the bare route of the same round (median over rounds), p99 latencies,
the idle worker's RSS, the SQL statements each webhook runs, and checks that every acknowledged
status callback is in the database after the server has stopped.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from urllib.parse import urlencode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench.server import cpu_ticks  # noqa: E402
KINDS = ("bare", "quickstart", "c2a", "c2a_news", "status")
TARGETS = {"c2a": 0.8, "status": 0.6}
STATUS_SEQUENCE = ("initiated", "ringing", "in-progress", "completed")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def voice_params(account, call_sid, status):
    """TWILIO.md 3.2's standard parameters, as Twilio sends them."""
    return {"AccountSid": account, "ApiVersion": "2010-04-01", "CallSid": call_sid, "CallStatus": status,
            "Direction": "outbound-api", "From": "+15005550006", "To": "+442079460123",
            "Caller": "+15005550006", "Called": "+442079460123", "FromCountry": "US", "ToCountry": "GB",
            "FromCity": "", "ToCity": ""}


def raw_request(host, path, params, signature):
    body = urlencode(params)
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: TwilioProxy/1.1\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: {signature}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}")


def write_lua(path, requests):
    """A wrk script that sends these requests in order, each once (it says so if it ran out)."""
    data = path + ".data.lua"
    with open(data, "w") as f:
        f.write("return {\n")
        for request in requests:
            # Quoted, not a long bracket: Lua turns a long bracket's CR LF into LF.
            f.write('"' + request.replace("\r\n", "\\r\\n") + '",\n')
        f.write("}\n")
    with open(path, "w") as f:
        f.write(f"""local reqs = dofile("{data}")
local i = 0
request = function()
  i = i + 1
  if i > #reqs then i = 1 end
  return reqs[i]
end
""")
    return len(requests)


class Workload:
    """The database and the pre-signed requests of every round."""

    def __init__(self, instance, base, per_round, rounds):
        os.environ.update({"DIALER_INSTANCE_PATH": instance, "DIALER_PUBLIC_BASE_URL": base,
                           "DIALER_SANDBOX_CREATE_DEMO_AGENT": "false"})
        from twilio.request_validator import RequestValidator

        from dialer import create_app
        from dialer.db import connect
        self.app = create_app(instance_path=instance)
        cfg = self.app.config
        self.validator = RequestValidator(cfg["TWILIO_AUTH_TOKEN"])
        self.account, self.base, self.host = cfg["TWILIO_ACCOUNT_SID"], base, base.split("//")[1]
        db = connect(cfg["DATABASE"])
        calls_needed = per_round * rounds * 3 + 10
        with db.conn:  # a seed: nobody signs in as this agent
            agent_id = db.conn.execute(
                "INSERT INTO agents (username, display_name, password_hash, role, identity, presence, created_at, "
                "updated_at) VALUES ('bench', 'Bench', '!', 'agent', 'agent_bench_0', 'offline', '', '')").lastrowid
            db.conn.executemany(
                "INSERT INTO calls (agent_id, direction, customer_number, status, created_at) "
                "VALUES (?, 'outbound', '+442079460123', 'queued', strftime('%Y-%m-%dT%H:%M:%S+00:00'))",
                [(agent_id,)] * calls_needed)
        db.conn.close()
        self.next_call = 1
        self.database = cfg["DATABASE"]

    def signed(self, path, params):
        return raw_request(self.host, path, params, self.validator.compute_signature(self.base + path, params))

    def take_calls(self, n):
        first = self.next_call
        self.next_call += n
        return range(first, first + n)

    def ringing(self, call_ids):
        """These calls as the REST reply and the ringing callback leave them, before the customer answers."""
        db = sqlite3.connect(self.database, timeout=30)
        with db:
            db.executemany("UPDATE calls SET status = 'ringing', customer_call_sid = ? WHERE id = ?",
                           [(f"CA{call_id:032x}", call_id) for call_id in call_ids])
        db.close()

    def c2a(self, n):
        calls = self.take_calls(n)
        self.ringing(calls)
        return self.c2a_news(0, calls)

    def c2a_news(self, n, calls=None):
        out = []
        for call_id in calls or self.take_calls(n):
            params = voice_params(self.account, f"CA{call_id:032x}", "in-progress")
            out.append(self.signed(f"/twiml/customer-to-agent?call={call_id}", params))
        return out

    def status(self, n):
        out = []
        for call_id in self.take_calls(-(-n // len(STATUS_SEQUENCE))):
            for seq, status in enumerate(STATUS_SEQUENCE):
                params = voice_params(self.account, f"CA{call_id:032x}", status)
                params.update({"CallbackSource": "call-progress-events", "SequenceNumber": str(seq),
                               "Timestamp": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
                               "SipResponseCode": "200"})
                if status == "completed":
                    params["CallDuration"] = "42"
                out.append(self.signed(f"/twiml/status?call={call_id}", params))
        return out

    def bare(self, n, path="/bench/bare"):
        params = voice_params(self.account, "CA" + "0" * 32, "ringing")
        return [raw_request(self.host, path, params, "unsigned")] * n

    def quickstart(self, n):
        return self.bare(n, "/bench/quickstart")


def wrk(url, script, seconds, connections):
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url],
                         capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)

    def ms(pct):
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)\b", out).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    return {"rate": rate, "total": total, "non2xx": int(bad.group(1)) if bad else 0,
            "errors": errors.group(1) if errors else "", "p50": ms(50), "p99": ms(99)}


def worker_pid(master_pid):
    children = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout.split()
    return int(children[0]) if children else None


def worker_rss_mb(master_pid):
    children = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout.split()
    for pid in children:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    return float("nan")


def statements_per_webhook(work):
    """How many SQL statements one new callback of each kind runs (traced in-process)."""
    counts = {}
    client = work.app.test_client()
    kinds = (("warm-up", "/twiml/status?call={}"), ("c2a", "/twiml/customer-to-agent?call={}"),
             ("c2a_news", "/twiml/customer-to-agent?call={}"), ("status", "/twiml/status?call={}"))
    for kind, path_of in kinds:
        call_id = work.take_calls(1)[0]
        if kind == "c2a":
            work.ringing([call_id])
        params = voice_params(work.account, f"CA{call_id:032x}", "in-progress")
        path = path_of.format(call_id)
        headers = {"X-Twilio-Signature": work.validator.compute_signature(work.base + path, params)}
        with work.app.app_context():
            from dialer import db as dialer_db
            seen = []
            pool = work.app.extensions["dialer_db"]
            reader = pool.take()
            pool.give(reader)  # the one idle connection: the one the request takes
            connections = [reader.conn]
            if dialer_db._batchers:
                connections += [batcher.db.conn for batcher in dialer_db._batchers.values()]
            for conn in connections:
                conn.set_trace_callback(seen.append)
            response = client.post(path, data=params, headers=headers)
            assert response.status_code < 300, response.get_data(as_text=True)
            assert kind not in ("c2a", "c2a_news") or b"<Dial" in response.data, response.data
            for conn in connections:
                conn.set_trace_callback(None)
        counts[kind] = len(seen)
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--per-round", type=int, default=40000, help="distinct requests ready per kind and round")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench needs wrk: apt-get install wrk")

    tmp = tempfile.mkdtemp(prefix="dialer-bench-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    print(f"preparing {args.per_round} requests per kind and round in {tmp} …", flush=True)
    work = Workload(os.path.join(tmp, "instance"), base, args.per_round, args.rounds)
    scripts = {}
    for r in range(args.rounds):
        for kind in KINDS:
            script = os.path.join(tmp, f"{kind}{r}.lua")
            scripts[kind, r] = (script, write_lua(script, getattr(work, kind)(args.per_round)))
    statements = statements_per_webhook(work)

    env = dict(os.environ, DIALER_BIND=f"127.0.0.1:{port}")
    server = subprocess.Popen(
        [os.path.join(ROOT, ".venv/bin/gunicorn"), "-c", "gunicorn.conf.py", "--pythonpath", "bench", "bare_route:app"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "server.log"), "w"),
        start_new_session=True)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            sys.exit("the server did not start: see " + os.path.join(tmp, "server.log"))
        for kind in KINDS:  # one request each, so every import and cache is warm
            warm = os.path.join(tmp, f"warm-{kind}.lua")
            write_lua(warm, getattr(work, kind)(1))
            subprocess.run(["wrk", "-t1", "-c1", "-d1s", "-s", warm, base], capture_output=True)
        time.sleep(1)
        idle_rss = worker_rss_mb(server.pid)

        results = {kind: [] for kind in KINDS}
        acknowledged = 0
        for r in range(args.rounds):
            order = KINDS[r % len(KINDS):] + KINDS[:r % len(KINDS)]  # alternate who goes first
            for kind in order:
                script, available = scripts[kind, r]
                worker, started = worker_pid(server.pid), time.monotonic()
                ticks = cpu_ticks(worker)
                result = wrk(base, script, args.seconds, args.connections)
                # The worker's CPU over the round, in % of one core: 100 means the worker is the limit.
                result["cpu"] = (cpu_ticks(worker) - ticks) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - started) * 100
                if kind != "bare" and result["total"] > available:
                    sys.exit(f"round {r} {kind}: {result['total']} requests but only {available} distinct: raise --per-round")
                results[kind].append(result)
                if kind == "status":
                    acknowledged += result["total"] - result["non2xx"]
                print(f"round {r + 1} {kind:<10} {result['rate']:8.0f} req/s  p50 {result['p50']:6.1f} ms  "
                      f"p99 {result['p99']:6.1f} ms  worker CPU {result['cpu']:3.0f} %  non-2xx {result['non2xx']}  {result['errors']}", flush=True)
        loaded_rss = worker_rss_mb(server.pid)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    db = sqlite3.connect(work.app.config["DATABASE"])
    stored = db.execute("SELECT count(*) FROM call_events WHERE source = 'status'").fetchone()[0]
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    synchronous = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[
        _synchronous(work)]

    print()
    print(f"server: gunicorn -c gunicorn.conf.py (one worker, gevent), {args.connections} concurrent senders, "
          f"{args.rounds} rounds x {args.seconds} s, SQLite synchronous={synchronous}")
    quick = [mine["rate"] / bare["rate"] for mine, bare in zip(results["quickstart"], results["bare"])]
    print(f"quickstart throughput {statistics.median(quick):.2f}x the bare route (rounds: "
          f"{', '.join(f'{x:.2f}' for x in quick)}): Twilio's /voice, which checks and stores nothing")
    for kind in ("c2a", "c2a_news", "status"):
        ratios = [mine["rate"] / bare["rate"] for mine, bare in zip(results[kind], results["bare"])]
        ratio = statistics.median(ratios)
        verdict = ("ok" if ratio >= TARGETS[kind] else "BELOW TARGET") if kind in TARGETS else "no target: the rare case"
        against_quickstart = statistics.median(
            mine["rate"] / quick["rate"] for mine, quick in zip(results[kind], results["quickstart"]))
        print(f"{kind:<7} throughput {ratio:.2f}x the bare route (rounds: {', '.join(f'{x:.2f}' for x in ratios)}; "
              f"target >= {TARGETS.get(kind, '-')}) {verdict}; {against_quickstart:.2f}x the quickstart; "
              f"{statistics.median(r['rate'] for r in results[kind]):.0f} req/s; "
              f"p99 median {statistics.median(r['p99'] for r in results[kind]):.1f} ms")
    print(f"bare    {statistics.median(r['rate'] for r in results['bare']):.0f} req/s; "
          f"p99 median {statistics.median(r['p99'] for r in results['bare']):.1f} ms")
    print(f"status p99 at {args.connections} senders: {max(r['p99'] for r in results['status']):.1f} ms worst round "
          f"(target <= 50 ms)")
    print(f"SQL statements per new callback: customer-to-agent {statements['c2a']} "
          f"({statements['c2a_news']} when its CallSid is news), status {statements['status']}")
    print(f"worker RSS: {idle_rss:.1f} MB idle after warm-up (target <= 70), {loaded_rss:.1f} MB after the load")
    print(f"durability: {acknowledged} status callbacks acknowledged, {stored} stored after shutdown, "
          f"integrity_check {integrity}: {'ok' if stored >= acknowledged and integrity == 'ok' else 'LOST SOME'}")
    shutil.rmtree(tmp, ignore_errors=True)


def _synchronous(work):
    from dialer.db import connect
    db = connect(work.app.config["DATABASE"])
    try:
        return db.execute("PRAGMA synchronous").fetchone()[0]
    finally:
        db.conn.close()


if __name__ == "__main__":
    main()
