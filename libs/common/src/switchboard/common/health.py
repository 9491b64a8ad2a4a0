"""A small HTTP endpoint for probes and scraping: /healthz, /readyz, /metrics."""

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)


class HealthServer:
    """Liveness is the process answering; readiness is what the service says it is."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self.ready = False
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Start serving; does nothing when the port is 0."""
        if self._port == 0:
            return
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        log.info("health endpoint on http://%s:%d", self._host, self._port)

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        if self.ready:
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "starting"}, status=503)

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
