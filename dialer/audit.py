"""The audit log: who signed in, failed, was refused or signed out, who changed an agent; the sign-in
throttle that counts failures from it; and the `flask audit` command that lists it."""
import json
import math
import re
from datetime import datetime, timedelta, timezone

import click
from flask import current_app
from flask.cli import with_appcontext

from .db import connect, utcnow

SIGN_IN = "sign-in"
SIGN_IN_FAILED = "sign-in-failed"
SIGN_IN_THROTTLED = "sign-in-throttled"
SIGN_OUT = "sign-out"
AGENT_CREATED = "agent-created"
AGENT_CHANGED = "agent-changed"
PASSWORD_SET = "password-set"
AGENT_DISABLED = "agent-disabled"  # someone who left: no sign-in, no callers, off the board
AGENT_ENABLED = "agent-enabled"
CALL_ENDED_FOR_AGENT = "call-ended-for-agent"  # a supervisor hung up another agent's call
ACTIONS = (SIGN_IN, SIGN_IN_FAILED, SIGN_IN_THROTTLED, SIGN_OUT, AGENT_CREATED, AGENT_CHANGED,
           PASSWORD_SET, AGENT_DISABLED, AGENT_ENABLED, CALL_ENDED_FOR_AGENT)


def record(db, action, username=None, actor=None, address=None, **details):
    """Add one entry; inside the caller's transaction it commits (or not) with the change it describes."""
    # username: the account the entry is about (as typed, for a failed sign-in); actor: who did it
    # (an agent's username, or cli:<user> for the command line).
    db.execute(
        "INSERT INTO audit_log (created_at, action, username, actor, address, details) VALUES (?, ?, ?, ?, ?, ?)",
        [utcnow(), action, username, actor, address, json.dumps(details, sort_keys=True) if details else None])


def record_call_ended_for_agent(db, call, supervisor, address):
    """A supervisor hung up another agent's call: the entry is about that agent and names the call."""
    row = db.execute("SELECT username FROM agents WHERE id = ?", [call["agent_id"]]).fetchone()
    record(db, CALL_ENDED_FOR_AGENT, username=row[0] if row else None, actor=supervisor.username,
           address=address, call_id=call["id"])


# --- the sign-in throttle: counted from the log (plain SQL: it runs on every sign-in) -------

# Failures from a trusted browser (devices.py) carry its id in `details`; the username and address
# limits count only the others, a trusted browser's limit only its own.
_UNTRUSTED = "json_extract(details, '$.device') IS NULL"


def nth_latest_failure_for_username(db, username, since, n, device=None):
    """When the n-th most recent failed sign-in for this username after `since` happened, or None:
    counting the failures of untrusted clients, or with `device` only that browser's."""
    # Failures before the username's last successful sign-in do not count: whoever made them knew
    # the password in the end.
    which = "json_extract(details, '$.device') = ?" if device else _UNTRUSTED
    row = db.execute(
        f"SELECT created_at FROM audit_log WHERE action = ? AND username = ? AND created_at > ? AND {which} "
        "AND id > coalesce((SELECT id FROM audit_log WHERE action = ? AND username = ? "
        "                   ORDER BY created_at DESC, id DESC LIMIT 1), 0) "
        "ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET ?",
        [SIGN_IN_FAILED, username, since, *([device] if device else []), SIGN_IN, username, n - 1]).fetchone()
    return row[0] if row else None


def nth_latest_failure_from_address(db, address, since, n):
    """When the n-th most recent failed sign-in of an untrusted client from this address after
    `since` happened, or None."""
    row = db.execute(
        f"SELECT created_at FROM audit_log WHERE action = ? AND address = ? AND created_at > ? AND {_UNTRUSTED} "
        "ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET ?",
        [SIGN_IN_FAILED, address, since, n - 1]).fetchone()
    return row[0] if row else None


def sign_in_wait(db, username, address, device=None, now=None):
    """(seconds to wait, 'username' | 'address' | 'device') when too many sign-ins failed lately, else (0, None).

    `device`: the id of a browser trusted for this username (devices.trusted_for). Its sign-ins
    count only its own failures, against the per-username limit; an untrusted client's count those
    of every untrusted client, for the username and for the address.
    """
    # Counted from the database, not in memory, so every worker process sees the same counts.
    cfg = current_app.config
    now = now or datetime.now(timezone.utc)
    window = timedelta(seconds=cfg["LOGIN_FAILURE_WINDOW"])
    since = (now - window).isoformat(timespec="seconds")
    waits = []
    limit = cfg["LOGIN_MAX_FAILURES_PER_USERNAME"]
    if limit:
        oldest = nth_latest_failure_for_username(db, username, since, limit, device)
        if oldest:
            waits.append(((datetime.fromisoformat(oldest) + window - now).total_seconds(),
                          "device" if device else "username"))
    limit = cfg["LOGIN_MAX_FAILURES_PER_ADDRESS"]
    if limit and address and not device:
        oldest = nth_latest_failure_from_address(db, address, since, limit)
        if oldest:
            waits.append(((datetime.fromisoformat(oldest) + window - now).total_seconds(), "address"))
    if not waits:
        return 0, None
    seconds, kind = max(waits)
    return max(1, math.ceil(seconds)), kind


def throttle_sentence(kind, seconds):
    """What a refused sign-in is told."""
    minutes = max(1, math.ceil(seconds / 60))
    when = f"{minutes} minute{'s' if minutes != 1 else ''}"
    if kind == "address":
        return f"Too many failed sign-ins from this network address. Try again in {when}."
    return f"Too many failed sign-ins for this account. Try again in {when}."


# --- CLI -----------------------------------------------------------------------------------

def entries(db, action=None, agent=None, since=None, limit=50):
    """Audit entries, newest first: of one action, about or by one username, after a time."""
    where, args = [], []
    if action:
        where.append("action = ?")
        args.append(action)
    if agent:
        where.append("(username = ? OR actor = ?)")
        args += [agent, agent]
    if since:
        where.append("created_at >= ?")
        args.append(since)
    sql = "SELECT * FROM audit_log"
    if where:
        sql += " WHERE " + " AND ".join(where)
    cursor = db.execute(sql + " ORDER BY id DESC LIMIT ?", args + [limit])
    columns = [c[0] for c in cursor.description]
    return [dict(zip(columns, row)) for row in cursor.fetchall()]


AGE_RE = re.compile(r"^(\d{1,6})\s*([mhd])$")
AGE_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_since(text, now=None):
    """`30m`, `12h`, `7d` ago, or an ISO date or time (UTC unless it says otherwise), as stored text."""
    text = (text or "").strip()
    match = AGE_RE.match(text.lower())
    try:
        if match:
            when = (now or datetime.now(timezone.utc)) - timedelta(**{AGE_UNITS[match[2]]: int(match[1])})
        else:
            when = datetime.fromisoformat(text)
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
        return when.astimezone(timezone.utc).isoformat(timespec="seconds")
    except (ValueError, OverflowError):  # not a time at all, or one beyond years 1–9999 in UTC
        raise click.BadParameter(
            f"{text!r} is neither a date such as 2026-11-25, a time such as 2026-11-25T09:00, "
            "nor an age such as 30m, 12h or 7d.")


def _printable(text):
    """Typed usernames come from strangers: never send their control characters to a terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def format_entry(row):
    """One line of `flask audit`."""
    parts = [row["created_at"], f"{row['action']:<20}", _printable(row["username"] or "-")]
    if row["actor"] and row["actor"] != row["username"]:
        parts.append(f"by {_printable(row['actor'])}")
    if row["address"]:
        parts.append(f"from {_printable(row['address'])}")
    if row["details"]:
        parts += [f"{key}={_printable(value)}" for key, value in json.loads(row["details"]).items()]
    return "  ".join(parts)


@click.command("audit")
@click.option("--action", type=click.Choice(ACTIONS), help="Only this kind of entry.")
@click.option("--agent", help="Only entries about or by this username.")
@click.option("--since", callback=lambda ctx, param, value: parse_since(value) if value else None,
              help="Only entries from then on: 2026-11-25, 2026-11-25T09:00 (UTC), or 30m, 12h, 7d ago.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True, help="At most this many entries.")
@with_appcontext
def audit_command(action, agent, since, limit):
    """List the audit log, newest first."""
    db = connect(current_app.config["DATABASE"])
    try:
        rows = entries(db, action=action, agent=agent, since=since, limit=limit)
    finally:
        db.conn.close()
    if not rows:
        click.echo("No audit entries match.")
    for row in rows:
        click.echo(format_entry(row))


def init_app(app):
    app.cli.add_command(audit_command)
