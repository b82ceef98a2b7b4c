"""Trusted browsers: one that has signed in as a username before keeps its own budget of failed
sign-ins for it, so nobody else's failures lock that agent out (OWASP's "device cookies").

The sign-in throttle (`audit.sign_in_wait`) refuses a username after a few failures and an address
after more. Anyone can run those counts up: a stranger who types alice's name five times, or, behind
one office address, a morning of colleagues' typos. So after a successful sign-in the browser gets
a cookie, signed with SECRET_KEY by itsdangerous (as Flask signs its own cookies), holding a random
device id and the usernames that signed in on it (a hot desk has several). A sign-in from that
browser for one of those usernames is counted for that device alone; the username and address
limits count only the others. The cookie goes to /login only, for LOGIN_TRUSTED_DEVICE_DAYS after
the last sign-in on it (0: off).
"""
import secrets

from flask import current_app, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "dialer_device"
MAX_USERNAMES = 20  # a shared desk's browser keeps its most recent agents


def _serializer():
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="dialer-trusted-device")


def _lifetime():
    return current_app.config["LOGIN_TRUSTED_DEVICE_DAYS"] * 86400


def _this_browser():
    """This request's device cookie as {"id", "users"} when it is ours and recent, else None."""
    text = request.cookies.get(COOKIE)
    if not _lifetime() or not text:
        return None
    try:
        device = _serializer().loads(text, max_age=_lifetime())
    except BadSignature:  # forged, altered, signed with an old SECRET_KEY, or expired
        return None
    if (not isinstance(device, dict) or not isinstance(device.get("id"), str)
            or not isinstance(device.get("users"), list)):
        return None
    return device


def trusted_for(username):
    """This browser's device id if it signed in as `username` before, else None."""
    device = _this_browser()
    return device["id"] if device and username in device["users"] else None


def remember(response, username):
    """After a successful sign-in: the browser is trusted for `username` (and its other users) anew."""
    if not _lifetime():
        return
    device = _this_browser() or {"id": secrets.token_urlsafe(16), "users": []}
    users = [username] + [user for user in device["users"] if user != username][:MAX_USERNAMES - 1]
    cfg = current_app.config
    response.set_cookie(COOKIE, _serializer().dumps({"id": device["id"], "users": users}), max_age=_lifetime(),
                        path=url_for("auth.login"), secure=cfg["SESSION_COOKIE_SECURE"], httponly=True,
                        samesite=cfg["SESSION_COOKIE_SAMESITE"])
