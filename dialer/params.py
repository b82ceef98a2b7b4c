"""Twilio's webhook parameters: every field the dialer uses, checked for type and range first.

A webhook is kept whole as an event of the call (its raw text), but a field that fails its check
is never used for the call's state and never reaches a date or an integer column: a fuzzer or a
broken proxy cannot give a call a negative duration, a year-9999 end or a 500.
"""
import re
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

CALL_STATUSES = ("queued", "initiated", "ringing", "in-progress", "completed", "busy", "failed",
                 "no-answer", "canceled")
DIAL_STATUSES = ("completed", "answered", "busy", "no-answer", "failed", "canceled")
RECORDING_STATUSES = ("in-progress", "paused", "stopped", "processing", "completed", "absent", "failed")
QUEUE_RESULTS = ("bridged", "bridging-in-process", "error", "hangup", "leave", "redirected",
                 "redirected-from-bridged", "queue-full", "system-error")
MAX_CALL_SECONDS = 86400  # Twilio ends every call within 24 h (TimeLimit's maximum)
MAX_FIELD_CHARS = 2048  # the longest value Twilio sends is a URL
EARLIEST = datetime(2008, 1, 1, tzinfo=timezone.utc)  # before Twilio Voice existed


class Callback:
    """A webhook's fields: `raw` as sent, `values` those that passed, `problems` field -> why not."""

    __slots__ = ("raw", "values", "problems")

    def __init__(self, raw, values, problems):
        self.raw, self.values, self.problems = raw, values, problems

    def get(self, name, default=None):
        return self.values.get(name, default)


def _sid(prefix):
    pattern = re.compile(prefix + r"[0-9a-fA-F]{32}")

    def check(text):
        if not pattern.fullmatch(text):
            raise ValueError(f"must be {prefix} followed by 32 hex digits")
        return text
    return check


def _one_of(allowed):
    def check(text):
        if text not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return text
    return check


def _whole(low, high):
    def check(text):
        if not (text.isascii() and text.isdigit() and len(text) <= 12) or not low <= int(text) <= high:
            raise ValueError(f"must be a whole number from {low} to {high}")
        return int(text)
    return check


def timestamp(text):
    """RFC 2822, between Twilio's first year and a day from now, as ISO UTC text."""
    try:
        when = parsedate_to_datetime(text).astimezone(timezone.utc)
    except (TypeError, ValueError, OverflowError, IndexError):
        raise ValueError("must be an RFC 2822 date such as 'Wed, 08 Oct 2025 13:54:12 +0000'") from None
    if not EARLIEST <= when <= datetime.now(timezone.utc) + timedelta(days=1):
        raise ValueError("is not a date this call can have")
    return when.isoformat(timespec="seconds")


def _url(text):
    if not re.fullmatch(r"https?://[^\s]+", text):
        raise ValueError("must be an http(s) URL")
    return text


def _caller(text):
    """A caller ID as Twilio sends it: E.164, a client, a SIP address, or a word for a withheld number."""
    if not re.fullmatch(r"[\w+:@.\-]{1,64}", text):
        raise ValueError("must be a phone number, client or SIP address of at most 64 characters")
    return text


def _digits(text):
    """Keys pressed (0-9, *, #), or `hangup` when <Record> ended because the caller hung up."""
    if text != "hangup" and not re.fullmatch(r"[0-9*#]{1,40}", text):
        raise ValueError("must be keys (0-9, *, #) or hangup")
    return text


FIELDS = {
    "AccountSid": _sid("AC"),
    "CallSid": _sid("CA"),
    "ParentCallSid": _sid("CA"),
    "DialCallSid": _sid("CA"),
    "RecordingSid": _sid("RE"),
    "CallStatus": _one_of(CALL_STATUSES),
    "DialCallStatus": _one_of(DIAL_STATUSES),
    "RecordingStatus": _one_of(RECORDING_STATUSES),
    "SequenceNumber": _whole(0, 2**31 - 1),
    "CallDuration": _whole(0, MAX_CALL_SECONDS),
    "DialCallDuration": _whole(0, MAX_CALL_SECONDS),
    "RecordingDuration": _whole(0, MAX_CALL_SECONDS),
    "RecordingChannels": _whole(1, 2),
    "ErrorCode": _whole(0, 99999),
    "Timestamp": timestamp,
    "RecordingUrl": _url,
    # Customers calling in: the caller, and what the queue and <Record> report.
    "From": _caller,
    "QueueResult": _one_of(QUEUE_RESULTS),
    "QueueTime": _whole(0, MAX_CALL_SECONDS),
    "QueuePosition": _whole(0, 2**31 - 1),
    "CurrentQueueSize": _whole(0, 2**31 - 1),
    "Digits": _digits,
}


def read(form):
    """Check every known field of a webhook's form (a MultiDict, or a dict of first values); the first value counts."""
    raw = form.to_dict() if hasattr(form, "to_dict") else dict(form)
    values, problems = {}, {}
    for name, text in raw.items():
        check = FIELDS.get(name)
        if len(text) > MAX_FIELD_CHARS:
            problems[name] = f"is longer than {MAX_FIELD_CHARS} characters"
        elif check is None:
            values[name] = text
        else:
            try:
                values[name] = check(text)
            except ValueError as error:
                problems[name] = str(error)
    return Callback(raw, values, problems)


def trusted(values):
    """An event the app itself makes: its fields are already the right types."""
    return Callback(dict(values), dict(values), {})
