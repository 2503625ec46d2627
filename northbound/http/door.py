"""The HTTP door: one aiohttp application in the daemon's loop, listening where
/sluice:management/http says (followed across commits; open connections are kept).

HTTPS by default (certificate and key from the config); plain HTTP only when `plain-http`
is true, and then only on the addresses given (the model requires them). Every request is
authenticated (see `auth`); a read-only user may only read. Errors of /netlox/v1 come in
loxilb's envelope, the rest as the same JSON shape.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance.doors import Binding, DoorContext, Section
from appliance.snapshot import for_providers
from northbound.http import openapi
from northbound.http.auth import Authenticator
from northbound.http.loxilb_api import BASE, LoxilbApi
from northbound.http.metrics import MetricsEndpoint, SnapshotCollector
from northbound.http.restconf import Restconf
from northbound.http.restconf import error_response as restconf_error
from northbound.http.wire import ApiError, error_response, respond

log = logging.getLogger(__name__)

DEFAULT_PORT = 11111
READ_METHODS = ("GET", "HEAD", "OPTIONS")
# Where: (addresses, port, plain, certificate, key); None: disabled.
Where = tuple[tuple[str, ...], int, bool, str, str]


def listen_spec(section: Section) -> Where | None:
    if not section.get("enabled", False):
        return None
    tls = section.get("tls") or {}
    return (tuple(section.get("address") or ()), int(section.get("port", DEFAULT_PORT)),
            bool(section.get("plain-http", False)), str(tls.get("certificate", "")),
            str(tls.get("key", "")))  # fmt: skip


def describe(where: Where) -> str:
    addresses, port, plain, _, _ = where
    return f"{'http' if plain else 'https'}://{','.join(addresses) or '*'}:{port}"


def tls_context(certificate: str, key: str, state_dir: Path) -> ssl.SSLContext:
    """A server TLS context from PEM text (ssl loads only files: a private 0600 temporary
    file, removed at once). A certificate or key that does not load is a config error."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    state_dir.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=".http-tls.", dir=state_dir)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(certificate.strip() + "\n" + key.strip() + "\n")
        ctx.load_cert_chain(path)
    except ssl.SSLError as exc:  # an OSError: it must not read as "retry the bind"
        raise ValueError(f"tls certificate/key do not load: {exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    return ctx


class Sites:
    """The listening sockets of one `Where`, as the door's Binding keeps them."""

    def __init__(self, sites: list[web.TCPSite]) -> None:
        self.sites = sites

    async def close(self) -> None:
        for site in self.sites:
            await site.stop()


class HttpDoor:
    def __init__(self, ctx: DoorContext, section: Section) -> None:
        self.ctx = ctx
        self.section = section
        self.auth = Authenticator(ctx.service)
        self.api = LoxilbApi(ctx)
        collector = SnapshotCollector(
            lambda: for_providers(ctx.state, config_service=ctx.service).current(),
            ctx.service, ctx.state.get("doors"))
        self.metrics = MetricsEndpoint(collector)
        self.restconf = Restconf(ctx)
        self.requests = 0
        self.app = self._app()
        self.runner: web.AppRunner | None = None
        self.binding = Binding("http", self._open, describe=describe)

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=1024 * 1024)
        app.add_routes(self.api.routes())
        app.add_routes(self.restconf.routes())
        app.add_routes([
            web.get("/metrics", self.metrics.handle),
            web.get(f"{BASE}/metrics", self.metrics.handle),
            web.get(openapi.PATH, self._openapi),
        ])  # fmt: skip
        return app

    async def _openapi(self, request: web.Request) -> web.Response:
        return respond(openapi.document())

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests += 1
        try:
            caller = await self.auth.authenticate(request)
            if request.method not in READ_METHODS and caller.read_only:
                raise ApiError(403, f"user {caller.user} is read-only", "forbidden")
            request["caller"] = caller
            return await handler(request)
        except ApiError as exc:
            if request.path.startswith(("/restconf", "/.well-known")):
                tag = {401: "access-denied", 403: "access-denied"}.get(exc.code,
                                                                       "invalid-value")
                response = restconf_error(request, exc.code, [{
                    "error-type": "protocol", "error-tag": tag, "error-message": exc.message}])
            else:
                response = error_response(exc)
            if exc.code == 401:
                response.headers["WWW-Authenticate"] = 'Basic realm="sluice", Bearer'
            return response
        except web.HTTPException as exc:  # no such route, method not allowed
            if exc.status < 400:
                raise
            return self._error(request, exc.status, exc.reason)
        except Exception as exc:
            log.exception("http request failed", extra={"path": request.path})
            return self._error(request, 500, f"internal error: {exc}")

    @staticmethod
    def _error(request: web.Request, status: int, message: str) -> web.Response:
        if request.path.startswith(("/restconf", "/.well-known")):
            tag = "operation-failed" if status >= 500 else "invalid-value"
            return restconf_error(request, status, [{"error-type": "protocol",
                                                     "error-tag": tag,
                                                     "error-message": message}])
        return respond({"code": status, "message": message, "result": message}, status)

    async def _open(self, where: Where) -> Sites:
        addresses, port, plain, certificate, key = where
        if plain and not addresses:
            raise ValueError("plain-http needs the addresses to listen on")
        context = None if plain else tls_context(certificate, key, self.ctx.state_dir)
        assert self.runner is not None
        sites: list[web.TCPSite] = []
        try:
            for host in addresses or (None,):
                site = web.TCPSite(self.runner, host, port, ssl_context=context,
                                   reuse_address=True)
                await site.start()
                sites.append(site)
        except BaseException:
            for site in sites:
                await site.stop()
            raise
        log.info("http door listening", extra={"where": describe(where)})
        return Sites(sites)

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self.runner.setup()
        await self.restconf.start()
        await self.binding.set(listen_spec(self.section))

    async def reconfigure(self, section: Section) -> None:
        self.section = section
        await self.binding.set(listen_spec(section))

    async def close(self) -> None:
        await self.binding.close()
        await self.restconf.close()
        if self.runner is not None:
            await self.runner.cleanup()

    def status(self) -> dict[str, Any]:
        return {**self.binding.status(), "requests": self.requests,
                "sessions": len(self.restconf.events.clients)}
