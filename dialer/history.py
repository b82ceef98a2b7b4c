"""Past calls: the history list (filters, keyset pages), one call's page with its timeline, its recording."""
import csv
import functools
import io
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import phonenumbers
from flask import Blueprint, Response, abort, current_app, redirect, request, stream_with_context, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import SelectField, TextAreaField
from wtforms.validators import Length, Optional

from . import calls, params, telephony
from .db import EVERYONE, get_db
from .pages import render

bp = Blueprint("history", __name__)

PAGE_SIZE = 50
MAX_NOTES = 2000  # characters of wrap-up notes
FEW_MATCHES = 2000  # a number search with fewer matches than this reads them through the index
AGENT_INDEX_DIGITS = 7  # an agent's search for fewer digits than this reads their calls' own index
MAX_QUERY = 40  # characters of a number search; a phone number with spaces and an extension fits
# What the outcome filter offers, in the words the pages use, and what each means in the table
# (`+calls.status`: not through the status index; the newest-first scan finds a page sooner).
OUTCOMES = {
    "talked": ("talked", "+calls.status = 'completed' AND (calls.dial_result IS NULL OR calls.dial_result = 'completed')"),
    "missed": ("missed by agent", "+calls.status = 'completed' AND calls.dial_result IN "
                                  "('no-answer', 'busy', 'failed', 'canceled')"),
    "busy": ("busy", "+calls.status = 'busy'"),
    "no-answer": ("no answer", "+calls.status = 'no-answer'"),
    "failed": ("failed", "+calls.status = 'failed'"),
    "canceled": ("canceled", "+calls.status = 'canceled'"),
    # Few calls are live: through the status index, then sorted.
    "live": ("not ended yet", f"calls.status IN ({', '.join(repr(s) for s in calls.PROGRESS)})"),
}
DIRECTIONS = {"outbound": "outbound", "inbound": "inbound"}
CURSOR = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00)~(\d{1,18})$")


@dataclass
class Filters:
    """The history's query parameters, checked; `problems` holds a sentence per bad value."""
    q: str = ""
    digits: str = ""
    outcome: str = ""
    direction: str = ""
    agent: str = ""
    start: str = ""  # the `from` parameter (a keyword in Python)
    end: str = ""
    cursor: tuple = None
    problems: list = field(default_factory=list)

    def params(self, **changes):
        """The query string of this view (for links and the CSV), with `changes` applied."""
        values = {"q": self.q, "outcome": self.outcome, "direction": self.direction, "agent": self.agent,
                  "from": self.start, "to": self.end, **changes}
        return urlencode({key: value for key, value in values.items() if value})


def search_digits(text, region):
    """The digits to look for in an E.164 number: a whole number people write as they like
    ('(020) 7946-0031', '+44 20 7946 0031') becomes its E.164 digits; a part ('460031') stays as typed."""
    try:
        number = phonenumbers.parse(text, region)
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]
    except phonenumbers.NumberParseException:
        pass
    digits = re.sub(r"\D", "", text)
    # The start of a number as dialled at home ("0161 496"): the country code stands for the trunk 0.
    prefix = phonenumbers.country_code_for_region(region)
    trunk = phonenumbers.PhoneMetadata.metadata_for_region(region).national_prefix if prefix else None
    if trunk and digits.startswith(trunk) and not text.lstrip().startswith(("+", "00")):
        digits = f"{prefix}{digits[len(trunk):]}"
    return digits


def read_filters(args, region):
    """Check each parameter; a bad one is dropped from the query and named in a sentence."""
    f = Filters()
    f.q = args.get("q", "").strip()
    if len(f.q) > MAX_QUERY:
        f.problems.append(f"A number search is at most {MAX_QUERY} characters.")
        f.q = ""
    elif f.q:
        f.digits = search_digits(f.q, region)
        if len(f.digits) < 4:
            f.problems.append("Type at least 4 digits of the number to search for it.")
            f.digits = ""
    f.outcome = args.get("outcome", "")
    if f.outcome and f.outcome not in OUTCOMES:
        f.problems.append("That outcome is not one the history knows; choose one from the list.")
        f.outcome = ""
    f.direction = args.get("direction", "")
    if f.direction and f.direction not in DIRECTIONS:
        f.problems.append("Direction is outbound or inbound.")
        f.direction = ""
    f.agent = args.get("agent", "").strip()[:64]
    for name, attribute in (("from", "start"), ("to", "end")):
        value = args.get(name, "").strip()
        if value and not _date(value):
            f.problems.append(f"“{value[:20]}” is not a date: use YYYY-MM-DD, such as 2026-11-25.")
            value = ""
        setattr(f, attribute, value)
    cursor = args.get("cursor", "")
    if cursor:
        match = CURSOR.match(cursor)
        if match and _moment(match.group(1)):
            f.cursor = (match.group(1), int(match.group(2)))
        else:
            f.problems.append("That page link is damaged; showing the newest calls instead.")
    return f


def _date(text):
    try:
        return date.fromisoformat(text) if re.fullmatch(r"\d{4}-\d\d-\d\d", text) else None
    except ValueError:
        return None


def _moment(text):
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _utc_bound(day, zone, next_day=False):
    """Midnight at the start of `day` (or of the day after) in the centre's time zone, as UTC text."""
    start = datetime.combine(_date(day) + timedelta(days=1 if next_day else 0), time(), tzinfo=zone)
    return start.astimezone(ZoneInfo("UTC")).isoformat(timespec="seconds")


def _where(db, agent, f, zone):
    """The SQL conditions (and their arguments) for the calls this person may see that match `f`."""
    where, args = [], []
    through_index = False
    if f.digits:
        # Few matches: the trigram index names them. Many (a common run of digits): reading the
        # newest calls until a page is full is quicker than gathering every match first. An
        # agent's own calls are read from the (agent, created_at, id, number) index alone, so
        # unless the digits are many (a rare run, which the trigram index finds at once), that
        # read is cheaper than asking the trigram index how many match (~1 ms at a million calls).
        phrase = f'"{f.digits}"'
        if not agent.is_supervisor and len(f.digits) < AGENT_INDEX_DIGITS:
            found = FEW_MATCHES
        else:
            found = db.execute("SELECT count(*) FROM (SELECT rowid FROM calls_numbers WHERE calls_numbers MATCH ? "
                               "LIMIT ?)", [phrase, FEW_MATCHES]).fetchone()[0]
        through_index = found < FEW_MATCHES
        if through_index:
            where.append("calls.id IN (SELECT rowid FROM calls_numbers WHERE calls_numbers MATCH ?)")
            args.append(phrase)
        else:
            where.append("calls.customer_number LIKE ?")
            args.append(f"%{f.digits}%")
    if not agent.is_supervisor:
        # Matches found through the index lead; `+` keeps SQLite from walking the agent's every call.
        where.append("+calls.agent_id = ?" if through_index else "calls.agent_id = ?")
        args.append(agent.id)
    elif f.agent:
        where.append("agents.username = ?")
        args.append(f.agent)
    if f.outcome:
        where.append(OUTCOMES[f.outcome][1])
    if f.direction:
        where.append("calls.direction = ?")
        args.append(f.direction)
    if f.start:
        where.append("calls.created_at >= ?")
        args.append(_utc_bound(f.start, zone))
    if f.end:
        where.append("calls.created_at < ?")
        args.append(_utc_bound(f.end, zone, next_day=True))
    return where, args


def find_calls(db, agent, f, zone, limit=PAGE_SIZE):
    """One page of the calls this person may see that match the filters, newest first (keyset)."""
    where, args = _where(db, agent, f, zone)
    if f.cursor:
        where.append("(calls.created_at < ? OR (calls.created_at = ? AND calls.id < ?))")
        args += [f.cursor[0], f.cursor[0], f.cursor[1]]
    sql = ("SELECT calls.*, coalesce(agents.display_name, agents.username) AS agent_name, agents.username "
           "FROM calls LEFT JOIN agents ON agents.id = calls.agent_id"
           + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY calls.created_at DESC, calls.id DESC LIMIT ?")
    rows = list(db.query(sql, [*args, limit + 1]))
    more = len(rows) > limit
    return rows[:limit], more


CHART_DAYS = 14  # the chart's days when no dates are chosen (and at most CHART_MAX_DAYS)
CHART_MAX_DAYS = 62


def calls_per_day(db, agent, f, zone):
    """For the chart: per local day of the filtered range, calls talked, missed by agent, not reached.

    Read from the hourly rollup (call_hours): the range, the agent and the direction narrow it;
    a number or outcome filter narrows the list below, not the picture of the days.
    """
    today = datetime.now(zone).date()
    last = _date(f.end) or (min(_date(f.start) + timedelta(days=CHART_DAYS - 1), today) if f.start else today)
    first = _date(f.start) or last - timedelta(days=CHART_DAYS - 1)
    first = max(first, last - timedelta(days=CHART_MAX_DAYS - 1))
    where = ["hour >= ?", "hour < ?"]
    args = [_utc_bound(first.isoformat(), zone)[:13], _utc_bound(last.isoformat(), zone, next_day=True)[:13]]
    if not agent.is_supervisor:
        where.append("agent_id = ?")
        args.append(agent.id)
    elif f.agent:
        where.append("agent_id = (SELECT id FROM agents WHERE username = ?)")
        args.append(f.agent)
    else:
        where.append("agent_id = ?")  # the whole centre's row of each hour
        args.append(EVERYONE)
    if f.direction:
        where.append("direction = ?")
        args.append(f.direction)
    rows = db.execute("SELECT hour, sum(talked), sum(missed), sum(other) FROM call_hours WHERE "
                      + " AND ".join(where) + " GROUP BY hour", args).fetchall()
    days = {first + timedelta(days=n): [0, 0, 0] for n in range((last - first).days + 1)}
    for hour, talked, missed, other in rows:
        day = _local_day(hour, zone)
        if day in days:
            for index, count in enumerate((talked, missed, other)):
                days[day][index] += count
    return [(day, *counts) for day, counts in days.items()]


@functools.lru_cache(maxsize=4096)  # a chart has up to 62 x 24 hours, the same ones page after page
def _local_day(hour, zone):
    """The local day of a UTC hour ("2026-07-01T23"): zones are whole hours here."""
    return datetime.fromisoformat(hour + ":00:00+00:00").astimezone(zone).date()


CSV_COLUMNS = ("call_id", "started_at", "agent", "direction", "customer_number", "extension", "outcome",
               "status", "agent_leg", "answered_at", "ended_at", "wait_seconds", "talk_seconds", "duration_seconds",
               "recording", "disposition", "notes", "problem",
               "queued_at", "voicemail_seconds", "called_back_by", "called_back_at")  # customers calling in
CSV_CHUNK = 1000  # rows read per query: memory stays flat and no query holds a worker for long


def _cell(value):
    """Text a spreadsheet would run as a formula (=, +, -, @ first) is kept as text."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv_row(call):
    wait, talk = calls.wait_and_talk(call)
    return [call["id"], call["created_at"], _cell(call["username"]), call["direction"], call["customer_number"],
            call["customer_extension"], calls.outcome(call), call["status"], call["dial_result"], call["answered_at"],
            call["ended_at"], wait, talk, call["duration"], "yes" if call["recording_sid"] else "no",
            _cell(call["disposition"]), _cell(call["notes"]), _cell(call["error_message"]),
            call["queued_at"], call["voicemail_duration"], _cell(call["handled_by"]), call["handled_at"]]


def csv_lines(db, agent, f, zone):
    """The CSV of every call the filters select, streamed a chunk of rows at a time (keyset, like pages)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    while True:
        rows, more = find_calls(db, agent, f, zone, limit=CSV_CHUNK)
        for call in rows:
            writer.writerow(_csv_row(call))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if not more:
            return
        f.cursor = (rows[-1]["created_at"], rows[-1]["id"])


# What a timeline entry says, by (source, status); app actions by their `action`.
TIMELINE = {
    ("status", "initiated"): "dialling the customer",
    ("status", "ringing"): "the customer's phone rang",
    ("status", "in-progress"): "the customer answered and heard the hold message",
    ("twiml", "in-progress"): "the customer answered and heard the hold message",
    ("agent", "ringing"): "the agent's phone rang",
    ("agent", "in-progress"): "the agent answered: talking",
    ("recording", "completed"): "the recording was ready",
    ("queue", "waiting"): "waited in the queue",
    ("queue", "leave"): "left the queue to leave a message",
    ("queue", "hangup"): "hung up in the queue",
    ("queue", "redirected"): "taken from the queue for an agent who became available",
    ("voicemail", "completed"): "left a message",
}


def _happened(event):
    """When an event happened: Twilio's Timestamp (status callbacks carry one) when it is a date this
    event can have, else when it arrived. A late callback then takes its own place in the story."""
    sent = event["params"].get("Timestamp") if isinstance(event["params"], dict) else None
    if isinstance(sent, str):
        try:
            # Twilio's RFC 2822, or the ISO end time reconcile.py kept from Twilio's API
            when = params.timestamp(sent) if event["source"] != "rest" else datetime.fromisoformat(sent).isoformat()
            return min(when, event["received_at"])  # never after it reached us
        except ValueError:
            pass
    return event["received_at"]


def timeline(call, events):
    """The call's events as a person reads them, in the order they happened, without repeats: (when, sentence)."""
    said, lines = set(), []
    hung_up = _who_hung_up(events)
    for when, _, event in sorted((_happened(event), index, event) for index, event in enumerate(events)):
        status, source, values = event["status"], event["source"], event["params"]
        if source in ("status", "twiml") and event["call_sid"] and call["customer_call_sid"] \
                and event["call_sid"] != call["customer_call_sid"]:
            continue  # another leg's callback: kept as an event, changed nothing, says nothing of this call
        text = TIMELINE.get((source, status))
        if source == "app":
            action = values.get("action")
            text = {"created": "placed", "placed": None, "hangup": f"ended from the dialer by {values.get('by', 'an agent')}"}.get(
                action, "the call could not be placed" if status == "failed" else None)
        elif source == "twiml" and call["direction"] == "inbound" and status == "ringing":
            text = "called in"
        elif source == "agent" and status == "ringing" and call["direction"] == "inbound":
            text = "the agents' phones rang"
        elif source == "agent" and calls.is_terminal(status) and status != "completed":
            text = f"the agent's phone stopped ringing ({calls.status_label(status)})"
        elif source == "agent" and status == "completed":
            text = hung_up if hung_up == "the agent hung up" else None if hung_up else "the agent's side ended"
        elif source == "dial-result" and call["direction"] == "inbound":
            text = None if status == "completed" else "no agent answered"
        elif source == "dial-result":
            text = (hung_up if hung_up == "the customer hung up" else None) if status == "completed" else \
                f"no agent took the call ({calls.status_label(status)}): the customer heard the apology"
        elif source == "rest" and calls.is_terminal(status):
            text = f"the call ended: {calls.outcome(call)} (its last callback never came: Twilio's API was asked)"
        elif source in ("status", "twiml") and calls.is_terminal(status):
            text = f"the call ended: {calls.outcome(call)}" if status == call["status"] else f"the call ended ({calls.status_label(status)})"
        if text and text not in said:
            said.add(text)
            lines.append((when, text))
    return lines


def _who_hung_up(events):
    """Who ended a call both sides talked on, in words, or None when the events do not say.

    Ended from the dialer: its own event says by whom. Otherwise the <Dial> action callback tells:
    it carries the customer's leg's CallStatus, still `in-progress` when the agent's side ended
    first and `completed` when the customer hung up (TWILIO.md 9.1).
    """
    for event in events:
        if event["source"] == "app" and event["params"].get("action") == "hangup":
            return "ended from the dialer"
    for event in events:
        if event["source"] == "dial-result" and event["status"] == "completed":
            return {"in-progress": "the agent hung up", "completed": "the customer hung up"}.get(
                event["params"].get("CallStatus"))
    return None


def _own_call_or_404(call_id):
    call = calls.call_for_agent(get_db(), call_id, current_user)
    if call is None:
        abort(404)  # another agent's call looks the same as no call at all
    return call


@bp.route("/history")
@login_required
def index():
    """This agent's calls (everyone's, for a supervisor), filtered and a page at a time."""
    cfg = current_app.config
    db = get_db()
    f = read_filters(request.args, cfg["DEFAULT_REGION"])
    rows, more = find_calls(db, current_user, f, ZoneInfo(cfg["TIME_ZONE"]))
    next_url = None
    if more:
        last = rows[-1]
        next_url = url_for("history.index") + "?" + f.params(cursor=f"{last['created_at']}~{last['id']}")
    agents = list(db.query("SELECT username, coalesce(display_name, username) AS name FROM agents ORDER BY 2")) \
        if current_user.is_supervisor else []
    status = 400 if f.problems else 200
    chart = calls_per_day(db, current_user, f, ZoneInfo(cfg["TIME_ZONE"]))
    # Each row links to its call's page: the path built once (url_for for 50 rows costs ~0.4 ms).
    calls_path = url_for("history.detail", call_id=1).removesuffix("1")
    return render("history/index.html", "results", status=status, calls=rows, filters=f, next_url=next_url, chart=chart,
                  outcomes=OUTCOMES, agents=agents, first_page=url_for("history.index") + "?" + f.params(),
                  calls_path=calls_path)


@bp.route("/history.csv")
@login_required
def export():
    """The calls the same filters select, as CSV (every page of them), streamed."""
    cfg = current_app.config
    f = read_filters(request.args, cfg["DEFAULT_REGION"])
    if f.problems:
        return Response("\n".join(f.problems) + "\n", 400, mimetype="text/plain")
    f.cursor = None  # the export is the whole selection, not the page a link was on
    lines = csv_lines(get_db(), current_user, f, ZoneInfo(cfg["TIME_ZONE"]))
    return Response(stream_with_context(lines), mimetype="text/csv", headers={
        "Content-Disposition": 'attachment; filename="calls.csv"', "Cache-Control": "no-store"})


class WrapUpForm(FlaskForm):
    disposition = SelectField("Disposition", validate_choice=False)
    notes = TextAreaField("Notes", validators=[Optional(), Length(max=MAX_NOTES)])


def _call_page(call, form=None, message=None, status=200):
    form = form or WrapUpForm(formdata=None, disposition=call["disposition"] or "", notes=call["notes"] or "")
    form.disposition.choices = [("", "choose…")] + [(d, d) for d in current_app.config["DISPOSITIONS"]]
    events = calls.events_for(get_db(), call["id"])
    return render("history/detail.html", "call_page", status=status, call=call, timeline=timeline(call, events),
                  form=form, wrap_up_message=message)


@bp.route("/calls/<id:call_id>")
@login_required
def detail(call_id):
    """One call: what happened in words and local times, its recording, its wrap-up."""
    return _call_page(_own_call_or_404(call_id))


@bp.route("/calls/<id:call_id>/wrap-up", methods=["POST"])
@login_required
def wrap_up(call_id):
    """Keep a disposition from the list and free-text notes; either can be changed later."""
    call = _own_call_or_404(call_id)
    form = WrapUpForm()
    disposition = (form.disposition.data or "").strip()
    if disposition and disposition not in current_app.config["DISPOSITIONS"]:
        form.disposition.errors = ["Choose a disposition from the list."]
    elif not disposition and not (form.notes.data or "").strip():
        form.disposition.errors = ["Choose a disposition or write a note."]
    elif not form.validate():
        form.notes.errors = [f"Notes are at most {MAX_NOTES} characters; they were not saved."]
    if form.disposition.errors or form.notes.errors:
        return _call_page(call, form, status=422)
    call = calls.wrap_up(get_db(), call_id, disposition or None, (form.notes.data or "").strip() or None,
                         current_user.username)
    if not request.headers.get("HX-Request"):
        return redirect(url_for("history.detail", call_id=call_id), 303)
    return _call_page(call, message="Wrap-up saved.")


@bp.route("/calls/<id:call_id>/recording.wav")
@login_required
def recording(call_id):
    """The call's recording, fetched from Twilio with the account's credentials."""
    call = _own_call_or_404(call_id)
    if not call["recording_sid"]:
        abort(404, "This call has no recording.")
    return _media(call["recording_sid"])


@bp.route("/calls/<id:call_id>/voicemail.wav")
@login_required
def voicemail(call_id):
    """The message a caller left, fetched from Twilio like a recording."""
    call = _own_call_or_404(call_id)
    if not call["voicemail_sid"]:
        abort(404, "This call has no message.")
    return _media(call["voicemail_sid"])


def _media(recording_sid):
    try:
        media = telephony.recording_media(recording_sid)
    except telephony.TelephonyError as error:
        return Response(error.sentence, 404 if error.code == 404 else 502, mimetype="text/plain")
    # A conversation stays out of the browser's disk cache like every page with call data: a shared
    # desk's next user must not find it there after sign-out. The player keeps what it buffered.
    response = Response(media, mimetype="audio/wav", headers={"Cache-Control": "no-store"})
    # Range requests (206): the player can seek without fetching the whole file again.
    return response.make_conditional(request, accept_ranges=True, complete_length=len(media))
