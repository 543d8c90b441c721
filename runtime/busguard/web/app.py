"""The aiohttp application: routes, security headers, the rate cap and basic auth.

Every route is a GET of data the server already holds (the refreshed snapshot, the layout,
the metrics text, the static files shipped in the package); nothing here writes anything.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Awaitable, Callable
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from busguard.northbound.access import TokenBucket
from busguard.web.view import dumps as dumps

if TYPE_CHECKING:
    from busguard.web.publisher import WebPublisher

log = logging.getLogger("busguard.web")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATIC = Path(str(files("busguard.web") / "static"))
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
RANGES = {"1h": 3600.0, "24h": 86400.0, "30d": 30 * 86400.0}
PUBLIC = frozenset({"/favicon.ico"})


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def build_app(pub: WebPublisher) -> web.Application:
    refusals = pub.refusals
    buckets: dict[str, TokenBucket] = {}
    rate = pub.policy.max_requests_per_s
    realm = f'Basic realm="busguard {pub.site.name}", charset="UTF-8"'

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        await pub.quiet()  # answer just after a scan, not across its deadline
        host = request.remote or "?"
        now = time.monotonic()
        b = buckets.get(host)
        if b is None:
            if len(buckets) > 1024:  # bounded: forget the quietest
                for k in [k for k, v in buckets.items() if now - v.stamp > 60.0]:
                    del buckets[k]
            b = buckets[host] = TokenBucket(rate, max(1.0, 2 * rate), max(1.0, 2 * rate), now)
        wait = b.take(now)
        if wait > 0.0:
            b.tokens += 1.0  # a refused request costs nothing more
            pub.counts["refused_rate"] += 1
            refusals.note("web: request rate over max_requests_per_s", host)
            return web.Response(status=429, text="too many requests: slow down\n",
                                headers={"Retry-After": str(max(1, round(wait)))})
        return await handler(request)

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if pub.verifier is None or request.path in PUBLIC:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        user = pub.verifier.known(header) if header else None
        if user is None and header:
            user = await _check(pub, header)
        if user is None:
            pub.counts["refused_auth"] += 1
            reason = "no credentials" if not header else "wrong user or password"
            if pub.verifier.error:
                reason = pub.verifier.error
            refusals.note(f"web: refused a request ({reason})", request.remote or "?")
            return web.Response(status=401, text="401: user name and password required "
                                "(busguard passwd USER creates one)\n",
                                headers={"WWW-Authenticate": realm})
        return await handler(request)

    app = web.Application(middlewares=[limit, auth], client_max_size=4096)

    async def headers(request: web.Request, response: web.StreamResponse) -> None:
        h = response.headers
        h["Content-Security-Policy"] = CSP
        h["X-Content-Type-Options"] = "nosniff"
        h["X-Frame-Options"] = "DENY"
        h["Referrer-Policy"] = "no-referrer"
        h["Cross-Origin-Opener-Policy"] = "same-origin"
        if pub.tls:
            h["Strict-Transport-Security"] = "max-age=31536000"
        h.pop("Server", None)

    app.on_response_prepare.append(headers)

    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html",
                                headers={"Cache-Control": "no-cache"})

    async def status(request: web.Request) -> web.Response:
        return _json((await pub.cache.fresh()).status)

    async def view(request: web.Request) -> web.Response:
        return _json((await pub.cache.fresh()).view)

    async def layout(request: web.Request) -> web.Response:
        return _json(pub.cache.layout)

    async def metrics(request: web.Request) -> web.Response:
        c = await pub.cache.fresh()
        if pub.metrics.stale(c.generation):
            await pub.quiet(heavy=True)
        from prometheus_client import CONTENT_TYPE_LATEST

        return web.Response(body=pub.metrics.text(c.generation),
                            headers={"Content-Type": CONTENT_TYPE_LATEST,
                                     "Cache-Control": "no-store"})

    async def history(request: web.Request) -> web.Response:
        point = request.query.get("point", "")
        rng = request.query.get("range", "1h")
        if rng not in RANGES:
            raise web.HTTPBadRequest(text=f"range {rng!r}: one of {', '.join(RANGES)}\n")
        try:
            body = await pub.history.query(point, RANGES[rng], rng)
        except LookupError as exc:
            raise web.HTTPNotFound(text=f"{exc}\n") from None
        except RuntimeError as exc:
            raise web.HTTPServiceUnavailable(text=f"{exc}\n") from None
        return _json(body)

    async def history_points(request: web.Request) -> web.Response:
        try:
            return _json(await pub.history.points())
        except RuntimeError as exc:
            raise web.HTTPServiceUnavailable(text=f"{exc}\n") from None

    async def favicon(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app.router.add_get("/", index)
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/view", view)
    app.router.add_get("/api/layout", layout)
    app.router.add_get("/api/history", history)
    app.router.add_get("/api/history/points", history_points)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    return app


async def _check(pub: WebPublisher, header: str) -> str | None:
    scheme, _sp, token = header.partition(" ")
    if scheme.lower() != "basic" or not token or len(token) > 1024:
        return None
    try:
        user, sep, password = base64.b64decode(token, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not sep or pub.verifier is None:
        return None
    loop = asyncio.get_running_loop()
    ok = await loop.run_in_executor(pub.auth_executor, pub.verifier.check, header, user,
                                    password)
    return user if ok else None
