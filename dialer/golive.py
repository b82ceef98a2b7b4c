"""Going live: `flask twilio setup` configures the Twilio account, `flask twilio check` reads it back.

Both talk to Twilio with the official Client (telephony.build_client), or to a sandbox when
TWILIO_API_BASE_URL is set. They need only the account SID and auth token: the start-up checks
that want an API key, a TwiML App and a caller ID are relaxed for these commands alone (see
`command_line_runs_twilio`), since setup is what makes them.
"""
import os
import re
import sys
from dataclasses import dataclass

import click
import requests
from flask import Flask, current_app
from flask.cli import AppGroup
from twilio.base.exceptions import TwilioException, TwilioRestException

from . import config, telephony

twilio_cli = AppGroup("twilio", help="Configure the Twilio account for the dialer (setup) and check it (check).")

NAME = "Dialer"  # the friendly name of the API key and TwiML App setup makes or reuses
GO_LIVE_SETTINGS = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_KEY_SID", "TWILIO_API_KEY_SECRET",
                    "TWILIO_TWIML_APP_SID", "TWILIO_CALLER_ID")
CONSOLE = "https://console.twilio.com"


class Stop(Exception):
    """Setup or check cannot go on; the message is the sentence for the person at the terminal."""


def command_line_runs_twilio(argv=None):
    """True when this process is `flask [--app X] twilio …`: the one command whose start-up may lack
    the API key, TwiML App and caller ID. Read from the command line because the flask CLI builds
    the app (create_app) before it knows which command it will run."""
    argv = sys.argv if argv is None else argv
    if not argv or not (os.path.basename(argv[0]) == "flask" or argv[0].endswith(os.path.join("flask", "__main__.py"))):
        return False
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-A", "--app", "-e", "--env-file"):
            next(args, None)
        elif not arg.startswith("-"):
            return arg == "twilio"
    return False


def read_settings(overrides=None):
    """The settings as the app reads them (instance/config.py, DIALER_*), with the command's options on top."""
    probe = Flask("dialer", instance_relative_config=True, instance_path=current_app.instance_path)
    config.load(probe, {k: v for k, v in (overrides or {}).items() if v is not None}, twilio_settings_required=False)
    return probe.config


def load_settings(overrides, options=True):
    """The settings for a command that talks to Twilio: Stop unless they name a Twilio account."""
    try:
        cfg = read_settings(overrides)
    except config.ConfigError as error:
        raise Stop(f"The settings are wrong: {error}.") from None
    if cfg["TELEPHONY"] != "twilio":
        raise Stop("TELEPHONY is 'sandbox', so there is no Twilio account to set up or check: "
                   + ("give --account-sid and --auth-token, or " if options else "")
                   + "set DIALER_TWILIO_ACCOUNT_SID and DIALER_TWILIO_AUTH_TOKEN (and TELEPHONY to 'twilio' if it is set).")
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"):
        if not cfg[name]:
            option = f"--{name[7:].lower().replace('_', '-')} or " if options else ""
            raise Stop(f"{name} is not set: give it with {option}DIALER_{name} (both are on the Twilio Console's "
                       f"home page, {CONSOLE}).")
    return cfg


def masked(secret):
    """Enough of a secret to recognise it, never all of it."""
    return f"…{secret[-4:]}" if secret and len(secret) > 8 else "…"


def main_client(cfg):
    return telephony.build_client(cfg["TWILIO_ACCOUNT_SID"], cfg["TWILIO_ACCOUNT_SID"], cfg["TWILIO_AUTH_TOKEN"],
                                  cfg["TWILIO_API_BASE_URL"], cfg["TWILIO_TIMEOUT"])


def where(cfg):
    return cfg["TWILIO_API_BASE_URL"] or telephony.TWILIO_API


def fetch_account(cfg, client):
    """The account, or Stop with a sentence when the SID and auth token are refused."""
    try:
        account = client.api.v2010.accounts(cfg["TWILIO_ACCOUNT_SID"]).fetch()
    except TwilioRestException as error:
        if error.status in (401, 403, 404):
            raise Stop(f"Twilio ({where(cfg)}) refused the account SID {cfg['TWILIO_ACCOUNT_SID']} with the auth token "
                       f"{masked(cfg['TWILIO_AUTH_TOKEN'])} (error {error.code or error.status}). Copy both again from "
                       f"the Twilio Console's home page ({CONSOLE}); a test account's credentials will not do.") from None
        raise
    if account.status != "active":
        raise Stop(f"The Twilio account {account.sid} is {account.status}, not active: nothing can be set up on it.")
    return account


def owned_number(cfg, client, number):
    """The IncomingPhoneNumber for exactly this number, or None."""
    for found in client.incoming_phone_numbers.list(phone_number=number):
        if found.phone_number == number:
            return found
    return None


def key_works(cfg, sid, secret):
    """True when Twilio accepts a request signed in with this API key and secret."""
    client = telephony.build_client(cfg["TWILIO_ACCOUNT_SID"], sid, secret, cfg["TWILIO_API_BASE_URL"], cfg["TWILIO_TIMEOUT"])
    # A page of numbers: a resource a standard key may read (Accounts and Keys it may not).
    response = client.request("GET", f"{telephony.TWILIO_API}/2010-04-01/Accounts/{cfg['TWILIO_ACCOUNT_SID']}"
                                     "/IncomingPhoneNumbers.json", params={"PageSize": 1})
    if response.status_code in (401, 403):
        return False
    if response.status_code >= 400:
        raise TwilioException(f"HTTP {response.status_code} when trying API key {sid}: {response.text[:200]}")
    return True


def urls(cfg):
    base = cfg["PUBLIC_BASE_URL"]
    return {"inbound": base + "/twiml/inbound", "outbound": base + "/twiml/outbound", "status": base + "/twiml/status"}


def number_wants(cfg, number):
    """The number's fields setup sets, with their wanted values."""
    u = urls(cfg)
    wants = {"voice_url": u["inbound"], "voice_method": "POST", "status_callback": u["status"],
             "status_callback_method": "POST"}
    if number.voice_application_sid:
        wants["voice_application_sid"] = ""  # a TwiML App on the number overrides its voice URL
    return wants


LABELS = {"voice_url": "voice URL", "voice_method": "voice method", "status_callback": "status callback",
          "status_callback_method": "status callback method", "voice_application_sid": "TwiML App"}


def describe(value):
    return repr(value) if value else "(none)"


def run(body):
    """Run a command body: bad input or a refusal from Twilio is a sentence and exit code 1, never a traceback."""
    try:
        return body()
    except Stop as stop:
        click.echo(str(stop), err=True)
    except TwilioRestException as error:
        click.echo(f"Twilio refused a request ({error.method} {error.uri}): {error.msg} (error {error.code}).", err=True)
    except TwilioException as error:
        response = error.args[1] if len(error.args) == 2 else None  # a list page Twilio refused
        if hasattr(response, "status_code"):
            click.echo(f"Twilio refused a list request (HTTP {response.status_code}: {response.text.strip()[:200]}).", err=True)
        else:
            click.echo(f"Twilio's answer made no sense: {error}.", err=True)
    except requests.RequestException as error:
        click.echo(f"Could not reach Twilio: {error}. Check the network and TWILIO_API_BASE_URL, then run it again.",
                   err=True)
    raise SystemExit(1)


# --- setup --------------------------------------------------------------------------------------

@dataclass
class Change:
    text: str  # what it does, as a sentence after "Would " / as done
    apply: object  # a function doing it, returning a sentence of what was done


@twilio_cli.command("setup")
@click.option("--account-sid", help="The account SID (default: TWILIO_ACCOUNT_SID).")
@click.option("--auth-token", help="The account's auth token (default: TWILIO_AUTH_TOKEN).")
@click.option("--number", help="The Twilio number customers see and ring, E.164 (default: TWILIO_CALLER_ID).")
@click.option("--name", "friendly_name", default=NAME, show_default=True,
              help="Friendly name of the API key and TwiML App to make or reuse.")
@click.option("--write", is_flag=True, help="Write the settings into instance/config.py, keeping its other lines.")
@click.option("--dry-run", is_flag=True, help="Show what would change, and change nothing.")
@click.option("--allow-http", is_flag=True,
              help="Accept an http PUBLIC_BASE_URL, only when TWILIO_API_BASE_URL points at a sandbox: a rehearsal "
                   "on a machine without a certificate. Real Twilio needs https: browsers give a page the microphone "
                   "only over https, and webhooks and their signatures must not travel in clear.")
def setup_command(account_sid, auth_token, number, friendly_name, write, dry_run, allow_http):
    """Make or reuse the API key and TwiML App, and point the number at this dialer."""
    run(lambda: setup(account_sid, auth_token, number, friendly_name, write, dry_run, allow_http))


def setup(account_sid, auth_token, number, friendly_name, write, dry_run, allow_http):
    cfg = load_settings({"TWILIO_ACCOUNT_SID": account_sid, "TWILIO_AUTH_TOKEN": auth_token,
                         "TWILIO_CALLER_ID": number})
    public = cfg["PUBLIC_BASE_URL"]
    if not public.startswith("https://"):
        if not allow_http:
            raise Stop(f"PUBLIC_BASE_URL is {public}, which is not https: Twilio must call the dialer at an https "
                       "URL and browsers give the agents a microphone only over https. Set DIALER_PUBLIC_BASE_URL "
                       "to the dialer's https address (https://dialer.example.com). Nothing was changed.")
        if not cfg["TWILIO_API_BASE_URL"]:
            raise Stop("--allow-http is only for a rehearsal against a sandbox (TWILIO_API_BASE_URL set); real "
                       "Twilio needs an https PUBLIC_BASE_URL. Nothing was changed.")
    number = cfg["TWILIO_CALLER_ID"]
    if not number:
        raise Stop("No number to set up: give --number +44… or set TWILIO_CALLER_ID to a number the Twilio account owns.")

    client = main_client(cfg)
    account = fetch_account(cfg, client)
    click.echo(f"Twilio account {account.sid} ({account.friendly_name}) at {where(cfg)}: credentials accepted.")
    found = owned_number(cfg, client, number)
    if found is None:
        raise Stop(f"The Twilio account {account.sid} does not own {number}, so it can neither call from it nor "
                   f"answer it. Buy a number in the Console (Phone Numbers → Buy a number), or give one the account "
                   f"owns with --number; a verified caller ID cannot take calls. Nothing was changed.")
    settings = {}  # the values the dialer needs, as they will be after setup
    changes = plan_key(cfg, client, friendly_name, settings) + plan_app(cfg, client, friendly_name, settings)
    changes += plan_number(cfg, client, found)
    settings.update(TWILIO_ACCOUNT_SID=cfg["TWILIO_ACCOUNT_SID"], TWILIO_AUTH_TOKEN=cfg["TWILIO_AUTH_TOKEN"],
                    TWILIO_CALLER_ID=number)
    if found.trunk_sid:
        click.echo(f"Note: {number} is on SIP trunk {found.trunk_sid}, which overrides its voice URL: take it off the "
                   f"trunk in the Console (setup leaves trunks alone).")

    if dry_run:
        for change in changes:
            click.echo(f"Would {change.text}.")
        click.echo("Dry run: nothing was changed." if changes else "Dry run: nothing to change.")
        report_settings(cfg, settings, write=False, dry_run=True)
        return
    if not changes:
        click.echo(f"Nothing to change: the API key, the TwiML App and {number} are set up for {public}.")
    for change in changes:
        click.echo(change.apply())
    report_settings(cfg, settings, write=write, dry_run=False)


def plan_key(cfg, client, name, settings):
    """Keep a configured key that works; else make one (a key's secret is shown only when it is made)."""
    sid, secret = cfg["TWILIO_API_KEY_SID"], cfg["TWILIO_API_KEY_SECRET"]
    keys = client.keys.list()
    if sid and secret and any(k.sid == sid for k in keys) and key_works(cfg, sid, secret):
        click.echo(f"API key {sid} (the configured one) works: kept.")
        settings.update(TWILIO_API_KEY_SID=sid, TWILIO_API_KEY_SECRET=secret)
        return []
    if not sid:
        why = "no API key is configured (TWILIO_API_KEY_SID)"
    elif not secret:
        why = f"the configured API key {sid} has no secret in the settings (TWILIO_API_KEY_SECRET)"
    elif not any(k.sid == sid for k in keys):
        why = f"the configured API key {sid} is not in this account"
    else:
        why = f"Twilio refuses the configured API key {sid} with its secret (TWILIO_API_KEY_SECRET)"
    named = [k.sid for k in keys if k.friendly_name == name and k.sid != sid]
    if named:
        click.echo(f"API key '{name}' exists ({', '.join(named)}), but Twilio shows a key's secret only when the key "
                   f"is made and the settings do not hold it, so it cannot be reused: a new key is needed. Delete the "
                   f"old one in the Console (Account → API keys) once nothing uses it.")

    def create():
        key = client.new_keys.create(friendly_name=name)
        settings.update(TWILIO_API_KEY_SID=key.sid, TWILIO_API_KEY_SECRET=key.secret)
        return f"Created API key '{name}' ({key.sid}), because {why}."
    settings.update(TWILIO_API_KEY_SID="(the new key's SID)", TWILIO_API_KEY_SECRET="(the new key's secret)")
    return [Change(f"create API key '{name}', because {why}", create)]


def plan_app(cfg, client, name, settings):
    """Reuse the configured TwiML App, else the one with this friendly name, else make one; fix its voice URL."""
    app, sid = None, cfg["TWILIO_TWIML_APP_SID"]
    if sid:
        try:
            app = client.applications(sid).fetch()
        except TwilioRestException as error:
            if error.status != 404:
                raise
            click.echo(f"The configured TwiML App {sid} is not in this account: looking for '{name}'.")
    if app is None:
        app = next(iter(client.applications.list(friendly_name=name)), None)
    outbound = urls(cfg)["outbound"]
    if app is None:
        def create():
            made = client.applications.create(friendly_name=name, voice_url=outbound, voice_method="POST")
            settings["TWILIO_TWIML_APP_SID"] = made.sid
            return f"Created TwiML App '{name}' ({made.sid}) with voice URL {outbound} (POST)."
        settings["TWILIO_TWIML_APP_SID"] = "(the new TwiML App's SID)"
        return [Change(f"create TwiML App '{name}' with voice URL {outbound} (POST)", create)]
    settings["TWILIO_TWIML_APP_SID"] = app.sid
    return field_changes(f"TwiML App '{app.friendly_name}' ({app.sid})", app, {"voice_url": outbound, "voice_method": "POST"},
                         client.applications(app.sid).update)


def plan_number(cfg, client, number):
    """Point the number's voice URL and status callback at this dialer."""
    return field_changes(number.phone_number, number, number_wants(cfg, number),
                         client.incoming_phone_numbers(number.sid).update)


def field_changes(subject, resource, wants, update):
    """One Change per field of `resource` that is not as wanted; `update(field=value)` makes it."""
    changes = []
    for field, value in wants.items():
        have = getattr(resource, field) or ""
        if have != value:
            text = f"{subject} {LABELS[field]} {describe(have)} → {describe(value)}"
            changes.append(Change(f"change {text}", lambda field=field, value=value, text=text: (
                update(**{field: value}), f"Changed {text}.")[1]))
    return changes


def report_settings(cfg, settings, write, dry_run):
    """Print (or write) the settings the dialer needs that the stored settings (without the options) lack."""
    stored = read_settings()
    missing = {name: settings[name] for name in GO_LIVE_SETTINGS if settings.get(name) != stored[name]}
    if not missing:
        click.echo("The settings already hold the account SID, auth token, API key, TwiML App and caller ID.")
        return
    path = os.path.join(current_app.instance_path, "config.py")
    if write:
        write_settings(path, missing)
        click.echo(f"Wrote {', '.join(missing)} to {path} (its other lines are kept).")
        for name, value in missing.items():
            if f"DIALER_{name}" in os.environ and os.environ[f"DIALER_{name}"] != value:
                click.echo(f"Warning: DIALER_{name} in the environment overrides {path}: set it to the new value there "
                           "too, or remove it.")
        return
    lead = "These settings would go" if dry_run else "Put these settings"
    click.echo(f"{lead} in {path} (or run again with --write):")
    for name, value in missing.items():
        if name == "TWILIO_AUTH_TOKEN":
            click.echo(f'    {name} = "<the auth token you gave, ending {masked(value)}>"')
        elif name == "TWILIO_API_KEY_SECRET" and not dry_run:
            click.echo(f"    {name} = {value!r}  # shown only this once: Twilio cannot show it again")
        else:
            click.echo(f"    {name} = {value!r}")


def write_settings(path, values):
    """Set NAME = value lines in instance/config.py: an existing line is replaced, others are kept."""
    lines = []
    if os.path.exists(path):
        with open(path) as f:
            lines = f.read().splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    for name, value in values.items():
        line = f"{name} = {value!r}\n"
        pattern = re.compile(rf"^{name}\s*=")
        at = next((i for i, old in enumerate(lines) if pattern.match(old)), None)
        if at is None:
            lines.append(line)
        else:
            lines[at] = line
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds secrets
    with os.fdopen(fd, "w") as f:
        f.writelines(lines)
    os.replace(path + ".tmp", path)


# --- check (dialer/golive_check.py) --------------------------------------------------------------

@twilio_cli.command("check")
def check_command():
    """Read the Twilio account's configuration back and say what is right and what is wrong."""
    from .golive_check import Report, check  # the reading back lives in its own module
    report = Report()
    run(lambda: check(report))
    if report.wrong:
        click.echo(f"{report.wrong} thing{'s' if report.wrong > 1 else ''} wrong: fix {'them' if report.wrong > 1 else 'it'} "
                   "(flask --app app twilio setup does the Twilio side) and run the check again.")
        raise SystemExit(1)
    click.echo("All set.")
