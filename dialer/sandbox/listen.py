"""The verbs that listen to the caller: <Gather> (keys) and <Record> (a voicemail), TWILIO.md 9.5.

Mixed into the Engine. What the caller keys in comes from callers.py through Engine.press; what they
say into <Record> comes from callers.message.
"""
import threading
import time
from urllib.parse import urljoin

from . import callers
from .carrier import Recording, rfc2822, utc
from .credentials import sid as new_sid

BEEP_SECONDS = 0.5
SHORTEST_RECORDING = 1  # seconds; shorter is "absent", error 16101 (too short to be processed)
RECORDING_READY_SECONDS = 1  # the recording status callback comes once the file is processed


def number_attr(verb, name, default):
    """A whole-number attribute, or its default when missing or not a number."""
    try:
        return int(verb.get(name, default))
    except ValueError:
        return default


class ListenVerbs:
    # --- keys -------------------------------------------------------------------------------
    def press(self, leg, key):
        """The caller presses a key: heard only while a <Gather> listens on the leg (True if heard)."""
        with self.carrier.lock:
            keys = self.listening.get(leg.sid)
            if keys is None or not leg.live:
                return False
            keys.append(key)
        self.carrier.notify()
        return True

    def gather(self, leg, url, verb, interrupted=lambda: False):
        """<Gather input="dtmf">: (action URL, method, {Digits, FinishedOnKey}), or None when nothing came."""
        c = self.carrier
        action = verb.get("action")
        target = urljoin(url or "", action) if action else url  # default: the current document
        timeout = number_attr(verb, "timeout", 5)
        finish = verb.get("finishOnKey", "#")
        limit = number_attr(verb, "numDigits", 0)
        listens = "dtmf" in (verb.get("input") or "dtmf")

        def keys():
            return self.listening.get(leg.sid) or []

        def complete():
            pressed = keys()
            return bool(finish and any(k in finish for k in pressed)) or bool(limit and len(pressed) >= limit)

        def stop():
            return interrupted() or leg.ended_by or leg.redirect

        with c.lock:
            if listens:
                self.listening[leg.sid] = []
        try:
            for child in verb:
                if child.tag in ("Say", "Play", "Pause") and not keys() and not stop():
                    self.sound(leg, child, lambda: interrupted() or keys())  # a key stops the prompt
            while not complete() and not stop():
                count = len(keys())
                if not c.wait(timeout, lambda: len(keys()) != count or complete() or stop()):
                    break  # `timeout` seconds with no key
        finally:
            with c.lock:
                pressed = self.listening.pop(leg.sid, None) or []
        if stop() or not self.up(leg):
            return None
        digits, finished_on = [], ""
        for key in pressed:
            if finish and key in finish:
                finished_on = key
                break
            digits.append(key)
            if limit and len(digits) >= limit:
                break
        if not digits and verb.get("actionOnEmptyResult") != "true":
            return None  # no input: on to the next verb
        if not target:
            self.notice(leg, 12200, "<Gather> without action in inline TwiML has no document to return to")
            return None
        return target, (verb.get("method") or "POST").upper(), {"Digits": "".join(digits), "FinishedOnKey": finished_on}

    # --- voicemail --------------------------------------------------------------------------
    def record(self, leg, url, verb, cont):
        """<Record>: the caller's message becomes a mono recording; `action` gets its URL, length and Digits."""
        c = self.carrier
        self.answer_inbound(leg)
        action = verb.get("action")
        target = urljoin(url or "", action) if action else url  # default: the current document, again
        if not target:
            self.notice(leg, 11100, "<Record> in inline TwiML needs an action URL")
            return cont
        timeout = number_attr(verb, "timeout", 5)
        finish = verb.get("finishOnKey", "1234567890*#")
        max_length = number_attr(verb, "maxLength", 3600) or 3600
        untrimmed = verb.get("trim") == "do-not-trim"
        events = (verb.get("recordingStatusCallbackEvent") or "completed").split()
        if verb.get("playBeep", "true") != "false":
            self.pause(leg, BEEP_SECONDS)
        with c.lock:
            self.connected.add(leg.sid)  # reached the voicemail: a caller who gives up waiting does not now
        far_end = leg.from_ if leg.direction == "inbound" else leg.to
        said = callers.message(far_end)
        recording = Recording(sid=new_sid("RE"), account_sid=leg.account_sid, call_sid=leg.sid, duration=0,
                              channels=1, source="RecordVerb", start_time=utc())
        if "in-progress" in events:
            self.recording_callback(leg, url, verb, recording, "in-progress")
        started = time.monotonic()

        def stop():
            return leg.ended_by or leg.redirect

        speech = min(said.seconds, max_length)
        digits = None  # absent when the silence timeout or maxLength ended the recording
        # The message ends the recording at maxLength; a hang-up or redirect mid-message ends it at once.
        if not c.wait(speech, stop) and speech < max_length:
            if said.then == "hangup":
                with c.lock:
                    leg.hang_up("caller")
                c.notify()
            elif said.then != "silence" and said.then in finish:
                digits = said.then
            elif said.seconds == 0 and timeout:
                # Nothing said before the silence timeout: no recording, on to the next verb (the Record doc's example).
                if not c.wait(timeout, stop):
                    recording.status = "absent"
                    self.recording_callback(leg, url, verb, recording, "absent", error=16101)
                    return cont
            else:
                c.wait(timeout if timeout else max_length - speech, stop)  # silence until the timeout
        if leg.ended_by:
            digits = "hangup"
        elapsed = min(c.sim_seconds_since(started), max_length)
        spoken = min(speech, elapsed)
        recording.duration = round(elapsed if untrimmed else spoken)
        kept = spoken >= SHORTEST_RECORDING
        if kept:
            c.add_recording(recording)
        else:
            recording.status = "absent"
        threading.Thread(target=self.recording_callback, daemon=True,
                         args=(leg, url, verb, recording, recording.status, 16101 if not kept else 0,
                               RECORDING_READY_SECONDS)).start()
        extra = {"RecordingUrl": c.recording_url(recording), "RecordingSid": recording.sid,
                 "RecordingDuration": round(elapsed)}
        if digits is not None:
            extra["Digits"] = digits
        method = (verb.get("method") or "POST").upper()
        if leg.redirect:
            return None  # the new TwiML wins; the recording is kept (TWILIO.md 9.6 leaves this open)
        if not self.up(leg):
            self.post(leg, target, self.params(leg, CallStatus="completed", **extra), method, "Record action")
            return None
        return ("url", target, method, extra)

    def recording_callback(self, leg, url, verb, recording, status, error=0, delay=0):
        """The recording status callback of a <Record>, if this event was asked for."""
        callback = verb.get("recordingStatusCallback")
        events = (verb.get("recordingStatusCallbackEvent") or "completed").split()
        if not callback or status not in events:
            return
        if delay:
            self.carrier.wait(delay)
        params = {"AccountSid": leg.account_sid, "CallSid": leg.sid, "RecordingSid": recording.sid,
                  "RecordingUrl": self.carrier.recording_url(recording), "RecordingStatus": status,
                  "RecordingDuration": str(recording.duration if status == "completed" else 0),
                  "RecordingChannels": "1", "RecordingStartTime": rfc2822(recording.start_time),
                  "RecordingSource": "RecordVerb", "RecordingTrack": "inbound", "ErrorCode": str(error)}
        self.post(leg, urljoin(url or "", callback), params,
                  (verb.get("recordingStatusCallbackMethod") or "POST").upper(), "recording callback")
