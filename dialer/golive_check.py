"""`flask twilio check`: read the Twilio account's configuration back, line by line, right or wrong."""
import logging
import re

import click
from flask import current_app
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.request_validator import RequestValidator

from .golive import LABELS, describe, fetch_account, key_works, load_settings, main_client, number_wants, owned_number, urls, where


class Report:
    """Lines of ✓ (right), ✗ (wrong, with what to do) and ? (could not be checked)."""

    def __init__(self):
        self.wrong = 0

    def ok(self, text):
        click.echo(f"✓ {text}")

    def bad(self, text):
        self.wrong += 1
        click.echo(f"✗ {text}")

    def unknown(self, text):
        click.echo(f"? {text}")


def check(report):
    cfg = load_settings({}, options=False)
    public, setup_hint = cfg["PUBLIC_BASE_URL"], "run: flask --app app twilio setup"
    if public.startswith("https://"):
        report.ok(f"PUBLIC_BASE_URL {public} is https.")
    elif cfg["TWILIO_API_BASE_URL"]:
        report.unknown(f"PUBLIC_BASE_URL {public} is not https: fine for a rehearsal against a sandbox, not for Twilio.")
    else:
        report.bad(f"PUBLIC_BASE_URL {public} is not https: Twilio and the agents' browsers need the dialer's https address.")
    client = main_client(cfg)
    account = fetch_account(cfg, client)
    report.ok(f"The account SID and auth token are accepted: account {account.sid} ({account.friendly_name}) is active.")
    check_key(cfg, report, setup_hint)
    check_app(cfg, client, report, setup_hint)
    check_number(cfg, client, report, setup_hint)
    check_countries(cfg, client, report)
    check_signature(cfg, report)


def check_key(cfg, report, hint):
    sid, secret = cfg["TWILIO_API_KEY_SID"], cfg["TWILIO_API_KEY_SECRET"]
    if not (sid and secret):
        report.bad(f"No API key is configured (TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET): {hint}.")
    elif key_works(cfg, sid, secret):
        report.ok(f"API key {sid} signs in with its secret.")
    else:
        report.bad(f"Twilio refuses API key {sid} with the configured secret (deleted, or a wrong secret): {hint}.")


def check_app(cfg, client, report, hint):
    sid, outbound = cfg["TWILIO_TWIML_APP_SID"], urls(cfg)["outbound"]
    if not sid:
        report.bad(f"No TwiML App is configured (TWILIO_TWIML_APP_SID): {hint}.")
        return
    try:
        app = client.applications(sid).fetch()
    except TwilioRestException as error:
        if error.status != 404:
            raise
        report.bad(f"TwiML App {sid} (TWILIO_TWIML_APP_SID) is not in this account: {hint}.")
        return
    if app.voice_url == outbound and app.voice_method == "POST":
        report.ok(f"TwiML App '{app.friendly_name}' ({sid}) voice URL is {outbound} (POST).")
    else:
        report.bad(f"TwiML App '{app.friendly_name}' ({sid}) voice URL is {describe(app.voice_url)} "
                   f"({app.voice_method}), not {outbound} (POST): {hint}.")


def check_number(cfg, client, report, hint):
    number = cfg["TWILIO_CALLER_ID"]
    if not number:
        report.bad("No caller ID is configured (TWILIO_CALLER_ID): set it to a number the account owns.")
        return
    found = owned_number(cfg, client, number)
    if found is None:
        report.bad(f"The account does not own the caller ID {number} (TWILIO_CALLER_ID): buy it or configure one it owns.")
        return
    report.ok(f"The account owns the caller ID {number}.")
    for field, value in number_wants(cfg, found).items():
        have = getattr(found, field) or ""
        if field == "voice_application_sid":
            report.bad(f"{number} is on TwiML App {have}, which overrides its voice URL: {hint}.")
        elif have == value:
            report.ok(f"{number} {LABELS[field]} is {value}.")
        else:
            report.bad(f"{number} {LABELS[field]} is {describe(have)}, not {value!r}: {hint}.")
    if found.trunk_sid:
        report.bad(f"{number} is on SIP trunk {found.trunk_sid}, which overrides its voice URL: take it off the trunk in the Console.")


def check_countries(cfg, client, report):
    """Voice geo permissions of each country in ALLOWED_COUNTRIES (Twilio's Voice API, not the 2010 one)."""
    countries = cfg["ALLOWED_COUNTRIES"]
    for code in countries:
        try:
            found = client.voice.v1.dialing_permissions.countries.list(iso_code=code, limit=1)
        except TwilioException as error:  # a list page that fails is a bare TwilioException
            status = getattr(error, "status", None) or next(iter(re.findall(r"HTTP (\d{3})", str(error))), "?")
            report.unknown(f"The voice geo permissions could not be read (HTTP {status} from {where(cfg)}): check "
                           f"that {', '.join(countries)} (ALLOWED_COUNTRIES) are allowed in the Console → Voice → "
                           "Settings → Geo permissions.")
            return
        if not found:
            report.unknown(f"Twilio lists no geo permissions for {code} (ALLOWED_COUNTRIES): check it in the Console.")
        elif found[0].low_risk_numbers_enabled:
            report.ok(f"Calls to {code} ({found[0].name}) are allowed (geo permissions).")
        else:
            report.bad(f"Calls to {code} ({found[0].name}) are not allowed, yet ALLOWED_COUNTRIES has it: enable it in "
                       "the Console → Voice → Settings → Geo permissions, or remove it from ALLOWED_COUNTRIES.")


def check_signature(cfg, report):
    """Sign a status callback for PUBLIC_BASE_URL with the auth token, as Twilio would, and hand it to the app."""
    url = urls(cfg)["status"]
    form = {"AccountSid": cfg["TWILIO_ACCOUNT_SID"], "CallSid": "CA" + "0" * 32, "CallStatus": "completed"}
    signature = RequestValidator(cfg["TWILIO_AUTH_TOKEN"]).compute_signature(url, form)
    logger, level = current_app.logger, current_app.logger.level
    logger.setLevel(logging.ERROR)  # the app logs this made-up call as unknown: not news here
    try:
        response = current_app.test_client().post(url, data=form, headers={"X-Twilio-Signature": signature})
    finally:
        logger.setLevel(level)
    if response.status_code == 403:
        report.bad(f"The app refuses a callback signed for {url} with the auth token: PUBLIC_BASE_URL and "
                   "TWILIO_AUTH_TOKEN must be what Twilio uses (the URL exactly as Twilio calls it).")
    else:
        report.ok(f"A callback signed for {url} with the auth token passes the app's signature check.")
