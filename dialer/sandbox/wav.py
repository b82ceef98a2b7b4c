"""Recordings: real dual-channel WAV files of the call's length (a quiet tone on each side)."""
import io
import math
import struct
import wave

RATE = 8000


def tone_period(freq, amplitude):
    samples = RATE // freq
    return [int(amplitude * math.sin(2 * math.pi * i / samples)) for i in range(samples)]


def make(seconds, channels=2):
    """WAV bytes: channel 1 the customer (440 Hz), channel 2 the agent (660 Hz), 16-bit 8 kHz."""
    frames = int(round(seconds * RATE))
    left = tone_period(440, 2000)
    right = tone_period(660, 2000) if channels == 2 else None
    # A one-second block repeated keeps this fast for long calls.
    block = bytearray()
    for i in range(RATE):
        if channels == 2:
            block += struct.pack("<hh", left[i % len(left)], right[i % len(right)])
        else:
            block += struct.pack("<h", left[i % len(left)])
    frame_bytes = 2 * channels
    whole, rest = divmod(frames, RATE)
    data = bytes(block) * whole + bytes(block[: rest * frame_bytes])
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(data)
    return out.getvalue()
