"""What every request of the test server goes through: recording, ComfyUI's Origin check, the plain 500.

:class:`RecordedRequest` is what ``ComfyTestServer.requests`` lists; :func:`middlewares` gives the aiohttp
middlewares in ComfyUI's order.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

__all__ = ["RecordedRequest", "middlewares", "server_error"]

logger = logging.getLogger(__name__)

SERVER_ERROR_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"

Handler = Any  # aiohttp's request handler
Middleware = Any  # an aiohttp middleware


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedRequest:
    """One HTTP request the server received (WebSocket upgrades included).

    ``json`` is the parsed body when it was JSON (whatever its content type), else ``None``; ``query``
    keeps the last value of repeated parameters. Fields can also be read like a dict: ``r["path"]``.
    """

    method: str
    path: str
    query: dict[str, str]
    json: Any
    time: float
    headers: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default) if key in self.__dataclass_fields__ else default


def server_error() -> web.Response:
    """aiohttp's own answer to an unhandled exception, which is what ComfyUI clients see."""
    response = web.Response(status=500, text=SERVER_ERROR_TEXT, content_type="text/plain")
    response.force_close()
    return response


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    loopback = False
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            infos = socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)
        except socket.gaierror:
            continue
        for info in infos:
            if not ipaddress.ip_address(info[4][0]).is_loopback:
                return False
            loopback = True
    return loopback


def _origin_mismatch(request: web.Request) -> bool:
    """ComfyUI's origin-only middleware: a loopback Host with a different Origin host is refused."""
    host_header = request.headers.get("Host")
    origin_header = request.headers.get("Origin")
    if not host_header or not origin_header:
        return False
    try:
        host_domain: str | None = host_header.lower()
        origin = urlsplit(origin_header)
        origin_domain: str | None = origin.netloc.lower()
        host = urlsplit("//" + host_header.lower())
        loopback = _is_loopback(host.hostname)
        if origin.port is None:
            host_domain = host.hostname
        if host.port is None:
            origin_domain = origin.hostname
    except ValueError:
        return True
    return bool(loopback and host_domain and origin_domain and host_domain != origin_domain)


def middlewares(record: Callable[[RecordedRequest], None]) -> list[Middleware]:
    """Record every request with ``record``, then refuse a foreign Origin (403), then turn an unhandled
    exception into aiohttp's plain-text 500."""

    @web.middleware
    async def record_request(request: web.Request, handler: Handler) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body and not request.content_type.startswith("multipart/"):
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        record(RecordedRequest(method=request.method, path=request.path, query=dict(request.query), json=body,
                               time=time.time(), headers=dict(request.headers)))
        response: web.StreamResponse = await handler(request)
        return response

    @web.middleware
    async def check_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _origin_mismatch(request):
            logger.warning("request with non matching host and origin, returning 403")
            return web.Response(status=403)
        if request.method == "OPTIONS":
            return web.Response()
        response: web.StreamResponse = await handler(request)
        return response

    @web.middleware
    async def plain_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException:
            raise
        except Exception:  # the HTTP boundary: ComfyUI clients get aiohttp's plain 500
            logger.debug("hotfolder.testing: %s %s failed", request.method, request.path, exc_info=True)
            return server_error()
        return response

    return [record_request, check_origin, plain_errors]
