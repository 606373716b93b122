"""The one Jinja environment of osteopano (reports and the web page), built once on first use."""

from __future__ import annotations

import functools


@functools.cache
def environment():
    """Templates in ``osteopano/render/templates``, autoescaped, undefined names an error."""
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("osteopano.render", "templates"),
                              autoescape=jinja2.select_autoescape(["html"], default=True),
                              trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
