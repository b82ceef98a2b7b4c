"""Twilio's two busiest webhooks, answered beneath Flask: the status callbacks and customer-to-agent.

Every call brings one customer-to-agent request and four to seven status callbacks. Through
Flask, each paid for a request context, a session, werkzeug's form parser and the hooks of the
pages: 1.7 times the CPU of the same request here (815 against 480 µs for customer-to-agent in the
production server, with the same write). Here, a small WSGI layer in
front of the app reads such a request itself and hands it to the same code Flask used: the
signature and account check (`twiml.check_request`), the field checks (`twiml.read_callback`,
`params`), the call's rules (`twiml.status`, `twiml.customer_to_agent`, `calls`) and the same
security headers. Every other request, /twiml/ or not, goes on to Flask, untouched but for a
chunked body, which is read first and handed on with its length (`_sized`).
"""
import io
import json
from urllib.parse import parse_qsl

from werkzeug import urls  # noqa: F401 (registers the "werkzeug.url_quote" codec error handler below)
from werkzeug.exceptions import ClientDisconnected
from werkzeug.http import HTTP_STATUS_CODES

from . import security, twiml

TEXT, XML, JSON = "text/plain; charset=utf-8", "text/xml; charset=utf-8", "application/json"
BAD_REQUEST = "The dialer could not read that request."
TOO_LARGE = "That request is larger than the dialer accepts."
NOT_ALLOWED = "That page does not take this kind of request."
SERVER_ERROR = "Something went wrong on our side. It has been logged; try again."


class TwilioWebhooks:
    """WSGI middleware: POST /twiml/status and /twiml/customer-to-agent are answered here; the rest by `app`."""

    def __init__(self, app, wsgi_app):
        self.app, self.next = app, wsgi_app
        self.routes = {"/twiml/status": self._status, "/twiml/customer-to-agent": self._customer_to_agent}
        # What Flask's hooks add to a reply that is not a page (security.init_app).
        self.headers = security.headers_for(app.config, page=False) + [("Cache-Control", "no-store")]

    def __call__(self, environ, start_response):
        if "HTTP_TRANSFER_ENCODING" in environ:
            self._sized(environ)
        route = self.routes.get(environ.get("PATH_INFO"))
        if route is None:
            return self.next(environ, start_response)
        extra = []
        try:
            if environ.get("REQUEST_METHOD") != "POST":
                extra = [("Allow", "POST")]
                raise twiml.Refused(405, NOT_ALLOWED)
            code, content_type, body = route(environ, self._form(environ), self._args(environ))
        except twiml.Refused as refused:
            code, content_type, body = refused.status, JSON, _error(refused.message)
        except Exception:  # as Flask would: logged with its traceback, a 500 that says so
            self.app.logger.exception("Exception on %s [%s]", environ.get("PATH_INFO"), environ.get("REQUEST_METHOD"))
            code, content_type, body = 500, JSON, _error(SERVER_ERROR)
        headers = [("Content-Length", str(len(body)))] + extra + self.headers
        if content_type:
            headers.insert(0, ("Content-Type", content_type))
        start_response(f"{code} {HTTP_STATUS_CODES[code].upper()}", headers)
        return [body]

    # --- reading a request, as werkzeug and twiml.check_signature would ---

    def _sized(self, environ):
        """A chunked body, read here and handed on with its length, for every route.

        werkzeug answers 413 to a body whose Content-Length is over the limit, but reads a chunked
        one up to the limit and silently drops the rest: a cut-off form, then a misleading refusal
        (a webhook's signature fails). Read here, up to MAX_CONTENT_LENGTH and one byte more, the
        body has a length the usual checks apply to (1 MB, and 64 KB on /twiml/). A body that
        breaks off, or has chunks HTTP does not allow, stays unreadable: the app answers 400.
        """
        limit = self.app.config["MAX_CONTENT_LENGTH"]
        body = _ChunkedBody(environ["wsgi.input"])
        environ["wsgi.input"] = body
        if limit is None:
            return
        try:
            data = body.read(limit + 1)
        except ClientDisconnected:
            return  # the app's own read fails the same way
        del environ["HTTP_TRANSFER_ENCODING"]
        environ["CONTENT_LENGTH"], environ["wsgi.input"] = str(len(data)), io.BytesIO(data)

    def _form(self, environ):
        """The url-encoded body (werkzeug's parse, as a `_Form`); 413 past MAX_WEBHOOK_BYTES."""
        limit = twiml.MAX_WEBHOOK_BYTES
        length = environ.get("CONTENT_LENGTH", "")
        if length and not (length.isascii() and length.isdigit()):
            raise twiml.Refused(400, BAD_REQUEST)
        if length and int(length) > limit:
            raise twiml.Refused(413, TOO_LARGE)
        try:  # chunked or without a length: up to the limit and one byte more
            body = environ["wsgi.input"].read(int(length) if length else limit + 1)
        except (ClientDisconnected, OSError):  # cut off, or chunks that are not HTTP's
            raise twiml.Refused(400, BAD_REQUEST) from None
        if len(body) > limit:
            raise twiml.Refused(413, TOO_LARGE)
        if environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
            return _Form()
        try:
            text = body.decode()
        except UnicodeDecodeError:
            return _Form()  # werkzeug's parser gives an empty form too: the signature then fails
        return _Form(parse_qsl(text, keep_blank_values=True, errors="werkzeug.url_quote"))

    def _args(self, environ):
        """The query string: its text (for the signed URL) and each name's first value."""
        query = environ.get("QUERY_STRING", "").encode("latin-1").decode("utf-8", "replace")
        args = {}
        for name, value in parse_qsl(query, keep_blank_values=True, errors="replace"):
            args.setdefault(name, value)
        return query, args

    def _checked(self, environ, form, query):
        cfg = self.app.config
        path = environ["PATH_INFO"]
        url = cfg["PUBLIC_BASE_URL"] + path + ("?" + query if query else "")
        twiml.check_request(cfg, url, form, environ.get("HTTP_X_TWILIO_SIGNATURE", ""),
                            environ.get("REMOTE_ADDR"), self.app.logger)
        return twiml.read_callback(form, path, self.app.logger)

    def _with_db(self, fn, *args):
        pool = self.app.extensions["dialer_db"]
        db = pool.take()
        try:
            return fn(db, *args)
        finally:
            pool.give(db)

    # --- the two routes ---

    def _status(self, environ, form, query_args):
        query, args = query_args
        callback = self._checked(environ, form, query)
        if self._with_db(twiml.status, self.app.config, args, callback, self.app.logger):
            return 204, None, b""
        return 404, TEXT, twiml.UNKNOWN_CALL.encode()

    def _customer_to_agent(self, environ, form, query_args):
        query, args = query_args
        callback = self._checked(environ, form, query)
        template = self.app.extensions.get("customer_to_agent_twiml")
        if template is None:  # built once, with Flask's url_for for its callback URLs
            with self.app.request_context(environ):
                template = twiml.customer_to_agent_template()
        text = self._with_db(twiml.customer_to_agent, self.app.config, args, callback, template, self.app.logger)
        return 200, XML, text.encode()


class _ChunkedBody:
    """A chunked request's body. gunicorn decodes the chunks only as the body is read, so a client
    that breaks them off or sends ones HTTP does not allow makes `read` raise gunicorn's parse error
    (or IOError), which Flask would answer with a 500. Here it is werkzeug's ClientDisconnected: a 400,
    and every later read fails the same way."""

    def __init__(self, stream):
        self.stream, self.broken = stream, False

    def read(self, *args):
        return self._reading(self.stream.read, *args)

    def readline(self, *args):
        return self._reading(self.stream.readline, *args)

    def readlines(self, *args):
        return self._reading(self.stream.readlines, *args)

    def __iter__(self):
        return iter(self.readline, b"")

    def _reading(self, read, *args):
        try:
            if not self.broken:
                return read(*args)
        except Exception:  # gunicorn.http.errors: NoMoreData, InvalidChunkSize, ChunkMissingTerminator, …
            self.broken = True
        raise ClientDisconnected("The request's body was cut off or its chunks were malformed.")


class _Form(dict):
    """A webhook's form as the dialer reads it: each field's first value, as werkzeug's MultiDict
    gives. `getall` (and werkzeug's `getlist`) has every value of a field, which twilio's
    RequestValidator asks for first: a repeated field is signed over all its values. (A MultiDict
    costs ~5 µs more per callback to build, copy for the field checks and ask field by field.)"""

    def __init__(self, pairs=()):
        values = {}
        for name, value in pairs:
            values.setdefault(name, []).append(value)
        super().__init__((name, every[0]) for name, every in values.items())
        self.getall = values.__getitem__

    def getlist(self, name):
        return self.getall(name) if name in self else []


def _error(message):
    """The JSON body Flask's error handlers give a /twiml/ request."""
    return (json.dumps({"error": message}, separators=(",", ":")) + "\n").encode()
