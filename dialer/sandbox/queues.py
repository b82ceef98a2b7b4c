"""The sandbox's call queues: <Enqueue> with its wait URL, <Leave>, and <Dial><Queue> (TWILIO.md 9.2-9.3).

Mixed into the Engine like DialVerb. A queued caller's own thread plays the wait URL's TwiML until
the caller leaves; a dequeuer's thread (its <Dial><Queue>) takes the front caller and holds the bridge.
"""
import time
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urljoin

from .carrier import Leg, rfc2822, utc
from .credentials import sid as new_sid

DEFAULT_MAX_SIZE = 1000  # the Enqueue page and the spec's max_size default (older pages said 100)
LARGEST_MAX_SIZE = 5000
WAIT_VERBS = ("Say", "Play", "Pause", "Redirect", "Hangup", "Leave", "Gather")  # allowed in a waitUrl document
URL_VERBS = ("Say", "Play", "Pause", "Redirect")  # allowed in <Queue url>, played to the caller before the bridge
FOREVER = 14400  # the longest a call may last: "until someone else acts"


@dataclass
class Member:
    leg: Leg
    queue: "CallQueue"
    joined: float = field(default_factory=time.monotonic)
    date_enqueued: datetime = field(default_factory=utc)
    left: float | None = None  # when the caller left the queue: QueueTime stops there
    dequeuer: Leg | None = None  # set while a <Dial><Queue> takes this caller
    bridged: bool = False
    done: bool = False  # the dequeuer is finished with this caller


@dataclass
class CallQueue:
    sid: str
    friendly_name: str
    max_size: int = DEFAULT_MAX_SIZE
    members: list = field(default_factory=list)
    date_created: datetime = field(default_factory=utc)


class Queues:
    """The account's queues by name; every change under the carrier's lock."""

    def __init__(self, carrier):
        self.carrier = carrier
        self.by_name: dict[str, CallQueue] = {}

    def get(self, name):
        """The queue of that name, or None if no <Enqueue> has made it."""
        return self.by_name.get(name)

    def join(self, leg, name, max_size=None):
        """(queue, member), or (queue, None) when the queue is full."""
        with self.carrier.lock:
            queue = self.by_name.get(name)
            if queue is None:
                queue = self.by_name[name] = CallQueue(new_sid("QU"), name)
            if max_size is not None:
                queue.max_size = max_size
            if len(queue.members) >= queue.max_size:
                return queue, None
            member = Member(leg, queue)
            queue.members.append(member)
        self.carrier.notify()
        return queue, member

    def leave(self, member):
        """The caller is out of the queue (bridged, gone, redirected, left)."""
        with self.carrier.lock:
            if member in member.queue.members:
                member.queue.members.remove(member)
            member.left = member.left or time.monotonic()
        self.carrier.notify()

    def member_of(self, call_sid):
        """The queue membership of a call, or None."""
        with self.carrier.lock:
            for queue in self.by_name.values():
                for member in queue.members:
                    if member.leg.sid == call_sid:
                        return member
        return None

    def front(self, queue):
        """The longest-waiting caller nobody is taking yet and who is still there."""
        with self.carrier.lock:
            return next((m for m in queue.members if m.dequeuer is None and m.leg.live
                         and not m.leg.ended_by and not m.leg.redirect), None)

    def seconds_waited(self, member):
        """QueueTime: from joining the queue until leaving it (or now)."""
        return ((member.left or time.monotonic()) - member.joined) / self.carrier.scale

    def wait_params(self, member):
        """The waitUrl request's queue parameters (TWILIO.md 9.2), on top of the standard ones."""
        with self.carrier.lock:
            members = member.queue.members
            waits = [self.seconds_waited(m) for m in members]
            position = members.index(member) + 1 if member in members else 0
            return {"QueuePosition": position, "QueueSid": member.queue.sid,
                    "QueueTime": round(self.seconds_waited(member)),
                    "AvgQueueTime": round(sum(waits) / len(waits)) if waits else 0,
                    "CurrentQueueSize": len(members), "MaxQueueSize": member.queue.max_size}

    def queue_json(self, queue):
        """For the control page: the queue as Twilio's Queue resource names its fields."""
        with self.carrier.lock:
            waits = [self.seconds_waited(m) for m in queue.members]
            return {"sid": queue.sid, "friendly_name": queue.friendly_name, "current_size": len(queue.members),
                    "max_size": queue.max_size, "average_wait_time": round(sum(waits) / len(waits)) if waits else 0,
                    "date_created": rfc2822(queue.date_created),
                    "members": [(m.leg.sid, m.leg.from_, round(w)) for m, w in zip(queue.members, waits)]}


class QueueVerbs:
    # --- the caller's side: <Enqueue> ---------------------------------------------------------
    def enqueue(self, leg, url, verb, cont):
        """Wait in the named queue until bridged, redirected, hung up or <Leave>; then `action` or carry on."""
        self.answer_inbound(leg)
        name = (verb.text or "").strip()
        problem = self.enqueue_problem(verb, name)
        if problem:
            code, message = problem
            self.notice(leg, code, message)
            return self.after_enqueue(leg, url, verb, "error", None, cont)
        wait_url = verb.get("waitUrl")
        max_size = verb.get("maxQueueSize")
        queue, member = self.queues.join(leg, name, int(max_size) if max_size else None)
        if member is None:
            self.notice(leg, 14207, f"Enqueue: the queue {name} reached its max size of {queue.max_size}")
            return self.after_enqueue(leg, url, verb, "queue-full", None, cont)
        try:
            result = self.hold(leg, url, member, wait_url, (verb.get("waitUrlMethod") or "POST").upper())
        finally:
            self.queues.leave(member)
        return self.after_enqueue(leg, url, verb, result, member, cont)

    def enqueue_problem(self, verb, name):
        """(error code, message) when the <Enqueue> itself is wrong, else None."""
        if verb.get("workflowSid"):
            return 12200, "Enqueue workflowSid (TaskRouter) is not supported by the sandbox"
        if not name:
            return 12200, "Enqueue needs a queue name"
        if len(name) > 64:
            return 14205, f"Enqueue: queue name too long ({len(name)} characters, at most 64)"
        if (verb.get("waitUrlMethod") or "POST").upper() not in ("GET", "POST"):
            return 14206, f"Enqueue: invalid waitUrlMethod {verb.get('waitUrlMethod')}"
        size = verb.get("maxQueueSize")
        if size is not None and not (size.isdigit() and 1 <= int(size) <= LARGEST_MAX_SIZE):
            return 12200, f"Enqueue maxQueueSize must be a whole number from 1 to {LARGEST_MAX_SIZE}, not {size}"
        return None

    def hold(self, leg, url, member, wait_url, wait_method):
        """Play the wait URL until the caller leaves the queue; returns the QueueResult."""
        c = self.carrier

        def interrupted():
            return leg.ended_by or leg.redirect or member.dequeuer

        while True:
            if member.dequeuer:
                c.wait(FOREVER, lambda: member.done or member.dequeuer is None)
                if member.bridged:
                    return "redirected-from-bridged" if leg.redirect else "bridged"
                continue  # given back before the bridge: wait on
            if leg.ended_by:
                return "hangup"
            if leg.redirect:
                return "redirected"
            if wait_url is None or wait_url == "":
                # No waitUrl: Twilio's classical playlist (not fetched here); waitUrl="": silence.
                c.wait(FOREVER, interrupted)
                continue
            started = time.monotonic()
            outcome = self.play_wait_document(leg, ("url", urljoin(url or "", wait_url), wait_method, {}), member, interrupted)
            if outcome:
                return outcome
            if c.sim_seconds_since(started) < 1:  # an empty document must not spin
                c.wait(1, interrupted)

    def play_wait_document(self, leg, doc, member, interrupted):
        """Run a waitUrl document and what it leads to (<Redirect>, a <Gather>'s action).

        Returns None when the TwiML ran out (the wait URL is then requested again), else a QueueResult.
        """
        while doc and not interrupted():
            kind, source, method, extra = doc
            loaded = self.load(leg, (kind, source, method, {**self.queues.wait_params(member), **extra}), recover=False)
            if loaded is None:
                return "error"  # the wait URL failed or its TwiML was broken (the notice says which)
            doc_url, root = loaded
            doc = None
            for verb in root:
                if interrupted():
                    return None
                if verb.tag not in WAIT_VERBS:
                    self.notice(leg, 12200, f"<{verb.tag}> is not allowed in a waitUrl document ({doc_url})")
                    return "error"
                if verb.tag == "Leave":
                    return "leave"
                if verb.tag == "Hangup":
                    leg.hang_up("twiml")
                    return "hangup"
                if verb.tag == "Redirect":
                    doc = ("url", urljoin(doc_url or "", (verb.text or "").strip()), verb.get("method", "POST").upper(), {})
                    break
                if verb.tag == "Gather":
                    heard = self.gather(leg, doc_url, verb, interrupted)
                    if heard is not None:
                        doc = ("url", *heard)  # the action's TwiML is the wait document now
                        break
                    continue
                self.sound(leg, verb, interrupted)
        return None

    def after_enqueue(self, leg, url, verb, result, member, cont):
        """Request `action` with QueueResult (right away, or after the bridge ended), else fall through."""
        extra = {"QueueResult": result}
        if member is not None:  # "only available if the call was actually enqueued"
            extra.update(QueueSid=member.queue.sid, QueueTime=round(self.queues.seconds_waited(member)))
        action = verb.get("action")
        if not action:
            return None if leg.redirect or not self.up(leg) else cont
        target = urljoin(url or "", action)
        method = (verb.get("method") or "POST").upper()
        if leg.redirect or not self.up(leg):
            # Redirected out, or the caller is gone: the request is made, its TwiML cannot run.
            status = "completed" if not self.up(leg) else leg.status
            self.post(leg, target, self.params(leg, CallStatus=status, **extra), method, "Enqueue action")
            return None
        return ("url", target, method, extra)

    # --- the dequeuer's side: <Dial><Queue> -------------------------------------------------
    def dial_queue(self, parent, url, verb, noun, record):
        """Bridge the dialing leg to the front caller of the queue, waiting up to `timeout` for one."""
        c = self.carrier
        name = (noun.text or "").strip()
        queue = self.queues.get(name)
        if queue is None:
            self.notice(parent, 12200, f"Dial: there is no queue called {name!r}")
            return self.after_dial(parent, url, verb, "failed", None, 0, None)
        timeout = self.dial_timeout(verb)
        while True:
            found = c.wait(timeout, lambda: parent.ended_by or parent.redirect or self.queues.front(queue))
            if not found:
                return self.after_dial(parent, url, verb, "no-answer", None, 0, None)
            if parent.ended_by or parent.redirect:
                return self.after_dial(parent, url, verb, "canceled", None, 0, None)
            with c.lock:
                member = self.queues.front(queue)
                if member is not None:
                    member.dequeuer = parent
            if member is not None:
                break
        c.notify()
        caller = member.leg
        queue_extra = {"QueueSid": queue.sid, "QueueTime": round(self.queues.seconds_waited(member)),
                       "DequeingCallSid": parent.sid}
        if noun.get("url"):
            self.play_to_dequeued(caller, parent, urljoin(url or "", noun.get("url")),
                                  (noun.get("method") or "POST").upper(), queue_extra)
        if not self.up(parent) or parent.redirect or not self.up(caller) or caller.redirect:
            with c.lock:
                member.dequeuer = None  # the caller stays where they were in the queue
            c.notify()
            return self.after_dial(parent, url, verb, "canceled", None, 0, None)
        self.queues.leave(member)
        with c.lock:
            member.bridged = True
            self.connected.update((parent.sid, caller.sid))
        c.notify()
        started, began = time.monotonic(), utc()
        limit = int(verb.get("timeLimit", FOREVER))
        c.wait(limit, lambda: parent.ended_by or parent.redirect or caller.ended_by or caller.redirect)
        ended = min(t for t in (parent.ended_mono, caller.ended_mono, time.monotonic()) if t is not None)
        seconds = round((ended - started) / c.scale)
        recording = self.dial_recording(parent, verb, record, seconds, began)
        with c.lock:
            member.done = True
        c.notify()
        return self.after_dial(parent, url, verb, "completed", caller, seconds, recording, queue_extra)

    def play_to_dequeued(self, caller, dequeuer, target, method, extra):
        """<Queue url>: TwiML played to the dequeued caller before the bridge (Say, Play, Pause, Redirect)."""
        def interrupted():
            return caller.ended_by or caller.redirect or dequeuer.ended_by or dequeuer.redirect

        doc = ("url", target, method)
        for _ in range(10):  # a redirect loop must end somewhere
            loaded = self.load(caller, (*doc, extra), recover=False)
            if loaded is None:
                return
            doc_url, root = loaded
            doc = None
            for verb in root:
                if interrupted():
                    return
                if verb.tag == "Redirect":
                    doc = ("url", urljoin(doc_url or "", (verb.text or "").strip()), verb.get("method", "POST").upper())
                    break
                if verb.tag not in URL_VERBS:
                    self.notice(caller, 12200, f"<{verb.tag}> is not allowed in a <Queue url> document ({doc_url}); skipped")
                    continue
                self.sound(caller, verb, interrupted)
            if doc is None:
                return

