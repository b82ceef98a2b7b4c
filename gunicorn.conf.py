"""Production server settings: `gunicorn -c gunicorn.conf.py app:app`."""
import os

bind = os.environ.get("DIALER_BIND", "127.0.0.1:8000")
# Threads, not processes: each browser phone holds one open event stream (sandbox) or none
# (Twilio), and webhooks must be answered while an agent's request waits on Twilio's REST API.
worker_class = "gthread"
workers = int(os.environ.get("DIALER_WORKERS", "1"))
threads = int(os.environ.get("DIALER_THREADS", "32"))
accesslog = "-"
# The Server header: gunicorn 27 sends `Server: gunicorn` (gunicorn.SERVER), without its version, so
# there is nothing to hide here; the app sets none of its own (gunicorn would send both).


def on_starting(server):
    """The sandbox keeps live calls in one process's memory: refuse to start it with several."""
    from flask import Flask

    from dialer import config
    probe = Flask("dialer", instance_relative_config=True,
                  instance_path=os.environ.get("DIALER_INSTANCE_PATH") or None)
    try:
        config.load(probe)
    except config.ConfigError as error:
        raise SystemExit(f"Dialer cannot start: {error}")
    if probe.config["TELEPHONY"] == "sandbox" and server.cfg.workers > 1:
        raise SystemExit(
            "Dialer cannot start: the sandbox keeps its calls in one process, so run one worker "
            "(DIALER_WORKERS=1, the default) and raise DIALER_THREADS instead, or set Twilio credentials.")
