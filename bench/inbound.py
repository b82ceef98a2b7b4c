#!/usr/bin/env python3
"""Benchmark: customers calling in (issue 10's load item) under the production server, in sandbox mode.

    .venv/bin/python bench/inbound.py [--callers 200] [--agents 5] [--seconds 10] [--scale 0.05]
                                      [--give-ups 10] [--presses 5] [--talk 0.2 1.0] [--wrap-up 1]
                                      [--tick 0.25] [--voicemail-after 2400] [--timeout 300] [--keep]

Starts the README's production command (gunicorn -c gunicorn.conf.py app:app: one gevent worker, as
the sandbox requires) in sandbox mode on a fresh instance folder, with simulated time sped up
(DIALER_SANDBOX_TIME_SCALE, 0.05: a simulated second lasts 50 ms), a short wrap-up
(DIALER_WRAP_UP_SECONDS, real seconds), a small presence tick (DIALER_PRESENCE_TICK_SECONDS: how
soon an agent whose wrap-up ended is available again and offered the longest-waiting caller) and
DIALER_VOICEMAIL_AFTER (simulated seconds in the queue; long enough that most callers are answered).

Before the server starts it makes --agents agents and one supervisor (auth.create_agent, what
`flask agents create` runs). Over HTTP each agent signs in, keeps its page's event stream open (as a
tab does: the hub's heartbeat keeps them from going offline), gets /token, registers a scripted
browser phone with the sandbox (tests/device.py's ScriptedDevice, imported) and posts Available
(POST /presence with phone_ready=yes and the page's CSRF token). The supervisor keeps the board's
event stream open. Each agent's phone answers every call that rings it, talks a random --talk
seconds (real), and hangs up, like a busy agent; a call that rings while the phone is on a call is
ignored, as the Voice SDK ignores incoming calls while busy, and counted (it must not happen once the
app knows the agent is on a call). An agent set away for a missed offer clicks Available again
(counted).

Then --callers callers ring in within --seconds through POST /sandbox/test/inbound (the sandbox
account's basic auth), evenly spaced. Their numbers end in 0 (they talk until an agent hangs up)
except --give-ups numbers ending in 606 (hang up 60 simulated s after calling in unless answered) and
--presses numbers ending in 307 (press 1 after 30 simulated s in the queue and leave a voicemail).
When every call has ended it checks, from the database (read-only sqlite3) and the clients:
  outcomes   every inbound call terminal, with an outcome (calls.outcome) among answered / voicemail /
             hung up in the queue / hung up while ringing / failed; each kind of caller's outcome as
             its behaviour allows (talkers: answered or voicemail; give-ups: hung up or answered;
             pressers: voicemail or answered); the phones' accepted calls = the database's answered
             calls, with the same agent.
  one call   no phone rang while its agent was on a call; no agent rang again before its wrap-up.
  FCFS       among queued callers who were answered, the order the phones accepted them follows
             queued_at (ties within the same second allowed: queued_at has 1 s resolution); every
             inversion is listed with its figures. Also counted: callers answered without queueing
             while an earlier caller was still waiting.
  board      the supervisor's GET /board #board-counts, and the last counts its event stream
             carried, equal the same counts computed from the database.
  log        no 5xx in the access log, no tracebacks, no ERROR lines; sandbox notices by code.
Wait in the queue is the sandbox's QueueTime (simulated seconds, summed over a caller's stints in
the queue) and that times the scale (real seconds).
"""
import argparse
import json
import os
import queue
import random
import re
import secrets
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from urllib.parse import parse_qs

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server import ROOT, Server, cpu_ticks, free_port, pct, sign_in  # noqa: E402

sys.path.insert(0, ROOT)
from tests.device import ScriptedDevice  # noqa: E402

ANSWER_RACE = 0.25  # s: an agent's answer reaches the app with its phone's status callback
CLK_TCK = os.sysconf("SC_CLK_TCK")
OUTCOMES = ("answered", "voicemail", "hung up in the queue", "hung up while ringing", "failed")
ALLOWED = {"talks": {"answered", "voicemail"},
           "gives up": {"answered", "hung up in the queue", "hung up while ringing"},
           "presses 1": {"answered", "voicemail"}}
TAILS = {"talks": "000", "gives up": "606", "presses 1": "307"}
ACCESS = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3}) ')
NOTICE = re.compile(r"sandbox call \S+: error (\d+): (.{0,120})")
COUNT_NAMES = {"Placed": "placed", "Answered": "answered", "Missed": "missed", "Called in": "called_in",
               "Answered in": "answered_in", "Missed in": "missed_in", "Waiting now": "waiting",
               "Average wait": "wait", "Average talk": "talk"}


def now_iso():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_only(path):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def seconds_between(start, end):
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def mmss(seconds):
    """As the board writes a duration."""
    from dialer.filters import duration
    return duration(seconds)


# --- the people: agents at their desks, the supervisor at the board ---------------------------

class PageStream:
    """A page's GET /events held open (reconnecting as the browser does), keeping the last board counts."""

    def __init__(self, base, session):
        self.base = base
        self.session = requests.Session()
        self.session.cookies.update(session.cookies)
        self.stop = threading.Event()
        self.last_counts = None
        self.messages = 0
        self.opened = threading.Event()
        self.errors = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        last_id = None
        while not self.stop.is_set():
            headers = {"Accept": "text/event-stream"}
            if last_id:
                headers["Last-Event-ID"] = last_id
            try:
                with self.session.get(self.base + "/events", headers=headers, stream=True, timeout=(10, 60)) as response:
                    if response.status_code != 200:
                        self.errors.append(f"/events {response.status_code}")
                        time.sleep(1)
                        continue
                    self.opened.set()
                    data = []
                    for line in response.iter_lines(decode_unicode=True):
                        if self.stop.is_set():
                            return
                        if line.startswith("id: "):
                            last_id = line[4:]
                        elif line.startswith("data:"):
                            data.append(line[5:].removeprefix(" "))
                        elif line == "" and data:
                            self.messages += 1
                            text = "\n".join(data)
                            data = []
                            if 'id="board-counts"' in text:
                                self.last_counts = parse_counts(text)
            except requests.RequestException as error:
                if not self.stop.is_set():
                    self.errors.append(str(error)[:120])
                    time.sleep(0.5)

    def close(self):
        self.stop.set()


def parse_counts(html):
    """The numbers of the board's #board-counts section, by todays_counts' names."""
    section = re.search(r'<section id="board-counts".*?</section>', html, re.S)
    if not section:
        return None
    counts = {}
    for label, value in re.findall(r"<dt>(.*?)</dt>\s*<dd>(.*?)</dd>", section.group(0), re.S):
        name = COUNT_NAMES.get(label.strip())
        if name in ("wait", "talk"):
            counts[name] = re.sub(r"<[^>]+>", "", value).strip()
        elif name:
            number = re.match(r"\s*(\d+)", value)
            counts[name] = int(number.group(1)) if number else None
    return counts


class Phone(ScriptedDevice):
    """tests/device.py's ScriptedDevice, noting when each event arrived (data["_t"]): a ring that
    came while the phone was on a call is ignored even when this script reads it a moment later."""

    def received(self, event, data):
        if isinstance(data, dict):
            data["_t"] = time.time()
        super().received(event, data)


class Desk:
    """One agent: signed in, page open, phone registered, available; answers every call that rings."""

    def __init__(self, base, name, password, talk, rng):
        self.base, self.name, self.talk, self.rng = base, name, talk, rng
        self.session = sign_in(base, name, password)
        page = self.session.get(base + "/", timeout=30).text
        self.csrf = re.search(r'"X-CSRFToken": "([^"]+)"', page).group(1)
        self.page = PageStream(base, self.session)
        token = self.session.get(base + "/token", timeout=30).json()["token"]
        self.device = Phone(base, token)
        if not self.device.id:
            sys.exit(f"{name}'s phone did not register: {self.device.status_code} {self.device.body}")
        # Every accept the sandbox took: {call_id, sid, t_ring, t_accept, t_end, ended_by}; ended_by
        # "canceled" when another phone's accept of the same caller won (the sandbox then cancels this leg).
        self.calls = []
        self.rung_while_busy = []  # {t, call_id, busy: the call the phone was on}
        self.rings = []  # (arrival time, call_id) of every incoming
        self.lost_races = 0  # accept answered 409: another phone took it, or it stopped ringing
        self.accept_errors = []
        self.hangup_errors = []
        self.made_available = 0
        self.stop = threading.Event()
        self.thread = None

    @property
    def accepted(self):
        """The calls this phone talked on (accepted, and not taken by another phone)."""
        return [c for c in self.calls if c["ended_by"] != "canceled"]

    def available(self):
        response = self.session.post(self.base + "/presence", data={
            "presence": "available", "phone_ready": "yes", "csrf_token": self.csrf},
            headers={"HX-Request": "true", "X-CSRFToken": self.csrf}, timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"{self.name}: POST /presence {response.status_code} {response.text[:200]}")
        self.made_available += 1

    def start(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        busy = None  # the call being talked on (a dict of self.calls)
        last = None  # the call before it, to tell a ring that arrived before its hang-up
        talk_until = 0
        events = self.device.events
        while not self.stop.is_set():
            try:
                event, data = events.get(timeout=min(max(0.0, talk_until - time.time()), 0.2) if busy else 0.2)
            except queue.Empty:
                event = data = None
            if event == "incoming":
                arrived = data["_t"]
                params = parse_qs((data.get("parameters") or {}).get("Params", ""))
                call_id = int(params.get("call_id", ["0"])[0])
                self.rings.append((arrived, call_id))
                on = busy or (last if last and last["t_end"] and arrived < last["t_end"] else None)
                if on:
                    self.rung_while_busy.append({"t": arrived, "call_id": call_id, "busy": on})
                    continue  # ignored, as the Voice SDK ignores incoming calls while busy
                try:
                    response = self.device.act(data["call_sid"], "accept")
                except requests.RequestException as error:
                    self.accept_errors.append(f"call {call_id}: {error}"[:160])
                    continue
                if response.status_code == 200:
                    busy = {"call_id": call_id, "sid": data["call_sid"], "t_ring": arrived, "t_accept": time.time(),
                            "t_end": None, "ended_by": None}
                    self.calls.append(busy)
                    talk_until = time.time() + self.rng.uniform(*self.talk)
                elif response.status_code == 409:
                    self.lost_races += 1
                else:
                    self.accept_errors.append(f"{response.status_code} {response.text[:100]}")
            elif event in ("hangup", "cancel") and busy and data.get("call_sid") == busy["sid"]:
                busy.update(t_end=data["_t"], ended_by="caller" if event == "hangup" else "canceled")
                last, busy = busy, None
            if busy and time.time() >= talk_until:
                hung_up = time.time()  # the phone is free from the click on
                try:
                    response = self.device.act(busy["sid"], "disconnect")
                except requests.RequestException as error:
                    self.hangup_errors.append(f"call {busy['call_id']}: {error}"[:160])
                    talk_until = time.time() + 0.5  # try again, as an agent clicks again
                    continue
                if response.status_code != 200:
                    self.hangup_errors.append(f"{response.status_code} {response.text[:100]}")
                busy.update(t_end=hung_up, ended_by="agent")
                last, busy = busy, None

    def close(self):
        self.stop.set()
        if self.thread:
            self.thread.join(timeout=5)
        self.device.close()
        self.page.close()


# --- watching the database while it runs -------------------------------------------------------

WAITING_SQL = ("SELECT count(*) FROM calls WHERE direction = 'inbound' AND agent_answered_at IS NULL "
               "AND handled_at IS NULL AND waiting_since IS NOT NULL AND agent_id IS NULL "
               "AND status NOT IN ('completed', 'busy', 'failed', 'no-answer', 'canceled')")


class Watcher:
    """Every 0.25 s, read-only: the queue's length; brings back an agent set away for a missed offer."""

    def __init__(self, db_path, desks):
        self.db_path, self.desks = db_path, {d.name: d for d in desks}
        self.max_waiting, self.max_waiting_at = 0, None
        self.samples = []  # (t, waiting)
        self.away_for_missed = Counter()
        self.offline_seen = Counter()
        self.errors = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        conn = read_only(self.db_path)
        try:
            while not self.stop.wait(0.25):
                try:
                    waiting = conn.execute(WAITING_SQL).fetchone()[0]
                    agents = conn.execute("SELECT username, presence, presence_reason FROM agents").fetchall()
                except sqlite3.Error as error:
                    self.errors.append(str(error))
                    continue
                t = time.time()
                self.samples.append((t, waiting))
                if waiting > self.max_waiting:
                    self.max_waiting, self.max_waiting_at = waiting, t
                for row in agents:
                    desk = self.desks.get(row["username"])
                    if desk is None:
                        continue
                    if row["presence"] == "offline":
                        self.offline_seen[desk.name] += 1
                    if row["presence"] == "away" and row["presence_reason"] == "missed an incoming call":
                        self.away_for_missed[desk.name] += 1
                        try:
                            desk.available()  # the agent reads the notice and clicks Available
                        except (RuntimeError, requests.RequestException) as error:
                            self.errors.append(str(error)[:200])
        finally:
            conn.close()


# --- the run --------------------------------------------------------------------------------------

def caller_plan(args):
    """[(kind, number)] in the order they ring in: give-ups and pressers spread among the talkers."""
    rng = random.Random(args.seed)
    special = rng.sample(range(args.callers), args.give_ups + args.presses)
    kinds = ["talks"] * args.callers
    for i, k in enumerate(special):
        kinds[k] = "gives up" if i < args.give_ups else "presses 1"
    return [(kind, f"+447700{k:04d}{TAILS[kind]}") for k, kind in enumerate(kinds)]


def prepare(args, instance, env):
    """Agents and a supervisor in a fresh database, and the sandbox account's credentials."""
    os.environ.update(env)
    from dialer import auth, create_app
    from dialer.db import connect
    app = create_app(instance_path=instance)
    db = connect(app.config["DATABASE"])
    password = "bench-" + secrets.token_urlsafe(18)
    names = [f"agent{i:02d}" for i in range(args.agents)]
    with app.app_context():
        for name in names:
            auth.create_agent(db, name, password, "agent")
        auth.create_agent(db, "supervisor", password, "supervisor")
    db.conn.close()
    with open(os.path.join(instance, "sandbox-credentials.json")) as f:
        creds = json.load(f)
    return app.config["DATABASE"], names, password, (creds["TWILIO_ACCOUNT_SID"], creds["TWILIO_AUTH_TOKEN"])


def run(args, tmp):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    instance = os.path.join(tmp, "instance")
    env = {key: value for key, value in os.environ.items() if not key.startswith("DIALER_")}
    env.update({
        "DIALER_INSTANCE_PATH": instance, "DIALER_BIND": f"127.0.0.1:{port}", "DIALER_PUBLIC_BASE_URL": base,
        "DIALER_WORKERS": "1", "DIALER_SANDBOX_TIME_SCALE": str(args.scale),
        "DIALER_WRAP_UP_SECONDS": str(args.wrap_up), "DIALER_PRESENCE_TICK_SECONDS": str(args.tick),
        "DIALER_VOICEMAIL_AFTER": str(args.voicemail_after), "DIALER_SANDBOX_CREATE_DEMO_AGENT": "false",
        "PYTHONUNBUFFERED": "1"})
    print(f"preparing {instance}: {args.agents} agents + 1 supervisor …", flush=True)
    db_path, names, password, account = prepare(args, instance, env)
    server = Server(env, os.path.join(tmp, "server.log"))
    results = {"log": server.log_path, "db": db_path}
    desks, board = [], None
    watcher = None
    try:
        server.wait_healthy()
        worker = server.workers(1)[0]
        rng = random.Random(args.seed)
        supervisor = sign_in(base, "supervisor", password)
        board = PageStream(base, supervisor)
        for name in names:
            desks.append(Desk(base, name, password, args.talk, random.Random(rng.random())))
        for desk in desks + [board]:
            stream = desk.page if isinstance(desk, Desk) else desk
            if not stream.opened.wait(15):
                sys.exit(f"an /events stream did not open: {stream.errors}")
        time.sleep(max(0.5, 2 * args.tick))  # a tick has seen the pages: heartbeats, away "phone not started"
        for desk in desks:
            desk.available()
            desk.start()
        conn = read_only(db_path)
        presences = dict(conn.execute("SELECT username, presence FROM agents").fetchall())
        conn.close()
        if any(presences[n] != "available" for n in names):
            sys.exit(f"not every agent is available: {presences}")
        watcher = Watcher(db_path, desks)

        plan = caller_plan(args)
        print(f"worker {worker}; {args.agents} agents available; {len(plan)} callers ringing in over "
              f"{args.seconds:g} s …", flush=True)
        rung = [None] * len(plan)  # (t_sent, status, call_sid or error)
        cpu_before = cpu_ticks(worker) + cpu_ticks(server.proc.pid)

        def ring_in(k, number):
            t = time.time()
            try:
                response = requests.post(base + "/sandbox/test/inbound", json={"from": number}, auth=account, timeout=30)
                sid = response.json().get("call_sid") if response.status_code == 201 else response.text[:200]
                rung[k] = (t, response.status_code, sid, time.time() - t)
            except requests.RequestException as error:
                rung[k] = (t, 0, str(error)[:200], time.time() - t)

        started = time.time()
        with ThreadPoolExecutor(max_workers=50) as pool:
            for k, (_, number) in enumerate(plan):
                time.sleep(max(0.0, started + k * args.seconds / len(plan) - time.time()))
                pool.submit(ring_in, k, number)
        results["ring_in_seconds"] = time.time() - started
        print(f"all rang in within {results['ring_in_seconds']:.1f} s; waiting for every call to end …", flush=True)

        # Every call ended (all terminal), then a little for the last recording callbacks.
        deadline = time.time() + args.timeout
        conn = read_only(db_path)
        last_report = 0
        while True:
            row = conn.execute("SELECT count(*), sum(status IN ('completed','busy','failed','no-answer','canceled')) "
                               "FROM calls WHERE direction = 'inbound'").fetchone()
            total, ended = row[0], row[1] or 0
            busy = any(c["t_end"] is None for d in desks for c in d.calls)
            if total >= len(plan) and ended == total and not busy:
                break
            if time.time() > deadline:
                print(f"TIMEOUT after {args.timeout:g} s: {ended}/{total} inbound calls ended", flush=True)
                results["timed_out"] = True
                break
            if time.time() - last_report > 10:
                waiting = conn.execute(WAITING_SQL).fetchone()[0]
                print(f"  {time.time() - started:5.0f} s: {ended}/{total} ended, {waiting} waiting in the queue",
                      flush=True)
                last_report = time.time()
            time.sleep(0.25)
        conn.close()
        results["all_ended_seconds"] = time.time() - started
        results["server_cpu"] = (cpu_ticks(worker) + cpu_ticks(server.proc.pid) - cpu_before) / CLK_TCK
        time.sleep(max(1.0, 40 * args.scale))  # recording callbacks come a simulated second or two later
        watcher.stop.set()

        # The board, as the supervisor sees it now, and the database at the same moment.
        page = supervisor.get(base + "/board", timeout=30)
        results["board_status"] = page.status_code
        conn = read_only(db_path)
        results["db_counts"] = db_counts(conn)
        results["board_counts"] = parse_counts(page.text)
        results["stream_counts"] = board.last_counts
        results["rung"] = rung
        results["plan"] = plan
        results["calls"] = [dict(r) for r in conn.execute("SELECT * FROM calls WHERE direction = 'inbound' ORDER BY id")]
        results["queue_events"] = conn.execute(
            "SELECT call_id, json_extract(params, '$.QueueResult'), json_extract(params, '$.QueueTime') "
            "FROM call_events WHERE source = 'queue'").fetchall()
        results["result_events"] = conn.execute(
            "SELECT call_id, source, status FROM call_events WHERE source = 'dial-result' "
            "OR (source = 'queue' AND status != 'waiting')").fetchall()
        results["agent_events"] = conn.execute(
            "SELECT call_id, status, json_extract(params, '$.To') FROM call_events WHERE source = 'agent'").fetchall()
        results["agents"] = {r["id"]: r["username"] for r in conn.execute("SELECT id, username FROM agents")}
        # Callers offered to an agent after they left the queue for the voicemail (QueueResult=leave).
        results["offered_after_leave"] = [tuple(r) for r in conn.execute(
            "SELECT o.call_id, l.received_at, o.received_at FROM call_events o JOIN call_events l ON l.call_id = o.call_id "
            "AND l.source = 'queue' AND l.status = 'leave' AND l.id < o.id WHERE o.source = 'offer' GROUP BY o.call_id")]
        results["presence_changes"] = [dict(r) for r in conn.execute(
            "SELECT agents.username, presence_changes.presence, reason, presence_changes.created_at, by FROM presence_changes "
            "JOIN agents ON agents.id = agent_id ORDER BY presence_changes.id")]
        conn.close()
        results["wall"] = time.time() - started
    finally:
        if watcher:
            watcher.stop.set()
        for desk in desks:
            desk.close()
        if board:
            board.close()
        server.stop()
    results["desks"] = desks
    results["watcher"] = watcher
    results["board_errors"] = board.errors if board else []
    return results


def db_counts(conn):
    """todays_counts' figures, computed here from the rows (the centre's day, as the board)."""
    from zoneinfo import ZoneInfo

    from dialer.calls import start_of_today
    from dialer.config import Config
    today = start_of_today(ZoneInfo(Config.TIME_ZONE))
    rows = [dict(r) for r in conn.execute("SELECT * FROM calls WHERE created_at >= ?", [today])]
    terminal = ("completed", "busy", "failed", "no-answer", "canceled")
    inbound = [r for r in rows if r["direction"] == "inbound"]
    outbound = [r for r in rows if r["direction"] != "inbound"]
    waits, talks = [], []
    for r in rows:
        end = r["ended_at"] or now_iso()
        if r["answered_at"] and (r["agent_answered_at"] or r["ended_at"]):
            waits.append(max(0, int(seconds_between(r["answered_at"], r["agent_answered_at"] or end))))
        if r["agent_answered_at"]:
            talk = max(0, int(seconds_between(r["agent_answered_at"], end)))
            if talk:
                talks.append(talk)
    return {
        "placed": len(outbound), "answered": sum(bool(r["answered_at"]) for r in outbound),
        "missed": sum(r["status"] == "completed" and r["dial_result"] in ("no-answer", "busy", "failed", "canceled")
                      for r in outbound),
        "called_in": len(inbound), "answered_in": sum(bool(r["agent_answered_at"]) for r in inbound),
        "missed_in": sum(r["status"] in terminal and not r["agent_answered_at"] for r in inbound),
        "waiting": conn.execute(WAITING_SQL).fetchone()[0],
        "wait": mmss(sum(waits) / len(waits)) if waits else "—",
        "talk": mmss(sum(talks) / len(talks)) if talks else "—",
    }


# --- the checks and the summary ---------------------------------------------------------------------

def analyse(args, r):
    from dialer import calls as call_rules
    out = {}
    plan, rung, rows = r["plan"], r["rung"], r["calls"]
    by_sid = {row["customer_call_sid"]: row for row in rows}
    kind_of = {}
    out["ring_in_errors"] = [(plan[k][1], x[1], x[2]) for k, x in enumerate(rung) if not x or x[1] != 201]
    out["ring_in_ms"] = [x[3] * 1000 for x in rung if x]
    missing_rows = []
    for k, x in enumerate(rung):
        if x and x[1] == 201:
            row = by_sid.get(x[2])
            if row is None:
                missing_rows.append(plan[k][1])
            else:
                kind_of[row["id"]] = (plan[k][0], x[0])
    out["missing_rows"] = missing_rows
    out["extra_rows"] = [row["id"] for row in rows if row["id"] not in kind_of]

    # Outcomes.
    outcome = {row["id"]: call_rules.outcome(row) for row in rows}
    out["outcomes"] = Counter(outcome.values())
    out["not_terminal"] = [(row["id"], row["status"], outcome[row["id"]]) for row in rows
                           if not call_rules.is_terminal(row["status"])]
    out["unknown_outcome"] = [(row["id"], row["status"], outcome[row["id"]]) for row in rows
                              if outcome[row["id"]] not in OUTCOMES]
    by_kind = defaultdict(Counter)
    unexpected = []
    for call_id, (kind, _) in kind_of.items():
        by_kind[kind][outcome[call_id]] += 1
        if outcome[call_id] not in ALLOWED[kind]:
            unexpected.append((call_id, kind, outcome[call_id]))
    out["by_kind"], out["unexpected"] = by_kind, unexpected

    # The phones' view against the database's.
    desks = r["desks"]
    accepted = {}
    double = []
    for desk in desks:
        for a in desk.accepted:
            if a["call_id"] in accepted:
                double.append(a["call_id"])
            accepted[a["call_id"]] = (desk.name, a)
    agents = r["agents"]
    answered_rows = {row["id"]: row for row in rows if row["agent_answered_at"]}
    out["accepted_not_answered"] = sorted(set(accepted) - set(answered_rows))
    out["answered_not_accepted"] = sorted(set(answered_rows) - set(accepted))
    out["wrong_agent"] = [(cid, accepted[cid][0], agents.get(row["agent_id"])) for cid, row in answered_rows.items()
                          if cid in accepted and agents.get(row["agent_id"]) != accepted[cid][0]]
    out["double_accept"] = double
    rang_in = {cid: t for cid, (_, t) in kind_of.items()}
    rung = [{"agent": d.name, "call_id": b["call_id"], "on_call_id": b["busy"]["call_id"],
             "since_accept": round(b["t"] - b["busy"]["t_accept"], 3), "canceled": b["busy"]["ended_by"] == "canceled",
             "since_call_in": round(b["t"] - rang_in.get(b["call_id"], float("nan")), 3)}
            for d in desks for b in d.rung_while_busy]
    out["rung_while_busy"] = [b for b in rung if not b["canceled"]]
    out["rung_while_accepting"] = [b for b in rung if b["canceled"]]
    out["accepted_then_canceled"] = sum(c["ended_by"] == "canceled" for d in desks for c in d.calls)
    out["lost_races"] = sum(d.lost_races for d in desks)
    out["rings"] = sum(len(d.rings) for d in desks)
    out["accept_errors"] = [e for d in desks for e in d.accept_errors]
    out["hangup_errors"] = [e for d in desks for e in d.hangup_errors]
    out["per_agent"] = {d.name: len(d.accepted) for d in desks}
    out["ended_by_caller"] = sum(a["ended_by"] == "caller" for d in desks for a in d.accepted)
    # Wrap-up: from the end of one call to the phone's next ring.
    gaps = []
    for d in desks:
        for call in d.accepted:
            later = [(t, cid) for t, cid in d.rings if call["t_end"] and t > call["t_end"]]
            if later:
                gaps.append((round(later[0][0] - call["t_end"], 3), d.name, call["call_id"], later[0][1],
                             round(later[0][0] - rang_in.get(later[0][1], float("nan")), 3)))
    out["wrap_gaps"] = sorted(gaps)

    # Wait in the queue: the sandbox's QueueTime, summed over each caller's stints (one per QueueResult).
    queue_sim = defaultdict(float)
    stints = Counter()
    for call_id, result, waited in r["queue_events"]:
        if result and waited is not None:
            queue_sim[call_id] += float(waited)
            stints[call_id] += 1
    queued = [row for row in rows if row["queued_at"]]
    out["queued"] = len(queued)
    out["requeued"] = sum(1 for n in stints.values() if n > 1)
    out["queue_sim"] = [queue_sim[row["id"]] for row in queued]
    out["queue_sim_answered"] = [queue_sim[row["id"]] for row in queued if row["agent_answered_at"]]
    out["queue_db_answered"] = [seconds_between(row["queued_at"], row["agent_answered_at"])
                                for row in queued if row["agent_answered_at"]]
    out["to_answer"] = [accepted[cid][1]["t_accept"] - kind_of[cid][1] for cid in answered_rows
                        if cid in accepted and cid in kind_of]
    out["not_queued_answered"] = sum(1 for row in rows if row["agent_answered_at"] and not row["queued_at"])
    # Offers that rang out (no-answer or busy on a <Client> leg), per call: how an inversion came about.
    rang_out = Counter(call_id for call_id, status, _ in r["agent_events"] if status in ("no-answer", "busy"))
    out["legs_rang_out"] = sum(rang_out.values())

    # First come, first served among the queued callers the phones answered.
    order = sorted(((accepted[row["id"]][1]["t_accept"], row) for row in queued if row["id"] in accepted),
                   key=lambda x: x[0])
    inversions = []
    for i, (t_i, a) in enumerate(order):
        for t_j, b in order[i + 1:]:
            if b["queued_at"] < a["queued_at"]:  # b queued earlier (another second), answered later
                inversions.append({"ahead": a["id"], "ahead_queued": a["queued_at"], "behind": b["id"],
                                   "behind_queued": b["queued_at"], "queued_apart": seconds_between(b["queued_at"], a["queued_at"]),
                                   "answered_apart": t_j - t_i, "behind_offers_rang_out": rang_out[b["id"]],
                                   "behind_stints": stints[b["id"]]})
    out["fcfs_pairs"] = len(order)
    out["inversions_strict"] = inversions
    # Answers less than a second apart are ties too: callers offered together (one claim_offers)
    # reach different phones a few ms apart.
    out["inversions"] = [i for i in inversions if i["answered_apart"] > 1]
    # Callers answered straight from ringing while someone queued in an earlier second still waited.
    jumps = []
    answer_time = {row["id"]: accepted[row["id"]][1]["t_accept"] for row in rows if row["id"] in accepted}
    for row in rows:
        if row["id"] in answer_time and not row["queued_at"]:
            t = answer_time[row["id"]]
            waiting = [q for q in queued if q["queued_at"] < row["created_at"]
                       and answer_time.get(q["id"], float("inf")) > t
                       and (not q["ended_at"] or q["ended_at"] > now_from(t))]
            if waiting:
                jumps.append((row["id"], row["created_at"], len(waiting), min(q["queued_at"] for q in waiting)))
    out["jumps"] = jumps

    # The board against the database.
    db, page, stream = r["db_counts"], r["board_counts"] or {}, r["stream_counts"] or {}
    out["board_diff"] = {k: (page.get(k), v) for k, v in db.items() if page.get(k) != v}
    out["stream_diff"] = {k: (stream.get(k), v) for k, v in db.items() if stream.get(k) != v}

    # The server's log.
    with open(r["log"], errors="replace") as f:
        text = f.read()
    statuses = Counter()
    fivexx = []
    for method, path, status in ACCESS.findall(text):
        statuses[status[0] + "xx"] += 1
        if status.startswith("5"):
            fivexx.append(f"{status} {method} {path}")
    out["statuses"] = statuses
    out["5xx"] = fivexx
    out["4xx"] = Counter(f"{s} {m} {short_path(p)}" for m, p, s in ACCESS.findall(text) if s.startswith("4"))
    out["paths"] = Counter(short_path(p) for _, p, _ in ACCESS.findall(text))
    requested = Counter()
    for _, path, _ in ACCESS.findall(text):
        found = re.match(r"/twiml/(inbound-dialed|queue-result)\?call=(\d+)", path)
        if found:
            requested[found.group(1), int(found.group(2))] += 1
    kept = Counter()
    for call_id, source, status in r["result_events"]:
        kept[source, call_id] += 1
    out["dial_results_dropped"] = {cid: n - kept["dial-result", cid] for (what, cid), n in requested.items()
                                   if what == "inbound-dialed" and n > kept["dial-result", cid]}
    out["queue_stints"] = Counter(n for (what, _), n in requested.items() if what == "queue-result")
    out["tracebacks"] = text.count("Traceback")
    out["error_lines"] = [line for line in text.splitlines() if re.search(r"\[(?:ERROR|CRITICAL)\]|\bERROR\b", line)]
    out["notices"] = Counter(code for code, _ in NOTICE.findall(text))
    out["notice_examples"] = {code: message for code, message in NOTICE.findall(text)}
    out["away_missed"] = sum(1 for p in r["presence_changes"] if p["reason"] == "missed an incoming call")
    out["offline"] = sum(1 for p in r["presence_changes"] if p["presence"] == "offline")
    return out


def short_path(path):
    """A request path without its query and ids: /twiml/status, /sandbox/devices/…/calls/…/accept."""
    path = path.split("?")[0]
    return re.sub(r"/devices/[^/]+(/calls/[^/]+)?", lambda m: "/devices/…" + ("/calls/…" if m.group(1) else ""), path)


def now_from(t):
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def report(args, r, a):
    scale = args.scale
    ok = []

    def check(passed, text):
        ok.append(passed)
        print(f"  [{'ok' if passed else 'FAIL'}] {text}")

    print()
    print(f"server: gunicorn -c gunicorn.conf.py app:app, sandbox, 1 gevent worker; time x{scale:g} "
          f"(1 simulated s = {scale * 1000:g} ms); WRAP_UP_SECONDS={args.wrap_up:g} (real), PRESENCE_TICK_SECONDS="
          f"{args.tick:g}, VOICEMAIL_AFTER={args.voicemail_after:g} simulated s ({args.voicemail_after * scale:g} s real), "
          f"INBOUND_RING_TIMEOUT 20 simulated s; {os.cpu_count()} cores shared with this client")
    kinds = Counter(kind for kind, _ in r["plan"])
    print(f"callers: {len(r['plan'])} ({', '.join(f'{n} {k}' for k, n in kinds.items())}) rang in within "
          f"{r['ring_in_seconds']:.1f} s; POST /sandbox/test/inbound p50 {pct(a['ring_in_ms'], 50):.0f} ms, "
          f"max {max(a['ring_in_ms'], default=float('nan')):.0f} ms; {len(a['ring_in_errors'])} refused")
    o = a["outcomes"]
    print(f"outcomes: answered {o['answered']}, voicemail {o['voicemail']}, abandoned {o['hung up in the queue']} "
          f"in the queue + {o['hung up while ringing']} while ringing, failed {o['failed']}"
          + "".join(f", {k} {v}" for k, v in o.items() if k not in OUTCOMES))
    for kind, counts in a["by_kind"].items():
        print(f"  {kind:9} -> " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    print(f"agents: calls answered per phone {a['per_agent']}; {a['rings']} rings, {a['lost_races']} accepts lost to "
          f"another phone (409); agents set away for a missed offer {a['away_missed']} times (Available clicked "
          f"again {sum(d.made_available - 1 for d in r['desks'])} times); set offline {a['offline']} times")
    sim, ans_sim, db_wait, to_answer = a["queue_sim"], a["queue_sim_answered"], a["queue_db_answered"], a["to_answer"]
    print(f"queue: {a['queued']} callers queued ({a['requeued']} more than once), {a['not_queued_answered']} answered "
          f"straight from ringing; max length seen {r['watcher'].max_waiting if r['watcher'] else '?'}")
    if sim:
        print(f"  wait in queue, all queued (QueueTime): p50 {pct(sim, 50):.0f} / p95 {pct(sim, 95):.0f} / max "
              f"{max(sim):.0f} simulated s = {pct(sim, 50) * scale:.1f} / {pct(sim, 95) * scale:.1f} / "
              f"{max(sim) * scale:.1f} s real")
    if ans_sim:
        print(f"  wait in queue, answered: p50 {pct(ans_sim, 50):.0f} / p95 {pct(ans_sim, 95):.0f} / max "
              f"{max(ans_sim):.0f} simulated s = {pct(ans_sim, 50) * scale:.1f} / {pct(ans_sim, 95) * scale:.1f} / "
              f"{max(ans_sim) * scale:.1f} s real; database queued_at -> agent_answered_at (1 s resolution) p50 "
              f"{pct(db_wait, 50):.0f} / p95 {pct(db_wait, 95):.0f} / max {max(db_wait):.0f} s")
    if to_answer:
        print(f"  ring-in POST -> phone accepted (client): p50 {pct(to_answer, 50):.1f} / p95 {pct(to_answer, 95):.1f} / "
              f"max {max(to_answer):.1f} s real")
    if a["wrap_gaps"]:
        g = [x[0] for x in a["wrap_gaps"]]
        print(f"  an agent's hang-up -> their next ring: min {min(g):.2f} / p50 {pct(g, 50):.2f} / max {max(g):.2f} s "
              f"(wrap-up {args.wrap_up:g} s + tick {args.tick:g} s)")
    print(f"server: worker+master CPU {r.get('server_cpu', float('nan')):.1f} s over {r.get('all_ended_seconds', float('nan')):.0f} s; "
          f"responses {dict(a['statuses'])}; sandbox notices by code {dict(a['notices'])}")
    print(f"  requests: {', '.join(f'{p} {n}' for p, n in a['paths'].most_common(6))}")
    print("checks:")
    check(not a["ring_in_errors"] and not a["missing_rows"] and not a["extra_rows"],
          f"every caller has one call row: {len(r['calls'])} rows for {len(r['plan'])} callers"
          + (f"; refused {a['ring_in_errors'][:3]}" if a["ring_in_errors"] else "")
          + (f"; no row for {a['missing_rows'][:5]}" if a["missing_rows"] else "")
          + (f"; rows of no caller {a['extra_rows'][:5]}" if a["extra_rows"] else ""))
    check(not r.get("timed_out") and not a["not_terminal"],
          f"every call ended: {len(a['not_terminal'])} not terminal" + (f" e.g. {a['not_terminal'][:5]}" if a["not_terminal"] else ""))
    check(not a["unknown_outcome"], f"every outcome is one of {', '.join(OUTCOMES)}"
          + (f": {len(a['unknown_outcome'])} not, e.g. {a['unknown_outcome'][:5]}" if a["unknown_outcome"] else ""))
    check(not a["unexpected"], "each caller's outcome fits its behaviour"
          + (f": {len(a['unexpected'])} do not, e.g. {a['unexpected'][:5]}" if a["unexpected"] else ""))
    check(not (a["accepted_not_answered"] or a["answered_not_accepted"] or a["wrong_agent"] or a["double_accept"]),
          f"the phones' accepted calls = the answered calls, same agent: accepted-not-answered "
          f"{a['accepted_not_answered'][:5]}, answered-not-accepted {a['answered_not_accepted'][:5]}, wrong agent "
          f"{a['wrong_agent'][:5]}, accepted twice {a['double_accept'][:5]}")
    # The app learns that an agent answered from that phone's own status callback: a ring chosen
    # between the accept and that callback's arrival cannot know (Twilio has the same window).
    racing = [b for b in a["rung_while_busy"] if b["since_accept"] <= ANSWER_RACE]
    busy = [b for b in a["rung_while_busy"] if b["since_accept"] > ANSWER_RACE]
    check(not busy, f"no phone rang while its agent was on a call (later than {ANSWER_RACE} s after the accept): "
          f"{len(busy)} rang" + (f"; accept -> that ring p50 {pct([b['since_accept'] for b in busy], 50):.2f} s, max "
                                 f"{max(b['since_accept'] for b in busy):.2f} s; e.g. {busy[:3]}" if busy else ""))
    print(f"  [info] rings chosen while an accept's status callback was on its way (within {ANSWER_RACE} s): "
          f"{len(racing)}" + (f", e.g. {racing[:2]}" if racing else ""))
    print(f"  [info] accepts that another phone's accept of the same caller beat (the sandbox then cancels): "
          f"{a['accepted_then_canceled']}; rings ignored meanwhile: {len(a['rung_while_accepting'])}")
    print(f"  [info] agent legs that rang out or were refused (no-answer, busy): {a['legs_rang_out']}")
    early = [g for g in a["wrap_gaps"] if g[0] < args.wrap_up - 1]
    check(not early, f"no agent rang before wrap-up ({args.wrap_up:g} s, 1 s resolution) ended: {len(early)}"
          + (f" e.g. {early[:3]}" if early else ""))
    inv = a["inversions"]
    strict = a["inversions_strict"]
    print(f"  [info] queued callers answered in an order against queued_at (different seconds): {len(strict)} pairs"
          + (f", answered apart max {max(i['answered_apart'] for i in strict):.2f} s" if strict else ""))
    check(not inv, f"first come, first served among {a['fcfs_pairs']} queued callers answered: {len(inv)} inversions "
          f"(queued in an earlier second, answered more than 1 s later)"
          + (f" (queued apart max {max(i['queued_apart'] for i in inv):.0f} s, answered apart max "
             f"{max(i['answered_apart'] for i in inv):.2f} s; e.g. {inv[:3]})" if inv else ""))
    dropped = a["dial_results_dropped"]
    check(not dropped, f"every <Dial> result reached the call: {sum(dropped.values())} POST /twiml/inbound-dialed kept as "
          f"no event (a repeat of an earlier offer's result) on {len(dropped)} calls" + (f", e.g. {dict(list(dropped.items())[:5])}" if dropped else ""))
    print(f"  [info] stints in the queue per caller (POST /twiml/queue-result per call): {dict(sorted(a['queue_stints'].items()))}")
    left = r["offered_after_leave"]
    both = [row["id"] for row in r["calls"] if row["voicemail_sid"] and row["agent_answered_at"]]
    check(not left, f"no caller offered to an agent after leaving the queue for the voicemail: {len(left)} were"
          + (f" ({len(both)} calls have both a voicemail and an agent's answer); e.g. (call, left, offered) {left[:4]}"
             if left else ""))
    jumps = a["jumps"]
    print(f"  [info] answered straight from ringing while an earlier-queued caller waited: {len(jumps)}"
          + (f" e.g. (call, created, waiting, oldest queued_at) {jumps[:3]}" if jumps else ""))
    check(r["board_status"] == 200 and not a["board_diff"],
          f"GET /board #board-counts = database: board {r['board_counts']} vs database {r['db_counts']}"
          + (f"; differ {a['board_diff']}" if a["board_diff"] else ""))
    check(not a["stream_diff"], "the board's event stream's last counts = database"
          + (f": differ {a['stream_diff']}" if a["stream_diff"] else ""))
    check(not a["5xx"], f"no 5xx: {len(a['5xx'])}" + (f" e.g. {Counter(a['5xx']).most_common(5)}" if a["5xx"] else ""))
    check(not a["tracebacks"] and not a["error_lines"],
          f"no tracebacks ({a['tracebacks']}) and no ERROR lines ({len(a['error_lines'])})"
          + (f" e.g. {a['error_lines'][:2]}" if a["error_lines"] else ""))
    if a["4xx"]:
        print(f"  [info] 4xx: {dict(a['4xx'].most_common(6))}")
    if a["notices"]:
        print(f"  [info] sandbox notices: {a['notice_examples']}")
    if a["accept_errors"] or a["hangup_errors"]:
        print(f"  [info] phone errors: accept {a['accept_errors'][:3]}, hang up {a['hangup_errors'][:3]}")
    print(f"wall time {r['wall']:.0f} s (ring-in to every call ended {r.get('all_ended_seconds', float('nan')):.0f} s); "
          f"server log {r['log']}")
    print("RESULT: " + ("all checks passed" if all(ok) else f"{ok.count(False)} of {len(ok)} checks FAILED"))
    return all(ok)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--callers", type=int, default=200)
    parser.add_argument("--agents", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10, help="the callers ring in within this many seconds")
    parser.add_argument("--scale", type=float, default=0.05, help="DIALER_SANDBOX_TIME_SCALE")
    parser.add_argument("--give-ups", type=int, default=10, help="callers who hang up 60 simulated s after calling in")
    parser.add_argument("--presses", type=int, default=5, help="callers who press 1 after 30 simulated s in the queue")
    parser.add_argument("--talk", type=float, nargs=2, default=(0.2, 1.0), metavar=("MIN", "MAX"),
                        help="real seconds an agent talks before hanging up")
    parser.add_argument("--wrap-up", type=float, default=2, help="DIALER_WRAP_UP_SECONDS (real)")
    parser.add_argument("--tick", type=float, default=0.25, help="DIALER_PRESENCE_TICK_SECONDS (real)")
    parser.add_argument("--voicemail-after", type=int, default=1800, help="DIALER_VOICEMAIL_AFTER (simulated s)")
    parser.add_argument("--timeout", type=float, default=300, help="real seconds to wait for every call to end")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (server log, database)")
    args = parser.parse_args()
    if args.give_ups + args.presses > args.callers:
        sys.exit("more give-ups and pressers than callers")
    tmp = tempfile.mkdtemp(prefix="dialer-bench-inbound-")
    passed = False
    try:
        results = run(args, tmp)
        passed = report(args, results, analyse(args, results))
    finally:
        if args.keep or not passed:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
