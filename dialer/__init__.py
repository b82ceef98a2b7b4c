"""Dialer: a browser phone for call-centre agents on Twilio Programmable Voice."""
from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.routing import IntegerConverter

csrf = CSRFProtect()


class RowIdConverter(IntegerConverter):
    """A row id in a URL: a whole number SQLite can hold; anything larger is a 404, not a crash."""

    def __init__(self, map):
        super().__init__(map, max=2**63 - 1)


def create_app(test_config=None, instance_path=None):
    """Build the app: settings, database, sign-in, blueprints, and the sandbox when it is on."""
    import os

    app = Flask(__name__, template_folder="../templates", static_folder="../static",
                instance_relative_config=True,
                instance_path=instance_path or os.environ.get("DIALER_INSTANCE_PATH") or None)
    from . import config, golive
    # `flask twilio setup` makes the API key and TwiML App that twilio mode otherwise needs to start.
    config.load(app, test_config, twilio_settings_required=not golive.command_line_runs_twilio())
    app.url_map.converters["id"] = RowIdConverter

    from . import auth, backup, db, filters, generate, security
    db.init_app(app)
    auth.init_app(app)
    app.cli.add_command(generate.calls_cli)  # `flask calls generate N`: synthetic history
    app.cli.add_command(backup.db_cli)  # `flask db backup PATH`, `flask db restore PATH`
    app.cli.add_command(golive.twilio_cli)  # `flask twilio setup`, `flask twilio check`: going live
    csrf.init_app(app)
    filters.init_app(app)
    security.init_app(app)

    from . import board, dialing, history, inbound, live, presence, twiml  # noqa: F401 (inbound: its /twiml/ routes)
    app.register_blueprint(auth.bp)
    app.register_blueprint(board.bp)
    app.register_blueprint(presence.bp)
    app.register_blueprint(live.bp)
    app.register_blueprint(dialing.bp)
    app.register_blueprint(history.bp)
    app.register_blueprint(twiml.bp)
    csrf.exempt(twiml.bp)  # Twilio signs these instead

    if app.config["TELEPHONY"] == "sandbox":
        from . import sandbox
        sandbox.init_app(app)

    register_health_and_errors(app)

    from .webhooks import TwilioWebhooks
    app.wsgi_app = TwilioWebhooks(app, app.wsgi_app)  # Twilio's busiest webhooks, beneath Flask
    if app.config["PROXY_HOPS"]:
        # Behind Caddy (deploy/Caddyfile): the client's address, the scheme and the host come from the
        # X-Forwarded-* headers the trusted proxies set, no more hops than that (a client cannot
        # forge them past the proxy). The sign-in throttle then counts the real client's address.
        from werkzeug.middleware.proxy_fix import ProxyFix
        hops = app.config["PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    return app


def register_health_and_errors(app):
    from .db import get_db
    from .pages import wants_fragment

    @app.route("/healthz")
    def healthz():
        """Liveness: the app answers and the database can be read."""
        try:
            get_db().execute("SELECT count(*) FROM agents").fetchone()
        except Exception as error:  # any database failure means "not healthy"
            app.logger.error("health check failed: %s", error)
            return jsonify(status="error", database="unreachable"), 503
        return jsonify(status="ok", database="ok", telephony=app.config["TELEPHONY"])

    def error_page(status, message):
        if wants_fragment():
            return (f'<p class="flash error" role="alert">{message}</p>', status,
                    {"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"})
        if request.path.startswith("/twiml/") or request.accept_mimetypes.best == "application/json":
            return jsonify(error=message), status
        return render_template("error.html", status=status, message=message), status

    @app.errorhandler(CSRFError)
    def csrf_error(error):
        return error_page(400, "This form has expired or did not come from the dialer. Reload the page and try again.")

    @app.errorhandler(400)
    def bad_request(error):
        return error_page(400, getattr(error, "description", None) or "The dialer could not read that request.")

    @app.errorhandler(413)
    def too_large(error):
        return error_page(413, "That request is larger than the dialer accepts.")

    @app.errorhandler(403)
    def forbidden(error):
        return error_page(403, getattr(error, "description", None) or "You may not do that.")

    @app.errorhandler(404)
    def not_found(error):
        return error_page(404, "There is nothing here, or it belongs to another agent.")

    @app.errorhandler(405)
    def not_allowed(error):
        return error_page(405, "That page does not take this kind of request.")

    @app.errorhandler(500)
    def server_error(error):
        return error_page(500, "Something went wrong on our side. It has been logged; try again.")
