"""Request checks before anything is read: the Host allow-list (DNS rebinding), the cross-site POST
check (Origin / Sec-Fetch-Site), and the security headers of every response."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse

log = logging.getLogger("osteopano.web.app")

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
TEST_HOST = "testserver"         # the host name of Starlette's TestClient


def allowed_host_names(bind_host: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """The Host names the server answers to: the bind address (unless every interface), this computer's
    local names, the test client's, and ``extra`` (``--allowed-host``)."""
    names = list(extra)
    if bind_host and bind_host not in ("0.0.0.0", "::"):
        names.append(bind_host)
    names += [*LOCAL_HOSTS, TEST_HOST]
    return list(dict.fromkeys(n.strip().lower() for n in names if n and n.strip()))


class SecurityHeaders:
    """ASGI middleware: a request whose ``Host`` is not in ``allowed_hosts`` is refused with 400 (DNS
    rebinding), a POST whose ``Origin`` (or ``Sec-Fetch-Site``) names another site with 403, both before
    the body is read; every response gets a strict Content-Security-Policy (no resource outside this
    server), no caching of anything but static files, referrers only to this server, no framing."""

    CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
           "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

    def __init__(self, app: Any, allowed_hosts: Sequence[str]):
        self.app = app
        self.allowed_hosts = {h.lower() for h in allowed_hosts}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", self.CSP.encode()),
                            (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"same-origin"),
                            (b"x-frame-options", b"DENY")]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        host = _host_name(scope)
        if host not in self.allowed_hosts:
            log.info("%s %s for a host name not allowed -> 400", scope["method"], scope["path"])
            response = JSONResponse({"detail": "refused: unknown host name (start the server with --allowed-host "
                                               "NAME to answer to it)"}, status_code=400)
            await response(scope, receive, send_with_headers)
            return
        if scope["method"] == "POST" and _cross_site(scope):
            log.info("POST %s from another site -> 403", scope["path"])
            response = JSONResponse({"detail": "refused: this form was sent from another web site"}, status_code=403)
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def _host_name(scope: dict) -> str | None:
    """The host name of the request's Host header, without the port (IPv6 brackets removed)."""
    for key, value in scope.get("headers", []):
        if key == b"host":
            try:
                return urlsplit("//" + value.decode("latin-1")).hostname
            except ValueError:
                return None
    return None


def _cross_site(scope: dict) -> bool:
    """True when a browser says the request comes from another origin than this server's Host."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = headers.get("origin")
    if origin is None:
        return False   # not a browser (curl, scripts): nothing to check
    return origin == "null" or urlsplit(origin).netloc.lower() != headers.get("host", "").lower()
