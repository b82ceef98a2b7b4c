"""Agents and sign-in: server-side sessions, a throttled sign-in, the password policy, the `agents` CLI."""
import getpass
import hashlib
import math
import re
import secrets
from datetime import datetime, timedelta, timezone
from functools import cache
from urllib.parse import urlsplit

import click
from flask.cli import AppGroup
from flask import (Blueprint, Response, current_app, flash, g, jsonify, make_response, redirect,
                   render_template, request, url_for)
from flask_login import (LoginManager, UserMixin, current_user, login_required, login_user,
                         logout_user)
from flask_wtf import FlaskForm
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from . import audit, calls, devices, live, presence
from .db import connect, get_db, one, utcnow, writing

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please sign in to use the dialer."

ROLES = ("agent", "supervisor")
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
PASSWORD_MAX_LENGTH = 256  # the sign-in form takes no more
ZXCVBN_MAX_LENGTH = 72  # zxcvbn refuses longer input; characters past it cannot make a password weaker
# last_seen_at is written at most this often per session: the idle limit is hours, not seconds,
# and a write on every request would queue page loads behind the webhooks on SQLite's write lock.
SESSION_TOUCH_INTERVAL = timedelta(seconds=60)


class Agent(UserMixin):
    """A signed-in agent, built from an `agents` row and the token of the session they signed in with."""

    def __init__(self, row, session_token=None):
        self.row = row
        self.id = row["id"]
        self.username = row["username"]
        self.display_name = row["display_name"] or row["username"]
        self.role = row["role"]
        self.identity = row["identity"]
        self.session_token = session_token

    def get_id(self):
        """What Flask-Login keeps in the cookie: the session's token, never the agent's id."""
        return self.session_token

    @property
    def session_id(self):
        """The sessions row of this sign-in (the token's hash), or None."""
        return _session_id(self.session_token) if self.session_token else None

    @property
    def is_supervisor(self):
        return self.role == "supervisor"


# --- queries (plain SQL: see db.one) -------------------------------------------------------

def agent_by_id(db, agent_id):
    return one(db, "SELECT * FROM agents WHERE id = ?", [agent_id])


def agent_by_username(db, username):
    return one(db, "SELECT * FROM agents WHERE username = ?", [username])


def list_agents(db):
    return list(db["agents"].rows_where(order_by="username"))


def identity_for(username):
    """A stable Twilio client identity: [A-Za-z0-9_] only, unique by a random suffix."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", username)[:40]
    return f"agent_{base}_{secrets.token_hex(4)}"


# --- passwords -----------------------------------------------------------------------------

def check_password_policy(password, user_inputs=(), common_list=True):
    """Raise ValueError with a sentence when a password is too short, too long or too easy to guess."""
    min_length = current_app.config["PASSWORD_MIN_LENGTH"]
    if len(password or "") < min_length:
        raise ValueError(f"A password needs at least {min_length} characters.")
    if len(password) > PASSWORD_MAX_LENGTH:
        raise ValueError(f"A password has at most {PASSWORD_MAX_LENGTH} characters.")
    if not common_list:
        return
    # Imported here and only here: its word lists cost a process ~12 MB, which a web worker
    # that never sets a password must not carry.
    from zxcvbn import zxcvbn
    result = zxcvbn(password[:ZXCVBN_MAX_LENGTH], user_inputs=[u for u in user_inputs if u] + ["dialer"])
    if result["score"] < current_app.config["PASSWORD_MIN_SCORE"]:
        warning = result["feedback"]["warning"].strip().rstrip(".")
        why = f": {warning[0].lower()}{warning[1:]}" if warning else ""
        raise ValueError(f"That password is too easy to guess{why}. "
                         "Choose another, such as three or four unrelated words.")


@cache
def _dummy_hash():
    """A hash made like real ones, checked when the username is unknown: the same work, so timing tells nothing."""
    return generate_password_hash(secrets.token_urlsafe(16))


def verify_password(db, username, password):
    """The agent with this username and password, or None; as slow for an unknown username as for a known one."""
    row = agent_by_username(db, username)
    if row is None:
        check_password_hash(_dummy_hash(), password)
        return None
    return row if check_password_hash(row["password_hash"], password) else None


# --- agents --------------------------------------------------------------------------------

def create_agent(db, username, password, role="agent", display_name=None, actor=None, generated=False):
    """Insert an agent with its audit entry; raises ValueError with a sentence when the input is wrong."""
    # generated=True: the caller made the password with `secrets` (the sandbox's demo agent), so the
    # common-password list, and the memory it costs a web worker, is skipped; the length is not.
    if not USERNAME_RE.match(username or ""):
        raise ValueError("A username is 1 to 64 letters, digits, dots, dashes or underscores.")
    if role not in ROLES:
        raise ValueError(f"A role is one of {', '.join(ROLES)}.")
    _refuse_existing(db, username)
    check_password_policy(password, [username, display_name], common_list=not generated)
    password_hash = generate_password_hash(password)  # slow on purpose: outside the transaction
    now = utcnow()
    with writing(db):
        _refuse_existing(db, username)
        db.execute(
            "INSERT INTO agents (username, display_name, password_hash, role, identity, presence, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, 'offline', ?, ?)",
            [username, display_name or username, password_hash, role, identity_for(username), now, now])
        audit.record(db, audit.AGENT_CREATED, username=username, actor=actor, role=role)
    return agent_by_username(db, username)


def _refuse_existing(db, username):
    existing = agent_by_username(db, username)
    if existing and existing["disabled_at"]:
        raise ValueError(f"There is already an agent called {username}, switched off since "
                         f"{existing['disabled_at'][:10]}: `flask --app app agents enable {username}` brings them back.")
    if existing:
        raise ValueError(f"There is already an agent called {username}.")


def disable_agent(db, username, actor=None):
    """Switch off an agent who has left: every session ends, presence goes offline (no callers are
    offered), the board leaves them out; their calls stay. Returns (agent, their live call or None)."""
    agent = agent_by_username(db, username)
    if not agent:
        raise ValueError(f"There is no agent called {username}.")
    if agent["disabled_at"]:
        raise ValueError(f"{username} is switched off already (since {agent['disabled_at'][:10]}).")
    with writing(db):
        now = utcnow()
        db.execute("UPDATE agents SET disabled_at = ?, updated_at = ? WHERE id = ?", [now, now, agent["id"]])
        ended = end_agent_sessions(db, agent["id"], "disabled")
        if not presence.set_presence(db, agent["id"], "offline", by="switched off"):
            live.publish_agent(db, presence.agent_state(db, agent["id"]))  # open boards drop them
        audit.record(db, audit.AGENT_DISABLED, username=username, actor=actor, sessions_ended=ended)
    return agent_by_username(db, username), calls.live_call(db, agent["id"])


def enable_agent(db, username, actor=None):
    """Bring back a switched-off agent: they can sign in again (with their old password)."""
    agent = agent_by_username(db, username)
    if not agent:
        raise ValueError(f"There is no agent called {username}.")
    if not agent["disabled_at"]:
        raise ValueError(f"{username} is not switched off.")
    with writing(db):
        db.execute("UPDATE agents SET disabled_at = NULL, updated_at = ? WHERE id = ?", [utcnow(), agent["id"]])
        live.publish_agent(db, presence.agent_state(db, agent["id"]))  # back on open boards
        audit.record(db, audit.AGENT_ENABLED, username=username, actor=actor)
    return agent_by_username(db, username)


def update_agent(db, username, role=None, display_name=None, actor=None):
    """Change an agent's role or display name, with its audit entry; raises ValueError with a sentence."""
    agent = agent_by_username(db, username)
    if not agent:
        raise ValueError(f"There is no agent called {username}.")
    if role is not None and role not in ROLES:
        raise ValueError(f"A role is one of {', '.join(ROLES)}.")
    if display_name is not None and not display_name.strip():
        raise ValueError("A display name cannot be empty.")
    changes = {k: v for k, v in (("role", role), ("display_name", display_name))
               if v is not None and v != agent[k]}
    if not changes:
        return agent
    with writing(db):
        db.execute(f"UPDATE agents SET {', '.join(f'{k} = ?' for k in changes)}, updated_at = ? WHERE id = ?",
                   list(changes.values()) + [utcnow(), agent["id"]])
        audit.record(db, audit.AGENT_CHANGED, username=username, actor=actor, **changes)
    return agent_by_username(db, username)


def set_password(db, username, password, actor=None):
    """Set an agent's password and end every session of theirs, in one transaction with its audit entry."""
    agent = agent_by_username(db, username)
    if not agent:
        raise ValueError(f"There is no agent called {username}.")
    check_password_policy(password, [username, agent["display_name"]])
    password_hash = generate_password_hash(password)
    with writing(db):
        db.execute("UPDATE agents SET password_hash = ?, updated_at = ? WHERE id = ?",
                   [password_hash, utcnow(), agent["id"]])
        ended = end_agent_sessions(db, agent["id"], "password-changed")
        audit.record(db, audit.PASSWORD_SET, username=username, actor=actor, sessions_ended=ended)


# --- sessions ------------------------------------------------------------------------------
# The cookie carries a random token; the table keeps only its SHA-256, so a copy of the
# database does not hand out live sessions.

def _session_id(token):
    """The sessions row id of a cookie's token."""
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(db, agent, address, user_agent):
    """A new server-side session, written with its sign-in's audit entry; returns the cookie's token."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    with writing(db):
        db.execute("INSERT INTO sessions (id, agent_id, created_at, last_seen_at, address, user_agent) "
                   "VALUES (?, ?, ?, ?, ?, ?)",
                   [_session_id(token), agent["id"], now, now, address, (user_agent or "")[:300]])
        audit.record(db, audit.SIGN_IN, username=agent["username"], actor=agent["username"], address=address)
    return token


def session_with_agent(db, token):
    """The session with this token, joined with its agent's row (one query per request), or None."""
    return one(db, "SELECT agents.*, sessions.created_at AS session_created_at, "
                    "sessions.last_seen_at AS session_last_seen_at, sessions.ended_at AS session_ended_at, "
                    "sessions.end_reason AS session_end_reason "
                    "FROM sessions JOIN agents ON agents.id = sessions.agent_id WHERE sessions.id = ?",
                [_session_id(token)])


def end_session(db, token, reason):
    """End one session (once: a later reason does not overwrite the first)."""
    db.execute("UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ? AND ended_at IS NULL",
               [utcnow(), reason, _session_id(token)])


def end_agent_sessions(db, agent_id, reason):
    """End every live session of an agent; returns how many there were."""
    return db.execute("UPDATE sessions SET ended_at = ?, end_reason = ? WHERE agent_id = ? AND ended_at IS NULL",
                      [utcnow(), reason, agent_id]).rowcount


def touch_session(db, token, now):
    """Note that the session was just used."""
    db.execute("UPDATE sessions SET last_seen_at = ? WHERE id = ? AND ended_at IS NULL",
               [now.isoformat(timespec="seconds"), _session_id(token)])


def expiry_reason(row, now, cfg):
    """'expired' past the absolute lifetime, 'idle' past the idle one, else None."""
    if now - datetime.fromisoformat(row["session_created_at"]) >= timedelta(seconds=cfg["SESSION_ABSOLUTE_TIMEOUT"]):
        return "expired"
    if now - datetime.fromisoformat(row["session_last_seen_at"]) >= timedelta(seconds=cfg["SESSION_IDLE_TIMEOUT"]):
        return "idle"
    return None


def _duration(seconds):
    """2 hours, 90 minutes, 45 seconds."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds" if seconds < 60 else f"{math.ceil(seconds / 60)} minutes"


def session_end_sentence(reason):
    """Why a session ended, for the person who comes back with its cookie; None when they signed out."""
    cfg = current_app.config
    return {
        "idle": f"You were signed out after {_duration(cfg['SESSION_IDLE_TIMEOUT'])} without activity. Sign in again.",
        "expired": f"Sessions last at most {_duration(cfg['SESSION_ABSOLUTE_TIMEOUT'])}, and yours has ended. Sign in again.",
        "password-changed": "Your password was changed, which signed you out. Sign in with the new password.",
        "disabled": "Your account has been switched off. Ask your supervisor.",
    }.get(reason)


@login_manager.user_loader
def load_user(token):
    """The agent of a live session; an ended or expired session loads nobody, and leaves why in g."""
    db = get_db()
    row = session_with_agent(db, token)
    if row is None:
        return None
    if row["session_ended_at"] or row["disabled_at"]:
        g.session_end_reason = row["session_end_reason"] or "disabled"
        return None
    now = datetime.now(timezone.utc)
    reason = expiry_reason(row, now, current_app.config)
    if reason:
        end_session(db, token, reason)
        g.session_end_reason = reason
        return None
    if now - datetime.fromisoformat(row["session_last_seen_at"]) >= SESSION_TOUCH_INTERVAL:
        touch_session(db, token, now)
    return Agent(row, token)


@login_manager.unauthorized_handler
def unauthorized():
    """htmx and JSON callers get 401 (htmx with HX-Redirect); pages are sent to sign in, told why."""
    login_url = url_for("auth.login", next=request.full_path.rstrip("?"))
    why = session_end_sentence(g.get("session_end_reason"))
    if request.blueprint == "live":  # the page's event stream: the page shows a banner, and stays
        return Response((why or "Your session has ended. Sign in again.") + "\n", 401, mimetype="text/plain")
    if request.headers.get("HX-Request"):
        if why:
            flash(why)  # shown by the sign-in page the browser is sent to
        return "", 401, {"HX-Redirect": login_url}
    if request.accept_mimetypes.best == "application/json" or request.path == url_for("dialing.token"):
        return jsonify(error=why or "Your session has ended. Sign in again."), 401
    flash(why or login_manager.login_message)
    return redirect(login_url)


# --- helpers -------------------------------------------------------------------------------

def client_address():
    """The client's address: the connection's, or behind Caddy the one it forwarded (PROXY_HOPS, ProxyFix)."""
    return request.remote_addr


def safe_next(target):
    """Only a path on this site; anything else goes to the dialer."""
    if not target:
        return url_for("dialing.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("dialing.index")
    return target


# --- views ---------------------------------------------------------------------------------

class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=PASSWORD_MAX_LENGTH)])


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Sign in; refused for a while, without checking the password, after too many failures."""
    form = LoginForm()
    if form.validate_on_submit():
        db, username, address = get_db(), form.username.data.strip(), client_address()
        device = devices.trusted_for(username)  # this browser signed in as this username before
        trusted = {"device": device} if device else {}
        wait, kind = audit.sign_in_wait(db, username, address, device)
        if wait:
            audit.record(db, audit.SIGN_IN_THROTTLED, username=username, address=address, limit=kind, **trusted)
            response = make_response(render_template(
                "auth/login.html", form=form, refusal=audit.throttle_sentence(kind, wait)), 429)
            response.headers["Retry-After"] = str(wait)
            return response
        row = verify_password(db, username, form.password.data)
        if row and row["disabled_at"]:  # told only to whoever knows the password
            audit.record(db, audit.SIGN_IN_FAILED, username=username, address=address, reason="disabled", **trusted)
            response = make_response(render_template("auth/login.html", form=form,
                                                     refusal=session_end_sentence("disabled")), 403)
            return response
        if row:
            login_user(Agent(row, start_session(db, row, address, request.user_agent.string)))
            response = redirect(safe_next(request.args.get("next")))
            devices.remember(response, row["username"])
            return response
        audit.record(db, audit.SIGN_IN_FAILED, username=username, address=address, **trusted)
        form.password.errors.append("That username and password don't match.")
        current_app.logger.info("failed sign-in for %r from %s", username, address)
    status = 422 if request.method == "POST" else 200
    return render_template("auth/login.html", form=form), status


class PasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired(), Length(max=PASSWORD_MAX_LENGTH)])
    new = PasswordField("New password", validators=[DataRequired(), Length(max=PASSWORD_MAX_LENGTH)])
    again = PasswordField("New password again", validators=[
        DataRequired(), EqualTo("new", message="The two new passwords are not the same.")])


@bp.route("/password", methods=["GET", "POST"])
@login_required
def change_password():
    """An agent sets their own password, giving the current one (throttled like a sign-in, since a
    session left open must not let anyone guess it); then every session of theirs ends, this one too."""
    form = PasswordForm()
    if form.validate_on_submit():
        db, username, address = get_db(), current_user.username, client_address()
        device = devices.trusted_for(username)
        trusted = {"device": device} if device else {}
        wait, kind = audit.sign_in_wait(db, username, address, device)
        if wait:
            audit.record(db, audit.SIGN_IN_THROTTLED, username=username, address=address, limit=kind,
                         form="password", **trusted)
            response = make_response(render_template(
                "auth/password.html", form=form, refusal=audit.throttle_sentence(kind, wait)), 429)
            response.headers["Retry-After"] = str(wait)
            return response
        if not verify_password(db, username, form.current.data):
            audit.record(db, audit.SIGN_IN_FAILED, username=username, address=address, form="password", **trusted)
            form.current.errors.append("That is not your current password.")
        elif form.new.data == form.current.data:
            form.new.errors.append("The new password is the same as the current one.")
        else:
            try:
                set_password(db, username, form.new.data, actor=username)
            except ValueError as error:
                form.new.errors.append(str(error))
            else:
                logout_user()
                flash(session_end_sentence("password-changed"))
                return redirect(url_for("auth.login"))
    status = 422 if request.method == "POST" else 200
    return render_template("auth/password.html", form=form), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    """Sign out: the session ends on the server too, so a copy of its cookie no longer works."""
    db = get_db()
    with writing(db):
        end_session(db, current_user.session_token, "signed-out")
        audit.record(db, audit.SIGN_OUT, username=current_user.username, actor=current_user.username,
                     address=client_address())
    logout_user()
    flash("You have signed out.")
    return redirect(url_for("auth.login"))


# --- CLI -----------------------------------------------------------------------------------

agents_cli = AppGroup("agents", help="Manage agents.")


def _cli_db():
    return connect(current_app.config["DATABASE"])


def _cli_actor():
    """Who ran the command, for the audit log."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # a uid with no passwd entry, as in some containers
        return "cli"


@agents_cli.command("create")
@click.argument("username")
@click.option("--supervisor", is_flag=True, help="Can see every agent's calls.")
@click.option("--name", "display_name", help="Display name (defaults to the username).")
@click.password_option(help="Asked for when not given.")
def create_command(username, supervisor, display_name, password):
    """Create an agent."""
    try:
        row = create_agent(_cli_db(), username, password, "supervisor" if supervisor else "agent",
                           display_name, actor=_cli_actor())
    except ValueError as error:
        raise click.ClickException(str(error))
    click.echo(f"Created {row['role']} {row['username']} (voice identity {row['identity']}).")


@agents_cli.command("list")
def list_command():
    """List agents."""
    rows = list_agents(_cli_db())
    if not rows:
        click.echo("No agents yet: flask --app app agents create NAME")
    for row in rows:
        off = f"  switched off since {row['disabled_at'][:10]}" if row["disabled_at"] else ""
        click.echo(f"{row['username']:<20} {row['role']:<10} {row['identity']}{off}")


@agents_cli.command("update")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLES), help="agent, or supervisor (sees every agent's calls).")
@click.option("--name", "display_name", help="New display name.")
def update_command(username, role, display_name):
    """Change an agent's role or display name."""
    if role is None and display_name is None:
        raise click.UsageError("Say what to change: --role and/or --name.")
    try:
        row = update_agent(_cli_db(), username, role, display_name, actor=_cli_actor())
    except ValueError as error:
        raise click.ClickException(str(error))
    click.echo(f"{row['username']} is now {row['role']} {row['display_name']!r}.")


@agents_cli.command("set-password")
@click.argument("username")
@click.password_option(help="Asked for when not given.")
def set_password_command(username, password):
    """Set an agent's password; it signs them out everywhere."""
    try:
        set_password(_cli_db(), username, password, actor=_cli_actor())
    except ValueError as error:
        raise click.ClickException(str(error))
    click.echo(f"Password changed for {username}; their open sessions have ended.")


@agents_cli.command("disable")
@click.argument("username")
def disable_command(username):
    """Switch off an agent who has left: signed out everywhere, no sign-in, no callers; calls kept."""
    try:
        agent, live = disable_agent(_cli_db(), username, actor=_cli_actor())
    except ValueError as error:
        raise click.ClickException(str(error))
    click.echo(f"{agent['username']} is switched off: signed out everywhere, offered no callers, off the board. "
               f"Their calls stay in history; `flask --app app agents enable {username}` brings them back.")
    if live:
        click.echo(f"They are on call {live['id']} now: it goes on until either side hangs up "
                   "(a supervisor can end it from the board).")


@agents_cli.command("enable")
@click.argument("username")
def enable_command(username):
    """Bring back a switched-off agent (they sign in with their old password)."""
    try:
        enable_agent(_cli_db(), username, actor=_cli_actor())
    except ValueError as error:
        raise click.ClickException(str(error))
    click.echo(f"{username} can sign in again, with their old password.")


def init_app(app):
    login_manager.init_app(app)
    app.cli.add_command(agents_cli)
    audit.init_app(app)
