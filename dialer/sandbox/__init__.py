"""The sandbox: an offline, Twilio-compatible carrier inside the app (TELEPHONY=sandbox).

The app reaches it exactly as it reaches Twilio: the twilio Client over HTTP at
PUBLIC_BASE_URL/sandbox, TwiML fetched from the app's URLs, webhooks signed with the auth token.
"""
import secrets
import sqlite3

import click
from flask import current_app

from . import credentials
from .carrier import Carrier
from .engine import Engine

SANDBOX_CALLER_ID = "+15005550006"  # Twilio's test "From" that always passes


def init_app(app):
    """Fill the Twilio settings with the sandbox's own account and mount its routes."""
    made = credentials.load_or_create(app.instance_path)
    for name, value in made.items():
        if not app.config.get(name):
            app.config[name] = value
    if not app.config.get("TWILIO_CALLER_ID"):
        app.config["TWILIO_CALLER_ID"] = SANDBOX_CALLER_ID
    app.config["TWILIO_API_BASE_URL"] = app.config["PUBLIC_BASE_URL"] + "/sandbox"

    carrier = Carrier(app.config)
    app.extensions["sandbox"] = carrier
    app.extensions["sandbox_engine"] = Engine(carrier)

    from .. import csrf
    from . import account, api, control
    app.extensions["sandbox_account"] = account.Account(app.instance_path, carrier, app.config)
    app.register_blueprint(api.bp)
    app.register_blueprint(account.bp)  # Accounts, IncomingPhoneNumbers, Applications, Keys
    app.register_blueprint(control.bp)
    csrf.exempt(api.bp)  # Twilio-shaped: basic auth and access tokens, not browser sessions
    csrf.exempt(account.bp)

    app.logger.info("Sandbox is on: calls go to the built-in offline carrier at %s", app.config["TWILIO_API_BASE_URL"])
    if not serving():
        return  # `flask agents …` and friends: no banner, and no demo agent before the real ones
    print(f" * Dialer sandbox is on: no Twilio account needed; calls go to the simulated carrier "
          f"at {app.config['TWILIO_API_BASE_URL']} (time x{app.config['SANDBOX_TIME_SCALE']}).", flush=True)
    if app.config["SANDBOX_CREATE_DEMO_AGENT"]:
        with app.app_context():
            create_demo_agent()


def serving():
    """True under `flask run` or a WSGI server; False for other `flask` CLI commands."""
    ctx = click.get_current_context(silent=True)
    return ctx is None or ctx.info_name == "run"


def create_demo_agent():
    """On a first run with no agents, make one and print its password once."""
    from ..auth import create_agent
    from ..db import connect
    db = connect(current_app.config["DATABASE"])
    try:
        if db["agents"].count:
            return
        password = secrets.token_urlsafe(9)
        try:
            create_agent(db, "demo", password, role="supervisor", display_name="Demo Agent", generated=True)
        except (ValueError, sqlite3.IntegrityError):  # another worker made it first
            return
    finally:
        db.conn.close()
    print(" * Sandbox demo agent created. Sign in at "
          f"{current_app.config['PUBLIC_BASE_URL']}/login as demo / {password} "
          "(shown only this once; change it with: flask --app app agents set-password demo)", flush=True)
