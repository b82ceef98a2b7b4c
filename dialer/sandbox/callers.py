"""Simulated callers: what a customer who rings the Twilio number does, decided by the last digits of From.

The outbound twin is customers.py (decided by the dialled number). Seconds are simulated seconds
(scaled by SANDBOX_TIME_SCALE). The rules use the endings 6 to 9 so that calling a caller back
reaches a customer who answers (customers.py: "anything else answers").
"""
import re
import threading
from dataclasses import dataclass

MESSAGE_SECONDS = 6  # what a caller who leaves a voicemail says, before going quiet
PRESS_AGAIN_SECONDS = 5  # a key pressed while no <Gather> listens is lost: the caller tries again


@dataclass(frozen=True)
class Caller:
    kind: str  # "talks", "abandons", "presses", "speaks-then-hangs-up", "silent"
    seconds: float | None = None  # NN of the rule
    key: str = "1"
    description: str = ""


@dataclass(frozen=True)
class Message:
    """What the caller says into <Record>: `seconds` of speech, then silence, a hang-up or a key."""
    seconds: float
    then: str  # "silence", "hangup", or the key pressed


RULES = [
    ("…NN6", "gives up waiting", "Hangs up NN s after calling in (00 means 10) unless an agent or the voicemail has answered by then."),
    ("…NN7", "presses 1 in the queue", "After NN s in a queue (00 means 10) presses 1, again every 5 s until a <Gather> hears it; leaves a 6 s voicemail."),
    ("…NN8", "speaks, then hangs up", "Says NN s of message into <Record>, then hangs up (00: hangs up at the beep). Talks elsewhere."),
    ("…9", "says nothing", "Stays silent into <Record> until its silence timeout; talks elsewhere."),
    ("anything else", "talks", "Talks until someone hangs up; into <Record> says a 6 s message, then stays quiet."),
]


def behaviour(number):
    """The deterministic behaviour of a simulated caller's number (withheld numbers simply talk)."""
    digits = re.sub(r"\D", "", number or "")
    last = digits[-1:]
    nn = int(digits[-3:-1] or "0")
    if last == "6":
        seconds = nn or 10
        return Caller("abandons", seconds, description=f"Hangs up {seconds} s after calling in unless answered by then.")
    if last == "7":
        seconds = nn or 10
        return Caller("presses", seconds, description=f"Presses 1 after {seconds} s in a queue; leaves a {MESSAGE_SECONDS} s voicemail.")
    if last == "8":
        return Caller("speaks-then-hangs-up", nn, description=f"Says {nn} s of message into <Record>, then hangs up.")
    if last == "9":
        return Caller("silent", description=RULES[3][2])
    return Caller("talks", description=RULES[4][2])


def message(number):
    """What the party at `number` says when a <Record> starts."""
    who = behaviour(number)
    if who.kind == "speaks-then-hangs-up":
        return Message(who.seconds, "hangup")
    if who.kind == "silent":
        return Message(0, "silence")
    return Message(MESSAGE_SECONDS, "silence")


def watch(engine, leg):
    """Play the caller's own part beside the call's TwiML: give up waiting, or press a key in the queue."""
    who = behaviour(leg.from_)
    if who.kind == "abandons":
        threading.Thread(target=_abandon, args=(engine, leg, who.seconds), daemon=True).start()
    elif who.kind == "presses":
        threading.Thread(target=_press_in_queue, args=(engine, leg, who), daemon=True).start()


def _abandon(engine, leg, seconds):
    carrier = engine.carrier
    answered = carrier.wait(seconds, lambda: not leg.live or leg.sid in engine.connected)
    with carrier.lock:
        if not answered and leg.live and not leg.ended_by:
            leg.hang_up("caller")
    carrier.notify()


def _press_in_queue(engine, leg, who):
    carrier = engine.carrier
    while leg.live:
        carrier.wait(3600, lambda: not leg.live or engine.queues.member_of(leg.sid))
        member = engine.queues.member_of(leg.sid)
        if member is None:
            return
        left = who.seconds - engine.queues.seconds_waited(member)
        if left > 0 and carrier.wait(left, lambda: not leg.live or engine.queues.member_of(leg.sid) is not member):
            continue  # left that queue (or hung up) before the time came
        while leg.live and engine.queues.member_of(leg.sid) is member:
            if engine.press(leg, who.key):
                return  # heard: one voicemail is enough
            carrier.wait(PRESS_AGAIN_SECONDS, lambda: not leg.live or engine.queues.member_of(leg.sid) is not member)
