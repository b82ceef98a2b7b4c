"""The sandbox's call engine: progresses calls, sends signed webhooks, executes TwiML.

Behaviour follows ../shared/twilio/TWILIO.md sections 3, 4 and 9; every call runs in its own thread.
<Dial> lives in dial.py, <Enqueue>/<Queue> in queues.py, <Gather>/<Record> in listen.py.
"""
import logging
import random
import threading
import time
import xml.etree.ElementTree as ET
from urllib.parse import urlencode, urljoin, urlsplit

import requests
from twilio.request_validator import RequestValidator

from . import callers, customers
from .carrier import rfc2822, utc
from .credentials import sid as new_sid
from .dial import CONTINUE, DialVerb
from .listen import ListenVerbs
from .queues import FOREVER, Queues, QueueVerbs

log = logging.getLogger("dialer.sandbox")

SIP_CODES = {"completed": "200", "busy": "486", "no-answer": "487", "canceled": "487", "failed": "404"}
APPLICATION_ERROR = "We are sorry, an application error has occurred. Goodbye."
WORDS_PER_SECOND = 2.5
DTMF_SECONDS = 0.1  # one key's tone and the gap after it
PLAY_SECONDS = 2  # a <Play> file's length: nothing is fetched, so a URL fragment #t=start,end tells it


class Engine(DialVerb, QueueVerbs, ListenVerbs):
    def __init__(self, carrier):
        self.carrier = carrier
        self.validator = RequestValidator(carrier.auth_token)
        self.queues = Queues(carrier)
        self.connected = set()  # CallSids that reached a person or a voicemail
        self.listening = {}  # CallSid -> keys heard while a <Gather> listens on that leg

    # --- webhooks ---------------------------------------------------------------------------
    def post(self, leg, url, params, method="POST", kind="webhook"):
        """Send a signed webhook as Twilio does; returns the response, or None on failure."""
        headers = {"User-Agent": "TwilioProxy/1.1 (dialer sandbox)", "I-Twilio-Idempotency-Token": new_sid("")}
        try:
            if method == "GET":
                sep = "&" if "?" in url else "?"
                full = url + sep + urlencode(params)
                headers["X-Twilio-Signature"] = self.validator.compute_signature(full, {})
                response = requests.get(full, headers=headers, timeout=15)
            else:
                headers["X-Twilio-Signature"] = self.validator.compute_signature(url, params)
                response = requests.post(url, data=params, headers=headers, timeout=15)
        except requests.RequestException as error:
            self.notice(leg, 11205, f"{kind} {url}: connection failed ({error})")
            return None
        if not 200 <= response.status_code < 300:
            self.notice(leg, 11200, f"{kind} {url}: HTTP {response.status_code}")
            return None
        return response

    def notice(self, leg, code, message):
        """Twilio's debugger: remember what went wrong with a call."""
        log.warning("sandbox call %s: error %s: %s", leg.sid if leg else "-", code, message)
        with self.carrier.lock:
            self.carrier.notifications.append({"call_sid": leg.sid if leg else None, "error_code": code,
                                               "message": message, "date_created": rfc2822(utc())})

    def params(self, leg, **extra):
        """The standard voice request parameters (TWILIO.md 3.2)."""
        p = {"AccountSid": leg.account_sid, "ApiVersion": "2010-04-01", "CallSid": leg.sid,
             "CallStatus": leg.status, "Direction": leg.direction, "From": leg.from_, "To": leg.to,
             "Caller": leg.from_, "Called": leg.to, "FromCountry": "", "ToCountry": "",
             "FromCity": "", "ToCity": ""}
        if leg.parent_sid:
            p["ParentCallSid"] = leg.parent_sid
        p.update({k: str(v) for k, v in extra.items() if v is not None})
        return p

    def status_event(self, leg, event):
        """A call-progress callback, if the leg subscribed to this event."""
        if not leg.status_callback or event not in leg.status_events:
            return
        call_status = {"initiated": "initiated", "ringing": "ringing", "answered": "in-progress"}.get(event, leg.status)
        extra = {"CallbackSource": "call-progress-events", "Timestamp": rfc2822(utc()),
                 "SequenceNumber": leg.sequence, "SipResponseCode": SIP_CODES.get(call_status, "180")}
        if event == "answered":
            extra["SipResponseCode"] = "200"
        if event == "completed":
            extra["CallDuration"] = leg.duration or 0
            extra["Duration"] = -(-(leg.duration or 0) // 60)
            if leg.error_code:
                extra["ErrorCode"] = leg.error_code
        leg.sequence += 1
        params = self.params(leg, CallStatus=call_status, **extra)
        if self.carrier.chaos:
            leg.buffered_callbacks.append(params)
            if event == "completed":
                self.flush_shuffled(leg)
            return
        self.post(leg, leg.status_callback, params, leg.status_callback_method, "status callback")

    def flush_shuffled(self, leg):
        """Chaos mode: every buffered callback twice, in an order that is not the real one."""
        batch = leg.buffered_callbacks * 2
        leg.buffered_callbacks = []
        rng = random.Random(leg.sid)
        rng.shuffle(batch)
        # Not the real order: the first copies to arrive must not come in sequence (a reversal
        # alone could leave them so when both copies of the first callback end up at the ends).
        real = sorted({int(params["SequenceNumber"]) for params in batch})
        while len(real) > 1 and list(dict.fromkeys(int(params["SequenceNumber"]) for params in batch)) == real:
            rng.shuffle(batch)
        for params in batch:
            self.post(leg, leg.status_callback, params, leg.status_callback_method, "status callback")

    # --- leg state -------------------------------------------------------------------------
    def set_status(self, leg, status):
        with self.carrier.lock:
            leg.status = status
            leg.date_updated = utc()
            if status == "ringing" and not leg.start_time:
                leg.start_time = utc()
            if status == "in-progress":
                leg.answered_mono = time.monotonic()
                leg.start_time = utc()
        self.carrier.notify()

    def finish(self, leg, status):
        """End a leg with its final status and send the `completed` event."""
        with self.carrier.lock:
            if not leg.live:
                return
            # Timed to the hang-up itself, not to when the sandbox got round to finishing the leg.
            ended = leg.ended_mono or time.monotonic()
            leg.duration = round((ended - leg.answered_mono) / self.carrier.scale) if leg.answered_mono else 0
            leg.status = status
            leg.end_time = leg.date_updated = utc()
            self.connected.discard(leg.sid)
        self.carrier.notify()
        self.status_event(leg, "completed")

    def up(self, leg):
        return leg.live and not leg.ended_by

    # --- calls ------------------------------------------------------------------------------
    def start(self, target, *args):
        threading.Thread(target=self._guard, args=(target, *args), daemon=True).start()

    def _guard(self, target, leg, *args):
        try:
            target(leg, *args)
        except Exception:  # a bug in the sandbox must not leave a call hanging forever
            log.exception("sandbox call %s crashed", leg.sid)
            self.finish(leg, "failed")

    def run_outbound(self, leg):
        """A REST-created call to a simulated customer (TWILIO.md 1.4)."""
        c = self.carrier
        who = customers.behaviour(leg.to)
        self.status_event(leg, "initiated")
        if c.wait(0.5, lambda: leg.ended_by):
            return self.finish(leg, "canceled")
        self.set_status(leg, "ringing")
        self.status_event(leg, "ringing")
        if who.outcome == "failed":
            c.wait(0.5)
            return self.finish(leg, "failed")
        ring = {"busy": 1, "no-answer": leg.timeout}.get(who.outcome, customers.RING_SECONDS)
        if c.wait(ring, lambda: leg.ended_by):
            return self.finish(leg, "canceled")
        if who.outcome != "answer":
            return self.finish(leg, who.outcome)
        self.set_status(leg, "in-progress")
        self.status_event(leg, "answered")
        if who.hangup_after:
            self.start(self.customer_hangs_up, leg, who.hangup_after)
        if leg.send_digits:
            self.key_in(leg)
        first = ("url", leg.url, leg.method, {}) if leg.url else ("twiml", leg.twiml, None, {})
        self.run_document(leg, first)
        self.finish(leg, "completed")

    def key_in(self, leg):
        """Play SendDigits to the answered customer, pauses included, before the call's TwiML runs."""
        for key in leg.send_digits:
            seconds = {"w": 0.5, "W": 1.0}.get(key, DTMF_SECONDS)
            if self.carrier.wait(seconds, lambda: leg.ended_by):
                return
            leg.sent_digits += key

    def customer_hangs_up(self, leg, after):
        self.carrier.wait(after, lambda: not leg.live)
        with self.carrier.lock:
            if leg.live and not leg.ended_by:
                leg.hang_up("customer")
        self.carrier.notify()

    def run_inbound(self, leg, voice_url, method="POST"):
        """A simulated customer calls the Twilio number: fetch its voice URL with CallStatus=ringing."""
        self.set_status(leg, "ringing")
        callers.watch(self, leg)
        self.run_document(leg, ("url", voice_url, method, {}))
        self.finish(leg, "completed" if leg.answered_mono else "no-answer")

    # --- TwiML ------------------------------------------------------------------------------
    def run_document(self, leg, doc):
        """Fetch and execute TwiML until the call ends or the documents run out."""
        while doc and self.up(leg):
            loaded = self.load(leg, doc)
            if loaded is None:
                return
            doc = self.execute(leg, *loaded)
            if doc is None and leg.redirect and self.up(leg):
                doc = self.take_redirect(leg)

    def load(self, leg, doc, tried_fallback=False, recover=True):
        """(document URL, parsed <Response>) or None after an application error.

        recover=False (a wait URL, a <Queue url>): no fallback URL and no apology, just None.
        """
        kind, source, method, extra = doc
        if kind == "twiml":
            url, text = None, source
        else:
            url = source
            response = self.post(leg, url, self.params(leg, **extra), method or "POST", "TwiML fetch")
            if response is None:
                return self.application_error(leg, 11200, url, tried_fallback) if recover else None
            text = response.text
        try:
            root = ET.fromstring(text)
        except ET.ParseError as error:
            self.notice(leg, 12100, f"Document parse failure at {url or 'inline TwiML'}: {error}")
            return self.application_error(leg, 12100, url, tried_fallback) if recover else None
        if root.tag != "Response":
            self.notice(leg, 12100, f"Document at {url or 'inline TwiML'} has no <Response> root")
            return self.application_error(leg, 12100, url, tried_fallback) if recover else None
        return url, root

    def application_error(self, leg, code, url, tried_fallback):
        """Twilio's answer to a broken webhook: the fallback URL, else an apology and hang up."""
        if leg.fallback_url and not tried_fallback:
            return self.load(leg, ("url", leg.fallback_url, "POST", {"ErrorCode": code, "ErrorUrl": url}), True)
        leg.error_code = leg.error_code or code
        if leg.answered_mono is None:
            self.set_status(leg, "in-progress")
        leg.heard.append(APPLICATION_ERROR)
        self.pause(leg, self.say_seconds(APPLICATION_ERROR))
        return None

    def take_redirect(self, leg):
        with self.carrier.lock:
            redirect, leg.redirect = leg.redirect, None
        kind, source, method = redirect
        return (kind, source, method, {})

    def say_seconds(self, text, loop=1):
        return max(1.0, len(text.split()) / WORDS_PER_SECOND) * max(loop, 1)

    def pause(self, leg, seconds, until=None):
        return self.carrier.wait(seconds, lambda: leg.ended_by or leg.redirect or (until is not None and until()))

    def sound(self, leg, verb, until=None):
        """<Say>, <Play> or <Pause>: take its time, or stop early when the call moves on or `until()`."""
        loops = loop_count(verb)
        if verb.tag == "Say":
            self.answer_inbound(leg)
            leg.heard.append((verb.text or "").strip())
            self.pause(leg, FOREVER if loops == 0 else self.say_seconds(verb.text or "", loops), until)
        elif verb.tag == "Play":
            self.answer_inbound(leg)
            self.pause(leg, FOREVER if loops == 0 else play_seconds(verb.text or "") * loops, until)
        elif verb.tag == "Pause":
            self.answer_inbound(leg)
            self.pause(leg, number(verb.get("length"), 1), until)

    def answer_inbound(self, leg):
        """An inbound call is answered by its TwiML's first verb, unless that is <Reject>."""
        if leg.answered_mono is None:
            self.set_status(leg, "in-progress")

    def execute(self, leg, url, root):
        """Run the verbs of one document; return the next document, or None when done."""
        for verb in root:
            if not self.up(leg):
                return None
            if leg.redirect:
                return self.take_redirect(leg)
            tag = verb.tag
            if tag in ("Say", "Play", "Pause"):
                self.sound(leg, verb)
            elif tag == "Hangup":
                self.answer_inbound(leg)  # unlike <Reject>, an answered (and billed) call
                leg.hang_up("twiml")
                return None
            elif tag == "Reject":
                if leg.answered_mono is None:
                    leg.hang_up("twiml")
                    self.finish(leg, "busy" if verb.get("reason") == "busy" else "no-answer")
                return None
            elif tag == "Redirect":
                return ("url", urljoin(url or "", (verb.text or "").strip()), verb.get("method", "POST").upper(), {})
            elif tag in ("Dial", "Enqueue", "Record"):
                self.answer_inbound(leg)
                run = {"Dial": lambda: self.dial(leg, url, verb), "Enqueue": lambda: self.enqueue(leg, url, verb, CONTINUE),
                       "Record": lambda: self.record(leg, url, verb, CONTINUE)}[tag]
                result = run()
                if result is not CONTINUE:
                    return result
            elif tag == "Gather":
                self.answer_inbound(leg)
                heard = self.gather(leg, url, verb)
                if heard is not None:
                    return ("url", *heard)
            elif tag == "Leave":
                pass  # outside a queue's wait document there is nothing to leave
            else:
                self.notice(leg, 12200, f"<{tag}> is not supported by the sandbox; skipped")
        return None


def number(text, default):
    """A numeric attribute's value, or the default when missing or not a number."""
    try:
        return float(text) if text is not None else default
    except ValueError:
        return default


def loop_count(verb):
    """`loop`: 1 by default; 0 repeats until the call moves on."""
    return max(int(number(verb.get("loop"), 1)), 0)


def play_seconds(url):
    """How long a <Play> URL lasts: a media fragment #t=start,end says so, else PLAY_SECONDS."""
    fragment = urlsplit(url.strip()).fragment
    if fragment.startswith("t="):
        start, _, end = fragment[2:].partition(",")
        if end:
            return max(number(end, PLAY_SECONDS) - number(start or "0", 0), 0)
    return PLAY_SECONDS
