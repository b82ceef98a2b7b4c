"""Template filters: how statuses, numbers, durations and times read to a person."""
from datetime import datetime

from . import calls, numbers


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


def init_app(app):
    app.jinja_env.filters.update(
        status_label=calls.status_label, outcome=calls.outcome, phone=numbers.display, duration=duration, when=when)
    app.jinja_env.globals.update(is_terminal=calls.is_terminal)
