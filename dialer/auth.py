"""Agents and sign-in: flask-login sessions, hashed passwords, the `agents` CLI."""
import re
import secrets
from urllib.parse import urlsplit

import click
from flask.cli import AppGroup
from flask import (Blueprint, current_app, flash, jsonify, redirect, render_template,
                   request, url_for)
from flask_login import LoginManager, UserMixin, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from .db import connect, get_db, utcnow

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please sign in to use the dialer."

ROLES = ("agent", "supervisor")
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Agent(UserMixin):
    """A signed-in agent, built from an `agents` row."""

    def __init__(self, row):
        self.row = row
        self.id = row["id"]
        self.username = row["username"]
        self.display_name = row["display_name"] or row["username"]
        self.role = row["role"]
        self.identity = row["identity"]

    @property
    def is_supervisor(self):
        return self.role == "supervisor"


# --- queries -------------------------------------------------------------------------------

def agent_by_id(db, agent_id):
    rows = list(db["agents"].rows_where("id = ?", [agent_id], limit=1))
    return rows[0] if rows else None


def agent_by_username(db, username):
    rows = list(db["agents"].rows_where("username = ?", [username], limit=1))
    return rows[0] if rows else None


def list_agents(db):
    return list(db["agents"].rows_where(order_by="username"))


def identity_for(username):
    """A stable Twilio client identity: [A-Za-z0-9_] only, unique by a random suffix."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", username)[:40]
    return f"agent_{base}_{secrets.token_hex(4)}"


def create_agent(db, username, password, role="agent", display_name=None):
    """Insert an agent; raises ValueError with a sentence when the input is wrong."""
    if not USERNAME_RE.match(username or ""):
        raise ValueError("A username is 1 to 64 letters, digits, dots, dashes or underscores.")
    if role not in ROLES:
        raise ValueError(f"A role is one of {', '.join(ROLES)}.")
    if len(password or "") < 8:
        raise ValueError("A password needs at least 8 characters.")
    if agent_by_username(db, username):
        raise ValueError(f"There is already an agent called {username}.")
    now = utcnow()
    db["agents"].insert({
        "username": username, "display_name": display_name or username,
        "password_hash": generate_password_hash(password), "role": role,
        "identity": identity_for(username), "presence": "offline",
        "created_at": now, "updated_at": now,
    })
    return agent_by_username(db, username)


def set_password(db, username, password):
    if len(password or "") < 8:
        raise ValueError("A password needs at least 8 characters.")
    agent = agent_by_username(db, username)
    if not agent:
        raise ValueError(f"There is no agent called {username}.")
    db["agents"].update(agent["id"], {"password_hash": generate_password_hash(password),
                                      "updated_at": utcnow()})


@login_manager.user_loader
def load_user(agent_id):
    row = agent_by_id(get_db(), int(agent_id))
    return Agent(row) if row else None


@login_manager.unauthorized_handler
def unauthorized():
    """htmx and JSON callers get 401 (htmx with HX-Redirect); pages are sent to sign in."""
    login_url = url_for("auth.login", next=request.full_path.rstrip("?"))
    if request.headers.get("HX-Request"):
        return "", 401, {"HX-Redirect": login_url}
    if request.accept_mimetypes.best == "application/json" or request.path == url_for("dialing.token"):
        return jsonify(error="Your session has ended. Sign in again."), 401
    flash(login_manager.login_message)
    return redirect(login_url)


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
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Sign in."""
    form = LoginForm()
    if form.validate_on_submit():
        row = agent_by_username(get_db(), form.username.data.strip())
        if row and check_password_hash(row["password_hash"], form.password.data):
            login_user(Agent(row))
            return redirect(safe_next(request.args.get("next")))
        form.password.errors.append("That username and password don't match.")
        current_app.logger.info("failed sign-in for %r", form.username.data)
    status = 422 if request.method == "POST" else 200
    return render_template("auth/login.html", form=form), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    """Sign out."""
    logout_user()
    return redirect(url_for("auth.login"))


# --- CLI -----------------------------------------------------------------------------------

agents_cli = AppGroup("agents", help="Manage agents.")


def _cli_db():
    return connect(current_app.config["DATABASE"])


@agents_cli.command("create")
@click.argument("username")
@click.option("--supervisor", is_flag=True, help="Can see every agent's calls.")
@click.option("--name", "display_name", help="Display name (defaults to the username).")
@click.password_option(help="Asked for when not given.")
def create_command(username, supervisor, display_name, password):
    """Create an agent."""
    try:
        row = create_agent(_cli_db(), username, password, "supervisor" if supervisor else "agent", display_name)
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
        click.echo(f"{row['username']:<20} {row['role']:<10} {row['identity']}")


@agents_cli.command("set-password")
@click.argument("username")
@click.password_option(help="Asked for when not given.")
def set_password_command(username, password):
    """Set an agent's password."""
    try:
        set_password(_cli_db(), username, password)
    except ValueError as error:
        raise click.ClickException(str(error))
    click.echo(f"Password changed for {username}.")


def init_app(app):
    login_manager.init_app(app)
    app.cli.add_command(agents_cli)
