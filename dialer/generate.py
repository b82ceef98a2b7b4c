"""Synthetic call history for demos and benchmarks: `flask --app app calls generate N`.

Rows go straight into `calls` and `call_events`, shaped as the webhooks leave them (see
calls.apply_event), never into `events`: past calls are not news for the browsers watching live.
"""
import json
import random
import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import click
from flask import current_app
from flask.cli import AppGroup

from .calls import CALL_ERRORS
from .db import connect, writing

MAX_CALLS = 10_000_000
CHUNK = 20_000  # calls per transaction: the running app's writers get their turn in between
HOUR = 3600

# The share of each outcome (they add up to 1), and what a missed call's agent leg did.
OUTCOMES = (("talked", 0.65), ("missed", 0.10), ("busy", 0.10), ("no-answer", 0.08),
            ("failed", 0.04), ("canceled", 0.03))
MISSED_DIAL_RESULTS = (("no-answer", 0.6), ("canceled", 0.25), ("busy", 0.15))
INBOUND_SHARE = 0.03  # of the answered calls: the customer rang the centre
DISPOSITIONS = ("sale", "callback requested", "not interested", "wrong number", "voicemail left")
DISPOSITION_SHARE = 0.04  # of the talked calls: wrap-up notes are a later feature
EXTENSION_SHARE = 0.05
ERROR_CODES = (11200, 11205, 13224, 13227, 32009)  # a failed call says why this often:
ERROR_SHARE = 0.4
SIP_CODES = {"initiated": "100", "ringing": "180", "in-progress": "200", "completed": "200",
             "busy": "486", "no-answer": "487", "canceled": "487", "failed": "404"}

# How busy the centre is by local hour (0-23) and weekday (Monday first).
HOUR_WEIGHTS = (0.01, 0.01, 0.01, 0.01, 0.01, 0.02, 0.05, 0.2, 0.6, 1.0, 1.0, 0.95,
                0.7, 0.8, 1.0, 1.0, 0.9, 0.6, 0.3, 0.15, 0.08, 0.04, 0.02, 0.01)
DAY_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 0.95, 0.25, 0.08)

# Customer numbers (E.164): Ofcom's drama ranges mostly, other plausible UK numbers, and some US
# ones in the 555-01xx range kept for fiction. ((prefix, digits to add), share); None: a US number.
NUMBER_RANGES = ((("+442079460", 3), 0.35), (("+441614960", 3), 0.15), (("+447700900", 3), 0.20),
                 (("+44203", 7), 0.08), (("+441612", 6), 0.04), (("+44778", 7), 0.04), (("+44795", 7), 0.04),
                 (None, 0.10))
US_AREAS = ("202", "212", "305", "312", "415", "617", "646", "713")

CALL_COLUMNS = ("agent_id", "direction", "customer_number", "customer_extension", "status", "dial_result",
                "error_code", "error_message", "created_at", "answered_at", "ended_at", "duration",
                "customer_call_sid", "agent_call_sid", "agent_status", "agent_answered_at", "recording_sid",
                "recording_url", "recording_duration", "recording_channels", "disposition",
                "last_sequence_number")
INSERT_CALLS = (f"INSERT INTO calls ({', '.join(CALL_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(CALL_COLUMNS))})")
# An event's call is its place in the chunk; the chunk's first id is added in SQL (see _write).
INSERT_EVENTS = ("INSERT INTO call_events (call_id, source, call_sid, status, sequence_number, params, received_at) "
                 "VALUES (? + {first}, ?, ?, ?, ?, ?, ?)")

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _template(*names):
    """The JSON of a callback with these fields, as record_event writes it (sorted keys), to fill with %."""
    return json.dumps({name: f"%({name})s" for name in names}, sort_keys=True)


_COMMON = ("AccountSid", "ApiVersion", "CallSid", "CallStatus", "Called", "Caller", "Direction", "From", "To")
PROGRESS_JSON = _template(*_COMMON, "CallbackSource", "SequenceNumber", "SipResponseCode", "Timestamp")
FINAL_JSON = _template(*_COMMON, "CallbackSource", "SequenceNumber", "SipResponseCode", "Timestamp",
                       "CallDuration", "Duration")
FINAL_ERROR_JSON = _template(*_COMMON, "CallbackSource", "SequenceNumber", "SipResponseCode", "Timestamp",
                             "CallDuration", "Duration", "ErrorCode")
TWIML_JSON = _template(*_COMMON)
DIAL_JSON = _template(*_COMMON, "DialBridged", "DialCallSid", "DialCallStatus")
DIAL_TALKED_JSON = _template(*_COMMON, "DialBridged", "DialCallDuration", "DialCallSid", "DialCallStatus")


class Clock:
    """Epoch seconds to the text the database keeps: ISO-8601 UTC (as db.utcnow) and RFC 2822 (Twilio's Timestamp).

    The date part is worked out once a day: a million calls need some ten million timestamps.
    """

    def __init__(self):
        self.days = {}

    def _day(self, day):
        found = self.days.get(day)
        if found is None:
            d = datetime.fromtimestamp(day * 86400, timezone.utc)
            found = self.days[day] = (d.strftime("%Y-%m-%dT"),
                                      f"{WEEKDAYS[d.weekday()]}, {d.day:02d} {MONTHS[d.month - 1]} {d.year} ")
        return found

    def iso(self, t):
        day, rest = divmod(t, 86400)
        hours, rest = divmod(rest, 3600)
        return f"{self._day(day)[0]}{hours:02d}:{rest // 60:02d}:{rest % 60:02d}+00:00"

    def rfc(self, t):
        day, rest = divmod(t, 86400)
        hours, rest = divmod(rest, 3600)
        return f"{self._day(day)[1]}{hours:02d}:{rest // 60:02d}:{rest % 60:02d} +0000"


def busy_hours(now, days, zone):
    """The whole hours of the last `days` days, and cumulative weights that favour working hours in `zone`.

    The newest hour ends an hour or more before now, so every call has ended.
    """
    last = now - now % HOUR - 2 * HOUR
    starts = list(range(last - days * 24 * HOUR + HOUR, last + 1, HOUR))
    cumulative, total = [], 0.0
    for start in starts:
        local = datetime.fromtimestamp(start, zone)
        total += HOUR_WEIGHTS[local.hour] * DAY_WEIGHTS[local.weekday()]
        cumulative.append(total)
    return starts, cumulative


def _cumulative(pairs):
    values, weights, total = [], [], 0.0
    for value, share in pairs:
        total += share
        values.append(value)
        weights.append(total)
    return values, weights


class Generator:
    """Makes calls as the webhooks would have left them: the row, and 3-5 events of its timeline."""

    def __init__(self, agents, rng, now, days, zone, account_sid, caller_id, api_base_url):
        self.agents = agents  # [(id, username)]
        self.rng = rng
        self.clock = Clock()
        self.hours, self.hour_weights = busy_hours(now, days, zone)
        self.outcomes, self.outcome_weights = _cumulative(OUTCOMES)
        self.missed, self.missed_weights = _cumulative(MISSED_DIAL_RESULTS)
        self.ranges, self.range_weights = _cumulative(NUMBER_RANGES)
        self.account_sid, self.caller_id = account_sid, caller_id
        self.recordings = f"{api_base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Recordings/"

    def number(self):
        rng = self.rng
        picked = rng.choices(self.ranges, cum_weights=self.range_weights)[0]
        if picked is None:
            return f"+1{rng.choice(US_AREAS)}55501{rng.randrange(100):02d}"
        prefix, digits = picked
        if digits == 3:  # the last three digits of a drama range
            return f"{prefix}{rng.randrange(1000):03d}"
        return f"{prefix}{rng.randrange(2 * 10 ** (digits - 1), 10 ** digits)}"  # no local number starts 0 or 1

    def sid(self, prefix):
        return f"{prefix}{self.rng.getrandbits(128):032x}"

    def chunk(self, count):
        """`count` calls, oldest first: (call rows, event rows whose call is the row's place in the list)."""
        rng = self.rng
        starts = rng.choices(self.hours, cum_weights=self.hour_weights, k=count)
        moments = sorted(start + rng.randrange(HOUR) for start in starts)
        outcomes = rng.choices(self.outcomes, cum_weights=self.outcome_weights, k=count)
        rows, events = [], []
        for index, (created, outcome) in enumerate(zip(moments, outcomes)):
            rows.append(self.call(index, created, outcome, events))
        return rows, events

    def call(self, index, created, outcome, events):
        """One call's row; its events are appended to `events`."""
        rng, iso, rfc = self.rng, self.clock.iso, self.clock.rfc
        agent_id, username = rng.choice(self.agents)
        number = self.number()
        extension = str(rng.randrange(10, 10000)) if rng.random() < EXTENSION_SHARE else None
        sid = self.sid("CA")
        answered = outcome in ("talked", "missed")
        inbound = answered and rng.random() < INBOUND_SHARE
        fields = {"AccountSid": self.account_sid, "ApiVersion": "2010-04-01", "CallSid": sid,
                  "Direction": "inbound" if inbound else "outbound-api",
                  "From": number if inbound else self.caller_id, "To": self.caller_id if inbound else number,
                  "CallbackSource": "call-progress-events"}
        fields["Caller"], fields["Called"] = fields["From"], fields["To"]
        sequence = -1

        def status(status, at, template=PROGRESS_JSON, **extra):
            nonlocal sequence
            sequence += 1
            fields.update(CallStatus=status, SequenceNumber=sequence, SipResponseCode=SIP_CODES[status],
                          Timestamp=rfc(at), **extra)
            events.append((index, "status", sid, status, sequence, template % fields, iso(at)))

        dial_result = error_code = error_message = answered_at = agent_call_sid = agent_status = None
        agent_answered_at = recording_sid = recording_url = recording_duration = channels = disposition = None
        if inbound:
            answered_at = created + 1  # the centre's number answers with the hold message at once
            fields["CallStatus"] = "ringing"
            events.append((index, "twiml", sid, "ringing", None, TWIML_JSON % fields, iso(created)))
        else:
            events.append((index, "app", None, "queued", None,
                           json.dumps({"action": "created", "To": number}, sort_keys=True), iso(created)))
            status("initiated", created)
            if outcome != "failed" and (outcome != "busy" or rng.random() < 0.5):
                status("ringing", created + 1)
            if answered:
                answered_at = created + rng.randint(3, 25)
                status("in-progress", answered_at)

        if outcome == "talked":
            dial_result = agent_status = "completed"
            agent_call_sid = self.sid("CA")
            agent_answered = answered_at + int(rng.triangular(2, 40, 6))
            talk = min(900, max(20, int(rng.lognormvariate(4.7, 0.8))))
            ended = agent_answered + talk
            agent_answered_at = iso(agent_answered)
            recording_sid = self.sid("RE")
            recording_url, recording_duration, channels = self.recordings + recording_sid, talk, 2
            if rng.random() < DISPOSITION_SHARE:
                disposition = rng.choice(DISPOSITIONS)
        elif outcome == "missed":
            dial_result = agent_status = rng.choices(self.missed, cum_weights=self.missed_weights)[0]
            agent_call_sid = self.sid("CA")
            if dial_result == "no-answer":  # the agent's phone rang out (DIAL_TIMEOUT), then the apology
                ended = answered_at + rng.randint(48, 55)
            elif dial_result == "busy":
                ended = answered_at + rng.randint(6, 12)
            else:  # the customer gave up waiting
                ended = answered_at + int(rng.triangular(2, 40, 10))
        elif outcome == "no-answer":
            ended = created + rng.randint(58, 63)  # Twilio's ring timeout
        elif outcome == "canceled":  # the agent hung up while the customer's phone rang
            ended = created + rng.randint(4, 20)
            events.append((index, "app", None, "hangup-requested", None,
                           json.dumps({"action": "hangup", "by": username}, sort_keys=True), iso(ended)))
        else:  # busy, failed
            ended = created + rng.randint(2, 8)

        duration = ended - answered_at if answered_at else 0
        final = "completed" if answered else outcome
        if inbound:  # the <Dial> action: how the agent's leg ended (outbound calls keep to 5 events)
            fields.update(CallStatus="in-progress", DialCallSid=agent_call_sid, DialCallStatus=dial_result,
                          DialBridged="true" if dial_result == "completed" else "false")
            params = (DIAL_TALKED_JSON % dict(fields, DialCallDuration=ended - agent_answered)
                      if dial_result == "completed" else DIAL_JSON % fields)
            events.append((index, "dial-result", sid, dial_result, None, params, iso(ended)))
        if outcome == "failed" and rng.random() < ERROR_SHARE:
            error_code = rng.choice(ERROR_CODES)
            error_message = CALL_ERRORS.get(error_code, f"Twilio reported error {error_code} on this call.")
            status(final, ended, FINAL_ERROR_JSON, CallDuration=0, Duration=0, ErrorCode=error_code)
        else:
            status(final, ended, FINAL_JSON, CallDuration=duration, Duration=-(-duration // 60))

        return (agent_id, "inbound" if inbound else "outbound", number, extension, final, dial_result,
                error_code, error_message, iso(created), answered_at and iso(answered_at), iso(ended), duration,
                sid, agent_call_sid, agent_status, agent_answered_at, recording_sid, recording_url,
                recording_duration, channels, disposition, sequence)


def _write(db, rows, events):
    """One chunk in one write transaction: the calls get the next ids SQLite gives, their events follow."""
    with writing(db):
        first = db.execute("SELECT coalesce(max(id), 0) + 1 FROM calls").fetchone()[0]
        db.conn.executemany(INSERT_CALLS, rows)
        # Without AUTOINCREMENT SQLite gives each new row max(id) + 1; we hold the write lock, so
        # the chunk's ids run on from `first`. Checked, so a surprise cannot file events under the wrong call.
        last = db.execute("SELECT max(id) FROM calls").fetchone()[0]
        if last != first + len(rows) - 1:
            raise RuntimeError(f"calls got ids {first}..{last}, not {len(rows)} in a row; nothing was kept")
        db.conn.executemany(INSERT_EVENTS.format(first=int(first)), events)


def generate(db, count, agents, seed=None, days=365, zone=ZoneInfo("Europe/London"), account_sid=None,
             caller_id="+15005550006", api_base_url="https://api.twilio.com", progress=None):
    """Write `count` synthetic calls for `agents` ([(id, username)]); returns (calls, events) written."""
    rng = random.Random(seed)
    generator = Generator(agents, rng, int(time.time()), days, zone, account_sid or f"AC{rng.getrandbits(128):032x}",
                          caller_id, api_base_url)
    db.execute(f"PRAGMA cache_size = {-256 * 1024}")  # KiB: the indexes on created_at and the SIDs take random inserts
    written = events_written = 0
    while written < count:
        rows, events = generator.chunk(min(CHUNK, count - written))
        _write(db, rows, events)
        written += len(rows)
        events_written += len(events)
        if progress:
            progress(written, events_written)
    return written, events_written


# --- CLI -----------------------------------------------------------------------------------

calls_cli = AppGroup("calls", help="Work with the call history.")


def _agents(db, username):
    if username is not None:
        found = db.execute("SELECT id, username FROM agents WHERE username = ?", [username]).fetchall()
        if not found:
            raise click.ClickException(f"There is no agent called {username!r} (see: flask --app app agents list).")
        return found
    found = db.execute("SELECT id, username FROM agents ORDER BY id").fetchall()
    if not found:
        raise click.ClickException("There are no agents to give the calls to: create one first with "
                                   "flask --app app agents create NAME")
    return found


@calls_cli.command("generate")
@click.argument("count", type=int, metavar="N")
@click.option("--agent", "username", help="Give every call to this agent (default: spread over all agents).")
@click.option("--seed", type=int, help="Make the same calls again (default: different every time).")
@click.option("--days", type=click.IntRange(1, 3650), default=365, show_default=True,
              help="Spread the calls over this many past days.")
def generate_command(count, username, seed, days):
    """Fill the history with N realistic synthetic calls and their events (demos, benchmarks)."""
    if not 1 <= count <= MAX_CALLS:
        raise click.ClickException(f"Give a number of calls from 1 to {MAX_CALLS:,}, not {count:,}.")
    cfg = current_app.config
    db = connect(cfg["DATABASE"])
    try:
        agents = _agents(db, username)
        started = time.monotonic()

        def progress(calls, events):
            if calls < count:
                click.echo(f"{calls:,} of {count:,} calls, {events:,} events ({time.monotonic() - started:.0f} s)")

        try:
            calls, events = generate(
                db, count, agents, seed=seed, days=days, zone=ZoneInfo(cfg.get("TIME_ZONE") or "Europe/London"),
                account_sid=cfg.get("TWILIO_ACCOUNT_SID"), caller_id=cfg.get("TWILIO_CALLER_ID") or "+15005550006",
                api_base_url=cfg.get("TWILIO_API_BASE_URL") or "https://api.twilio.com", progress=progress)
        except KeyboardInterrupt:  # the chunk being written is rolled back by `writing`
            raise click.ClickException("Stopped: the chunks already committed stay; the one being written was undone.")
    finally:
        db.conn.close()
    click.echo(f"generated {calls:,} calls and {events:,} events in {time.monotonic() - started:.0f} s")
