"""The sandbox's own account: made once, kept in the instance folder, reused by every start."""
import json
import os
import secrets

FILE = "sandbox-credentials.json"


def sid(prefix):
    """A Twilio-shaped SID: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


def load_or_create(instance_path):
    """The sandbox credentials, created on first use (file mode 600)."""
    path = os.path.join(instance_path, FILE)
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    os.makedirs(instance_path, exist_ok=True)
    creds = {
        "TWILIO_ACCOUNT_SID": sid("AC"),
        "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
        "TWILIO_API_KEY_SID": sid("SK"),
        "TWILIO_API_KEY_SECRET": secrets.token_urlsafe(24),
        "TWILIO_TWIML_APP_SID": sid("AP"),
    }
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker made it first
        with open(path) as f:
            return json.load(f)
    with os.fdopen(fd, "w") as f:
        json.dump(creds, f, indent=2)
    return creds
