"""Production server settings: `gunicorn -c gunicorn.conf.py app:app`."""
import os

bind = os.environ.get("DIALER_BIND", "127.0.0.1:8000")
# gevent: every page holds an open event stream (/events), and in sandbox mode every browser phone
# another; each costs ~40 KB (bench/live.py: 1 000 streams, +18–20 MB per worker), where gthread would give each a thread and starve at
# `threads`. SQLite's slow calls (a commit's fsync) run on gevent's pool of real threads (db.blocking).
worker_class = "gevent"
workers = int(os.environ.get("DIALER_WORKERS", "1"))
worker_connections = int(os.environ.get("DIALER_CONNECTIONS", "4000"))  # open streams and requests per worker
# On a restart or stop, a worker waits this long for requests in flight (webhooks take milliseconds);
# open event streams are then cut, and browsers resume them at once with Last-Event-ID.
graceful_timeout = 3
accesslog = "-"
# gunicorn 27's control socket would be one file per user (~/.gunicorn/gunicorn.ctl) shared by every
# instance on the machine; the dialer does not use it.
control_socket_disable = True
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
            "(DIALER_WORKERS=1, the default; one gevent worker holds thousands of connections), "
            "or set Twilio credentials.")
