"""Entry point: `flask --app app run` or `gunicorn -c gunicorn.conf.py app:app`."""
from dialer import create_app
from dialer.config import ConfigError

try:
    app = create_app()
except ConfigError as error:
    raise SystemExit(f"Dialer cannot start: {error}")
