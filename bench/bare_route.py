"""The production app plus one bare Flask route, the baseline the webhooks are measured against.

Served by the README's production command with this module in place of `app:app`:
`gunicorn -c gunicorn.conf.py --pythonpath bench bare_route:app`. The bare route is what the issue
asks for, a bare Flask route of the same app: the same server and worker, and Flask's request
handling and response hooks (the security headers). It reads, checks and stores nothing. The
status callbacks and customer-to-agent are answered beneath Flask (dialer/webhooks.py), with the
same security headers.
"""
from flask import Response

from app import app
from dialer import csrf


@app.post("/bench/bare")
@csrf.exempt
def bare():
    """Read nothing, store nothing: what the server costs on its own."""
    return Response(status=204)


@app.post("/bench/quickstart")
@csrf.exempt
def quickstart():
    """Twilio's quickstart /voice: TwiML built with VoiceResponse, nothing checked or stored."""
    from twilio.twiml.voice_response import VoiceResponse
    response = VoiceResponse()
    response.say("Thanks for calling!")
    return Response(str(response), mimetype="text/xml")
