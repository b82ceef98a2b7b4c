"""The sandbox's <Dial>: ring the nouns in parallel, bridge the first to answer, record, then `action`.

Mixed into the Engine, whose webhook and leg-state methods it uses (TWILIO.md 3.4, 3.6 and 4).
"""
import time
import xml.etree.ElementTree as ET
from urllib.parse import urlencode, urljoin

from . import customers
from .carrier import Leg, Recording, rfc2822, utc
from .credentials import sid as new_sid

CONTINUE = object()  # the document goes on with the verb after <Dial>


class DialVerb:
    def dial(self, parent, url, verb):
        """Ring the nouns in parallel, bridge the first to answer, then `action` or carry on."""
        c = self.carrier
        timeout = self.dial_timeout(verb)
        record = {"true": "record-from-answer", "false": "do-not-record"}.get(verb.get("record"), verb.get("record", "do-not-record"))
        queue = next((noun for noun in verb if noun.tag == "Queue"), None)
        if queue is not None:
            return self.dial_queue(parent, url, verb, queue, record)  # queues.py
        caller_id = verb.get("callerId") or parent.from_
        children = [self.ring(parent, noun, caller_id, timeout) for noun in self.nouns(verb)]
        children = [child for child in children if child]
        started = time.monotonic()
        winner, outcome = None, "failed"

        def decided():
            return (parent.ended_by or parent.redirect or any(ch.device_id or ch.rejected for ch, _ in children)
                    or all(not ch.live for ch, _ in children))

        while children:
            elapsed = c.sim_seconds_since(started)
            if parent.ended_by or parent.redirect:
                outcome = "canceled"
                break
            for child, who in children:
                if child.live and child.rejected:
                    self.finish(child, "busy")
                elif child.live and who is not None:  # a simulated <Number>
                    if who.outcome == "failed" or (who.outcome == "busy" and elapsed >= 1):
                        self.finish(child, who.outcome)
                    elif who.outcome == "answer" and elapsed >= customers.RING_SECONDS:
                        child.device_id = "pstn"
                        if who.hangup_after:
                            self.start(self.customer_hangs_up, child, who.hangup_after)
            winner = next((ch for ch, _ in children if ch.live and ch.device_id), None)
            if winner:
                break
            if all(not ch.live for ch, _ in children):
                statuses = {ch.status for ch, _ in children}
                outcome = "busy" if "busy" in statuses else ("no-answer" if "no-answer" in statuses else "failed")
                break
            if elapsed >= timeout:
                outcome = "no-answer"
                break
            c.wait(min(timeout - elapsed, 1), decided)

        for child, _ in children:  # everyone who is still ringing stops
            if child is not winner and child.live:
                self.withdraw(child, "no-answer" if outcome == "no-answer" else "canceled")
        bridged, recording = 0, None
        if winner:
            bridged, recording = self.bridge(parent, winner, verb, record)
            outcome = "completed"
        return self.after_dial(parent, url, verb, outcome, winner or (children[0][0] if children else None),
                               bridged, recording)

    def dial_timeout(self, verb):
        try:
            return int(verb.get("timeout", 30))
        except ValueError:
            return 30

    def nouns(self, verb):
        nouns = [n for n in verb if n.tag in ("Client", "Number")]
        if not nouns and (verb.text or "").strip():
            number = ET.Element("Number")
            number.text = verb.text.strip()
            nouns = [number]
        return nouns

    def ring(self, parent, noun, caller_id, timeout):
        """Create the child leg for one noun and start it ringing; (leg, behaviour or None)."""
        c = self.carrier
        if noun.tag == "Client":
            identity = (noun.findtext("Identity") or noun.text or "").strip()
            to = f"client:{identity}"
        else:
            to = (noun.text or "").strip()
        child = Leg(sid=new_sid("CA"), account_sid=parent.account_sid, to=to, from_=caller_id,
                    direction="outbound-dial", parent_sid=parent.sid, timeout=timeout,
                    status_callback=noun.get("statusCallback"),
                    status_callback_method=noun.get("statusCallbackMethod", "POST").upper(),
                    status_events=tuple((noun.get("statusCallbackEvent") or "completed").split()))
        c.add(child)
        self.status_event(child, "initiated")
        self.set_status(child, "ringing")
        self.status_event(child, "ringing")
        if noun.tag == "Number":
            return child, customers.behaviour(to)
        devices = c.devices_for(identity)
        if not devices:
            self.notice(child, 31603, f"no browser is registered as {identity}")
            self.finish(child, "no-answer")
            return child, None
        custom = {p.get("name"): p.get("value", "") for p in noun.findall("Parameter") if p.get("name")}
        parameters = {"CallSid": child.sid, "From": caller_id, "To": to, "AccountSid": parent.account_sid,
                      "ApiVersion": "2010-04-01", "Params": urlencode(custom)}
        for device in devices:
            c.send(device, "incoming", {"call_sid": child.sid, "parameters": parameters})
        return child, None

    def withdraw(self, child, status):
        """Stop a ringing child: its browsers hear `cancel`."""
        for device in self.carrier.devices_for(child.to.removeprefix("client:")):
            self.carrier.send(device, "cancel", {"call_sid": child.sid})
        self.finish(child, status)

    def bridge(self, parent, child, verb, record):
        """Both sides talk until one hangs up; returns (seconds bridged, recording or None)."""
        c = self.carrier
        self.set_status(child, "in-progress")
        self.status_event(child, "answered")
        for device in c.devices_for(child.to.removeprefix("client:")):
            if device.id != child.device_id:
                c.send(device, "cancel", {"call_sid": child.sid})  # answered in another tab
        with c.lock:
            self.connected.update((parent.sid, child.sid))
        started, began = time.monotonic(), utc()
        limit = int(verb.get("timeLimit", 14400))
        c.wait(limit, lambda: parent.ended_by or parent.redirect or child.ended_by)
        ended = min(t for t in (parent.ended_mono, child.ended_mono, time.monotonic()) if t is not None)
        seconds = round((ended - started) / c.scale)
        if child.ended_by != "agent":
            device = c.devices.get(child.device_id)
            if device:
                c.send(device, "hangup", {"call_sid": child.sid})
        with c.lock:
            child.hang_up("parent")
        self.finish(child, "completed")
        return seconds, self.dial_recording(parent, verb, record, seconds, began)

    def dial_recording(self, parent, verb, record, seconds, began):
        """The bridge's recording (<Dial record>) and its status callback; None when not recording."""
        c = self.carrier
        if record == "do-not-record":
            return None
        channels = 2 if record.endswith("-dual") else 1
        recording = Recording(sid=new_sid("RE"), account_sid=parent.account_sid, call_sid=parent.sid,
                              duration=seconds, channels=channels, source="DialVerb", start_time=began)
        c.add_recording(recording)
        callback = verb.get("recordingStatusCallback")
        if callback:
            params = {"AccountSid": parent.account_sid, "CallSid": parent.sid, "RecordingSid": recording.sid,
                      "RecordingUrl": c.recording_url(recording), "RecordingStatus": "completed",
                      "RecordingDuration": str(seconds), "RecordingChannels": str(channels),
                      "RecordingStartTime": rfc2822(began), "RecordingSource": "DialVerb",
                      "RecordingTrack": "both", "ErrorCode": "0"}
            for _ in range(2 if c.chaos else 1):
                self.post(parent, callback, params, verb.get("recordingStatusCallbackMethod", "POST").upper(),
                          "recording callback")
        return recording

    def after_dial(self, parent, url, verb, outcome, child, bridged, recording, more=None):
        """Request `action` (even if the caller left) or continue with the next verb."""
        action = verb.get("action")
        if not action:
            return CONTINUE
        extra = {"DialCallStatus": outcome, "DialBridged": "true" if outcome == "completed" else "false", **(more or {})}
        if child is not None:
            extra["DialCallSid"] = child.sid
        if outcome == "completed":
            extra["DialCallDuration"] = bridged
        if recording:
            extra.update(RecordingUrl=self.carrier.recording_url(recording), RecordingSid=recording.sid,
                         RecordingDuration=recording.duration)
        target = urljoin(url or "", action)
        method = verb.get("method", "POST").upper()
        if parent.redirect:
            return self.take_redirect(parent)
        if not self.up(parent):
            self.post(parent, target, self.params(parent, CallStatus="completed", **extra), method, "Dial action")
            return None
        return ("url", target, method, extra)
