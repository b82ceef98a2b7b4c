"""Full page or fragment: the one place that reads htmx's request headers."""
from flask import make_response, render_template, request
from jinja2_fragments.flask import render_block


def wants_fragment():
    """An htmx request that swaps part of a page (not a boosted full-page load)."""
    return bool(request.headers.get("HX-Request")) and request.headers.get("HX-Request-Type") != "full"


def render(template, block, status=200, **context):
    """Render the whole page, or only `block` of it for htmx; responses vary on HX-Request."""
    if wants_fragment():
        body = render_block(template, block, **context)
    else:
        body = render_template(template, **context)
    response = make_response(body, status)
    response.vary.add("HX-Request")
    return response
