"""Simulated customers: what a dialled number does, decided by its last digits."""
from dataclasses import dataclass

# Seconds are simulated seconds (scaled by SANDBOX_TIME_SCALE).
RING_SECONDS = 3


@dataclass(frozen=True)
class Behaviour:
    outcome: str  # "answer", "busy", "no-answer", "failed"
    hangup_after: float | None = None  # seconds after answering, None = talks until hung up
    description: str = ""


RULES = [
    ("…1", "busy", "The line is busy (SIP 486)."),
    ("…2", "no-answer", "Rings and nobody answers until the timeout."),
    ("…3", "failed", "The call cannot be connected (SIP 404)."),
    ("…4", "answer, hang up after 8 s", "Answers, then gives up while on hold: hangs up 8 s after answering."),
    ("…NN5", "answer, hang up after NN s", "Answers and hangs up NN seconds later (NN = the two digits before the 5; 00 means 10)."),
    ("anything else", "answer", "Answers after 3 s of ringing and talks until someone hangs up."),
]


def behaviour(number):
    """The deterministic behaviour of a simulated customer's number."""
    digits = "".join(ch for ch in number if ch.isdigit())
    last = digits[-1:] or "0"
    if last == "1":
        return Behaviour("busy", description=RULES[0][2])
    if last == "2":
        return Behaviour("no-answer", description=RULES[1][2])
    if last == "3":
        return Behaviour("failed", description=RULES[2][2])
    if last == "4":
        return Behaviour("answer", hangup_after=8, description=RULES[3][2])
    if last == "5":
        seconds = int(digits[-3:-1] or "0") or 10
        return Behaviour("answer", hangup_after=seconds, description=f"Answers and hangs up {seconds} s later.")
    return Behaviour("answer", description=RULES[5][2])
