"""Template filters: how statuses, numbers, durations and times read to a person."""
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from flask import current_app

from . import calls, numbers, presence


def duration(seconds):
    """73 -> '1:13'; None -> '—'."""
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def when(iso):
    """ISO UTC text -> '2026-11-23 21:05 UTC'."""
    if not iso:
        return "—"
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return iso


def local(iso):
    """ISO UTC text -> the centre's time, compact: '25 Nov 21:05' (with the year when not this year)."""
    try:
        moment = datetime.fromisoformat(iso).astimezone(ZoneInfo(current_app.config["TIME_ZONE"]))
    except (TypeError, ValueError):
        return "—"
    now = datetime.now(moment.tzinfo)
    return moment.strftime("%-d %b %H:%M" if moment.year == now.year else "%-d %b %Y %H:%M")


def clock_local(iso):
    """ISO UTC text -> '21:05:09' in the centre's time zone (a timeline's times)."""
    try:
        return datetime.fromisoformat(iso).astimezone(ZoneInfo(current_app.config["TIME_ZONE"])).strftime("%H:%M:%S")
    except (TypeError, ValueError):
        return "—"


def clock(iso):
    """ISO UTC text -> '21:05' in the centre's time zone (today's calls on the dialer)."""
    try:
        return datetime.fromisoformat(iso).astimezone(ZoneInfo(current_app.config["TIME_ZONE"])).strftime("%H:%M")
    except (TypeError, ValueError):
        return "—"


def outcome_class(call):
    """The CSS class of a call's outcome: a call no agent took is 'missed', whatever Twilio's status."""
    return "missed" if calls.outcome(call) in MISSED else call["status"]


MISSED = ("missed by agent", "customer hung up while waiting", "hung up in the queue", "hung up while ringing", "voicemail")


def elapsed(iso):
    """Time since an ISO UTC moment, as `duration` writes it (the page's script keeps it running)."""
    try:
        since = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return "—"
    return duration(max(0, (datetime.now(timezone.utc) - since).total_seconds()))


def init_app(app):
    app.jinja_env.filters.update(
        status_label=calls.status_label, outcome=calls.outcome, phone=numbers.display, duration=duration, when=when,
        elapsed=elapsed, presence_words=presence.words, clock=clock,
        local=local, clock_local=clock_local, outcome_class=outcome_class)
    app.jinja_env.globals.update(is_terminal=calls.is_terminal, live_state=calls.live_state,
                                 wait_and_talk=calls.wait_and_talk)
